//! What every service of the ticketing platform shares, and nothing else: configuration,
//! telemetry, the server bootstrap (health, reflection, admin port, graceful shutdown), PostgreSQL
//! and Redis pools, errors mapped to `google.rpc` statuses, authentication and service identity,
//! messaging (outbox, relay, consumers), pagination, update masks, money and card checks,
//! background tasks, and the clients for other services with discovery and retries. No business
//! rules live here.

pub mod admission;
pub mod auth;
pub mod background;
pub mod cache;
pub mod clients;
pub mod config;
pub mod db;
pub mod deadline;
pub mod discovery;
pub mod error;
pub mod fieldmask;
pub mod messaging;
pub mod money;
pub mod pagination;
pub mod ports;
pub mod qr;
pub mod retry;
pub mod rpc_metrics;
pub mod server;
pub mod service_auth;
pub mod stored_enum;
pub mod telemetry;
pub mod time;
pub mod tracing_layer;

pub use error::{ApiError, ApiResult};
