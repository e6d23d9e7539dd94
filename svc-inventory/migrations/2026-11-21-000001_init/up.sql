-- What inventory knows of a sellable event: handed over by catalog when it is published.
CREATE TABLE inventory_events (
    event_id            uuid PRIMARY KEY,
    organization_id     uuid NOT NULL,
    version             bigint NOT NULL,
    per_customer_limit  integer NOT NULL CHECK (per_customer_limit > 0),
    closed              boolean NOT NULL DEFAULT false,
    configured_at       timestamptz NOT NULL DEFAULT now()
);

-- Every seat of an event with its tier, in best-first order.
CREATE TABLE inventory_seats (
    event_id  uuid NOT NULL REFERENCES inventory_events (event_id) ON DELETE CASCADE,
    seat_id   text NOT NULL,
    tier_id   text NOT NULL,
    position  integer NOT NULL,
    PRIMARY KEY (event_id, seat_id)
);

-- General-admission quotas. The CHECK is the last word on overselling a quota: an UPDATE that
-- would take `sold` past `capacity` fails, whatever Redis believed.
CREATE TABLE inventory_quotas (
    event_id    uuid NOT NULL REFERENCES inventory_events (event_id) ON DELETE CASCADE,
    tier_id     text NOT NULL,
    ga_area_id  text NOT NULL,
    capacity    integer NOT NULL CHECK (capacity >= 0),
    sold        integer NOT NULL DEFAULT 0 CHECK (sold >= 0 AND sold <= capacity),
    PRIMARY KEY (event_id, tier_id)
);

-- The durable sold-seat ledger. The primary key is the last word on "never sold twice".
CREATE TABLE sold_seats (
    event_id  uuid NOT NULL,
    seat_id   text NOT NULL,
    tier_id   text NOT NULL,
    order_id  uuid NOT NULL,
    owner_id  uuid NOT NULL,
    sold_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, seat_id)
);
CREATE INDEX sold_seats_order ON sold_seats (order_id);

-- One row per committed hold, keyed by the order: CommitHold is idempotent on order_id.
CREATE TABLE commits (
    order_id      uuid PRIMARY KEY,
    hold_id       uuid NOT NULL UNIQUE,
    event_id      uuid NOT NULL,
    owner_id      uuid NOT NULL,
    committed_at  timestamptz NOT NULL DEFAULT now()
);

-- What a commit sold: a seat, or a quantity of a general-admission tier. `released` marks what
-- was returned to sale (refunds), so a repeated ReleaseSold returns nothing twice.
CREATE TABLE commit_items (
    order_id    uuid NOT NULL REFERENCES commits (order_id),
    item_no     integer NOT NULL,
    tier_id     text NOT NULL,
    seat_id     text,
    ga_area_id  text,
    quantity    integer NOT NULL CHECK (quantity > 0),
    released    integer NOT NULL DEFAULT 0 CHECK (released >= 0 AND released <= quantity),
    PRIMARY KEY (order_id, item_no)
);
