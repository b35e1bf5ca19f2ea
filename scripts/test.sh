#!/usr/bin/env bash
#
# Runs the whole Hopsbridge test suite.
#
#   ./scripts/test.sh [cargo test arguments...]
#
# The tests need PostgreSQL at postgres://postgres@127.0.0.1:5432/postgres (they create and
# drop databases of their own), NATS with JetStream at nats://127.0.0.1:4222, and the
# nats-server executable (some tests start, kill and restart private servers), kubectl (the
# Kubernetes simulator is driven with it), chromium with chromedriver (the console's browser
# test), and python3 with venv (the OpenAPI fuzzer, crates/journey/tests/fuzz.rs, installs
# schemathesis from PyPI into .local/schemathesis). This script
# installs and starts whatever is missing (apt-get, as root or through sudo), builds every test
# binary with `cargo test --workspace --locked --no-run`, runs the journey crate's binaries beside
# the other crates' binaries (two queues, one binary at a time each), prints the total, and fails
# when any binary failed. With arguments, it runs `cargo test --workspace --locked` with them
# instead.
#
# HOPSBRIDGE_TEST_DATABASE_URL or HOPSBRIDGE_TEST_NATS_URL point the tests at other servers;
# when one is set, the script leaves the matching local service alone.

set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${root}"
# shellcheck source=scripts/lib/services.sh
source "${root}/scripts/lib/services.sh"

ensure_nats_server_binary
ensure_kubectl
# The console's browser test (crates/journey/tests/browser.rs) drives Debian's headless
# Chromium through chromedriver.
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
    apt_install chromium chromium-driver
fi
if ! python3 -m venv --help >/dev/null 2>&1; then
    apt_install python3-venv
fi
if [[ -n ${HOPSBRIDGE_TEST_DATABASE_URL:-} ]]; then
    hb_log "using the PostgreSQL server in HOPSBRIDGE_TEST_DATABASE_URL"
else
    ensure_postgres
fi
if [[ -n ${HOPSBRIDGE_TEST_NATS_URL:-} ]]; then
    hb_log "using the NATS server in HOPSBRIDGE_TEST_NATS_URL"
else
    ensure_nats
fi

# Doc tests are left out (the crates' examples are in their tests).
log=$(mktemp -d)
trap 'rm -rf "${log}"' EXIT

# The total of every test binary, from the `test result:` lines of the logs given.
total() {
    awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
         END { printf "\ntests: %d passed, %d failed\n", p, f }' "$@"
}

if [[ $# -gt 0 ]]; then
    # Arguments: one `cargo test` with them.
    set +e
    cargo test --workspace --locked --lib --bins --tests "$@" 2>&1 | tee "${log}/all"
    status=${PIPESTATUS[0]}
    set -e
    total "${log}/all"
    exit "${status}"
fi

# No arguments: every test binary is built by one `cargo test --no-run`, then run as cargo test
# would run it (from its package's directory), in two queues side by side: the journey crate's
# binaries (every service as a process) and everyone else's. Each queue runs one binary at a
# time and goes on after a failure; the script fails when any binary failed (decision 0041).
set +e
cargo test --workspace --locked --lib --bins --tests --no-run --message-format json-render-diagnostics \
    >"${log}/artifacts.json"
status=$?
set -e
if [[ ${status} -ne 0 ]]; then
    exit "${status}"
fi
python3 - "${log}/artifacts.json" "${log}/journeys.list" "${log}/crates.list" <<'PY'
import json, os, sys
artifacts, journeys, crates = sys.argv[1:]
runs = {"journeys": [], "crates": []}
for line in open(artifacts):
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("profile", {}).get("test") or not m.get("executable"):
        continue
    queue = "journeys" if "hopsbridge-journey" in m["package_id"] else "crates"
    runs[queue].append(f'{os.path.dirname(m["manifest_path"])}\t{m["target"]["name"]}\t{m["executable"]}')
for queue, path in (("journeys", journeys), ("crates", crates)):
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in sorted(runs[queue])))
PY

# Runs each binary of a list; prints each one's output as it ends; answers 1 when any failed.
run_queue() {
    local list=$1 failed=0 dir name exe out
    out=$(mktemp -p "${log}")
    while IFS=$'\t' read -r dir name exe; do
        local started=${SECONDS}
        if (cd "${dir}" && CARGO_MANIFEST_DIR="${dir}" "${exe}") >"${out}" 2>&1; then
            printf '\n--- %s (%s): ok in %d s\n' "${name}" "${dir#"${root}"/}" $((SECONDS - started))
        else
            failed=1
            printf '\n--- %s (%s): FAILED in %d s\n' "${name}" "${dir#"${root}"/}" $((SECONDS - started))
        fi
        cat "${out}"
    done <"${list}"
    return "${failed}"
}

crates_status=0
journeys_status=0
run_queue "${log}/journeys.list" >"${log}/journeys.out" 2>&1 &
journeys=$!
run_queue "${log}/crates.list" 2>&1 | tee "${log}/crates.out" || crates_status=$?
wait "${journeys}" || journeys_status=$?
cat "${log}/journeys.out"
total "${log}/crates.out" "${log}/journeys.out"
if [[ ${crates_status} -ne 0 || ${journeys_status} -ne 0 ]]; then
    grep -h -- '^--- .*FAILED' "${log}/crates.out" "${log}/journeys.out" >&2
    # Each failure's reason again, at the end where a truncated log still shows it.
    printf '\nwhy:\n' >&2
    grep -h -A3 -- "panicked at" "${log}/crates.out" "${log}/journeys.out" | head -n 120 >&2 || true
    exit 1
fi
