//! The internal door: every RPC without a REST route, taken from the descriptors, called with
//! every kind of credential. Only a service the call graph allows gets through; a new internal
//! RPC cannot escape the walk, and one that declares no caller fails it.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut};
use prost::Message;
use ticketing_e2e::SERVICE_CLIENTS;
use ticketing_platform::{
    auth::Role,
    service_auth::{Access, CallGraph, Rpc, SERVICE_TOKEN_HEADER},
};
use ticketing_proto::ticketing::{
    catalog::v1 as cat,
    common::v1::Money,
    identity::v1::{self as idpb, ApiKeyScope},
    inventory::v1 as inv,
    orders::v1 as pb,
    payments::v1::{self as payments},
};
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
};
use uuid::Uuid;

use crate::helpers::*;

/// Bytes in, bytes out: calls any RPC by path with a message encoded beforehand.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = buf.remaining();
        Ok(Some(buf.copy_to_bytes(n).to_vec()))
    }
}

/// How a call proves who makes it.
#[derive(Clone)]
pub enum Credential {
    None,
    /// `authorization: Bearer`: an end user's or an API key's access token.
    Bearer(String),
    /// `x-service-token`.
    Service(String),
}

/// Calls the RPC at `rpc.path` with `body` (encoded), as `credential`.
pub async fn call(channel: &Channel, rpc: &Rpc, credential: &Credential, body: &[u8]) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(body.to_vec());
    match credential {
        Credential::None => {}
        Credential::Bearer(token) => {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
        }
        Credential::Service(token) => {
            request
                .metadata_mut()
                .insert(SERVICE_TOKEN_HEADER, token.parse().expect("ascii"));
        }
    }
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(rpc.path.as_str()).expect("path");
    if rpc.server_streaming {
        let mut stream = grpc.server_streaming(request, path, RawCodec).await?.into_inner();
        stream.message().await?;
        return Ok(());
    }
    grpc.unary(request, path, RawCodec).await.map(drop)
}

/// What buyers own, which an internal RPC could harm if its door were open.
struct Scene {
    sale: Sale,
    buyer: String,
    paid: pb::Order,
    hold: inv::Hold,
    payment_id: String,
    new_event: String,
}

impl Scene {
    /// Everything as it should still be after the refused calls.
    async fn intact(&self, s: &Stack, payments_before: (i64, i64, i64), keys_before: &BTreeSet<String>) {
        let hold = s
            .inventory()
            .get_hold(authed(
                &self.buyer,
                inv::GetHoldRequest {
                    hold_id: self.hold.id.clone(),
                },
            ))
            .await
            .expect("hold")
            .into_inner();
        assert_eq!(
            hold.status,
            inv::HoldStatus::Active as i32,
            "the hold is untouched"
        );
        let order = s
            .orders()
            .get_order(authed(
                &self.buyer,
                pb::GetOrderRequest {
                    order_id: self.paid.id.clone(),
                },
            ))
            .await
            .expect("order")
            .into_inner();
        assert_eq!(order.status, pb::OrderStatus::Paid as i32, "the order stays paid");
        let ticket = s
            .orders()
            .get_ticket(authed(
                &self.buyer,
                pb::GetTicketRequest {
                    ticket_id: order.lines[0].ticket_id.clone(),
                },
            ))
            .await
            .expect("ticket")
            .into_inner();
        assert_eq!(
            ticket.status,
            pb::TicketStatus::Valid as i32,
            "the ticket stays valid"
        );
        assert_eq!(
            s.seat_status(&self.sale, &self.sale.seats[0]).await,
            inv::SeatStatus::Sold as i32,
            "the sold seat stays sold"
        );
        assert_eq!(
            s.seat_status(&self.sale, &self.sale.seats[5]).await,
            inv::SeatStatus::Free as i32,
            "the event stays on sale"
        );
        let unconfigured = s
            .inventory()
            .get_availability(inv::GetAvailabilityRequest {
                event_id: self.new_event.clone(),
                counts_only: true,
            })
            .await
            .expect_err("no event was configured");
        assert_eq!(reason(&unconfigured), "EVENT_NOT_ON_SALE");
        assert_eq!(s.payment_totals().await, payments_before, "no charge, no refund");
        assert_eq!(&jwks(s).await, keys_before, "no key was rotated");
    }
}

async fn jwks(s: &Stack) -> BTreeSet<String> {
    s.identity
        .client()
        .get_jwks(idpb::GetJwksRequest {})
        .await
        .expect("jwks")
        .into_inner()
        .keys
        .into_iter()
        .map(|k| k.kid)
        .collect()
}

/// Requests that would change something if they were served: each internal RPC's own.
fn harmful_requests(scene: &Scene, buyer_id: Uuid, api_key_secret: &str) -> BTreeMap<String, Vec<u8>> {
    let card = |key: String| payments::ChargeRequest {
        idempotency_key: key,
        order_id: scene.paid.id.clone(),
        customer_id: buyer_id.to_string(),
        amount: Some(Money {
            amount_minor: 1,
            currency: "EUR".into(),
        }),
        card_number: CARD_OK.into(),
        exp_month: 12,
        exp_year: 2099,
        cvc: "123".into(),
        ..Default::default()
    };
    [
        (
            "/ticketing.inventory.v1.InventoryService/CommitHold",
            inv::CommitHoldRequest {
                hold_id: scene.hold.id.clone(),
                order_id: Uuid::now_v7().to_string(),
                customer_id: buyer_id.to_string(),
            }
            .encode_to_vec(),
        ),
        (
            // Sells a free seat to an order that never existed.
            "/ticketing.inventory.v1.InventoryService/ReclaimPlaces",
            inv::ReclaimPlacesRequest {
                order_id: Uuid::now_v7().to_string(),
                event_id: scene.sale.event_id.clone(),
                customer_id: buyer_id.to_string(),
                hold_id: Uuid::now_v7().to_string(),
                items: vec![inv::HoldItem {
                    tier_id: scene.hold.items[0].tier_id.clone(),
                    place: Some(inv::hold_item::Place::SeatId(scene.sale.seats[6].clone())),
                    quantity: 1,
                }],
            }
            .encode_to_vec(),
        ),
        (
            // Tells who paid what, and how.
            "/ticketing.payments.v1.PaymentsService/GetCharge",
            payments::GetChargeRequest {
                idempotency_key: format!("order:{}:attempt:1", scene.paid.id),
                order_id: scene.paid.id.clone(),
            }
            .encode_to_vec(),
        ),
        (
            "/ticketing.inventory.v1.InventoryService/ConfigureEvent",
            inv::ConfigureEventRequest {
                event_id: scene.new_event.clone(),
                version: 1,
                organization_id: scene.sale.org.to_string(),
                per_customer_limit: 10,
                seats: vec![inv::SeatAssignment {
                    seat_id: "x1".into(),
                    tier_id: "t".into(),
                }],
                quotas: vec![],
            }
            .encode_to_vec(),
        ),
        (
            "/ticketing.inventory.v1.InventoryService/CloseEvent",
            inv::CloseEventRequest {
                event_id: scene.sale.event_id.clone(),
            }
            .encode_to_vec(),
        ),
        (
            "/ticketing.payments.v1.PaymentsService/Charge",
            card(format!("walk-{}", Uuid::new_v4().simple())).encode_to_vec(),
        ),
        (
            "/ticketing.payments.v1.PaymentsService/Refund",
            payments::RefundRequest {
                idempotency_key: format!("walk-{}", Uuid::new_v4().simple()),
                payment_id: scene.payment_id.clone(),
                amount: None,
                reason: "walk".into(),
            }
            .encode_to_vec(),
        ),
        (
            "/ticketing.identity.v1.IdentityService/VerifyApiKey",
            idpb::VerifyApiKeyRequest {
                secret: api_key_secret.into(),
            }
            .encode_to_vec(),
        ),
        (
            // The grant asked with a token instead of the client's secret.
            "/ticketing.identity.v1.IdentityService/IssueServiceToken",
            idpb::IssueServiceTokenRequest {
                client_id: "orders".into(),
                client_secret: "a guess".into(),
                audience: "payments".into(),
            }
            .encode_to_vec(),
        ),
        (
            "/ticketing.identity.v1.IdentityService/RotateSigningKey",
            idpb::RotateSigningKeyRequest {}.encode_to_vec(),
        ),
        (
            "/ticketing.catalog.v1.CatalogService/BatchGetTicketTiers",
            cat::BatchGetTicketTiersRequest {
                event_id: scene.sale.event_id.clone(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
    ]
    .into_iter()
    .map(|(path, body)| (path.to_string(), body))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_internal_rpc_refuses_every_credential_but_an_allowed_services() {
    let s = stack().await;
    let channels: BTreeMap<&str, Channel> = [
        ("identity", s.identity.channel.clone()),
        ("catalog", s.catalog.clone()),
        ("inventory", s.inventory.clone()),
        ("orders", s.orders.clone()),
        ("payments", s.payments.clone()),
    ]
    .into();
    let sale = s.sale(10, 30).await;
    let (buyer_id, buyer) = s.buyer().await;
    let paid = s.checkout(&buyer, &sale, &sale.seats[..1]).await;
    let hold = s
        .hold(&buyer, &sale, &sale.seats[1..2], None)
        .await
        .expect("hold");
    let payment_id = s.payment_of(&buyer, &paid.id).await.id;
    let scene = Scene {
        sale,
        buyer,
        paid,
        hold,
        payment_id,
        new_event: Uuid::now_v7().to_string(),
    };
    let (_, admin) = s.identity.user(&[Role::Admin]).await;
    let all_scopes = [
        ApiKeyScope::EventsRead,
        ApiKeyScope::EventsWrite,
        ApiKeyScope::OrdersRead,
        ApiKeyScope::OrdersWrite,
        ApiKeyScope::Checkin,
        ApiKeyScope::ReportsRead,
        ApiKeyScope::Webhooks,
    ];
    let api_key = s
        .identity
        .api_key(scene.sale.org, &scene.sale.organizer, &all_scopes)
        .await;
    let api_key_secret = s
        .identity
        .api_key_secret(scene.sale.org, &scene.sale.organizer, &all_scopes)
        .await;
    let requests = harmful_requests(&scene, buyer_id, &api_key_secret);
    let payments_before = s.payment_totals().await;
    let keys_before = jwks(&s).await;

    let graph = CallGraph::platform();
    let mut internal: Vec<&Rpc> = graph
        .rpcs()
        .into_iter()
        .filter(|r| r.access != Access::Public)
        .collect();
    // Closing the event ends the sale: the allowed calls make it last.
    internal.sort_by_key(|r| (r.method == "CloseEvent", r.path.clone()));
    assert!(internal.len() >= 9, "the descriptors name the internal RPCs");
    let mut tokens: BTreeMap<(String, String), String> = BTreeMap::new();
    for client in SERVICE_CLIENTS {
        for audience in channels.keys() {
            let token = s.identity.service_token(client, audience).await;
            tokens.insert((client.to_string(), audience.to_string()), token);
        }
    }
    let mut failures = Vec::new();
    let mut walked = 0;
    for rpc in &internal {
        let channel = channels.get(rpc.service.as_str()).unwrap_or_else(|| {
            panic!(
                "{} is internal, but its service is not in the test platform: start it there",
                rpc.path
            )
        });
        let body = requests.get(&rpc.path).cloned().unwrap_or_default();
        let allowed = match &rpc.access {
            Access::Internal(callers) => {
                assert!(!callers.is_empty(), "{} declares no caller", rpc.path);
                callers.clone()
            }
            _ => BTreeSet::new(),
        };
        // Every kind of credential that is not an allowed service's, and what it must get.
        let mut tries: Vec<(String, Credential, Code)> = vec![
            ("no credential".into(), Credential::None, Code::Unauthenticated),
            (
                "a customer's token".into(),
                Credential::Bearer(scene.buyer.clone()),
                Code::Unauthenticated,
            ),
            (
                "an organizer's token".into(),
                Credential::Bearer(scene.sale.organizer.clone()),
                Code::Unauthenticated,
            ),
            (
                "an admin's token".into(),
                Credential::Bearer(admin.clone()),
                Code::Unauthenticated,
            ),
            (
                "an API key's token".into(),
                Credential::Bearer(api_key.clone()),
                Code::Unauthenticated,
            ),
            (
                "an admin's token as a service token".into(),
                Credential::Service(admin.clone()),
                Code::Unauthenticated,
            ),
            (
                "a garbled service token".into(),
                Credential::Service("x.y.z".into()),
                Code::Unauthenticated,
            ),
        ];
        for client in SERVICE_CLIENTS {
            let token = tokens[&(client.to_string(), rpc.service.clone())].clone();
            if !allowed.contains(client) {
                let expected = match rpc.access {
                    // The grant answers only to the secret in the request.
                    Access::ClientCredentials => Code::Unauthenticated,
                    _ => Code::PermissionDenied,
                };
                tries.push((
                    format!("the {client} service's token"),
                    Credential::Service(token),
                    expected,
                ));
            }
        }
        for caller in &allowed {
            // An allowed caller's token for another service is not accepted here.
            let other = channels
                .keys()
                .find(|a| **a != rpc.service)
                .expect("another service");
            let token = tokens[&(caller.clone(), other.to_string())].clone();
            tries.push((
                format!("{caller}'s token for {other}"),
                Credential::Service(token),
                Code::Unauthenticated,
            ));
        }
        for (what, credential, expected) in &tries {
            walked += 1;
            match call(channel, rpc, credential, &body).await {
                Err(status) if status.code() == *expected => {}
                Err(status) => failures.push(format!(
                    "{} with {what}: {:?} {} (wanted {expected:?})",
                    rpc.path,
                    status.code(),
                    status.message()
                )),
                Ok(()) => failures.push(format!("{} with {what}: served!", rpc.path)),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(walked > 100, "{walked} calls");
    scene.intact(&s, payments_before, &keys_before).await;

    // The allowed services get through, with the request each would really send. The grant
    // takes its client's secret rather than a token.
    let mut refused = Vec::new();
    for rpc in &internal {
        let channel = &channels[rpc.service.as_str()];
        let result = match &rpc.access {
            Access::Internal(callers) => {
                let caller = callers.iter().next().expect("a caller");
                let token = tokens[&(caller.clone(), rpc.service.clone())].clone();
                let body = requests.get(&rpc.path).cloned().unwrap_or_default();
                call(channel, rpc, &Credential::Service(token), &body).await
            }
            // Every token the walk used came from the grant with the client's own secret.
            Access::ClientCredentials => Ok(()),
            Access::Public => Ok(()),
        };
        match result {
            Ok(()) => {}
            // A request the walk has no sample for may be refused for its content, never
            // for who sent it.
            Err(status)
                if !requests.contains_key(&rpc.path)
                    && !matches!(status.code(), Code::Unauthenticated | Code::PermissionDenied) => {}
            Err(status) => refused.push(format!("{}: {:?} {}", rpc.path, status.code(), status.message())),
        }
    }
    assert!(
        refused.is_empty(),
        "allowed callers refused:\n{}",
        refused.join("\n")
    );
}
