-- Storage measured per Hopsworks project (decision 0056).
--
-- One storage run per (cluster, storage window): hourly UTC windows by default, measured by a
-- snapshot taken inside the window through provisioning (Hopsworks' admin projects list with
-- its quotas). Runs go pending -> running (leased to one replica) -> complete | gap, as usage
-- runs do; a window whose snapshot could not be taken inside it is a gap, never a zero.
CREATE TABLE storage_runs (
    cluster_id          uuid NOT NULL,
    window_start        timestamptz NOT NULL,
    window_end          timestamptz NOT NULL,
    status              text NOT NULL CHECK (status IN ('pending', 'running', 'complete', 'gap')),
    attempts            integer NOT NULL DEFAULT 0,
    next_attempt_at     timestamptz NOT NULL,
    -- The window's end: a snapshot taken later would describe another window.
    deadline            timestamptz NOT NULL,
    claimed_by          text,
    lease_until         timestamptz,
    last_error          text,
    last_error_code     text,
    gap_reason          text,
    gap_detail          text,
    -- Of a complete run: projects whose storage was read, and those Hopsworks did not report.
    projects            integer,
    unreported          integer,
    measured_at         timestamptz,
    finished_at         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster_id, window_start),
    CHECK (window_end > window_start),
    CHECK (status <> 'gap' OR gap_reason IS NOT NULL)
);
CREATE INDEX storage_runs_due ON storage_runs (next_attempt_at) WHERE status IN ('pending', 'running');
CREATE INDEX storage_runs_gaps ON storage_runs (window_start) WHERE status = 'gap';

-- The end of the last storage window scheduled per cluster.
ALTER TABLE clusters ADD COLUMN storage_scheduled_through timestamptz;

-- What a storage run measured: one row per (cluster, project, window), the idempotency key;
-- the id is derived from it, so it is the same whoever stores it. Attributed by project id to
-- the project's creator and their owner at the window's start; a project whose creator holds
-- no account on the cluster is kept unbilled (user and owner null).
CREATE TABLE storage_samples (
    id                      uuid PRIMARY KEY,
    cluster_id              uuid NOT NULL,
    project_id              bigint NOT NULL,
    window_start            timestamptz NOT NULL,
    window_end              timestamptz NOT NULL,
    namespace               text NOT NULL,
    project_name            text NOT NULL,
    creator_username        text,
    user_id                 uuid,
    owner_user_id           uuid,
    offline_bytes           bigint NOT NULL CHECK (offline_bytes >= 0),
    online_bytes            bigint NOT NULL CHECK (online_bytes >= 0),
    offline_byte_seconds    bigint NOT NULL CHECK (offline_byte_seconds >= 0),
    online_byte_seconds     bigint NOT NULL CHECK (online_byte_seconds >= 0),
    measured_at             timestamptz NOT NULL,
    UNIQUE (cluster_id, project_id, window_start),
    CHECK ((user_id IS NULL) = (owner_user_id IS NULL)),
    CHECK (measured_at >= window_start AND measured_at < window_end)
);
CREATE INDEX storage_samples_user ON storage_samples (user_id, window_start) WHERE user_id IS NOT NULL;
CREATE INDEX storage_samples_owner ON storage_samples (owner_user_id, window_start) WHERE owner_user_id IS NOT NULL;

-- A project whose storage Hopsworks did not report in a window (a directory without a quota
-- has no usage): a gap of that project, with the reason, never a sample of zero.
CREATE TABLE storage_gaps (
    cluster_id          uuid NOT NULL,
    project_id          bigint NOT NULL,
    window_start        timestamptz NOT NULL,
    namespace           text NOT NULL,
    reason              text NOT NULL,
    detail              text NOT NULL,
    PRIMARY KEY (cluster_id, project_id, window_start)
);
