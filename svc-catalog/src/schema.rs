//! Diesel's view of the tables in `migrations/` (the generated `search` column is queried with
//! SQL fragments and left out here).

diesel::table! {
    venues (id) {
        id -> Uuid,
        organization_id -> Uuid,
        name -> Text,
        address_line1 -> Text,
        address_line2 -> Text,
        city -> Text,
        region -> Text,
        postal_code -> Text,
        country -> Text,
        timezone -> Text,
        chart -> Bytea,
        capacity -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    events (id) {
        id -> Uuid,
        organization_id -> Uuid,
        venue_id -> Uuid,
        title -> Text,
        description -> Text,
        starts_at -> Timestamptz,
        ends_at -> Timestamptz,
        timezone -> Text,
        category -> Int4,
        image_urls -> Array<Text>,
        status -> Text,
        venue_name -> Text,
        city -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        published_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    tiers (id) {
        id -> Uuid,
        event_id -> Uuid,
        name -> Text,
        price_minor -> Int8,
        currency -> Text,
        seat_category_code -> Nullable<Text>,
        ga_area_id -> Nullable<Text>,
        sales_start -> Nullable<Timestamptz>,
        sales_end -> Nullable<Timestamptz>,
        per_order_limit -> Int4,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(events -> venues (venue_id));
diesel::joinable!(tiers -> events (event_id));
diesel::allow_tables_to_appear_in_same_query!(venues, events, tiers);
