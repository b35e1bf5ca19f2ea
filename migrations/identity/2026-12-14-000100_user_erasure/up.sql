-- When an account was deleted (calendar time) and when its personal data was erased, once its
-- retention period (deletion.retention_days) had passed (decision 0058). An account deleted
-- before this migration counts as deleted at its last change.
ALTER TABLE users ADD COLUMN deleted_at timestamptz, ADD COLUMN erased_at timestamptz;
UPDATE users SET deleted_at = updated_at WHERE status = 'deleted';
ALTER TABLE users
    ADD CONSTRAINT users_deleted_at_known CHECK ((status = 'deleted') = (deleted_at IS NOT NULL)),
    ADD CONSTRAINT users_erased_after_deletion CHECK (erased_at IS NULL OR deleted_at IS NOT NULL);
-- The eraser's look-up: deleted accounts not erased yet, oldest deletion first.
CREATE INDEX users_to_erase ON users (deleted_at) WHERE status = 'deleted' AND erased_at IS NULL;
