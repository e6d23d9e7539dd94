-- Support conversations between a buyer and the organization selling their order's event (or
-- the platform's admins when organization_id is NULL). Each side's read mark makes its unread
-- count: the other side's messages written after it.
CREATE TABLE conversations (
    id UUID PRIMARY KEY,
    buyer_id UUID NOT NULL,
    organization_id UUID,
    order_id UUID,
    subject TEXT NOT NULL CHECK (length(subject) BETWEEN 1 AND 200),
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    buyer_read_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    staff_read_at TIMESTAMPTZ NOT NULL DEFAULT 'epoch',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_message_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX conversations_buyer ON conversations (buyer_id, last_message_at DESC, id DESC);
CREATE INDEX conversations_organization ON conversations (organization_id, last_message_at DESC, id DESC);

CREATE TABLE chat_messages (
    id UUID PRIMARY KEY,
    conversation_id UUID NOT NULL REFERENCES conversations (id),
    author_id UUID NOT NULL,
    from_staff BOOLEAN NOT NULL,
    body TEXT NOT NULL CHECK (length(body) BETWEEN 1 AND 4000),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX chat_messages_conversation ON chat_messages (conversation_id, id);
