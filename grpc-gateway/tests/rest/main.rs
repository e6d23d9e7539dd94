//! The gateway end to end: REST/JSON and SSE through the real gateway to the real identity,
//! catalog and inventory services (PostgreSQL, Redis, RabbitMQ), each test with its own stack.

mod edge;
mod fuzz;
mod helpers;
mod lockout;
mod surface;
mod tour;
mod transcoding;
