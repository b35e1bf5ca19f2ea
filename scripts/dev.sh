#!/usr/bin/env bash
#
# Runs the whole Hopsbridge platform on this machine.
#
#   ./scripts/dev.sh [--release]
#
# Makes sure PostgreSQL and NATS (JetStream) run locally (installing them with apt-get when
# missing), builds the six binaries, starts from a clean slate (the database `hopsbridge` is
# dropped and made again and the `HB_…` streams are deleted, because the sandbox starts empty
# each time: decision 0047), starts the sandbox and the services with
# migrations applied at start and text logs in .local/logs/<service>.log, waits until each
# answers GET /readyz, prints the URLs, and then runs until Ctrl-C or SIGTERM, which stops
# every service gracefully.
#
# The script sets each service's HTTP address, database URL, NATS URL and log format through
# HOPSBRIDGE_<SERVICE>__<SECTION>__<KEY> variables; any other such variable in the calling
# environment (for example HOPSBRIDGE_BILLING__TELEMETRY__OTLP_ENDPOINT) is passed on.
#
# Environment:
#   HOPSBRIDGE_DEV_READY_TIMEOUT      seconds each service gets to become ready (default 90)
#   HOPSBRIDGE_DEV_PREBUILT=1         use the binaries already in target/<profile> when all of
#                                     them are there (no cargo build); build when one is missing
#   HOPSBRIDGE_DEV_REGISTER_CLUSTERS=0  the sandbox leaves its clusters unregistered, for an
#                                     operator to register (scripts/operator-walkthrough.sh)

set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${root}"
# shellcheck source=scripts/lib/services.sh
source "${root}/scripts/lib/services.sh"

if ((BASH_VERSINFO[0] < 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] < 1))); then
    hb_die "bash 5.1 or newer is needed (this is ${BASH_VERSION})"
fi

usage() {
    printf 'usage: %s [--release]\n' "$0"
}

profile=debug
cargo_flags=()
case "${1:-}" in
"") ;;
--release)
    profile=release
    cargo_flags=(--release)
    ;;
-h | --help)
    usage
    exit 0
    ;;
*)
    usage >&2
    exit 2
    ;;
esac

DATABASE=hopsbridge
DATABASE_URL="postgres://postgres@${HB_PG_HOST}:${HB_PG_PORT}/${DATABASE}"
NATS_URL="nats://${HB_NATS_HOST}:${HB_NATS_PORT}"
HOST=127.0.0.1
READY_TIMEOUT=${HOPSBRIDGE_DEV_READY_TIMEOUT:-90}
PREBUILT=${HOPSBRIDGE_DEV_PREBUILT:-0}
REGISTER_CLUSTERS=${HOPSBRIDGE_DEV_REGISTER_CLUSTERS:-1}
# Each service gets shutdown.timeout_secs (20 by default) to finish; this is the outer bound.
STOP_TIMEOUT=30
LOG_DIR="${root}/.local/logs"
TARGET_DIR=${CARGO_TARGET_DIR:-${root}/target}
BIN_DIR="${TARGET_DIR}/${profile}"

# Start order; they stop in the reverse order, the gateway first.
DATA_SERVICES=(identity team provisioning metering billing)
SERVICES=("${DATA_SERVICES[@]}" gateway)
declare -A PORT=(
    [gateway]=8080
    [identity]=8081
    [team]=8082
    [provisioning]=8083
    [metering]=8084
    [billing]=8085
)
# Process id of each running service.
declare -A PID=()

# Deletes the JetStream streams of the default prefix (`hb`): every producer's and the
# dead-letter stream, with their consumers. A stream that does not exist is fine. Spoken in
# NATS's text protocol, so no NATS client needs installing.
delete_dev_streams() {
    local streams=(HB_GATEWAY HB_IDENTITY HB_TEAM HB_PROVISIONING HB_METERING HB_BILLING HB_DEADLETTER)
    local stream line payload answered=0 cr=$'\r'
    (
        exec 3<>"/dev/tcp/${HB_NATS_HOST}/${HB_NATS_PORT}" || exit 1
        read -r -t 5 _ <&3 || exit 1
        printf 'CONNECT {"verbose":false,"pedantic":false}\r\nSUB _INBOX.hbdev 1\r\n' >&3
        for stream in "${streams[@]}"; do
            printf 'PUB $JS.API.STREAM.DELETE.%s _INBOX.hbdev 0\r\n\r\n' "${stream}" >&3
        done
        while ((answered < ${#streams[@]})) && read -r -t 5 line <&3; do
            line=${line%"${cr}"}
            case ${line} in
            PING) printf 'PONG\r\n' >&3 ;;
            -ERR*)
                printf '%s\n' "${line}" >&2
                exit 1
                ;;
            MSG*)
                read -r -t 5 payload <&3 || exit 1
                answered=$((answered + 1))
                # Deleted, or there was no such stream (JetStream error 10059).
                if [[ ${payload} != *'"success":true'* && ${payload} != *'"err_code":10059'* ]]; then
                    printf '%s\n' "${payload%"${cr}"}" >&2
                    exit 1
                fi
                ;;
            esac
        done
        ((answered == ${#streams[@]}))
    )
}

is_data_service() {
    [[ $1 != gateway ]]
}

# Sends SIGTERM to the given services and waits for them; SIGKILL after STOP_TIMEOUT.
stop_services() {
    local svc pid code i
    for svc in "$@"; do
        pid=${PID[${svc}]:-}
        if [[ -n ${pid} ]]; then
            kill -TERM "${pid}" 2>/dev/null || true
        fi
    done
    for svc in "$@"; do
        pid=${PID[${svc}]:-}
        [[ -n ${pid} ]] || continue
        for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
            kill -0 "${pid}" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "${pid}" 2>/dev/null; then
            hb_log "${svc} did not stop within ${STOP_TIMEOUT} s; killing it"
            kill -KILL "${pid}" 2>/dev/null || true
        fi
        code=0
        wait "${pid}" 2>/dev/null || code=$?
        if ((code != 0)); then
            hb_log "${svc} exited with status ${code} (log: ${LOG_DIR}/${svc}.log)"
            STOP_STATUS=1
        fi
        unset "PID[${svc}]"
    done
}

# Stops every running service: the gateway first, then the data services, the sandbox last.
STOP_STATUS=0
SANDBOX_PID=""
stop_all() {
    if ((${#PID[@]} > 0)); then
        hb_log "stopping the services"
        stop_services gateway
        local reversed=() i
        for ((i = ${#DATA_SERVICES[@]} - 1; i >= 0; i--)); do
            reversed+=("${DATA_SERVICES[i]}")
        done
        stop_services "${reversed[@]}"
    fi
    if [[ -n ${SANDBOX_PID} ]]; then
        kill -TERM "${SANDBOX_PID}" 2>/dev/null || true
        wait "${SANDBOX_PID}" 2>/dev/null || true
        SANDBOX_PID=""
    fi
}

# shellcheck disable=SC2317 # called by the trap below
on_signal() {
    trap - INT TERM HUP
    stop_all
    hb_log "stopped"
    exit "${STOP_STATUS}"
}

trap stop_all EXIT
trap on_signal INT TERM HUP

# Prints the last lines of a service's log, then stops everything and exits 1.
fail_service() {
    local svc=$1 message=$2
    printf 'error: %s\n' "${message}" >&2
    printf -- '--- last lines of %s ---\n' "${LOG_DIR}/${svc}.log" >&2
    tail -n 40 "${LOG_DIR}/${svc}.log" >&2 || true
    printf -- '---\n' >&2
    stop_all
    exit 1
}

start_service() {
    local svc=$1
    local upper=${svc^^}
    local prefix="HOPSBRIDGE_${upper}__"
    local -a vars=(
        NO_COLOR=1
        "${prefix}HTTP__HOST=${HOST}"
        "${prefix}HTTP__PORT=${PORT[${svc}]}"
        "${prefix}TELEMETRY__JSON_LOGS=false"
        # Calendar time is the sandbox's clock: real time unless someone moves it
        # (POST ${SANDBOX_CLOCK_URL} with advance_micros or rate_milli).
        "${prefix}CLOCK__FOLLOW_URL=${SANDBOX_CLOCK_URL}"
    )
    if is_data_service "${svc}"; then
        vars+=(
            "${prefix}DATABASE__URL=${DATABASE_URL}"
            "${prefix}DATABASE__MIGRATE_ON_START=true"
            # The gateway's public key, this service's own key, and the public keys of the
            # services that call it (decision 0053).
            "${prefix}AUTH__GATEWAY_PUBLIC_KEY=$(<"${KEY_DIR}/gateway.pub")"
            "${prefix}AUTH__SERVICE_KEY=$(<"${KEY_DIR}/${svc}.seed")"
            "${prefix}NATS__URL=${NATS_URL}"
            # Mail goes to the sandbox's mail catcher; links in it point at the gateway.
            "${prefix}MAIL__SMTP_URL=${SANDBOX_SMTP_URL}"
            "${prefix}MAIL__PUBLIC_BASE_URL=http://${HOST}:${PORT[gateway]}"
            "${prefix}MAIL__ADMIN_ADDRESSES=ops@hopsbridge.local"
            "${prefix}MAIL__ADMIN_WEBHOOK_URL=${SANDBOX_ALERT_WEBHOOK_URL}"
        )
        local caller
        for caller in ${CALLERS[${svc}]:-}; do
            vars+=("${prefix}AUTH__TRUSTED_SERVICES__${caller^^}=$(<"${KEY_DIR}/${caller}.pub")")
        done
        if [[ ${svc} == identity ]]; then
            vars+=("${prefix}WEBHOOK__SECRET=${AUTH0_WEBHOOK_SECRET}")
            # The same settings, for `hopsbridge-identity grant-admin` run by hand.
            local var
            (
                umask 077
                for var in "${vars[@]}"; do
                    printf '%s=%q\n' "${var%%=*}" "${var#*=}"
                done >"${IDENTITY_ENV_FILE}"
            )
        fi
        if [[ ${svc} == billing ]]; then
            # The sandbox's Stripe, which sends its webhooks to the gateway's /webhooks/stripe.
            vars+=(
                "${prefix}STRIPE__API_BASE=${SANDBOX_STRIPE_URL}"
                "${prefix}STRIPE__SECRET_KEY=${SANDBOX_STRIPE_SECRET_KEY}"
                "${prefix}STRIPE__WEBHOOK_SECRET=${SANDBOX_STRIPE_WEBHOOK_SECRET}"
                "${prefix}CHECKOUT__SUCCESS_URL=http://${HOST}:${PORT[gateway]}/billing?card=added"
                "${prefix}CHECKOUT__CANCEL_URL=http://${HOST}:${PORT[gateway]}/billing?card=cancelled"
                "${prefix}PORTAL__RETURN_URL=http://${HOST}:${PORT[gateway]}/billing"
            )
        fi
        if [[ ${svc} == provisioning ]]; then
            vars+=(
                "${prefix}ENCRYPTION__KEYS=${PROVISIONING_ENCRYPTION_KEYS}"
                "${prefix}ENCRYPTION__ACTIVE_KEY=dev"
                "${prefix}CLUSTERS__ALLOW_PRIVATE_ADDRESSES=true"
            )
        fi
    else
        local upstream
        for upstream in "${DATA_SERVICES[@]}"; do
            vars+=("${prefix}UPSTREAMS__${upstream^^}=http://${HOST}:${PORT[${upstream}]}")
        done
        vars+=(
            "${prefix}AUTH0__ISSUER=${SANDBOX_AUTH0_ISSUER}"
            "${prefix}AUTH0__AUDIENCE=${SANDBOX_AUTH0_AUDIENCE}"
            "${prefix}AUTH__GATEWAY_SIGNING_KEY=${GATEWAY_SIGNING_KEY}"
            "${prefix}LOGIN__CLIENT_ID=${SANDBOX_AUTH0_CLIENT_ID}"
            "${prefix}LOGIN__CLIENT_SECRET=${SANDBOX_AUTH0_CLIENT_SECRET}"
            "${prefix}LOGIN__CALLBACK_URL=http://${HOST}:${PORT[gateway]}/api/auth/callback"
            "${prefix}LOGIN__POST_LOGOUT_URL=http://${HOST}:${PORT[gateway]}/"
            "${prefix}LOGIN__COOKIE_KEY=${GATEWAY_SIGNING_KEY}-cookies"
            # The sandbox tenant's machine application, for hopsbridge-admin (decision 0045).
            "${prefix}ADMIN__MACHINE_CLIENTS=hopsbridge-admin"
        )
    fi
    # A session of its own keeps the terminal's Ctrl-C away from the service: this script
    # catches it and stops the services in order.
    setsid env "${vars[@]}" "${BIN_DIR}/hopsbridge-${svc}" serve >"${LOG_DIR}/${svc}.log" 2>&1 &
    PID[${svc}]=$!
}

# Waits until the service answers 200 on /readyz.
wait_ready() {
    local svc=$1 pid=${PID[$1]} port=${PORT[$1]} status="" code i
    for ((i = 0; i < READY_TIMEOUT * 4; i++)); do
        if ! kill -0 "${pid}" 2>/dev/null; then
            code=0
            wait "${pid}" 2>/dev/null || code=$?
            unset "PID[${svc}]"
            fail_service "${svc}" "${svc} exited with status ${code} while starting"
        fi
        status=$(http_status "${HOST}" "${port}" /readyz)
        [[ ${status} == 200 ]] && return 0
        sleep 0.25
    done
    fail_service "${svc}" "${svc} was not ready within ${READY_TIMEOUT} s (last GET http://${HOST}:${port}/readyz: ${status:-no answer})"
}

# --- Infrastructure ---------------------------------------------------------------------------

ensure_postgres
ensure_nats
ensure_database "${DATABASE}"

for svc in "${SERVICES[@]}"; do
    if tcp_open "${HOST}" "${PORT[${svc}]}"; then
        hb_die "port ${PORT[${svc}]} (${svc}) is already in use; is the platform already running?"
    fi
done

# --- Build ------------------------------------------------------------------------------------

# True when every binary this script starts is in BIN_DIR.
all_built() {
    local name
    for name in "${SERVICES[@]}" sandbox; do
        [[ -x ${BIN_DIR}/hopsbridge-${name} ]] || return 1
    done
}

if [[ ${PREBUILT} == 1 ]] && all_built; then
    hb_log "using the binaries in ${BIN_DIR} as they are (HOPSBRIDGE_DEV_PREBUILT=1)"
else
    hb_log "building the services (cargo build --workspace --bins ${cargo_flags[*]})"
    cargo build --workspace --bins "${cargo_flags[@]}"
fi

mkdir -p "${LOG_DIR}"

# Ed25519 key pairs (decision 0053): the gateway's, which signs the callers it vouches for, and
# each data service's own, for its calls to other services' /internal routes. Made once per
# checkout with openssl, kept in .local/keys/: <name>.seed is the private 32-byte seed (base64),
# <name>.pub the public key. Each service holds only its own seed and others' public keys.
KEY_DIR="${root}/.local/keys"
command -v openssl >/dev/null || hb_die "openssl is needed to make the services' key pairs"
for name in gateway "${DATA_SERVICES[@]}"; do
    if [[ ! -s ${KEY_DIR}/${name}.seed || ! -s ${KEY_DIR}/${name}.pub ]]; then
        mkdir -p "${KEY_DIR}"
        (
            umask 077
            pem=$(openssl genpkey -algorithm ed25519) &&
                openssl pkey -outform DER <<<"${pem}" | tail -c 32 | base64 -w0 >"${KEY_DIR}/${name}.seed" &&
                openssl pkey -pubout -outform DER <<<"${pem}" | tail -c 32 | base64 -w0 >"${KEY_DIR}/${name}.pub"
        ) || hb_die "cannot make the ${name} key pair with openssl"
    fi
done
GATEWAY_SIGNING_KEY=$(<"${KEY_DIR}/gateway.seed")
# Which services each service accepts calls from: each internal route names which of these it
# serves (team's from identity, provisioning's from metering, metering's from billing).
declare -A CALLERS=([team]=identity [provisioning]=metering [metering]=billing)
# The secret the Auth0 Action sends to identity's webhook; made the same way.
WEBHOOK_SECRET_FILE="${root}/.local/auth0-webhook-secret"
if [[ ! -s ${WEBHOOK_SECRET_FILE} ]]; then
    (umask 077 && head -c 24 /dev/urandom | base64 -w0 >"${WEBHOOK_SECRET_FILE}")
fi
AUTH0_WEBHOOK_SECRET=$(<"${WEBHOOK_SECRET_FILE}")
# The key that seals provisioning's cluster secrets at rest (id "dev"); made the same way.
ENCRYPTION_KEY_FILE="${root}/.local/provisioning-encryption-key"
if [[ ! -s ${ENCRYPTION_KEY_FILE} ]]; then
    (umask 077 && head -c 32 /dev/urandom | base64 -w0 >"${ENCRYPTION_KEY_FILE}")
fi
PROVISIONING_ENCRYPTION_KEYS="dev:$(<"${ENCRYPTION_KEY_FILE}")"

# Where identity's settings are written for `hopsbridge-identity grant-admin`.
IDENTITY_ENV_FILE="${root}/.local/identity.env"

# --- Clean slate ------------------------------------------------------------------------------
# The sandbox keeps its people, Stripe customers and Hopsworks accounts in memory only, so the
# services' records of them go too: both start empty together, never half (decision 0047).

hb_log "starting from a clean slate: database ${DATABASE} and the HB_ streams"
psql -X -w -h "${HB_PG_HOST}" -p "${HB_PG_PORT}" -U postgres -d postgres -q \
    -v ON_ERROR_STOP=1 -v db="${DATABASE}" <<<'DROP DATABASE IF EXISTS :"db" WITH (FORCE);' ||
    hb_die "cannot drop database ${DATABASE}"
ensure_database "${DATABASE}"
delete_dev_streams || hb_die "cannot delete the HB_ streams on ${NATS_URL}"

# --- Sandbox ----------------------------------------------------------------------------------
# hopsbridge-sandbox (simulated Auth0, Stripe, Hopsworks and Kubernetes APIs) starts before the
# services. It writes where everything is to .local/sandbox/sandbox.env, which is exported
# here so the services' settings for the outside world can point at it.

SANDBOX_DIR="${root}/.local/sandbox"
rm -f "${SANDBOX_DIR}/sandbox.env"
# Emptied now: the wait below reads it before the sandbox's own redirection may have truncated
# the last run's "Ready.".
: >"${LOG_DIR}/sandbox.log"
hb_log "starting the sandbox (simulated Auth0, Stripe, Hopsworks, Kubernetes)"
# It also registers its clusters with provisioning once provisioning answers, as an operator
# would through the admin API, so a person who signs up and adds a card is given one (unless
# HOPSBRIDGE_DEV_REGISTER_CLUSTERS=0: then an operator registers them with hopsbridge-admin).
# A sign-up on its login page fires the post-registration Action at the gateway, as Auth0's does.
register_args=(--register-clusters-at "http://${HOST}:${PORT[provisioning]}")
if [[ ${REGISTER_CLUSTERS} == 0 ]]; then
    register_args=()
fi
HOPSBRIDGE_SANDBOX_SIGNING_KEY="${GATEWAY_SIGNING_KEY}" HOPSBRIDGE_SANDBOX_AUTH0_WEBHOOK_SECRET="${AUTH0_WEBHOOK_SECRET}" \
    setsid "${BIN_DIR}/hopsbridge-sandbox" \
    --state-dir "${SANDBOX_DIR}" --gateway-url "http://${HOST}:${PORT[gateway]}" \
    "${register_args[@]}" \
    --post-registration-url "http://${HOST}:${PORT[gateway]}/webhooks/auth0/post-registration" \
    >"${LOG_DIR}/sandbox.log" 2>&1 &
SANDBOX_PID=$!
for ((i = 0; i < READY_TIMEOUT * 4; i++)); do
    grep -q '^Ready\.$' "${LOG_DIR}/sandbox.log" 2>/dev/null && break
    if ! kill -0 "${SANDBOX_PID}" 2>/dev/null; then
        SANDBOX_PID=""
        fail_service sandbox "the sandbox exited while starting"
    fi
    sleep 0.25
done
grep -q '^Ready\.$' "${LOG_DIR}/sandbox.log" || fail_service sandbox "the sandbox was not ready within ${READY_TIMEOUT} s"
set -a
# shellcheck source=/dev/null
source "${SANDBOX_DIR}/sandbox.env"
set +a

# --- Services ---------------------------------------------------------------------------------

for svc in "${SERVICES[@]}"; do
    hb_log "starting ${svc} on http://${HOST}:${PORT[${svc}]}"
    start_service "${svc}"
done
for svc in "${SERVICES[@]}"; do
    wait_ready "${svc}"
done

printf '\nHopsbridge is running.\n\n'
for svc in "${SERVICES[@]}"; do
    printf '  %-13s http://%s:%s   log: %s\n' "${svc}" "${HOST}" "${PORT[${svc}]}" ".local/logs/${svc}.log"
done
printf '\n  sandbox       log: .local/logs/sandbox.log, settings: .local/sandbox/sandbox.env\n'
sed -n '/^Auth0 tenant/,/^Ready\.$/p' "${LOG_DIR}/sandbox.log" | sed '/^Ready\.$/d; s/^/    /'
printf '\n  mail inbox    %s/api/v1/messages (every mail the services send)\n' "${SANDBOX_MAIL_INBOX_URL}"
printf '  clock         %s (every service follows it; POST {"advance_micros": N} or {"rate_milli": N} moves it)\n' \
    "${SANDBOX_CLOCK_URL}"
gateway="http://${HOST}:${PORT[gateway]}"
printf '\n  Sign up or log in in a browser:\n    %s/api/auth/login\n' "${gateway}"
printf '\n  Become the first admin (after signing up with that address):\n'
printf '    (set -a; . .local/identity.env; %s/hopsbridge-identity grant-admin --email you@example.com)\n' \
    "${BIN_DIR#"${root}"/}"
printf '\n  A bearer token for curl (the sandbox tenant'"'"'s admin machine client, for /api/admin/...):\n'
printf '    TOKEN=$(curl -s %soauth/token -d grant_type=client_credentials -d client_id=%s -d client_secret=%s \\\n' \
    "${SANDBOX_AUTH0_ISSUER}" "${SANDBOX_AUTH0_ADMIN_CLIENT_ID}" "${SANDBOX_AUTH0_ADMIN_CLIENT_SECRET}"
printf '      --data-urlencode audience=%s | sed -E '"'"'s/.*"access_token":"([^"]+)".*/\\1/'"'"')\n' \
    "${SANDBOX_AUTH0_AUDIENCE}"
printf '    curl -H "authorization: Bearer $TOKEN" %s/api/admin/users\n' "${gateway}"
printf '\n  A person'"'"'s bearer token (the Password grant, for anyone who signed up on the page):\n'
printf '    TOKEN=$(curl -s %soauth/token -d grant_type=password -d client_id=%s -d client_secret=%s \\\n' \
    "${SANDBOX_AUTH0_ISSUER}" "${SANDBOX_AUTH0_CLIENT_ID}" "${SANDBOX_AUTH0_CLIENT_SECRET}"
printf '      -d username=ada@example.com -d password=%s --data-urlencode audience=%s \\\n' \
    "$(sed -n 's/^ *user .*<ada@example.com>.*, password //p' "${LOG_DIR}/sandbox.log")" "${SANDBOX_AUTH0_AUDIENCE}"
printf '      | sed -E '"'"'s/.*"access_token":"([^"]+)".*/\\1/'"'"')\n'
printf '    curl -H "authorization: Bearer $TOKEN" %s/api/me\n' "${gateway}"
printf '\n  database      %s\n' "${DATABASE_URL}"
printf '  nats          %s\n' "${NATS_URL}"
printf '\n  Every service answers GET /healthz and GET /readyz. Press Ctrl-C to stop.\n\n'

# Runs until a signal (on_signal exits) or until a service stops by itself.
pids=()
for svc in "${SERVICES[@]}"; do
    pids+=("${PID[${svc}]}")
done
exited=""
code=0
wait -n -p exited "${pids[@]}" || code=$?
for svc in "${SERVICES[@]}"; do
    if [[ ${PID[${svc}]:-} == "${exited}" ]]; then
        unset "PID[${svc}]"
        fail_service "${svc}" "${svc} stopped unexpectedly with status ${code}"
    fi
done
hb_die "a service stopped unexpectedly (logs: ${LOG_DIR})"
