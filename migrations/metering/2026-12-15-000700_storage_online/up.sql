-- How each storage run measured online storage (decision 0071): 'measured',
-- 'online_not_configured' (the cluster has no RonDB endpoint) or 'online_unreported' (RonDB could
-- not be read; each project a gap); null for runs without projects and runs before this column.
ALTER TABLE storage_runs ADD COLUMN online text
    CHECK (online IN ('measured', 'online_not_configured', 'online_unreported'));
