// The payments database (see migrations/).

diesel::table! {
    payment_orders (order_id) {
        order_id -> Uuid,
        closed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    payments (id) {
        id -> Uuid,
        idempotency_key -> Text,
        order_id -> Uuid,
        customer_id -> Uuid,
        organization_id -> Nullable<Uuid>,
        amount -> Int8,
        currency -> Text,
        refunded -> Int8,
        status -> Text,
        failure_code -> Nullable<Text>,
        failure_message -> Nullable<Text>,
        card_brand -> Text,
        card_last4 -> Text,
        provider -> Text,
        provider_reference -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    refunds (id) {
        id -> Uuid,
        payment_id -> Uuid,
        idempotency_key -> Text,
        amount -> Int8,
        reason -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    test_processor_charges (idempotency_key) {
        idempotency_key -> Text,
        reference -> Text,
        outcome -> Text,
        amount -> Int8,
        refunded -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    test_processor_refunds (idempotency_key) {
        idempotency_key -> Text,
        charge_reference -> Text,
        amount -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(payments -> payment_orders (order_id));
diesel::joinable!(refunds -> payments (payment_id));
diesel::allow_tables_to_appear_in_same_query!(payment_orders, payments, refunds);
