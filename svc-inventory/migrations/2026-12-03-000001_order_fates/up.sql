-- What became of an order's places here once it left the pending state unpaid: 'closed' (its
-- closing was applied: places returned) or 'revived' (a payment that came after its expiry
-- took them back). The row's lock orders the two, so a closing heard after the order was
-- revived never returns the places of a paid order.
CREATE TABLE order_fates (
    order_id  uuid PRIMARY KEY,
    fate      text NOT NULL CHECK (fate IN ('closed', 'revived')),
    at        timestamptz NOT NULL DEFAULT now()
);
