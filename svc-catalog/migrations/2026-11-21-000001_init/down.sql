DROP TABLE tiers;
DROP TABLE events;
DROP TABLE venues;
