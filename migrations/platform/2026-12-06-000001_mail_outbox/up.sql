-- Mail and admin alerts waiting to be sent, and sent ones until they are pruned. Every service
-- that owns data has this table in its own schema: a mail is written in the same transaction as
-- the change that caused it, and the service's mail relay sends it.

CREATE TABLE mail_outbox (
    id               uuid PRIMARY KEY,                 -- also the Message-ID's local part
    -- What makes this delivery unique (for example `team.invitation:<id>:<address>`): a second
    -- enqueue with the same key adds nothing, however often the cause is replayed.
    dedup_key        text NOT NULL UNIQUE,
    -- The template that rendered it, e.g. `team.invitation`.
    kind             text NOT NULL,
    -- `email` goes over SMTP to `recipient`; `webhook` is posted to the admin alert webhook.
    channel          text NOT NULL CHECK (channel IN ('email', 'webhook')),
    recipient        text NOT NULL,
    subject          text NOT NULL,
    text_body        text NOT NULL,
    html_body        text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    sent_at          timestamptz,
    CHECK (channel = 'webhook' OR html_body IS NOT NULL)
);

-- The relay's work queue: unsent rows by due time.
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at) WHERE sent_at IS NULL;
-- Pruning of sent rows.
CREATE INDEX mail_outbox_sent_at ON mail_outbox (sent_at) WHERE sent_at IS NOT NULL;
