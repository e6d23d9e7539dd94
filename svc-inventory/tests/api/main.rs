//! svc-inventory against the machine's real PostgreSQL and Redis, with a real identity for
//! tokens. Each test has its own databases and Redis key prefixes.

mod healing;
mod helpers;
mod holds;
mod invariants;
mod load;
mod revival;
mod waitlist;
mod watch;
