-- Venues with their seating chart. The chart (categories, sections, rows, seats with positions,
-- general-admission areas) is stored as the encoded ticketing.catalog.v1.SeatingChart: it is read
-- and written whole, and validated by the service before it is stored.
CREATE TABLE venues (
    id               uuid PRIMARY KEY,
    organization_id  uuid NOT NULL,
    name             text NOT NULL,
    address_line1    text NOT NULL DEFAULT '',
    address_line2    text NOT NULL DEFAULT '',
    city             text NOT NULL DEFAULT '',
    region           text NOT NULL DEFAULT '',
    postal_code      text NOT NULL DEFAULT '',
    country          text NOT NULL DEFAULT '',
    timezone         text NOT NULL,
    chart            bytea NOT NULL,
    capacity         integer NOT NULL CHECK (capacity >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX venues_org ON venues (organization_id, created_at DESC, id DESC);

CREATE TABLE events (
    id               uuid PRIMARY KEY,
    organization_id  uuid NOT NULL,
    venue_id         uuid NOT NULL REFERENCES venues (id),
    title            text NOT NULL,
    description      text NOT NULL DEFAULT '',
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL CHECK (ends_at > starts_at),
    timezone         text NOT NULL,
    category         integer NOT NULL,
    image_urls       text[] NOT NULL DEFAULT '{}',
    status           text NOT NULL CHECK (status IN ('draft', 'published', 'cancelled', 'completed')),
    venue_name       text NOT NULL,
    city             text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    published_at     timestamptz,
    -- Full-text search over title (weighted higher) and description.
    search           tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple', title), 'A') || setweight(to_tsvector('simple', description), 'B')
    ) STORED
);
CREATE INDEX events_search ON events USING gin (search);
CREATE INDEX events_starts ON events (status, starts_at, id);
CREATE INDEX events_org ON events (organization_id, starts_at, id);
CREATE INDEX events_venue ON events (venue_id);

-- Prices for a seat category or a general-admission area of one event; each category and each
-- area has at most one tier, so every seat has exactly one price.
CREATE TABLE tiers (
    id                  uuid PRIMARY KEY,
    event_id            uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    name                text NOT NULL,
    price_minor         bigint NOT NULL CHECK (price_minor >= 0),
    currency            text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    seat_category_code  text,
    ga_area_id          text,
    sales_start         timestamptz,
    sales_end           timestamptz,
    per_order_limit     integer NOT NULL CHECK (per_order_limit BETWEEN 1 AND 50),
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((seat_category_code IS NULL) <> (ga_area_id IS NULL)),
    CHECK (sales_start IS NULL OR sales_end IS NULL OR sales_start < sales_end)
);
CREATE UNIQUE INDEX tiers_category ON tiers (event_id, seat_category_code) WHERE seat_category_code IS NOT NULL;
CREATE UNIQUE INDEX tiers_area ON tiers (event_id, ga_area_id) WHERE ga_area_id IS NOT NULL;
