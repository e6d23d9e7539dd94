//! The one place that hands a service a channel to another service: found statically, by DNS or
//! through Consul ([`crate::discovery`]); channels connect lazily and reconnect on their own.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use tonic::transport::{Channel, Endpoint};

use crate::{
    config::PeersConfig,
    deadline::{PropagateDeadline, PropagateDeadlineLayer},
    discovery::{DiscoveryConfig, DiscoveryMode},
    error::ApiError,
    retry::{Retry, RetryConfig, RetryLayer},
    rpc_metrics::{RpcMetrics, RpcMetricsLayer},
    service_auth::{AttachServiceToken, AttachServiceTokenLayer, ServiceTokens},
    tracing_layer::{Trace, TraceLayer},
};

/// A channel to a peer: measured by [`RpcMetricsLayer`] (`grpc_client_*` metrics, one sample per
/// call, retries included), traced (a client span, its context sent along), carrying this
/// service's token for the peer ([`crate::service_auth`]), retried where the protos allow
/// ([`crate::retry`]), and carrying the served call's deadline ([`crate::deadline`]) on every
/// attempt.
pub type PeerChannel = RpcMetrics<Trace<AttachServiceToken<Retry<PropagateDeadline<Channel>>>>>;

/// Wraps a channel made elsewhere (a test's, say) the way [`Peers::channel`] does, without a
/// service credential.
pub fn measured(channel: Channel) -> PeerChannel {
    layered(
        channel,
        RetryLayer::new(RetryConfig::default()),
        AttachServiceTokenLayer::new(None, ""),
    )
}

fn layered(channel: Channel, retry: RetryLayer, auth: AttachServiceTokenLayer) -> PeerChannel {
    tower::ServiceBuilder::new()
        .layer(RpcMetricsLayer::client())
        .layer(TraceLayer::client())
        .layer(auth)
        .layer(retry)
        .layer(PropagateDeadlineLayer)
        .service(channel)
}

/// Channels to peer services by name.
#[derive(Clone)]
pub struct Peers {
    config: PeersConfig,
    discovery: DiscoveryConfig,
    /// One retry budget per peer, shared by every channel to it.
    budgets: Arc<Mutex<HashMap<String, RetryLayer>>>,
    /// This service's tokens (made with the first channel: Consul's watch needs the runtime).
    tokens: Arc<OnceLock<Option<ServiceTokens>>>,
}

impl Peers {
    pub fn new(config: PeersConfig) -> Self {
        Self {
            config,
            discovery: DiscoveryConfig::default(),
            budgets: Arc::default(),
            tokens: Arc::default(),
        }
    }

    /// The service tokens this service calls with; None without a client secret (its calls
    /// then carry no service credential, and internal RPCs refuse them).
    pub fn tokens(&self) -> anyhow::Result<Option<ServiceTokens>> {
        if let Some(tokens) = self.tokens.get() {
            return Ok(tokens.clone());
        }
        let credentials = &self.config.credentials;
        let tokens = if credentials.client_secret.is_none() || credentials.client_id.is_empty() {
            None
        } else {
            // Straight to identity: the grant needs no token of its own.
            Some(ServiceTokens::new(
                credentials.clone(),
                self.raw_channel("identity")?,
            ))
        };
        Ok(self.tokens.get_or_init(|| tokens).clone())
    }

    fn raw_channel(&self, name: &str) -> anyhow::Result<Channel> {
        if self.discovery.mode == DiscoveryMode::Consul {
            let timeout = self.config.default_timeout;
            return Ok(crate::discovery::consul_channel(
                &self.discovery.consul,
                name,
                move |url| endpoint(url, timeout),
            ));
        }
        let url = self.config.addresses.get(name).ok_or_else(|| {
            anyhow::anyhow!("no address configured for peer `{name}` (peers.addresses.{name})")
        })?;
        Ok(endpoint(url, self.config.default_timeout)?.connect_lazy())
    }

    /// Finds peers as `discovery` says (static addresses unless it says Consul).
    pub fn discovering(mut self, discovery: &DiscoveryConfig) -> Self {
        self.discovery = discovery.clone();
        self
    }

    fn retry(&self, name: &str) -> RetryLayer {
        self.budgets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_insert_with(|| RetryLayer::new(self.config.retry.clone()))
            .clone()
    }

    /// A verifier of the access tokens identity signs, with its keys fetched from identity.
    pub fn identity_verifier(&self) -> anyhow::Result<crate::auth::TokenVerifier> {
        Ok(crate::auth::TokenVerifier::new(
            crate::auth::IdentityKeySource::new(self.channel("identity")?),
        ))
    }

    /// A lazily connected channel to `name` (`identity`, `catalog`, ...): to its configured
    /// address (static, DNS), or balanced over its passing instances in Consul. Call it inside
    /// the Tokio runtime: Consul's watch runs there.
    pub fn channel(&self, name: &str) -> anyhow::Result<PeerChannel> {
        let channel = self.raw_channel(name)?;
        Ok(layered(
            channel,
            self.retry(name),
            AttachServiceTokenLayer::new(self.tokens()?, name),
        ))
    }
}

/// An endpoint with the timeouts every internal call uses.
pub fn endpoint(url: &str, timeout: Duration) -> anyhow::Result<Endpoint> {
    let timeout = if timeout.is_zero() {
        Duration::from_secs(5)
    } else {
        timeout
    };
    Ok(Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true))
}

/// `message` as a request carrying an end user's token (`authorization: Bearer`), for a public
/// RPC made on the user's behalf: the peer authorizes the user. (The peer channel adds this
/// service's own token.) A token that is not a valid header value is left out, and the peer
/// answers UNAUTHENTICATED.
pub fn with_bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The code a failed call stands for. A failure to reach the peer (connection refused or cut,
/// the process killed mid-call) reads from tonic as UNKNOWN, INTERNAL or CANCELLED with the
/// transport error as its source; that is the peer being unavailable. Statuses the peer itself
/// sent carry no source and keep their code. A deadline that expired on the way (tonic's
/// `TimeoutExpired`) is DEADLINE_EXCEEDED.
pub fn failure_code(status: &tonic::Status) -> tonic::Code {
    use tonic::Code;
    let mut source = std::error::Error::source(status);
    let mut timed_out = status.message() == tonic::TimeoutExpired(()).to_string();
    while let Some(error) = source {
        timed_out |= error.is::<tonic::TimeoutExpired>();
        source = error.source();
    }
    if timed_out {
        return Code::DeadlineExceeded;
    }
    let transport =
        std::error::Error::source(status).is_some() || status.message().contains("transport error");
    match status.code() {
        Code::Unknown | Code::Internal | Code::Cancelled if transport => Code::Unavailable,
        code => code,
    }
}

/// Maps a failed call to a peer into this service's error: UNAVAILABLE and DEADLINE_EXCEEDED
/// stay retryable (so does a peer that could not be reached at all), caller errors pass
/// through, everything else is internal.
pub fn peer_error(peer: &str, status: tonic::Status) -> ApiError {
    use tonic::Code;
    match failure_code(&status) {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
            ApiError::Unavailable(format!("{peer} is unavailable"))
        }
        Code::NotFound => ApiError::NotFound {
            resource: "referenced resource",
        },
        Code::PermissionDenied => ApiError::permission_denied(status.message().to_string()),
        Code::Unauthenticated => ApiError::unauthenticated(status.message().to_string()),
        _ => ApiError::internal(format!("{peer} failed: {} {}", status.code(), status.message())),
    }
}

/// [`peer_error`] for a call to an internal RPC, which carries only this service's credential:
/// a refusal of it is this service's problem (misconfigured, or a key identity rotated that the
/// peer has not fetched yet), never the end user's, so it is UNAVAILABLE rather than a 401/403.
pub fn internal_peer_error(peer: &str, status: tonic::Status) -> ApiError {
    use tonic::Code;
    match status.code() {
        Code::Unauthenticated | Code::PermissionDenied => {
            tracing::error!(peer, error = %status.message(), "a peer refused this service's credential");
            ApiError::Unavailable(format!("{peer} refused this service's call"))
        }
        _ => peer_error(peer, status),
    }
}

#[cfg(test)]
mod tests {
    use tonic::{Code, Status};

    use super::*;

    #[test]
    fn a_peer_that_could_not_be_reached_is_unavailable_and_its_own_answers_keep_their_code() {
        let cut = Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        )));
        assert_eq!(cut.code(), Code::Unknown, "as tonic reports a cut connection");
        assert_eq!(failure_code(&cut), Code::Unavailable);
        assert!(matches!(peer_error("payments", cut), ApiError::Unavailable(_)));
        let answered = Status::internal("a bug over there");
        assert_eq!(failure_code(&answered), Code::Internal);
        assert!(matches!(peer_error("payments", answered), ApiError::Internal(_)));
        let timed_out = Status::cancelled(tonic::TimeoutExpired(()).to_string());
        assert_eq!(failure_code(&timed_out), Code::DeadlineExceeded);
    }
}
