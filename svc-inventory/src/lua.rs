//! The atomic Redis side of holds, as Lua scripts.
//!
//! Keys of one event share the prefix `<prefix>:{<event>}` (one hash slot):
//! `meta` (loaded, version, limit, closed, seq), `seat` (seat -> tier), `pos` (seat -> drawing
//! position), `kind` (tier -> seat|ga), `free:<t>` (the tier's seats neither held nor sold, scored
//! by position, so best-available is the lowest scores), `tiers`, `count` (`<tier>:total|held|sold`),
//! `held` (seat -> hold id), `sold` (set of seats), `exp` (hold id -> expiry ms), `committing`,
//! `cust` (`<owner>` -> places held, `<owner>:sold` -> places bought), the waiting lists
//! (`wq:<t>` entry -> position, `wqe` entry -> "tier,qty,owner", `count`
//! `<t>:owed` and `owed:<t>` for places kept for a line, `offered` entry -> expiry | LIMIT for
//! offers the service has yet to record) and the pub/sub channel `updates`. Holds are keyed globally, `<prefix>:hold:<id>`, with their event's prefix in the
//! field `ep`, so a hold id alone finds its event without a second key to keep. `<prefix>:active`
//! lists events with unexpired holds for the sweeper; the event's `meta.active` mirrors its
//! membership, so a hold adds the event only when it is not there yet. Scripts use a single Redis
//! (they build keys from their arguments), as deployed here.
//!
//! Every script that reads holds first sweeps the event's due holds (a hold only when something
//! stands in its way), so an expired hold never blocks a seat, even before the background
//! sweeper gets to it. Every change is published on
//! `updates` with a per-event sequence number.

const PRELUDE: &str = include_str!("../lua/prelude.lua");

/// ARGV: prefixes, hold id, owner, ttl ms, how long the record is kept (ms), places, mode, then
/// `seats`: seat ids | `quantity`: tier, quantity.
/// Returns {OK, now, expires, seats, their tiers} | {NOT_LOADED} | {CLOSED} | {UNKNOWN_SEAT, ids..} |
/// {UNKNOWN_TIER} | {TAKEN, ids.. or free count} | {LIMIT, already, limit}. The per-customer
/// limit is the event's, loaded with it.
const HOLD: &str = include_str!("../lua/hold.lua");

/// ARGV: prefixes, hold id, owner ('' = anyone). Returns {OK} | {NOT_FOUND} | {STATUS, status}.
const RELEASE: &str = include_str!("../lua/release.lua");

/// Marks an active, unexpired hold as being committed (the sweeper leaves it alone).
/// ARGV: prefixes, hold id. Returns {OK} | {NOT_FOUND} | {STATUS, status}.
const BEGIN_COMMIT: &str = include_str!("../lua/begin_commit.lua");

/// Puts a hold whose durable commit failed back to active (expiring as before).
const ABORT_COMMIT: &str = include_str!("../lua/abort_commit.lua");

/// Records in Redis a sale PostgreSQL has already committed. Idempotent.
/// ARGV: prefixes, hold id, order id.
const FINISH_COMMIT: &str = include_str!("../lua/finish_commit.lua");

/// Returns sold places to sale (after PostgreSQL released them).
/// ARGV: prefixes, owner, n seats, seats.., n tiers, (tier, qty)..
const RETURN_SOLD: &str = include_str!("../lua/return_sold.lua");

/// The background sweep of one event. Returns {expired, remaining}; forgets the event when no
/// hold is left to expire.
const SWEEP: &str = include_str!("../lua/sweep.lua");

/// A consistent picture for GetAvailability and watchers, after sweeping due holds.
/// Returns {loaded, seq, closed, counts (flat), held seats (with those kept for waiting lists),
/// sold seats, all seats | {}, seats kept for waiting lists}.
const SNAPSHOT: &str = include_str!("../lua/snapshot.lua");

/// Writes part of an event's seat map under a load's own keys, where no hold sees it: a large map
/// goes in many short scripts instead of one that would stall Redis (and outlast the client's
/// response timeout). The keys expire if the load is abandoned.
/// ARGV: prefixes, load id, then (seat, tier, position, '1' when free)..
const STAGE: &str = include_str!("../lua/stage.lua");

/// (Re)loads an event's static state from PostgreSQL's truth, keeping live holds: swaps in the
/// seat map a load staged, then writes counts, sold seats and bought places in bulk.
/// ARGV: prefixes, load id, force, version, limit, closed, seats staged, n seat tiers,
/// (tier, total, sold).., n quotas, (tier, capacity, sold).., n sold seats, seats.., n owners,
/// (`<owner>:sold`, places).., offer ttl ms, offer record keep ms, n waiting entries, (entry,
/// tier, quantity, owner, position).., n announced offers, (entry, tier, quantity, owner,
/// expiry ms, seats joined by commas)..
/// Returns {OK} | {ALREADY} (loaded and not forced) | {NEWER} (a newer version is loaded) |
/// {RESTAGE} (the staged map is incomplete, e.g. Redis was flushed meanwhile).
const LOAD: &str = include_str!("../lua/load.lua");

/// Stops sales: no new holds, and waiting lines end. ARGV: prefixes.
const CLOSE: &str = include_str!("../lua/close.lua");

/// Puts a waiting-list entry in its tier's line and sets every free place of the tier aside
/// for the line. ARGV: prefixes, entry, tier, quantity, owner, position, `new` | `repair`
/// (a repair skips the checks made when the entry joined), offer ttl ms, offer record keep ms.
/// Only a sold-out tier is joined: any free place answers AVAILABLE.
/// Returns {OK} | {ALREADY} | {NOT_LOADED} | {CLOSED} | {UNKNOWN_TIER} | {AVAILABLE, free} |
/// {LIMIT, already, limit}.
const JOIN: &str = include_str!("../lua/join.lua");

/// Takes an entry out of its line (the next may be served, or a line left empty frees what it
/// was owed). ARGV: prefixes, entry. Returns {OK} | {GONE} (not in line).
const LEAVE: &str = include_str!("../lua/leave.lua");

/// After a sweep: {loaded, offered (flat entry, expiry | LIMIT), entries in line} | {'0'}.
const WAITLIST_STATE: &str = include_str!("../lua/waitlist_state.lua");

/// Forgets an offer once recorded. ARGV: prefixes, entry, the value recorded.
const RECORDED: &str = include_str!("../lua/recorded.lua");

/// Every script, compiled once (redis-rs sends EVALSHA and falls back to EVAL after a flush).
pub struct Scripts {
    pub hold: redis::Script,
    pub release: redis::Script,
    pub begin_commit: redis::Script,
    pub abort_commit: redis::Script,
    pub finish_commit: redis::Script,
    pub return_sold: redis::Script,
    pub sweep: redis::Script,
    pub snapshot: redis::Script,
    pub stage: redis::Script,
    pub load: redis::Script,
    pub close: redis::Script,
    pub join: redis::Script,
    pub leave: redis::Script,
    pub waitlist_state: redis::Script,
    pub recorded: redis::Script,
}

impl Scripts {
    pub fn new() -> Self {
        let with_prelude = |body: &str| redis::Script::new(&format!("{PRELUDE}\n{body}"));
        Self {
            hold: with_prelude(HOLD),
            release: with_prelude(RELEASE),
            begin_commit: with_prelude(BEGIN_COMMIT),
            abort_commit: with_prelude(ABORT_COMMIT),
            finish_commit: with_prelude(FINISH_COMMIT),
            return_sold: with_prelude(RETURN_SOLD),
            sweep: with_prelude(SWEEP),
            snapshot: with_prelude(SNAPSHOT),
            stage: with_prelude(STAGE),
            load: with_prelude(LOAD),
            close: with_prelude(CLOSE),
            join: with_prelude(JOIN),
            leave: with_prelude(LEAVE),
            waitlist_state: with_prelude(WAITLIST_STATE),
            recorded: with_prelude(RECORDED),
        }
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Self::new()
    }
}
