DROP TABLE storage_gaps;
DROP TABLE storage_samples;
ALTER TABLE clusters DROP COLUMN storage_scheduled_through;
DROP TABLE storage_runs;
