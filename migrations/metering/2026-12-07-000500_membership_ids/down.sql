ALTER TABLE memberships DROP COLUMN membership_id;
