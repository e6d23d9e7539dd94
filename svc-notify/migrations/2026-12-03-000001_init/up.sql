-- What notify learned from catalog's events: enough to name an event in a message.
CREATE TABLE known_events (
    id UUID PRIMARY KEY,
    organization_id UUID NOT NULL,
    title TEXT NOT NULL,
    starts_at TIMESTAMPTZ NOT NULL,
    cancelled BOOLEAN NOT NULL DEFAULT false,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Where to reach a user: from user.registered and from the buyer e-mail orders' events carry.
CREATE TABLE recipients (
    user_id UUID PRIMARY KEY,
    email TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Orders as far as addressing their messages needs (payment.failed names only the order).
CREATE TABLE known_orders (
    id UUID PRIMARY KEY,
    event_id UUID NOT NULL,
    buyer_id UUID NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Who holds a valid ticket of which event: the addressees of event.cancelled and reminders.
CREATE TABLE holdings (
    ticket_id UUID PRIMARY KEY,
    order_id UUID NOT NULL,
    event_id UUID NOT NULL,
    holder_id UUID NOT NULL,
    valid BOOLEAN NOT NULL DEFAULT true
);
CREATE INDEX holdings_event ON holdings (event_id, holder_id) WHERE valid;

CREATE TABLE preferences (
    user_id UUID PRIMARY KEY,
    email_enabled BOOLEAN NOT NULL DEFAULT true,
    in_app_enabled BOOLEAN NOT NULL DEFAULT true,
    reminders_enabled BOOLEAN NOT NULL DEFAULT true,
    marketing_enabled BOOLEAN NOT NULL DEFAULT false,
    locale TEXT NOT NULL DEFAULT 'en' CHECK (locale IN ('en', 'de')),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Mail to send, written in the transaction that handled its event and rendered there, so the
-- sender only transmits. One row per fact, kind and recipient (`dedupe_key`): a redelivered
-- event finds its row and sends nothing again. The Message-ID is derived from the same key.
CREATE TABLE mails (
    id UUID PRIMARY KEY,
    dedupe_key TEXT NOT NULL UNIQUE,
    message_id TEXT NOT NULL UNIQUE,
    user_id UUID,
    kind TEXT NOT NULL CHECK (kind IN ('welcome', 'order_confirmed', 'payment_failed', 'order_expired',
        'order_refunded', 'order_cancelled', 'event_cancelled', 'event_updated', 'event_reminder')),
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    -- The whole RFC 5322 message, as sent.
    raw BYTEA NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    -- When a sender may next take it: after a back-off, or once a sender that took it (and
    -- may have died) has had its lease.
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at TIMESTAMPTZ
);
CREATE INDEX mails_due ON mails (next_attempt_at) WHERE status = 'pending';
CREATE INDEX mails_user ON mails (user_id, created_at);

CREATE TABLE notifications (
    id UUID PRIMARY KEY,
    dedupe_key TEXT NOT NULL UNIQUE,
    user_id UUID NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('welcome', 'order_confirmed', 'payment_failed', 'order_expired',
        'order_refunded', 'order_cancelled', 'event_cancelled', 'event_updated', 'event_reminder')),
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    link TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    read_at TIMESTAMPTZ
);
CREATE INDEX notifications_user ON notifications (user_id, id DESC);
CREATE INDEX notifications_unread ON notifications (user_id) WHERE read_at IS NULL;
