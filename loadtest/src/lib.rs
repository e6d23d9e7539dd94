//! Shared helpers for the benchmark binaries: argument parsing and latency summaries.

use std::time::Duration;

use ticketing_proto::ticketing::identity::v1::{
    self as idpb, identity_service_client::IdentityServiceClient,
};
use tonic::{Request, transport::Channel};

/// `message` with `Authorization: Bearer <token>`.
pub fn authed<T>(token: &str, message: T) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

/// Logs in and returns the access token.
pub async fn login(
    identity: &mut IdentityServiceClient<Channel>,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    Ok(identity
        .login(idpb::LoginRequest {
            email: email.into(),
            password: password.into(),
        })
        .await?
        .into_inner()
        .access_token)
}

/// A connected channel to `url`.
pub async fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_string())?
        .connect()
        .await?)
}

/// Reads `--name value` from the command line, or the default.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == &format!("--{name}"))
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Percentiles of a set of latencies.
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

pub fn summarize(mut samples: Vec<Duration>) -> Summary {
    samples.sort();
    let at = |q: f64| {
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(index).copied().unwrap_or_default()
    };
    Summary {
        count: samples.len(),
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: samples.last().copied().unwrap_or_default(),
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
