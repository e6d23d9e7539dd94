//! Commits a dead process left half-done (a hold still "committing" in Redis): finished from
//! the ledger when the sale is there, given back to its owner when it is not.

use std::time::Duration;

use chrono::Utc;
use ticketing_platform::ApiResult;
use uuid::Uuid;

use super::Inventory;
use crate::store;

impl Inventory {
    /// Settles holds left "committing" for longer than `older_than` by a commit whose process
    /// died between its steps: a sale the ledger has is finished in Redis, anything else goes
    /// back to its owner as an active hold (which expires on time like any other). A slow
    /// commit still running when this gives its hold back finds the hold active at its last
    /// step and rebuilds the event from the ledger, so Redis ends as PostgreSQL says either way.
    pub async fn recover_commits(&self, event: Uuid, older_than: Duration) -> ApiResult<usize> {
        let cutoff = Utc::now() - chrono::Duration::from_std(older_than).unwrap_or_default();
        let stuck: Vec<String> = {
            let mut conn = self.cache.pool.get().await?;
            redis::cmd("ZRANGEBYSCORE")
                .arg(format!("{}:committing", self.event_prefix(event)))
                .arg("-inf")
                .arg(cutoff.timestamp_millis())
                .arg("LIMIT")
                .arg(0)
                .arg(100)
                .query_async(&mut *conn)
                .await?
        };
        let mut settled = 0;
        for id in stuck {
            let Ok(hold) = Uuid::parse_str(&id) else {
                continue;
            };
            let order = {
                let mut conn = self.pool.get().await?;
                store::order_of_hold(&mut conn, hold).await?
            };
            let outcome = match order {
                Some(order) => {
                    self.invoke(
                        &self.scripts.finish_commit,
                        event,
                        &[id.clone(), order.to_string()],
                    )
                    .await?;
                    "finished"
                }
                None => {
                    self.invoke(&self.scripts.abort_commit, event, std::slice::from_ref(&id))
                        .await?;
                    "returned"
                }
            };
            tracing::warn!(%hold, %event, outcome, "a commit left half-done was settled");
            metrics::counter!("inventory_commits_recovered_total", "outcome" => outcome).increment(1);
            settled += 1;
        }
        Ok(settled)
    }

    /// [`Self::recover_commits`] for every event with holds.
    pub async fn recover_all(&self, older_than: Duration) -> ApiResult<usize> {
        let mut settled = 0;
        for (event, _) in self.active_events().await? {
            settled += self.recover_commits(event, older_than).await?;
        }
        Ok(settled)
    }
}
