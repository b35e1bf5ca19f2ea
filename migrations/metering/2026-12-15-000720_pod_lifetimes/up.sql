-- Pod lifetimes from a Kubernetes watch (decision 0070).
--
-- One row per pod (by uid) of a measured cluster: whose it is, its GPUs and requests, when it
-- started (its first container's start) and ended (its last container's finish, or its
-- deletion). Every replica watching writes the same facts: a start or end already known is
-- kept when it is earlier, so writes are idempotent.
CREATE TABLE pod_lifetimes (
    cluster_id            uuid NOT NULL,
    uid                   text NOT NULL,
    namespace             text NOT NULL,
    pod                   text NOT NULL,
    owner                 text NOT NULL,
    gpus                  bigint NOT NULL CHECK (gpus >= 0),
    cpu_request_nanocores bigint NOT NULL CHECK (cpu_request_nanocores >= 0),
    memory_request_bytes  bigint NOT NULL CHECK (memory_request_bytes >= 0),
    created_at            timestamptz,
    started_at            timestamptz,
    ended_at              timestamptz,
    PRIMARY KEY (cluster_id, uid)
);
CREATE INDEX pod_lifetimes_open ON pod_lifetimes (cluster_id, ended_at);

-- The time a watch of a cluster knew every pod: from the list that began it (by `replica`) to
-- the last event, bookmark or clean end written, and the resourceVersion written through, from
-- which a watcher (a restarted one too) continues it. A window inside one span has every pod's
-- lifetime; a list after 410 Expired starts a new span.
CREATE TABLE pod_watch_spans (
    cluster_id       uuid NOT NULL,
    synced_from      timestamptz NOT NULL,
    replica          text NOT NULL,
    synced_through   timestamptz NOT NULL,
    resource_version text NOT NULL,
    PRIMARY KEY (cluster_id, synced_from)
);

-- Whether a sample's GPU-seconds and requests came from the pods' watched lifetimes (true), or
-- from the time its readings or its point covered (false).
ALTER TABLE samples ADD COLUMN lifetimes boolean NOT NULL DEFAULT false;
