//! svc-orders against real identity, catalog, inventory and payments (in-process), PostgreSQL,
//! Redis and RabbitMQ.

mod checkout;
mod faults;
mod helpers;
mod metrics;
mod tickets;
