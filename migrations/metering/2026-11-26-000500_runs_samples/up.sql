-- metering's tables: what it learns from provisioning and team (clusters, who is who on each
-- cluster, whose team a member is in, each cluster's Hopsworks projects), one run per
-- (cluster, window), the samples a run measured, and usage per UTC day derived from them.
--
-- Usage is kept as integer resource-seconds (nanocore-seconds, byte-seconds, GPU-seconds):
-- exact, and far inside bigint for one (user, project, day): 100,000 cores for a whole day is
-- 8.64e18 nanocore-seconds.

-- Clusters, from ClusterRegistered and ClusterUpdated. Every cluster but an inactive one is
-- measured; windows are scheduled from the first one that starts after it became known.
CREATE TABLE clusters (
    cluster_id          uuid PRIMARY KEY,
    name                text NOT NULL,
    status              text NOT NULL CHECK (status IN ('active', 'maintenance', 'full', 'inactive')),
    measured_from       timestamptz NOT NULL,
    -- The end of the last window a run was scheduled for.
    scheduled_through   timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- Hopsworks accounts, from ClusterAssigned and ClusterUnassigned: whose pods a username's are
-- on a cluster. Either event may arrive first; the later of the two (by when it happened)
-- decides whether the account is current.
CREATE TABLE accounts (
    cluster_id          uuid NOT NULL,
    user_id             uuid NOT NULL,
    hopsworks_username  text,
    assigned_at         timestamptz,
    unassigned_at       timestamptz,
    PRIMARY KEY (cluster_id, user_id)
);
CREATE INDEX accounts_username ON accounts (cluster_id, hopsworks_username);

-- Team memberships, from TeamMemberJoined and TeamMemberRemoved: a member's usage bills to
-- their owner while they are a member.
CREATE TABLE memberships (
    member_user_id      uuid PRIMARY KEY,
    owner_user_id       uuid NOT NULL,
    joined_at           timestamptz,
    removed_at          timestamptz
);

-- Each cluster's Hopsworks projects as last listed by provisioning: the namespace is taken from
-- Hopsworks, never derived from the project name.
CREATE TABLE projects (
    cluster_id          uuid NOT NULL,
    namespace           text NOT NULL,
    project_id          bigint NOT NULL,
    name                text NOT NULL,
    creator_username    text NOT NULL,
    listed_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster_id, namespace)
);

-- One run per (cluster, window): the claim that lets several replicas share a window's
-- clusters. pending -> running (leased to one replica) -> complete | gap. A running run whose
-- lease ran out is taken over; one still pending or running past its deadline becomes a gap.
CREATE TABLE runs (
    cluster_id          uuid NOT NULL,
    window_start        timestamptz NOT NULL,
    window_end          timestamptz NOT NULL,
    status              text NOT NULL CHECK (status IN ('pending', 'running', 'complete', 'gap')),
    attempts            integer NOT NULL DEFAULT 0,
    next_attempt_at     timestamptz NOT NULL,
    deadline            timestamptz NOT NULL,
    -- The replica holding the run; once complete, the one that measured it.
    claimed_by          text,
    lease_until         timestamptz,
    last_error          text,
    last_error_code     text,
    -- For a gap: the stable code of why, and the message.
    gap_reason          text,
    gap_detail          text,
    -- Counters of the collection that completed it (pods, API calls, skipped items).
    stats               jsonb,
    sample_count        integer,
    started_at          timestamptz,
    finished_at         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster_id, window_start),
    CHECK (window_end > window_start),
    CHECK (status <> 'gap' OR gap_reason IS NOT NULL)
);
CREATE INDEX runs_due ON runs (next_attempt_at) WHERE status IN ('pending', 'running');
CREATE INDEX runs_gaps ON runs (window_start) WHERE status = 'gap';

-- What a run measured: one row per (cluster, namespace, Hopsworks username, window), the
-- idempotency key. A sample is attributed when the username is an account on this cluster
-- and the namespace is a project of this cluster whose creator is one of ours there;
-- otherwise it is kept, unbilled, with the reason.
CREATE TABLE samples (
    id                      uuid PRIMARY KEY,
    cluster_id              uuid NOT NULL,
    namespace               text NOT NULL,
    hopsworks_username      text NOT NULL,
    window_start            timestamptz NOT NULL,
    window_end              timestamptz NOT NULL,
    attribution             text NOT NULL CHECK (attribution IN ('attributed', 'unknown_user', 'unknown_project')),
    user_id                 uuid,
    owner_user_id           uuid,
    project_id              bigint,
    project_name            text,
    cpu_nanocore_seconds    bigint NOT NULL CHECK (cpu_nanocore_seconds >= 0),
    memory_byte_seconds     bigint NOT NULL CHECK (memory_byte_seconds >= 0),
    gpu_seconds             bigint NOT NULL CHECK (gpu_seconds >= 0),
    pods                    integer NOT NULL,
    estimated               boolean NOT NULL DEFAULT false,
    measured_at             timestamptz NOT NULL DEFAULT now(),
    UNIQUE (cluster_id, namespace, hopsworks_username, window_start),
    CHECK ((attribution = 'attributed') = (user_id IS NOT NULL AND owner_user_id IS NOT NULL))
);
CREATE INDEX samples_user_window ON samples (user_id, window_start) WHERE user_id IS NOT NULL;

-- Attributed usage per (UTC day, user, owner, cluster, namespace), added to in the transaction
-- that inserts the samples it comes from.
CREATE TABLE usage_daily (
    day                     date NOT NULL,
    user_id                 uuid NOT NULL,
    owner_user_id           uuid NOT NULL,
    cluster_id              uuid NOT NULL,
    namespace               text NOT NULL,
    cpu_nanocore_seconds    bigint NOT NULL,
    memory_byte_seconds     bigint NOT NULL,
    gpu_seconds             bigint NOT NULL,
    samples                 integer NOT NULL,
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, user_id, owner_user_id, cluster_id, namespace)
);
CREATE INDEX usage_daily_owner ON usage_daily (owner_user_id, day);
