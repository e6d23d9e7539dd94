ALTER TABLE order_lines DROP COLUMN seat_label;
