//! Sends due deliveries, each in a task of its own so that a slow endpoint holds only its own
//! deliveries (at most `max_in_flight_per_endpoint` of them), never the others. A delivery is
//! leased while it is sent: a sender that dies mid-send leaves it to another after the lease,
//! and the receiver sees the same `webhook-id` again (deliveries are at least once).

use std::{sync::Arc, time::Instant};

use chrono::Utc;
use ticketing_platform::{background::Stop, db::PgPool};
use tokio::{
    sync::{Notify, Semaphore},
    task::JoinSet,
};

use super::{DeliveryStatus, next_wait, signature, target};
use crate::{
    config::WebhooksConfig,
    store::{self, ClaimedDelivery, NewAttempt},
};

/// How much of an answer the log keeps.
const LOGGED_BODY: usize = 1024;

/// How often the queue's gauges are read.
const GAUGES_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

pub struct Deliverer {
    pool: PgPool,
    client: reqwest::Client,
    config: WebhooksConfig,
    wake: Arc<Notify>,
    permits: Arc<Semaphore>,
}

/// How one attempt ended.
struct Answer {
    status_code: Option<u16>,
    body: String,
    error: String,
}

impl Deliverer {
    pub fn new(pool: PgPool, config: WebhooksConfig, wake: Arc<Notify>) -> anyhow::Result<Self> {
        let client = target::client(
            config.allow_private_targets,
            config.timeout,
            concat!("ticketing-webhooks/", env!("CARGO_PKG_VERSION")),
        )?;
        Ok(Self {
            pool,
            client,
            permits: Arc::new(Semaphore::new(config.concurrency)),
            config,
            wake,
        })
    }

    pub async fn run(self, mut stop: Stop) {
        let this = Arc::new(self);
        let mut sending = JoinSet::new();
        let mut gauges_at = Instant::now() - GAUGES_EVERY;
        while !stop.is_requested() {
            let free = this.permits.available_permits();
            let mut full_round = false;
            if free > 0 {
                match this.claim(free).await {
                    Ok(claimed) => {
                        full_round = claimed.len() == free;
                        for delivery in claimed {
                            let Ok(permit) = this.permits.clone().acquire_owned().await else {
                                break;
                            };
                            let this = this.clone();
                            sending.spawn(async move {
                                this.deliver(delivery).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(error) => tracing::warn!(
                        error = format!("{error:#}"),
                        "webhooks: claiming deliveries failed"
                    ),
                }
            }
            // The queue's depth counts its whole backlog: once a second, not every round.
            if gauges_at.elapsed() >= GAUGES_EVERY {
                refresh_gauges(&this.pool).await;
                gauges_at = Instant::now();
            }
            if full_round {
                continue;
            }
            tokio::select! {
                () = this.wake.notified() => {}
                () = tokio::time::sleep(this.config.poll_interval) => {}
                // A delivery done frees room for its endpoint's next; those done meanwhile are
                // taken along, so one claim serves them all.
                Some(_) = sending.join_next(), if !sending.is_empty() => {
                    while sending.try_join_next().is_some() {}
                }
                () = stop.requested() => {}
            }
        }
        // What is in flight ends within the timeout; what does not is sent again after its
        // lease by whichever sender runs then.
        let _ = tokio::time::timeout(this.config.timeout, async {
            while sending.join_next().await.is_some() {}
        })
        .await;
    }

    async fn claim(&self, limit: usize) -> anyhow::Result<Vec<ClaimedDelivery>> {
        let mut conn = self.pool.get().await?;
        Ok(store::claim_due_deliveries(
            &mut conn,
            i64::try_from(limit).unwrap_or(i64::MAX),
            self.config.max_in_flight_per_endpoint,
            self.config.lease,
        )
        .await?)
    }

    async fn post(&self, claimed: &ClaimedDelivery) -> Answer {
        let ClaimedDelivery { delivery, endpoint } = claimed;
        let failed = |error: String| Answer {
            status_code: None,
            body: String::new(),
            error,
        };
        // Checked again: the URL may have been stored when the operator allowed more.
        let url = match target::check_url(&endpoint.url, self.config.allow_private_targets) {
            Ok(url) => url,
            Err(why) => return failed(format!("the URL {why}")),
        };
        let id = format!("msg_{}", delivery.id.simple());
        let timestamp = Utc::now().timestamp();
        let signature = match signature::sign(
            &endpoint.signing_secrets(Utc::now()),
            &id,
            timestamp,
            delivery.payload.as_bytes(),
        ) {
            Ok(signature) => signature,
            Err(e) => return failed(e),
        };
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.payload.clone())
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => return failed(describe(&e, self.config.timeout)),
        };
        let status = response.status().as_u16();
        let mut body = Vec::new();
        // The first KiB is logged; the rest is not read.
        while body.len() < LOGGED_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        body.truncate(LOGGED_BODY);
        Answer {
            status_code: Some(status),
            body: String::from_utf8_lossy(&body).into_owned(),
            error: String::new(),
        }
    }

    async fn deliver(&self, claimed: ClaimedDelivery) {
        let started = Instant::now();
        let answer = self.post(&claimed).await;
        let duration = started.elapsed();
        let delivery = &claimed.delivery;
        let (status, gone, outcome) = match answer.status_code {
            Some(code) if (200..300).contains(&code) => (DeliveryStatus::Succeeded, None, "succeeded"),
            Some(410) => (
                DeliveryStatus::Failed,
                Some(format!(
                    "the endpoint answered 410 Gone at {}",
                    Utc::now().to_rfc3339()
                )),
                "gone",
            ),
            _ => match next_wait(&self.config.retry_schedule, delivery.attempts) {
                Some(_) => (DeliveryStatus::Pending, None, "retrying"),
                None => (DeliveryStatus::Failed, None, "failed"),
            },
        };
        metrics::counter!("webhook_deliveries_total", "outcome" => outcome).increment(1);
        metrics::histogram!("webhook_delivery_duration_seconds").record(duration.as_secs_f64());
        if status != DeliveryStatus::Succeeded {
            tracing::info!(
                delivery = %delivery.id,
                endpoint = %delivery.endpoint_id,
                attempt = delivery.attempts,
                status = answer.status_code,
                error = answer.error,
                outcome,
                "webhook not delivered"
            );
        }
        let wait = next_wait(&self.config.retry_schedule, delivery.attempts).unwrap_or_default();
        let retry_at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        let attempt = NewAttempt {
            status_code: answer.status_code.map(i32::from),
            duration_ms: i32::try_from(duration.as_millis()).unwrap_or(i32::MAX),
            response_body: &answer.body,
            error: &answer.error,
        };
        let recorded = async {
            let mut conn = self.pool.get().await?;
            store::record_delivery_attempt(&mut conn, delivery, &attempt, status, retry_at, gone.as_deref())
                .await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = recorded {
            // The lease runs out and the delivery is sent again, with the same webhook-id.
            tracing::warn!(delivery = %delivery.id, error = format!("{e:#}"), "recording a webhook attempt failed");
        }
    }
}

/// A failed request in a sentence, with its causes (reqwest's own text names only the URL).
fn describe(error: &reqwest::Error, timeout: std::time::Duration) -> String {
    if error.is_timeout() {
        return format!("no answer within {} s", timeout.as_secs_f64());
    }
    let mut text = if error.is_connect() {
        "could not connect".to_string()
    } else {
        "the request failed".to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn refresh_gauges(pool: &PgPool) {
    if let Ok(mut conn) = pool.get().await
        && let Ok((depth, oldest)) = store::delivery_queue(&mut conn).await
    {
        metrics::gauge!("webhook_queue_depth").set(depth as f64);
        let age = oldest.map_or(0.0, |at| (Utc::now() - at).num_milliseconds() as f64 / 1000.0);
        metrics::gauge!("webhook_oldest_pending_seconds").set(age.max(0.0));
    }
}
