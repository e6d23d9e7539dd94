// The notify database (see migrations/).

diesel::table! {
    known_events (id) {
        id -> Uuid,
        organization_id -> Uuid,
        title -> Text,
        starts_at -> Timestamptz,
        cancelled -> Bool,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    recipients (user_id) {
        user_id -> Uuid,
        email -> Text,
        display_name -> Text,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    known_orders (id) {
        id -> Uuid,
        event_id -> Uuid,
        buyer_id -> Uuid,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    holdings (ticket_id) {
        ticket_id -> Uuid,
        order_id -> Uuid,
        event_id -> Uuid,
        holder_id -> Uuid,
        valid -> Bool,
    }
}

diesel::table! {
    preferences (user_id) {
        user_id -> Uuid,
        email_enabled -> Bool,
        in_app_enabled -> Bool,
        reminders_enabled -> Bool,
        marketing_enabled -> Bool,
        locale -> Text,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    mails (id) {
        id -> Uuid,
        dedupe_key -> Text,
        message_id -> Text,
        user_id -> Nullable<Uuid>,
        kind -> Text,
        recipient -> Text,
        subject -> Text,
        raw -> Bytea,
        status -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        sent_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    notifications (id) {
        id -> Uuid,
        dedupe_key -> Text,
        user_id -> Uuid,
        kind -> Text,
        title -> Text,
        body -> Text,
        link -> Text,
        created_at -> Timestamptz,
        read_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    reminders (event_id, holder_id, offset_secs) {
        event_id -> Uuid,
        holder_id -> Uuid,
        offset_secs -> Int4,
        due_at -> Timestamptz,
        status -> Text,
        fired_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    signing_keys (name) {
        name -> Text,
        secret -> Bytea,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    conversations (id) {
        id -> Uuid,
        buyer_id -> Uuid,
        organization_id -> Nullable<Uuid>,
        order_id -> Nullable<Uuid>,
        subject -> Text,
        status -> Text,
        buyer_read_at -> Timestamptz,
        staff_read_at -> Timestamptz,
        created_at -> Timestamptz,
        last_message_at -> Timestamptz,
    }
}

diesel::table! {
    chat_messages (id) {
        id -> Uuid,
        conversation_id -> Uuid,
        author_id -> Uuid,
        from_staff -> Bool,
        body -> Text,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(chat_messages -> conversations (conversation_id));
diesel::allow_tables_to_appear_in_same_query!(conversations, chat_messages, known_orders, known_events);

diesel::table! {
    webhook_endpoints (id) {
        id -> Uuid,
        organization_id -> Uuid,
        url -> Text,
        event_types -> Array<Text>,
        description -> Text,
        secret -> Text,
        previous_secret -> Nullable<Text>,
        previous_secret_expires_at -> Nullable<Timestamptz>,
        enabled -> Bool,
        disabled_reason -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> Uuid,
        endpoint_id -> Uuid,
        source_id -> Uuid,
        event_type -> Text,
        payload -> Text,
        status -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        leased_until -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_attempts (id) {
        id -> Int8,
        delivery_id -> Uuid,
        attempted_at -> Timestamptz,
        status_code -> Nullable<Int4>,
        duration_ms -> Int4,
        response_body -> Text,
        error -> Text,
    }
}

diesel::joinable!(webhook_deliveries -> webhook_endpoints (endpoint_id));
diesel::joinable!(webhook_attempts -> webhook_deliveries (delivery_id));
diesel::allow_tables_to_appear_in_same_query!(webhook_endpoints, webhook_deliveries, webhook_attempts);
