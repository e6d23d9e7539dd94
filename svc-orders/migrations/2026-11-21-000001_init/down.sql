DROP TABLE ticket_keys;
DROP TABLE discount_codes;
DROP TABLE tickets;
DROP TABLE order_lines;
DROP TABLE orders;
