-- The transactional outbox: a service writes its events here in the same transaction as the
-- state change; the relay publishes them in id order and deletes what the broker confirmed.
-- Writers lock the aggregate's row before inserting here, so per aggregate id order is commit order.
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    event_id UUID NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    payload BYTEA NOT NULL,
    traceparent TEXT
);

-- The inbox: one row per event a consumer has handled, written in the handler's transaction, so
-- a redelivered event has no second effect.
CREATE TABLE processed_messages (
    consumer TEXT NOT NULL,
    event_id UUID NOT NULL,
    event_type TEXT NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
