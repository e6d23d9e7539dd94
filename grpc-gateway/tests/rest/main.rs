//! The gateway end to end: REST/JSON and SSE through the real gateway to the whole platform as
//! e2e starts it (identity, catalog, inventory, orders and payments on PostgreSQL, Redis and
//! RabbitMQ), each test with its own stack.

mod edge;
mod fuzz;
mod helpers;
mod lockout;
mod surface;
mod tour;
mod transcoding;
