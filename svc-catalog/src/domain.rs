//! Catalog's rules, free of I/O: what a valid seating chart, event and tier are, which status
//! changes are allowed, and what publishing hands to inventory.

use std::collections::{HashMap, HashSet};

use ticketing_platform::error::Violations;
use ticketing_proto::ticketing::catalog::v1 as pb;
use uuid::Uuid;

pub const MAX_SEATS: usize = 100_000;
pub const MAX_SECTIONS: usize = 200;
pub const MAX_GA_CAPACITY: i32 = 1_000_000;

/// Event lifecycle: draft -> published -> completed, and draft|published -> cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Draft,
    Published,
    Cancelled,
    Completed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Published => "published",
            Status::Cancelled => "cancelled",
            Status::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "draft" => Some(Status::Draft),
            "published" => Some(Status::Published),
            "cancelled" => Some(Status::Cancelled),
            "completed" => Some(Status::Completed),
            _ => None,
        }
    }

    pub fn to_proto(self) -> pb::EventStatus {
        match self {
            Status::Draft => pb::EventStatus::Draft,
            Status::Published => pb::EventStatus::Published,
            Status::Cancelled => pb::EventStatus::Cancelled,
            Status::Completed => pb::EventStatus::Completed,
        }
    }

    pub fn from_proto(value: i32) -> Option<Self> {
        match pb::EventStatus::try_from(value).ok()? {
            pb::EventStatus::Draft => Some(Status::Draft),
            pb::EventStatus::Published => Some(Status::Published),
            pb::EventStatus::Cancelled => Some(Status::Cancelled),
            pb::EventStatus::Completed => Some(Status::Completed),
            pb::EventStatus::Unspecified => None,
        }
    }

    pub fn can_become(self, next: Status) -> bool {
        matches!(
            (self, next),
            (Status::Draft, Status::Published)
                | (Status::Draft, Status::Cancelled)
                | (Status::Published, Status::Cancelled)
                | (Status::Published, Status::Completed)
        )
    }

    /// Anyone may read events in these states; drafts only their organization.
    pub fn is_public(self) -> bool {
        self != Status::Draft
    }
}

fn text(v: &mut Violations, field: &str, value: &str, min: usize, max: usize) {
    let n = value.trim().chars().count();
    if n < min {
        v.add(field, "is required");
    } else if n > max {
        v.add(field, format!("must be at most {max} characters"));
    } else if value.chars().any(char::is_control) {
        v.add(field, "must not contain control characters");
    }
}

/// IANA zone names look like `Area/Location` (or `UTC`); the exact list is the client's.
pub fn check_timezone(v: &mut Violations, field: &str, tz: &str) {
    let ok = tz == "UTC"
        || (tz.len() <= 64
            && tz.contains('/')
            && tz.split('/').all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
            }));
    if !ok {
        v.add(field, "must be an IANA time zone such as Europe/Berlin");
    }
}

fn is_category_code(code: &str) -> bool {
    let mut chars = code.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && code.len() <= 32
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn is_color(color: &str) -> bool {
    color.is_empty()
        || (color.len() == 7 && color.starts_with('#') && color[1..].chars().all(|c| c.is_ascii_hexdigit()))
}

fn new_id() -> String {
    Uuid::now_v7().to_string()
}

/// Validates a chart and gives ids to the sections, seats and areas that have none (ids sent
/// back from an earlier read are kept, so inventory keeps recognising the seats).
pub fn normalize_chart(chart: pb::SeatingChart, v: &mut Violations) -> pb::SeatingChart {
    let mut chart = chart;
    let mut codes = HashSet::new();
    for (i, category) in chart.categories.iter_mut().enumerate() {
        let f = format!("seating_chart.categories[{i}]");
        if !is_category_code(&category.code) {
            v.add(
                format!("{f}.code"),
                "must be upper-case letters, digits or _ (e.g. VIP), at most 32",
            );
        } else if !codes.insert(category.code.clone()) {
            v.add(format!("{f}.code"), "repeats a category");
        }
        text(v, &format!("{f}.name"), &category.name, 1, 100);
        if !is_color(&category.color) {
            v.add(format!("{f}.color"), "must be #rrggbb");
        }
    }
    if chart.sections.len() > MAX_SECTIONS {
        v.add(
            "seating_chart.sections",
            format!("at most {MAX_SECTIONS} sections"),
        );
    }
    let mut ids = HashSet::new();
    let mut section_names = HashSet::new();
    let mut seats = 0usize;
    for (si, section) in chart.sections.iter_mut().enumerate() {
        let f = format!("seating_chart.sections[{si}]");
        text(v, &format!("{f}.name"), &section.name, 1, 100);
        if !section_names.insert(section.name.trim().to_lowercase()) {
            v.add(format!("{f}.name"), "repeats a section name");
        }
        if section.id.is_empty() {
            section.id = new_id();
        }
        if !ids.insert(section.id.clone()) {
            v.add(format!("{f}.id"), "repeats an id");
        }
        let mut labels = HashSet::new();
        let mut rows = HashSet::new();
        for (ri, row) in section.rows.iter_mut().enumerate() {
            let f = format!("{f}.rows[{ri}]");
            text(v, &format!("{f}.label"), &row.label, 1, 20);
            if !rows.insert(row.label.clone()) {
                v.add(format!("{f}.label"), "repeats a row in this section");
            }
            for (i, seat) in row.seats.iter_mut().enumerate() {
                seats += 1;
                if seats > MAX_SEATS {
                    continue;
                }
                let f = format!("{f}.seats[{i}]");
                text(v, &format!("{f}.label"), &seat.label, 1, 20);
                if !labels.insert(seat.label.clone()) {
                    v.add(format!("{f}.label"), "repeats a seat label in this section");
                }
                if !codes.contains(&seat.category_code) {
                    v.add(format!("{f}.category_code"), "is not a category of this chart");
                }
                if !seat.x.is_finite() || !seat.y.is_finite() {
                    v.add(format!("{f}.x"), "positions must be finite numbers");
                }
                if seat.id.is_empty() {
                    seat.id = new_id();
                } else if seat.id.len() > 64 || seat.id.contains(',') {
                    v.add(format!("{f}.id"), "must be at most 64 characters without commas");
                }
                if !ids.insert(seat.id.clone()) {
                    v.add(format!("{f}.id"), "repeats an id");
                }
            }
        }
    }
    if seats > MAX_SEATS {
        v.add("seating_chart", format!("at most {MAX_SEATS} seats"));
    }
    for (i, area) in chart.ga_areas.iter_mut().enumerate() {
        let f = format!("seating_chart.ga_areas[{i}]");
        text(v, &format!("{f}.name"), &area.name, 1, 100);
        if !(1..=MAX_GA_CAPACITY).contains(&area.capacity) {
            v.add(format!("{f}.capacity"), format!("must be 1 to {MAX_GA_CAPACITY}"));
        }
        if !area.category_code.is_empty() && !codes.contains(&area.category_code) {
            v.add(format!("{f}.category_code"), "is not a category of this chart");
        }
        if area.id.is_empty() {
            area.id = new_id();
        }
        if !ids.insert(area.id.clone()) {
            v.add(format!("{f}.id"), "repeats an id");
        }
    }
    chart
}

pub fn capacity(chart: &pb::SeatingChart) -> i32 {
    let seats: usize = chart
        .sections
        .iter()
        .flat_map(|s| &s.rows)
        .map(|r| r.seats.len())
        .sum();
    let ga: i64 = chart.ga_areas.iter().map(|a| i64::from(a.capacity)).sum();
    i32::try_from(i64::try_from(seats).unwrap_or(i64::MAX).saturating_add(ga)).unwrap_or(i32::MAX)
}

pub fn check_venue_fields(v: &mut Violations, venue: &pb::Venue) {
    text(v, "venue.name", &venue.name, 1, 200);
    check_timezone(v, "venue.timezone", &venue.timezone);
    if let Some(a) = &venue.address {
        for (field, value) in [
            ("line1", &a.line1),
            ("line2", &a.line2),
            ("city", &a.city),
            ("region", &a.region),
            ("postal_code", &a.postal_code),
        ] {
            text(v, &format!("venue.address.{field}"), value, 0, 200);
        }
        let iso_alpha2 = a.country.len() == 2 && a.country.chars().all(|c| c.is_ascii_uppercase());
        if !a.country.is_empty() && !iso_alpha2 {
            v.add(
                "venue.address.country",
                "must be an ISO 3166-1 alpha-2 code such as DE",
            );
        }
    }
}

pub fn check_event_fields(v: &mut Violations, event: &pb::Event, paths: &[&str]) {
    let has = |p: &str| paths.contains(&p);
    if has("title") {
        text(v, "event.title", &event.title, 1, 200);
    }
    if has("description") {
        text(
            v,
            "event.description",
            &event.description.replace(['\n', '\r', '\t'], " "),
            0,
            10_000,
        );
    }
    if has("timezone") && !event.timezone.is_empty() {
        check_timezone(v, "event.timezone", &event.timezone);
    }
    if has("category") && pb::EventCategory::try_from(event.category).is_err() {
        v.add("event.category", "is not a known category");
    }
    if has("image_urls") {
        if event.image_urls.len() > 10 {
            v.add("event.image_urls", "at most 10 images");
        }
        for (i, url) in event.image_urls.iter().enumerate() {
            if !url.starts_with("https://")
                || url.len() > 2048
                || url.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                v.add(
                    format!("event.image_urls[{i}]"),
                    "must be an https URL of at most 2048 characters",
                );
            }
        }
    }
}

pub fn check_money(
    v: &mut Violations,
    field: &str,
    money: Option<&ticketing_proto::ticketing::common::v1::Money>,
) {
    ticketing_platform::money::check(v, field, money, 0..=1_000_000_000);
}

/// (seat id, tier id)
pub type SeatAssignment = (String, String);
/// (tier id, area id, capacity)
pub type QuotaAssignment = (String, String, i32);

/// The seats (best first: section, row and seat order as drawn) and quotas inventory sells, given
/// the tiers: a seat is sellable when its category has a tier.
pub fn inventory_assignments(
    chart: &pb::SeatingChart,
    tiers: &[(String, Option<String>, Option<String>)],
) -> (Vec<SeatAssignment>, Vec<QuotaAssignment>) {
    let by_category: HashMap<&str, &str> = tiers
        .iter()
        .filter_map(|(id, cat, _)| cat.as_deref().map(|c| (c, id.as_str())))
        .collect();
    let by_area: HashMap<&str, &str> = tiers
        .iter()
        .filter_map(|(id, _, area)| area.as_deref().map(|a| (a, id.as_str())))
        .collect();
    let seats = chart
        .sections
        .iter()
        .flat_map(|s| &s.rows)
        .flat_map(|r| &r.seats)
        .filter_map(|seat| {
            by_category
                .get(seat.category_code.as_str())
                .map(|t| (seat.id.clone(), t.to_string()))
        })
        .collect();
    let quotas = chart
        .ga_areas
        .iter()
        .filter_map(|a| {
            by_area
                .get(a.id.as_str())
                .map(|t| (t.to_string(), a.id.clone(), a.capacity))
        })
        .collect();
    (seats, quotas)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(label: &str, category: &str) -> pb::Seat {
        pb::Seat {
            label: label.into(),
            category_code: category.into(),
            ..Default::default()
        }
    }

    fn chart() -> pb::SeatingChart {
        pb::SeatingChart {
            categories: vec![pb::SeatCategory {
                code: "VIP".into(),
                name: "VIP".into(),
                color: "#aa0000".into(),
            }],
            sections: vec![pb::Section {
                name: "Stalls".into(),
                rows: vec![pb::Row {
                    label: "A".into(),
                    seats: vec![seat("A1", "VIP"), seat("A2", "VIP")],
                }],
                ..Default::default()
            }],
            ga_areas: vec![pb::GeneralAdmissionArea {
                name: "Floor".into(),
                capacity: 100,
                ..Default::default()
            }],
        }
    }

    #[test]
    fn a_valid_chart_gets_ids_once_and_keeps_them() {
        let mut v = Violations::new();
        let first = normalize_chart(chart(), &mut v);
        assert!(v.is_empty());
        let seat_id = first.sections[0].rows[0].seats[0].id.clone();
        assert!(!seat_id.is_empty());
        let again = normalize_chart(first.clone(), &mut v);
        assert_eq!(again.sections[0].rows[0].seats[0].id, seat_id);
        assert_eq!(capacity(&again), 102);
    }

    #[test]
    fn duplicate_labels_unknown_categories_and_negative_capacity_are_named() {
        let mut bad = chart();
        bad.sections[0].rows[0].seats.push(seat("A1", "VVIP"));
        bad.ga_areas[0].capacity = -5;
        bad.categories.push(pb::SeatCategory {
            code: "vip".into(),
            name: "".into(),
            color: "red".into(),
        });
        let mut v = Violations::new();
        normalize_chart(bad, &mut v);
        let err = format!("{:?}", v.into_result().expect_err("invalid"));
        for field in [
            "seating_chart.sections[0].rows[0].seats[2].label",
            "seating_chart.sections[0].rows[0].seats[2].category_code",
            "seating_chart.ga_areas[0].capacity",
            "seating_chart.categories[1].code",
            "seating_chart.categories[1].name",
            "seating_chart.categories[1].color",
        ] {
            assert!(err.contains(field), "{field} missing from {err}");
        }
    }

    #[test]
    fn the_same_label_in_different_sections_is_fine() {
        let mut two = chart();
        let mut balcony = two.sections[0].clone();
        balcony.name = "Balcony".into();
        two.sections.push(balcony);
        let mut v = Violations::new();
        normalize_chart(two, &mut v);
        assert!(v.is_empty());
    }

    #[test]
    fn only_allowed_lifecycle_transitions() {
        use Status::*;
        let allowed = [
            (Draft, Published),
            (Draft, Cancelled),
            (Published, Cancelled),
            (Published, Completed),
        ];
        for from in [Draft, Published, Cancelled, Completed] {
            for to in [Draft, Published, Cancelled, Completed] {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
            assert_eq!(Status::parse(from.as_str()), Some(from));
            assert_eq!(Status::from_proto(from.to_proto() as i32), Some(from));
        }
        assert_eq!(Status::parse("Published"), None);
        assert_eq!(Status::from_proto(0), None);
    }

    #[test]
    fn only_seats_and_areas_with_a_tier_go_to_inventory_in_drawing_order() {
        let mut v = Violations::new();
        let mut c = chart();
        c.sections[0].rows[0].seats.push(seat("A3", "VIP"));
        c.categories.push(pb::SeatCategory {
            code: "STD".into(),
            name: "Standard".into(),
            color: String::new(),
        });
        c.sections[0].rows[0].seats.push(seat("A4", "STD"));
        let c = normalize_chart(c, &mut v);
        let area = c.ga_areas[0].id.clone();
        let tiers = vec![
            ("t-vip".to_string(), Some("VIP".to_string()), None),
            ("t-floor".to_string(), None, Some(area.clone())),
        ];
        let (seats, quotas) = inventory_assignments(&c, &tiers);
        let labels: Vec<&str> = seats
            .iter()
            .map(|(id, _)| {
                c.sections[0].rows[0]
                    .seats
                    .iter()
                    .find(|s| &s.id == id)
                    .map(|s| s.label.as_str())
                    .unwrap_or("?")
            })
            .collect();
        assert_eq!(
            labels,
            ["A1", "A2", "A3"],
            "STD has no tier, so A4 is not for sale"
        );
        assert_eq!(quotas, [("t-floor".to_string(), area, 100)]);
    }

    #[test]
    fn time_zones_look_like_iana_names() {
        for ok in [
            "Europe/Berlin",
            "America/Argentina/Buenos_Aires",
            "UTC",
            "Etc/GMT+2",
        ] {
            let mut v = Violations::new();
            check_timezone(&mut v, "tz", ok);
            assert!(v.is_empty(), "{ok}");
        }
        for bad in ["", "Berlin", "Europe/", "Europe/Ber lin"] {
            let mut v = Violations::new();
            check_timezone(&mut v, "tz", bad);
            assert!(!v.is_empty(), "{bad}");
        }
    }
}
