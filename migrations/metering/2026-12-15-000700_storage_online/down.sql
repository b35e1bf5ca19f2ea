ALTER TABLE storage_runs DROP COLUMN online;
