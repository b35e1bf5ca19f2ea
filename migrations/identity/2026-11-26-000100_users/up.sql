-- People, keyed by their Auth0 subject. Emails are stored lowercased and are unique among
-- accounts that are not deleted.
CREATE TABLE users (
    id             uuid PRIMARY KEY,
    auth_subject   text NOT NULL UNIQUE,
    email          text NOT NULL CHECK (email = lower(email)),
    name           text NOT NULL DEFAULT '',
    is_admin       boolean NOT NULL DEFAULT false,
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'deleted')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_login_at  timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX users_email_unique ON users (email) WHERE status <> 'deleted';
CREATE INDEX users_created_at ON users (created_at, id);

-- Who is a member of whose team, as the team service announces it (TeamMemberJoined,
-- TeamMemberRemoved). identity keeps it to refuse deleting an owner who still has members and
-- to tell the gateway whose account a member's usage belongs to.
CREATE TABLE team_members (
    member_user_id  uuid PRIMARY KEY,
    owner_user_id   uuid NOT NULL,
    joined_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX team_members_owner ON team_members (owner_user_id);
