-- The older kinds only: the offers' messages go with the kind.
DELETE FROM mails WHERE kind = 'waitlist_offer';
DELETE FROM notifications WHERE kind = 'waitlist_offer';
ALTER TABLE mails DROP CONSTRAINT mails_kind_check, ADD CONSTRAINT mails_kind_check CHECK (kind IN
    ('welcome', 'order_confirmed', 'payment_failed', 'order_expired', 'order_refunded',
     'order_cancelled', 'event_cancelled', 'event_updated', 'event_reminder'));
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check, ADD CONSTRAINT notifications_kind_check
    CHECK (kind IN ('welcome', 'order_confirmed', 'payment_failed', 'order_expired', 'order_refunded',
     'order_cancelled', 'event_cancelled', 'event_updated', 'event_reminder'));
