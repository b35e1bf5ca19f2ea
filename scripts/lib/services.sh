# shellcheck shell=bash
#
# Helpers sourced by scripts/dev.sh, scripts/test.sh and .ci/run.
#
# They make sure the local services Hopsbridge needs are installed, running and reachable:
#   - PostgreSQL on 127.0.0.1:5432, user `postgres`, no password over TCP;
#   - NATS with JetStream on 127.0.0.1:4222, and the `nats-server` executable (the tests start
#     private servers of their own).
#
# Missing Debian packages are installed with apt-get and stopped services are started, as root
# or through sudo. Every function is idempotent and prints nothing when all is already fine.

HB_PG_HOST=127.0.0.1
HB_PG_PORT=5432
HB_NATS_HOST=127.0.0.1
HB_NATS_PORT=4222
HB_NATS_STORE=/var/lib/nats-server
HB_NATS_LOG=/var/log/nats-server.log
HB_NATS_PIDFILE=/run/hopsbridge-nats-server.pid

# Set once `apt-get update` has run in this shell.
HB_APT_UPDATED=0

hb_log() { printf '==> %s\n' "$*" >&2; }
hb_die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Fails unless this shell is root or sudo can be used.
need_root_or_sudo() {
    if [[ ${EUID} -eq 0 ]]; then
        return 0
    fi
    if command -v sudo >/dev/null 2>&1; then
        return 0
    fi
    hb_die "this step needs root: run as root or install sudo"
}

# Runs a command as root (directly, or through sudo).
as_root() {
    need_root_or_sudo
    if [[ ${EUID} -eq 0 ]]; then
        "$@"
    else
        sudo "$@"
    fi
}

# Installs Debian packages, running `apt-get update` once first.
apt_install() {
    hb_log "installing $* (apt-get)"
    if [[ ${HB_APT_UPDATED} -eq 0 ]]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
            hb_die "apt-get update failed"
        HB_APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
        hb_die "apt-get install $* failed"
}

# True when something accepts TCP connections on host:port.
tcp_open() {
    # shellcheck disable=SC2016 # the inner shell expands $1 and $2
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# Waits up to $3 seconds (default 30) for host:port to accept connections.
wait_for_tcp() {
    local host=$1 port=$2 seconds=${3:-30} i
    for ((i = 0; i < seconds * 5; i++)); do
        if tcp_open "${host}" "${port}"; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

# Prints the status code of `GET path` on host:port, or nothing when there is no answer.
http_status() {
    local host=$1 port=$2 path=$3
    # shellcheck disable=SC2016 # the inner shell expands its arguments
    timeout 5 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf "GET %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n" "$3" "$1" "$2" >&3
        read -r _ status _ <&3 || exit 1
        printf "%s\n" "${status}"
        # Read the rest, so the server is not cut off mid-response.
        cat <&3 >/dev/null
    ' _ "${host}" "${port}" "${path}" 2>/dev/null || true
}

# --- PostgreSQL ------------------------------------------------------------------------------

# True when user postgres can log in over TCP without a password.
pg_login_works() {
    psql -X -w -h "${HB_PG_HOST}" -p "${HB_PG_PORT}" -U postgres -d postgres \
        -Atqc 'SELECT 1' >/dev/null 2>&1
}

# The Debian cluster configured for HB_PG_PORT as "VERSION NAME STATUS", or nothing.
pg_local_cluster() {
    command -v pg_lsclusters >/dev/null 2>&1 || return 0
    pg_lsclusters -h 2>/dev/null | awk -v port="${HB_PG_PORT}" '$3 == port { print $1, $2, $4; exit }'
}

# Installs the server if needed and starts the cluster that listens on HB_PG_PORT.
pg_start_local() {
    if ! command -v pg_lsclusters >/dev/null 2>&1 || [[ -z $(ls -A /etc/postgresql 2>/dev/null) ]]; then
        apt_install postgresql
    fi
    local cluster version name status
    cluster=$(pg_local_cluster)
    if [[ -z ${cluster} ]]; then
        # The package normally creates the `main` cluster; make one if it did not.
        version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -n | tail -n 1)
        [[ -n ${version} ]] || hb_die "no PostgreSQL server found under /usr/lib/postgresql"
        hb_log "creating PostgreSQL cluster ${version}/main on port ${HB_PG_PORT}"
        as_root pg_createcluster --port "${HB_PG_PORT}" "${version}" main >/dev/null ||
            hb_die "could not create PostgreSQL cluster ${version}/main"
        cluster="${version} main down"
    fi
    read -r version name status <<<"${cluster}"
    # Installing the package may already have started it.
    if [[ ${status} != online ]]; then
        hb_log "starting PostgreSQL ${version}/${name}"
        as_root pg_ctlcluster --skip-systemctl-redirect "${version}" "${name}" start ||
            hb_die "could not start PostgreSQL ${version}/${name} (see /var/log/postgresql/postgresql-${version}-${name}.log)"
    fi
}

# Lets local TCP connections log in without a password (development machines only).
pg_trust_local_tcp() {
    local cluster version name hba
    cluster=$(pg_local_cluster)
    [[ -n ${cluster} ]] ||
        hb_die "PostgreSQL on ${HB_PG_HOST}:${HB_PG_PORT} refuses user postgres without a password, and it is not a local Debian cluster this script can configure"
    read -r version name _ <<<"${cluster}"
    hba="/etc/postgresql/${version}/${name}/pg_hba.conf"
    if as_root grep -q '^host all all 127.0.0.1/32 trust$' "${hba}"; then
        hb_die "${hba} already trusts 127.0.0.1, yet user postgres cannot log in to ${HB_PG_HOST}:${HB_PG_PORT} (does role postgres exist?)"
    fi
    hb_log "allowing passwordless TCP logins from this machine in ${hba}"
    # The first matching line wins, so these go on top.
    as_root sed -i \
        -e '1i # Hopsbridge local development: passwordless TCP logins from this machine.' \
        -e '1i host all all 127.0.0.1/32 trust' \
        -e '1i host all all ::1/128 trust' \
        "${hba}"
    as_root pg_ctlcluster --skip-systemctl-redirect "${version}" "${name}" reload ||
        hb_die "could not reload PostgreSQL ${version}/${name}"
}

# PostgreSQL answers on 127.0.0.1:5432 and user postgres logs in without a password.
ensure_postgres() {
    if ! command -v psql >/dev/null 2>&1; then
        apt_install postgresql-client
    fi
    if ! tcp_open "${HB_PG_HOST}" "${HB_PG_PORT}"; then
        pg_start_local
        wait_for_tcp "${HB_PG_HOST}" "${HB_PG_PORT}" 30 ||
            hb_die "PostgreSQL did not open ${HB_PG_HOST}:${HB_PG_PORT} within 30 s"
    fi
    # Accepting connections can lag behind opening the port.
    local i
    for ((i = 0; i < 50; i++)); do
        pg_isready -q -h "${HB_PG_HOST}" -p "${HB_PG_PORT}" && break
        sleep 0.2
    done
    if ! pg_login_works; then
        pg_trust_local_tcp
        local j
        for ((j = 0; j < 25; j++)); do
            pg_login_works && return 0
            sleep 0.2
        done
        hb_die "user postgres still cannot log in to ${HB_PG_HOST}:${HB_PG_PORT} without a password"
    fi
}

# Creates database $1 on the local server unless it exists.
ensure_database() {
    local db=$1
    local exists
    # psql substitutes :'db' and :"db" (quoted) in what it reads from standard input.
    exists=$(psql -X -w -h "${HB_PG_HOST}" -p "${HB_PG_PORT}" -U postgres -d postgres -Atq \
        -v ON_ERROR_STOP=1 -v db="${db}" <<<"SELECT 1 FROM pg_database WHERE datname = :'db';") ||
        hb_die "cannot query PostgreSQL for database ${db}"
    if [[ ${exists} != 1 ]]; then
        hb_log "creating database ${db}"
        psql -X -w -h "${HB_PG_HOST}" -p "${HB_PG_PORT}" -U postgres -d postgres -q \
            -v ON_ERROR_STOP=1 -v db="${db}" <<<'CREATE DATABASE :"db";' ||
            hb_die "cannot create database ${db}"
    fi
}

# --- kubectl ---------------------------------------------------------------------------------

# The Kubernetes tests drive the simulated API servers with kubectl as well as with the kube crate.
ensure_kubectl() {
    if ! command -v kubectl >/dev/null 2>&1; then
        apt_install kubernetes-client
    fi
    command -v kubectl >/dev/null 2>&1 || hb_die "kubectl is not installed"
}

# --- NATS ------------------------------------------------------------------------------------

# The nats-server executable the tests use: /usr/sbin/nats-server, else the one on PATH.
nats_server_path() {
    if [[ -x /usr/sbin/nats-server ]]; then
        printf '%s\n' /usr/sbin/nats-server
    else
        command -v nats-server 2>/dev/null || true
    fi
}

# The nats-server executable exists (installed from Debian when missing).
ensure_nats_server_binary() {
    if [[ -z $(nats_server_path) ]]; then
        apt_install nats-server
        # Under systemd the package starts its own server from /etc/nats-server.conf, which
        # has no JetStream; ensure_nats starts one with JetStream instead.
        if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nats-server 2>/dev/null; then
            hb_log "disabling the packaged nats-server service (it runs without JetStream)"
            as_root systemctl disable --now nats-server >/dev/null 2>&1 || true
        fi
    fi
    [[ -n $(nats_server_path) ]] || hb_die "nats-server is not installed"
}

# True when the server on host:port says it has JetStream (its INFO line, sent on connect).
nats_has_jetstream() {
    # shellcheck disable=SC2016 # the inner shell expands its arguments
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        read -r line <&3 || exit 1
        [[ ${line} == INFO* && ${line} == *"\"jetstream\":true"* ]]
    ' _ "$1" "$2" 2>/dev/null
}

# NATS with JetStream answers on 127.0.0.1:4222.
ensure_nats() {
    ensure_nats_server_binary
    if ! tcp_open "${HB_NATS_HOST}" "${HB_NATS_PORT}"; then
        local bin
        bin=$(nats_server_path)
        hb_log "starting ${bin} with JetStream on ${HB_NATS_HOST}:${HB_NATS_PORT}"
        as_root mkdir -p "${HB_NATS_STORE}"
        # The pid file keeps start-stop-daemon from mistaking another nats-server (a test's
        # private one) for this one.
        as_root start-stop-daemon --start --oknodo --background \
            --pidfile "${HB_NATS_PIDFILE}" --make-pidfile \
            --exec "${bin}" -- \
            -a "${HB_NATS_HOST}" -p "${HB_NATS_PORT}" -js -sd "${HB_NATS_STORE}" -l "${HB_NATS_LOG}" ||
            hb_die "could not start nats-server"
        if ! wait_for_tcp "${HB_NATS_HOST}" "${HB_NATS_PORT}" 20; then
            as_root tail -n 20 "${HB_NATS_LOG}" >&2 || true
            hb_die "nats-server did not open ${HB_NATS_HOST}:${HB_NATS_PORT} within 20 s (log: ${HB_NATS_LOG})"
        fi
    fi
    nats_has_jetstream "${HB_NATS_HOST}" "${HB_NATS_PORT}" ||
        hb_die "the NATS server on ${HB_NATS_HOST}:${HB_NATS_PORT} does not have JetStream enabled (restart it with -js)"
}

# --- diesel CLI ------------------------------------------------------------------------------

# The diesel CLI that prints `schema.rs` from a migrated database (scripts/schema.sh). Its
# version follows the diesel in Cargo.lock; it links libpq.
HB_DIESEL_CLI_VERSION=2.3.14

ensure_diesel_cli() {
    if ! dpkg -s libpq-dev >/dev/null 2>&1; then
        apt_install libpq-dev
    fi
    local installed
    installed=$(diesel --version 2>/dev/null | awk '/Version:/ { print $2 }' || true)
    if [[ ${installed} != "${HB_DIESEL_CLI_VERSION}" ]]; then
        hb_log "installing diesel_cli ${HB_DIESEL_CLI_VERSION} (cargo install)"
        cargo install diesel_cli --version "=${HB_DIESEL_CLI_VERSION}" --no-default-features \
            --features postgres --locked --quiet || hb_die "could not install diesel_cli"
    fi
}

# --- dependency checks -----------------------------------------------------------------------

# cargo-deny (licenses, bans, sources) and cargo-machete (unused dependencies), at the versions
# CI was written against.
HB_CARGO_DENY_VERSION=0.20.2
HB_CARGO_MACHETE_VERSION=0.9.2

ensure_cargo_tool() {
    local crate=$1 version=$2 binary=$3
    # `cargo-deny --version` prints "cargo-deny 0.20.2", `cargo-machete --version` "0.9.2".
    if ! "${binary}" --version 2>/dev/null | grep -qw -- "${version}"; then
        hb_log "installing ${crate} ${version} (cargo install)"
        cargo install "${crate}" --version "=${version}" --locked --quiet || hb_die "could not install ${crate}"
    fi
}

ensure_dependency_checkers() {
    ensure_cargo_tool cargo-deny "${HB_CARGO_DENY_VERSION}" cargo-deny
    ensure_cargo_tool cargo-machete "${HB_CARGO_MACHETE_VERSION}" cargo-machete
}
