use std::sync::Arc;

use futures::future::join_all;
use ticketing_proto::ticketing::{
    identity::v1 as idpb,
    orders::v1::{self as pb},
};
use tonic::Code;

use crate::helpers::*;

async fn scan(
    stack: &Stack,
    token: &str,
    event: &str,
    secret: &str,
    gate: &str,
    nonce: &str,
) -> pb::CheckInResponse {
    stack
        .orders()
        .check_in(authed(
            token,
            pb::CheckInRequest {
                event_id: event.into(),
                secret: secret.into(),
                gate: gate.into(),
                nonce: nonce.into(),
            },
        ))
        .await
        .expect("scan")
        .into_inner()
}

/// The paid order's first ticket as its holder sees it (with the secret).
async fn first_ticket(stack: &Stack, token: &str, paid: &pb::Order) -> pb::Ticket {
    stack
        .orders()
        .get_ticket(authed(
            token,
            pb::GetTicketRequest {
                ticket_id: paid.lines[0].ticket_id.clone(),
            },
        ))
        .await
        .expect("ticket")
        .into_inner()
}

#[tokio::test]
async fn a_ticket_checks_in_once_and_forged_or_altered_secrets_are_refused() {
    let stack = stack().await;
    let sale = stack.sale(10, 30).await;
    let (_, token) = stack.buyer().await;
    let paid = stack.checkout(&token, &sale, &sale.seats[..1]).await;
    let ticket = first_ticket(&stack, &token, &paid).await;
    assert_eq!(ticket.seat_id, sale.seats[0]);
    assert_eq!(ticket.seat_label, "Stalls A1", "the seat as the buyer reads it");
    let first = scan(
        &stack,
        &sale.organizer,
        &sale.event_id,
        &ticket.secret,
        "north",
        "scan-1",
    )
    .await;
    assert_eq!(first.result, pb::CheckInResult::Accepted as i32);
    // The same scan retried is not a second entry.
    let retried = scan(
        &stack,
        &sale.organizer,
        &sale.event_id,
        &ticket.secret,
        "north",
        "scan-1",
    )
    .await;
    assert_eq!(retried.result, pb::CheckInResult::Accepted as i32);
    let second = scan(
        &stack,
        &sale.organizer,
        &sale.event_id,
        &ticket.secret,
        "south",
        "scan-2",
    )
    .await;
    assert_eq!(second.result, pb::CheckInResult::AlreadyCheckedIn as i32);
    assert_eq!(
        second.first_check_in.as_ref().map(|c| c.gate.as_str()),
        Some("north")
    );

    let mut altered = ticket.secret.clone().into_bytes();
    let last = altered.len() - 3;
    altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).expect("ascii");
    for forged in [altered.as_str(), "tk-0000.AAAA", "garbage"] {
        let refused = scan(&stack, &sale.organizer, &sale.event_id, forged, "north", "").await;
        assert_eq!(refused.result, pb::CheckInResult::Invalid as i32, "{forged}");
    }
    // A ticket of another event is refused there.
    let other = stack.sale(10, 30).await;
    let wrong = scan(
        &stack,
        &other.organizer,
        &other.event_id,
        &ticket.secret,
        "north",
        "",
    )
    .await;
    assert_eq!(wrong.result, pb::CheckInResult::WrongEvent as i32);
    // Only the event's staff scan.
    let denied = stack
        .orders()
        .check_in(authed(
            &token,
            pb::CheckInRequest {
                event_id: sale.event_id.clone(),
                secret: ticket.secret.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("a buyer cannot scan");
    assert_eq!(denied.code(), Code::PermissionDenied);
    // Offline scanners get the public keys.
    let keys = stack
        .orders()
        .get_ticket_verification_keys(authed(
            &sale.organizer,
            pb::GetTicketVerificationKeysRequest {
                event_id: sale.event_id.clone(),
            },
        ))
        .await
        .expect("keys")
        .into_inner();
    assert_eq!(keys.keys.len(), 1);
    // The QR code renders.
    let qr = stack
        .orders()
        .get_ticket_qr_code(authed(
            &token,
            pb::GetTicketQrCodeRequest {
                ticket_id: ticket.id.clone(),
                format: pb::QrFormat::Png as i32,
            },
        ))
        .await
        .expect("qr")
        .into_inner();
    assert_eq!(qr.content_type, "image/png");
    assert_eq!(&qr.data[1..4], b"PNG");
}

#[tokio::test]
async fn concurrent_scans_of_one_ticket_admit_exactly_one() {
    let stack = Arc::new(stack().await);
    let sale = stack.sale(10, 30).await;
    let (_, token) = stack.buyer().await;
    let paid = stack.checkout(&token, &sale, &sale.seats[..1]).await;
    let secret = first_ticket(&stack, &token, &paid).await.secret;
    let scans = join_all((0..16).map(|i| {
        let (stack, organizer, event, secret) = (
            stack.clone(),
            sale.organizer.clone(),
            sale.event_id.clone(),
            secret.clone(),
        );
        tokio::spawn(async move {
            scan(
                &stack,
                &organizer,
                &event,
                &secret,
                &format!("gate-{i}"),
                &format!("n{i}"),
            )
            .await
        })
    }))
    .await;
    let accepted = scans
        .into_iter()
        .filter(|r| r.as_ref().expect("task").result == pb::CheckInResult::Accepted as i32)
        .count();
    assert_eq!(accepted, 1);
}

#[tokio::test]
async fn a_refunded_ticket_is_revoked_at_the_gate() {
    let stack = stack().await;
    let sale = stack.sale(10, 30).await;
    let (_, token) = stack.buyer().await;
    let paid = stack.checkout(&token, &sale, &sale.seats[..1]).await;
    let secret = first_ticket(&stack, &token, &paid).await.secret;
    stack
        .orders()
        .refund_order(authed(
            &token,
            pb::RefundOrderRequest {
                order_id: paid.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("refunded");
    let revoked = scan(&stack, &sale.organizer, &sale.event_id, &secret, "north", "").await;
    assert_eq!(revoked.result, pb::CheckInResult::Revoked as i32);
    // A check-in API key of the organization may scan; one without the scope may not.
    let scanner = stack
        .identity
        .api_key(sale.org, &sale.organizer, &[idpb::ApiKeyScope::Checkin])
        .await;
    let by_key = scan(&stack, &scanner, &sale.event_id, &secret, "north", "").await;
    assert_eq!(by_key.result, pb::CheckInResult::Revoked as i32);
    let reader = stack
        .identity
        .api_key(sale.org, &sale.organizer, &[idpb::ApiKeyScope::EventsRead])
        .await;
    let denied = stack
        .orders()
        .check_in(authed(
            &reader,
            pb::CheckInRequest {
                event_id: sale.event_id.clone(),
                secret,
                ..Default::default()
            },
        ))
        .await
        .expect_err("no checkin scope");
    assert_eq!(denied.code(), Code::PermissionDenied);
}
