-- Who suspended a suspended account, so that lifting a suspension undoes only what its author
-- did (decision 0050): 'admin' (an administrator), 'billing' (a restriction: AccountRestricted)
-- or 'owner' (the account's owner was suspended; a member follows them). An admin's suspension
-- outranks billing's, billing's outranks the owner's cascade.
ALTER TABLE users
    ADD COLUMN suspended_by text CHECK (suspended_by IN ('admin', 'billing', 'owner')),
    ADD COLUMN suspension_reason text;
UPDATE users SET suspended_by = 'admin', suspension_reason = '' WHERE status = 'suspended';
ALTER TABLE users ADD CONSTRAINT users_suspension_known CHECK ((status = 'suspended') = (suspended_by IS NOT NULL));
