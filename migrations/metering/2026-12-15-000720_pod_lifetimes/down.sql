ALTER TABLE samples DROP COLUMN lifetimes;
DROP TABLE pod_watch_spans;
DROP TABLE pod_lifetimes;
