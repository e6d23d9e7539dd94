//! Live in-app notifications across replicas: a notification is stored with a PostgreSQL
//! `NOTIFY` naming its user, delivered at commit to every replica's one listening connection,
//! and passed to that replica's watchers of the user, who then read what they have not sent.
//! A watcher that lags, or a listener that reconnects, makes watchers read again, so nothing
//! stored is missed; reading by id after the last one sent means nothing is sent twice.

use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use ticketing_platform::background::Stop;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::store::NOTIFICATIONS_CHANNEL;

/// News for one user, or (nil) for anyone: read again.
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
        diesel::sql_query(format!("LISTEN {NOTIFICATIONS_CHANNEL}"))
            .execute(&mut conn)
            .await?;
        let _ = self.news.send(Uuid::nil());
        let stream = conn.notifications_stream();
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                next = stream.next() => match next {
                    Some(Ok(note)) => {
                        if let Ok(user) = Uuid::parse_str(&note.payload) {
                            let _ = self.news.send(user);
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
