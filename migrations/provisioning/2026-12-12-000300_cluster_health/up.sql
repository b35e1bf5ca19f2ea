-- Each cluster's last health check (decision 0054): the checks a registration passes, run again
-- on a schedule. A row is made by the registration (its checks' result) or by the first
-- scheduled check; lease_until keeps two replicas from checking one cluster at once.
CREATE TABLE cluster_health (
    cluster_id  uuid PRIMARY KEY REFERENCES clusters (id),
    -- When the last check ended, whether every check passed, and each check as
    -- [{"name", "ok", "detail"}]; null until a check ended.
    checked_at  timestamptz,
    ok          boolean,
    checks      jsonb NOT NULL DEFAULT '[]',
    lease_until timestamptz
);
