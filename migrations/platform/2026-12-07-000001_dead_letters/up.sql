-- Events a consumer of this service gave up on, kept until an admin replays them. Every service
-- that owns data has this table in its own schema. The consumer writes the row before it
-- terminates the message, so a dead letter outlives the dead-letter stream's max age.

CREATE TABLE dead_letters (
    id               uuid PRIMARY KEY,
    -- The consumer that gave up, e.g. `billing-user_created`.
    consumer         text NOT NULL,
    -- The event's id, or, for a message that is not an event, `stream:<sequence>`: a message
    -- dead-lettered again by the same consumer updates its row instead of adding one.
    message_key      text NOT NULL,
    event_id         uuid,
    -- `UserCreatedV1`; NULL when the message did not say.
    event_type       text,
    subject          text NOT NULL,
    -- The message as it arrived (the protobuf envelope), handed to the handler on replay.
    body             bytea NOT NULL,
    reason           text NOT NULL,
    -- Deliveries JetStream made before the consumer gave up.
    deliveries       bigint NOT NULL,
    first_failed_at  timestamptz NOT NULL DEFAULT now(),
    last_failed_at   timestamptz NOT NULL DEFAULT now(),
    -- Replays tried, and the last one's outcome.
    replays          integer NOT NULL DEFAULT 0,
    replay_outcome   text CHECK (replay_outcome IN ('applied', 'already_applied', 'failed')),
    -- When a replay handed it to the handler or found it already handled: it is resolved.
    replayed_at      timestamptz,
    UNIQUE (consumer, message_key)
);

-- The admin list, newest first, and the unresolved ones a bulk replay takes.
CREATE INDEX dead_letters_last_failed_at ON dead_letters (last_failed_at DESC, id DESC);
CREATE INDEX dead_letters_unresolved ON dead_letters (first_failed_at) WHERE replayed_at IS NULL;
-- Inbox pruning keeps the records of dead-lettered events, so a replay at any age finds them.
CREATE INDEX dead_letters_event ON dead_letters (consumer, event_id) WHERE event_id IS NOT NULL;
