//! What buyers are told: notify on a real SMTP server (aiosmtpd on loopback), started before
//! the sale so it hears every event. Mails are read as the server stored them.

use std::time::Duration;

use mail_parser::{MessageParser, MimeHeaders};
use ticketing_e2e::services::{self, Running, Wiring};
use ticketing_proto::{
    DomainEvent,
    ticketing::{
        catalog::v1::{self as cat, catalog_service_client::CatalogServiceClient},
        events::v1 as events,
        identity::v1 as idpb,
        inventory::v1 as inv,
        notify::v1::{self as npb, notify_service_client::NotifyServiceClient},
        orders::v1 as pb,
    },
};
use ticketing_testkit::{Envelope, SmtpSink};
use tonic::Code;

use crate::helpers::*;

type Notify = Running<svc_notify::config::Config>;

async fn with_notify(stack: &Stack, smtp: &SmtpSink) -> Notify {
    let wiring = Wiring {
        identity: &stack.identity,
        broker: &stack.broker,
        redis_prefix: "notify-unused",
    };
    services::notify(&wiring, &smtp.url(), |_| {}).await
}

async fn email_of(stack: &Stack, token: &str) -> String {
    stack
        .identity
        .client()
        .get_me(authed(token, idpb::GetMeRequest {}))
        .await
        .expect("me")
        .into_inner()
        .email
}

/// The mails to `to` whose subject starts with `subject`, once there are `count` of them.
async fn mails(smtp: &SmtpSink, to: &str, subject: &str, count: usize) -> Vec<Vec<u8>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let all = smtp.wait_for(to, 0, Duration::ZERO).await;
        let chosen: Vec<Vec<u8>> = all
            .into_iter()
            .filter(|m| {
                MessageParser::default()
                    .parse(m)
                    .and_then(|p| p.subject().map(|s| s.starts_with(subject)))
                    .unwrap_or(false)
            })
            .collect();
        if chosen.len() >= count || std::time::Instant::now() > deadline {
            return chosen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Decodes a QR code PNG into the text it encodes.
fn decode_qr(png_bytes: &[u8]) -> String {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("png header");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).expect("png frame");
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    let (w, h) = (info.width as usize, info.height as usize);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| pixels[y * w + x]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().expect("a readable QR code").1
}

fn notify_client(notify: &Notify) -> NotifyServiceClient<tonic::transport::Channel> {
    NotifyServiceClient::new(notify.channel.clone())
}

async fn notifications(notify: &Notify, token: &str) -> npb::ListNotificationsResponse {
    notify_client(notify)
        .list_notifications(authed(token, npb::ListNotificationsRequest::default()))
        .await
        .expect("list")
        .into_inner()
}

#[tokio::test]
async fn a_checkout_mails_one_confirmation_whose_qr_codes_decode_to_tickets_that_check_in() {
    let stack = stack().await;
    let smtp = SmtpSink::start().await.expect("smtp");
    let notify = with_notify(&stack, &smtp).await;
    let sale = stack.sale(10, 30).await;
    let (_, token) = stack.buyer().await;
    let email = email_of(&stack, &token).await;
    let paid = stack.checkout(&token, &sale, &sale.seats[..2]).await;

    let confirmations = mails(&smtp, &email, "Your tickets for Flash", 1).await;
    assert_eq!(confirmations.len(), 1, "one confirmation");
    let message = MessageParser::default().parse(&confirmations[0]).expect("a mail");
    assert!(message.message_id().is_some_and(|id| !id.is_empty()));
    assert!(
        message.header("List-Unsubscribe").is_none(),
        "a receipt cannot be unsubscribed from"
    );
    let text = message.body_text(0).expect("a text part").to_string();
    let mut decoded = Vec::new();
    for part in message.attachments() {
        assert_eq!(part.content_type().map(|c| c.subtype()), Some(Some("png")));
        decoded.push(decode_qr(part.contents()));
    }
    assert_eq!(decoded.len(), 2, "one QR code per ticket");
    let html = message.body_html(0).expect("an HTML part").to_string();
    for line in &paid.lines {
        let ticket = stack
            .orders()
            .get_ticket(authed(
                &token,
                pb::GetTicketRequest {
                    ticket_id: line.ticket_id.clone(),
                },
            ))
            .await
            .expect("ticket")
            .into_inner();
        assert!(text.contains(&ticket.secret), "the secret is in the text");
        assert!(decoded.contains(&ticket.secret), "a QR code encodes it");
        assert!(html.contains("cid:ticket-"), "the HTML shows the codes inline");
    }
    // The code from the mail gets its holder in.
    let scan = stack
        .orders()
        .check_in(authed(
            &sale.organizer,
            pb::CheckInRequest {
                event_id: sale.event_id.clone(),
                secret: decoded[0].clone(),
                gate: "north".into(),
                nonce: "mail-scan-1".into(),
            },
        ))
        .await
        .expect("scan")
        .into_inner();
    assert_eq!(
        scan.result,
        pb::CheckInResult::Accepted as i32,
        "the mailed code checks in"
    );

    // Welcome once, confirmation once; in-app too, read and unread counted.
    assert_eq!(mails(&smtp, &email, "Welcome", 1).await.len(), 1);
    let listed = notifications(&notify, &token).await;
    let kinds: Vec<i32> = listed.notifications.iter().map(|n| n.kind).collect();
    assert!(kinds.contains(&(npb::NotificationKind::OrderConfirmed as i32)));
    assert!(kinds.contains(&(npb::NotificationKind::Welcome as i32)));
    assert_eq!(listed.unread_count, 2);
    let confirmed = listed
        .notifications
        .iter()
        .find(|n| n.kind == npb::NotificationKind::OrderConfirmed as i32)
        .expect("confirmed");
    assert_eq!(confirmed.link, format!("/orders/{}", paid.id));
    let marked = notify_client(&notify)
        .mark_notifications_read(authed(
            &token,
            npb::MarkNotificationsReadRequest {
                notification_ids: vec![confirmed.id.clone()],
            },
        ))
        .await
        .expect("mark")
        .into_inner();
    assert_eq!(marked.marked, 1);
    assert_eq!(notifications(&notify, &token).await.unread_count, 1);
    // Another buyer sees none of it, and cannot mark it.
    let (_, other) = stack.buyer().await;
    let theirs = notifications(&notify, &other).await;
    assert!(
        theirs
            .notifications
            .iter()
            .all(|n| n.kind == npb::NotificationKind::Welcome as i32)
    );
    let none = notify_client(&notify)
        .mark_notifications_read(authed(
            &other,
            npb::MarkNotificationsReadRequest {
                notification_ids: vec![confirmed.id.clone()],
            },
        ))
        .await
        .expect("mark")
        .into_inner();
    assert_eq!(none.marked, 0);
}

#[tokio::test]
async fn order_paid_delivered_again_or_copied_sends_no_second_mail() {
    let stack = stack().await;
    let smtp = SmtpSink::start().await.expect("smtp");
    let notify = with_notify(&stack, &smtp).await;
    let mut tap = stack.broker.tap("order.paid").await.expect("tap");
    let sale = stack.sale(10, 30).await;
    let (_, token) = stack.buyer().await;
    let email = email_of(&stack, &token).await;
    stack.checkout(&token, &sale, &sale.seats[..1]).await;
    let paid = tap.next(Duration::from_secs(10)).await.expect("order.paid");
    assert_eq!(mails(&smtp, &email, "Your tickets", 1).await.len(), 1);

    // The same delivery again (the inbox), and the same fact under a new event id (the key).
    stack.broker.publish(&paid).await.expect("redeliver");
    let mut copy = paid.clone();
    copy.event_id = uuid::Uuid::new_v4().to_string();
    stack.broker.publish(&copy).await.expect("copy");
    // Something after them, so their turn has come once it is handled.
    let (_, later) = stack.buyer().await;
    let later_email = email_of(&stack, &later).await;
    assert_eq!(mails(&smtp, &later_email, "Welcome", 1).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        mails(&smtp, &email, "Your tickets", 1).await.len(),
        1,
        "still one"
    );
    let mut conn = notify.pool.get().await.expect("notify db");
    let queued = svc_notify::store::mails_to(&mut conn, &email)
        .await
        .expect("mails");
    assert_eq!(queued.len(), 2, "the welcome and one confirmation: {queued:?}");
}

/// Two replicas consume side by side, so a refund can be handled before its order.paid: the
/// refunded tickets must stay void, or their holder would be reminded and told of the event.
#[tokio::test]
async fn a_refund_heard_before_its_payment_leaves_the_tickets_void() {
    let stack = stack().await;
    let smtp = SmtpSink::start().await.expect("smtp");
    let mut paid_tap = stack.broker.tap("order.paid").await.expect("tap");
    let mut refunded_tap = stack.broker.tap("order.refunded").await.expect("tap");
    let sale = stack.sale(10, 30).await;
    let (_, token) = stack.buyer().await;
    let paid = stack.checkout(&token, &sale, &sale.seats[..1]).await;
    stack.refund_in_full(&sale, &paid.id).await;
    let paid_event = paid_tap.next(Duration::from_secs(10)).await.expect("order.paid");
    let refunded_event = refunded_tap
        .next(Duration::from_secs(10))
        .await
        .expect("order.refunded");
    // Notify starts after both happened (its queue did not exist) and hears them reversed.
    let notify = with_notify(&stack, &smtp).await;
    stack.broker.publish(&refunded_event).await.expect("refund first");
    stack.broker.publish(&paid_event).await.expect("then the payment");
    // Notify missed the sign-up and order.created, so it has no address: the in-app
    // confirmation shows that order.paid was handled.
    stack
        .eventually("order.paid handled", || {
            let (notify, token) = (&notify, token.clone());
            async move {
                notifications(notify, &token)
                    .await
                    .notifications
                    .iter()
                    .any(|n| n.kind == npb::NotificationKind::OrderConfirmed as i32)
            }
        })
        .await;
    let mut conn = notify.pool.get().await.expect("notify db");
    let event = uuid::Uuid::parse_str(&sale.event_id).expect("id");
    let holders = svc_notify::store::holders_of(&mut conn, event)
        .await
        .expect("holders");
    assert!(holders.is_empty(), "the refunded ticket is void: {holders:?}");
}

#[tokio::test]
async fn an_smtp_outage_delays_mail_and_loses_none() {
    let stack = stack().await;
    let mut smtp = SmtpSink::start().await.expect("smtp");
    let notify = with_notify(&stack, &smtp).await;
    let sale = stack.sale(10, 30).await;
    smtp.stop();
    let mut buyers = Vec::new();
    for n in 0..3 {
        let (_, token) = stack.buyer().await;
        let email = email_of(&stack, &token).await;
        stack.checkout(&token, &sale, &sale.seats[n..n + 1]).await;
        buyers.push(email);
    }
    // Every send fails while the server is away; the mails wait with their error.
    stack
        .eventually("a send failed", || {
            let (pool, email) = (notify.pool.clone(), buyers[0].clone());
            async move {
                let Ok(mut conn) = pool.get().await else {
                    return false;
                };
                let rows = svc_notify::store::mails_to(&mut conn, &email)
                    .await
                    .unwrap_or_default();
                rows.iter().any(|m| m.attempts >= 1 && m.last_error.is_some())
            }
        })
        .await;
    let mut conn = notify.pool.get().await.expect("notify db");
    let rows = svc_notify::store::mails_to(&mut conn, &buyers[0])
        .await
        .expect("mails");
    assert!(
        rows.iter()
            .all(|m| m.status == svc_notify::domain::MailStatus::Pending)
    );
    for email in &buyers {
        assert!(
            smtp.wait_for(email, 0, Duration::ZERO).await.is_empty(),
            "nothing reached {email} yet"
        );
    }

    smtp.resume().await.expect("smtp back");
    for email in &buyers {
        // Retried after its back-off (5 s after the first failure).
        let welcome = mails(&smtp, email, "Welcome", 1).await;
        let tickets = mails(&smtp, email, "Your tickets", 1).await;
        assert_eq!((welcome.len(), tickets.len()), (1, 1), "{email}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for email in &buyers {
        assert_eq!(
            smtp.wait_for(email, 0, Duration::ZERO).await.len(),
            2,
            "each mail once: {email}"
        );
    }
}

#[tokio::test]
async fn a_decline_a_cancellation_and_a_refund_each_reach_the_buyer() {
    let stack = stack().await;
    let smtp = SmtpSink::start().await.expect("smtp");
    let notify = with_notify(&stack, &smtp).await;
    let sale = stack.sale(10, 30).await;
    let (_, token) = stack.buyer().await;
    let email = email_of(&stack, &token).await;

    let hold = stack
        .hold(&token, &sale, &sale.seats[..1], None)
        .await
        .expect("hold");
    let order = stack
        .create_order(&token, &hold.id, &uuid::Uuid::new_v4().to_string(), "")
        .await
        .expect("order");
    let declined = stack.pay(&token, &order.id, CARD_DECLINED).await;
    assert!(declined.is_err(), "declined");
    let failed = mails(&smtp, &email, "Your payment for Flash did not go through", 1).await;
    assert_eq!(failed.len(), 1);
    stack
        .orders()
        .cancel_order(authed(
            &token,
            pb::CancelOrderRequest {
                order_id: order.id.clone(),
                reason: "changed my mind".into(),
            },
        ))
        .await
        .expect("cancel");
    let cancelled = mails(&smtp, &email, "Your order for Flash was cancelled", 1).await;
    assert_eq!(cancelled.len(), 1);
    let text = MessageParser::default()
        .parse(&cancelled[0])
        .and_then(|m| m.body_text(0).map(|t| t.to_string()))
        .expect("text");
    assert!(text.contains("changed my mind"), "{text}");

    let paid = stack.checkout(&token, &sale, &sale.seats[1..2]).await;
    stack
        .orders()
        .refund_order(authed(
            &sale.organizer,
            pb::RefundOrderRequest {
                order_id: paid.id.clone(),
                reason: "duplicate".into(),
                idempotency_key: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            },
        ))
        .await
        .expect("refund");
    let refunded = mails(&smtp, &email, "Refund for Flash", 1).await;
    assert_eq!(refunded.len(), 1);
    let kinds: Vec<i32> = notifications(&notify, &token)
        .await
        .notifications
        .iter()
        .map(|n| n.kind)
        .collect();
    for kind in [
        npb::NotificationKind::PaymentFailed,
        npb::NotificationKind::OrderCancelled,
        npb::NotificationKind::OrderConfirmed,
        npb::NotificationKind::OrderRefunded,
    ] {
        assert!(kinds.contains(&(kind as i32)), "{kind:?} in {kinds:?}");
    }
}

/// `message` as a producer's outbox relay publishes it, under a new event id.
fn envelope<M: DomainEvent>(producer: &str, aggregate_id: &str, message: &M) -> Envelope {
    Envelope {
        event_id: uuid::Uuid::new_v4().to_string(),
        event_type: M::TYPE.into(),
        occurred_at: Some(ts(chrono::Utc::now())),
        aggregate_type: M::AGGREGATE.into(),
        aggregate_id: aggregate_id.into(),
        aggregate_sequence: 1,
        producer: producer.into(),
        payload: prost::Message::encode_to_vec(message),
    }
}

/// Inventory's event is played here as its relay would publish it.
#[tokio::test]
async fn a_waitlist_offer_reaches_its_buyer_once_with_the_way_to_check_out_and_no_partner() {
    let stack = stack().await;
    let smtp = SmtpSink::start().await.expect("smtp");
    let wiring = Wiring {
        identity: &stack.identity,
        broker: &stack.broker,
        redis_prefix: "notify-unused",
    };
    let notify = services::notify(&wiring, &smtp.url(), |config| {
        config.webhooks.allow_private_targets = true;
    })
    .await;
    let sale = stack.sale(10, 30).await;
    // The organization listens to every type it may: the offer must not be among them.
    let endpoint = notify_client(&notify)
        .create_webhook_endpoint(authed(
            &sale.organizer,
            npb::CreateWebhookEndpointRequest {
                organization_id: sale.org.to_string(),
                url: "http://127.0.0.1:9/hooks".into(),
                event_types: vec![],
                description: "partner".into(),
            },
        ))
        .await
        .expect("endpoint")
        .into_inner()
        .endpoint
        .expect("endpoint");
    let (buyer, token) = stack.buyer().await;
    let email = email_of(&stack, &token).await;
    // The offer names no address: notify mails the one user.registered left. It names the
    // event as catalog published it.
    assert_eq!(mails(&smtp, &email, "Welcome", 1).await.len(), 1);
    let event_id = uuid::Uuid::parse_str(&sale.event_id).expect("id");
    stack
        .eventually("notify knows the event", || {
            let pool = notify.pool.clone();
            async move {
                let Ok(mut conn) = pool.get().await else {
                    return false;
                };
                matches!(svc_notify::store::event(&mut conn, event_id).await, Ok(Some(_)))
            }
        })
        .await;

    let entry = uuid::Uuid::new_v4().to_string();
    let offer = events::WaitlistOfferMade {
        entry_id: entry.clone(),
        hold_id: entry.clone(),
        event_id: sale.event_id.clone(),
        tier_id: "vip".into(),
        buyer_id: buyer.to_string(),
        quantity: 2,
        seat_ids: sale.seats[..2].to_vec(),
        expires_at: Some(ts(chrono::Utc::now() + chrono::Duration::minutes(30))),
    };
    let made = envelope("inventory", &entry, &offer);
    stack.broker.publish(&made).await.expect("offer");
    let subject = "Places for Flash are held for you";
    let offered = mails(&smtp, &email, subject, 1).await;
    assert_eq!(offered.len(), 1, "the offer's mail");
    let message = MessageParser::default().parse(&offered[0]).expect("a mail");
    assert!(
        message.header("List-Unsubscribe").is_none(),
        "an offer cannot be unsubscribed from"
    );
    let text = message.body_text(0).expect("a text part").to_string();
    let link = format!("/checkout?hold={entry}");
    assert!(text.contains(&link), "{text}");
    assert!(text.contains(&sale.seats[1]), "the held seats are named: {text}");
    let offers = |listed: &npb::ListNotificationsResponse| -> Vec<npb::Notification> {
        listed
            .notifications
            .iter()
            .filter(|n| n.kind == npb::NotificationKind::WaitlistOffer as i32)
            .cloned()
            .collect()
    };
    let in_app = offers(&notifications(&notify, &token).await);
    assert_eq!(in_app.len(), 1, "in-app too");
    assert_eq!(in_app[0].link, link);
    assert_eq!(in_app[0].title, subject);

    // The same delivery again (the inbox), and the same offer under a new event id (the key).
    stack.broker.publish(&made).await.expect("redeliver");
    let mut copy = made.clone();
    copy.event_id = uuid::Uuid::new_v4().to_string();
    stack.broker.publish(&copy).await.expect("copy");
    // Something after them, so their turn has come once it is handled.
    let (_, later) = stack.buyer().await;
    let later_email = email_of(&stack, &later).await;
    assert_eq!(mails(&smtp, &later_email, "Welcome", 1).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mails(&smtp, &email, subject, 1).await.len(), 1, "still one");
    assert_eq!(
        offers(&notifications(&notify, &token).await).len(),
        1,
        "still one in-app"
    );
    let partner = notify_client(&notify)
        .list_webhook_deliveries(authed(
            &sale.organizer,
            npb::ListWebhookDeliveriesRequest {
                endpoint_id: endpoint.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("deliveries")
        .into_inner()
        .deliveries;
    assert!(
        partner.iter().all(|d| d.event_type != made.event_type),
        "a buyer's offer is not a partner's: {partner:?}"
    );
}

#[tokio::test]
async fn a_cancelled_event_reaches_each_holder_once_and_not_the_refunded() {
    let stack = stack().await;
    let smtp = SmtpSink::start().await.expect("smtp");
    let _notify = with_notify(&stack, &smtp).await;
    let sale = stack.sale(10, 30).await;
    let mut holders = Vec::new();
    for n in 0..4 {
        let (_, token) = stack.buyer().await;
        let email = email_of(&stack, &token).await;
        // The first buyer holds two orders, and hears once.
        stack.checkout(&token, &sale, &sale.seats[2 * n..2 * n + 1]).await;
        if n == 0 {
            stack.checkout(&token, &sale, &sale.seats[9..10]).await;
        }
        holders.push((token, email));
    }
    // The last one was refunded before: not a holder any more.
    let (refunded_token, refunded_email) = holders.pop().expect("one");
    let orders = stack
        .orders()
        .list_orders(authed(&refunded_token, pb::ListOrdersRequest::default()))
        .await
        .expect("orders")
        .into_inner()
        .orders;
    stack.refund_in_full(&sale, &orders[0].id).await;
    assert_eq!(mails(&smtp, &refunded_email, "Refund", 1).await.len(), 1);

    CatalogServiceClient::new(stack.catalog.clone())
        .cancel_event(authed(
            &sale.organizer,
            cat::CancelEventRequest {
                event_id: sale.event_id.clone(),
                reason: "the band fell ill".into(),
            },
        ))
        .await
        .expect("cancel");
    for (_, email) in &holders {
        let told = mails(&smtp, email, "Cancelled: Flash", 1).await;
        assert_eq!(told.len(), 1, "{email}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (_, email) in &holders {
        assert_eq!(
            mails(&smtp, email, "Cancelled: Flash", 1).await.len(),
            1,
            "once: {email}"
        );
    }
    assert!(
        mails(&smtp, &refunded_email, "Cancelled", 0).await.is_empty(),
        "a refunded buyer holds nothing"
    );
}

#[tokio::test]
async fn preferences_switch_reminders_and_language_but_never_a_receipt() {
    let stack = stack().await;
    let smtp = SmtpSink::start().await.expect("smtp");
    let notify = with_notify(&stack, &smtp).await;
    let sale = stack.sale(10, 30).await;
    let (user, token) = stack.buyer().await;
    let email = email_of(&stack, &token).await;
    let mut client = notify_client(&notify);
    let defaults = client
        .get_preferences(authed(&token, npb::GetPreferencesRequest {}))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(defaults.user_id, user.to_string());
    assert!(defaults.email_enabled && defaults.in_app_enabled && defaults.reminders_enabled);
    assert_eq!(defaults.locale, "en");

    let update = |preferences: npb::Preferences, paths: &[&str]| npb::UpdatePreferencesRequest {
        preferences: Some(preferences),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
    };
    // Bad input changes nothing.
    for (request, field) in [
        (
            update(
                npb::Preferences {
                    locale: "xx".into(),
                    ..Default::default()
                },
                &["locale"],
            ),
            "preferences.locale",
        ),
        (update(npb::Preferences::default(), &["user_id"]), "update_mask"),
        (
            npb::UpdatePreferencesRequest {
                preferences: Some(npb::Preferences::default()),
                update_mask: None,
            },
            "update_mask",
        ),
    ] {
        let refused = client
            .update_preferences(authed(&token, request))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert_eq!(ticketing_e2e::violated_fields(&refused), vec![field.to_string()]);
    }
    let unchanged = client
        .get_preferences(authed(&token, npb::GetPreferencesRequest {}))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(unchanged, defaults);

    // E-mail off, reminders off, German: the receipt still comes, in German.
    let saved = client
        .update_preferences(authed(
            &token,
            update(
                npb::Preferences {
                    locale: "de".into(),
                    ..Default::default()
                },
                &["email_enabled", "reminders_enabled", "locale"],
            ),
        ))
        .await
        .expect("update")
        .into_inner();
    assert!(!saved.email_enabled && !saved.reminders_enabled && saved.in_app_enabled);
    assert_eq!(saved.locale, "de");
    stack.checkout(&token, &sale, &sale.seats[..1]).await;
    let receipt = mails(&smtp, &email, "Ihre Tickets für Flash", 1).await;
    assert_eq!(receipt.len(), 1, "a receipt cannot be switched off");

    let unauthenticated = client
        .get_preferences(npb::GetPreferencesRequest {})
        .await
        .expect_err("no token");
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn watchers_on_two_replicas_see_a_notification_once_each() {
    let stack = stack().await;
    let smtp = SmtpSink::start().await.expect("smtp");
    let first = with_notify(&stack, &smtp).await;
    let sale = stack.sale(10, 30).await;
    let (_, token) = stack.buyer().await;
    // A second replica on the same database and queue.
    let replica = {
        let app = svc_notify::Application::build(svc_notify::config::Config {
            server: services::test_server(),
            ..first.config.clone()
        })
        .await
        .expect("replica");
        let addr = ticketing_platform::server::Served::grpc_addr(&app);
        let stop = services::run_until_dropped(|s| app.run_until_stopped(s));
        (ticketing_e2e::connect(addr).await, stop)
    };
    // Both watch, then a checkout happens.
    let mut streams = Vec::new();
    for channel in [first.channel.clone(), replica.0.clone()] {
        let stream = NotifyServiceClient::new(channel)
            .watch_notifications(authed(&token, npb::WatchNotificationsRequest {}))
            .await
            .expect("watch")
            .into_inner();
        streams.push(stream);
    }
    stack.checkout(&token, &sale, &sale.seats[..1]).await;
    for stream in &mut streams {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("in time")
            .expect("a message")
            .expect("not closed");
        assert_eq!(next.kind, npb::NotificationKind::OrderConfirmed as i32);
        let nothing_more = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
        assert!(nothing_more.is_err(), "sent once");
    }
    let refused = NotifyServiceClient::new(first.channel.clone())
        .watch_notifications(npb::WatchNotificationsRequest {})
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);
}

/// Notify and a second replica on its database, reminding 30 days less `before` seconds ahead
/// of an event's start: for an event 30 days ahead (as `sale(_, 30)` makes them), the reminders
/// fall due `before` seconds after the sale, and a test moves the start to make them due.
async fn with_reminders(
    stack: &Stack,
    smtp: &SmtpSink,
    before: &[u64],
) -> (Notify, tokio::sync::oneshot::Sender<()>) {
    let wiring = Wiring {
        identity: &stack.identity,
        broker: &stack.broker,
        redis_prefix: "notify-unused",
    };
    let thirty_days = 30 * 86_400;
    let offsets: Vec<Duration> = before
        .iter()
        .map(|after_the_sale| Duration::from_secs(thirty_days - after_the_sale))
        .collect();
    let notify = services::notify(&wiring, &smtp.url(), |config| {
        config.reminders.offsets = offsets;
        config.reminders.interval = Duration::from_millis(100);
    })
    .await;
    let replica = svc_notify::Application::build(svc_notify::config::Config {
        server: services::test_server(),
        ..notify.config.clone()
    })
    .await
    .expect("replica");
    let stop = services::run_until_dropped(|s| replica.run_until_stopped(s));
    (notify, stop)
}

/// Moves the sale's event to start at `starts` (Unix seconds), ending three hours later.
async fn move_start(stack: &Stack, sale: &Sale, starts: i64) {
    let at = |seconds: i64| Some(prost_types::Timestamp { seconds, nanos: 0 });
    CatalogServiceClient::new(stack.catalog.clone())
        .update_event(authed(
            &sale.organizer,
            cat::UpdateEventRequest {
                event: Some(cat::Event {
                    id: sale.event_id.clone(),
                    starts_at: at(starts),
                    ends_at: at(starts + 3 * 3600),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["starts_at".into(), "ends_at".into()],
                }),
            },
        ))
        .await
        .expect("moved");
}

#[tokio::test]
async fn reminders_fire_once_each_at_their_offsets_on_two_replicas_and_skip_the_refunded() {
    let stack = stack().await;
    let smtp = SmtpSink::start().await.expect("smtp");
    // Due ten minutes after the sale: nothing fires until the start is moved below.
    let (notify, _replica) = with_reminders(&stack, &smtp, &[600, 604]).await;
    let sale = stack.sale(10, 30).await;
    let event = uuid::Uuid::parse_str(&sale.event_id).expect("id");
    let (holder, kept) = stack.buyer().await;
    let (refunded, gone) = stack.buyer().await;
    let (kept_email, gone_email) = (email_of(&stack, &kept).await, email_of(&stack, &gone).await);
    stack.checkout(&kept, &sale, &sale.seats[..1]).await;
    let paid = stack.checkout(&gone, &sale, &sale.seats[1..2]).await;
    stack.refund_in_full(&sale, &paid.id).await;
    assert_eq!(mails(&smtp, &gone_email, "Refund", 1).await.len(), 1);
    // Two replicas consume side by side: the kept buyer's order.paid may come in last.
    assert_eq!(
        mails(&smtp, &kept_email, "Your tickets for Flash", 1).await.len(),
        1
    );
    let mut conn = notify.pool.get().await.expect("notify db");
    let scheduled = svc_notify::store::reminders_of(&mut conn, event)
        .await
        .expect("reminders");
    assert_eq!(scheduled.len(), 4, "two per holder: {scheduled:?}");
    assert!(
        scheduled
            .iter()
            .all(|(_, _, s, _)| *s == svc_notify::domain::ReminderStatus::Pending)
    );
    // The start moves to make the reminders due 4 and 8 s from now; the refunded buyer's are
    // due then too, and must be skipped.
    move_start(&stack, &sale, chrono::Utc::now().timestamp() + 30 * 86_400 - 596).await;

    let reminded = mails(&smtp, &kept_email, "Soon: Flash", 2).await;
    assert_eq!(reminded.len(), 2, "both reminders");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        mails(&smtp, &kept_email, "Soon: Flash", 2).await.len(),
        2,
        "each once"
    );
    assert!(
        mails(&smtp, &gone_email, "Soon", 0).await.is_empty(),
        "a refunded buyer is not reminded"
    );
    let settled = svc_notify::store::reminders_of(&mut conn, event)
        .await
        .expect("reminders");
    for (who, _, status, _) in settled {
        let expected = if who == holder {
            svc_notify::domain::ReminderStatus::Sent
        } else {
            assert_eq!(who, refunded);
            svc_notify::domain::ReminderStatus::Skipped
        };
        assert_eq!(status, expected, "{who}");
    }
    // The reminder's one-click link (RFC 8058) switches reminders off, and only them.
    let reminder = MessageParser::default().parse(&reminded[0]).expect("a mail");
    assert_eq!(
        reminder.header("List-Unsubscribe-Post").and_then(|h| h.as_text()),
        Some("List-Unsubscribe=One-Click")
    );
    let link = reminder
        .header_raw("List-Unsubscribe")
        .expect("an unsubscribe link")
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string();
    let token = link.split("token=").nth(1).expect("a token").to_string();
    let mut client = notify_client(&notify);
    for bad in [
        String::new(),
        format!("{token}x"),
        token.replacen("event_reminder", "order_confirmed", 1),
    ] {
        let refused = client
            .unsubscribe(npb::UnsubscribeRequest {
                token: bad,
                ..Default::default()
            })
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument);
    }
    let done = client
        .unsubscribe(npb::UnsubscribeRequest {
            token: token.clone(),
            one_click: "One-Click".into(),
        })
        .await
        .expect("unsubscribed")
        .into_inner();
    assert_eq!(done.kind, npb::NotificationKind::EventReminder as i32);
    let preferences = client
        .get_preferences(authed(&kept, npb::GetPreferencesRequest {}))
        .await
        .expect("preferences")
        .into_inner();
    assert!(!preferences.reminders_enabled && preferences.email_enabled && preferences.in_app_enabled);

    let in_app = notifications(&notify, &kept).await;
    let reminders = in_app
        .notifications
        .iter()
        .filter(|n| n.kind == npb::NotificationKind::EventReminder as i32)
        .count();
    assert_eq!(reminders, 2);
}

#[tokio::test]
async fn a_moved_start_moves_the_reminders_and_tells_the_holders() {
    let stack = stack().await;
    let smtp = SmtpSink::start().await.expect("smtp");
    let (notify, _replica) = with_reminders(&stack, &smtp, &[600]).await;
    let sale = stack.sale(10, 30).await;
    let (_, token) = stack.buyer().await;
    let email = email_of(&stack, &token).await;
    stack.checkout(&token, &sale, &sale.seats[..1]).await;
    // Its confirmation is queued in the transaction that schedules its reminder.
    assert_eq!(mails(&smtp, &email, "Your tickets for Flash", 1).await.len(), 1);
    let mut conn = notify.pool.get().await.expect("notify db");
    let event_id = uuid::Uuid::parse_str(&sale.event_id).expect("id");
    let before = svc_notify::store::reminders_of(&mut conn, event_id)
        .await
        .expect("reminders");
    assert_eq!(before.len(), 1);
    let event = CatalogServiceClient::new(stack.catalog.clone())
        .get_event(cat::GetEventRequest {
            event_id: sale.event_id.clone(),
        })
        .await
        .expect("event")
        .into_inner();
    let starts = event.starts_at.expect("a start").seconds;
    move_start(&stack, &sale, starts + 86_400).await;
    assert_eq!(mails(&smtp, &email, "New time for Flash", 1).await.len(), 1);
    let after = svc_notify::store::reminders_of(&mut conn, event_id)
        .await
        .expect("reminders");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].2, svc_notify::domain::ReminderStatus::Pending);
    assert_eq!(
        (after[0].3 - before[0].3).num_seconds(),
        86_400,
        "due a day later, as the start"
    );
    assert!(mails(&smtp, &email, "Soon", 0).await.is_empty());
}

/// The whole loop on the real services: a cancelled order's places go to the first in line,
/// who is told by mail and in-app and checks out with the offer's hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_order_s_places_go_to_the_waiting_list_whose_buyer_checks_out_with_the_offer() {
    let stack = stack().await;
    let smtp = SmtpSink::start().await.expect("smtp");
    let notify = with_notify(&stack, &smtp).await;
    let sale = stack.sale(2, 30).await;
    let (_, first) = stack.buyer().await;
    let (_, waiter) = stack.buyer().await;
    let (_, outsider) = stack.buyer().await;
    let email = email_of(&stack, &waiter).await;

    let hold = stack.hold_floor(&first, &sale, 2).await;
    let order = stack
        .create_order(&first, &hold.id, &uuid::Uuid::new_v4().to_string(), "")
        .await
        .expect("order");
    let entry = stack
        .inventory()
        .join_waitlist(authed(
            &waiter,
            inv::JoinWaitlistRequest {
                event_id: sale.event_id.clone(),
                tier_id: sale.floor_tier.clone(),
                quantity: 2,
            },
        ))
        .await
        .expect("joined")
        .into_inner();
    stack
        .orders()
        .cancel_order(authed(
            &first,
            pb::CancelOrderRequest {
                order_id: order.id.clone(),
                reason: "plans changed".into(),
            },
        ))
        .await
        .expect("cancelled");

    // Inventory hears the cancellation and offers both places to the waiter, nobody else.
    let offered = mails(&smtp, &email, "Places for Flash are held for you", 1).await;
    let text = MessageParser::default()
        .parse(&offered[0])
        .and_then(|m| m.body_text(0).map(|t| t.to_string()))
        .expect("text");
    assert!(text.contains(&format!("/checkout?hold={}", entry.id)), "{text}");
    let kinds: Vec<i32> = notifications(&notify, &waiter)
        .await
        .notifications
        .iter()
        .map(|n| n.kind)
        .collect();
    assert!(
        kinds.contains(&(npb::NotificationKind::WaitlistOffer as i32)),
        "{kinds:?}"
    );
    let refused = stack
        .inventory()
        .hold_quantity(authed(
            &outsider,
            inv::HoldQuantityRequest {
                event_id: sale.event_id.clone(),
                tier_id: sale.floor_tier.clone(),
                quantity: 1,
                ttl: None,
            },
        ))
        .await
        .expect_err("offered to the waiter");
    assert_eq!(refused.code(), Code::FailedPrecondition);

    // The offer is the waiter's hold: an order from it is paid like any other.
    let bought = stack
        .create_order(&waiter, &entry.id, &uuid::Uuid::new_v4().to_string(), "")
        .await
        .expect("order from the offer");
    let paid = stack.pay(&waiter, &bought.id, CARD_OK).await.expect("paid");
    assert_eq!(paid.status, pb::OrderStatus::Paid as i32);
    stack
        .eventually("the entry is fulfilled", || async {
            stack
                .inventory()
                .list_waitlist_entries(authed(&waiter, inv::ListWaitlistEntriesRequest::default()))
                .await
                .map(|r| r.into_inner().entries[0].status == inv::WaitlistStatus::Fulfilled as i32)
                .unwrap_or(false)
        })
        .await;
}
