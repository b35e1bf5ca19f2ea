-- One billing account per person (every new person is a potential owner). The Stripe ids are
-- stored the moment Stripe answers, each in its own commit, so a retry reuses them.
CREATE TABLE accounts (
    user_id                 uuid PRIMARY KEY,
    email                   text NOT NULL,
    name                    text NOT NULL DEFAULT '',
    billing_mode            text NOT NULL DEFAULT 'postpaid'
                            CHECK (billing_mode IN ('free', 'postpaid', 'prepaid')),
    stripe_customer_id      text NULL UNIQUE,
    stripe_subscription_id  text NULL UNIQUE,
    subscription_status     text NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- Payment methods Stripe told us about. A detached payment method can never be attached again
-- (Stripe's rule), so `detached_at` is final: a late `attached` for it changes nothing.
CREATE TABLE payment_methods (
    id                  text PRIMARY KEY,
    stripe_customer_id  text NOT NULL,
    brand               text NULL,
    last4               text NULL,
    exp_month           integer NULL,
    exp_year            integer NULL,
    attached_at         bigint NULL,
    detached_at         bigint NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX payment_methods_customer ON payment_methods (stripe_customer_id);

-- Invoices from invoice.* webhooks, for GET /api/billing. `event_created` and `status_rank`
-- keep a late, older event from overwriting a newer state.
CREATE TABLE invoices (
    id                  text PRIMARY KEY,
    stripe_customer_id  text NOT NULL,
    number              text NULL,
    status              text NOT NULL,
    amount_due          bigint NOT NULL,
    currency            text NOT NULL,
    hosted_invoice_url  text NULL,
    created             bigint NOT NULL,
    event_created       bigint NOT NULL,
    status_rank         integer NOT NULL
);

CREATE INDEX invoices_customer ON invoices (stripe_customer_id, created DESC);

-- Stripe events already applied: the id is claimed in the same transaction as the effect.
CREATE TABLE processed_stripe_events (
    event_id      text PRIMARY KEY,
    event_type    text NOT NULL,
    created       bigint NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now()
);
