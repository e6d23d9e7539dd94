//! The `CatalogService` implementation: validate, authenticate, authorize, store, and keep
//! inventory in step with what is published.

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};
use prost::Message;
use ticketing_platform::clients::PeerChannel;
use ticketing_platform::{
    ApiError, ApiResult,
    auth::{Principal, Scope, TokenVerifier},
    clients::internal_peer_error,
    error::{Violations, parse_id, required},
    fieldmask::{self, field},
    messaging::OutboxSignal,
    pagination,
};
use ticketing_proto::ticketing::{
    catalog::v1::{self as pb, catalog_service_server::CatalogService},
    inventory::v1::{self as inv, inventory_service_client::InventoryServiceClient},
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    charts::*,
    domain::{self, Status as EventStatus},
    events::{lifecycle_event, published_event},
    store::{self, After, EventFilter, EventRow, TierRow, VenueRow},
    wire::*,
};

#[derive(Clone)]
pub struct CatalogApi {
    pub pool: ticketing_platform::db::PgPool,
    pub verifier: TokenVerifier,
    pub inventory: InventoryServiceClient<PeerChannel>,
    /// Wakes the outbox relay after a lifecycle change was committed.
    pub outbox: OutboxSignal,
    pub charts: ChartCache,
}

/// Organization members (API keys need events:write) and admins change an organization's catalog.
pub(crate) fn require_writer(principal: &Principal, org: Uuid) -> ApiResult<()> {
    if principal.is_admin() {
        return Ok(());
    }
    if !principal.can_act_for(org) {
        return Err(ApiError::permission_denied(
            "only members of the owning organization may change it",
        ));
    }
    principal.require_scope(Scope::EventsWrite)
}

pub(crate) fn can_see_drafts(principal: Option<&Principal>, org: Uuid) -> bool {
    principal
        .is_some_and(|p| p.is_admin() || (p.can_act_for(org) && p.require_scope(Scope::EventsRead).is_ok()))
}

impl CatalogApi {
    pub(crate) async fn principal<T>(&self, request: &Request<T>) -> ApiResult<Principal> {
        self.verifier.authenticate(request.metadata()).await
    }

    /// The venue's chart, decoded once per version of the venue.
    pub(crate) async fn chart(&self, venue: Uuid) -> ApiResult<Arc<pb::SeatingChart>> {
        let version = {
            let mut conn = self.pool.get().await?;
            store::venue_version(&mut conn, venue)
                .await?
                .ok_or(ApiError::NotFound { resource: "venue" })?
        };
        self.chart_at(venue, version).await
    }

    /// The venue's chart as of `version`, decoded once per version.
    pub(crate) async fn chart_at(
        &self,
        venue: Uuid,
        version: DateTime<Utc>,
    ) -> ApiResult<Arc<pb::SeatingChart>> {
        Ok(self.cached_chart(venue, version).await?.1)
    }

    pub(crate) async fn cached_chart(&self, venue: Uuid, version: DateTime<Utc>) -> ApiResult<CachedChart> {
        if let Some(cached) = self.charts.get(venue, version) {
            return Ok(cached);
        }
        let mut conn = self.pool.get().await?;
        let row = store::find_venue(&mut conn, venue)
            .await?
            .ok_or(ApiError::NotFound { resource: "venue" })?;
        drop(conn);
        let chart = Arc::new(decode_chart(&row.chart)?);
        Ok(self.charts.put(venue, row.updated_at, chart))
    }

    pub(crate) async fn venue(&self, id: Uuid) -> ApiResult<VenueRow> {
        let mut conn = self.pool.get().await?;
        store::find_venue(&mut conn, id)
            .await?
            .ok_or(ApiError::NotFound { resource: "venue" })
    }

    pub(crate) async fn event(&self, id: Uuid) -> ApiResult<EventRow> {
        let mut conn = self.pool.get().await?;
        store::find_event(&mut conn, id)
            .await?
            .ok_or(ApiError::NotFound { resource: "event" })
    }

    /// An event as the caller may see it: drafts are NOT_FOUND for outsiders.
    pub(crate) async fn visible_event(&self, id: Uuid, principal: Option<&Principal>) -> ApiResult<EventRow> {
        let event = self.event(id).await?;
        if !status_of(&event)?.is_public() && !can_see_drafts(principal, event.organization_id) {
            return Err(ApiError::NotFound { resource: "event" });
        }
        Ok(event)
    }

    /// Hands the event's current seats and quotas to inventory (idempotent on the version, which
    /// is the time of the event's last change).
    /// Returns the tiers, each with the places it puts on sale.
    pub(crate) async fn sync_inventory(
        &self,
        event: &EventRow,
        chart: &pb::SeatingChart,
    ) -> ApiResult<Vec<(store::TierRow, i64)>> {
        let tiers = {
            let mut conn = self.pool.get().await?;
            store::tiers_of(&mut conn, event.id).await?
        };
        let keyed: Vec<(String, Option<String>, Option<String>)> = tiers
            .iter()
            .map(|t| {
                (
                    t.id.to_string(),
                    t.seat_category_code.clone(),
                    t.ga_area_id.clone(),
                )
            })
            .collect();
        let (seats, quotas) = domain::inventory_assignments(chart, &keyed);
        let mut places: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
        for (_, tier) in &seats {
            *places.entry(tier.clone()).or_default() += 1;
        }
        for (tier, _, capacity) in &quotas {
            *places.entry(tier.clone()).or_default() += i64::from(*capacity);
        }
        let limit = tiers.iter().map(|t| t.per_order_limit).max().unwrap_or(10);
        let on_sale: Vec<(store::TierRow, i64)> = tiers
            .into_iter()
            .map(|t| {
                let n = places.get(&t.id.to_string()).copied().unwrap_or(0);
                (t, n)
            })
            .collect();
        let request = inv::ConfigureEventRequest {
            event_id: event.id.to_string(),
            version: event.updated_at.timestamp_micros().max(1),
            seats: seats
                .into_iter()
                .map(|(seat_id, tier_id)| inv::SeatAssignment { seat_id, tier_id })
                .collect(),
            quotas: quotas
                .into_iter()
                .map(|(tier_id, ga_area_id, capacity)| inv::QuotaAssignment {
                    tier_id,
                    ga_area_id,
                    capacity,
                })
                .collect(),
            per_customer_limit: limit,
            organization_id: event.organization_id.to_string(),
        };
        let mut client = self.inventory.clone();
        client
            .configure_event(Request::new(request))
            .await
            .map_err(|status| match status.code() {
                tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument => ApiError::precondition(
                    "INVENTORY_REFUSED",
                    format!("inventory refused the change: {}", status.message()),
                ),
                _ => internal_peer_error("inventory", status),
            })?;
        Ok(on_sale)
    }

    pub(crate) async fn close_inventory(&self, event: Uuid) -> ApiResult<()> {
        let mut client = self.inventory.clone();
        match client
            .close_event(Request::new(inv::CloseEventRequest {
                event_id: event.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            // Never published: nothing to close.
            Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
            Err(status) => Err(internal_peer_error("inventory", status)),
        }
    }

    // === venues ===

    async fn create_venue(&self, request: Request<pb::CreateVenueRequest>) -> ApiResult<pb::Venue> {
        let principal = self.principal(&request).await?;
        let venue = required(request.into_inner().venue, "venue")?;
        let mut v = Violations::new();
        let org = v.id("venue.organization_id", &venue.organization_id);
        domain::check_venue_fields(&mut v, &venue);
        let chart = domain::normalize_chart(venue.seating_chart.clone().unwrap_or_default(), &mut v);
        let org = v.finish(org)?;
        require_writer(&principal, org)?;
        let address = venue.address.unwrap_or_default();
        let now = Utc::now();
        let row = VenueRow {
            id: Uuid::now_v7(),
            organization_id: org,
            name: venue.name.trim().to_string(),
            address_line1: address.line1,
            address_line2: address.line2,
            city: address.city.trim().to_string(),
            region: address.region,
            postal_code: address.postal_code,
            country: address.country,
            timezone: venue.timezone,
            capacity: domain::capacity(&chart),
            chart: chart.encode_to_vec(),
            created_at: now,
            updated_at: now,
        };
        let mut conn = self.pool.get().await?;
        store::insert_venue(&mut conn, &row).await?;
        venue_proto(&row, true)
    }

    async fn update_venue(&self, request: Request<pb::UpdateVenueRequest>) -> ApiResult<pb::Venue> {
        let principal = self.principal(&request).await?;
        let r = request.into_inner();
        let venue = required(r.venue, "venue")?;
        let id = parse_id("venue.id", &venue.id)?;
        let paths = fieldmask::resolve(
            r.update_mask.as_ref(),
            &[
                field("name", !venue.name.is_empty()),
                field("address", venue.address.is_some()),
                field("timezone", !venue.timezone.is_empty()),
                field("seating_chart", venue.seating_chart.is_some()),
            ],
        )?;
        let mut row = self.venue(id).await?;
        require_writer(&principal, row.organization_id)?;
        let mut v = Violations::new();
        let mut probe = venue.clone();
        if !paths.contains("name") {
            probe.name = row.name.clone();
        }
        if !paths.contains("timezone") {
            probe.timezone = row.timezone.clone();
        }
        domain::check_venue_fields(&mut v, &probe);
        let chart = paths
            .contains("seating_chart")
            .then(|| domain::normalize_chart(venue.seating_chart.clone().unwrap_or_default(), &mut v));
        v.into_result()?;
        if paths.contains("name") {
            row.name = venue.name.trim().to_string();
        }
        if paths.contains("timezone") {
            row.timezone = venue.timezone.clone();
        }
        if paths.contains("address") {
            let a = venue.address.unwrap_or_default();
            row.address_line1 = a.line1;
            row.address_line2 = a.line2;
            row.city = a.city.trim().to_string();
            row.region = a.region;
            row.postal_code = a.postal_code;
            row.country = a.country;
        }
        if let Some(chart) = &chart {
            // Published events sell from this chart: inventory must accept it first (it refuses
            // to drop a sold seat), or nothing changes.
            let published = {
                let mut conn = self.pool.get().await?;
                store::events_of_venue(&mut conn, id, EventStatus::Published).await?
            };
            for mut event in published {
                event.updated_at = Utc::now();
                self.sync_inventory(&event, chart).await?;
                let mut conn = self.pool.get().await?;
                store::touch_event(&mut conn, event.id).await?;
            }
            row.capacity = domain::capacity(chart);
            row.chart = chart.encode_to_vec();
        }
        row.updated_at = Utc::now();
        let mut conn = self.pool.get().await?;
        store::update_venue(&mut conn, &row).await?;
        venue_proto(&row, true)
    }

    // === events ===

    async fn create_event(&self, request: Request<pb::CreateEventRequest>) -> ApiResult<pb::Event> {
        let principal = self.principal(&request).await?;
        let event = required(request.into_inner().event, "event")?;
        let mut v = Violations::new();
        let org = v.id("event.organization_id", &event.organization_id);
        let venue_id = v.id("event.venue_id", &event.venue_id);
        domain::check_event_fields(
            &mut v,
            &event,
            &["title", "description", "timezone", "category", "image_urls"],
        );
        let starts = v.required_timestamp("event.starts_at", event.starts_at.as_ref());
        let ends = v.required_timestamp("event.ends_at", event.ends_at.as_ref());
        if let (Some(s), Some(e)) = (starts, ends)
            && e <= s
        {
            v.add("event.ends_at", "must be after starts_at");
        }
        let (org, venue_id, starts, ends) = v.finish((org, venue_id, starts, ends))?;
        require_writer(&principal, org)?;
        let venue = self
            .venue(venue_id)
            .await
            .map_err(|_| ApiError::invalid("event.venue_id", "no such venue"))?;
        if venue.organization_id != org {
            return Err(ApiError::invalid(
                "event.venue_id",
                "the venue belongs to another organization",
            ));
        }
        let now = Utc::now();
        let row = EventRow {
            id: Uuid::now_v7(),
            organization_id: org,
            venue_id,
            title: event.title.trim().to_string(),
            description: event.description,
            starts_at: starts,
            ends_at: ends,
            timezone: if event.timezone.is_empty() {
                venue.timezone.clone()
            } else {
                event.timezone
            },
            category: event.category,
            image_urls: event.image_urls,
            status: EventStatus::Draft.as_str().into(),
            venue_name: venue.name.clone(),
            city: venue.city.clone(),
            created_at: now,
            updated_at: now,
            published_at: None,
        };
        let mut conn = self.pool.get().await?;
        store::insert_event(&mut conn, &row).await?;
        Ok(event_proto(&row, &[], None))
    }

    pub(crate) async fn full_event(&self, row: &EventRow) -> ApiResult<pb::Event> {
        let chart = self.chart(row.venue_id).await?;
        let mut conn = self.pool.get().await?;
        let tiers = store::tiers_of(&mut conn, row.id).await?;
        Ok(event_proto(row, &tiers, Some(&chart)))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> ApiResult<pb::ListEventsResponse> {
        let principal = self.verifier.authenticate_optional(request.metadata()).await?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let size = v.check(
            "page_size",
            pagination::page_size(r.page_size).map_err(|_| "must not be negative".to_string()),
        );
        let after = v.check(
            "page_token",
            EventsToken::decode(&r.page_token).map_err(|_| "is not a token this service issued".to_string()),
        );
        let org = (!r.organization_id.is_empty())
            .then(|| v.id("organization_id", &r.organization_id))
            .flatten();
        let venue = (!r.venue_id.is_empty())
            .then(|| v.id("venue_id", &r.venue_id))
            .flatten();
        let starts_after = v.timestamp("starts_after", r.starts_after.as_ref());
        let starts_before = v.timestamp("starts_before", r.starts_before.as_ref());
        for (i, c) in r.categories.iter().enumerate() {
            if pb::EventCategory::try_from(*c).is_err() {
                v.add(format!("categories[{i}]"), "is not a known category");
            }
        }
        let mut statuses = Vec::new();
        for (i, s) in r.statuses.iter().enumerate() {
            match EventStatus::from_proto(*s) {
                Some(status) => statuses.push(status),
                None => v.add(format!("statuses[{i}]"), "is not a status"),
            }
        }
        if r.query.chars().count() > 200 {
            v.add("query", "must be at most 200 characters");
        } else if r.query.chars().any(char::is_control) {
            v.add("query", "must not contain control characters");
        }
        if r.city.chars().count() > 100 {
            v.add("city", "must be at most 100 characters");
        } else if r.city.chars().any(char::is_control) {
            v.add("city", "must not contain control characters");
        }
        let order = pb::EventOrderBy::try_from(r.order_by).unwrap_or(pb::EventOrderBy::Unspecified);
        if order == pb::EventOrderBy::Relevance && r.query.trim().is_empty() {
            v.add("order_by", "ordering by relevance needs a query");
        }
        v.into_result()?;
        if statuses.is_empty() {
            statuses.push(EventStatus::Published);
        }
        if statuses.contains(&EventStatus::Draft) {
            let allowed = match org {
                Some(org) => can_see_drafts(principal.as_ref(), org),
                None => principal.as_ref().is_some_and(Principal::is_admin),
            };
            if !allowed {
                return Err(ApiError::permission_denied(
                    "drafts are listed only for their organization (set organization_id)",
                ));
            }
        }
        let size = size.unwrap_or(pagination::DEFAULT_PAGE_SIZE);
        let filter = EventFilter {
            query: r.query.trim().to_string(),
            starts_after,
            starts_before,
            city: r.city.trim().to_string(),
            venue_id: venue,
            categories: r.categories.clone(),
            organization_id: org,
            statuses: statuses.iter().map(|s| s.as_str().to_string()).collect(),
            descending: order == pb::EventOrderBy::StartsAtDesc,
            relevance: order == pb::EventOrderBy::Relevance,
        };
        let mut conn = self.pool.get().await?;
        let (mut rows, total) = store::search_events(&mut conn, &filter, after.flatten(), size + 1).await?;
        let more = rows.len() as i64 > size;
        rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        let next_page_token = match (more, rows.last()) {
            (true, Some(_)) if filter.relevance => {
                let offset = match after.flatten() {
                    Some(After::Offset(o)) => o,
                    _ => 0,
                };
                EventsToken {
                    t: None,
                    i: None,
                    o: Some(offset + size),
                }
                .encode()
            }
            (true, Some(last)) => EventsToken {
                t: Some(last.starts_at),
                i: Some(last.id),
                o: None,
            }
            .encode(),
            _ => String::new(),
        };
        // One query for the page's tiers and one for its venues, each chart decoded once.
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let mut venue_ids: Vec<Uuid> = rows.iter().map(|r| r.venue_id).collect();
        venue_ids.sort();
        venue_ids.dedup();
        let tiers = store::tiers_of_events(&mut conn, &ids).await?;
        let charts: HashMap<Uuid, pb::SeatingChart> = store::venues_by_ids(&mut conn, &venue_ids)
            .await?
            .iter()
            .map(|v| decode_chart(&v.chart).map(|c| (v.id, c)))
            .collect::<ApiResult<_>>()?;
        drop(conn);
        let events = rows
            .iter()
            .map(|row| {
                let own: Vec<TierRow> = tiers.iter().filter(|t| t.event_id == row.id).cloned().collect();
                event_proto(row, &own, charts.get(&row.venue_id))
            })
            .collect();
        Ok(pb::ListEventsResponse {
            events,
            next_page_token,
            total_size: i32::try_from(total).unwrap_or(i32::MAX),
        })
    }

    async fn update_event(&self, request: Request<pb::UpdateEventRequest>) -> ApiResult<pb::Event> {
        let principal = self.principal(&request).await?;
        let r = request.into_inner();
        let event = required(r.event, "event")?;
        let id = parse_id("event.id", &event.id)?;
        let paths = fieldmask::resolve(
            r.update_mask.as_ref(),
            &[
                field("title", !event.title.is_empty()),
                field("description", !event.description.is_empty()),
                field("starts_at", event.starts_at.is_some()),
                field("ends_at", event.ends_at.is_some()),
                field("timezone", !event.timezone.is_empty()),
                field("category", event.category != 0),
                field("image_urls", !event.image_urls.is_empty()),
                field("venue_id", !event.venue_id.is_empty()),
            ],
        )?;
        let mut row = self.event(id).await?;
        require_writer(&principal, row.organization_id)?;
        let status = status_of(&row)?;
        if matches!(status, EventStatus::Cancelled | EventStatus::Completed) {
            return Err(ApiError::precondition(
                "EVENT_CLOSED",
                format!("a {} event cannot change", status.as_str()),
            ));
        }
        let mut v = Violations::new();
        domain::check_event_fields(&mut v, &event, paths.paths());
        if paths.contains("starts_at")
            && let Some(at) = v.required_timestamp("event.starts_at", event.starts_at.as_ref())
        {
            row.starts_at = at;
        }
        if paths.contains("ends_at")
            && let Some(at) = v.required_timestamp("event.ends_at", event.ends_at.as_ref())
        {
            row.ends_at = at;
        }
        if row.ends_at <= row.starts_at {
            v.add("event.ends_at", "must be after starts_at");
        }
        let venue_id = if paths.contains("venue_id") {
            v.id("event.venue_id", &event.venue_id)
        } else {
            None
        };
        v.into_result()?;
        if let Some(venue_id) = venue_id.filter(|v| *v != row.venue_id) {
            if status != EventStatus::Draft {
                return Err(ApiError::precondition(
                    "EVENT_PUBLISHED",
                    "only a draft can move to another venue",
                ));
            }
            let venue = self
                .venue(venue_id)
                .await
                .map_err(|_| ApiError::invalid("event.venue_id", "no such venue"))?;
            if venue.organization_id != row.organization_id {
                return Err(ApiError::invalid(
                    "event.venue_id",
                    "the venue belongs to another organization",
                ));
            }
            row.venue_id = venue_id;
            row.venue_name = venue.name;
            row.city = venue.city;
        }
        if paths.contains("title") {
            row.title = event.title.trim().to_string();
        }
        if paths.contains("description") {
            row.description = event.description;
        }
        if paths.contains("timezone") && !event.timezone.is_empty() {
            row.timezone = event.timezone;
        }
        if paths.contains("category") {
            row.category = event.category;
        }
        if paths.contains("image_urls") {
            row.image_urls = event.image_urls;
        }
        row.updated_at = Utc::now();
        // Drafts are nobody's business yet; changes to a published event are announced.
        let announce = (status == EventStatus::Published).then(|| lifecycle_event(&row, status, true, ""));
        let mut conn = self.pool.get().await?;
        store::update_event(&mut conn, &row, announce).await?;
        drop(conn);
        self.outbox.notify();
        self.full_event(&row).await
    }

    async fn publish(&self, request: Request<pb::PublishEventRequest>) -> ApiResult<pb::Event> {
        let principal = self.principal(&request).await?;
        let id = parse_id("event_id", &request.get_ref().event_id)?;
        let row = self.event(id).await?;
        require_writer(&principal, row.organization_id)?;
        match status_of(&row)? {
            EventStatus::Published => return self.full_event(&row).await,
            EventStatus::Draft => {}
            other => {
                return Err(ApiError::precondition(
                    "INVALID_TRANSITION",
                    format!("a {} event cannot be published", other.as_str()),
                ));
            }
        }
        let tiers = {
            let mut conn = self.pool.get().await?;
            store::tiers_of(&mut conn, id).await?
        };
        if tiers.is_empty() {
            return Err(ApiError::precondition(
                "NO_TIERS",
                "add at least one ticket tier before publishing",
            ));
        }
        if row.ends_at <= Utc::now() {
            return Err(ApiError::precondition(
                "EVENT_IN_PAST",
                "the event has already ended",
            ));
        }
        let venue = self.venue(row.venue_id).await?;
        let chart = decode_chart(&venue.chart)?;
        // Inventory first: once published, the event must be sellable.
        let on_sale = self.sync_inventory(&row, &chart).await?;
        let mut conn = self.pool.get().await?;
        let announce = published_event(&row, &venue.timezone, &on_sale);
        if store::transition(
            &mut conn,
            id,
            EventStatus::Draft,
            EventStatus::Published,
            announce,
        )
        .await?
        {
            self.outbox.notify();
        }
        let row = store::find_event(&mut conn, id)
            .await?
            .ok_or(ApiError::NotFound { resource: "event" })?;
        drop(conn);
        tracing::info!(event_id = %id, "event published");
        self.full_event(&row).await
    }

    async fn finish(&self, request: Request<String>, to: EventStatus, reason: &str) -> ApiResult<pb::Event> {
        let principal = self.principal(&request).await?;
        let id = parse_id("event_id", request.get_ref())?;
        let row = self.event(id).await?;
        require_writer(&principal, row.organization_id)?;
        let from = status_of(&row)?;
        if from == to {
            return self.full_event(&row).await;
        }
        if !from.can_become(to) {
            return Err(ApiError::precondition(
                "INVALID_TRANSITION",
                format!("a {} event cannot become {}", from.as_str(), to.as_str()),
            ));
        }
        if to == EventStatus::Completed && row.ends_at > Utc::now() {
            return Err(ApiError::precondition(
                "EVENT_NOT_ENDED",
                "an event completes after it has ended",
            ));
        }
        if from == EventStatus::Published {
            self.close_inventory(id).await?;
        }
        let mut conn = self.pool.get().await?;
        let announce = lifecycle_event(&row, to, false, reason);
        if !store::transition(&mut conn, id, from, to, announce).await? {
            return Err(ApiError::precondition(
                "CONCURRENT_CHANGE",
                "the event changed meanwhile; read it again",
            ));
        }
        self.outbox.notify();
        let row = store::find_event(&mut conn, id)
            .await?
            .ok_or(ApiError::NotFound { resource: "event" })?;
        drop(conn);
        self.full_event(&row).await
    }
}

#[tonic::async_trait]
impl CatalogService for CatalogApi {
    async fn create_venue(&self, r: Request<pb::CreateVenueRequest>) -> Result<Response<pb::Venue>, Status> {
        Ok(Response::new(CatalogApi::create_venue(self, r).await?))
    }
    async fn get_venue(&self, r: Request<pb::GetVenueRequest>) -> Result<Response<pb::Venue>, Status> {
        let id = parse_id("venue_id", &r.get_ref().venue_id)?;
        Ok(Response::new(venue_proto(&self.venue(id).await?, true)?))
    }
    async fn list_venues(
        &self,
        r: Request<pb::ListVenuesRequest>,
    ) -> Result<Response<pb::ListVenuesResponse>, Status> {
        let r = r.into_inner();
        let size = pagination::page_size(r.page_size)?;
        let after = pagination::Cursor::decode(&r.page_token)?.map(|c| (c.created_at, c.id));
        let org = if r.organization_id.is_empty() {
            None
        } else {
            Some(parse_id("organization_id", &r.organization_id)?)
        };
        if r.city.chars().count() > 100 || r.city.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "city",
                "must be at most 100 characters, without control characters",
            )
            .into());
        }
        let mut conn = self.pool.get().await.map_err(ApiError::from)?;
        let rows = store::list_venues(&mut conn, org, r.city.trim(), after, size + 1).await?;
        let (rows, next_page_token) = pagination::finish_page(rows, size, |v| pagination::Cursor {
            created_at: v.created_at,
            id: v.id,
        });
        let venues = rows
            .iter()
            .map(|v| venue_proto(v, false))
            .collect::<ApiResult<Vec<_>>>()?;
        Ok(Response::new(pb::ListVenuesResponse {
            venues,
            next_page_token,
        }))
    }
    async fn update_venue(&self, r: Request<pb::UpdateVenueRequest>) -> Result<Response<pb::Venue>, Status> {
        Ok(Response::new(CatalogApi::update_venue(self, r).await?))
    }
    async fn delete_venue(
        &self,
        r: Request<pb::DeleteVenueRequest>,
    ) -> Result<Response<pb::DeleteVenueResponse>, Status> {
        let principal = self.principal(&r).await?;
        let id = parse_id("venue_id", &r.get_ref().venue_id)?;
        let venue = self.venue(id).await?;
        require_writer(&principal, venue.organization_id)?;
        let mut conn = self.pool.get().await.map_err(ApiError::from)?;
        store::delete_venue(&mut conn, id).await?;
        Ok(Response::new(pb::DeleteVenueResponse {}))
    }
    async fn create_event(&self, r: Request<pb::CreateEventRequest>) -> Result<Response<pb::Event>, Status> {
        Ok(Response::new(CatalogApi::create_event(self, r).await?))
    }
    async fn get_event(&self, r: Request<pb::GetEventRequest>) -> Result<Response<pb::Event>, Status> {
        let principal = self.verifier.authenticate_optional(r.metadata()).await?;
        let id = parse_id("event_id", &r.get_ref().event_id)?;
        let row = self.visible_event(id, principal.as_ref()).await?;
        Ok(Response::new(self.full_event(&row).await?))
    }
    async fn list_events(
        &self,
        r: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        Ok(Response::new(CatalogApi::list_events(self, r).await?))
    }
    async fn update_event(&self, r: Request<pb::UpdateEventRequest>) -> Result<Response<pb::Event>, Status> {
        Ok(Response::new(CatalogApi::update_event(self, r).await?))
    }
    async fn delete_event(
        &self,
        r: Request<pb::DeleteEventRequest>,
    ) -> Result<Response<pb::DeleteEventResponse>, Status> {
        let principal = self.principal(&r).await?;
        let id = parse_id("event_id", &r.get_ref().event_id)?;
        let row = self.event(id).await?;
        require_writer(&principal, row.organization_id)?;
        let mut conn = self.pool.get().await.map_err(ApiError::from)?;
        if !store::delete_event(&mut conn, id).await? {
            return Err(ApiError::precondition(
                "EVENT_NOT_DRAFT",
                "only drafts can be deleted; cancel instead",
            )
            .into());
        }
        Ok(Response::new(pb::DeleteEventResponse {}))
    }
    async fn publish_event(
        &self,
        r: Request<pb::PublishEventRequest>,
    ) -> Result<Response<pb::Event>, Status> {
        Ok(Response::new(self.publish(r).await?))
    }
    async fn cancel_event(&self, r: Request<pb::CancelEventRequest>) -> Result<Response<pb::Event>, Status> {
        let (metadata, extensions, message) = r.into_parts();
        if message.reason.chars().count() > MAX_CANCEL_REASON_CHARS {
            return Err(ApiError::invalid("reason", "is longer than 1000 characters").into());
        }
        let request = Request::from_parts(metadata, extensions, message.event_id);
        Ok(Response::new(
            self.finish(request, EventStatus::Cancelled, message.reason.trim())
                .await?,
        ))
    }
    async fn complete_event(
        &self,
        r: Request<pb::CompleteEventRequest>,
    ) -> Result<Response<pb::Event>, Status> {
        let (metadata, extensions, message) = r.into_parts();
        let request = Request::from_parts(metadata, extensions, message.event_id);
        Ok(Response::new(
            self.finish(request, EventStatus::Completed, "").await?,
        ))
    }
    async fn get_seat_map(&self, r: Request<pb::GetSeatMapRequest>) -> Result<Response<pb::SeatMap>, Status> {
        let principal = self.verifier.authenticate_optional(r.metadata()).await?;
        let id = parse_id("event_id", &r.get_ref().event_id)?;
        let row = self.visible_event(id, principal.as_ref()).await?;
        let chart = self.chart(row.venue_id).await?;
        let mut conn = self.pool.get().await.map_err(ApiError::from)?;
        let tiers = store::tiers_of(&mut conn, id).await?;
        Ok(Response::new(pb::SeatMap {
            event_id: id.to_string(),
            tiers: tiers.iter().map(|t| tier_proto(t, Some(&chart))).collect(),
            chart: Some(Arc::unwrap_or_clone(chart)),
        }))
    }
    async fn create_ticket_tier(
        &self,
        r: Request<pb::CreateTicketTierRequest>,
    ) -> Result<Response<pb::TicketTier>, Status> {
        Ok(Response::new(self.create_tier(r).await?))
    }
    async fn list_ticket_tiers(
        &self,
        r: Request<pb::ListTicketTiersRequest>,
    ) -> Result<Response<pb::ListTicketTiersResponse>, Status> {
        let principal = self.verifier.authenticate_optional(r.metadata()).await?;
        let id = parse_id("event_id", &r.get_ref().event_id)?;
        let row = self.visible_event(id, principal.as_ref()).await?;
        Ok(Response::new(pb::ListTicketTiersResponse {
            tiers: self.full_event(&row).await?.tiers,
        }))
    }
    async fn update_ticket_tier(
        &self,
        r: Request<pb::UpdateTicketTierRequest>,
    ) -> Result<Response<pb::TicketTier>, Status> {
        Ok(Response::new(self.update_tier(r).await?))
    }
    async fn delete_ticket_tier(
        &self,
        r: Request<pb::DeleteTicketTierRequest>,
    ) -> Result<Response<pb::DeleteTicketTierResponse>, Status> {
        let event = parse_id("event_id", &r.get_ref().event_id)?;
        let tier = parse_id("tier_id", &r.get_ref().tier_id)?;
        let (row, _) = self.tier_context(&r, event).await?;
        if status_of(&row)? != EventStatus::Draft {
            return Err(ApiError::precondition(
                "EVENT_PUBLISHED",
                "tiers of a published event cannot be deleted; end their sales window instead",
            )
            .into());
        }
        let mut conn = self.pool.get().await.map_err(ApiError::from)?;
        if !store::delete_tier(&mut conn, event, tier).await? {
            return Err(ApiError::NotFound { resource: "tier" }.into());
        }
        Ok(Response::new(pb::DeleteTicketTierResponse {}))
    }
    async fn batch_get_ticket_tiers(
        &self,
        r: Request<pb::BatchGetTicketTiersRequest>,
    ) -> Result<Response<pb::BatchGetTicketTiersResponse>, Status> {
        Ok(Response::new(self.batch_tiers(r.into_inner()).await?))
    }
}
