DROP TABLE test_processor_refunds;
DROP TABLE test_processor_charges;
DROP TABLE refunds;
DROP TABLE payments;
DROP TABLE payment_orders;
