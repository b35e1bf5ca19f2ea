-- Each member's latest membership as hopsbridge_domain::membership keeps it, whatever order
-- TeamMemberJoined and TeamMemberRemoved arrive in (decision 0035): the membership's id names
-- which membership a removal ends, so a stale removal never ends a later membership.
ALTER TABLE memberships
    ADD COLUMN membership_id uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000';

ALTER TABLE memberships ALTER COLUMN membership_id DROP DEFAULT;
