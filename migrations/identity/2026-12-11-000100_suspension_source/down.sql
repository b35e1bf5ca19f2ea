ALTER TABLE users DROP CONSTRAINT users_suspension_known;
ALTER TABLE users DROP COLUMN suspension_reason, DROP COLUMN suspended_by;
