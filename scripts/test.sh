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
# installs and starts whatever is missing (apt-get, as root or through sudo), then runs
# `cargo test --workspace --locked` (in groups side by side, below) with the given arguments,
# prints the total, and exits with cargo's status (the first failing group's).
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

# Doc tests are left out (the crates' examples are in their tests); the total of every test
# binary is printed last, since cargo's own last line belongs to whichever binary ran last.
#
# With no arguments but --no-fail-fast, every test binary is built first and then run in two
# groups side by side: the services' and crates' own tests, and the end-to-end journeys (about
# equal in time). Most of the suite's time is waiting (processes starting, NATS, sandbox clocks,
# a browser), not computing, so the groups overlap well on two cores. Two, not more: each
# journey runs six services with their own connection pools, and Postgres' default 100
# connections must hold both groups. Each group is one `cargo test`, so each binary keeps
# cargo's own threading. Any other argument (a package, a test name) runs one `cargo test` as given.
logs=$(mktemp -d)
trap 'rm -rf "${logs}"' EXIT
cargo_args=(--locked --lib --bins --tests)

grouped=1
for arg in "$@"; do
    [[ ${arg} == --no-fail-fast ]] || grouped=0
done

set +e
if [[ ${grouped} == 1 ]]; then
    cargo test --workspace "${cargo_args[@]}" --no-run "$@" 2>&1 | tee "${logs}/build"
    status=${PIPESTATUS[0]}
    if [[ ${status} == 0 ]]; then
        cargo test --workspace --exclude hopsbridge-journey "${cargo_args[@]}" "$@" >"${logs}/1" 2>&1 &
        pids=($!)
        cargo test -p hopsbridge-journey "${cargo_args[@]}" "$@" >"${logs}/2" 2>&1 &
        pids+=($!)
        for i in 0 1; do
            wait "${pids[${i}]}"
            code=$?
            printf '\n=== test group %d of 2 (exit %d)\n' $((i + 1)) "${code}"
            cat "${logs}/$((i + 1))"
            [[ ${code} == 0 ]] || status=${code}
        done
    fi
    cat "${logs}"/[12] >"${logs}/all" 2>/dev/null
else
    cargo test --workspace "${cargo_args[@]}" "$@" 2>&1 | tee "${logs}/all"
    status=${PIPESTATUS[0]}
fi
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "${logs}/all"
exit "${status}"
