ALTER TABLE accounts
    DROP CONSTRAINT accounts_team_membership_whole,
    DROP COLUMN team_removed_at,
    DROP COLUMN team_joined_at,
    DROP COLUMN team_owner_id,
    DROP COLUMN team_membership_id;
