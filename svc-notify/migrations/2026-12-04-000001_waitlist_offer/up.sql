-- A new kind of message: places from a waiting list held for the buyer (waitlist.offer_made).
ALTER TABLE mails DROP CONSTRAINT mails_kind_check, ADD CONSTRAINT mails_kind_check CHECK (kind IN
    ('welcome', 'order_confirmed', 'payment_failed', 'order_expired', 'order_refunded',
     'order_cancelled', 'event_cancelled', 'event_updated', 'event_reminder', 'waitlist_offer'));
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check, ADD CONSTRAINT notifications_kind_check
    CHECK (kind IN ('welcome', 'order_confirmed', 'payment_failed', 'order_expired', 'order_refunded',
     'order_cancelled', 'event_cancelled', 'event_updated', 'event_reminder', 'waitlist_offer'));
