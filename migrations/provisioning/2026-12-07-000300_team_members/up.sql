-- Teams: a member is placed on their owner's cluster and added to each of the owner's Hopsworks
-- projects; leaving takes them out of those projects, then off the cluster.

-- A member whose owner has no cluster yet waits for it (cluster_id stays NULL).
ALTER TABLE assignments DROP CONSTRAINT assignments_status_check;
ALTER TABLE assignments ADD CONSTRAINT assignments_status_check CHECK (status IN ('waiting_for_user',
    'waiting_for_capacity', 'waiting_for_owner', 'provisioning', 'complete', 'unassigning', 'unassigned'));

-- Per member, the latest membership the team service announced, kept under the one rule of
-- hopsbridge_domain::membership (TeamMemberJoinedV1 and TeamMemberRemovedV1 arrive in any order
-- and more than once), and what provisioning does about it:
--   member   the membership is current: the member is on the owner's cluster (or waits for it)
--            and is added to the owner's projects
--   leaving  a membership provisioning acted on has ended: the member is being taken out of
--            the owner's projects, then unassigned
--   left     nothing to do
CREATE TABLE team_members (
    member_id          uuid PRIMARY KEY,
    membership_id      uuid NOT NULL,
    owner_id           uuid NOT NULL,
    -- The role in the owner's projects; unknown while only the removal has arrived.
    project_role       text CHECK (project_role IN ('Data owner', 'Data scientist')),
    joined_at          timestamptz,
    removed_at         timestamptz,
    state              text NOT NULL CHECK (state IN ('member', 'leaving', 'left')),
    -- The cluster whose owner's projects the member was last given (as project_members rows),
    -- so the account is not made again for it.
    synced_cluster_id  uuid REFERENCES clusters (id),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (state <> 'member' OR (project_role IS NOT NULL AND joined_at IS NOT NULL AND removed_at IS NULL))
);

CREATE INDEX team_members_owner ON team_members (owner_id) WHERE state = 'member';

-- Each (membership, project) of the owner's on a cluster, and where adding or removing the
-- member is:
--   adding    add-to-projects is due (retried until Hopsworks agrees)
--   added     Hopsworks agreed
--   removing  the membership ended: the admin key's user is made a Data owner of the project
--             (when it is not one already: admin_added), removes the member (member_removed),
--             then removes itself
--   removed   the member is out of the project (and the admin's user too, if it was added)
--   gone      the project no longer exists
CREATE TABLE project_members (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    membership_id       uuid NOT NULL,
    cluster_id          uuid NOT NULL REFERENCES clusters (id),
    project_id          bigint NOT NULL,
    member_id           uuid NOT NULL,
    project_name        text NOT NULL,
    -- The member's Hopsworks account on the cluster, as Hopsworks answered it.
    hopsworks_username  text NOT NULL,
    hopsworks_email     text NOT NULL,
    project_role        text NOT NULL CHECK (project_role IN ('Data owner', 'Data scientist')),
    state               text NOT NULL CHECK (state IN ('adding', 'added', 'removing', 'removed', 'gone')),
    -- Removal: whether provisioning makes the admin key's user a member for it (NULL: not yet
    -- known), and whether the member is out.
    admin_added         boolean,
    member_removed      boolean NOT NULL DEFAULT false,
    attempts            integer NOT NULL DEFAULT 0,
    last_error          text,
    next_attempt_at     timestamptz,
    lease_until         timestamptz,
    -- Bumped when the row is turned from adding to removing, so an attempt started before is
    -- not written back.
    version             integer NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (membership_id, cluster_id, project_id),
    CHECK ((state IN ('adding', 'removing')) = (next_attempt_at IS NOT NULL))
);

CREATE INDEX project_members_member ON project_members (member_id, cluster_id, project_id);
CREATE INDEX project_members_due ON project_members (next_attempt_at) WHERE state IN ('adding', 'removing');
