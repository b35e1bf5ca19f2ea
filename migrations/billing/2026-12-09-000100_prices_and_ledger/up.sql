-- The price book: every version of a resource's price, never updated (decision 0038). A window
-- is priced by the version in force at its start.
CREATE TABLE prices (
    id uuid PRIMARY KEY,
    resource text NOT NULL CHECK (resource IN ('cpu', 'memory', 'gpu')),
    currency text NOT NULL,
    -- Minor units per billed unit, at most 12 decimal places (Stripe's unit_amount_decimal).
    unit_amount_decimal numeric NOT NULL CHECK (unit_amount_decimal >= 0 AND scale(unit_amount_decimal) <= 12),
    effective_from timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- The admin who recorded it; NULL for the version seeded from configuration.
    created_by uuid NULL,
    UNIQUE (resource, effective_from)
);

-- Billing modes with their history: the mode in force for a window is the latest row whose
-- effective_from is at or before the window's start (none: postpaid).
CREATE TABLE billing_modes (
    owner_id uuid NOT NULL,
    effective_from timestamptz NOT NULL,
    mode text NOT NULL CHECK (mode IN ('free', 'postpaid', 'prepaid')),
    changed_by uuid NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, effective_from)
);

-- The usage ledger: one row per UsageRecorded sample and UTC day (a window crossing midnight is
-- split pro rata by seconds), append-only. Quantities are metering's exact integers; costs are
-- in minor units with at most 12 decimal places.
CREATE TABLE ledger_entries (
    sample_id uuid NOT NULL,
    day date NOT NULL,
    -- The UsageRecorded event; NULL when the sample came by backfill.
    event_id uuid NULL,
    user_id uuid NOT NULL,
    owner_id uuid NOT NULL,
    cluster_id uuid NOT NULL,
    namespace text NOT NULL,
    project_id bigint NULL,
    window_start timestamptz NOT NULL,
    window_end timestamptz NOT NULL,
    cpu_nanocore_seconds bigint NOT NULL CHECK (cpu_nanocore_seconds >= 0),
    memory_byte_seconds bigint NOT NULL CHECK (memory_byte_seconds >= 0),
    gpu_seconds bigint NOT NULL CHECK (gpu_seconds >= 0),
    estimated boolean NOT NULL,
    -- In force at the window's start.
    billing_mode text NOT NULL CHECK (billing_mode IN ('free', 'postpaid', 'prepaid')),
    cpu_price_id uuid NOT NULL REFERENCES prices (id),
    memory_price_id uuid NOT NULL REFERENCES prices (id),
    gpu_price_id uuid NOT NULL REFERENCES prices (id),
    cpu_cost numeric NOT NULL,
    memory_cost numeric NOT NULL,
    gpu_cost numeric NOT NULL,
    -- Prepaid: what credits paid, what nobody pays (no card), and the postpaid overflow (card
    -- on file) in quanta of 1e-9 unit per resource. Postpaid windows report their integers.
    credits_paid numeric NOT NULL DEFAULT 0,
    unpaid numeric NOT NULL DEFAULT 0,
    cpu_over_quanta bigint NOT NULL DEFAULT 0,
    memory_over_quanta bigint NOT NULL DEFAULT 0,
    gpu_over_quanta bigint NOT NULL DEFAULT 0,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sample_id, day)
);
CREATE INDEX ledger_entries_owner_day ON ledger_entries (owner_id, day);
CREATE INDEX ledger_entries_window_start ON ledger_entries (window_start);
