//! Live availability for any number of watchers, across replicas: every change is published on
//! the event's Redis channel by the script that made it; one pattern subscription per process
//! fans the deltas out to the local watchers of each event.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde::{Deserialize, Deserializer};
use tokio::sync::broadcast;
use uuid::Uuid;

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

/// Per-event broadcast channels fed by one Redis pattern subscription.
#[derive(Clone, Default)]
pub struct Fanout {
    channels: Arc<Mutex<HashMap<Uuid, Watched>>>,
}

impl Fanout {
    pub fn subscribe(&self, event: Uuid) -> broadcast::Receiver<Signal> {
        self.subscribe_after(event, 0).0
    }

    /// Subscribes, and when `after` is a sequence this replica still has every later delta of,
    /// returns those deltas to send first (instead of a snapshot). The receiver gets every
    /// delta after them: both are taken under one lock.
    pub fn subscribe_after(
        &self,
        event: Uuid,
        after: i64,
    ) -> (broadcast::Receiver<Signal>, Option<Vec<Arc<Delta>>>) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let watched = channels.entry(event).or_insert_with(|| Watched {
            sender: broadcast::channel(1024).0,
            recent: VecDeque::new(),
            idle_since: None,
        });
        watched.idle_since = None;
        let replay = (after > 0).then(|| watched.since(after)).flatten();
        (watched.sender.subscribe(), replay)
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

    /// Subscribes to `pattern` and dispatches until the process ends, reconnecting with backoff.
    pub async fn run(self, redis_url: String, pattern: String) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.listen(&redis_url, &pattern).await {
                Ok(()) => tracing::warn!("availability subscription ended; reconnecting"),
                Err(error) => tracing::warn!(%error, "availability subscription failed; reconnecting"),
            }
            // Deltas may have been missed: every watcher starts again from a snapshot.
            self.resync_all();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn listen(&self, redis_url: &str, pattern: &str) -> redis::RedisResult<()> {
        let client = redis::Client::open(redis_url)?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.psubscribe(pattern).await?;
        self.resync_all();
        let mut messages = pubsub.on_message();
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
