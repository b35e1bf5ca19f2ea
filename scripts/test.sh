#!/usr/bin/env bash
#
# Runs the whole Hopsbridge test suite.
#
#   ./scripts/test.sh [cargo test arguments...]
#
# The tests need PostgreSQL at postgres://postgres@127.0.0.1:5432/postgres (they create and
# drop databases of their own), NATS with JetStream at nats://127.0.0.1:4222, and the
# nats-server executable (some tests start, kill and restart private servers). This script
# installs and starts whatever is missing (apt-get, as root or through sudo), then runs
# `cargo test --workspace --locked` with the given arguments and exits with its status.
#
# HOPSBRIDGE_TEST_DATABASE_URL or HOPSBRIDGE_TEST_NATS_URL point the tests at other servers;
# when one is set, the script leaves the matching local service alone.

set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${root}"
# shellcheck source=scripts/lib/services.sh
source "${root}/scripts/lib/services.sh"

ensure_nats_server_binary
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

exec cargo test --workspace --locked "$@"
