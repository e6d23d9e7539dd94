//! Live in-app notifications and chat messages across replicas. A notification (a chat
//! message) is stored with a PostgreSQL `NOTIFY` naming its user (its conversation), delivered
//! at commit to every replica's one listening connection, and passed to that replica's
//! watchers, who then read what they have not sent. A watcher that lags, or a listener that
//! reconnects, makes watchers read again, so nothing stored is missed; reading by id after the
//! last one sent means nothing is sent twice.

use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use ticketing_platform::{ApiResult, background::Stop};
use tokio::sync::{
    broadcast::{self, error::RecvError},
    mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use uuid::Uuid;

use crate::store::{CHAT_CHANNEL, NOTIFICATIONS_CHANNEL};

/// News for one user or conversation (ids never collide), or (nil) for all: read again.
#[derive(Clone)]
pub struct Live {
    news: broadcast::Sender<Uuid>,
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}

impl Live {
    pub fn new() -> Self {
        let (news, _) = broadcast::channel(1024);
        Self { news }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.news.subscribe()
    }

    /// Listens until stopped, reconnecting after a lost connection.
    pub async fn run(self, database_url: SecretString, mut stop: Stop) {
        while !stop.is_requested() {
            if let Err(error) = self.listen(&database_url, &mut stop).await {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "notification listener: reconnecting"
                );
            }
            // Whatever was stored while no one listened is read again by every watcher.
            let _ = self.news.send(Uuid::nil());
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = stop.requested() => {}
            }
        }
    }

    async fn listen(&self, database_url: &SecretString, stop: &mut Stop) -> anyhow::Result<()> {
        let mut conn = AsyncPgConnection::establish(database_url.expose_secret()).await?;
        for channel in [NOTIFICATIONS_CHANNEL, CHAT_CHANNEL] {
            diesel::sql_query(format!("LISTEN {channel}"))
                .execute(&mut conn)
                .await?;
        }
        let _ = self.news.send(Uuid::nil());
        let stream = conn.notifications_stream();
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                next = stream.next() => match next {
                    Some(Ok(note)) => {
                        if let Ok(about) = Uuid::parse_str(&note.payload) {
                            let _ = self.news.send(about);
                        }
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => anyhow::bail!("the listening connection closed"),
                },
                () = stop.requested() => return Ok(()),
            }
        }
    }
}

/// A stream of what `fetch` finds after the last item sent (starting after `start`), read again
/// whenever `news` names `topic` (or everyone); it ends when the client goes or a read fails.
pub fn follow<T, F, Fut>(
    mut news: broadcast::Receiver<Uuid>,
    topic: Uuid,
    start: Uuid,
    fetch: F,
) -> ReceiverStream<Result<T, Status>>
where
    T: Send + 'static,
    F: Fn(Uuid) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ApiResult<Vec<(Uuid, T)>>> + Send,
{
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut after = start;
        loop {
            let wake = tokio::select! {
                news = news.recv() => news,
                () = tx.closed() => return,
            };
            match wake {
                Ok(about) if about != topic && !about.is_nil() => continue,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
            match fetch(after).await {
                Ok(items) => {
                    for (id, item) in items {
                        after = id;
                        if tx.send(Ok(item)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
        }
    });
    ReceiverStream::new(rx)
}
