DROP TABLE commit_items;
DROP TABLE commits;
DROP TABLE sold_seats;
DROP TABLE inventory_quotas;
DROP TABLE inventory_seats;
DROP TABLE inventory_events;
