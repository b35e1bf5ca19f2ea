-- Every meter event reported to Stripe (decision 0040): one row per owner, day, price version
-- and revision. A revision carries only what the day lacked (a correction, never a second copy).
-- Written pending before it is sent; accepted once Stripe has it; abandoned when Stripe is
-- found not to have it (a new revision follows).
CREATE TABLE meter_reports (
    id uuid PRIMARY KEY,
    owner_id uuid NOT NULL,
    day date NOT NULL,
    resource text NOT NULL CHECK (resource IN ('cpu', 'memory', 'gpu')),
    price_id uuid NOT NULL REFERENCES prices (id),
    revision integer NOT NULL CHECK (revision > 0),
    identifier text NOT NULL UNIQUE CHECK (length(identifier) <= 100),
    -- Quanta of 1e-9 billed unit.
    delta_quanta bigint NOT NULL CHECK (delta_quanta > 0),
    total_quanta bigint NOT NULL CHECK (total_quanta >= delta_quanta),
    event_timestamp timestamptz NOT NULL,
    -- A correction made after its period's invoice was finalised is timestamped in the open
    -- period: its first day.
    carried_into date NULL,
    state text NOT NULL CHECK (state IN ('pending', 'accepted', 'abandoned')),
    customer_id text NOT NULL,
    meter_id text NOT NULL,
    event_name text NOT NULL,
    created_at timestamptz NOT NULL,
    sent_at timestamptz NULL,
    UNIQUE (owner_id, day, price_id, revision)
);
CREATE INDEX meter_reports_pending ON meter_reports (created_at) WHERE state = 'pending';
CREATE INDEX meter_reports_day ON meter_reports (day, owner_id);
CREATE INDEX meter_reports_customer ON meter_reports (customer_id, meter_id, event_timestamp);
