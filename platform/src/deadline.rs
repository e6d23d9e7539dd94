//! Deadlines that travel: a call that arrives with `grpc-timeout` keeps its deadline for the
//! calls it makes to other services, so a caller that gave up is not still being served three
//! hops away. The server layer remembers the deadline for the handler's task; the client layer
//! (in every [`PeerChannel`](crate::clients::PeerChannel)) sends the time left, never more than
//! the call's own timeout, and refuses at once with DEADLINE_EXCEEDED when none is left.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tower::{Layer, Service};

tokio::task_local! {
    /// When the call this task serves must be answered by.
    static DEADLINE: Instant;
}

/// The deadline of the call the current task serves, if it came with one.
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// Runs `future` as serving a call due at `deadline` (for work spawned off a handler).
pub async fn scope<F: std::future::Future>(deadline: Option<Instant>, future: F) -> F::Output {
    match deadline {
        Some(deadline) => DEADLINE.scope(deadline, future).await,
        None => future.await,
    }
}

/// `grpc-timeout` as gRPC writes it: at most 8 digits and a unit (`H M S m u n`).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `grpc-timeout` for `timeout`, in the finest unit that fits 8 digits.
pub fn format_grpc_timeout(timeout: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let micros = timeout.as_micros();
    if micros <= MAX {
        format!("{micros}u")
    } else if timeout.as_millis() <= MAX {
        format!("{}m", timeout.as_millis())
    } else {
        format!("{}S", u128::from(timeout.as_secs()).min(MAX))
    }
}

fn header_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
}

/// Server side: serves each call within the scope of its deadline.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for Deadline<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let deadline = header_timeout(request.headers()).map(|t| Instant::now() + t);
        let future = self.inner.call(request);
        Box::pin(scope(deadline, future))
    }
}

/// Client side: sends the time the served call has left.
#[derive(Debug, Clone, Copy, Default)]
pub struct PropagateDeadlineLayer;

impl<S> Layer<S> for PropagateDeadlineLayer {
    type Service = PropagateDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PropagateDeadline { inner }
    }
}

#[derive(Debug, Clone)]
pub struct PropagateDeadline<S> {
    inner: S,
}

impl<S> Service<http::Request<tonic::body::Body>> for PropagateDeadline<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        if let Some(deadline) = current() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let refused =
                    tonic::Status::deadline_exceeded("the call this one serves is past its deadline")
                        .into_http();
                return Box::pin(std::future::ready(Ok(refused)));
            }
            let timeout = header_timeout(request.headers()).map_or(left, |own| own.min(left));
            if let Ok(value) = http::HeaderValue::from_str(&format_grpc_timeout(timeout)) {
                request.headers_mut().insert("grpc-timeout", value);
            }
        }
        Box::pin(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    type Seen = Arc<Mutex<Vec<Option<Duration>>>>;

    /// A peer that records the timeout each call arrives with.
    #[derive(Clone)]
    struct Recorder(Seen);

    impl Service<http::Request<tonic::body::Body>> for Recorder {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(header_timeout(request.headers()));
            std::future::ready(Ok(http::Response::new(tonic::body::Body::empty())))
        }
    }

    fn peer(seen: Seen) -> PropagateDeadline<Recorder> {
        PropagateDeadlineLayer.layer(Recorder(seen))
    }

    /// A server whose handler calls the peer once, with `own` as its own timeout.
    async fn serve(
        incoming: Option<&str>,
        own: Option<Duration>,
        seen: Seen,
    ) -> http::Response<tonic::body::Body> {
        let handler = tower::service_fn(move |_: http::Request<()>| {
            let mut peer = peer(seen.clone());
            async move {
                let mut outgoing = http::Request::new(tonic::body::Body::empty());
                if let Some(own) = own {
                    outgoing
                        .headers_mut()
                        .insert("grpc-timeout", format_grpc_timeout(own).parse().expect("header"));
                }
                peer.call(outgoing).await
            }
        });
        let mut server = DeadlineLayer.layer(handler);
        let mut request = http::Request::new(());
        if let Some(timeout) = incoming {
            request
                .headers_mut()
                .insert("grpc-timeout", timeout.parse().expect("header"));
        }
        server.call(request).await.expect("infallible")
    }

    #[tokio::test]
    async fn the_time_left_travels_to_the_next_call_and_never_grows() {
        let seen: Seen = Arc::default();
        serve(Some("800m"), None, seen.clone()).await;
        serve(Some("800m"), Some(Duration::from_millis(100)), seen.clone()).await;
        serve(Some("2S"), Some(Duration::from_secs(30)), seen.clone()).await;
        serve(None, None, seen.clone()).await;
        serve(None, Some(Duration::from_secs(3)), seen.clone()).await;
        let seen = seen.lock().expect("seen").clone();
        let ms = |d: &Option<Duration>| d.map(|d| d.as_millis());
        // The time left (a little under the incoming timeout), or the call's own if shorter.
        assert!(ms(&seen[0]).is_some_and(|t| t > 500 && t <= 800), "{seen:?}");
        assert_eq!(ms(&seen[1]), Some(100));
        assert!(ms(&seen[2]).is_some_and(|t| t > 1_500 && t <= 2_000), "{seen:?}");
        // No deadline came in: none is made up, and the call's own stays.
        assert_eq!(seen[3], None);
        assert_eq!(ms(&seen[4]), Some(3_000));
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_is_refused_without_reaching_the_peer() {
        let seen: Seen = Arc::default();
        let handler = {
            let seen = seen.clone();
            tower::service_fn(move |_: http::Request<()>| {
                let mut peer = peer(seen.clone());
                async move {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    peer.call(http::Request::new(tonic::body::Body::empty())).await
                }
            })
        };
        let mut server = DeadlineLayer.layer(handler);
        let mut request = http::Request::new(());
        request
            .headers_mut()
            .insert("grpc-timeout", "10m".parse().expect("header"));
        let response = server.call(request).await.expect("infallible");
        assert_eq!(
            response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok()),
            Some("4"),
            "DEADLINE_EXCEEDED"
        );
        assert!(seen.lock().expect("seen").is_empty());
    }

    #[test]
    fn grpc_timeouts_round_trip() {
        for timeout in [
            Duration::from_micros(1),
            Duration::from_millis(250),
            Duration::from_secs(99),
            Duration::from_secs(200),
            Duration::from_secs(86_400 * 365),
        ] {
            let text = format_grpc_timeout(timeout);
            assert!(text.len() <= 9, "{text}");
            let back = parse_grpc_timeout(&text).expect("parses");
            assert!(
                back <= timeout && timeout - back < Duration::from_secs(1),
                "{text}"
            );
        }
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("1234567890S"), None);
    }
}
