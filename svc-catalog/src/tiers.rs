//! Ticket tiers: what each sells (a seat category or an area), at what price and when.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ticketing_platform::{
    ApiError, ApiResult,
    error::{Violations, parse_id, required},
    fieldmask::{self, field},
    time::to_timestamp,
};
use ticketing_proto::ticketing::{
    catalog::v1::{self as pb},
    common::v1::Money,
};
use tonic::Request;
use uuid::Uuid;

use crate::{api::*, charts::*, wire::*};
use crate::{
    domain::{self, Status as EventStatus},
    store::{self, EventRow, TierRow},
};

pub(crate) struct TierInput {
    name: String,
    price: Money,
    category: Option<String>,
    area: Option<String>,
    sales_start: Option<DateTime<Utc>>,
    sales_end: Option<DateTime<Utc>>,
    per_order_limit: i32,
}

pub(crate) fn check_tier(
    v: &mut Violations,
    tier: &pb::TicketTier,
    chart: &pb::SeatingChart,
    paths: &[&str],
) -> Option<TierInput> {
    let has = |p: &str| paths.contains(&p);
    let name = tier.name.trim().to_string();
    if has("name") && (name.is_empty() || name.chars().count() > 100) {
        v.add("tier.name", "must be 1 to 100 characters");
    }
    if has("price") {
        domain::check_money(v, "tier.price", tier.price.as_ref());
    }
    let (category, area) = match &tier.target {
        Some(pb::ticket_tier::Target::SeatCategoryCode(code)) => {
            if !chart.categories.iter().any(|c| &c.code == code) {
                v.add(
                    "tier.seat_category_code",
                    "is not a category of the venue's chart",
                );
            }
            (Some(code.clone()), None)
        }
        Some(pb::ticket_tier::Target::GaAreaId(area)) => {
            if !chart.ga_areas.iter().any(|a| &a.id == area) {
                v.add("tier.ga_area_id", "is not a general-admission area of the venue");
            }
            (None, Some(area.clone()))
        }
        None => {
            if has("target") {
                v.add(
                    "tier.seat_category_code",
                    "a tier sells a seat category or a general-admission area",
                );
            }
            (None, None)
        }
    };
    let sales_start = v.timestamp("tier.sales_start", tier.sales_start.as_ref());
    let sales_end = v.timestamp("tier.sales_end", tier.sales_end.as_ref());
    if let (Some(s), Some(e)) = (sales_start, sales_end)
        && s >= e
    {
        v.add("tier.sales_end", "must be after sales_start");
    }
    let per_order_limit = if tier.per_order_limit == 0 {
        10
    } else {
        tier.per_order_limit
    };
    if !(1..=50).contains(&per_order_limit) {
        v.add("tier.per_order_limit", "must be 1 to 50");
    }
    Some(TierInput {
        name,
        price: tier.price.clone().unwrap_or_default(),
        category,
        area,
        sales_start,
        sales_end,
        per_order_limit,
    })
}

impl CatalogApi {
    // === tiers ===

    pub(crate) async fn tier_context<T>(
        &self,
        request: &Request<T>,
        event: Uuid,
    ) -> ApiResult<(EventRow, pb::SeatingChart)> {
        let principal = self.principal(request).await?;
        let row = self.event(event).await?;
        require_writer(&principal, row.organization_id)?;
        if matches!(status_of(&row)?, EventStatus::Cancelled | EventStatus::Completed) {
            return Err(ApiError::precondition(
                "EVENT_CLOSED",
                "the event no longer changes",
            ));
        }
        let chart = decode_chart(&self.venue(row.venue_id).await?.chart)?;
        Ok((row, chart))
    }

    /// After a tier change on a published event, inventory sells the new set.
    pub(crate) async fn resync_if_published(&self, event: Uuid, chart: &pb::SeatingChart) -> ApiResult<()> {
        let row = self.event(event).await?;
        if status_of(&row)? == EventStatus::Published {
            self.sync_inventory(&row, chart).await?;
        }
        Ok(())
    }

    pub(crate) async fn create_tier(
        &self,
        request: Request<pb::CreateTicketTierRequest>,
    ) -> ApiResult<pb::TicketTier> {
        let event = parse_id("event_id", &request.get_ref().event_id)?;
        let (_, chart) = self.tier_context(&request, event).await?;
        let tier = required(request.into_inner().tier, "tier")?;
        let mut v = Violations::new();
        let input = check_tier(&mut v, &tier, &chart, &["name", "price", "target"]);
        let input = v.finish(input)?;
        let row = TierRow {
            id: Uuid::now_v7(),
            event_id: event,
            name: input.name,
            price_minor: input.price.amount_minor,
            currency: input.price.currency,
            seat_category_code: input.category,
            ga_area_id: input.area,
            sales_start: input.sales_start,
            sales_end: input.sales_end,
            per_order_limit: input.per_order_limit,
            created_at: Utc::now(),
        };
        {
            let mut conn = self.pool.get().await?;
            store::insert_tier(&mut conn, &row).await?;
        }
        self.resync_if_published(event, &chart).await?;
        Ok(tier_proto(&row, Some(&chart)))
    }

    pub(crate) async fn update_tier(
        &self,
        request: Request<pb::UpdateTicketTierRequest>,
    ) -> ApiResult<pb::TicketTier> {
        let tier = required(request.get_ref().tier.clone(), "tier")?;
        let event = parse_id("tier.event_id", &tier.event_id)?;
        let id = parse_id("tier.id", &tier.id)?;
        let (_, chart) = self.tier_context(&request, event).await?;
        let paths = fieldmask::resolve(
            request.into_inner().update_mask.as_ref(),
            &[
                field("name", !tier.name.is_empty()),
                field("price", tier.price.is_some()),
                field("sales_start", tier.sales_start.is_some()),
                field("sales_end", tier.sales_end.is_some()),
                field("per_order_limit", tier.per_order_limit != 0),
            ],
        )?;
        let mut row = {
            let mut conn = self.pool.get().await?;
            store::find_tier(&mut conn, event, id)
                .await?
                .ok_or(ApiError::NotFound { resource: "tier" })?
        };
        let mut v = Violations::new();
        let input = check_tier(&mut v, &tier, &chart, paths.paths());
        let input = v.finish(input)?;
        if paths.contains("name") {
            row.name = input.name;
        }
        if paths.contains("price") {
            row.price_minor = input.price.amount_minor;
            row.currency = input.price.currency;
        }
        if paths.contains("sales_start") {
            row.sales_start = input.sales_start;
        }
        if paths.contains("sales_end") {
            row.sales_end = input.sales_end;
        }
        if paths.contains("per_order_limit") {
            row.per_order_limit = input.per_order_limit;
        }
        if let (Some(s), Some(e)) = (row.sales_start, row.sales_end)
            && s >= e
        {
            return Err(ApiError::invalid("tier.sales_end", "must be after sales_start"));
        }
        {
            let mut conn = self.pool.get().await?;
            store::update_tier(&mut conn, &row).await?;
        }
        self.resync_if_published(event, &chart).await?;
        Ok(tier_proto(&row, Some(&chart)))
    }

    /// Only orders gets here (the call graph's guard): it prices orders of published events.
    pub(crate) async fn batch_tiers(
        &self,
        r: pb::BatchGetTicketTiersRequest,
    ) -> ApiResult<pb::BatchGetTicketTiersResponse> {
        let event = parse_id("event_id", &r.event_id)?;
        if r.tier_ids.len() > 100 {
            return Err(ApiError::invalid("tier_ids", "at most 100"));
        }
        if r.seat_ids.len() > 100 {
            return Err(ApiError::invalid("seat_ids", "at most 100"));
        }
        let ids = r
            .tier_ids
            .iter()
            .enumerate()
            .map(|(i, t)| parse_id(&format!("tier_ids[{i}]"), t))
            .collect::<ApiResult<Vec<_>>>()?;
        // Asked for every order: two queries, and the venue's chart only when it changed.
        let (row, venue_version, tiers) = {
            let mut conn = self.pool.get().await.map_err(ApiError::from)?;
            let (row, venue_version) = store::find_event_and_venue_version(&mut conn, event)
                .await?
                .ok_or(ApiError::NotFound { resource: "event" })?;
            let tiers = store::tiers_by_ids(&mut conn, event, &ids).await?;
            (row, venue_version, tiers)
        };
        let (_, chart, labels) = self.cached_chart(row.venue_id, venue_version).await?;
        let by_id: HashMap<Uuid, &TierRow> = tiers.iter().map(|t| (t.id, t)).collect();
        let seat_labels = r
            .seat_ids
            .iter()
            .filter_map(|id| labels.get(id).map(|label| (id.clone(), label.clone())))
            .collect();
        Ok(pb::BatchGetTicketTiersResponse {
            seat_labels,
            tiers: ids
                .iter()
                .filter_map(|id| by_id.get(id))
                .map(|t| tier_proto(t, Some(&chart)))
                .collect(),
            event_status: status_of(&row)?.to_proto() as i32,
            organization_id: row.organization_id.to_string(),
            event_starts_at: Some(to_timestamp(row.starts_at)),
        })
    }
}
