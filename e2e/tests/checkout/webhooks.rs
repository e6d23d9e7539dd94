//! Partners' webhooks: notify posts to a real receiver started by the test (Python's
//! `http.server` on loopback), and the signatures are checked by the `standardwebhooks` package
//! from PyPI as well as by the project's own code.

use std::time::Duration;

use ticketing_e2e::services::{self, Running, Wiring};
use ticketing_platform::auth::Role;
use ticketing_proto::ticketing::{
    identity::v1 as idpb,
    notify::v1::{self as npb, notify_service_client::NotifyServiceClient},
};
use ticketing_testkit::{Received, SmtpSink, WebhookReceiver, verify_independently};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

type Notify = Running<svc_notify::config::Config>;

/// Notify with endpoints on loopback allowed (the receiver is there) and `adjust` applied.
async fn with_notify(
    stack: &Stack,
    smtp: &SmtpSink,
    adjust: impl FnOnce(&mut svc_notify::config::Config),
) -> Notify {
    let wiring = Wiring {
        identity: &stack.identity,
        broker: &stack.broker,
        redis_prefix: "notify-unused",
    };
    services::notify(&wiring, &smtp.url(), |config| {
        config.webhooks.allow_private_targets = true;
        config.webhooks.poll_interval = Duration::from_millis(100);
        adjust(config);
    })
    .await
}

fn client(notify: &Notify) -> NotifyServiceClient<tonic::transport::Channel> {
    NotifyServiceClient::new(notify.channel.clone())
}

async fn create(
    notify: &Notify,
    token: &str,
    org: Uuid,
    url: &str,
    types: &[&str],
) -> Result<npb::WebhookEndpointWithSecret, tonic::Status> {
    client(notify)
        .create_webhook_endpoint(authed(
            token,
            npb::CreateWebhookEndpointRequest {
                organization_id: org.to_string(),
                url: url.into(),
                event_types: types.iter().map(|t| t.to_string()).collect(),
                description: "partner".into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn ping(notify: &Notify, token: &str, endpoint: &str) -> npb::WebhookDelivery {
    client(notify)
        .ping_webhook_endpoint(authed(
            token,
            npb::PingWebhookEndpointRequest {
                endpoint_id: endpoint.into(),
            },
        ))
        .await
        .expect("ping")
        .into_inner()
}

async fn deliveries(notify: &Notify, token: &str, endpoint: &str) -> Vec<npb::WebhookDelivery> {
    client(notify)
        .list_webhook_deliveries(authed(
            token,
            npb::ListWebhookDeliveriesRequest {
                endpoint_id: endpoint.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("deliveries")
        .into_inner()
        .deliveries
}

/// The delivery `id` once `done` holds for it (waiting up to 20 s).
async fn delivery_when(
    notify: &Notify,
    token: &str,
    endpoint: &str,
    id: &str,
    done: impl Fn(&npb::WebhookDelivery) -> bool,
) -> npb::WebhookDelivery {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = deliveries(notify, token, endpoint)
            .await
            .into_iter()
            .find(|d| d.id == id);
        if let Some(d) = &found
            && (done(d) || std::time::Instant::now() > deadline)
        {
            return d.clone();
        }
        assert!(std::time::Instant::now() < deadline, "delivery {id} not listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn own_verify(secret: &str, r: &Received) -> bool {
    let timestamp: i64 = r.header("webhook-timestamp").parse().unwrap_or_default();
    svc_notify::webhooks::signature::verify(
        secret,
        r.header("webhook-id"),
        timestamp,
        r.body.as_bytes(),
        r.header("webhook-signature"),
        chrono::Utc::now().timestamp(),
    )
}

fn webhook_id(delivery: &npb::WebhookDelivery) -> String {
    format!("msg_{}", Uuid::parse_str(&delivery.id).expect("uuid").simple())
}

#[tokio::test]
async fn a_sale_reaches_the_partner_signed_and_both_implementations_verify_it() {
    let stack = stack().await;
    let smtp = SmtpSink::start().await.expect("smtp");
    let notify = with_notify(&stack, &smtp, |_| {}).await;
    let receiver = WebhookReceiver::start().await.expect("receiver");
    let sale = stack.sale(10, 30).await;
    let created = create(
        &notify,
        &sale.organizer,
        sale.org,
        &receiver.url("/ok"),
        &["order.paid", "order.created"],
    )
    .await
    .expect("created");
    let endpoint = created.endpoint.expect("endpoint");
    assert!(created.secret.starts_with("whsec_"));
    let (_, buyer) = stack.buyer().await;
    let paid = stack.checkout(&buyer, &sale, &sale.seats[..1]).await;

    let got = receiver
        .wait_for("/ok", 2, Duration::from_secs(20), |r| {
            r.json()["data"]["order_id"] == paid.id.as_str()
        })
        .await;
    let types: Vec<String> = got
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        types.iter().filter(|t| *t == "order.paid").count(),
        1,
        "{types:?}"
    );
    assert_eq!(
        types.iter().filter(|t| *t == "order.created").count(),
        1,
        "{types:?}"
    );
    for r in &got {
        let body = r.json();
        assert_eq!(body["data"]["event_id"], sale.event_id.as_str());
        assert_eq!(body["data"]["organization_id"], sale.org.to_string().as_str());
        assert!(body["timestamp"].is_string());
        assert!(r.header("webhook-id").starts_with("msg_"));
        assert_eq!(r.header("content-type"), "application/json");
        assert!(
            !r.body.contains("secret") && !r.body.contains('@'),
            "no ticket secret or address in a webhook: {}",
            r.body
        );
        assert!(own_verify(&created.secret, r), "the project's own check");
    }
    assert_eq!(
        verify_independently(&created.secret, &got).expect("standardwebhooks"),
        vec![true; got.len()],
        "the standardwebhooks package accepts every signature"
    );
    // A tampered body, or another endpoint's secret, fails both checks.
    let mut tampered = got[0].clone();
    tampered.body = tampered.body.replace("order", "0rder");
    let other_secret = svc_notify::webhooks::signature::new_secret();
    assert_eq!(
        verify_independently(&created.secret, &[tampered.clone()]).expect("check"),
        vec![false]
    );
    assert_eq!(
        verify_independently(&other_secret, &got[..1]).expect("check"),
        vec![false]
    );
    assert!(!own_verify(&created.secret, &tampered) && !own_verify(&other_secret, &got[0]));

    // An event type the endpoint does not listen to is not sent; a ping always is.
    let ping = ping(&notify, &sale.organizer, &endpoint.id).await;
    let pinged = receiver
        .wait_for("/ok", 1, Duration::from_secs(20), |r| {
            r.header("webhook-id") == webhook_id(&ping)
        })
        .await;
    assert_eq!(pinged.len(), 1);
    assert_eq!(pinged[0].json()["type"], "webhook.ping");
    let all = deliveries(&notify, &sale.organizer, &endpoint.id).await;
    assert_eq!(all.len(), 3, "order.created, order.paid and the ping");
    assert!(all.iter().all(|d| d.event_type != "order.expired"));
}

#[tokio::test]
async fn a_failing_endpoint_gets_the_event_once_after_a_retry_and_redelivery_keeps_its_id() {
    let stack = stack().await;
    let smtp = SmtpSink::start().await.expect("smtp");
    let notify = with_notify(&stack, &smtp, |c| {
        c.webhooks.retry_schedule = vec![Duration::from_secs(1), Duration::from_secs(1)];
    })
    .await;
    let receiver = WebhookReceiver::start().await.expect("receiver");
    let (org, owner) = stack.identity.organizer().await;
    let flaky = create(&notify, &owner, org, &receiver.url("/flaky"), &[])
        .await
        .expect("created");
    let flaky_id = flaky.endpoint.expect("endpoint").id;
    let sent = ping(&notify, &owner, &flaky_id).await;
    let done = delivery_when(&notify, &owner, &flaky_id, &sent.id, |d| {
        d.status == npb::WebhookDeliveryStatus::Succeeded as i32
    })
    .await;
    assert_eq!(done.attempt_count, 2);
    let codes: Vec<i32> = done.attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, vec![500, 200], "a 500, then the retry's 200");
    assert!(
        done.attempts
            .iter()
            .all(|a| a.response_body.len() <= 1024 && !a.response_body.is_empty())
    );
    let got = receiver
        .wait_for("/flaky", 2, Duration::from_secs(5), |_| true)
        .await;
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].header("webhook-id"),
        got[1].header("webhook-id"),
        "one id across attempts"
    );
    assert_eq!(got.iter().filter(|r| r.status == 200).count(), 1, "accepted once");

    // Sent again by hand: same id, one more attempt.
    let again = client(&notify)
        .redeliver_webhook(authed(
            &owner,
            npb::RedeliverWebhookRequest {
                endpoint_id: flaky_id.clone(),
                delivery_id: sent.id.clone(),
            },
        ))
        .await
        .expect("redeliver")
        .into_inner();
    assert_eq!(again.status, npb::WebhookDeliveryStatus::Pending as i32);
    let got = receiver
        .wait_for("/flaky", 3, Duration::from_secs(20), |_| true)
        .await;
    assert_eq!(got.len(), 3);
    assert_eq!(got[2].header("webhook-id"), webhook_id(&sent));

    // An endpoint nobody answers on fails for good once the schedule is spent.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let dead = create(&notify, &owner, org, &format!("http://127.0.0.1:{closed}/"), &[])
        .await
        .expect("created");
    let dead_id = dead.endpoint.expect("endpoint").id;
    let sent = ping(&notify, &owner, &dead_id).await;
    let failed = delivery_when(&notify, &owner, &dead_id, &sent.id, |d| {
        d.status == npb::WebhookDeliveryStatus::Failed as i32
    })
    .await;
    assert_eq!(failed.status, npb::WebhookDeliveryStatus::Failed as i32);
    assert_eq!(failed.attempt_count, 3, "the first attempt and one per wait");
    assert!(
        failed
            .attempts
            .iter()
            .all(|a| a.status_code == 0 && a.error.contains("connect")),
        "{:?}",
        failed.attempts
    );

    // The log keeps settled deliveries for the retention only, and pending ones however old.
    let waiting = ping(&notify, &owner, &dead_id).await;
    let pruned = svc_notify::webhooks::prune(&notify.pool, Duration::ZERO)
        .await
        .expect("pruned");
    assert_eq!(pruned, 2, "the succeeded and the failed delivery");
    assert!(deliveries(&notify, &owner, &flaky_id).await.is_empty());
    let left: Vec<String> = deliveries(&notify, &owner, &dead_id)
        .await
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(left, vec![waiting.id], "the pending one stays");
}

#[tokio::test]
async fn gone_disables_redirects_fail_and_a_slow_endpoint_holds_up_no_other() {
    let stack = stack().await;
    let smtp = SmtpSink::start().await.expect("smtp");
    let notify = with_notify(&stack, &smtp, |c| {
        c.webhooks.timeout = Duration::from_secs(2);
        c.webhooks.lease = Duration::from_secs(10);
        c.webhooks.max_in_flight_per_endpoint = 2;
        c.webhooks.concurrency = 4;
    })
    .await;
    let receiver = WebhookReceiver::start().await.expect("receiver");
    let (org, owner) = stack.identity.organizer().await;
    let endpoint = |path: &'static str| {
        let (notify, owner, url) = (&notify, owner.clone(), receiver.url(path));
        async move {
            create(notify, &owner, org, &url, &[])
                .await
                .expect("created")
                .endpoint
                .expect("endpoint")
        }
    };

    // 410 Gone: the delivery fails at once and the endpoint is disabled.
    let gone = endpoint("/gone").await;
    let sent = ping(&notify, &owner, &gone.id).await;
    let failed = delivery_when(&notify, &owner, &gone.id, &sent.id, |d| {
        d.status == npb::WebhookDeliveryStatus::Failed as i32
    })
    .await;
    assert_eq!(failed.attempt_count, 1);
    let now = client(&notify)
        .get_webhook_endpoint(authed(
            &owner,
            npb::GetWebhookEndpointRequest {
                endpoint_id: gone.id.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner();
    assert!(!now.enabled && now.disabled_reason.contains("410"), "{now:?}");
    let refused = client(&notify)
        .ping_webhook_endpoint(authed(
            &owner,
            npb::PingWebhookEndpointRequest {
                endpoint_id: gone.id.clone(),
            },
        ))
        .await
        .expect_err("disabled");
    assert_eq!(refused.code(), Code::FailedPrecondition);

    // A redirect is not followed: the attempt is a failure, /ok never hears of it.
    let redirect = endpoint("/redirect").await;
    let sent = ping(&notify, &owner, &redirect.id).await;
    let tried = delivery_when(&notify, &owner, &redirect.id, &sent.id, |d| {
        !d.attempts.is_empty()
    })
    .await;
    assert_eq!(tried.attempts[0].status_code, 302);
    assert_eq!(
        tried.status,
        npb::WebhookDeliveryStatus::Pending as i32,
        "to be retried"
    );

    // Five pings to an endpoint that answers after 30 s, then one to a quick one: the quick
    // one arrives while the slow ones wait, and the slow ones time out.
    let slow = endpoint("/slow").await;
    let quick = endpoint("/ok").await;
    let mut slow_pings = Vec::new();
    for _ in 0..5 {
        slow_pings.push(ping(&notify, &owner, &slow.id).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let sent = ping(&notify, &owner, &quick.id).await;
    let got = receiver
        .wait_for("/ok", 1, Duration::from_secs(20), |r| {
            r.header("webhook-id") == webhook_id(&sent)
        })
        .await;
    assert_eq!(got.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the quick endpoint waited {:?}",
        started.elapsed()
    );
    let timed_out = delivery_when(&notify, &owner, &slow.id, &slow_pings[0].id, |d| {
        !d.attempts.is_empty()
    })
    .await;
    assert!(
        timed_out.attempts[0].error.contains("no answer within 2 s"),
        "{:?}",
        timed_out.attempts
    );
    // No more than two were ever in flight to the slow endpoint at once.
    let slow_got: Vec<Received> = receiver
        .received()
        .into_iter()
        .filter(|r| r.path == "/slow")
        .collect();
    assert!(slow_got.len() >= 2, "{slow_got:?}");
    assert!(slow_got.iter().all(|r| r.concurrent <= 2), "{slow_got:?}");
}

#[tokio::test]
async fn rotation_signs_with_both_secrets_while_they_overlap() {
    let stack = stack().await;
    let smtp = SmtpSink::start().await.expect("smtp");
    let notify = with_notify(&stack, &smtp, |_| {}).await;
    let receiver = WebhookReceiver::start().await.expect("receiver");
    let (org, owner) = stack.identity.organizer().await;
    let created = create(&notify, &owner, org, &receiver.url("/ok"), &[])
        .await
        .expect("created");
    let endpoint = created.endpoint.expect("endpoint");
    let rotated = client(&notify)
        .rotate_webhook_secret(authed(
            &owner,
            npb::RotateWebhookSecretRequest {
                endpoint_id: endpoint.id.clone(),
                overlap_seconds: 3600,
            },
        ))
        .await
        .expect("rotate")
        .into_inner();
    assert_ne!(rotated.secret, created.secret);
    assert!(
        rotated
            .endpoint
            .expect("endpoint")
            .previous_secret_expires_at
            .is_some()
    );
    let sent = ping(&notify, &owner, &endpoint.id).await;
    let got = receiver
        .wait_for("/ok", 1, Duration::from_secs(20), |r| {
            r.header("webhook-id") == webhook_id(&sent)
        })
        .await;
    assert_eq!(got[0].header("webhook-signature").split(' ').count(), 2);
    for secret in [&created.secret, &rotated.secret] {
        assert_eq!(verify_independently(secret, &got).expect("check"), vec![true]);
        assert!(own_verify(secret, &got[0]));
    }
    // With no overlap, only the new secret signs.
    let again = client(&notify)
        .rotate_webhook_secret(authed(
            &owner,
            npb::RotateWebhookSecretRequest {
                endpoint_id: endpoint.id.clone(),
                overlap_seconds: 1,
            },
        ))
        .await
        .expect("rotate")
        .into_inner();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let sent = ping(&notify, &owner, &endpoint.id).await;
    let got = receiver
        .wait_for("/ok", 1, Duration::from_secs(20), |r| {
            r.header("webhook-id") == webhook_id(&sent)
        })
        .await;
    assert_eq!(
        verify_independently(&again.secret, &got).expect("check"),
        vec![true]
    );
    assert_eq!(
        verify_independently(&rotated.secret, &got).expect("check"),
        vec![false]
    );
}

#[tokio::test]
async fn only_the_organizations_people_and_keys_manage_its_webhooks_and_bad_input_changes_nothing() {
    let stack = stack().await;
    let smtp = SmtpSink::start().await.expect("smtp");
    // As in production: inward addresses refused.
    let notify = with_notify(&stack, &smtp, |c| c.webhooks.allow_private_targets = false).await;
    let (org, owner) = stack.identity.organizer().await;
    let (_, other_owner) = stack.identity.organizer().await;
    let (_, buyer) = stack.buyer().await;
    let (_, admin) = stack.identity.user(&[Role::Admin]).await;
    // A plain member of the organization.
    let (member_id, member_first) = stack.identity.user(&[]).await;
    stack
        .identity
        .client()
        .add_member(authed(
            &owner,
            idpb::AddMemberRequest {
                organization_id: org.to_string(),
                member: Some(idpb::add_member_request::Member::UserId(member_id.to_string())),
                role: idpb::MemberRole::Member as i32,
            },
        ))
        .await
        .expect("member added");
    let member_email = stack
        .identity
        .client()
        .get_me(authed(&member_first, idpb::GetMeRequest {}))
        .await
        .expect("me")
        .into_inner()
        .email;
    let member = stack.identity.login(&member_email).await;
    let key = stack
        .identity
        .api_key(org, &owner, &[idpb::ApiKeyScope::Webhooks])
        .await;
    let key_without = stack
        .identity
        .api_key(
            org,
            &owner,
            &[idpb::ApiKeyScope::EventsWrite, idpb::ApiKeyScope::OrdersRead],
        )
        .await;
    let url = "https://partner.example.com/hooks";

    // Who may create.
    for (who, token, allowed) in [
        ("owner", &owner, true),
        ("admin", &admin, true),
        ("key with the webhooks scope", &key, true),
        ("member", &member, false),
        ("key without the scope", &key_without, false),
        ("another organization's owner", &other_owner, false),
        ("buyer", &buyer, false),
    ] {
        let got = create(&notify, token, org, url, &[]).await;
        match (allowed, got) {
            (true, Ok(_)) => {}
            (false, Err(s)) => assert_eq!(s.code(), Code::PermissionDenied, "{who}: {s:?}"),
            (allowed, got) => panic!("{who}: allowed {allowed}, got {got:?}"),
        }
    }
    let unauthenticated = create(&notify, "", org, url, &[]).await.expect_err("no token");
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
    let endpoint = create(&notify, &owner, org, url, &[])
        .await
        .expect("created")
        .endpoint
        .expect("endpoint");

    // Who may see it: the organization's people and keys; to others it does not exist.
    for (who, token, seen) in [
        ("owner", &owner, true),
        ("member", &member, true),
        ("admin", &admin, true),
        ("key", &key, true),
        ("key without the scope", &key_without, false),
        ("another organization's owner", &other_owner, false),
        ("buyer", &buyer, false),
    ] {
        let got = client(&notify)
            .get_webhook_endpoint(authed(
                token,
                npb::GetWebhookEndpointRequest {
                    endpoint_id: endpoint.id.clone(),
                },
            ))
            .await;
        match (seen, got) {
            (true, Ok(r)) => assert_eq!(r.into_inner().url, url, "{who}"),
            (false, Err(s)) => assert_eq!(s.code(), Code::NotFound, "{who}: {s:?}"),
            (seen, got) => panic!("{who}: seen {seen}, got {got:?}"),
        }
        let listed = client(&notify)
            .list_webhook_endpoints(authed(
                token,
                npb::ListWebhookEndpointsRequest {
                    organization_id: org.to_string(),
                    ..Default::default()
                },
            ))
            .await;
        assert_eq!(listed.is_ok(), seen, "{who} lists: {listed:?}");
    }
    // A member sees but does not change, rotate or delete.
    let rotate = |token: &str| {
        let (notify, token, id) = (&notify, token.to_string(), endpoint.id.clone());
        async move {
            client(notify)
                .rotate_webhook_secret(authed(
                    &token,
                    npb::RotateWebhookSecretRequest {
                        endpoint_id: id,
                        overlap_seconds: 0,
                    },
                ))
                .await
        }
    };
    assert_eq!(
        rotate(&member).await.expect_err("member").code(),
        Code::PermissionDenied
    );
    assert_eq!(
        rotate(&other_owner).await.expect_err("outsider").code(),
        Code::NotFound
    );
    assert!(rotate(&key).await.is_ok());
    let deleted = client(&notify)
        .delete_webhook_endpoint(authed(
            &member,
            npb::DeleteWebhookEndpointRequest {
                endpoint_id: endpoint.id.clone(),
            },
        ))
        .await
        .expect_err("member");
    assert_eq!(deleted.code(), Code::PermissionDenied);

    // Bad input: a clear error naming the field, and nothing stored.
    let count = || {
        let (notify, owner) = (&notify, owner.clone());
        async move {
            client(notify)
                .list_webhook_endpoints(authed(
                    &owner,
                    npb::ListWebhookEndpointsRequest {
                        organization_id: org.to_string(),
                        page_size: 100,
                        ..Default::default()
                    },
                ))
                .await
                .expect("list")
                .into_inner()
                .endpoints
                .len()
        }
    };
    let before = count().await;
    for (bad_url, types, field) in [
        ("http://127.0.0.1:9/", vec![], "url"),
        ("http://10.0.0.7/hooks", vec![], "url"),
        ("http://localhost:8080/", vec![], "url"),
        ("http://[::1]/", vec![], "url"),
        ("http://169.254.169.254/latest", vec![], "url"),
        ("ftp://partner.example.com/", vec![], "url"),
        ("https://user:pw@partner.example.com/", vec![], "url"),
        ("", vec![], "url"),
        (url, vec!["order.teleported"], "event_types"),
    ] {
        let status = create(&notify, &owner, org, bad_url, &types)
            .await
            .expect_err(bad_url);
        assert_eq!(status.code(), Code::InvalidArgument, "{bad_url}");
        let details = tonic_types::StatusExt::get_details_bad_request(&status).expect("field violations");
        assert_eq!(details.field_violations[0].field, field, "{bad_url}");
    }
    let too_long = client(&notify)
        .create_webhook_endpoint(authed(
            &owner,
            npb::CreateWebhookEndpointRequest {
                organization_id: org.to_string(),
                url: url.into(),
                event_types: vec![],
                description: "d".repeat(201),
            },
        ))
        .await
        .expect_err("too long");
    assert_eq!(too_long.code(), Code::InvalidArgument);
    let update = client(&notify)
        .update_webhook_endpoint(authed(
            &owner,
            npb::UpdateWebhookEndpointRequest {
                endpoint: Some(npb::WebhookEndpoint {
                    id: endpoint.id.clone(),
                    url: "http://192.168.0.1/".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["url".into()],
                }),
            },
        ))
        .await
        .expect_err("private");
    assert_eq!(update.code(), Code::InvalidArgument);
    let bad_page = client(&notify)
        .list_webhook_deliveries(authed(
            &owner,
            npb::ListWebhookDeliveriesRequest {
                endpoint_id: endpoint.id.clone(),
                page_token: "not-a-token".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("bad token");
    assert_eq!(bad_page.code(), Code::InvalidArgument);
    assert_eq!(count().await, before, "nothing stored");
    let still = client(&notify)
        .get_webhook_endpoint(authed(
            &owner,
            npb::GetWebhookEndpointRequest {
                endpoint_id: endpoint.id.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(still.url, url, "the refused update changed nothing");

    // The owner deletes; it is gone.
    client(&notify)
        .delete_webhook_endpoint(authed(
            &owner,
            npb::DeleteWebhookEndpointRequest {
                endpoint_id: endpoint.id.clone(),
            },
        ))
        .await
        .expect("deleted");
    let gone = client(&notify)
        .get_webhook_endpoint(authed(
            &owner,
            npb::GetWebhookEndpointRequest {
                endpoint_id: endpoint.id.clone(),
            },
        ))
        .await
        .expect_err("gone");
    assert_eq!(gone.code(), Code::NotFound);
}
