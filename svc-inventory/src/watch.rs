//! Live availability for any number of watchers, across replicas: every change is published on
//! the event's Redis channel by the script that made it; one subscriber connection per process
//! listens to the channels of the events watched here and fans their deltas out to the local
//! watchers. Events nobody watches are not subscribed to, so Redis sends their deltas nowhere
//! (in a flash sale, the hot event's holds cost no fan-out until someone watches it).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use futures::StreamExt;
use redis::aio::PubSubSink;
use serde::{Deserialize, Deserializer};
use ticketing_platform::time::to_timestamp;
use ticketing_proto::ticketing::inventory::v1 as pb;
use tokio::sync::{OnceCell, broadcast, mpsc};
use tonic::Status;
use uuid::Uuid;

use crate::{
    api::{availability_proto, seat_status},
    inventory::Inventory,
};

/// One change, as the Lua scripts publish it.
#[derive(Debug, Clone, Deserialize)]
pub struct Delta {
    pub seq: i64,
    pub cause: String,
    #[serde(default, deserialize_with = "list")]
    pub seats: Vec<SeatChange>,
    #[serde(default, deserialize_with = "list")]
    pub tiers: Vec<TierChange>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SeatChange {
    pub id: String,
    pub status: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TierChange {
    pub tier: String,
    pub total: f64,
    pub held: f64,
    pub sold: f64,
}

/// Lua's cjson writes an empty list as `{}`.
fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrEmpty<T> {
        List(Vec<T>),
        Empty(#[allow(dead_code)] serde::de::IgnoredAny),
    }
    Ok(match ListOrEmpty::deserialize(d)? {
        ListOrEmpty::List(v) => v,
        ListOrEmpty::Empty(_) => Vec::new(),
    })
}

/// What a watcher receives: a delta, or "resynchronise" after the subscription was interrupted.
#[derive(Debug, Clone)]
pub enum Signal {
    Delta(Arc<Delta>),
    Resync,
}

/// Deltas kept per watched event so a watcher that reconnects (SSE `Last-Event-ID`) resumes
/// where it stopped instead of downloading the whole seat map again.
const RECENT_DELTAS: usize = 512;
/// How long an event stays subscribed, with its recent deltas, after its last watcher left: long
/// enough for a browser to reconnect.
const LINGER: Duration = Duration::from_secs(30);

struct Watched {
    sender: broadcast::Sender<Signal>,
    /// Set once Redis has confirmed the subscription to the event's channel.
    subscribed: Arc<OnceCell<()>>,
    /// The latest deltas, with consecutive sequence numbers.
    recent: VecDeque<Arc<Delta>>,
    /// Since when nobody has been listening.
    idle_since: Option<Instant>,
}

impl Watched {
    fn remember(&mut self, delta: &Arc<Delta>) {
        if self.recent.back().is_some_and(|last| last.seq + 1 != delta.seq) {
            // A gap: what is kept no longer leads up to the present.
            self.recent.clear();
        }
        if self.recent.len() == RECENT_DELTAS {
            self.recent.pop_front();
        }
        self.recent.push_back(delta.clone());
    }

    /// The deltas after `after`, when they are all still here.
    fn since(&self, after: i64) -> Option<Vec<Arc<Delta>>> {
        let (first, last) = (self.recent.front()?, self.recent.back()?);
        if after < first.seq - 1 || after > last.seq {
            return None;
        }
        Some(self.recent.iter().filter(|d| d.seq > after).cloned().collect())
    }
}

/// Per-event broadcast channels fed by one Redis subscriber connection.
#[derive(Clone)]
pub struct Fanout {
    channels: Arc<Mutex<HashMap<Uuid, Watched>>>,
    /// The subscriber connection's command half while connected. Its lock also orders
    /// subscribing against unsubscribing, so an event watched again right after it was
    /// dropped is never left unsubscribed.
    sink: Arc<tokio::sync::Mutex<Option<PubSubSink>>>,
    channel_of: Arc<dyn Fn(Uuid) -> String + Send + Sync>,
}

impl Fanout {
    /// `channel_of` names an event's Redis channel.
    pub fn new(channel_of: impl Fn(Uuid) -> String + Send + Sync + 'static) -> Self {
        Self {
            channels: Arc::default(),
            sink: Arc::default(),
            channel_of: Arc::new(channel_of),
        }
    }

    /// Subscribes, and when `after` is a sequence this replica still has every later delta of,
    /// returns those deltas to send first (instead of a snapshot). The receiver gets every
    /// delta after them: both are taken under one lock. Returns once Redis delivers the event's
    /// deltas here (or, while Redis is unreachable, at once: the watcher is told to
    /// resynchronise when the connection is back).
    pub async fn subscribe_after(
        &self,
        event: Uuid,
        after: i64,
    ) -> (broadcast::Receiver<Signal>, Option<Vec<Arc<Delta>>>) {
        let (receiver, replay, subscribed) = {
            let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
            let watched = channels.entry(event).or_insert_with(|| Watched {
                sender: broadcast::channel(1024).0,
                subscribed: Arc::default(),
                recent: VecDeque::new(),
                idle_since: None,
            });
            watched.idle_since = None;
            let replay = (after > 0).then(|| watched.since(after)).flatten();
            (watched.sender.subscribe(), replay, watched.subscribed.clone())
        };
        let channel = (self.channel_of)(event);
        let confirmed = subscribed
            .get_or_try_init(|| async {
                match self.sink.lock().await.as_mut() {
                    Some(sink) => sink.subscribe(&channel).await.map_err(|e| e.to_string()),
                    None => Err("not connected".to_string()),
                }
            })
            .await;
        if let Err(error) = confirmed {
            tracing::warn!(%error, %event, "availability subscription pending until redis is back");
        }
        (receiver, replay)
    }

    /// Drops the subscription of an event nobody watches any more, unless it was watched again.
    async fn unsubscribe(&self, event: Uuid) {
        let mut sink = self.sink.lock().await;
        if self.is_watched(event) {
            return;
        }
        if let Some(sink) = sink.as_mut()
            && let Err(error) = sink.unsubscribe((self.channel_of)(event)).await
        {
            tracing::debug!(%error, %event, "unsubscribing an unwatched event failed");
        }
    }

    fn is_watched(&self, event: Uuid) -> bool {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&event)
    }

    fn dispatch(&self, event: Uuid, delta: Delta) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let Some(watched) = channels.get_mut(&event) else {
            return;
        };
        let delta = Arc::new(delta);
        if delta.cause == "RESYNC" {
            watched.recent.clear();
        } else {
            watched.remember(&delta);
        }
        if watched.sender.send(Signal::Delta(delta)).is_err() {
            let idle_since = *watched.idle_since.get_or_insert_with(Instant::now);
            if idle_since.elapsed() > LINGER {
                channels.remove(&event);
                let fanout = self.clone();
                tokio::spawn(async move { fanout.unsubscribe(event).await });
            }
        }
    }

    fn resync_all(&self) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        for watched in channels.values_mut() {
            watched.recent.clear();
            let _ = watched.sender.send(Signal::Resync);
        }
    }

    /// Listens and dispatches until the process ends, reconnecting with backoff.
    pub async fn run(self, redis_url: String) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.listen(&redis_url).await {
                Ok(()) => tracing::warn!("availability subscription ended; reconnecting"),
                Err(error) => tracing::warn!(%error, "availability subscription failed; reconnecting"),
            }
            *self.sink.lock().await = None;
            // Deltas may have been missed: every watcher starts again from a snapshot.
            self.resync_all();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn listen(&self, redis_url: &str) -> redis::RedisResult<()> {
        let client = redis::Client::open(redis_url)?;
        let (mut sink, mut messages) = client.get_async_pubsub().await?.split();
        {
            // Under the sink's lock, so no watcher subscribes on the old connection meanwhile.
            let mut slot = self.sink.lock().await;
            let watched: Vec<Uuid> = self
                .channels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .copied()
                .collect();
            for event in watched {
                sink.subscribe((self.channel_of)(event)).await?;
            }
            *slot = Some(sink);
        }
        self.resync_all();
        while let Some(message) = messages.next().await {
            let channel = message.get_channel_name();
            let Some(event) = channel
                .rfind('{')
                .zip(channel.rfind('}'))
                .and_then(|(s, e)| channel.get(s + 1..e))
                .and_then(|id| Uuid::parse_str(id).ok())
            else {
                continue;
            };
            if !self.is_watched(event) {
                continue;
            }
            let payload: String = match message.get_payload() {
                Ok(p) => p,
                Err(_) => continue,
            };
            match serde_json::from_str::<Delta>(&payload) {
                Ok(delta) => self.dispatch(event, delta),
                Err(error) => tracing::warn!(%error, "unreadable availability delta"),
            }
        }
        Ok(())
    }
}

/// Feeds one watcher: a snapshot, then deltas in sequence; any gap, lag or reconnect sends a
/// fresh snapshot instead, so a watcher never silently misses a change.
pub(crate) async fn feed(
    inventory: Inventory,
    mut signals: broadcast::Receiver<Signal>,
    event: Uuid,
    tx: mpsc::Sender<Result<pb::AvailabilityUpdate, Status>>,
    heartbeat: Duration,
    resume: Option<(i64, Vec<Arc<Delta>>)>,
) {
    let snapshot = |inventory: Inventory| async move {
        inventory.snapshot(event, true).await.map(|snap| {
            (
                snap.sequence,
                pb::AvailabilityUpdate {
                    sequence: snap.sequence,
                    update: Some(pb::availability_update::Update::Snapshot(availability_proto(
                        event, &snap,
                    ))),
                },
            )
        })
    };
    let mut last = match resume {
        // A resumed watcher gets what it missed instead of a snapshot.
        Some((after, missed)) => {
            let mut last = after;
            for delta in missed {
                last = delta.seq;
                if tx.send(Ok(delta_proto(&delta))).await.is_err() {
                    return;
                }
            }
            last
        }
        None => match snapshot(inventory.clone()).await {
            Ok((seq, update)) => {
                if tx.send(Ok(update)).await.is_err() {
                    return;
                }
                seq
            }
            Err(error) => {
                let _ = tx.send(Err(error.into())).await;
                return;
            }
        },
    };
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.reset();
    loop {
        let resync = tokio::select! {
            () = tx.closed() => return,
            _ = ticker.tick() => {
                let beat = pb::AvailabilityUpdate {
                    sequence: last,
                    update: Some(pb::availability_update::Update::Heartbeat(pb::Heartbeat { at: Some(to_timestamp(Utc::now())) })),
                };
                if tx.send(Ok(beat)).await.is_err() { return; }
                false
            }
            signal = signals.recv() => match signal {
                Ok(Signal::Delta(delta)) if delta.cause == "RESYNC" => true,
                Ok(Signal::Delta(delta)) if delta.seq <= last => false,
                Ok(Signal::Delta(delta)) if delta.seq == last + 1 => {
                    last = delta.seq;
                    ticker.reset();
                    if tx.send(Ok(delta_proto(&delta))).await.is_err() { return; }
                    false
                }
                Ok(Signal::Delta(_)) | Ok(Signal::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if resync {
            match snapshot(inventory.clone()).await {
                Ok((seq, update)) => {
                    last = seq;
                    if tx.send(Ok(update)).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    let _ = tx.send(Err(error.into())).await;
                    return;
                }
            }
        }
    }
}

fn delta_proto(delta: &Delta) -> pb::AvailabilityUpdate {
    use pb::availability_delta::Cause;
    let cause = match delta.cause.as_str() {
        "HELD" => Cause::Held,
        "RELEASED" => Cause::Released,
        "EXPIRED" => Cause::Expired,
        "SOLD" => Cause::Sold,
        "RETURNED" => Cause::Returned,
        _ => Cause::Unspecified,
    };
    let count = |x: f64| x.round() as i32;
    pb::AvailabilityUpdate {
        sequence: delta.seq,
        update: Some(pb::availability_update::Update::Delta(pb::AvailabilityDelta {
            cause: cause as i32,
            seats: delta
                .seats
                .iter()
                .map(|s| pb::SeatState {
                    seat_id: s.id.clone(),
                    status: seat_status(&s.status),
                })
                .collect(),
            tiers: delta
                .tiers
                .iter()
                .map(|t| pb::TierAvailability {
                    tier_id: t.tier.clone(),
                    total: count(t.total),
                    held: count(t.held),
                    sold: count(t.sold),
                    free: count((t.total - t.held - t.sold).max(0.0)),
                })
                .collect(),
        })),
    }
}
