-- billing pages through attributed storage samples by (window start, id) and adds them up per
-- owner and day (decision 0064).
CREATE INDEX storage_samples_window ON storage_samples (window_start, id) WHERE owner_user_id IS NOT NULL;
