//! svc-orders against real identity, catalog, inventory and payments (in-process), PostgreSQL,
//! Redis and RabbitMQ.

mod attacks;
mod checkout;
mod faults;
mod healing;
mod helpers;
mod internal;
mod metrics;
mod retries;
mod tickets;
