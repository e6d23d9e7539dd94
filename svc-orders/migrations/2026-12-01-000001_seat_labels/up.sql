-- The seat's label as the buyer reads it on the ticket ("Stalls A-12"), fixed at the order.
ALTER TABLE order_lines ADD COLUMN seat_label TEXT;
