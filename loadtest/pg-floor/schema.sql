-- The fewest rows a checkout must make durable, in the leanest tables: the sold seat (its
-- unique key is what stops a second sale), the order with its line and ticket, the payment, and
-- one outbox row per event. No service adds less than this.
CREATE TABLE sold (event uuid, seat text, order_id bigint, PRIMARY KEY (event, seat));
CREATE TABLE orders (
  id bigint PRIMARY KEY, buyer bigint, key text, status text, total bigint,
  deadline timestamptz, created timestamptz DEFAULT now(), UNIQUE (buyer, key)
);
CREATE TABLE lines (id bigint PRIMARY KEY, order_id bigint, tier text, seat text, price bigint);
CREATE INDEX ON lines (order_id);
CREATE TABLE tickets (id bigint PRIMARY KEY, order_id bigint, line_id bigint, secret text);
CREATE TABLE payments (id bigint PRIMARY KEY, key text UNIQUE, order_id bigint, amount bigint, status text);
CREATE TABLE outbox (id bigserial PRIMARY KEY, event_type text, payload bytea);
