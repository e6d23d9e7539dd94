//! The gRPC surface: validate, authorize, call [`Orders`].

use chrono::Utc;
use ticketing_platform::{
    ApiError, ApiResult,
    auth::{Principal, Scope, TokenVerifier, bearer_token},
    error::{Violations, parse_id, required},
    fieldmask::{self, field},
    money,
    pagination::{self, Cursor},
    qr,
};
use ticketing_proto::{
    google::api::HttpBody,
    ticketing::orders::v1::{self as pb, orders_service_server::OrdersService},
};
use tonic::{Request, Response, Status, metadata::MetadataMap};
use uuid::Uuid;

use crate::{
    orders::{CardInput, NewOrder, Orders},
    store::{self, DiscountRow, LineRow, OrderFilter, OrderRow, OrderStatus, TicketRow},
};

pub struct OrdersApi {
    pub orders: Orders,
    pub verifier: TokenVerifier,
}

fn check_key(v: &mut Violations, field: &str, key: &str) {
    if !(8..=128).contains(&key.len()) || !key.bytes().all(|b| b.is_ascii_graphic()) {
        v.add(field, "must be 8 to 128 printable ASCII characters");
    }
}

fn valid_code(code: &str) -> bool {
    (3..=32).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

impl OrdersApi {
    async fn caller(&self, metadata: &MetadataMap) -> ApiResult<(Principal, String)> {
        let principal = self.verifier.authenticate(metadata).await?;
        let token = bearer_token(metadata)?.unwrap_or_default().to_string();
        Ok((principal, token))
    }

    /// Staff of the event's organization (API keys need `scope`) and admins.
    fn is_staff(principal: &Principal, org: Uuid, scope: Scope) -> bool {
        principal.is_admin() || (principal.can_act_for(org) && principal.require_scope(scope).is_ok())
    }

    /// The order if the caller may see it; NOT_FOUND otherwise (no probing of ids).
    async fn visible_order(&self, principal: &Principal, id: Uuid, scope: Scope) -> ApiResult<OrderRow> {
        let order = self
            .orders
            .find(id)
            .await?
            .ok_or(ApiError::NotFound { resource: "order" })?;
        if principal.user_id().ok() == Some(order.buyer_id)
            || Self::is_staff(principal, order.organization_id, scope)
        {
            Ok(order)
        } else {
            Err(ApiError::NotFound { resource: "order" })
        }
    }

    async fn create_order(&self, request: Request<pb::CreateOrderRequest>) -> ApiResult<pb::Order> {
        let (principal, token) = self.caller(request.metadata()).await?;
        principal.require_scope(Scope::OrdersWrite)?;
        let buyer_id = principal.user_id()?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let hold_id = v.id("hold_id", &r.hold_id);
        check_key(&mut v, "idempotency_key", &r.idempotency_key);
        let discount_code =
            (!r.discount_code.is_empty()).then(|| r.discount_code.trim().to_ascii_uppercase());
        if discount_code.as_deref().is_some_and(|c| !valid_code(c)) {
            v.add("discount_code", "must be 3 to 32 letters and digits");
        }
        if !r.buyer_email.is_empty() && !email_address::EmailAddress::is_valid(&r.buyer_email) {
            v.add("buyer_email", "is not an e-mail address");
        }
        let hold_id = v.finish(hold_id)?;
        let order = self
            .orders
            .create(
                &token,
                NewOrder {
                    buyer_id,
                    buyer_email: r.buyer_email.to_lowercase(),
                    hold_id,
                    idempotency_key: r.idempotency_key,
                    discount_code,
                },
            )
            .await?;
        Ok(order.to_proto())
    }

    async fn pay_order(&self, request: Request<pb::PayOrderRequest>) -> ApiResult<pb::Order> {
        let principal = self.verifier.authenticate(request.metadata()).await?;
        let caller = principal.user_id()?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let order_id = v.id("order_id", &r.order_id);
        let card = match &r.card {
            Some(card) => {
                let number = money::check_card(
                    &mut v,
                    ["card.number", "card.exp_month", "card.exp_year", "card.cvc"],
                    &money::CardFields {
                        number: &card.number,
                        exp_month: card.exp_month,
                        exp_year: card.exp_year,
                        cvc: &card.cvc,
                    },
                );
                Some(CardInput {
                    number,
                    exp_month: card.exp_month,
                    exp_year: card.exp_year,
                    cvc: card.cvc.clone(),
                })
            }
            None => {
                v.add("card", "is required");
                None
            }
        };
        let (order_id, card) = v.finish((order_id, card))?;
        // Reserve, charge, issue: to the end, whether or not the caller waits for it.
        let orders = self.orders.clone();
        let paid =
            ticketing_platform::server::to_the_end(async move { orders.pay(caller, order_id, card).await })
                .await?;
        Ok(paid.to_proto())
    }

    async fn cancel_order(&self, request: Request<pb::CancelOrderRequest>) -> ApiResult<pb::Order> {
        let (principal, _) = self.caller(request.metadata()).await?;
        let r = request.into_inner();
        let order_id = parse_id("order_id", &r.order_id)?;
        if r.reason.len() > 500 {
            return Err(ApiError::invalid("reason", "at most 500 characters"));
        }
        self.visible_order(&principal, order_id, Scope::OrdersWrite)
            .await?;
        let order = self.orders.cancel(order_id, &r.reason).await?;
        self.orders.proto(&order).await
    }

    async fn refund_order(&self, request: Request<pb::RefundOrderRequest>) -> ApiResult<pb::Order> {
        let principal = self.verifier.authenticate(request.metadata()).await?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let order_id = v.id("order_id", &r.order_id);
        let lines: Vec<Option<Uuid>> = r
            .line_ids
            .iter()
            .enumerate()
            .map(|(i, id)| v.id(&format!("line_ids[{i}]"), id))
            .collect();
        if r.reason.len() > 500 {
            v.add("reason", "at most 500 characters");
        }
        let order_id = v.finish(order_id)?;
        let lines: Vec<Uuid> = lines.into_iter().flatten().collect();
        let order = self
            .visible_order(&principal, order_id, Scope::OrdersWrite)
            .await?;
        if !Self::is_staff(&principal, order.organization_id, Scope::OrdersWrite) {
            // Buyers refund their own orders only until the cutoff before the event.
            let starts = self.orders.event_starts_at(order.event_id).await?;
            let cutoff = chrono::Duration::from_std(self.orders.buyer_refund_cutoff()).unwrap_or_default();
            if starts.is_some_and(|s| Utc::now() + cutoff > s) {
                return Err(ApiError::precondition(
                    "REFUND_WINDOW_CLOSED",
                    "refunds by the buyer close before the event; ask the organizer",
                ));
            }
        }
        let order = self.orders.refund(order_id, &lines).await?;
        self.orders.proto(&order).await
    }

    async fn get_order(&self, request: Request<pb::GetOrderRequest>) -> ApiResult<pb::Order> {
        let (principal, _) = self.caller(request.metadata()).await?;
        let id = parse_id("order_id", &request.get_ref().order_id)?;
        let order = self.visible_order(&principal, id, Scope::OrdersRead).await?;
        self.orders.proto(&order).await
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> ApiResult<pb::ListOrdersResponse> {
        let principal = self.verifier.authenticate(request.metadata()).await?;
        let r = request.into_inner();
        let size = pagination::page_size(r.page_size)?;
        let after = Cursor::decode(&r.page_token)?;
        let mut statuses = Vec::new();
        for (i, s) in r.statuses.iter().enumerate() {
            let Some(status) = OrderStatus::from_proto(*s) else {
                return Err(ApiError::invalid(
                    format!("statuses[{i}]"),
                    "is not an order status",
                ));
            };
            statuses.push(status);
        }
        let mut filter = OrderFilter {
            buyer: None,
            event: None,
            statuses: &statuses,
            before: after.map(|a| a.id),
        };
        if r.event_id.is_empty() {
            filter.buyer = Some(principal.user_id()?);
        } else {
            let event = parse_id("event_id", &r.event_id)?;
            let org = self.orders.organization_of(event).await?;
            if !Self::is_staff(&principal, org, Scope::OrdersRead) {
                return Err(ApiError::permission_denied(
                    "only the event's organization sees its orders",
                ));
            }
            filter.event = Some(event);
        }
        let mut conn = self.orders.pool().get().await?;
        let rows = store::list_orders(&mut conn, &filter, size + 1).await?;
        let (rows, next_page_token) = pagination::finish_page(rows, size, |o| Cursor {
            created_at: o.created_at,
            id: o.id,
        });
        let ids: Vec<Uuid> = rows.iter().map(|o| o.id).collect();
        let (lines_of, tickets_of) = store::lines_and_tickets(&mut conn, &ids).await?;
        Ok(pb::ListOrdersResponse {
            orders: rows
                .iter()
                .map(|o| {
                    o.to_proto(
                        lines_of.get(&o.id).map(Vec::as_slice).unwrap_or(&[]),
                        tickets_of.get(&o.id).map(Vec::as_slice).unwrap_or(&[]),
                    )
                })
                .collect(),
            next_page_token,
        })
    }

    // Discount codes: the event's organization (events:write for API keys) and admins.

    async fn organizer_of_event(&self, metadata: &MetadataMap, event: Uuid, scope: Scope) -> ApiResult<Uuid> {
        let principal = self.verifier.authenticate(metadata).await?;
        let org = self.orders.organization_of(event).await?;
        if !Self::is_staff(&principal, org, scope) {
            return Err(ApiError::permission_denied(
                "only the event's organization manages its discount codes",
            ));
        }
        Ok(org)
    }

    async fn create_discount_code(
        &self,
        request: Request<pb::CreateDiscountCodeRequest>,
    ) -> ApiResult<pb::DiscountCode> {
        let event = parse_id("event_id", &request.get_ref().event_id)?;
        let org = self
            .organizer_of_event(request.metadata(), event, Scope::EventsWrite)
            .await?;
        let code = required(request.into_inner().discount_code, "discount_code")?;
        let mut v = Violations::new();
        let name = code.code.trim().to_ascii_uppercase();
        if !valid_code(&name) {
            v.add("discount_code.code", "must be 3 to 32 letters and digits");
        }
        let (percent_off, amount_off, currency) = match &code.amount {
            Some(pb::discount_code::Amount::PercentOff(p)) => {
                if !(1..=100).contains(p) {
                    v.add("discount_code.percent_off", "must be 1 to 100");
                }
                (Some(*p), None, None)
            }
            Some(pb::discount_code::Amount::AmountOff(m)) => {
                if m.amount_minor <= 0 {
                    v.add("discount_code.amount_off.amount_minor", "must be above zero");
                }
                money::check_currency(&mut v, "discount_code.amount_off.currency", &m.currency);
                (None, Some(m.amount_minor), Some(m.currency.clone()))
            }
            None => {
                v.add("discount_code.amount", "percent_off or amount_off is required");
                (None, None, None)
            }
        };
        if code.max_uses < 0 {
            v.add("discount_code.max_uses", "must not be negative");
        }
        let valid_from = v.timestamp("discount_code.valid_from", code.valid_from.as_ref());
        let valid_until = v.timestamp("discount_code.valid_until", code.valid_until.as_ref());
        if let (Some(from), Some(until)) = (valid_from, valid_until)
            && until <= from
        {
            v.add("discount_code.valid_until", "must be after valid_from");
        }
        if code.tier_ids.len() > 100 {
            v.add("discount_code.tier_ids", "at most 100");
        }
        v.into_result()?;
        let row = DiscountRow {
            event_id: event,
            code: name,
            organization_id: org,
            percent_off,
            amount_off,
            currency,
            valid_from,
            valid_until,
            max_uses: code.max_uses,
            times_used: 0,
            // proto3 cannot tell "false" from "unset": new codes start active; UpdateDiscountCode pauses them.
            active: true,
            tier_ids: code.tier_ids.clone(),
            created_at: Utc::now(),
        };
        let mut conn = self.orders.pool().get().await?;
        if !store::insert_discount(&mut conn, &row).await? {
            return Err(ApiError::already_exists(
                "DISCOUNT_CODE_EXISTS",
                "the event already has this code",
            ));
        }
        Ok(row.to_proto())
    }

    async fn discount(&self, event: Uuid, code: &str) -> ApiResult<DiscountRow> {
        let mut conn = self.orders.pool().get().await?;
        store::find_discount(&mut conn, event, &code.trim().to_ascii_uppercase())
            .await?
            .ok_or(ApiError::NotFound {
                resource: "discount code",
            })
    }

    async fn get_discount_code(
        &self,
        request: Request<pb::GetDiscountCodeRequest>,
    ) -> ApiResult<pb::DiscountCode> {
        let event = parse_id("event_id", &request.get_ref().event_id)?;
        self.organizer_of_event(request.metadata(), event, Scope::EventsRead)
            .await?;
        Ok(self.discount(event, &request.get_ref().code).await?.to_proto())
    }

    async fn list_discount_codes(
        &self,
        request: Request<pb::ListDiscountCodesRequest>,
    ) -> ApiResult<pb::ListDiscountCodesResponse> {
        let event = parse_id("event_id", &request.get_ref().event_id)?;
        self.organizer_of_event(request.metadata(), event, Scope::EventsRead)
            .await?;
        let r = request.into_inner();
        let size = pagination::page_size(r.page_size)?;
        let after = if r.page_token.is_empty() {
            None
        } else {
            Some(
                String::from_utf8(
                    base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &r.page_token)
                        .map_err(|_| ApiError::invalid("page_token", "is not a token this service issued"))?,
                )
                .map_err(|_| ApiError::invalid("page_token", "is not a token this service issued"))?,
            )
        };
        let mut conn = self.orders.pool().get().await?;
        let mut rows = store::list_discounts(&mut conn, event, after.as_deref(), size + 1).await?;
        let next_page_token = if rows.len() as i64 > size {
            rows.truncate(usize::try_from(size).unwrap_or(0));
            rows.last()
                .map(|r| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &r.code))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListDiscountCodesResponse {
            discount_codes: rows.iter().map(DiscountRow::to_proto).collect(),
            next_page_token,
        })
    }

    async fn update_discount_code(
        &self,
        request: Request<pb::UpdateDiscountCodeRequest>,
    ) -> ApiResult<pb::DiscountCode> {
        let code = required(request.get_ref().discount_code.clone(), "discount_code")?;
        let event = parse_id("discount_code.event_id", &code.event_id)?;
        self.organizer_of_event(request.metadata(), event, Scope::EventsWrite)
            .await?;
        let mask = fieldmask::resolve(
            request.into_inner().update_mask.as_ref(),
            &[
                field("valid_from", code.valid_from.is_some()),
                field("valid_until", code.valid_until.is_some()),
                field("max_uses", code.max_uses != 0),
                field("active", code.active),
            ],
        )?;
        let current = self.discount(event, &code.code).await?;
        let mut v = Violations::new();
        let mut next = current.clone();
        for path in mask.paths() {
            match *path {
                "valid_from" => {
                    next.valid_from = v.timestamp("discount_code.valid_from", code.valid_from.as_ref())
                }
                "valid_until" => {
                    next.valid_until = v.timestamp("discount_code.valid_until", code.valid_until.as_ref())
                }
                "max_uses" => {
                    if code.max_uses < 0 || (code.max_uses > 0 && code.max_uses < current.times_used) {
                        v.add(
                            "discount_code.max_uses",
                            "must be 0 (unlimited) or at least times_used",
                        );
                    }
                    next.max_uses = code.max_uses;
                }
                "active" => next.active = code.active,
                // `resolve` admits none but the four above.
                _ => {}
            }
        }
        if let (Some(from), Some(until)) = (next.valid_from, next.valid_until)
            && until <= from
        {
            v.add("discount_code.valid_until", "must be after valid_from");
        }
        v.into_result()?;
        let mut conn = self.orders.pool().get().await?;
        // Uses counted meanwhile must still fit a new limit.
        let floor = if next.max_uses == 0 {
            i32::MAX
        } else {
            next.max_uses
        };
        let row = store::update_discount(&mut conn, &next, floor)
            .await?
            .ok_or_else(|| {
                ApiError::precondition(
                    "DISCOUNT_CODE_IN_USE",
                    "the code was used more often meanwhile; retry",
                )
            })?;
        Ok(row.to_proto())
    }

    async fn delete_discount_code(
        &self,
        request: Request<pb::DeleteDiscountCodeRequest>,
    ) -> ApiResult<pb::DeleteDiscountCodeResponse> {
        let event = parse_id("event_id", &request.get_ref().event_id)?;
        self.organizer_of_event(request.metadata(), event, Scope::EventsWrite)
            .await?;
        let current = self.discount(event, &request.get_ref().code).await?;
        let mut conn = self.orders.pool().get().await?;
        store::retire_discount(&mut conn, &current).await?;
        Ok(pb::DeleteDiscountCodeResponse {})
    }

    // Tickets.

    async fn visible_ticket(
        &self,
        principal: &Principal,
        id: Uuid,
    ) -> ApiResult<(TicketRow, Option<LineRow>, bool)> {
        let mut conn = self.orders.pool().get().await?;
        let ticket = store::find_ticket(&mut conn, id)
            .await?
            .ok_or(ApiError::NotFound { resource: "ticket" })?;
        let holder = principal.user_id().ok() == Some(ticket.holder_id);
        if !holder {
            let org = store::organization_of_order(&mut conn, ticket.order_id).await?;
            if !Self::is_staff(principal, org, Scope::OrdersRead) {
                return Err(ApiError::NotFound { resource: "ticket" });
            }
        }
        let line = store::line_of(&mut conn, ticket.line_id).await?;
        Ok((ticket, line, holder))
    }

    async fn get_ticket(&self, request: Request<pb::GetTicketRequest>) -> ApiResult<pb::Ticket> {
        let (principal, _) = self.caller(request.metadata()).await?;
        let id = parse_id("ticket_id", &request.get_ref().ticket_id)?;
        let (ticket, line, holder) = self.visible_ticket(&principal, id).await?;
        Ok(ticket.to_proto(line.as_ref(), holder))
    }

    async fn list_tickets(
        &self,
        request: Request<pb::ListTicketsRequest>,
    ) -> ApiResult<pb::ListTicketsResponse> {
        let (principal, _) = self.caller(request.metadata()).await?;
        let r = request.into_inner();
        let size = pagination::page_size(r.page_size)?;
        let after = Cursor::decode(&r.page_token)?;
        let (mut holder, mut order) = (None, None);
        let mut holder_view = true;
        if r.order_id.is_empty() {
            holder = Some(principal.user_id()?);
        } else {
            let order_id = parse_id("order_id", &r.order_id)?;
            let visible = self
                .visible_order(&principal, order_id, Scope::OrdersRead)
                .await?;
            holder_view = principal.user_id().ok() == Some(visible.buyer_id);
            order = Some(order_id);
        }
        let mut conn = self.orders.pool().get().await?;
        let rows = store::list_tickets(&mut conn, holder, order, after.map(|a| a.id), size + 1).await?;
        let (rows, next_page_token) = pagination::finish_page(rows, size, |t| Cursor {
            created_at: t.issued_at,
            id: t.id,
        });
        let line_ids: Vec<Uuid> = rows.iter().map(|t| t.line_id).collect();
        let lines = store::lines_by_id(&mut conn, &line_ids).await?;
        Ok(pb::ListTicketsResponse {
            tickets: rows
                .iter()
                .map(|t| {
                    t.to_proto(
                        lines.get(&t.line_id),
                        holder_view && principal.user_id().ok() == Some(t.holder_id),
                    )
                })
                .collect(),
            next_page_token,
        })
    }

    async fn get_ticket_qr_code(&self, request: Request<pb::GetTicketQrCodeRequest>) -> ApiResult<HttpBody> {
        let (principal, _) = self.caller(request.metadata()).await?;
        let r = request.into_inner();
        let id = parse_id("ticket_id", &r.ticket_id)?;
        let (ticket, _, holder) = self.visible_ticket(&principal, id).await?;
        if !holder {
            return Err(ApiError::permission_denied(
                "only the ticket's holder gets its code",
            ));
        }
        let format = pb::QrFormat::try_from(r.format)
            .map_err(|_| ApiError::invalid("format", "is not a QR format"))?;
        let (content_type, data) = match format {
            pb::QrFormat::Png => ("image/png", qr::png(&ticket.secret)?),
            pb::QrFormat::Svg | pb::QrFormat::Unspecified => {
                ("image/svg+xml", qr::svg(&ticket.secret)?.into_bytes())
            }
        };
        Ok(HttpBody {
            content_type: content_type.into(),
            data,
            extensions: vec![],
        })
    }

    async fn check_in(&self, request: Request<pb::CheckInRequest>) -> ApiResult<pb::CheckInResponse> {
        let principal = self.verifier.authenticate(request.metadata()).await?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let event = v.id("event_id", &r.event_id);
        if r.secret.is_empty() || r.secret.len() > 512 {
            v.add("secret", "is required (at most 512 characters)");
        }
        if r.gate.len() > 100 {
            v.add("gate", "at most 100 characters");
        } else if r.gate.chars().any(char::is_control) {
            v.add("gate", "must not contain control characters");
        }
        if r.nonce.len() > 128 {
            v.add("nonce", "at most 128 characters");
        } else if r.nonce.chars().any(char::is_control) {
            v.add("nonce", "must not contain control characters");
        }
        let event = v.finish(event)?;
        let org = self.orders.organization_of(event).await?;
        if !Self::is_staff(&principal, org, Scope::CheckIn) {
            return Err(ApiError::permission_denied(
                "only the event's staff scan its tickets",
            ));
        }
        self.orders.check_in(event, &r.secret, &r.gate, &r.nonce).await
    }

    async fn ticket_keys(
        &self,
        request: Request<pb::GetTicketVerificationKeysRequest>,
    ) -> ApiResult<pb::TicketVerificationKeys> {
        let principal = self.verifier.authenticate(request.metadata()).await?;
        let event = parse_id("event_id", &request.get_ref().event_id)?;
        let org = self.orders.organization_of(event).await?;
        if !Self::is_staff(&principal, org, Scope::CheckIn) {
            return Err(ApiError::permission_denied(
                "only the event's staff get its scanner keys",
            ));
        }
        let mut conn = self.orders.pool().get().await?;
        let revoked = store::revoked_tickets(&mut conn, event).await?;
        Ok(pb::TicketVerificationKeys {
            keys: self.orders.signer().public_keys().into_iter().collect(),
            revoked_ticket_ids: revoked.iter().map(Uuid::to_string).collect(),
        })
    }
}

#[tonic::async_trait]
impl OrdersService for OrdersApi {
    async fn create_order(&self, r: Request<pb::CreateOrderRequest>) -> Result<Response<pb::Order>, Status> {
        Ok(Response::new(self.create_order(r).await?))
    }
    async fn pay_order(&self, r: Request<pb::PayOrderRequest>) -> Result<Response<pb::Order>, Status> {
        Ok(Response::new(self.pay_order(r).await?))
    }
    async fn cancel_order(&self, r: Request<pb::CancelOrderRequest>) -> Result<Response<pb::Order>, Status> {
        Ok(Response::new(self.cancel_order(r).await?))
    }
    async fn refund_order(&self, r: Request<pb::RefundOrderRequest>) -> Result<Response<pb::Order>, Status> {
        Ok(Response::new(self.refund_order(r).await?))
    }
    async fn get_order(&self, r: Request<pb::GetOrderRequest>) -> Result<Response<pb::Order>, Status> {
        Ok(Response::new(self.get_order(r).await?))
    }
    async fn list_orders(
        &self,
        r: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        Ok(Response::new(self.list_orders(r).await?))
    }
    async fn create_discount_code(
        &self,
        r: Request<pb::CreateDiscountCodeRequest>,
    ) -> Result<Response<pb::DiscountCode>, Status> {
        Ok(Response::new(self.create_discount_code(r).await?))
    }
    async fn get_discount_code(
        &self,
        r: Request<pb::GetDiscountCodeRequest>,
    ) -> Result<Response<pb::DiscountCode>, Status> {
        Ok(Response::new(self.get_discount_code(r).await?))
    }
    async fn list_discount_codes(
        &self,
        r: Request<pb::ListDiscountCodesRequest>,
    ) -> Result<Response<pb::ListDiscountCodesResponse>, Status> {
        Ok(Response::new(self.list_discount_codes(r).await?))
    }
    async fn update_discount_code(
        &self,
        r: Request<pb::UpdateDiscountCodeRequest>,
    ) -> Result<Response<pb::DiscountCode>, Status> {
        Ok(Response::new(self.update_discount_code(r).await?))
    }
    async fn delete_discount_code(
        &self,
        r: Request<pb::DeleteDiscountCodeRequest>,
    ) -> Result<Response<pb::DeleteDiscountCodeResponse>, Status> {
        Ok(Response::new(self.delete_discount_code(r).await?))
    }
    async fn get_ticket(&self, r: Request<pb::GetTicketRequest>) -> Result<Response<pb::Ticket>, Status> {
        Ok(Response::new(self.get_ticket(r).await?))
    }
    async fn list_tickets(
        &self,
        r: Request<pb::ListTicketsRequest>,
    ) -> Result<Response<pb::ListTicketsResponse>, Status> {
        Ok(Response::new(self.list_tickets(r).await?))
    }
    async fn get_ticket_qr_code(
        &self,
        r: Request<pb::GetTicketQrCodeRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        Ok(Response::new(self.get_ticket_qr_code(r).await?))
    }
    async fn check_in(
        &self,
        r: Request<pb::CheckInRequest>,
    ) -> Result<Response<pb::CheckInResponse>, Status> {
        Ok(Response::new(self.check_in(r).await?))
    }
    async fn get_ticket_verification_keys(
        &self,
        r: Request<pb::GetTicketVerificationKeysRequest>,
    ) -> Result<Response<pb::TicketVerificationKeys>, Status> {
        Ok(Response::new(self.ticket_keys(r).await?))
    }
}
