//! The checkout across the platform: orders with real identity, catalog, inventory and payments
//! (in-process), PostgreSQL, Redis and RabbitMQ. What payments, inventory and catalog hold is
//! read through their APIs; orders' own tables only where a test plays a fault (a PayOrder that
//! died half-way) or watches what no API shows (a charge lease, events waiting in the outbox).

mod attacks;
mod checkout;
mod faults;
mod healing;
mod helpers;
mod internal;
mod metrics;
mod notify;
mod retries;
mod support;
mod tickets;
mod webhooks;
