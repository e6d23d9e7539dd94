//! Check-in at the gate: exactly one of concurrent scans of a ticket is accepted.

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use ticketing_platform::{
    ApiError, ApiResult,
    messaging::{self, OutboxEvent},
    time::to_timestamp,
};
use ticketing_proto::ticketing::{events::v1 as events, orders::v1 as pb};
use uuid::Uuid;

use crate::{orders::*, schema::tickets, store::*, tickets::TicketClaim};

impl Orders {
    /// Scans a ticket at a gate. Exactly one of concurrent scans is accepted.
    pub async fn check_in(
        &self,
        event_id: Uuid,
        secret: &str,
        gate: &str,
        nonce: &str,
    ) -> ApiResult<pb::CheckInResponse> {
        let Some(TicketClaim {
            ticket_id,
            event_id: ticket_event,
        }) = self.signer.verify(secret)
        else {
            return Ok(pb::CheckInResponse {
                result: pb::CheckInResult::Invalid as i32,
                ..Default::default()
            });
        };
        if ticket_event != event_id {
            return Ok(pb::CheckInResponse {
                result: pb::CheckInResult::WrongEvent as i32,
                ..Default::default()
            });
        }
        let mut conn = self.pool.get().await?;
        let response = conn
            .transaction::<_, ApiError, _>(async |conn| {
                let now = Utc::now();
                let nonce = (!nonce.is_empty()).then_some(nonce);
                let accepted: Option<TicketRow> = diesel::update(
                    tickets::table
                        .find(ticket_id)
                        .filter(tickets::status.eq(TicketStatus::Valid))
                        .filter(tickets::secret.eq(secret)),
                )
                .set((
                    tickets::status.eq(TicketStatus::CheckedIn),
                    tickets::checked_in_at.eq(Some(now)),
                    tickets::check_in_gate.eq(Some(gate)),
                    tickets::check_in_nonce.eq(nonce),
                ))
                .returning(TicketRow::as_returning())
                .get_result(conn)
                .await
                .optional()?;
                if let Some(ticket) = accepted {
                    messaging::enqueue(
                        conn,
                        vec![OutboxEvent::of(
                            ticket.id,
                            &events::TicketCheckedIn {
                                ticket_id: ticket.id.to_string(),
                                event_id: ticket.event_id.to_string(),
                                order_id: ticket.order_id.to_string(),
                                gate: gate.to_string(),
                                at: Some(to_timestamp(now)),
                            },
                        )],
                    )
                    .await?;
                    let line = line_of(conn, ticket.line_id).await?;
                    return Ok(pb::CheckInResponse {
                        result: pb::CheckInResult::Accepted as i32,
                        ticket: Some(ticket.to_proto(line.as_ref(), false)),
                        first_check_in: None,
                    });
                }
                let ticket: Option<TicketRow> = tickets::table
                    .find(ticket_id)
                    .select(TicketRow::as_select())
                    .first(conn)
                    .await
                    .optional()?;
                let Some(ticket) = ticket.filter(|t| t.secret == secret) else {
                    return Ok(pb::CheckInResponse {
                        result: pb::CheckInResult::Invalid as i32,
                        ..Default::default()
                    });
                };
                let line = line_of(conn, ticket.line_id).await?;
                let result = match ticket.status {
                    // The same scan retried (same nonce) is not a second entry.
                    TicketStatus::CheckedIn
                        if nonce.is_some() && ticket.check_in_nonce.as_deref() == nonce =>
                    {
                        pb::CheckInResult::Accepted
                    }
                    TicketStatus::CheckedIn => pb::CheckInResult::AlreadyCheckedIn,
                    _ => pb::CheckInResult::Revoked,
                };
                Ok(pb::CheckInResponse {
                    result: result as i32,
                    first_check_in: (result == pb::CheckInResult::AlreadyCheckedIn)
                        .then(|| ticket.check_in_record())
                        .flatten(),
                    ticket: Some(ticket.to_proto(line.as_ref(), false)),
                })
            })
            .await?;
        if response.result == pb::CheckInResult::Accepted as i32 {
            self.outbox.notify();
        }
        Ok(response)
    }
}
