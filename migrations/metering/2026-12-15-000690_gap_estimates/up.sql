-- The gap policy (decision 0069): a window that could not be measured may be filled with an
-- estimate. One estimate per gap run, made once its deadline has passed: from the counters
-- (`readings`: the gap run's own readings and the following run's first ones) or from the
-- neighbouring complete windows (`neighbours`); `none` when nothing could be estimated.
-- Under `estimate` it is published at once; under `review` it waits for an administrator.
CREATE TABLE gap_estimates (
    id                  uuid PRIMARY KEY,
    cluster_id          uuid NOT NULL,
    window_start        timestamptz NOT NULL,
    window_end          timestamptz NOT NULL,
    -- The policy it was made under.
    policy              text NOT NULL CHECK (policy IN ('estimate', 'review')),
    status              text NOT NULL CHECK (status IN ('pending', 'published', 'rejected', 'none')),
    basis               text CHECK (basis IN ('readings', 'neighbours')),
    -- neighbours: the complete windows averaged (either may be missing); readings: the
    -- following window whose first readings closed the gap.
    before_window       timestamptz,
    after_window        timestamptz,
    -- readings: the readings integrated, the gap run's and the following run's.
    readings            integer,
    -- How its samples are stored (the gap run's source, the bases configured when it was made).
    source              text NOT NULL CHECK (source IN ('point', 'readings')),
    cpu_basis           text NOT NULL CHECK (cpu_basis IN ('usage', 'max_request_usage')),
    memory_basis        text NOT NULL CHECK (memory_basis IN ('usage', 'max_request_usage')),
    detail              text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    decided_at          timestamptz,
    decided_by          text,
    UNIQUE (cluster_id, window_start),
    FOREIGN KEY (cluster_id, window_start) REFERENCES runs ON DELETE CASCADE,
    CHECK ((status = 'none') = (basis IS NULL))
);
CREATE INDEX gap_estimates_window ON gap_estimates (window_start);

-- One line per (namespace, Hopsworks username), the samples' key: the quantities estimated
-- and, once published, the sample written.
CREATE TABLE gap_estimate_lines (
    estimate_id             uuid NOT NULL REFERENCES gap_estimates ON DELETE CASCADE,
    namespace               text NOT NULL,
    hopsworks_username      text NOT NULL,
    cpu_nanocore_seconds    bigint NOT NULL CHECK (cpu_nanocore_seconds >= 0),
    memory_byte_seconds     bigint NOT NULL CHECK (memory_byte_seconds >= 0),
    gpu_seconds             bigint NOT NULL CHECK (gpu_seconds >= 0),
    pods                    integer NOT NULL CHECK (pods >= 0),
    estimated_ms            bigint NOT NULL CHECK (estimated_ms >= 0),
    sample_id               uuid,
    PRIMARY KEY (estimate_id, namespace, hopsworks_username)
);
