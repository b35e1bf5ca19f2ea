DROP INDEX users_to_erase;
ALTER TABLE users DROP CONSTRAINT users_erased_after_deletion, DROP CONSTRAINT users_deleted_at_known;
ALTER TABLE users DROP COLUMN erased_at, DROP COLUMN deleted_at;
