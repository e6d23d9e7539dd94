DROP TABLE notifications;
DROP TABLE mails;
DROP TABLE preferences;
DROP TABLE holdings;
DROP TABLE known_orders;
DROP TABLE recipients;
DROP TABLE known_events;
