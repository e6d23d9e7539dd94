//! Diesel's view of the tables in `migrations/`.

diesel::table! {
    inventory_events (event_id) {
        event_id -> Uuid,
        organization_id -> Uuid,
        version -> Int8,
        per_customer_limit -> Int4,
        closed -> Bool,
        configured_at -> Timestamptz,
    }
}

diesel::table! {
    inventory_seats (event_id, seat_id) {
        event_id -> Uuid,
        seat_id -> Text,
        tier_id -> Text,
        position -> Int4,
    }
}

diesel::table! {
    inventory_quotas (event_id, tier_id) {
        event_id -> Uuid,
        tier_id -> Text,
        ga_area_id -> Text,
        capacity -> Int4,
        sold -> Int4,
    }
}

diesel::table! {
    sold_seats (event_id, seat_id) {
        event_id -> Uuid,
        seat_id -> Text,
        tier_id -> Text,
        order_id -> Uuid,
        owner_id -> Uuid,
        sold_at -> Timestamptz,
    }
}

diesel::table! {
    commits (order_id) {
        order_id -> Uuid,
        hold_id -> Uuid,
        event_id -> Uuid,
        owner_id -> Uuid,
        committed_at -> Timestamptz,
    }
}

diesel::table! {
    commit_items (order_id, item_no) {
        order_id -> Uuid,
        item_no -> Int4,
        tier_id -> Text,
        seat_id -> Nullable<Text>,
        ga_area_id -> Nullable<Text>,
        quantity -> Int4,
        released -> Int4,
    }
}

diesel::table! {
    order_fates (order_id) {
        order_id -> Uuid,
        fate -> Text,
        at -> Timestamptz,
    }
}

diesel::table! {
    waitlist_entries (entry_id) {
        entry_id -> Uuid,
        event_id -> Uuid,
        tier_id -> Text,
        owner_id -> Uuid,
        quantity -> Int4,
        position -> Int8,
        status -> Text,
        offer_expires_at -> Nullable<Timestamptz>,
        offer_seat_ids -> Array<Text>,
        joined_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    inventory_events,
    inventory_seats,
    inventory_quotas,
    sold_seats,
    commits,
    commit_items,
    order_fates,
    waitlist_entries,
);

diesel::joinable!(commit_items -> commits (order_id));
