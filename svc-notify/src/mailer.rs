//! E-mail: composing a rendered message into the bytes that will be sent, and the sender that
//! works through the `mails` table with retries. A mail is claimed with a lease (its
//! `next_attempt_at` moved past the send), so a sender that dies mid-send leaves it to another
//! after the lease, and two replicas never take the same row at once.

use std::sync::Arc;

use anyhow::Context;
use futures::StreamExt;
use lettre::{
    Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor,
    address::Envelope,
    message::{
        Attachment, Mailbox, Message, MultiPart, SinglePart,
        header::{ContentType, HeaderName, HeaderValue},
    },
};
use secrecy::ExposeSecret;
use ticketing_platform::{background::Stop, db::PgPool};
use tokio::sync::Notify;

use crate::{
    config::MailConfig,
    domain::{self, MailStatus},
    store::{self, ClaimedMail},
    templates::Rendered,
};

/// A QR code to show inline: its Content-ID (without brackets) and PNG bytes.
pub struct Inline {
    pub content_id: String,
    pub png: Vec<u8>,
}

/// The whole RFC 5322 message: text and HTML alternatives, the HTML with its inline images;
/// with `unsubscribe`, the one-click unsubscribe headers of RFC 8058.
pub fn compose(
    from: &Mailbox,
    to: &str,
    message_id: &str,
    rendered: &Rendered,
    inline: Vec<Inline>,
    unsubscribe: Option<&str>,
) -> anyhow::Result<Vec<u8>> {
    let to: Mailbox = to.parse().with_context(|| format!("recipient {to:?}"))?;
    let mut related = MultiPart::related().singlepart(SinglePart::html(rendered.html.clone()));
    for image in inline {
        related = related.singlepart(
            Attachment::new_inline(image.content_id).body(image.png, ContentType::parse("image/png")?),
        );
    }
    let mut builder = Message::builder();
    if let Some(link) = unsubscribe {
        builder = builder
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                format!("<{link}>"),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".into(),
            ));
    }
    let message = builder
        .from(from.clone())
        .to(to)
        .subject(rendered.subject.clone())
        .message_id(Some(message_id.to_string()))
        .date_now()
        .multipart(
            MultiPart::alternative()
                .singlepart(SinglePart::plain(rendered.text.clone()))
                .multipart(related),
        )?;
    Ok(message.formatted())
}

/// Sends what is due, as long as it runs.
pub struct Sender {
    pool: PgPool,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Address,
    config: MailConfig,
    wake: Arc<Notify>,
}

impl Sender {
    pub fn new(pool: PgPool, config: MailConfig, wake: Arc<Notify>) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(config.smtp_url.expose_secret())
            .context("mail.smtp_url")?
            .timeout(Some(config.timeout))
            .build();
        let from = config.sender()?.email;
        Ok(Self {
            pool,
            transport,
            from,
            config,
            wake,
        })
    }

    pub async fn run(self, mut stop: Stop) {
        while !stop.is_requested() {
            let sent = match self.round().await {
                Ok(n) => n,
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "mail sender: round failed");
                    0
                }
            };
            if sent > 0 {
                continue;
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.config.poll_interval) => {}
                () = stop.requested() => {}
            }
        }
    }

    /// Claims one batch of due mails and sends them, a few at a time; how many it took.
    pub async fn round(&self) -> anyhow::Result<usize> {
        let claimed = {
            let mut conn = self.pool.get().await?;
            store::claim_due_mails(&mut conn, self.config.batch, self.config.lease).await?
        };
        let taken = claimed.len();
        futures::stream::iter(claimed)
            .for_each_concurrent(self.config.concurrency, |mail| self.send(mail))
            .await;
        refresh_gauges(&self.pool).await;
        Ok(taken)
    }

    async fn send(&self, mail: ClaimedMail) {
        let outcome = match mail.recipient.parse::<Address>() {
            Ok(to) => match Envelope::new(Some(self.from.clone()), vec![to]) {
                Ok(envelope) => self
                    .transport
                    .send_raw(&envelope, &mail.raw)
                    .await
                    .map(drop)
                    .map_err(|e| (e.is_permanent(), format!("{e}"))),
                Err(e) => Err((true, format!("envelope: {e}"))),
            },
            Err(e) => Err((true, format!("recipient address: {e}"))),
        };
        let (status, error) = match &outcome {
            Ok(()) => (MailStatus::Sent, None),
            Err((permanent, error)) => {
                let status = if *permanent || mail.attempts >= self.config.max_attempts {
                    MailStatus::Failed
                } else {
                    MailStatus::Pending
                };
                (status, Some(error.as_str()))
            }
        };
        let outcome_label = match status {
            MailStatus::Sent => "sent",
            MailStatus::Failed => "failed",
            MailStatus::Pending => "retrying",
        };
        metrics::counter!("notifications_sent_total", "channel" => "email", "kind" => mail.kind.as_str(), "outcome" => outcome_label)
            .increment(1);
        if let Some(error) = error {
            tracing::warn!(mail = %mail.id, attempt = mail.attempts, error, "mail not sent");
        }
        let retry_at = chrono::Utc::now()
            + chrono::Duration::from_std(domain::retry_after(mail.attempts)).unwrap_or_default();
        let recorded = async {
            let mut conn = self.pool.get().await?;
            store::record_attempt(&mut conn, mail.id, status, error, retry_at).await
        }
        .await;
        if let Err(e) = recorded {
            // The lease runs out and the mail is sent again, with the same Message-ID.
            tracing::warn!(mail = %mail.id, error = format!("{e:#}"), "recording a mail attempt failed");
        }
    }
}

async fn refresh_gauges(pool: &PgPool) {
    if let Ok(mut conn) = pool.get().await
        && let Ok((depth, oldest)) = store::mail_queue(&mut conn).await
    {
        metrics::gauge!("notify_mail_queue_depth").set(depth as f64);
        let age = oldest.map_or(0.0, |at| {
            (chrono::Utc::now() - at).num_milliseconds() as f64 / 1000.0
        });
        metrics::gauge!("notify_mail_oldest_unsent_seconds").set(age.max(0.0));
    }
}
