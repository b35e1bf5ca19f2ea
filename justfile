# Hopsbridge tasks; `just` lists them. Each recipe wraps a plain command or script, so nothing
# here needs just to work.

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments

# Lists the recipes.
default:
    @just --list

# Runs the whole platform locally (Postgres, NATS and the six services); `just dev --release`.
dev *ARGS:
    ./scripts/dev.sh "$@"

# Runs the whole test suite; extra arguments go to cargo test.
test *ARGS:
    ./scripts/test.sh "$@"

# Checks formatting and runs clippy with warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Formats the code.
fmt:
    cargo fmt --all

# Runs one benchmark: `just bench outbox` (local Postgres and NATS), `just bench podmetrics` (the sandbox),
# `just bench gateway` (installs oha from crates.io when missing), `just bench journey` (every service as a
# process, 500 people from card to cluster), `just bench metering` (one window of 200 sandbox clusters x 2,000
# pods, and the per-user baseline), `just bench ledger` (UsageRecorded into billing's ledger: throughput and the
# latency of a prepaid deduction), `just bench reporting` (one day of 100,000 owners x 3 resources reported to the
# sandbox's Stripe in live mode: reports/s and the ratio to Stripe's 1,000 meter events/s).
bench TARGET:
    #!/usr/bin/env bash
    set -euo pipefail
    target="$1"
    case "$1" in
        metering) package=hopsbridge-metering; target=collect ;;
        outbox) package=hopsbridge-platform ;;
        podmetrics) package=hopsbridge-sandbox ;;
        journey) package=hopsbridge-journey ;;
        ledger|reporting) package=hopsbridge-billing ;;
        gateway)
            package=hopsbridge-gateway
            command -v oha >/dev/null 2>&1 || [ -x "${HOME}/.cargo/bin/oha" ] || cargo install oha --locked
            ;;
        *)
            echo "unknown benchmark '$1'; valid benchmarks: outbox, podmetrics, gateway, journey, metering, ledger, reporting" >&2
            exit 2
            ;;
    esac
    source scripts/lib/services.sh
    ensure_postgres
    ensure_nats
    exec cargo bench -p "${package}" --bench "${target}"

# The money proof's ignored forms, every service as a process: `just proof-money` runs 50 owners over a
# simulated month through metering, billing and the sandbox's Stripe, storage included, and prints the per-owner
# table (invoice, ledger, samples, storage); `just proof-money faults` runs billing's outages: killed after Stripe accepted a day's reports
# and before it recorded them, then 30 hours down; and three days down, then catching up.
proof-money WHICH="month":
    #!/usr/bin/env bash
    set -euo pipefail
    case "$1" in
        month) filters=(a_simulated_month_for_fifty_owners) ;;
        faults) filters=(reports_of_unknown_outcome_are_settled billing_down_for_three_days) ;;
        *) echo "unknown proof '$1'; valid: month, faults" >&2; exit 2 ;;
    esac
    source scripts/lib/services.sh
    ensure_postgres
    ensure_nats
    exec cargo test -p hopsbridge-journey --test money -- --ignored --nocapture --test-threads 1 "${filters[@]}"

# The chaos campaign's long form (crates/journey/tests/chaos.rs, decision 0066): every service as a process, the
# run's database on Postgres, a private nats-server and the sandbox; 20 people sign up, add cards, get clusters and
# work over simulated days while every service is killed at least 20 times, NATS and the run's database are
# restarted and Stripe, Hopsworks and Kubernetes faults are injected. Prints the seed, the faults injected and the
# counts of anything lost or duplicated, and fails unless each is zero. `CHAOS_SEED=<n> just chaos` repeats a run.
chaos:
    #!/usr/bin/env bash
    set -euo pipefail
    source scripts/lib/services.sh
    ensure_postgres
    ensure_nats
    exec cargo test -p hopsbridge-journey --test chaos -- --ignored --nocapture --test-threads 1 the_chaos_campaign

# Follows docs/operations.md against the sandbox started as scripts/dev.sh starts it (decision 0067).
walkthrough:
    scripts/operator-walkthrough.sh

# Metering's accuracy over a whole simulated day through the service (96 windows, point samples beside readings
# integrated every 15 s, production timing on the sandbox's clock; prints the table of docs/benchmarks.md).
accuracy-day:
    #!/usr/bin/env bash
    set -euo pipefail
    source scripts/lib/services.sh
    ensure_postgres
    ensure_nats
    exec cargo test -p hopsbridge-metering --test accuracy -- --ignored --nocapture through_the_service

# Regenerates each service's src/schema.rs from its migrations (`just schema --check` compares).
schema *ARGS:
    ./scripts/schema.sh "$@"

# Regenerates services/gateway/openapi.json from the handlers' descriptions.
openapi:
    HOPSBRIDGE_UPDATE_OPENAPI=1 cargo test -p hopsbridge-gateway --test openapi

# Runs the CI script as CI does.
ci:
    bash .ci/run

# Validates docker-compose.yml.
compose-check:
    docker-compose -f docker-compose.yml config -q

# The OpenAPI fuzzer with more examples per operation than CI's (crates/journey/tests/fuzz.rs).
fuzz EXAMPLES="100":
    #!/usr/bin/env bash
    set -euo pipefail
    source scripts/lib/services.sh
    ensure_postgres
    ensure_nats
    HOPSBRIDGE_FUZZ_EXAMPLES="$1" exec cargo test -p hopsbridge-journey --test fuzz -- --nocapture
