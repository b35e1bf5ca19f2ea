-- On-demand integrity runs (decision 0072): `POST /api/admin/integrity/<service>/run` answers
-- 202 with a row here and runs every check in the background; admins poll the row.
CREATE TABLE integrity_requests (
    id           uuid PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    -- Past this, a request still unfinished was abandoned (its replica stopped).
    expires_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    -- Each check's run (the admin API's CheckRun) once finished.
    runs         jsonb,
    -- Why it ended without its runs (Postgres failed, or its replica stopped).
    error        text
);

-- One unfinished request at a time per service.
CREATE UNIQUE INDEX integrity_requests_one_running ON integrity_requests ((true)) WHERE finished_at IS NULL;
CREATE INDEX integrity_requests_started ON integrity_requests (started_at DESC, id DESC);
