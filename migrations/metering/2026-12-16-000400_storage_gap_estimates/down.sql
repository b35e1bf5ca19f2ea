DROP INDEX storage_gaps_window;
DROP INDEX storage_samples_cluster_window;
DROP TABLE storage_gap_estimates;
ALTER TABLE storage_samples DROP COLUMN estimated;
