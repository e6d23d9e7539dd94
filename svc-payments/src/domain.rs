//! Payments' rules, free of I/O: a payment's states and the moves between them.

use ticketing_proto::ticketing::payments::v1 as pb;

ticketing_platform::stored_enum! {
    /// Where a payment is in its life.
    pub enum PaymentStatus {
        /// Claimed and sent to the processor, whose answer is not in yet.
        Processing = "processing",
        Succeeded = "succeeded",
        Failed = "failed",
        PartiallyRefunded = "partially_refunded",
        Refunded = "refunded",
    }
}

impl PaymentStatus {
    /// A charge settles once, as the processor says; money that came in goes back in part
    /// (again and again) or in full, never more than was charged.
    pub fn can_become(self, next: PaymentStatus) -> bool {
        use PaymentStatus::*;
        matches!(
            (self, next),
            (Processing, Succeeded | Failed) | (Succeeded | PartiallyRefunded, PartiallyRefunded | Refunded)
        )
    }

    /// What is left after refunding `refunded` of `amount` in all.
    pub fn after_refund(refunded: i64, amount: i64) -> PaymentStatus {
        if refunded >= amount {
            PaymentStatus::Refunded
        } else {
            PaymentStatus::PartiallyRefunded
        }
    }

    pub fn to_proto(self) -> pb::PaymentStatus {
        match self {
            PaymentStatus::Processing => pb::PaymentStatus::Processing,
            PaymentStatus::Succeeded => pb::PaymentStatus::Succeeded,
            PaymentStatus::Failed => pb::PaymentStatus::Failed,
            PaymentStatus::PartiallyRefunded => pb::PaymentStatus::PartiallyRefunded,
            PaymentStatus::Refunded => pb::PaymentStatus::Refunded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payment_moves_only_as_its_life_allows() {
        use PaymentStatus::*;
        let allowed = [
            (Processing, Succeeded),
            (Processing, Failed),
            (Succeeded, PartiallyRefunded),
            (Succeeded, Refunded),
            (PartiallyRefunded, PartiallyRefunded),
            (PartiallyRefunded, Refunded),
        ];
        for from in PaymentStatus::ALL {
            for to in PaymentStatus::ALL {
                assert_eq!(
                    from.can_become(*to),
                    allowed.contains(&(*from, *to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn a_refund_leaves_the_payment_partly_or_wholly_refunded() {
        assert_eq!(
            PaymentStatus::after_refund(100, 9_000),
            PaymentStatus::PartiallyRefunded
        );
        assert_eq!(PaymentStatus::after_refund(9_000, 9_000), PaymentStatus::Refunded);
        for status in PaymentStatus::ALL {
            assert_eq!(PaymentStatus::parse(status.as_str()), Some(*status));
            assert_ne!(status.to_proto(), pb::PaymentStatus::Unspecified);
        }
    }
}
