-- One checkout as PostgreSQL alone would see it at its leanest: four commits (the durable
-- reservation, the order, the payment, the order paid with its ticket), ten statements, no
-- reads. pgbench counts each run of this file as one "transaction".
\set o random(1, 9000000000000000000)
\set b random(1, 9000000000000000000)
BEGIN;
INSERT INTO sold VALUES ('01a23038-1ec0-722b-8f03-d015f981590e', :o::text, :o);
END;
BEGIN;
INSERT INTO orders VALUES (:o, :b, 'k', 'pending', 5000, now() + interval '10 min');
INSERT INTO lines VALUES (:o, :o, 'standard', 's', 5000);
INSERT INTO outbox (event_type, payload) VALUES ('order.created', '\x0102030405060708090a0b0c0d0e0f');
END;
BEGIN;
INSERT INTO payments VALUES (:o, 'order:' || :o, :o, 5000, 'succeeded');
INSERT INTO outbox (event_type, payload) VALUES ('payment.succeeded', '\x0102030405060708090a0b0c0d0e0f');
END;
BEGIN;
UPDATE orders SET status = 'paid' WHERE id = :o AND status = 'pending';
INSERT INTO tickets VALUES (:o, :o, :o, 'secretsecretsecretsecretsecretsecretsecretsecret');
INSERT INTO outbox (event_type, payload) VALUES ('order.paid', '\x0102030405060708090a0b0c0d0e0f');
END;
