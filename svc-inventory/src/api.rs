//! The `InventoryService` implementation: validate, authenticate, authorize, then holds and
//! sales through [`Inventory`].

use std::{collections::HashSet, pin::Pin, time::Duration};

use chrono::Utc;
use futures::Stream;
use ticketing_platform::{
    ApiError, ApiResult,
    auth::{Principal, Scope, TokenVerifier},
    error::{Violations, parse_id},
    pagination::{self, Cursor},
    server::to_the_end,
    time::{to_timestamp, to_timestamp_opt},
};
use ticketing_proto::ticketing::inventory::v1::{self as pb, inventory_service_server::InventoryService};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    config::HoldConfig,
    domain::WaitlistStatus,
    inventory::{HoldRefused, HoldView, Inventory, Reclaim, Snapshot, WaitlistRefused, Want},
    store::{self, Configuration, EventRow, Item, waitlist::EntryRow},
    watch::{self, Fanout},
};

/// Most seats one hold names.
pub const MAX_SEATS_PER_HOLD: usize = 50;
/// Most seats one event may have.
pub const MAX_SEATS_PER_EVENT: usize = 100_000;

#[derive(Clone)]
pub struct InventoryApi {
    pub inventory: Inventory,
    pub verifier: TokenVerifier,
    pub fanout: Fanout,
    pub holds: HoldConfig,
}

fn check_place_id(v: &mut Violations, field: &str, id: &str) {
    if id.is_empty() {
        v.add(field, "is required");
    } else if id.len() > 128 || id.contains(',') || id.chars().any(char::is_control) {
        v.add(
            field,
            "must be at most 128 characters, without commas or control characters",
        );
    }
}

fn item_proto(item: &Item) -> pb::HoldItem {
    pb::HoldItem {
        tier_id: item.tier_id.clone(),
        place: match (&item.seat_id, &item.ga_area_id) {
            (Some(seat), _) => Some(pb::hold_item::Place::SeatId(seat.clone())),
            (None, Some(area)) => Some(pb::hold_item::Place::GaAreaId(area.clone())),
            _ => None,
        },
        quantity: item.quantity,
    }
}

fn hold_proto(view: &HoldView, items: &[Item]) -> pb::Hold {
    pb::Hold {
        id: view.id.to_string(),
        event_id: view.event_id.to_string(),
        owner_id: view.owner.to_string(),
        items: items.iter().map(item_proto).collect(),
        status: view.status.to_proto() as i32,
        created_at: Some(to_timestamp(view.created_at)),
        expires_at: Some(to_timestamp(view.expires_at)),
        order_id: view.order_id.map(|o| o.to_string()).unwrap_or_default(),
    }
}

pub(crate) fn seat_status(status: &str) -> i32 {
    (match status {
        "HELD" => pb::SeatStatus::Held,
        "SOLD" => pb::SeatStatus::Sold,
        _ => pb::SeatStatus::Free,
    }) as i32
}

pub(crate) fn availability_proto(event: Uuid, snap: &Snapshot) -> pb::Availability {
    let mut tiers: Vec<pb::TierAvailability> = snap
        .tiers
        .iter()
        .map(|(tier, c)| pb::TierAvailability {
            tier_id: tier.clone(),
            total: i32::try_from(c.total).unwrap_or(i32::MAX),
            free: i32::try_from(if snap.closed { 0 } else { c.free() }).unwrap_or(i32::MAX),
            held: i32::try_from(c.held).unwrap_or(i32::MAX),
            sold: i32::try_from(c.sold).unwrap_or(i32::MAX),
        })
        .collect();
    tiers.sort_by(|a, b| a.tier_id.cmp(&b.tier_id));
    let held: HashSet<&String> = snap.held.iter().collect();
    let sold: HashSet<&String> = snap.sold.iter().collect();
    let mut seats: Vec<pb::SeatState> = snap
        .seats
        .iter()
        .map(|s| pb::SeatState {
            seat_id: s.clone(),
            status: if sold.contains(s) {
                pb::SeatStatus::Sold as i32
            } else if held.contains(s) {
                pb::SeatStatus::Held as i32
            } else if snap.closed {
                pb::SeatStatus::Blocked as i32
            } else {
                pb::SeatStatus::Free as i32
            },
        })
        .collect();
    seats.sort_by(|a, b| a.seat_id.cmp(&b.seat_id));
    pb::Availability {
        event_id: event.to_string(),
        tiers,
        seats,
        sequence: snap.sequence,
        as_of: Some(to_timestamp(Utc::now())),
    }
}

fn refused(refusal: HoldRefused, seat_ids: &[String]) -> ApiError {
    match refusal {
        HoldRefused::Taken(seats) => ApiError::FailedPrecondition {
            reason: "SEAT_UNAVAILABLE",
            message: format!(
                "{} of the seats are held or sold: {}",
                seats.len(),
                seats.join(", ")
            ),
            metadata: [("seat_ids".to_string(), seats.join(","))].into(),
        },
        HoldRefused::NotEnough { free } => ApiError::FailedPrecondition {
            reason: "NOT_ENOUGH_AVAILABLE",
            message: format!("only {free} places are available"),
            metadata: [("available".to_string(), free.to_string())].into(),
        },
        HoldRefused::UnknownSeats(unknown) => {
            let mut v = Violations::new();
            for (i, seat) in seat_ids.iter().enumerate() {
                if unknown.contains(seat) {
                    v.add(format!("seat_ids[{i}]"), "is not a seat of this event");
                }
            }
            v.into_result()
                .err()
                .unwrap_or_else(|| ApiError::invalid("seat_ids", "unknown seat"))
        }
        HoldRefused::UnknownTier => ApiError::invalid("tier_id", "is not a tier on sale for this event"),
        HoldRefused::Closed => ApiError::precondition("SALES_CLOSED", "sales for this event are closed"),
        HoldRefused::Limit { already, limit } => ApiError::FailedPrecondition {
            reason: "PER_CUSTOMER_LIMIT",
            message: format!(
                "at most {limit} places per customer for this event; you already have {already}"
            ),
            metadata: [("limit".to_string(), limit.to_string())].into(),
        },
    }
}

fn entry_proto(entry: &EntryRow, ahead: i64) -> pb::WaitlistEntry {
    let offered = !matches!(entry.status, WaitlistStatus::Waiting | WaitlistStatus::Removed)
        && entry.offer_expires_at.is_some();
    pb::WaitlistEntry {
        id: entry.entry_id.to_string(),
        event_id: entry.event_id.to_string(),
        tier_id: entry.tier_id.clone(),
        quantity: entry.quantity,
        status: entry.status.to_proto() as i32,
        ahead,
        offer_hold_id: if offered {
            entry.entry_id.to_string()
        } else {
            String::new()
        },
        offer_expires_at: to_timestamp_opt(entry.offer_expires_at),
        joined_at: Some(to_timestamp(entry.joined_at)),
    }
}

fn waitlist_refused(refusal: WaitlistRefused) -> ApiError {
    match refusal {
        WaitlistRefused::PlacesAvailable { free } => ApiError::FailedPrecondition {
            reason: "PLACES_AVAILABLE",
            message: format!("{free} places of the tier are available: hold them instead"),
            metadata: [("available".to_string(), free.to_string())].into(),
        },
        WaitlistRefused::Limit { limit } => ApiError::FailedPrecondition {
            reason: "PER_CUSTOMER_LIMIT",
            message: format!(
                "at most {limit} places per customer for this event, waiting-list places included"
            ),
            metadata: [("limit".to_string(), limit.to_string())].into(),
        },
        WaitlistRefused::Closed => ApiError::precondition("SALES_CLOSED", "sales for this event are closed"),
        WaitlistRefused::UnknownTier => ApiError::invalid("tier_id", "is not a tier on sale for this event"),
    }
}

/// Inventory knows only published events: to a buyer, an unknown one is not on sale.
fn not_on_sale(error: ApiError) -> ApiError {
    match error {
        ApiError::NotFound {
            resource: "event on sale",
        } => ApiError::precondition(
            "EVENT_NOT_ON_SALE",
            "the event is not on sale (unknown or not published)",
        ),
        other => other,
    }
}

impl InventoryApi {
    fn ttl(&self, requested: Option<&prost_types::Duration>) -> ApiResult<Duration> {
        let Some(d) = requested else {
            return Ok(self.holds.default_ttl);
        };
        let ttl = u64::try_from(d.seconds)
            .ok()
            .filter(|_| d.nanos >= 0)
            .map(|s| Duration::from_secs(s) + Duration::from_nanos(u64::try_from(d.nanos).unwrap_or(0)))
            .ok_or_else(|| ApiError::invalid("ttl", "must be positive"))?;
        if ttl < self.holds.min_ttl || ttl > self.holds.max_ttl {
            return Err(ApiError::invalid(
                "ttl",
                format!(
                    "must be {} s to {} s",
                    self.holds.min_ttl.as_secs(),
                    self.holds.max_ttl.as_secs()
                ),
            ));
        }
        Ok(ttl)
    }

    async fn buyer<T>(&self, request: &Request<T>) -> ApiResult<Uuid> {
        self.verifier.authenticate(request.metadata()).await?.user_id()
    }

    async fn event_row(&self, event: Uuid) -> ApiResult<Option<EventRow>> {
        let mut conn = self.inventory.pool().get().await?;
        store::find_event(&mut conn, event).await
    }

    async fn on_sale(&self, event: Uuid) -> ApiResult<()> {
        match self.event_row(event).await? {
            Some(_) => Ok(()),
            None => Err(ApiError::precondition(
                "EVENT_NOT_ON_SALE",
                "the event is not on sale (unknown or not published)",
            )),
        }
    }

    async fn hold_seats(&self, request: Request<pb::HoldSeatsRequest>) -> ApiResult<pb::Hold> {
        let owner = self.buyer(&request).await?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let event = v.id("event_id", &r.event_id);
        if r.seat_ids.is_empty() {
            v.add("seat_ids", "name at least one seat");
        } else if r.seat_ids.len() > MAX_SEATS_PER_HOLD {
            v.add("seat_ids", format!("at most {MAX_SEATS_PER_HOLD} seats per hold"));
        }
        let mut seen = HashSet::new();
        for (i, seat) in r.seat_ids.iter().enumerate() {
            check_place_id(&mut v, &format!("seat_ids[{i}]"), seat);
            if !seen.insert(seat) {
                v.add(format!("seat_ids[{i}]"), "names a seat twice");
            }
        }
        let ttl = v.check("ttl", self.ttl(r.ttl.as_ref()).map_err(|e| e.to_string()));
        let (event, ttl) = v.finish((event, ttl))?;
        let (view, items) = self
            .inventory
            .hold(event, owner, Want::Seats(&r.seat_ids), ttl)
            .await
            .map_err(not_on_sale)?
            .map_err(|refusal| refused(refusal, &r.seat_ids))?;
        Ok(hold_proto(&view, &items))
    }

    async fn hold_quantity(&self, request: Request<pb::HoldQuantityRequest>) -> ApiResult<pb::Hold> {
        let owner = self.buyer(&request).await?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let event = v.id("event_id", &r.event_id);
        check_place_id(&mut v, "tier_id", &r.tier_id);
        let max = i32::try_from(MAX_SEATS_PER_HOLD).unwrap_or(50);
        if !(1..=max).contains(&r.quantity) {
            v.add("quantity", format!("must be 1 to {max}"));
        }
        let ttl = v.check("ttl", self.ttl(r.ttl.as_ref()).map_err(|e| e.to_string()));
        let (event, ttl) = v.finish((event, ttl))?;
        let (view, items) = self
            .inventory
            .hold(
                event,
                owner,
                Want::Quantity {
                    tier: &r.tier_id,
                    quantity: r.quantity,
                },
                ttl,
            )
            .await
            .map_err(not_on_sale)?
            .map_err(|refusal| refused(refusal, &[]))?;
        Ok(hold_proto(&view, &items))
    }

    /// The caller's hold (admins see every hold).
    async fn own_hold<T>(&self, request: &Request<T>, hold_id: &str) -> ApiResult<HoldView> {
        let principal = self.verifier.authenticate(request.metadata()).await?;
        let hold = parse_id("hold_id", hold_id)?;
        let view = self
            .inventory
            .get_hold(hold)
            .await?
            .ok_or(ApiError::NotFound { resource: "hold" })?;
        if !principal.is_admin() && principal.user_id()? != view.owner {
            return Err(ApiError::NotFound { resource: "hold" });
        }
        Ok(view)
    }

    async fn join_waitlist(&self, request: Request<pb::JoinWaitlistRequest>) -> ApiResult<pb::WaitlistEntry> {
        let owner = self.buyer(&request).await?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let event = v.id("event_id", &r.event_id);
        check_place_id(&mut v, "tier_id", &r.tier_id);
        let max = i32::try_from(MAX_SEATS_PER_HOLD).unwrap_or(50);
        if !(1..=max).contains(&r.quantity) {
            v.add("quantity", format!("must be 1 to {max}"));
        }
        let event = v.finish(event)?;
        let inventory = self.inventory.clone();
        // The entry and its place in line are written to the end whether or not the caller waits.
        let entry = to_the_end(async move {
            inventory
                .join_waitlist(event, &r.tier_id, owner, r.quantity)
                .await
        })
        .await
        .map_err(not_on_sale)?
        .map_err(waitlist_refused)?;
        self.entry_with_place(entry).await
    }

    async fn entry_with_place(&self, entry: EntryRow) -> ApiResult<pb::WaitlistEntry> {
        let ahead = if entry.status == WaitlistStatus::Waiting {
            let mut conn = self.inventory.pool().get().await?;
            store::waitlist::ahead_of(&mut conn, &entry).await?
        } else {
            0
        };
        Ok(entry_proto(&entry, ahead))
    }

    /// The caller's entry (admins see every entry); NOT_FOUND to anyone else.
    async fn own_entry(&self, principal: &Principal, entry_id: &str) -> ApiResult<EntryRow> {
        let id = parse_id("entry_id", entry_id)?;
        let mut conn = self.inventory.pool().get().await?;
        let entry = store::waitlist::find(&mut conn, id)
            .await?
            .ok_or(ApiError::NotFound {
                resource: "waitlist entry",
            })?;
        if !principal.is_admin() && principal.user_id().ok() != Some(entry.owner_id) {
            return Err(ApiError::NotFound {
                resource: "waitlist entry",
            });
        }
        Ok(entry)
    }

    async fn leave_waitlist(
        &self,
        request: Request<pb::LeaveWaitlistRequest>,
    ) -> ApiResult<pb::WaitlistEntry> {
        let principal = self.verifier.authenticate(request.metadata()).await?;
        let entry = self.own_entry(&principal, &request.get_ref().entry_id).await?;
        let inventory = self.inventory.clone();
        let left = to_the_end(async move { inventory.leave_waitlist(&entry).await }).await?;
        Ok(entry_proto(&left, 0))
    }

    async fn list_waitlist_entries(
        &self,
        request: Request<pb::ListWaitlistEntriesRequest>,
    ) -> ApiResult<pb::ListWaitlistEntriesResponse> {
        let owner = self.buyer(&request).await?;
        let r = request.into_inner();
        let size = pagination::page_size(r.page_size)?.min(100);
        let before = Cursor::decode(&r.page_token)?;
        let rows = {
            let mut conn = self.inventory.pool().get().await?;
            store::waitlist::of_owner(&mut conn, owner, before.map(|c| c.id), size + 1).await?
        };
        let (rows, next_page_token) = pagination::finish_page(rows, size, |e| Cursor {
            created_at: e.joined_at,
            id: e.entry_id,
        });
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            entries.push(self.entry_with_place(row).await?);
        }
        Ok(pb::ListWaitlistEntriesResponse {
            entries,
            next_page_token,
        })
    }

    async fn waitlist_stats(
        &self,
        request: Request<pb::GetWaitlistStatsRequest>,
    ) -> ApiResult<pb::WaitlistStats> {
        let principal = self.verifier.authenticate(request.metadata()).await?;
        let event = parse_id("event_id", &request.get_ref().event_id)?;
        let row = self.event_row(event).await?.ok_or(ApiError::NotFound {
            resource: "event on sale",
        })?;
        let staff = principal.is_admin()
            || (principal.can_act_for(row.organization_id)
                && principal.require_scope(Scope::EventsRead).is_ok());
        if !staff {
            return Err(ApiError::permission_denied(
                "only the event's organization sees its waiting lists",
            ));
        }
        let counts = {
            let mut conn = self.inventory.pool().get().await?;
            store::waitlist::stats(&mut conn, event).await?
        };
        let mut tiers: Vec<pb::TierWaitlist> = Vec::new();
        for (tier, status, entries, places) in counts {
            let at = match tiers.iter().position(|t| t.tier_id == tier) {
                Some(at) => at,
                None => {
                    tiers.push(pb::TierWaitlist {
                        tier_id: tier,
                        ..Default::default()
                    });
                    tiers.len() - 1
                }
            };
            let t = &mut tiers[at];
            let n = i32::try_from(entries).unwrap_or(i32::MAX);
            match status {
                WaitlistStatus::Waiting => {
                    t.waiting = n;
                    t.places_wanted = i32::try_from(places).unwrap_or(i32::MAX);
                }
                WaitlistStatus::Offered => t.offered = n,
                WaitlistStatus::Fulfilled => t.fulfilled = n,
                WaitlistStatus::Lapsed => t.lapsed = n,
                WaitlistStatus::Left => t.left = n,
                WaitlistStatus::Removed => {}
            }
        }
        tiers.sort_by(|a, b| a.tier_id.cmp(&b.tier_id));
        Ok(pb::WaitlistStats {
            event_id: event.to_string(),
            tiers,
        })
    }

    /// Only catalog gets here (the call graph's guard), for an event it publishes.
    async fn configure(
        &self,
        request: Request<pb::ConfigureEventRequest>,
    ) -> ApiResult<pb::ConfigureEventResponse> {
        let r = request.into_inner();
        let mut v = Violations::new();
        let event = v.id("event_id", &r.event_id);
        let org = v.id("organization_id", &r.organization_id);
        if r.version < 1 {
            v.add("version", "must be at least 1");
        }
        if r.seats.len() > MAX_SEATS_PER_EVENT {
            v.add("seats", format!("at most {MAX_SEATS_PER_EVENT} seats"));
        }
        let mut seat_ids = HashSet::new();
        let mut seated_tiers = HashSet::new();
        for (i, seat) in r.seats.iter().enumerate() {
            check_place_id(&mut v, &format!("seats[{i}].seat_id"), &seat.seat_id);
            check_place_id(&mut v, &format!("seats[{i}].tier_id"), &seat.tier_id);
            if !seat_ids.insert(seat.seat_id.as_str()) {
                v.add(format!("seats[{i}].seat_id"), "repeats a seat");
            }
            seated_tiers.insert(seat.tier_id.as_str());
        }
        let mut quota_tiers = HashSet::new();
        for (i, q) in r.quotas.iter().enumerate() {
            check_place_id(&mut v, &format!("quotas[{i}].tier_id"), &q.tier_id);
            check_place_id(&mut v, &format!("quotas[{i}].ga_area_id"), &q.ga_area_id);
            if !(0..=1_000_000).contains(&q.capacity) {
                v.add(format!("quotas[{i}].capacity"), "must be 0 to 1,000,000");
            }
            if seated_tiers.contains(q.tier_id.as_str()) || !quota_tiers.insert(q.tier_id.as_str()) {
                v.add(
                    format!("quotas[{i}].tier_id"),
                    "a tier sells either seats or one area, once",
                );
            }
        }
        let limit = if r.per_customer_limit == 0 {
            10
        } else {
            r.per_customer_limit
        };
        if !(1..=100).contains(&limit) {
            v.add("per_customer_limit", "must be 1 to 100");
        }
        let (event, org) = v.finish((event, org))?;
        let config = Configuration {
            event: EventRow {
                event_id: event,
                organization_id: org,
                version: r.version,
                per_customer_limit: limit,
                closed: false,
                configured_at: Utc::now(),
            },
            seats: r.seats.into_iter().map(|s| (s.seat_id, s.tier_id)).collect(),
            quotas: r
                .quotas
                .into_iter()
                .map(|q| (q.tier_id, q.ga_area_id, q.capacity))
                .collect(),
        };
        let inventory = self.inventory.clone();
        let version = to_the_end(async move { inventory.configure(&config).await }).await?;
        Ok(pb::ConfigureEventResponse { version })
    }

    /// Only orders gets here (the call graph's guard), for its pending order while it holds the
    /// order's charge lease; the hold must still be the buyer's.
    async fn commit(&self, request: Request<pb::CommitHoldRequest>) -> ApiResult<pb::CommitHoldResponse> {
        let r = request.into_inner();
        let mut v = Violations::new();
        let hold = v.id("hold_id", &r.hold_id);
        let order = v.id("order_id", &r.order_id);
        let customer = v.id("customer_id", &r.customer_id);
        let (hold, order, customer) = v.finish((hold, order, customer))?;
        let inventory = self.inventory.clone();
        let items = to_the_end(async move { inventory.commit(hold, order, Some(customer)).await }).await?;
        Ok(pb::CommitHoldResponse {
            items: items.iter().map(item_proto).collect(),
        })
    }

    /// Only orders gets here (the call graph's guard), for an expired order whose payment
    /// arrived late: named seats, or a quantity of one tier, as the order bought them.
    async fn reclaim(&self, request: Request<pb::ReclaimPlacesRequest>) -> ApiResult<pb::CommitHoldResponse> {
        let r = request.into_inner();
        let mut v = Violations::new();
        let order = v.id("order_id", &r.order_id);
        let event = v.id("event_id", &r.event_id);
        let owner = v.id("customer_id", &r.customer_id);
        let hold = v.id("hold_id", &r.hold_id);
        let mut seats = Vec::new();
        let mut quantity: Option<(String, i32)> = None;
        if r.items.is_empty() {
            v.add("items", "name at least one place");
        }
        for (i, item) in r.items.iter().enumerate() {
            check_place_id(&mut v, &format!("items[{i}].tier_id"), &item.tier_id);
            match &item.place {
                Some(pb::hold_item::Place::SeatId(seat)) => {
                    check_place_id(&mut v, &format!("items[{i}].seat_id"), seat.as_str());
                    seats.push(seat.clone());
                }
                _ => match &mut quantity {
                    None => quantity = Some((item.tier_id.clone(), item.quantity)),
                    Some((tier, n)) if *tier == item.tier_id => *n = n.saturating_add(item.quantity),
                    Some(_) => v.add(format!("items[{i}]"), "quantities of one tier only"),
                },
            }
        }
        let max = i32::try_from(MAX_SEATS_PER_HOLD).unwrap_or(50);
        match &quantity {
            Some(_) if !seats.is_empty() => v.add("items", "named seats or a quantity, not both"),
            Some((_, n)) if !(1..=max).contains(n) => v.add("items", format!("a quantity of 1 to {max}")),
            _ if seats.len() > MAX_SEATS_PER_HOLD => {
                v.add("items", format!("at most {MAX_SEATS_PER_HOLD} seats"))
            }
            _ => {}
        }
        let (order, event, owner, hold) = v.finish((order, event, owner, hold))?;
        let inventory = self.inventory.clone();
        // Marking, holding and committing run to their end whether or not orders waits.
        let items = to_the_end(async move {
            let places = match &quantity {
                Some((tier, quantity)) => Want::Quantity {
                    tier,
                    quantity: *quantity,
                },
                None => Want::Seats(&seats),
            };
            inventory
                .reclaim(
                    order,
                    Reclaim {
                        event,
                        owner,
                        hold,
                        places,
                    },
                )
                .await
        })
        .await
        .map_err(not_on_sale)?;
        Ok(pb::CommitHoldResponse {
            items: items.iter().map(item_proto).collect(),
        })
    }

    /// Only catalog gets here (the call graph's guard), for an event it cancelled or completed.
    async fn close(&self, request: Request<pb::CloseEventRequest>) -> ApiResult<pb::CloseEventResponse> {
        let event = parse_id("event_id", &request.get_ref().event_id)?;
        self.event_row(event).await?.ok_or(ApiError::NotFound {
            resource: "event on sale",
        })?;
        self.inventory.close(event).await?;
        Ok(pb::CloseEventResponse {})
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::AvailabilityUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    type WatchAvailabilityStream = WatchStream;

    async fn hold_seats(&self, r: Request<pb::HoldSeatsRequest>) -> Result<Response<pb::Hold>, Status> {
        Ok(Response::new(InventoryApi::hold_seats(self, r).await?))
    }
    async fn hold_quantity(&self, r: Request<pb::HoldQuantityRequest>) -> Result<Response<pb::Hold>, Status> {
        Ok(Response::new(InventoryApi::hold_quantity(self, r).await?))
    }
    async fn get_hold(&self, r: Request<pb::GetHoldRequest>) -> Result<Response<pb::Hold>, Status> {
        let view = self.own_hold(&r, &r.get_ref().hold_id).await?;
        let items = self.inventory.items_of(&view).await?;
        Ok(Response::new(hold_proto(&view, &items)))
    }
    async fn release_hold(&self, r: Request<pb::ReleaseHoldRequest>) -> Result<Response<pb::Hold>, Status> {
        let view = self.own_hold(&r, &r.get_ref().hold_id).await?;
        let items = self.inventory.items_of(&view).await?;
        let released = self.inventory.release(view.id, None).await?;
        Ok(Response::new(hold_proto(&released, &items)))
    }
    async fn get_availability(
        &self,
        r: Request<pb::GetAvailabilityRequest>,
    ) -> Result<Response<pb::Availability>, Status> {
        let event = parse_id("event_id", &r.get_ref().event_id)?;
        // Polled by every browser in a sale: answered from Redis, which asks PostgreSQL only to
        // rebuild a lost event (and so learns that an unknown one is not on sale).
        let snap = self
            .inventory
            .snapshot(event, !r.get_ref().counts_only)
            .await
            .map_err(not_on_sale)?;
        Ok(Response::new(availability_proto(event, &snap)))
    }
    async fn watch_availability(
        &self,
        r: Request<pb::WatchAvailabilityRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let event = parse_id("event_id", &r.get_ref().event_id)?;
        let after = r.get_ref().after_sequence;
        if after < 0 {
            return Err(ApiError::invalid("after_sequence", "must not be negative").into());
        }
        self.on_sale(event).await?;
        // Subscribe before the snapshot, so nothing falls between them.
        let (signals, replay) = self.fanout.subscribe_after(event, after).await;
        let (tx, rx) = mpsc::channel(64);
        let resume = replay.map(|deltas| (after, deltas));
        tokio::spawn(watch::feed(
            self.inventory.clone(),
            signals,
            event,
            tx,
            self.holds.heartbeat_interval,
            resume,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
    async fn join_waitlist(
        &self,
        r: Request<pb::JoinWaitlistRequest>,
    ) -> Result<Response<pb::WaitlistEntry>, Status> {
        Ok(Response::new(InventoryApi::join_waitlist(self, r).await?))
    }
    async fn leave_waitlist(
        &self,
        r: Request<pb::LeaveWaitlistRequest>,
    ) -> Result<Response<pb::WaitlistEntry>, Status> {
        Ok(Response::new(InventoryApi::leave_waitlist(self, r).await?))
    }
    async fn list_waitlist_entries(
        &self,
        r: Request<pb::ListWaitlistEntriesRequest>,
    ) -> Result<Response<pb::ListWaitlistEntriesResponse>, Status> {
        Ok(Response::new(InventoryApi::list_waitlist_entries(self, r).await?))
    }
    async fn get_waitlist_stats(
        &self,
        r: Request<pb::GetWaitlistStatsRequest>,
    ) -> Result<Response<pb::WaitlistStats>, Status> {
        Ok(Response::new(self.waitlist_stats(r).await?))
    }
    async fn configure_event(
        &self,
        r: Request<pb::ConfigureEventRequest>,
    ) -> Result<Response<pb::ConfigureEventResponse>, Status> {
        Ok(Response::new(self.configure(r).await?))
    }
    async fn commit_hold(
        &self,
        r: Request<pb::CommitHoldRequest>,
    ) -> Result<Response<pb::CommitHoldResponse>, Status> {
        Ok(Response::new(self.commit(r).await?))
    }
    async fn reclaim_places(
        &self,
        r: Request<pb::ReclaimPlacesRequest>,
    ) -> Result<Response<pb::CommitHoldResponse>, Status> {
        Ok(Response::new(self.reclaim(r).await?))
    }
    async fn close_event(
        &self,
        r: Request<pb::CloseEventRequest>,
    ) -> Result<Response<pb::CloseEventResponse>, Status> {
        Ok(Response::new(self.close(r).await?))
    }
}
