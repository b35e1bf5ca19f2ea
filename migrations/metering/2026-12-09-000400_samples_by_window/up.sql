-- billing pages through attributed samples by window for its backfill (decision 0038).
CREATE INDEX samples_window_start_id ON samples (window_start, id) WHERE owner_user_id IS NOT NULL;
