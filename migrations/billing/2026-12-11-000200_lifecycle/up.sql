-- Plans (free, payg, prepaid): the owner's current plan on the account (none until chosen), every
-- change and every acceptance of the terms kept, never rewritten.
ALTER TABLE accounts ADD COLUMN plan text NULL CHECK (plan IN ('free', 'payg', 'prepaid'));

CREATE TABLE plan_changes (
    id uuid PRIMARY KEY,
    owner_id uuid NOT NULL,
    previous_plan text NULL,
    plan text NOT NULL CHECK (plan IN ('free', 'payg', 'prepaid')),
    reason text NOT NULL,
    changed_by uuid NULL,
    changed_at timestamptz NOT NULL
);
CREATE INDEX plan_changes_owner ON plan_changes (owner_id, changed_at);

CREATE TABLE terms_acceptances (
    id uuid PRIMARY KEY,
    owner_id uuid NOT NULL,
    terms_version text NOT NULL,
    accepted_at timestamptz NOT NULL
);
CREATE INDEX terms_acceptances_owner ON terms_acceptances (owner_id, accepted_at);

-- What restricts an owner, each until cleared; at most one open per owner and reason. The
-- enforcer suspends those whose deadline passed (suspended_at, once).
CREATE TABLE restrictions (
    id uuid PRIMARY KEY,
    owner_id uuid NOT NULL,
    reason text NOT NULL CHECK (reason IN ('over_project_limit', 'payment_failed', 'credits_exhausted', 'spending_cap')),
    detail text NOT NULL DEFAULT '',
    started_at timestamptz NOT NULL,
    deadline timestamptz NOT NULL,
    cleared_at timestamptz NULL,
    suspended_at timestamptz NULL
);
CREATE UNIQUE INDEX restrictions_open ON restrictions (owner_id, reason) WHERE cleared_at IS NULL;
CREATE INDEX restrictions_due ON restrictions (deadline) WHERE cleared_at IS NULL AND suspended_at IS NULL;

-- Whether billing suspended the owner (AccountRestricted published) and not lifted yet.
CREATE TABLE owner_suspensions (
    owner_id uuid PRIMARY KEY,
    suspended_at timestamptz NOT NULL,
    lifted_at timestamptz NULL
);

-- Each owner's active projects per cluster, from provisioning's ProjectsCounted.
CREATE TABLE project_counts (
    owner_id uuid NOT NULL,
    cluster_id uuid NOT NULL,
    active_projects integer NOT NULL,
    project_names text[] NOT NULL,
    synced_at timestamptz NOT NULL,
    PRIMARY KEY (owner_id, cluster_id)
);

-- What Stripe's webhooks told of an owner's standing (a subscription ended, an invoice failed or
-- was paid, credit bought), written with the webhook and acted on by the lifecycle worker.
CREATE TABLE lifecycle_signals (
    key text PRIMARY KEY,
    owner_id uuid NOT NULL,
    kind text NOT NULL CHECK (kind IN ('subscription_ended', 'invoice_failed', 'invoice_paid', 'credits_bought')),
    subject text NOT NULL,
    attempt integer NOT NULL DEFAULT 0,
    at timestamptz NOT NULL,
    handled_at timestamptz NULL
);
CREATE INDEX lifecycle_signals_pending ON lifecycle_signals (at) WHERE handled_at IS NULL;

-- What crossing the spending cap does: alert only, or suspend too.
ALTER TABLE spending_caps ADD COLUMN cap_action text NOT NULL DEFAULT 'alert' CHECK (cap_action IN ('alert', 'suspend'));

-- Owners whose account was deleted: nothing of the lifecycle acts on them any more.
CREATE TABLE closed_owners (
    owner_id uuid PRIMARY KEY,
    closed_at timestamptz NOT NULL
);
