//! Orders' rules, free of I/O: an order's and a ticket's states and the moves between them,
//! what a discount code takes off each line, and what makes two CreateOrder calls the same
//! request.

use sha2::{Digest, Sha256};
use ticketing_proto::ticketing::orders::v1 as pb;

ticketing_platform::stored_enum! {
    /// Where an order is in its life.
    pub enum OrderStatus {
        PendingPayment = "pending_payment",
        Paid = "paid",
        Cancelled = "cancelled",
        Expired = "expired",
        PartiallyRefunded = "partially_refunded",
        Refunded = "refunded",
    }
}

impl OrderStatus {
    /// The moves an order may make: paid, cancelled or expired while it waits for payment; an
    /// expired order paid after all (a late payment whose places were still free); refunds,
    /// in part (again and again) or in full.
    pub fn can_become(self, next: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (PendingPayment, Paid | Cancelled | Expired)
                | (Expired, Paid)
                | (Paid | PartiallyRefunded, PartiallyRefunded | Refunded)
        )
    }

    /// Paid, whatever was refunded since: the order's money came in.
    pub fn is_paid(self) -> bool {
        matches!(
            self,
            OrderStatus::Paid | OrderStatus::PartiallyRefunded | OrderStatus::Refunded
        )
    }

    pub fn to_proto(self) -> pb::OrderStatus {
        match self {
            OrderStatus::PendingPayment => pb::OrderStatus::PendingPayment,
            OrderStatus::Paid => pb::OrderStatus::Paid,
            OrderStatus::Cancelled => pb::OrderStatus::Cancelled,
            OrderStatus::Expired => pb::OrderStatus::Expired,
            OrderStatus::PartiallyRefunded => pb::OrderStatus::PartiallyRefunded,
            OrderStatus::Refunded => pb::OrderStatus::Refunded,
        }
    }

    /// The status a listing filter names; None for UNSPECIFIED or an unknown number.
    pub fn from_proto(value: i32) -> Option<Self> {
        match pb::OrderStatus::try_from(value).ok()? {
            pb::OrderStatus::PendingPayment => Some(OrderStatus::PendingPayment),
            pb::OrderStatus::Paid => Some(OrderStatus::Paid),
            pb::OrderStatus::Cancelled => Some(OrderStatus::Cancelled),
            pb::OrderStatus::Expired => Some(OrderStatus::Expired),
            pb::OrderStatus::PartiallyRefunded => Some(OrderStatus::PartiallyRefunded),
            pb::OrderStatus::Refunded => Some(OrderStatus::Refunded),
            pb::OrderStatus::Unspecified => None,
        }
    }
}

ticketing_platform::stored_enum! {
    /// Where a ticket is in its life.
    pub enum TicketStatus {
        Valid = "valid",
        CheckedIn = "checked_in",
        Refunded = "refunded",
        Cancelled = "cancelled",
    }
}

impl TicketStatus {
    /// A valid ticket checks in once, or is voided by a refund or a cancellation; a checked-in
    /// ticket stays checked in (a refund of its line leaves it as it is).
    pub fn can_become(self, next: TicketStatus) -> bool {
        use TicketStatus::*;
        matches!((self, next), (Valid, CheckedIn | Refunded | Cancelled))
    }

    pub fn to_proto(self) -> pb::TicketStatus {
        match self {
            TicketStatus::Valid => pb::TicketStatus::Valid,
            TicketStatus::CheckedIn => pb::TicketStatus::CheckedIn,
            TicketStatus::Refunded => pb::TicketStatus::Refunded,
            TicketStatus::Cancelled => pb::TicketStatus::Cancelled,
        }
    }
}

/// What a CreateOrder asks for, as a digest: a replay of its idempotency key must ask for the
/// same hold, code and e-mail, or it is a different request reusing the key.
pub fn request_fingerprint(hold: uuid::Uuid, discount_code: Option<&str>, buyer_email: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(hold.as_bytes());
    hash.update([0]);
    hash.update(discount_code.unwrap_or("").as_bytes());
    hash.update([0]);
    hash.update(buyer_email.as_bytes());
    format!("{:x}", hash.finalize())
}

/// A discount code's rule: a percentage or a fixed amount off, for some tiers (none: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discount<'a> {
    PercentOff {
        percent: i32,
        tiers: &'a [String],
    },
    AmountOff {
        amount: i64,
        currency: &'a str,
        tiers: &'a [String],
    },
}

/// Why a discount code takes nothing off these lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotApplicable {
    /// None of the lines is of a tier the code is for.
    NoEligibleLine,
    /// A fixed amount in another currency than the order's.
    OtherCurrency,
}

impl Discount<'_> {
    fn tiers(&self) -> &[String] {
        match self {
            Discount::PercentOff { tiers, .. } | Discount::AmountOff { tiers, .. } => tiers,
        }
    }

    fn eligible(&self, tier: &str) -> bool {
        self.tiers().is_empty() || self.tiers().iter().any(|t| t == tier)
    }

    /// What comes off each line (tier, price), in the lines' order, never more than a line's
    /// price: a percentage of each eligible line (rounded down), or a fixed amount spread over
    /// the eligible lines in order until it is used up.
    pub fn per_line(&self, lines: &[(String, i64)], currency: &str) -> Result<Vec<i64>, NotApplicable> {
        if !lines.iter().any(|(tier, _)| self.eligible(tier)) {
            return Err(NotApplicable::NoEligibleLine);
        }
        match *self {
            Discount::PercentOff { percent, .. } => Ok(lines
                .iter()
                .map(|(tier, price)| {
                    if self.eligible(tier) {
                        price * i64::from(percent.clamp(0, 100)) / 100
                    } else {
                        0
                    }
                })
                .collect()),
            Discount::AmountOff {
                amount,
                currency: code_currency,
                ..
            } => {
                if code_currency != currency {
                    return Err(NotApplicable::OtherCurrency);
                }
                let mut left = amount.max(0);
                Ok(lines
                    .iter()
                    .map(|(tier, price)| {
                        if !self.eligible(tier) {
                            return 0;
                        }
                        let take = left.min(*price);
                        left -= take;
                        take
                    })
                    .collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_moves_only_as_its_life_allows() {
        use OrderStatus::*;
        let allowed = [
            (PendingPayment, Paid),
            (PendingPayment, Cancelled),
            (PendingPayment, Expired),
            (Expired, Paid),
            (Paid, PartiallyRefunded),
            (Paid, Refunded),
            (PartiallyRefunded, PartiallyRefunded),
            (PartiallyRefunded, Refunded),
        ];
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                assert_eq!(
                    from.can_become(*to),
                    allowed.contains(&(*from, *to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn statuses_map_to_the_wire_and_back() {
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::from_proto(status.to_proto() as i32), Some(*status));
            assert_eq!(OrderStatus::parse(status.as_str()), Some(*status));
        }
        assert_eq!(OrderStatus::from_proto(0), None);
        assert_eq!(OrderStatus::from_proto(99), None);
        assert!(OrderStatus::Refunded.is_paid() && !OrderStatus::Expired.is_paid());
    }

    #[test]
    fn a_ticket_checks_in_once_and_a_void_one_never() {
        use TicketStatus::*;
        for from in TicketStatus::ALL {
            for to in TicketStatus::ALL {
                let allowed = *from == Valid && *to != Valid;
                assert_eq!(from.can_become(*to), allowed, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn the_fingerprint_tells_every_field_apart() {
        let hold = uuid::Uuid::now_v7();
        let base = request_fingerprint(hold, Some("SPRING"), "a@example.com");
        assert_eq!(base, request_fingerprint(hold, Some("SPRING"), "a@example.com"));
        assert_ne!(
            base,
            request_fingerprint(uuid::Uuid::now_v7(), Some("SPRING"), "a@example.com")
        );
        assert_ne!(base, request_fingerprint(hold, None, "a@example.com"));
        assert_ne!(base, request_fingerprint(hold, Some("SPRING"), "b@example.com"));
        // The separators keep a code and an e-mail from running into each other.
        assert_ne!(
            request_fingerprint(hold, Some("ab"), "c"),
            request_fingerprint(hold, Some("a"), "bc")
        );
    }

    fn lines() -> Vec<(String, i64)> {
        vec![
            ("vip".into(), 9_000),
            ("floor".into(), 4_000),
            ("vip".into(), 9_000),
        ]
    }

    #[test]
    fn a_percentage_comes_off_each_eligible_line_rounded_down() {
        let all: Vec<String> = vec![];
        let off = Discount::PercentOff {
            percent: 15,
            tiers: &all,
        };
        assert_eq!(off.per_line(&lines(), "EUR"), Ok(vec![1_350, 600, 1_350]));
        let vip = vec!["vip".to_string()];
        let off = Discount::PercentOff {
            percent: 33,
            tiers: &vip,
        };
        assert_eq!(off.per_line(&[("vip".into(), 1_001)], "EUR"), Ok(vec![330]));
        assert_eq!(off.per_line(&lines(), "EUR"), Ok(vec![2_970, 0, 2_970]));
    }

    #[test]
    fn a_fixed_amount_is_spread_in_order_and_never_exceeds_a_line() {
        let floor = vec!["floor".to_string()];
        let off = Discount::AmountOff {
            amount: 10_000,
            currency: "EUR",
            tiers: &floor,
        };
        assert_eq!(off.per_line(&lines(), "EUR"), Ok(vec![0, 4_000, 0]));
        let all: Vec<String> = vec![];
        let off = Discount::AmountOff {
            amount: 10_000,
            currency: "EUR",
            tiers: &all,
        };
        assert_eq!(off.per_line(&lines(), "EUR"), Ok(vec![9_000, 1_000, 0]));
        assert_eq!(off.per_line(&lines(), "USD"), Err(NotApplicable::OtherCurrency));
    }

    #[test]
    fn a_code_for_tiers_not_in_the_order_takes_nothing() {
        let balcony = vec!["balcony".to_string()];
        let off = Discount::PercentOff {
            percent: 50,
            tiers: &balcony,
        };
        assert_eq!(off.per_line(&lines(), "EUR"), Err(NotApplicable::NoEligibleLine));
    }
}
