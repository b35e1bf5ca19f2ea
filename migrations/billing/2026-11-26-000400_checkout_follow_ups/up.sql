-- A completed setup-mode Checkout Session leaves Stripe work to do: read which card the
-- session saved and make it the customer's default for invoices. The webhook records the work
-- here, in the transaction that claims the event, and answers at once; a background task does
-- the Stripe calls at billing's pace and retries them until they succeed.
CREATE TABLE checkout_follow_ups (
    -- The checkout.session.completed event that asked for the work; also the idempotency key.
    event_id text PRIMARY KEY,
    stripe_customer_id text NOT NULL,
    setup_intent_id text NOT NULL,
    -- When the event happened (Unix seconds), the time the card counts as attached from.
    event_created bigint NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    done_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX checkout_follow_ups_due ON checkout_follow_ups (next_attempt_at) WHERE done_at IS NULL;
