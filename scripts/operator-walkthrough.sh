#!/usr/bin/env bash
#
# Follows the operator's guide (docs/operations.md) step by step against the sandbox, with the
# documented commands only:
#
#   1. a machine client's token from the sandbox's Auth0 (client credentials), as
#      hopsbridge-admin gets it (section "The admin command line");
#   2. a sandbox cluster registered with `hopsbridge-admin clusters register --file`
#      ("Connecting a cluster", step 4), and its health (`clusters show`: every check passed);
#   3. its measurement (`metering collect`, `metering gaps`, step 5) and the metrics metering
#      serves for it on GET /metrics ("Metrics and alerts");
#   4. a dead letter: a message no consumer can read, published on the subject billing's
#      `billing-user_created` consumer reads; listed, shown and replayed with
#      `hopsbridge-admin dead-letters` ("Dead letters").
#
#   ./scripts/operator-walkthrough.sh
#
# The platform is started the way scripts/dev.sh starts it (it is dev.sh, run in the
# background), on a clean slate, with the sandbox's clusters left unregistered
# (HOPSBRIDGE_DEV_REGISTER_CLUSTERS=0) and the binaries already in target/debug used as they
# are when all are there (HOPSBRIDGE_DEV_PREBUILT=1; `cargo test --workspace` builds them).
# Everything is stopped at the end. Exit status 0 when every step saw what the guide says.
#
# Environment:
#   HOPSBRIDGE_WALKTHROUGH_TIMEOUT  seconds each awaited effect may take (default 60)

set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${root}"
# shellcheck source=scripts/lib/services.sh
source "${root}/scripts/lib/services.sh"

TIMEOUT=${HOPSBRIDGE_WALKTHROUGH_TIMEOUT:-60}
TARGET_DIR=${CARGO_TARGET_DIR:-${root}/target}
BIN_DIR="${TARGET_DIR}/debug"
LOG_DIR="${root}/.local/logs"
WORK_DIR="${root}/.local/walkthrough"
DEV_LOG="${LOG_DIR}/walkthrough-dev.log"
GATEWAY=http://127.0.0.1:8080
METERING=http://127.0.0.1:8084
BILLING=http://127.0.0.1:8085
started=${SECONDS}

step() { printf '\n=== %s\n' "$*"; }
fail() {
    printf 'walkthrough failed: %s\n' "$*" >&2
    exit 1
}

# Runs hopsbridge-admin, printing the command; its JSON answer goes to standard output.
admin() {
    printf '$ hopsbridge-admin %s\n' "$*" >&2
    "${ADMIN}" "$@"
}

# Waits up to TIMEOUT seconds for the command to succeed.
eventually() {
    local what=$1 i
    shift
    for ((i = 0; i < TIMEOUT * 2; i++)); do
        if "$@"; then
            return 0
        fi
        sleep 0.5
    done
    fail "${what}: not seen within ${TIMEOUT} s"
}

for tool in curl jq; do
    command -v "${tool}" >/dev/null 2>&1 || apt_install "${tool}"
done
ensure_postgres
ensure_nats

# --- The platform, as scripts/dev.sh runs it ------------------------------------------------

ADMIN="${BIN_DIR}/hopsbridge-admin"
if [[ ! -x ${ADMIN} ]]; then
    hb_log "building hopsbridge-admin (cargo build -p hopsbridge-admin)"
    cargo build --locked -p hopsbridge-admin
fi

mkdir -p "${LOG_DIR}" "${WORK_DIR}"
DEV_PID=""
stop_platform() {
    if [[ -n ${DEV_PID} ]]; then
        hb_log "stopping the platform"
        kill -TERM "${DEV_PID}" 2>/dev/null || true
        wait "${DEV_PID}" 2>/dev/null || true
        DEV_PID=""
    fi
}
trap stop_platform EXIT

hb_log "starting the platform (scripts/dev.sh; log: ${DEV_LOG#"${root}"/})"
# Emptied here, not only by the redirection below: the wait reads it at once.
: >"${DEV_LOG}"
# The scheduled health check is made frequent, so the walkthrough also sees a check made after
# the registration's; metering's windows are ten seconds, so the last complete window is still
# within its deadline when `metering collect` asks for it.
HOPSBRIDGE_DEV_PREBUILT=1 HOPSBRIDGE_DEV_REGISTER_CLUSTERS=0 \
    HOPSBRIDGE_PROVISIONING__CLUSTERS__HEALTH_INTERVAL_SECS=2 \
    HOPSBRIDGE_METERING__SCHEDULE__WINDOW_SECS=10 HOPSBRIDGE_METERING__SCHEDULE__LOOKBACK_SECS=60 \
    scripts/dev.sh >"${DEV_LOG}" 2>&1 </dev/null &
DEV_PID=$!
dev_running() {
    if ! kill -0 "${DEV_PID}" 2>/dev/null; then
        tail -n 40 "${DEV_LOG}" >&2
        DEV_PID=""
        fail "scripts/dev.sh stopped"
    fi
    grep -q '^Hopsbridge is running\.$' "${DEV_LOG}"
}
# Building, when the binaries are missing, is not bounded here.
until dev_running; do
    sleep 0.5
done
set -a
# shellcheck source=/dev/null
source "${root}/.local/sandbox/sandbox.env"
set +a
hb_log "the platform is up after $((SECONDS - started)) s"

# --- 1. A machine token ---------------------------------------------------------------------

step "1. The admin command line with the sandbox tenant's machine client (decision 0045)"
export HOPSBRIDGE_ADMIN_GATEWAY=${GATEWAY}
export HOPSBRIDGE_ADMIN_ISSUER=${SANDBOX_AUTH0_ISSUER}
export HOPSBRIDGE_ADMIN_CLIENT_ID=${SANDBOX_AUTH0_ADMIN_CLIENT_ID}
export HOPSBRIDGE_ADMIN_CLIENT_SECRET=${SANDBOX_AUTH0_ADMIN_CLIENT_SECRET}
export HOPSBRIDGE_ADMIN_AUDIENCE=${SANDBOX_AUTH0_AUDIENCE}
# The token hopsbridge-admin asks for: client credentials at <issuer>oauth/token.
token=$(curl -fsS "${SANDBOX_AUTH0_ISSUER}oauth/token" -d grant_type=client_credentials \
    -d client_id="${HOPSBRIDGE_ADMIN_CLIENT_ID}" -d client_secret="${HOPSBRIDGE_ADMIN_CLIENT_SECRET}" \
    --data-urlencode audience="${HOPSBRIDGE_ADMIN_AUDIENCE}" | jq -r .access_token)
[[ -n ${token} && ${token} != null ]] || fail "the sandbox's Auth0 gave no token"
# The same token with another signature is refused (401), as any forged token is.
forged="${token%.*}.c2lnbmVkIGJ5IG5vYm9keQ"
refused=$(HOPSBRIDGE_ADMIN_TOKEN=${forged} "${ADMIN}" clusters list 2>&1 >/dev/null) && fail "a forged token was let in"
[[ ${refused} == *"HTTP 401"* ]] || fail "a forged token: ${refused}"
echo "a forged token: ${refused}"
clusters=$(admin clusters list)
[[ $(jq length <<<"${clusters}") == 0 ]] || fail "clusters registered before the operator did: ${clusters}"
echo "no cluster yet"

# --- 2. Register a cluster and see it healthy --------------------------------------------------

step "2. Register the sandbox's cluster eu-1 and see it healthy (docs/operations.md, Connecting a cluster)"
# The registration file of step 4: the Hopsworks URL, API key and CA bundle, the kubeconfig
# (steps 1 to 3 made them; the sandbox wrote them to .local/sandbox), the OAuth client id
# Hopsworks signs people in with, capacity, region and status.
jq -n --arg api_url "${SANDBOX_EU_1_HOPSWORKS_URL}" --arg api_key "${SANDBOX_EU_1_HOPSWORKS_API_KEY}" \
    --rawfile kubeconfig "${SANDBOX_EU_1_KUBECONFIG}" --rawfile ca_bundle "${SANDBOX_EU_1_HOPSWORKS_CA}" \
    --arg oauth_client_id "${SANDBOX_AUTH0_CLIENT_ID}" \
    '{name: "eu-1", $api_url, $api_key, $kubeconfig, $ca_bundle, $oauth_client_id,
      capacity: 10, region: "eu-west", status: "active"}' >"${WORK_DIR}/eu-1.json"
chmod 600 "${WORK_DIR}/eu-1.json"
registered=$(admin clusters register --file "${WORK_DIR}/eu-1.json")
cluster_id=$(jq -r .id <<<"${registered}")
jq '{id, name, status, health: {ok: .health.ok, checks: [.health.checks[] | {name, ok}]}}' <<<"${registered}"
[[ $(jq .health.ok <<<"${registered}") == true ]] || fail "registered without a passed check"
# The secrets are never answered.
jq -e 'has("api_key") or has("kubeconfig") | not' <<<"${registered}" >/dev/null ||
    fail "the registration answered a secret"
first_check=$(jq -r .health.checked_at <<<"${registered}")
healthy_again() {
    local shown
    shown=$(admin clusters show "${cluster_id}" 2>/dev/null) || return 1
    [[ $(jq -r .health.ok <<<"${shown}") == true && $(jq -r .health.checked_at <<<"${shown}") > "${first_check}" ]] ||
        return 1
    jq '{name, health: {ok: .health.ok, checked_at: .health.checked_at, failing: [.health.checks[] | select(.ok | not)]}}' \
        <<<"${shown}"
}
eventually "a scheduled health check after the registration's" healthy_again

# --- 3. Measure it and see its metrics ---------------------------------------------------------

step "3. Measure the cluster and read metering's metrics (Connecting a cluster, step 5; Metrics and alerts)"
run=$(admin metering collect "${cluster_id}")
jq '{cluster_id, window_start, window_end, status}' <<<"${run}"
window_start=$(jq -r .window_start <<<"${run}")
measured() {
    curl -fsS "${METERING}/metrics" >"${WORK_DIR}/metering.metrics" || return 1
    grep -q '^hopsbridge_metering_last_complete_window_age_seconds{[^}]*cluster="eu-1"' "${WORK_DIR}/metering.metrics"
}
eventually "metering's metrics for eu-1's completed window" measured
grep -E '^hopsbridge_metering_(window_lag_seconds|last_complete_window_age_seconds|gaps_last_day|kubernetes_api_calls_last_hour)\{[^}]*cluster="eu-1"' \
    "${WORK_DIR}/metering.metrics"
calls=$(sed -nE 's/^hopsbridge_metering_kubernetes_api_calls_last_hour\{[^}]*cluster="eu-1"[^}]*\} ([0-9.e+]+)$/\1/p' \
    "${WORK_DIR}/metering.metrics")
[[ -n ${calls} && ${calls} != 0 ]] || fail "metering made no Kubernetes API call for eu-1"
gaps=$(admin metering gaps --cluster-id "${cluster_id}" --from "${window_start}")
jq '{total}' <<<"${gaps}"
[[ $(jq .total <<<"${gaps}") == 0 ]] || fail "the collected window is a gap: ${gaps}"
grep -E '^hopsbridge_http_requests_total\{[^}]*route="/api/admin/metering/clusters/\{id\}/collect"' \
    "${WORK_DIR}/metering.metrics" || fail "metering's metrics do not count the collect request"

# --- 4. A dead letter, replayed ------------------------------------------------------------------

step "4. A dead letter: listed with its reason, shown, replayed (Dead letters)"
# A message that is no event, published on identity's UserCreated subject (prefix hb), in NATS's
# text protocol (no NATS client needed): each consumer of the subject gives up on it at once.
body="not an event: walkthrough $(date -u +%Y%m%dT%H%M%SZ)"
(
    exec 3<>"/dev/tcp/${HB_NATS_HOST}/${HB_NATS_PORT}"
    read -r -t 5 _ <&3
    printf 'CONNECT {"verbose":false,"pedantic":false}\r\nPUB hb.identity.user_created.v1 %d\r\n%s\r\nPING\r\n' \
        "${#body}" "${body}" >&3
    # PONG says the server has processed the PUB.
    while read -r -t 5 line <&3; do
        [[ ${line} == PONG* ]] && exit 0
        [[ ${line} == -ERR* ]] && exit 1
    done
    exit 1
) || fail "could not publish to NATS on ${HB_NATS_HOST}:${HB_NATS_PORT}"
waiting() {
    letters=$(admin dead-letters list billing --status waiting 2>/dev/null) || return 1
    [[ $(jq '[.items[] | select(.consumer == "billing-user_created")] | length' <<<"${letters}") -ge 1 ]]
}
eventually "billing's dead letter" waiting
letter_id=$(jq -r '[.items[] | select(.consumer == "billing-user_created")][0].id' <<<"${letters}")
shown=$(admin dead-letters show billing "${letter_id}")
jq '{id, consumer, subject, event_type, reason, deliveries, replays}' <<<"${shown}"
[[ $(jq -r .reason <<<"${shown}") == *"undecodable envelope"* ]] || fail "unexpected reason: ${shown}"
# Such a message fails on every replay and keeps waiting with the new failure.
replayed=$(admin dead-letters replay billing "${letter_id}")
jq . <<<"${replayed}"
[[ $(jq -r .outcome <<<"${replayed}") == failed ]] || fail "the replay of a message that is no event: ${replayed}"
again=$(admin dead-letters show billing "${letter_id}")
[[ $(jq .replays <<<"${again}") == 1 && $(jq -r .replayed_at <<<"${again}") == null ]] ||
    fail "the replay is not recorded: ${again}"
summary=$(admin dead-letters replay-all billing)
jq . <<<"${summary}"
[[ $(jq '.failed | length' <<<"${summary}") -ge 1 ]] || fail "replay-all did not take the waiting dead letter: ${summary}"
curl -fsS "${BILLING}/metrics" | grep -E '^hopsbridge_events_(dead_letters|consumer_dead_lettered_total\{[^}]*consumer="billing-user_created")' ||
    fail "billing's metrics do not show the dead letter"

printf '\nThe walkthrough passed in %d s.\n' "$((SECONDS - started))"
