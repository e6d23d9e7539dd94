-- One row per order that was ever charged. Locked by every charge and by the order's closing,
-- so a charge racing an order's expiry is either refused or refunded, never kept.
CREATE TABLE payment_orders (
    order_id UUID PRIMARY KEY,
    closed_at TIMESTAMPTZ
);

CREATE TABLE payments (
    id UUID PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    order_id UUID NOT NULL REFERENCES payment_orders (order_id),
    customer_id UUID NOT NULL,
    organization_id UUID,
    amount BIGINT NOT NULL CHECK (amount > 0),
    currency TEXT NOT NULL,
    refunded BIGINT NOT NULL DEFAULT 0,
    status TEXT NOT NULL CHECK (status IN ('processing', 'succeeded', 'failed', 'partially_refunded', 'refunded')),
    failure_code TEXT,
    failure_message TEXT,
    card_brand TEXT NOT NULL,
    card_last4 TEXT NOT NULL,
    provider TEXT NOT NULL,
    provider_reference TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (refunded >= 0 AND refunded <= amount)
);
CREATE INDEX payments_order ON payments (order_id);
CREATE INDEX payments_customer ON payments (customer_id, id);
CREATE INDEX payments_processing ON payments (updated_at) WHERE status = 'processing';

CREATE TABLE refunds (
    id UUID PRIMARY KEY,
    payment_id UUID NOT NULL REFERENCES payments (id),
    idempotency_key TEXT NOT NULL UNIQUE,
    amount BIGINT NOT NULL CHECK (amount > 0),
    reason TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX refunds_payment ON refunds (payment_id);

-- The built-in test processor's own ledger: what a real processor keeps on its side. Charges
-- are idempotent on the key; a voided key can never be charged afterwards.
CREATE TABLE test_processor_charges (
    idempotency_key TEXT PRIMARY KEY,
    reference TEXT NOT NULL UNIQUE,
    outcome TEXT NOT NULL,
    amount BIGINT NOT NULL,
    refunded BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE test_processor_refunds (
    idempotency_key TEXT PRIMARY KEY,
    charge_reference TEXT NOT NULL REFERENCES test_processor_charges (reference),
    amount BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
