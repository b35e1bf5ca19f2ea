-- provisioning's tables: the cluster registry, the projection of users it needs, and each
-- user's assignment to a cluster (with the work still to do on Hopsworks).

-- Hopsworks clusters. The admin API key and the kubeconfig are AES-256-GCM ciphertexts
-- (12-byte nonce followed by the ciphertext and tag), each with the id of the key that sealed
-- it, bound to (cluster id, field name) as associated data. Occupancy is never stored: it is
-- counted from assignments while the cluster rows are locked.
CREATE TABLE clusters (
    id                    uuid PRIMARY KEY,
    name                  text NOT NULL,
    api_url               text NOT NULL,
    api_key_ciphertext    bytea NOT NULL,
    api_key_key_id        text NOT NULL,
    kubeconfig_ciphertext bytea NOT NULL,
    kubeconfig_key_id     text NOT NULL,
    ca_bundle             text NOT NULL,
    oauth_client_id       text NOT NULL,
    capacity              integer NOT NULL CHECK (capacity >= 0),
    region                text NOT NULL,
    status                text NOT NULL CHECK (status IN ('active', 'maintenance', 'full', 'inactive')),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX clusters_name_unique ON clusters (lower(name));

-- People, as identity announces them (UserCreated, UserSuspended, UserReactivated, UserDeleted).
CREATE TABLE users (
    user_id       uuid PRIMARY KEY,
    auth_subject  text NOT NULL,
    email         text NOT NULL,
    name          text NOT NULL DEFAULT '',
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'deleted')),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per user who was ever to be given a cluster.
--   waiting_for_user      PaymentMethodAdded arrived before UserCreated; placed when it arrives
--   waiting_for_capacity  no active cluster had room; placed in order of waiting_since
--   provisioning          seat taken on cluster_id; the Hopsworks account is being made
--                         (after deactivating the account on previous_cluster_id, for a move)
--   complete              the Hopsworks account exists (hopsworks_username, hopsworks_user_id)
--   unassigning           the seat is released; the account on cluster_id is being deactivated
--   unassigned            nothing left to do
-- A seat is taken by 'provisioning' and 'complete' rows only.
CREATE TABLE assignments (
    user_id                    uuid PRIMARY KEY,
    cluster_id                 uuid REFERENCES clusters (id),
    status                     text NOT NULL CHECK (status IN ('waiting_for_user', 'waiting_for_capacity',
                                   'provisioning', 'complete', 'unassigning', 'unassigned')),
    hopsworks_username         text,
    hopsworks_user_id          bigint,
    max_num_projects           integer NOT NULL,
    previous_cluster_id        uuid REFERENCES clusters (id),
    previous_hopsworks_user_id bigint,
    attempts                   integer NOT NULL DEFAULT 0,
    last_error                 text,
    next_attempt_at            timestamptz,
    lease_until                timestamptz,
    version                    integer NOT NULL DEFAULT 0,
    -- When the user asked (or last asked again) for a cluster; waiting users are seated in
    -- this order.
    waiting_since              timestamptz NOT NULL DEFAULT now(),
    completed_at               timestamptz,
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    CHECK ((status IN ('provisioning', 'complete', 'unassigning')) = (cluster_id IS NOT NULL)),
    CHECK (status <> 'complete' OR (hopsworks_username IS NOT NULL AND hopsworks_user_id IS NOT NULL))
);

-- Occupancy: seats per cluster.
CREATE INDEX assignments_seats ON assignments (cluster_id) WHERE status IN ('provisioning', 'complete');
-- The background task's queues.
CREATE INDEX assignments_waiting ON assignments (waiting_since, user_id) WHERE status = 'waiting_for_capacity';
CREATE INDEX assignments_due ON assignments (next_attempt_at) WHERE status IN ('provisioning', 'unassigning');
CREATE INDEX assignments_status ON assignments (status, waiting_since, user_id);
