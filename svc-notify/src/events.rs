//! What notify hears on the event backbone, and what it tells whom (buyers by mail and in-app,
//! partners by webhook). It publishes nothing.
//!
//! Each event is handled in one transaction with its inbox row: the read models move, and the
//! messages it causes are rendered and queued there (a mail row, an in-app row). A message's
//! key is made of the fact it is about (an order, a refund, an event), its kind and its
//! recipient, so an event delivered twice queues nothing the second time.

use std::sync::Arc;

use anyhow::Context;
use diesel_async::AsyncPgConnection;
use lettre::message::Mailbox;
use ticketing_platform::{
    messaging::{Envelope, Handler},
    qr,
    time::from_timestamp,
};
use ticketing_proto::ticketing::{common::v1::Money, events::v1 as events};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    domain::{self, Channel, Kind},
    mailer::{self, Inline},
    reminders,
    store::{self, Holding, KnownEvent},
    templates::{EventFacts, Facts, OfferFacts, OrderFacts, Templates, TicketFacts, money},
    unsubscribe::Unsubscribe,
    webhooks,
};

ticketing_platform::event_set! {
    /// The events notify consumes.
    pub enum Heard {
        /// A welcome; and where to reach the user.
        UserRegistered(events::UserRegistered),
        /// The event's title and start, to name it in messages.
        EventPublished(events::EventPublished),
        /// Holders hear of a new start time.
        EventUpdated(events::EventUpdated),
        /// Every holder of a valid ticket hears, once.
        EventCancelled(events::EventCancelled),
        /// Who bought, so payment.failed can be addressed.
        OrderCreated(events::OrderCreated),
        /// The confirmation with every ticket and its QR code.
        OrderPaid(events::OrderPaid),
        OrderExpired(events::OrderExpired),
        OrderCancelled(events::OrderCancelled),
        /// A refund's message; the refunded tickets' holders hear no more of the event.
        OrderRefunded(events::OrderRefunded),
        PaymentFailed(events::PaymentFailed),
        /// For partners' webhooks only.
        TicketCheckedIn(events::TicketCheckedIn),
        /// The first in line hears that places are held for them, and until when; partners
        /// hear nothing of it (a buyer's own offer).
        WaitlistOfferMade(events::WaitlistOfferMade),
    }
}

/// Notify's consumer of [`Heard`], and what renders and queues every message.
#[derive(Clone)]
pub struct Notifier {
    pub templates: Arc<Templates>,
    pub from: Mailbox,
    /// The right-hand side of Message-IDs.
    pub message_id_domain: String,
    /// Wakes the mail sender.
    pub wake: Arc<Notify>,
    /// How long before an event's start its holders are reminded.
    pub reminder_offsets: Vec<std::time::Duration>,
    pub unsubscribe: Unsubscribe,
    /// Wakes the webhook sender.
    pub webhook_wake: Arc<Notify>,
}

/// One message to send: about `fact`, of `kind`, to a user (in-app) and an address (e-mail).
pub struct Message<'a> {
    pub kind: Kind,
    pub fact: &'a str,
    pub user: Option<Uuid>,
    pub email: &'a str,
    pub facts: Facts,
    /// A portal path.
    pub link: String,
    pub inline: Vec<Inline>,
}

fn id(field: &str, raw: &str) -> anyhow::Result<Uuid> {
    Uuid::parse_str(raw).with_context(|| format!("{field} {raw:?}"))
}

fn amount(m: Option<&Money>) -> String {
    m.map(|m| money(m.amount_minor, &m.currency)).unwrap_or_default()
}

fn event_facts(event: Option<&KnownEvent>) -> EventFacts {
    match event {
        Some(e) => EventFacts {
            title: e.title.clone(),
            starts_at: Some(e.starts_at),
        },
        // An event published before notify listened: the message still goes, unnamed.
        None => EventFacts {
            title: "your event".into(),
            starts_at: None,
        },
    }
}

/// The order a message is about, as its event names it.
struct AboutOrder<'a> {
    order_id: &'a str,
    event_id: &'a str,
    buyer_id: &'a str,
    /// Empty when the event carries none.
    buyer_email: &'a str,
}

/// Where to mail `user`: the address an order names (remembered for later), else the one
/// they registered with.
async fn address(conn: &mut AsyncPgConnection, user: Uuid, named: &str) -> anyhow::Result<String> {
    if !named.is_empty() {
        store::remember_recipient(conn, user, named, None).await?;
        return Ok(named.to_string());
    }
    Ok(store::recipient(conn, user)
        .await?
        .map(|r| r.email)
        .unwrap_or_default())
}

impl Notifier {
    /// Renders `message` in the recipient's language and queues it by every channel their
    /// choices allow, once per fact, kind and recipient.
    pub async fn send(&self, conn: &mut AsyncPgConnection, mut message: Message<'_>) -> anyhow::Result<()> {
        let choices = match message.user {
            Some(user) => store::choices(conn, user).await?,
            None => Default::default(),
        };
        if message.facts.name.is_empty() {
            message.facts.name = match message.user {
                Some(user) => store::recipient(conn, user)
                    .await?
                    .map(|r| r.display_name)
                    .unwrap_or_default(),
                None => String::new(),
            };
        }
        if message.facts.name.is_empty() {
            message.facts.name = message.email.split('@').next().unwrap_or_default().to_string();
        }
        // What can be switched off carries the link that does it.
        let unsubscribe = match message.user {
            Some(user) if !message.kind.is_transactional() => Some(self.templates.portal(&format!(
                "/v1/notifications:unsubscribe?token={}",
                self.unsubscribe.token(user, message.kind)
            ))),
            _ => None,
        };
        let rendered = self.templates.render(
            message.kind,
            choices.locale,
            &message.facts,
            &message.link,
            unsubscribe.as_deref().unwrap_or_default(),
        )?;
        if !message.email.is_empty() && choices.allow(message.kind, Channel::Email) {
            let key = domain::dedupe_key(message.kind, message.fact, message.email);
            if !store::mail_exists(conn, &key).await? {
                let message_id = domain::message_id(&key, &self.message_id_domain);
                let raw = mailer::compose(
                    &self.from,
                    message.email,
                    &message_id,
                    &rendered,
                    message.inline,
                    unsubscribe.as_deref(),
                )?;
                store::queue_mail(
                    conn,
                    &store::NewMail {
                        dedupe_key: &key,
                        message_id: &message_id,
                        user_id: message.user,
                        kind: message.kind,
                        recipient: message.email,
                        subject: &rendered.subject,
                        raw: &raw,
                    },
                )
                .await?;
                self.wake.notify_one();
            }
        }
        if let Some(user) = message.user
            && choices.allow(message.kind, Channel::InApp)
        {
            let key = domain::dedupe_key(message.kind, message.fact, &user.to_string());
            let body = rendered
                .text
                .split("\n\n")
                .nth(1)
                .unwrap_or(&rendered.text)
                .trim();
            if store::add_notification(
                conn,
                &key,
                user,
                message.kind,
                &rendered.subject,
                body,
                &message.link,
            )
            .await?
            {
                metrics::counter!("notifications_sent_total", "channel" => "in_app", "kind" => message.kind.as_str(), "outcome" => "sent")
                    .increment(1);
            }
        }
        Ok(())
    }

    /// `kind` about `event` to everyone holding a valid ticket of it.
    async fn tell_holders(
        &self,
        conn: &mut AsyncPgConnection,
        kind: Kind,
        fact: &str,
        event: &KnownEvent,
        reason: &str,
    ) -> anyhow::Result<()> {
        let holders = store::holders_of(conn, event.id).await?;
        for recipient in store::recipients_of(conn, &holders).await? {
            self.send(
                conn,
                Message {
                    kind,
                    fact,
                    user: Some(recipient.user_id),
                    email: &recipient.email,
                    facts: Facts {
                        name: recipient.display_name.clone(),
                        event: event_facts(Some(event)),
                        reason: reason.to_string(),
                        ..Default::default()
                    },
                    link: "/tickets".into(),
                    inline: Vec::new(),
                },
            )
            .await?;
        }
        Ok(())
    }

    async fn order_message(
        &self,
        conn: &mut AsyncPgConnection,
        kind: Kind,
        fact: &str,
        about: AboutOrder<'_>,
        facts: Facts,
    ) -> anyhow::Result<()> {
        let AboutOrder {
            order_id,
            event_id,
            buyer_id,
            buyer_email,
        } = about;
        let buyer = id("buyer_id", buyer_id)?;
        let email = address(conn, buyer, buyer_email).await?;
        let event = store::event(conn, id("event_id", event_id)?).await?;
        self.send(
            conn,
            Message {
                kind,
                fact,
                user: Some(buyer),
                email: &email,
                facts: Facts {
                    event: event_facts(event.as_ref()),
                    order: OrderFacts {
                        id: order_id.to_string(),
                        ..facts.order.clone()
                    },
                    ..facts
                },
                link: format!("/orders/{order_id}"),
                inline: Vec::new(),
            },
        )
        .await
    }

    async fn order_paid(&self, conn: &mut AsyncPgConnection, paid: &events::OrderPaid) -> anyhow::Result<()> {
        let (order, event_id, buyer) = (
            id("order_id", &paid.order_id)?,
            id("event_id", &paid.event_id)?,
            id("buyer_id", &paid.buyer_id)?,
        );
        let email = address(conn, buyer, &paid.buyer_email).await?;
        let mut held = Vec::new();
        let mut tickets = Vec::new();
        let mut inline = Vec::new();
        for (n, line) in paid.lines.iter().enumerate() {
            if line.ticket_id.is_empty() {
                continue;
            }
            held.push(Holding {
                ticket_id: id("ticket_id", &line.ticket_id)?,
                order_id: order,
                event_id,
                holder_id: buyer,
            });
            let content_id = format!("ticket-{}@{}", n + 1, self.message_id_domain);
            if !line.ticket_secret.is_empty() {
                inline.push(Inline {
                    content_id: content_id.clone(),
                    png: qr::png(&line.ticket_secret).map_err(|e| anyhow::anyhow!("QR code: {e}"))?,
                });
            }
            tickets.push(TicketFacts {
                tier: line.tier_name.clone(),
                seat: line.seat_id.clone(),
                secret: line.ticket_secret.clone(),
                content_id,
            });
        }
        store::record_holdings(conn, &held).await?;
        let event = store::event(conn, event_id).await?;
        if let Some(event) = &event
            && !held.is_empty()
        {
            reminders::schedule(conn, event, buyer, &self.reminder_offsets).await?;
        }
        self.send(
            conn,
            Message {
                kind: Kind::OrderConfirmed,
                fact: &paid.order_id,
                user: Some(buyer),
                email: &email,
                facts: Facts {
                    event: event_facts(event.as_ref()),
                    order: OrderFacts {
                        id: paid.order_id.clone(),
                        total: amount(paid.total.as_ref()),
                    },
                    tickets,
                    ..Default::default()
                },
                link: format!("/orders/{}", paid.order_id),
                inline,
            },
        )
        .await
    }

    /// Places came back for a waiting buyer and are held for them: one message per offer.
    async fn waitlist_offer(
        &self,
        conn: &mut AsyncPgConnection,
        offer: &events::WaitlistOfferMade,
    ) -> anyhow::Result<()> {
        let (hold, buyer) = (id("hold_id", &offer.hold_id)?, id("buyer_id", &offer.buyer_id)?);
        // Inventory knows no address: the one the buyer registered with.
        let email = address(conn, buyer, "").await?;
        let event = store::event(conn, id("event_id", &offer.event_id)?).await?;
        let expires_at = offer
            .expires_at
            .as_ref()
            .map(|at| from_timestamp("expires_at", at))
            .transpose()?;
        // The hold is the offer's own (one per waiting-list entry), so a redelivered or copied
        // event finds the message queued already.
        let fact = hold.to_string();
        self.send(
            conn,
            Message {
                kind: Kind::WaitlistOffer,
                fact: &fact,
                user: Some(buyer),
                email: &email,
                facts: Facts {
                    event: event_facts(event.as_ref()),
                    offer: OfferFacts {
                        quantity: offer.quantity,
                        seats: offer.seat_ids.clone(),
                        expires_at,
                    },
                    ..Default::default()
                },
                link: format!("/checkout?hold={hold}"),
                inline: Vec::new(),
            },
        )
        .await
    }
}

impl Handler for Notifier {
    type Events = Heard;

    /// Messages first, then partners' webhooks, in the one transaction.
    async fn handle_delivered(
        &self,
        conn: &mut AsyncPgConnection,
        event: &Heard,
        envelope: &Envelope,
    ) -> anyhow::Result<()> {
        self.handle(conn, event).await?;
        if webhooks::enqueue(conn, event, envelope).await? {
            self.webhook_wake.notify_one();
        }
        Ok(())
    }

    async fn handle(&self, conn: &mut AsyncPgConnection, event: &Heard) -> anyhow::Result<()> {
        match event {
            Heard::UserRegistered(user) => {
                let user_id = id("user_id", &user.user_id)?;
                store::remember_recipient(conn, user_id, &user.email, Some(&user.display_name)).await?;
                self.send(
                    conn,
                    Message {
                        kind: Kind::Welcome,
                        fact: &user.user_id,
                        user: Some(user_id),
                        email: &user.email,
                        facts: Facts {
                            name: user.display_name.clone(),
                            ..Default::default()
                        },
                        link: "/".into(),
                        inline: Vec::new(),
                    },
                )
                .await
            }
            Heard::EventPublished(e) => {
                store::remember_event(
                    conn,
                    &KnownEvent {
                        id: id("event_id", &e.event_id)?,
                        organization_id: id("organization_id", &e.organization_id)?,
                        title: e.title.clone(),
                        starts_at: from_timestamp("starts_at", &e.starts_at.unwrap_or_default())?,
                        cancelled: false,
                    },
                )
                .await?;
                Ok(())
            }
            Heard::EventUpdated(e) => {
                let event_id = id("event_id", &e.event_id)?;
                let before = store::event(conn, event_id).await?;
                let now = KnownEvent {
                    id: event_id,
                    organization_id: id("organization_id", &e.organization_id)?,
                    title: e.title.clone(),
                    starts_at: from_timestamp("starts_at", &e.starts_at.unwrap_or_default())?,
                    cancelled: before.as_ref().is_some_and(|b| b.cancelled),
                };
                store::remember_event(conn, &now).await?;
                match before {
                    Some(before) if before.starts_at != now.starts_at && !now.cancelled => {
                        reminders::reschedule(conn, &now, &self.reminder_offsets).await?;
                        let fact = format!("{}@{}", e.event_id, now.starts_at.timestamp());
                        self.tell_holders(conn, Kind::EventUpdated, &fact, &now, "").await
                    }
                    _ => Ok(()),
                }
            }
            Heard::EventCancelled(e) => {
                let event_id = id("event_id", &e.event_id)?;
                store::cancel_event(conn, event_id).await?;
                store::skip_reminders(conn, event_id).await?;
                let event = store::event(conn, event_id).await?.unwrap_or(KnownEvent {
                    id: event_id,
                    organization_id: id("organization_id", &e.organization_id)?,
                    title: event_facts(None).title,
                    starts_at: chrono::Utc::now(),
                    cancelled: true,
                });
                self.tell_holders(conn, Kind::EventCancelled, &e.event_id, &event, &e.reason)
                    .await
            }
            Heard::OrderCreated(o) => {
                let buyer = id("buyer_id", &o.buyer_id)?;
                store::remember_order(
                    conn,
                    id("order_id", &o.order_id)?,
                    id("event_id", &o.event_id)?,
                    buyer,
                )
                .await?;
                store::remember_recipient(conn, buyer, &o.buyer_email, None).await?;
                Ok(())
            }
            Heard::OrderPaid(paid) => self.order_paid(conn, paid).await,
            Heard::OrderExpired(o) => {
                let facts = Facts::default();
                self.order_message(
                    conn,
                    Kind::OrderExpired,
                    &o.order_id,
                    AboutOrder {
                        order_id: &o.order_id,
                        event_id: &o.event_id,
                        buyer_id: &o.buyer_id,
                        buyer_email: &o.buyer_email,
                    },
                    facts,
                )
                .await
            }
            Heard::OrderCancelled(o) => {
                let facts = Facts {
                    reason: o.reason.clone(),
                    ..Default::default()
                };
                self.order_message(
                    conn,
                    Kind::OrderCancelled,
                    &o.order_id,
                    AboutOrder {
                        order_id: &o.order_id,
                        event_id: &o.event_id,
                        buyer_id: &o.buyer_id,
                        buyer_email: &o.buyer_email,
                    },
                    facts,
                )
                .await
            }
            Heard::OrderRefunded(r) => {
                let (order, event, holder) = (
                    id("order_id", &r.order_id)?,
                    id("event_id", &r.event_id)?,
                    id("buyer_id", &r.buyer_id)?,
                );
                let refunded: Vec<Holding> = r
                    .lines
                    .iter()
                    .filter_map(|l| Uuid::parse_str(&l.ticket_id).ok())
                    .map(|ticket_id| Holding {
                        ticket_id,
                        order_id: order,
                        event_id: event,
                        holder_id: holder,
                    })
                    .collect();
                store::void_holdings(conn, &refunded).await?;
                if r.full {
                    store::void_order_holdings(conn, order).await?;
                }
                let facts = Facts {
                    amount: amount(r.amount.as_ref()),
                    full: r.full,
                    ..Default::default()
                };
                self.order_message(
                    conn,
                    Kind::OrderRefunded,
                    &r.refund_id,
                    AboutOrder {
                        order_id: &r.order_id,
                        event_id: &r.event_id,
                        buyer_id: &r.buyer_id,
                        buyer_email: &r.buyer_email,
                    },
                    facts,
                )
                .await
            }
            Heard::TicketCheckedIn(_) => Ok(()),
            Heard::WaitlistOfferMade(offer) => self.waitlist_offer(conn, offer).await,
            Heard::PaymentFailed(p) => {
                let order = id("order_id", &p.order_id)?;
                // order.created comes first from orders; if it is still on its way, this
                // event is tried again shortly.
                let (event_id, buyer) = store::order(conn, order).await?.with_context(|| {
                    format!("payment.failed for order {order}, which notify has not seen created")
                })?;
                let facts = Facts {
                    amount: amount(p.amount.as_ref()),
                    reason: p.failure_code.clone(),
                    ..Default::default()
                };
                self.order_message(
                    conn,
                    Kind::PaymentFailed,
                    &p.payment_id,
                    AboutOrder {
                        order_id: &p.order_id,
                        event_id: &event_id.to_string(),
                        buyer_id: &buyer.to_string(),
                        buyer_email: "",
                    },
                    facts,
                )
                .await
            }
        }
    }
}
