-- Integrity checks (decision 0060). Every data service has these tables in its own schema, like
-- the outbox and the dead letters.

-- What a check found: open while `resolved_at` is NULL. One open finding per (check, key); a
-- finding found again after it was resolved is a new row, and is alerted again.
CREATE TABLE integrity_findings (
    id           uuid PRIMARY KEY,
    -- The check's stable name, e.g. `outbox_draining`.
    check_name   text NOT NULL,
    -- Stable within the check: what the finding is about, e.g. `outbox/ClusterAssignedV1`.
    key          text NOT NULL,
    -- What it is about, for people.
    subject      text NOT NULL,
    -- What is wrong and what to do, as the last run that found it said.
    detail       text NOT NULL,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now(),
    -- When a run of its check no longer found it.
    resolved_at  timestamptz,
    -- When the admin alert of its opening was written to the mail outbox.
    alerted_at   timestamptz
);

CREATE UNIQUE INDEX integrity_findings_open ON integrity_findings (check_name, key) WHERE resolved_at IS NULL;
-- The admin list, newest first.
CREATE INDEX integrity_findings_first_seen ON integrity_findings (first_seen DESC, id DESC);

-- Each check's last run, and the lease that lets one replica at a time run it.
CREATE TABLE integrity_runs (
    check_name        text PRIMARY KEY,
    -- The run holding the lease, and until when; a lease past its end is free (the replica
    -- holding it died or its run overran the run timeout).
    lease_owner       uuid,
    lease_until       timestamptz,
    -- When the last run started (scheduled runs start once `integrity.interval_secs` has passed
    -- since), and when the last run that completed or failed ended.
    last_started_at   timestamptz,
    last_finished_at  timestamptz,
    -- Whether the last finished run worked; its error when it did not.
    last_ok           boolean,
    last_error        text,
    -- Findings the last run that worked found.
    last_found        integer
);
