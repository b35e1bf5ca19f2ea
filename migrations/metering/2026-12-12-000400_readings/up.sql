-- CPU and memory integrated from metrics-server's readings (decision 0043).
--
-- A run's source: `point` (one reading held for the window, decision 0023) or `readings`
-- (PodMetrics read every resolution from the window's start to its end, under the run's
-- lease). Its reads and API calls are counted on the row, so a replica taking a run over
-- continues the count.
ALTER TABLE runs ADD COLUMN source text NOT NULL DEFAULT 'point' CHECK (source IN ('point', 'readings'));
ALTER TABLE runs ADD COLUMN reads integer NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN api_calls bigint NOT NULL DEFAULT 0;
-- Calendar times of a readings run's first and latest read.
ALTER TABLE runs ADD COLUMN first_read_at timestamptz;
ALTER TABLE runs ADD COLUMN read_through timestamptz;

-- A readings run's readings, kept until the run completes, so a replica that dies mid-window
-- loses none: the one taking the run over integrates them with its own. One row per pod and
-- reading (`end_ms` is the reading's timestamp): a reading read twice is stored once.
CREATE TABLE readings (
    cluster_id          uuid NOT NULL,
    window_start        timestamptz NOT NULL,
    namespace           text NOT NULL,
    pod                 text NOT NULL,
    end_ms              bigint NOT NULL,
    window_ms           bigint NOT NULL CHECK (window_ms >= 0),
    cpu_nanocores       bigint NOT NULL CHECK (cpu_nanocores >= 0),
    memory_bytes        bigint NOT NULL CHECK (memory_bytes >= 0),
    PRIMARY KEY (cluster_id, window_start, namespace, pod, end_ms),
    FOREIGN KEY (cluster_id, window_start) REFERENCES runs ON DELETE CASCADE
);

-- The pods a readings run has seen in the pod list: whose they are, their GPUs and their
-- CPU and memory requests (summed over containers), listed when a pod's first reading comes.
CREATE TABLE run_pods (
    cluster_id          uuid NOT NULL,
    window_start        timestamptz NOT NULL,
    namespace           text NOT NULL,
    pod                 text NOT NULL,
    owner               text NOT NULL,
    gpus                bigint NOT NULL CHECK (gpus >= 0),
    cpu_request_nanocores bigint NOT NULL CHECK (cpu_request_nanocores >= 0),
    memory_request_bytes bigint NOT NULL CHECK (memory_request_bytes >= 0),
    PRIMARY KEY (cluster_id, window_start, namespace, pod),
    FOREIGN KEY (cluster_id, window_start) REFERENCES runs ON DELETE CASCADE
);

-- How each sample was measured: the source, the basis of CPU and of memory (`usage`, or
-- `max_request_usage`: the larger of the pods' requests and their usage, as OpenCost
-- allocates), and the milliseconds of pod time estimated between readings.
ALTER TABLE samples ADD COLUMN source text NOT NULL DEFAULT 'point' CHECK (source IN ('point', 'readings'));
ALTER TABLE samples ADD COLUMN cpu_basis text NOT NULL DEFAULT 'usage' CHECK (cpu_basis IN ('usage', 'max_request_usage'));
ALTER TABLE samples ADD COLUMN memory_basis text NOT NULL DEFAULT 'usage' CHECK (memory_basis IN ('usage', 'max_request_usage'));
ALTER TABLE samples ADD COLUMN estimated_ms bigint NOT NULL DEFAULT 0 CHECK (estimated_ms >= 0);
