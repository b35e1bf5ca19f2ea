-- Back to current memberships only: ended ones and those whose join never arrived go.
DELETE FROM team_members WHERE joined_at IS NULL OR removed_at IS NOT NULL;

ALTER TABLE team_members
    DROP COLUMN removed_at,
    DROP COLUMN membership_id,
    ALTER COLUMN joined_at SET DEFAULT now(),
    ALTER COLUMN joined_at SET NOT NULL;
