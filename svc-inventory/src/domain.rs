//! Inventory's rules, free of I/O: a hold's states and the moves between them. (Which seat a
//! hold may take is decided atomically inside Redis, by the scripts in `lua/*.lua`, their
//! contracts in `lua.rs`.)

use ticketing_proto::ticketing::inventory::v1 as pb;

ticketing_platform::stored_enum! {
    /// Where a hold is in its life, as the hold scripts record it in Redis.
    pub enum HoldStatus {
        Active = "active",
        /// Its commit has begun: PostgreSQL is recording the sale.
        Committing = "committing",
        Committed = "committed",
        Released = "released",
        Expired = "expired",
    }
}

impl HoldStatus {
    /// An active hold is committed (through committing), released or expires; a commit cut
    /// short goes back to active (the ledger refused it, or its process died before the sale).
    pub fn can_become(self, next: HoldStatus) -> bool {
        use HoldStatus::*;
        matches!(
            (self, next),
            (Active, Committing | Released | Expired) | (Committing, Committed | Active)
        )
    }

    /// As buyers see it: a hold being committed is still theirs, active.
    pub fn to_proto(self) -> pb::HoldStatus {
        match self {
            HoldStatus::Active | HoldStatus::Committing => pb::HoldStatus::Active,
            HoldStatus::Committed => pb::HoldStatus::Committed,
            HoldStatus::Released => pb::HoldStatus::Released,
            HoldStatus::Expired => pb::HoldStatus::Expired,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_moves_only_as_its_life_allows() {
        use HoldStatus::*;
        let allowed = [
            (Active, Committing),
            (Active, Released),
            (Active, Expired),
            (Committing, Committed),
            (Committing, Active),
        ];
        for from in HoldStatus::ALL {
            for to in HoldStatus::ALL {
                assert_eq!(
                    from.can_become(*to),
                    allowed.contains(&(*from, *to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn a_hold_being_committed_is_shown_active() {
        assert_eq!(HoldStatus::Committing.to_proto(), pb::HoldStatus::Active);
        for status in HoldStatus::ALL {
            assert_eq!(HoldStatus::parse(status.as_str()), Some(*status));
            assert_ne!(status.to_proto(), pb::HoldStatus::Unspecified);
        }
    }
}
