-- Who holds an order's charge lease: its holder renews the lease while it works, and only its
-- own renewals count, so a lease lapses within seconds of its holder's death.
ALTER TABLE orders ADD COLUMN lease_holder UUID;
-- The leases the resumption looks at every second: pending orders that have one.
CREATE INDEX orders_leased ON orders (charging_until)
    WHERE status = 'pending_payment' AND charging_until IS NOT NULL;
