-- A customer's days to report at once, through a day (inclusive): recorded when Stripe creates
-- a subscription cycle's invoice (an hour before it finalises it) or when the account is deleted,
-- and done by the reporter.
CREATE TABLE report_requests (
    customer_id text NOT NULL,
    through date NOT NULL,
    reason text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    done_at timestamptz NULL,
    PRIMARY KEY (customer_id, through)
);
CREATE INDEX report_requests_open ON report_requests (requested_at) WHERE done_at IS NULL;
