// The orders database (see migrations/).

diesel::table! {
    orders (id) {
        id -> Uuid,
        event_id -> Uuid,
        organization_id -> Uuid,
        buyer_id -> Uuid,
        buyer_email -> Text,
        status -> Text,
        hold_id -> Uuid,
        idempotency_key -> Text,
        request_fingerprint -> Text,
        currency -> Text,
        subtotal -> Int8,
        discount_total -> Int8,
        total -> Int8,
        refunded_total -> Int8,
        discount_code -> Nullable<Text>,
        payment_deadline -> Timestamptz,
        payment_attempt -> Int4,
        attempt_open -> Bool,
        charging_until -> Nullable<Timestamptz>,
        payment_id -> Nullable<Uuid>,
        last_payment_error -> Nullable<Text>,
        created_at -> Timestamptz,
        paid_at -> Nullable<Timestamptz>,
        updated_at -> Timestamptz,
        lease_holder -> Nullable<Uuid>,
    }
}

diesel::table! {
    order_lines (id) {
        id -> Uuid,
        order_id -> Uuid,
        position -> Int4,
        tier_id -> Text,
        tier_name -> Text,
        seat_id -> Nullable<Text>,
        ga_area_id -> Nullable<Text>,
        unit_price -> Int8,
        discount -> Int8,
        refunded -> Bool,
        seat_label -> Nullable<Text>,
    }
}

diesel::table! {
    tickets (id) {
        id -> Uuid,
        order_id -> Uuid,
        line_id -> Uuid,
        event_id -> Uuid,
        holder_id -> Uuid,
        status -> Text,
        secret -> Text,
        issued_at -> Timestamptz,
        checked_in_at -> Nullable<Timestamptz>,
        check_in_gate -> Nullable<Text>,
        check_in_nonce -> Nullable<Text>,
    }
}

diesel::table! {
    discount_codes (event_id, code) {
        event_id -> Uuid,
        code -> Text,
        organization_id -> Uuid,
        percent_off -> Nullable<Int4>,
        amount_off -> Nullable<Int8>,
        currency -> Nullable<Text>,
        valid_from -> Nullable<Timestamptz>,
        valid_until -> Nullable<Timestamptz>,
        max_uses -> Int4,
        times_used -> Int4,
        active -> Bool,
        tier_ids -> Array<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    ticket_keys (kid) {
        kid -> Text,
        secret_key -> Bytea,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(order_lines -> orders (order_id));
diesel::joinable!(tickets -> orders (order_id));
diesel::allow_tables_to_appear_in_same_query!(orders, order_lines, tickets);
