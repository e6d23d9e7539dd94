//! svc-catalog with a real identity and inventory, against the machine's PostgreSQL and Redis.

mod authz;
mod helpers;
mod lifecycle;
mod masks;
mod search;
