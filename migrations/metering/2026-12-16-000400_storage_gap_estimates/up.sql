-- The gap policy for storage (decision 0076, after decision 0069): a storage window, or one
-- project in it, that could not be measured may be filled with an estimate from the project's
-- measured samples around it.

-- Whether a storage sample was estimated (true) or read from the cluster (false).
ALTER TABLE storage_samples ADD COLUMN estimated boolean NOT NULL DEFAULT false;

-- One estimate per (cluster, project, storage window), made once the window has ended: the mean
-- of the project's nearest measured samples before and after (`neighbours`), or `none` with why.
-- Under `estimate` it is published at once; under `review` it waits for an administrator.
CREATE TABLE storage_gap_estimates (
    id                  uuid PRIMARY KEY,
    cluster_id          uuid NOT NULL,
    project_id          bigint NOT NULL,
    window_start        timestamptz NOT NULL,
    window_end          timestamptz NOT NULL,
    -- 'cluster': the whole cluster's window was a gap; 'project': the project was not reported.
    gap                 text NOT NULL CHECK (gap IN ('cluster', 'project')),
    -- The project as its neighbour sample (or its gap) names it; the creator attributes it.
    namespace           text NOT NULL,
    project_name        text,
    creator_username    text,
    -- The policy it was made under.
    policy              text NOT NULL CHECK (policy IN ('estimate', 'review')),
    status              text NOT NULL CHECK (status IN ('pending', 'published', 'rejected', 'none')),
    basis               text CHECK (basis IN ('neighbours')),
    -- The windows of the measured samples averaged (either may be missing).
    before_window       timestamptz,
    after_window        timestamptz,
    offline_bytes       bigint CHECK (offline_bytes >= 0),
    online_bytes        bigint CHECK (online_bytes >= 0),
    detail              text NOT NULL,
    -- The sample written once published.
    sample_id           uuid,
    created_at          timestamptz NOT NULL DEFAULT now(),
    decided_at          timestamptz,
    decided_by          text,
    UNIQUE (cluster_id, project_id, window_start),
    FOREIGN KEY (cluster_id, window_start) REFERENCES storage_runs ON DELETE CASCADE,
    CHECK ((status = 'none') = (basis IS NULL)),
    CHECK ((basis IS NULL) = (offline_bytes IS NULL) AND (basis IS NULL) = (online_bytes IS NULL))
);
CREATE INDEX storage_gap_estimates_window ON storage_gap_estimates (window_start);

-- Finding what is due: a gapped window's neighbour samples by cluster and window, and the
-- projects not reported in the last windows.
CREATE INDEX storage_samples_cluster_window ON storage_samples (cluster_id, window_start);
CREATE INDEX storage_gaps_window ON storage_gaps (window_start);
