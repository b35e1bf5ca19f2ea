-- Spending caps (soft): the month's cost of every mode but free, kept as it is ingested, and
-- the alerts sent (80, 90, 100 %), once per owner and UTC month.
CREATE TABLE spending_caps (
    owner_id uuid PRIMARY KEY,
    monthly_cap_minor bigint NOT NULL CHECK (monthly_cap_minor > 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE monthly_costs (
    owner_id uuid NOT NULL,
    month date NOT NULL,
    cost numeric NOT NULL,
    PRIMARY KEY (owner_id, month)
);

CREATE TABLE cap_alerts (
    owner_id uuid NOT NULL,
    month date NOT NULL,
    percent integer NOT NULL,
    sent_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, month, percent)
);

-- Differences between the ledger and metering's usage_daily, per owner and day.
CREATE TABLE reconciliation_findings (
    id uuid PRIMARY KEY,
    kind text NOT NULL,
    owner_id uuid NOT NULL,
    day date NOT NULL,
    ours text NOT NULL,
    theirs text NOT NULL,
    found_at timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz NULL
);
CREATE UNIQUE INDEX reconciliation_findings_open ON reconciliation_findings (kind, owner_id, day)
    WHERE resolved_at IS NULL;

-- Backfills asked for by admins or the reconciliation.
CREATE TABLE backfills (
    id uuid PRIMARY KEY,
    range_start timestamptz NOT NULL,
    range_end timestamptz NOT NULL,
    requested_by uuid NULL,
    status text NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    samples_seen bigint NOT NULL DEFAULT 0,
    samples_added bigint NOT NULL DEFAULT 0,
    error text NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz NULL
);
