-- The person's latest team membership as hopsbridge_domain::membership keeps it, whatever
-- order TeamMemberJoined and TeamMemberRemoved arrive in (decision 0035): which membership,
-- whose team, when it began (unknown while only its removal has arrived) and when it ended.
-- While it is current the person is billed to the owner: their own subscription is cancelled
-- and billing's routes refuse them.
ALTER TABLE accounts
    ADD COLUMN team_membership_id uuid NULL,
    ADD COLUMN team_owner_id uuid NULL,
    ADD COLUMN team_joined_at timestamptz NULL,
    ADD COLUMN team_removed_at timestamptz NULL,
    ADD CONSTRAINT accounts_team_membership_whole CHECK (
        (team_membership_id IS NULL) = (team_owner_id IS NULL)
        AND (team_membership_id IS NOT NULL OR (team_joined_at IS NULL AND team_removed_at IS NULL))
    );
