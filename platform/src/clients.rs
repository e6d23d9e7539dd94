//! The one place that hands a service a channel to another service. This discovery mode
//! is `static` (addresses from config); channels connect lazily and reconnect on their own.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::{config::PeersConfig, error::ApiError, rpc_metrics::RpcMetricsLayer};

/// A channel to a peer, measured by [`RpcMetricsLayer`] (`grpc_client_*` metrics).
pub type PeerChannel = crate::rpc_metrics::RpcMetrics<Channel>;

/// Wraps a channel made elsewhere (a test's, say) the way [`Peers::channel`] does.
pub fn measured(channel: Channel) -> PeerChannel {
    tower::Layer::layer(&RpcMetricsLayer::client(), channel)
}

/// Channels to peer services by name.
#[derive(Clone, Debug)]
pub struct Peers {
    config: PeersConfig,
}

impl Peers {
    pub fn new(config: PeersConfig) -> Self {
        Self { config }
    }

    /// A lazily connected channel to `name` (`identity`, `catalog`, ...).
    pub fn channel(&self, name: &str) -> anyhow::Result<PeerChannel> {
        let url = self.config.addresses.get(name).ok_or_else(|| {
            anyhow::anyhow!("no address configured for peer `{name}` (peers.addresses.{name})")
        })?;
        Ok(measured(
            endpoint(url, self.config.default_timeout)?.connect_lazy(),
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

/// Maps a failed call to a peer into this service's error: UNAVAILABLE and DEADLINE_EXCEEDED stay
/// retryable, caller errors pass through, everything else is internal.
pub fn peer_error(peer: &str, status: tonic::Status) -> ApiError {
    use tonic::Code;
    match status.code() {
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
