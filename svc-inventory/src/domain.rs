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

ticketing_platform::stored_enum! {
    /// Where a waiting-list entry is.
    pub enum WaitlistStatus {
        Waiting = "waiting",
        /// Places are held for the buyer (the hold whose id is the entry's).
        Offered = "offered",
        Fulfilled = "fulfilled",
        /// The offer ran out or was released; its places passed on.
        Lapsed = "lapsed",
        Left = "left",
        /// Off the list without an offer: sales closed, or the per-customer limit.
        Removed = "removed",
    }
}

impl WaitlistStatus {
    /// An entry waits, is offered once, and ends; an offer ends bought, lapsed or given up.
    pub fn can_become(self, next: WaitlistStatus) -> bool {
        use WaitlistStatus::*;
        matches!(
            (self, next),
            (Waiting, Offered | Left | Removed) | (Offered, Fulfilled | Lapsed | Left)
        )
    }

    pub fn is_live(self) -> bool {
        matches!(self, WaitlistStatus::Waiting | WaitlistStatus::Offered)
    }

    pub fn to_proto(self) -> pb::WaitlistStatus {
        use WaitlistStatus::*;
        match self {
            Waiting => pb::WaitlistStatus::Waiting,
            Offered => pb::WaitlistStatus::Offered,
            Fulfilled => pb::WaitlistStatus::Fulfilled,
            Lapsed => pb::WaitlistStatus::Lapsed,
            Left => pb::WaitlistStatus::Left,
            Removed => pb::WaitlistStatus::Removed,
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

    #[test]
    fn a_waitlist_entry_is_offered_once_and_ends() {
        use WaitlistStatus::*;
        let allowed = [
            (Waiting, Offered),
            (Waiting, Left),
            (Waiting, Removed),
            (Offered, Fulfilled),
            (Offered, Lapsed),
            (Offered, Left),
        ];
        for from in WaitlistStatus::ALL {
            for to in WaitlistStatus::ALL {
                assert_eq!(
                    from.can_become(*to),
                    allowed.contains(&(*from, *to)),
                    "{from} -> {to}"
                );
            }
            assert_eq!(WaitlistStatus::parse(from.as_str()), Some(*from));
            assert_ne!(from.to_proto(), pb::WaitlistStatus::Unspecified);
        }
    }
}
