-- The account lifecycle (decision 0050): each Hopsworks account's status and maxNumProjects
-- follow ours, pushed by the background task until Hopsworks agrees; each cluster's projects
-- are synced with their creators and counted against their owner's plan.

-- account_sync_due_at is set when the account's wanted status (from users.status) or
-- maxNumProjects changed; account_sync_version is bumped with it, so a push that started
-- before the change does not clear it.
ALTER TABLE assignments
    ADD COLUMN account_sync_due_at      timestamptz,
    ADD COLUMN account_sync_lease_until timestamptz,
    ADD COLUMN account_sync_attempts    integer NOT NULL DEFAULT 0,
    ADD COLUMN account_sync_error       text,
    ADD COLUMN account_sync_version     integer NOT NULL DEFAULT 0,
    -- Projects the account ever created (Hopsworks' numCreatedProjects), as the last
    -- successful project sync read it.
    ADD COLUMN hopsworks_created_projects integer;

CREATE INDEX assignments_account_sync_due ON assignments (account_sync_due_at) WHERE account_sync_due_at IS NOT NULL;

-- Every project a sync saw on a cluster, kept after it is gone (gone_at).
CREATE TABLE projects (
    cluster_id        uuid NOT NULL REFERENCES clusters (id),
    project_id        bigint NOT NULL,
    namespace         text NOT NULL,
    name              text NOT NULL,
    -- The creator's Hopsworks username, and the person whose account on the cluster it is.
    creator_username  text,
    creator_id        uuid,
    -- Whose plan the project counts against: the creator, or the owner whose team the
    -- creator was in at the sync.
    owner_id          uuid,
    first_seen_at     timestamptz NOT NULL,
    last_seen_at      timestamptz NOT NULL,
    gone_at           timestamptz,
    PRIMARY KEY (cluster_id, project_id)
);

CREATE INDEX projects_owner ON projects (owner_id, cluster_id) WHERE gone_at IS NULL;
CREATE INDEX projects_creator ON projects (creator_id, cluster_id);

-- Each cluster's project sync: the lease of the replica doing it, when the next is due, and
-- how the last one ended.
CREATE TABLE project_syncs (
    cluster_id       uuid PRIMARY KEY REFERENCES clusters (id),
    lease_until      timestamptz,
    next_sync_at     timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz,
    last_synced_at   timestamptz,
    last_sync_error  text
);

-- What ProjectsCounted last announced per (owner, cluster).
CREATE TABLE project_counts (
    owner_id         uuid NOT NULL,
    cluster_id       uuid NOT NULL REFERENCES clusters (id),
    active_projects  integer NOT NULL,
    project_names    text[] NOT NULL,
    synced_at        timestamptz NOT NULL,
    PRIMARY KEY (owner_id, cluster_id)
);

-- Each owner's plan as billing announces it (PlanChanged), the latest by changed_at.
CREATE TABLE plans (
    owner_id             uuid PRIMARY KEY,
    plan                 text NOT NULL,
    max_active_projects  integer NOT NULL CHECK (max_active_projects >= 0),
    changed_at           timestamptz NOT NULL
);
