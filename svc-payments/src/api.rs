//! The gRPC surface: validate, authorize, call [`Payments`].

use ticketing_platform::{
    ApiError, ApiResult,
    auth::{Principal, Scope, TokenVerifier},
    error::{Violations, parse_id},
    money,
    pagination::{self, Cursor},
    server::to_the_end,
};
use ticketing_proto::ticketing::payments::v1::{self as pb, payments_service_server::PaymentsService};
use tonic::{Request, Response, Status};

use crate::{
    payments::{ChargeInput, PaymentRow, Payments},
    provider::{Card, TEST_CARDS},
};

pub struct PaymentsApi {
    pub payments: Payments,
    pub verifier: TokenVerifier,
}

/// Largest single charge, in minor units: a typo guard, not a business limit.
const MAX_AMOUNT: i64 = 10_000_000_000;

fn check_key(v: &mut Violations, field: &str, key: &str) {
    if !(8..=128).contains(&key.len()) || !key.bytes().all(|b| b.is_ascii_graphic()) {
        v.add(field, "must be 8 to 128 printable ASCII characters");
    }
}

impl PaymentsApi {
    fn may_see(principal: &Principal, row: &PaymentRow, scope: Scope) -> bool {
        principal.is_admin()
            || principal.user_id().ok() == Some(row.customer_id)
            || row
                .organization_id
                .is_some_and(|org| principal.can_act_for(org) && principal.require_scope(scope).is_ok())
    }

    /// Only orders gets here (the call graph's guard): it charges its buyer for their order's
    /// total, and completes the order only from a payment that matches it.
    async fn charge(&self, request: Request<pb::ChargeRequest>) -> ApiResult<pb::Payment> {
        let r = request.into_inner();
        let mut v = Violations::new();
        check_key(&mut v, "idempotency_key", &r.idempotency_key);
        let order_id = v.id("order_id", &r.order_id);
        let customer_id = v.id("customer_id", &r.customer_id);
        let organization_id = if r.organization_id.is_empty() {
            None
        } else {
            v.id("organization_id", &r.organization_id)
        };
        let (amount, currency) =
            money::check(&mut v, "amount", r.amount.as_ref(), 1..=MAX_AMOUNT).unwrap_or_default();
        let number = money::check_card(
            &mut v,
            ["card_number", "exp_month", "exp_year", "cvc"],
            &money::CardFields {
                number: &r.card_number,
                exp_month: r.exp_month,
                exp_year: r.exp_year,
                cvc: &r.cvc,
            },
        );
        let (order_id, customer_id) = v.finish((order_id, customer_id))?;
        let input = ChargeInput {
            key: r.idempotency_key,
            order_id,
            customer_id,
            organization_id,
            amount,
            currency,
            card: Card {
                number,
                exp_month: r.exp_month,
                exp_year: r.exp_year,
                cvc: r.cvc,
            },
        };
        // Claim, ask the processor, settle: to the end, whether or not the caller waits.
        let payments = self.payments.clone();
        let row = to_the_end(async move { payments.charge(input).await }).await?;
        Ok(row.to_proto())
    }

    /// Only orders gets here (the call graph's guard): money goes back through its refund flow,
    /// which voids the tickets and returns the places first.
    async fn refund(&self, request: Request<pb::RefundRequest>) -> ApiResult<pb::PaymentRefund> {
        let r = request.into_inner();
        let mut v = Violations::new();
        check_key(&mut v, "idempotency_key", &r.idempotency_key);
        let payment_id = v.id("payment_id", &r.payment_id);
        if let Some(m) = &r.amount
            && !(1..=MAX_AMOUNT).contains(&m.amount_minor)
        {
            v.add("amount.amount_minor", format!("must be 1 to {MAX_AMOUNT}"));
        }
        if r.reason.len() > 500 {
            v.add("reason", "at most 500 characters");
        }
        let payment_id = v.finish(payment_id)?;
        let row = self
            .payments
            .get(payment_id)
            .await?
            .ok_or(ApiError::NotFound { resource: "payment" })?;
        if let Some(m) = &r.amount
            && m.currency != row.currency
        {
            return Err(ApiError::invalid(
                "amount.currency",
                "must be the payment's currency",
            ));
        }
        let payments = self.payments.clone();
        let (payment, refund) = to_the_end(async move {
            payments
                .refund(
                    payment_id,
                    &r.idempotency_key,
                    r.amount.map(|m| m.amount_minor),
                    &r.reason,
                )
                .await
        })
        .await?;
        Ok(refund.to_proto(&payment.currency))
    }

    /// Only orders gets here (the call graph's guard), to learn how a charge it made came out.
    async fn get_charge(&self, request: Request<pb::GetChargeRequest>) -> ApiResult<pb::Payment> {
        let r = request.into_inner();
        let mut v = Violations::new();
        check_key(&mut v, "idempotency_key", &r.idempotency_key);
        let order = v.id("order_id", &r.order_id);
        let order = v.finish(order)?;
        self.payments
            .find_charge(order, &r.idempotency_key)
            .await?
            .map(|row| row.to_proto())
            .ok_or(ApiError::NotFound { resource: "charge" })
    }

    async fn get(&self, request: Request<pb::GetPaymentRequest>) -> ApiResult<pb::Payment> {
        let principal = self.verifier.authenticate(request.metadata()).await?;
        let id = parse_id("payment_id", &request.get_ref().payment_id)?;
        let row = self
            .payments
            .get(id)
            .await?
            .filter(|row| Self::may_see(&principal, row, Scope::OrdersRead))
            .ok_or(ApiError::NotFound { resource: "payment" })?;
        Ok(row.to_proto())
    }

    async fn list(&self, request: Request<pb::ListPaymentsRequest>) -> ApiResult<pb::ListPaymentsResponse> {
        let principal = self.verifier.authenticate(request.metadata()).await?;
        let r = request.into_inner();
        let size = pagination::page_size(r.page_size)?;
        let after = Cursor::decode(&r.page_token)?;
        let order = if r.order_id.is_empty() {
            None
        } else {
            Some(parse_id("order_id", &r.order_id)?)
        };
        let customer = if principal.is_admin() {
            None
        } else {
            Some(principal.user_id()?)
        };
        let (rows, next_page_token) = self.payments.list(customer, order, size, after).await?;
        Ok(pb::ListPaymentsResponse {
            payments: rows.iter().map(PaymentRow::to_proto).collect(),
            next_page_token,
        })
    }
}

#[tonic::async_trait]
impl PaymentsService for PaymentsApi {
    async fn charge(&self, r: Request<pb::ChargeRequest>) -> Result<Response<pb::Payment>, Status> {
        Ok(Response::new(self.charge(r).await?))
    }
    async fn refund(&self, r: Request<pb::RefundRequest>) -> Result<Response<pb::PaymentRefund>, Status> {
        Ok(Response::new(self.refund(r).await?))
    }
    async fn get_charge(&self, r: Request<pb::GetChargeRequest>) -> Result<Response<pb::Payment>, Status> {
        Ok(Response::new(self.get_charge(r).await?))
    }
    async fn get_payment(&self, r: Request<pb::GetPaymentRequest>) -> Result<Response<pb::Payment>, Status> {
        Ok(Response::new(self.get(r).await?))
    }
    async fn list_payments(
        &self,
        r: Request<pb::ListPaymentsRequest>,
    ) -> Result<Response<pb::ListPaymentsResponse>, Status> {
        Ok(Response::new(self.list(r).await?))
    }
    async fn list_test_cards(
        &self,
        _: Request<pb::ListTestCardsRequest>,
    ) -> Result<Response<pb::ListTestCardsResponse>, Status> {
        Ok(Response::new(pb::ListTestCardsResponse {
            cards: TEST_CARDS
                .iter()
                .map(|(number, brand, behaviour)| pb::TestCard {
                    number: (*number).into(),
                    brand: (*brand).into(),
                    behaviour: (*behaviour).into(),
                })
                .collect(),
        }))
    }
}
