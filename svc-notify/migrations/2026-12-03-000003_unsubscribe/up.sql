-- The key that signs one-click unsubscribe tokens; made once, shared by every replica.
CREATE TABLE signing_keys (
    name TEXT PRIMARY KEY,
    secret BYTEA NOT NULL CHECK (length(secret) >= 32),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
