-- Waiting lists of sold-out tiers. Redis keeps the lines in order and hands returned places
-- to their heads (an offer is a hold whose id is the entry's); this is the durable record it
-- is rebuilt from, and what buyers and organizers are shown.
CREATE TABLE waitlist_entries (
    entry_id          uuid PRIMARY KEY,
    event_id          uuid NOT NULL REFERENCES inventory_events (event_id) ON DELETE CASCADE,
    tier_id           text NOT NULL,
    owner_id          uuid NOT NULL,
    quantity          integer NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    -- Order in line, never reused.
    position          bigint GENERATED ALWAYS AS IDENTITY,
    status            text NOT NULL
        CHECK (status IN ('waiting', 'offered', 'fulfilled', 'lapsed', 'left', 'removed')),
    offer_expires_at  timestamptz,
    offer_seat_ids    text[] NOT NULL DEFAULT '{}',
    joined_at         timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
-- One live entry per buyer and tier: a repeated join finds it.
CREATE UNIQUE INDEX waitlist_live ON waitlist_entries (event_id, tier_id, owner_id)
    WHERE status IN ('waiting', 'offered');
CREATE INDEX waitlist_line ON waitlist_entries (event_id, tier_id, position) WHERE status = 'waiting';
CREATE INDEX waitlist_open ON waitlist_entries (event_id) WHERE status IN ('waiting', 'offered');
CREATE INDEX waitlist_mine ON waitlist_entries (owner_id, entry_id DESC);
