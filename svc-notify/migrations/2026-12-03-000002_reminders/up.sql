-- Reminders before an event, one per holder and offset (24 h, 1 h, ... before the start), kept
-- here so they survive restarts. A sender takes the due ones with FOR UPDATE SKIP LOCKED and
-- marks each in the transaction that queues its messages: each fires once, whatever the
-- number of replicas. A moved start moves them; a cancelled event or a holder left without a
-- valid ticket skips them.
CREATE TABLE reminders (
    event_id UUID NOT NULL,
    holder_id UUID NOT NULL,
    offset_secs INTEGER NOT NULL CHECK (offset_secs > 0),
    due_at TIMESTAMPTZ NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'skipped')),
    fired_at TIMESTAMPTZ,
    PRIMARY KEY (event_id, holder_id, offset_secs)
);
CREATE INDEX reminders_due ON reminders (due_at) WHERE status = 'pending';
