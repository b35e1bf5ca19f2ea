-- People as identity announces them (UserCreated, UserSuspended, UserReactivated, UserDeleted):
-- whose address an invitation goes to, who invited, whose account a member has. A status event
-- may arrive before the person's UserCreated, so the email is filled in when that arrives;
-- `status_at` is the time of the status event applied, so an older one never undoes a newer.
CREATE TABLE people (
    id          uuid PRIMARY KEY,
    email       text CHECK (email = lower(email)),
    name        text NOT NULL DEFAULT '',
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'deleted')),
    status_at   timestamptz NOT NULL DEFAULT '-infinity',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX people_email ON people (email) WHERE status <> 'deleted';

-- Invitations: an owner invites an address with a project role. Only the SHA-256 of the
-- token is kept. An invitation is pending until it is accepted, cancelled by its owner, or
-- replaced by a new invitation to the same address; a pending one past `expires_at` is
-- expired (derived, never stored). `sends` counts the mails sent for it (the first and each
-- resend, each with a new token).
CREATE TABLE invitations (
    id             uuid PRIMARY KEY,
    owner_user_id  uuid NOT NULL,
    email          text NOT NULL CHECK (email = lower(email)),
    project_role   text NOT NULL CHECK (project_role IN ('Data owner', 'Data scientist')),
    token_hash     bytea NOT NULL CHECK (octet_length(token_hash) = 32),
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'accepted', 'cancelled', 'replaced')),
    sends          integer NOT NULL DEFAULT 1 CHECK (sends >= 1),
    created_at     timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    closed_at      timestamptz,
    accepted_by    uuid,
    CHECK ((status = 'pending') = (closed_at IS NULL)),
    CHECK ((status = 'accepted') = (accepted_by IS NOT NULL))
);

CREATE UNIQUE INDEX invitations_token_hash ON invitations (token_hash);
-- One pending invitation per owner and address.
CREATE UNIQUE INDEX invitations_one_pending ON invitations (owner_user_id, email) WHERE status = 'pending';
CREATE INDEX invitations_owner ON invitations (owner_user_id, created_at);

-- Memberships: who is on whose team, since when, under which terms, and how it ended.
CREATE TABLE memberships (
    id                 uuid PRIMARY KEY,
    owner_user_id      uuid NOT NULL,
    member_user_id     uuid NOT NULL,
    project_role       text NOT NULL CHECK (project_role IN ('Data owner', 'Data scientist')),
    invitation_id      uuid NOT NULL REFERENCES invitations (id),
    joined_at          timestamptz NOT NULL,
    terms_version      text NOT NULL,
    terms_accepted_at  timestamptz NOT NULL,
    removed_at         timestamptz,
    removal_reason     text CHECK (removal_reason IN ('removed', 'left', 'account_deleted')),
    CHECK ((removed_at IS NULL) = (removal_reason IS NULL)),
    CHECK (owner_user_id <> member_user_id)
);

-- A person is a current member of at most one team.
CREATE UNIQUE INDEX memberships_one_current ON memberships (member_user_id) WHERE removed_at IS NULL;
CREATE INDEX memberships_owner_current ON memberships (owner_user_id) WHERE removed_at IS NULL;
CREATE UNIQUE INDEX memberships_invitation ON memberships (invitation_id);

-- Each person's Hopsworks accounts as provisioning announces them (ClusterAssigned,
-- ClusterUnassigned), one row per cluster; `changed_at` is the time of the event applied, so
-- an older event never undoes a newer one.
CREATE TABLE accounts (
    user_id             uuid NOT NULL,
    cluster_id          uuid NOT NULL,
    hopsworks_username  text NOT NULL DEFAULT '',
    assigned            boolean NOT NULL,
    changed_at          timestamptz NOT NULL,
    PRIMARY KEY (user_id, cluster_id)
);

-- Usage per owner, person and UTC month (of the window's start), summed exactly from
-- UsageRecorded: integer nanocore-seconds, byte-seconds and GPU-seconds, in numeric so a month
-- of a large member cannot overflow.
CREATE TABLE usage_monthly (
    owner_user_id         uuid NOT NULL,
    user_id               uuid NOT NULL,
    month                 date NOT NULL CHECK (extract(day FROM month) = 1),
    cpu_nanocore_seconds  numeric(40, 0) NOT NULL CHECK (cpu_nanocore_seconds >= 0),
    memory_byte_seconds   numeric(40, 0) NOT NULL CHECK (memory_byte_seconds >= 0),
    gpu_seconds           numeric(40, 0) NOT NULL CHECK (gpu_seconds >= 0),
    samples               bigint NOT NULL CHECK (samples >= 0),
    PRIMARY KEY (owner_user_id, month, user_id)
);
