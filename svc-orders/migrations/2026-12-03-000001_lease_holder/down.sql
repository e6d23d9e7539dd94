DROP INDEX orders_leased;
ALTER TABLE orders DROP COLUMN lease_holder;
