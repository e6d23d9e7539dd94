//! Black-box tests of svc-identity against the machine's real PostgreSQL and Redis. Each test
//! starts the service in-process with a database and Redis key prefix of its own.

mod api_keys;
mod auth;
mod helpers;
mod orgs;
mod refresh;
mod roles;
mod surface;
mod tokens;
