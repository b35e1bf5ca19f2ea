-- The Stripe catalogue of the price book: one billing meter and one metered price per price
-- version (Stripe's prices are immutable and an invoice line is a meter's events × one price).
CREATE TABLE stripe_prices (
    price_id uuid PRIMARY KEY REFERENCES prices (id),
    meter_id text NOT NULL,
    event_name text NOT NULL UNIQUE,
    stripe_price_id text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Which price versions each subscription has an item of, and since when (Stripe bills a meter
-- event by an item only when it is timestamped while the item is on the subscription).
CREATE TABLE subscription_items (
    subscription_id text NOT NULL,
    price_id uuid NOT NULL REFERENCES prices (id),
    item_id text NOT NULL UNIQUE,
    added_at timestamptz NOT NULL,
    removed_at timestamptz NULL,
    PRIMARY KEY (subscription_id, price_id)
);
