//! Live availability for any number of watchers, across replicas: every change is published on
//! the event's Redis channel by the script that made it; one pattern subscription per process
//! fans the deltas out to the local watchers of each event.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
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

/// Per-event broadcast channels fed by one Redis pattern subscription.
#[derive(Clone, Default)]
pub struct Fanout {
    channels: Arc<Mutex<HashMap<Uuid, broadcast::Sender<Signal>>>>,
}

impl Fanout {
    pub fn subscribe(&self, event: Uuid) -> broadcast::Receiver<Signal> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels
            .entry(event)
            .or_insert_with(|| broadcast::channel(1024).0)
            .subscribe()
    }

    fn is_watched(&self, event: Uuid) -> bool {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&event)
    }

    fn dispatch(&self, event: Uuid, signal: Signal) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = channels.get(&event)
            && sender.send(signal).is_err()
        {
            // Nobody listens any more.
            channels.remove(&event);
        }
    }

    fn resync_all(&self) {
        let channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        for sender in channels.values() {
            let _ = sender.send(Signal::Resync);
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
                Ok(delta) => self.dispatch(event, Signal::Delta(Arc::new(delta))),
                Err(error) => tracing::warn!(%error, "unreadable availability delta"),
            }
        }
        Ok(())
    }
}
