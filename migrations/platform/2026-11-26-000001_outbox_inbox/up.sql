-- The transactional outbox and the consumers' inbox. Every service that owns data has both, in
-- its own schema (the migration runs with search_path set to that schema).

-- Events written in the same transaction as the change they describe. The relay publishes each
-- row to JetStream with Nats-Msg-Id = id, waits for the PubAck, then sets published_at.
CREATE TABLE outbox (
    id              uuid PRIMARY KEY,               -- the event id (UUIDv7)
    subject         text NOT NULL,                  -- without the deployment prefix, e.g. identity.user_created.v1
    event_type      text NOT NULL,                  -- e.g. UserCreated
    schema_version  integer NOT NULL,
    envelope        bytea NOT NULL,                 -- the encoded hopsbridge.events.v1.Envelope
    trace_context   jsonb NOT NULL DEFAULT '{}',    -- traceparent/tracestate, sent as NATS headers
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text
);

-- The relay's work queue: unpublished rows, oldest first.
CREATE INDEX outbox_unpublished ON outbox (created_at, id) WHERE published_at IS NULL;
-- Pruning of published rows.
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;

-- One row per (consumer, event) handled, written in the same transaction as the handler's
-- effect, so a redelivered or republished event is recognised and skipped.
CREATE TABLE inbox (
    consumer      text NOT NULL,
    event_id      uuid NOT NULL,
    event_type    text NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

CREATE INDEX inbox_processed_at ON inbox (processed_at);
