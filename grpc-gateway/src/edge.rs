//! Protection at the edge: token-bucket rate limits per client IP and per API key (governor),
//! and per upstream a circuit breaker (failsafe) so a failing service is not hammered, plus a
//! liveness flag driven by health probes, so callers of a dead or frozen service learn at once
//! instead of waiting for connect timeouts or deadlines, and a restarted one is used again
//! within a probe of its coming back.

use std::{
    collections::HashMap,
    net::IpAddr,
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use failsafe::{StateMachine, backoff, failure_policy};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use tonic::Code;

use crate::config::{BreakerConfig, RateLimitConfig};

/// Which bucket refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    ClientIp,
    ApiKey,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::ClientIp => "client_ip",
            Limit::ApiKey => "api_key",
        }
    }
}

/// A refused request: which limit, and how long until a token is back.
#[derive(Debug, Clone, Copy)]
pub struct Throttled {
    pub limit: Limit,
    pub retry_after: Duration,
}

pub struct RateLimits {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_key: Option<DefaultKeyedRateLimiter<[u8; 32]>>,
    clock: DefaultClock,
}

fn quota(per_second: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_second)?;
    Some(Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate)))
}

impl RateLimits {
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            per_ip: quota(config.per_ip_per_second, config.per_ip_burst).map(RateLimiter::keyed),
            per_key: quota(config.per_api_key_per_second, config.per_api_key_burst).map(RateLimiter::keyed),
            clock: DefaultClock::default(),
        }
    }

    /// Takes a token from the client's IP bucket.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Throttled> {
        // IPv6 clients get a /64 each, as a provider hands one to a customer; otherwise one
        // machine could step around the limit by rotating addresses.
        let key = match ip {
            IpAddr::V6(v6) => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::from(octets)
            }
            v4 => v4,
        };
        self.check(self.per_ip.as_ref(), &key, Limit::ClientIp)
    }

    /// Takes a token from a verified API key's bucket (keyed by the digest of its secret).
    pub fn check_api_key(&self, digest: &[u8; 32]) -> Result<(), Throttled> {
        self.check(self.per_key.as_ref(), digest, Limit::ApiKey)
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: Option<&DefaultKeyedRateLimiter<K>>,
        key: &K,
        limit: Limit,
    ) -> Result<(), Throttled> {
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| Throttled {
            limit,
            retry_after: not_until.wait_time_from(self.clock.now()),
        })
    }

    /// Forgets buckets that are full again, so memory follows the active clients.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.per_ip {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.per_key {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// The client behind a request: the connection's peer, unless that is a trusted proxy; then the
/// right-most `X-Forwarded-For` hop that is not a trusted proxy (each proxy appends the address
/// it saw, so hops left of the first untrusted one are the client's own say-so). All values of
/// the header count, in order; a hop that is not an address ends the walk at the hop before it.
pub fn client_ip(peer: IpAddr, forwarded_for: &[&str], trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for
        .iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|hop| !hop.is_empty())
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// `192.0.2.1`, `192.0.2.1:443`, `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    hop.parse::<std::net::SocketAddr>().ok().map(|addr| addr.ip())
}

type Machine = StateMachine<failure_policy::ConsecutiveFailures<backoff::Constant>, Instrument>;

/// One breaker and one liveness flag per upstream service.
pub struct Breakers {
    machines: HashMap<String, Machine>,
    liveness: HashMap<String, Arc<Liveness>>,
    cool_down: Duration,
    probe_down_interval: Duration,
}

/// What the gateway last learnt of an upstream's being there at all.
#[derive(Default)]
pub struct Liveness {
    down: AtomicBool,
    failed_probes: AtomicU32,
}

impl Liveness {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }
}

/// What the breaker lets through.
pub enum Permit {
    Call,
    /// Open or down: answer 503 at once; the upstream gets another try after `retry_after`.
    Refused {
        retry_after: Duration,
    },
}

/// How a health probe of an upstream came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Serving,
    /// It answered, but not SERVING (a dependency of it is down, say), or not at all in time.
    Failed,
}

impl Breakers {
    pub fn new<'a>(config: &BreakerConfig, upstreams: impl IntoIterator<Item = &'a String>) -> Self {
        let machines: HashMap<String, Machine> = upstreams
            .into_iter()
            .map(|name| {
                let policy = failure_policy::consecutive_failures(
                    config.consecutive_failures,
                    backoff::constant(config.cool_down),
                );
                let instrument = Instrument {
                    upstream: name.clone(),
                    opened_at: Default::default(),
                    cool_down: config.cool_down,
                };
                (name.clone(), StateMachine::new(policy, instrument))
            })
            .collect();
        let liveness = machines
            .keys()
            .map(|name| (name.clone(), Arc::new(Liveness::default())))
            .collect();
        Self {
            machines,
            liveness,
            cool_down: config.cool_down,
            probe_down_interval: config.probe_down_interval,
        }
    }

    pub fn permit(&self, upstream: &str) -> Permit {
        if self.liveness.get(upstream).is_some_and(|l| l.is_down()) {
            // Probed again within this; a second is the least a Retry-After can say.
            return Permit::Refused {
                retry_after: self.probe_down_interval.max(Duration::from_secs(1)),
            };
        }
        match self.machines.get(upstream) {
            Some(machine) if !machine.is_call_permitted() => Permit::Refused {
                retry_after: self.cool_down,
            },
            _ => Permit::Call,
        }
    }

    /// The upstreams and their liveness, for the prober.
    pub fn liveness(&self) -> impl Iterator<Item = (&String, &Arc<Liveness>)> {
        self.liveness.iter()
    }

    /// A call could not reach the upstream at all (refused, reset): it is down from now on,
    /// until a probe finds it serving.
    pub fn unreachable(&self, upstream: &str) {
        if let Some(liveness) = self.liveness.get(upstream) {
            mark_down(upstream, liveness, "a call could not reach it");
        }
    }

    /// Records a health probe: down after `threshold` failures in a row, up at the first
    /// success.
    pub fn probed(&self, upstream: &str, probe: Probe, threshold: u32) {
        let Some(liveness) = self.liveness.get(upstream) else {
            return;
        };
        match probe {
            Probe::Serving => {
                liveness.failed_probes.store(0, Ordering::Relaxed);
                if liveness.down.swap(false, Ordering::Relaxed) {
                    metrics::gauge!("gateway_upstream_down", "upstream" => upstream.to_string()).set(0.0);
                    tracing::info!(upstream, "upstream serving again: calls go through");
                }
            }
            Probe::Failed => {
                let failed = liveness.failed_probes.fetch_add(1, Ordering::Relaxed) + 1;
                if failed >= threshold {
                    mark_down(upstream, liveness, "its health probes failed");
                }
            }
        }
    }

    /// Records how a call went: only signs of an unhealthy upstream count as failures (see
    /// `errors::breaker_outcome` for what the proxy passes); a caller's bad request or a missing
    /// record says the upstream is working.
    pub fn record(&self, upstream: &str, outcome: Result<(), Code>) {
        let Some(machine) = self.machines.get(upstream) else {
            return;
        };
        match outcome {
            Err(Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Internal) => {
                machine.on_error()
            }
            _ => machine.on_success(),
        }
    }
}

fn mark_down(upstream: &str, liveness: &Liveness, why: &str) {
    if !liveness.down.swap(true, Ordering::Relaxed) {
        metrics::gauge!("gateway_upstream_down", "upstream" => upstream.to_string()).set(1.0);
        tracing::warn!(
            upstream,
            why,
            "upstream down: answering 503 until a probe finds it serving"
        );
    }
}

/// Logs and exports the breaker's transitions.
struct Instrument {
    upstream: String,
    opened_at: std::sync::Mutex<Option<Instant>>,
    cool_down: Duration,
}

impl failsafe::Instrument for Instrument {
    fn on_call_rejected(&self) {
        metrics::counter!("gateway_circuit_rejected_total", "upstream" => self.upstream.clone()).increment(1);
    }

    fn on_open(&self) {
        *self.opened_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        metrics::gauge!("gateway_circuit_open", "upstream" => self.upstream.clone()).set(1.0);
        tracing::warn!(upstream = %self.upstream, cool_down_ms = self.cool_down.as_millis() as u64, "circuit opened");
    }

    fn on_half_open(&self) {
        tracing::info!(upstream = %self.upstream, "circuit half-open: letting calls try again");
    }

    fn on_closed(&self) {
        metrics::gauge!("gateway_circuit_open", "upstream" => self.upstream.clone()).set(0.0);
        if let Some(at) = self.opened_at.lock().unwrap_or_else(|p| p.into_inner()).take() {
            tracing::info!(upstream = %self.upstream, open_ms = at.elapsed().as_millis() as u64, "circuit closed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn a_bucket_refuses_past_its_burst_and_says_when_to_retry() {
        let limits = RateLimits::new(&RateLimitConfig {
            per_ip_per_second: 1,
            per_ip_burst: 2,
            per_api_key_per_second: 0,
            per_api_key_burst: 0,
        });
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        assert!(limits.check_ip(ip).is_ok());
        assert!(limits.check_ip(ip).is_ok());
        let refused = limits.check_ip(ip).expect_err("burst spent");
        assert_eq!(refused.limit, Limit::ClientIp);
        assert!(refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_secs(1));
        // Another client has its own bucket; API keys are unlimited when configured so.
        assert!(limits.check_ip("192.0.2.8".parse().expect("ip")).is_ok());
        assert!(limits.check_api_key(&[7; 32]).is_ok());
    }

    #[test]
    fn the_client_is_the_right_most_hop_no_trusted_proxy_added() {
        let nets: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let lb = ip("10.0.0.5");
        // No proxy in front: the header is the client's own words and ignored.
        assert_eq!(
            client_ip(ip("203.0.113.9"), &["198.51.100.1"], &nets),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(ip("203.0.113.9"), &[], &[]), ip("203.0.113.9"));
        // Behind the balancer: what it appended, whatever the client wrote before it.
        assert_eq!(client_ip(lb, &["203.0.113.9"], &nets), ip("203.0.113.9"));
        assert_eq!(client_ip(lb, &["1.2.3.4, 203.0.113.9"], &nets), ip("203.0.113.9"));
        assert_eq!(
            client_ip(lb, &["1.2.3.4", "203.0.113.9, 10.1.1.1"], &nets),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(lb, &["[2001:db8::7]:443"], &nets), ip("2001:db8::7"));
        // A forged hop that is not an address ends the walk at the last good one.
        assert_eq!(client_ip(lb, &["203.0.113.9, nonsense"], &nets), lb);
        // Only proxies: the left-most.
        assert_eq!(client_ip(lb, &["10.2.2.2, 10.3.3.3"], &nets), ip("10.2.2.2"));
        assert_eq!(client_ip(lb, &[], &nets), lb);
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let limits = RateLimits::new(&RateLimitConfig {
            per_ip_per_second: 1,
            per_ip_burst: 1,
            per_api_key_per_second: 0,
            per_api_key_burst: 0,
        });
        assert!(limits.check_ip("2001:db8::1".parse().expect("ip")).is_ok());
        assert!(limits.check_ip("2001:db8::2".parse().expect("ip")).is_err());
        assert!(limits.check_ip("2001:db8:0:1::1".parse().expect("ip")).is_ok());
    }

    #[test]
    fn an_unreachable_upstream_is_down_until_a_probe_finds_it_serving() {
        let breakers = Breakers::new(&Config::default().breaker, &["orders".to_string()]);
        let refused = |b: &Breakers| matches!(b.permit("orders"), Permit::Refused { .. });
        assert!(!refused(&breakers));
        breakers.unreachable("orders");
        assert!(refused(&breakers), "down at once");
        match breakers.permit("orders") {
            Permit::Refused { retry_after } => assert_eq!(retry_after, Duration::from_secs(1)),
            Permit::Call => unreachable!(),
        }
        breakers.probed("orders", Probe::Failed, 2);
        assert!(refused(&breakers));
        breakers.probed("orders", Probe::Serving, 2);
        assert!(!refused(&breakers), "up at the first probe that finds it serving");
        // One failed probe is not enough to take it down; the threshold in a row is.
        breakers.probed("orders", Probe::Failed, 2);
        assert!(!refused(&breakers));
        breakers.probed("orders", Probe::Serving, 2);
        breakers.probed("orders", Probe::Failed, 2);
        assert!(!refused(&breakers));
        breakers.probed("orders", Probe::Failed, 2);
        assert!(refused(&breakers), "frozen: its probes failed twice in a row");
        // Another upstream is not affected, and an unknown one is never refused.
        assert!(matches!(breakers.permit("reports"), Permit::Call));
    }

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_half_opens_after_the_cool_down() {
        let upstreams = ["orders".to_string()];
        let breakers = Breakers::new(
            &BreakerConfig {
                consecutive_failures: 3,
                cool_down: Duration::from_millis(200),
                ..Config::default().breaker
            },
            &upstreams,
        );
        // Errors that are the caller's fault never trip it.
        for _ in 0..10 {
            breakers.record("orders", Err(Code::InvalidArgument));
        }
        assert!(matches!(breakers.permit("orders"), Permit::Call));
        for _ in 0..3 {
            assert!(matches!(breakers.permit("orders"), Permit::Call));
            breakers.record("orders", Err(Code::Unavailable));
        }
        assert!(matches!(breakers.permit("orders"), Permit::Refused { .. }));
        std::thread::sleep(Duration::from_millis(250));
        // Half-open: a call may try; its failure opens the circuit again at once.
        assert!(matches!(breakers.permit("orders"), Permit::Call));
        breakers.record("orders", Err(Code::Unavailable));
        assert!(matches!(breakers.permit("orders"), Permit::Refused { .. }));
        std::thread::sleep(Duration::from_millis(250));
        assert!(matches!(breakers.permit("orders"), Permit::Call));
        breakers.record("orders", Ok(()));
        // Closed again: one failure is not enough to open it.
        breakers.record("orders", Err(Code::Unavailable));
        assert!(matches!(breakers.permit("orders"), Permit::Call));
        // Unknown upstreams are not guarded.
        assert!(matches!(breakers.permit("reports"), Permit::Call));
    }
}
