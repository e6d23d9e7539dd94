CREATE TABLE orders (
    id UUID PRIMARY KEY,
    event_id UUID NOT NULL,
    organization_id UUID NOT NULL,
    buyer_id UUID NOT NULL,
    buyer_email TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending_payment', 'paid', 'cancelled', 'expired', 'partially_refunded', 'refunded')),
    hold_id UUID NOT NULL UNIQUE,
    idempotency_key TEXT NOT NULL,
    -- What the key was first used for: the same key with another request is refused.
    request_fingerprint TEXT NOT NULL,
    currency TEXT NOT NULL,
    subtotal BIGINT NOT NULL CHECK (subtotal >= 0),
    discount_total BIGINT NOT NULL CHECK (discount_total >= 0 AND discount_total <= subtotal),
    total BIGINT NOT NULL CHECK (total = subtotal - discount_total),
    refunded_total BIGINT NOT NULL DEFAULT 0 CHECK (refunded_total >= 0 AND refunded_total <= total),
    discount_code TEXT,
    payment_deadline TIMESTAMPTZ NOT NULL,
    -- The charge attempt in flight: its number names the payment's idempotency key, and while
    -- its outcome is unknown a retry reuses it, so a card is never charged twice for one order.
    payment_attempt INT NOT NULL DEFAULT 0,
    attempt_open BOOLEAN NOT NULL DEFAULT false,
    charging_until TIMESTAMPTZ,
    payment_id UUID,
    last_payment_error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    paid_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (buyer_id, idempotency_key)
);
CREATE INDEX orders_buyer ON orders (buyer_id, id);
CREATE INDEX orders_event ON orders (event_id, id);
CREATE INDEX orders_due ON orders (payment_deadline) WHERE status = 'pending_payment';

CREATE TABLE order_lines (
    id UUID PRIMARY KEY,
    order_id UUID NOT NULL REFERENCES orders (id),
    position INT NOT NULL,
    tier_id TEXT NOT NULL,
    tier_name TEXT NOT NULL,
    seat_id TEXT,
    ga_area_id TEXT,
    unit_price BIGINT NOT NULL CHECK (unit_price >= 0),
    discount BIGINT NOT NULL DEFAULT 0 CHECK (discount >= 0 AND discount <= unit_price),
    refunded BOOLEAN NOT NULL DEFAULT false,
    UNIQUE (order_id, position)
);

CREATE TABLE tickets (
    id UUID PRIMARY KEY,
    order_id UUID NOT NULL REFERENCES orders (id),
    line_id UUID NOT NULL UNIQUE REFERENCES order_lines (id),
    event_id UUID NOT NULL,
    holder_id UUID NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('valid', 'checked_in', 'refunded', 'cancelled')),
    secret TEXT NOT NULL UNIQUE,
    issued_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    checked_in_at TIMESTAMPTZ,
    check_in_gate TEXT,
    check_in_nonce TEXT
);
CREATE INDEX tickets_holder ON tickets (holder_id, id);
CREATE INDEX tickets_order ON tickets (order_id);

CREATE TABLE discount_codes (
    event_id UUID NOT NULL,
    code TEXT NOT NULL,
    organization_id UUID NOT NULL,
    percent_off INT CHECK (percent_off BETWEEN 1 AND 100),
    amount_off BIGINT CHECK (amount_off > 0),
    currency TEXT,
    valid_from TIMESTAMPTZ,
    valid_until TIMESTAMPTZ,
    max_uses INT NOT NULL DEFAULT 0 CHECK (max_uses >= 0),
    -- Counted under the row lock when an order takes the code: never above max_uses.
    times_used INT NOT NULL DEFAULT 0 CHECK (times_used >= 0 AND (max_uses = 0 OR times_used <= max_uses)),
    active BOOLEAN NOT NULL DEFAULT true,
    tier_ids TEXT[] NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, code),
    CHECK ((percent_off IS NULL) <> (amount_off IS NULL))
);

-- Ed25519 keys that sign ticket secrets; the public halves are served for offline scanners.
CREATE TABLE ticket_keys (
    kid TEXT PRIMARY KEY,
    secret_key BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
