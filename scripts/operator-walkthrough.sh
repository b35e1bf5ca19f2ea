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
#   4. a dead letter as one happens: Stripe down (the sandbox's outage control) while a person
#      signs in for the first time, so billing's `billing-user_created` consumer gives up on
#      their UserCreated; listed and shown with `hopsbridge-admin dead-letters`, replayed once
#      Stripe answers again, and the person then has one Stripe customer and one subscription
#      ("Dead letters");
#   5. an integrity finding: a subscription made in Stripe directly is found by billing's
#      `stripe_subscriptions` (`integrity run`, `integrity list`), cancelled there, and resolved
#      by the next run ("Integrity checks").
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
# within its deadline when `metering collect` asks for it; billing's consumers give up after
# three deliveries a second apart, so a dead letter comes within seconds.
HOPSBRIDGE_DEV_PREBUILT=1 HOPSBRIDGE_DEV_REGISTER_CLUSTERS=0 \
    HOPSBRIDGE_PROVISIONING__CLUSTERS__HEALTH_INTERVAL_SECS=2 \
    HOPSBRIDGE_METERING__SCHEDULE__WINDOW_SECS=10 HOPSBRIDGE_METERING__SCHEDULE__LOOKBACK_SECS=60 \
    HOPSBRIDGE_BILLING__EVENTS__MAX_DELIVER=4 HOPSBRIDGE_BILLING__EVENTS__BACKOFF_SECS=1,1,1 \
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

# --- 4. A dead letter, replayed after the fault is fixed ------------------------------------------

step "4. A dead letter: Stripe down past the consumer's deliveries, listed, fixed, replayed once (Dead letters)"
stripe() {
    local method=$1 path=$2
    shift 2
    curl -fsS -X "${method}" "${SANDBOX_STRIPE_URL}${path}" -H "authorization: Bearer ${SANDBOX_STRIPE_SECRET_KEY}" "$@"
}
# Stripe answers every request 503 until the outage is cleared (the sandbox's fault control).
stripe PUT /_sandbox/outage -H 'content-type: application/json' -d '{"status": 503}' | jq -c .
# Ada's first call makes her at identity, which announces UserCreated; billing's
# billing-user_created consumer needs Stripe for her customer and subscription, fails, and gives
# up after events.max_deliver - 1 deliveries (3 here, through HOPSBRIDGE_BILLING__EVENTS__*).
ada_password=$(sed -n 's/^ *user .*<ada@example.com>.*, password //p' "${LOG_DIR}/sandbox.log")
[[ -n ${ada_password} ]] || fail "the sandbox printed no password for ada@example.com"
ada_token=$(curl -fsS "${SANDBOX_AUTH0_ISSUER}oauth/token" -d grant_type=password \
    -d client_id="${SANDBOX_AUTH0_CLIENT_ID}" -d client_secret="${SANDBOX_AUTH0_CLIENT_SECRET}" \
    -d username=ada@example.com -d password="${ada_password}" --data-urlencode audience="${SANDBOX_AUTH0_AUDIENCE}" |
    jq -r .access_token)
ada=$(curl -fsS -H "authorization: Bearer ${ada_token}" "${GATEWAY}/api/me")
ada_id=$(jq -r '.id // .user_id' <<<"${ada}")
echo "ada@example.com signed in: user ${ada_id}"
waiting() {
    letters=$(admin dead-letters list billing --status waiting --event-type UserCreatedV1 2>/dev/null) || return 1
    [[ $(jq '[.items[] | select(.consumer == "billing-user_created")] | length' <<<"${letters}") -ge 1 ]]
}
eventually "billing's dead letter of Ada's UserCreated" waiting
letter_id=$(jq -r '[.items[] | select(.consumer == "billing-user_created")][0].id' <<<"${letters}")
shown=$(admin dead-letters show billing "${letter_id}")
jq '{id, consumer, event_type, reason, deliveries, replays}' <<<"${shown}"
[[ $(jq -r .reason <<<"${shown}") == *"gave up after"*"503"* ]] || fail "unexpected reason: ${shown}"
customers() { stripe GET "/v1/customers?email=ada%40example.com&limit=100" | jq '.data | length'; }
curl -fsS "${BILLING}/metrics" | grep -E '^hopsbridge_events_(dead_letters|consumer_dead_lettered_total\{[^}]*consumer="billing-user_created")' ||
    fail "billing's metrics do not show the dead letter"

# The cause fixed: Stripe answers again. The replay applies the event once.
stripe DELETE /_sandbox/outage | jq -c .
[[ $(customers) == 0 ]] || fail "Stripe has a customer for Ada although billing gave up on her"
replayed=$(admin dead-letters replay billing "${letter_id}")
jq '{outcome, dead_letter: {replayed_at: .dead_letter.replayed_at, replays: .dead_letter.replays}}' <<<"${replayed}"
[[ $(jq -r .outcome <<<"${replayed}") == applied ]] || fail "the replay after the fix: ${replayed}"
[[ $(jq -r .dead_letter.replayed_at <<<"${replayed}") != null ]] || fail "the dead letter is not marked replayed"
again=$(admin dead-letters replay billing "${letter_id}")
[[ $(jq -r .outcome <<<"${again}") == already_applied ]] || fail "a second replay: ${again}"
echo "a second replay: $(jq -r .outcome <<<"${again}")"
[[ $(customers) == 1 ]] || fail "Ada's Stripe customers: $(customers), not 1"
customer=$(stripe GET "/v1/customers?email=ada%40example.com" | jq -r '.data[0].id')
subscriptions=$(stripe GET "/v1/subscriptions?customer=${customer}" | jq '[.data[] | select(.metadata.hopsbridge_user_id == "'"${ada_id}"'")] | length')
[[ ${subscriptions} == 1 ]] || fail "Ada's subscriptions: ${subscriptions}, not 1"
echo "Stripe: one customer (${customer}) and one subscription for Ada"
left=$(admin dead-letters list billing --status waiting)
[[ $(jq .total <<<"${left}") == 0 ]] || fail "dead letters still waiting: ${left}"

# --- 5. An integrity finding, opened and resolved ----------------------------------------------

step "5. Integrity: a subscription made in Stripe's dashboard is found, cancelled, resolved (Integrity checks)"
# Someone makes a customer and a subscription in Stripe directly, outside Hopsbridge: an orphan.
price=$(stripe GET "/v1/prices?active=true&limit=1" | jq -r '.data[0].id')
[[ -n ${price} && ${price} != null ]] || fail "no price in Stripe"
stray=$(stripe POST /v1/customers -d email=stray@example.com | jq -r .id)
orphan=$(stripe POST /v1/subscriptions -d customer="${stray}" -d "items[0][price]=${price}" | jq -r .id)
echo "made in Stripe: customer ${stray}, subscription ${orphan}"
finding() { jq --arg key "orphan:${orphan}" '[.runs[] | select(.check == "stripe_subscriptions") | .findings[]
    | select(.key == $key)] | length'; }
ran=$(admin integrity run billing)
jq '{status, runs: [.runs[] | {check, outcome, opened, resolved}]}' <<<"${ran}"
[[ $(jq -r .status <<<"${ran}") == done ]] || fail "billing's integrity run: ${ran}"
[[ $(finding <<<"${ran}") == 1 ]] || fail "the orphan subscription is not found: ${ran}"
open=$(admin integrity list billing)
jq --arg key "orphan:${orphan}" '.items[] | select(.key == $key) | {check, key, detail}' <<<"${open}"
# Fixed where it was made: cancelled in Stripe. The next run resolves the finding.
stripe DELETE "/v1/subscriptions/${orphan}" | jq -c '{id, status}'
ran=$(admin integrity run billing)
[[ $(finding <<<"${ran}") == 0 ]] || fail "the finding is still open after the cancellation: ${ran}"
[[ $(jq '[.runs[] | select(.check == "stripe_subscriptions")][0].resolved' <<<"${ran}") -ge 1 ]] ||
    fail "the run resolved nothing: ${ran}"
resolved=$(admin integrity list billing --all)
jq --arg key "orphan:${orphan}" '.items[] | select(.key == $key) | {key, resolved_at}' <<<"${resolved}"

printf '\nThe walkthrough passed in %d s.\n' "$((SECONDS - started))"
