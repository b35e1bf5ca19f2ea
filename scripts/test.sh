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
# `cargo test --workspace --locked` with the given arguments, prints the total, and exits with
# cargo's status.
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
log=$(mktemp)
trap 'rm -f "${log}"' EXIT
set +e
cargo test --workspace --locked --lib --bins --tests "$@" 2>&1 | tee "${log}"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "${log}"
exit "${status}"
