-- Prepaid credits (decision 0038). A Checkout Session in payment mode is recorded when it is
-- made, and its completion grants once (the grant's source is the session).
CREATE TABLE credit_purchases (
    session_id text PRIMARY KEY,
    owner_id uuid NOT NULL,
    amount_minor bigint NOT NULL CHECK (amount_minor > 0),
    currency text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz NULL
);
CREATE INDEX credit_purchases_owner ON credit_purchases (owner_id, created_at);

CREATE TABLE credit_grants (
    id uuid PRIMARY KEY,
    owner_id uuid NOT NULL,
    category text NOT NULL CHECK (category IN ('purchased', 'promotional')),
    amount numeric NOT NULL CHECK (amount > 0),
    remaining numeric NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
    -- Lower is spent first (after promotional credit).
    priority integer NOT NULL DEFAULT 0,
    expires_at timestamptz NULL,
    -- What granted it, once: checkout:<cs_…> or admin:<uuid>.
    source text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid NULL
);
CREATE INDEX credit_grants_owner ON credit_grants (owner_id) WHERE remaining > 0;

-- Which grant paid how much of which ledger entry.
CREATE TABLE credit_deductions (
    sample_id uuid NOT NULL,
    day date NOT NULL,
    grant_id uuid NOT NULL REFERENCES credit_grants (id),
    owner_id uuid NOT NULL,
    amount numeric NOT NULL CHECK (amount > 0),
    window_start timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sample_id, day, grant_id),
    FOREIGN KEY (sample_id, day) REFERENCES ledger_entries (sample_id, day)
);
CREATE INDEX credit_deductions_owner ON credit_deductions (owner_id, window_start);

-- A prepaid owner's credit state: whether CreditsExhausted was announced for the current
-- exhaustion (cleared by a new grant).
CREATE TABLE credit_states (
    owner_id uuid PRIMARY KEY,
    exhausted_at timestamptz NULL,
    exhaustions integer NOT NULL DEFAULT 0
);

-- Low-balance alerts: how many times the balance fell from above a threshold to it or below
-- (only a grant raises it again), each crossing mailed once.
CREATE TABLE low_balance_alerts (
    owner_id uuid NOT NULL,
    threshold_minor bigint NOT NULL,
    crossings integer NOT NULL,
    last_crossed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, threshold_minor)
);
