DROP TABLE order_fates;
