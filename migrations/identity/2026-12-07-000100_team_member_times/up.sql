-- Each member's latest membership as hopsbridge_domain::membership keeps it, whatever order
-- TeamMemberJoined and TeamMemberRemoved arrive in (decision 0035): its id, its owner, when it
-- began (unknown while only its removal has arrived) and when it ended. A removal no longer
-- deletes the row: it records when the membership ended.
ALTER TABLE team_members
    ADD COLUMN membership_id uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
    ADD COLUMN removed_at timestamptz,
    ALTER COLUMN joined_at DROP NOT NULL,
    ALTER COLUMN joined_at DROP DEFAULT;

ALTER TABLE team_members ALTER COLUMN membership_id DROP DEFAULT;
