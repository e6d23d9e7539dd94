use ticketing_proto::ticketing::catalog::v1 as pb;
use tonic::Code;

use crate::helpers::{authed, stack, ts};

fn titles(events: &[pb::Event]) -> Vec<String> {
    events.iter().map(|e| e.title.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_filters_by_text_date_city_and_category_and_paginates_stably() {
    let s = stack().await;
    let f = s.fixture().await;
    let hamburg = s
        .create_venue(f.org, &f.organizer, "Elbphilharmonie", "Hamburg")
        .await;
    let mut published = Vec::new();
    for (title, days) in [
        ("Mahler Symphony", 10),
        ("Jazz Night", 20),
        ("Mahler Songs", 30),
        ("Rock Festival", 40),
    ] {
        let event = s.create_event(&f, title, days).await;
        s.add_tiers(&f, &event).await;
        published.push(s.publish(&f.organizer, &event).await.expect("published"));
    }
    // A Hamburg comedy show, and a draft nobody outside may see.
    let mut hh = s.create_event(&f, "Comedy Evening", 25).await;
    hh = s
        .catalog()
        .update_event(authed(
            &f.organizer,
            pb::UpdateEventRequest {
                event: Some(pb::Event {
                    id: hh.id.clone(),
                    venue_id: hamburg.id.clone(),
                    category: pb::EventCategory::Comedy as i32,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["venue_id".into(), "category".into()],
                }),
            },
        ))
        .await
        .expect("moved")
        .into_inner();
    let area = hamburg.seating_chart.as_ref().expect("chart").ga_areas[0]
        .id
        .clone();
    s.catalog()
        .create_ticket_tier(authed(
            &f.organizer,
            pb::CreateTicketTierRequest {
                event_id: hh.id.clone(),
                tier: Some(pb::TicketTier {
                    name: "Floor".into(),
                    price: Some(ticketing_proto::ticketing::common::v1::Money {
                        amount_minor: 1500,
                        currency: "EUR".into(),
                    }),
                    target: Some(pb::ticket_tier::Target::GaAreaId(area)),
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("tier");
    s.publish(&f.organizer, &hh).await.expect("published");
    s.create_event(&f, "Mahler Draft", 50).await;

    let mut catalog = s.catalog();
    let stack = &s;
    let list = |r: pb::ListEventsRequest| async move {
        stack.catalog().list_events(r).await.expect("list").into_inner()
    };

    let all = list(pb::ListEventsRequest::default()).await;
    assert_eq!(
        titles(&all.events),
        [
            "Mahler Symphony",
            "Jazz Night",
            "Comedy Evening",
            "Mahler Songs",
            "Rock Festival"
        ],
        "published, soonest first"
    );
    assert_eq!(all.total_size, 5);
    // Listings carry each event's own tiers with their quotas (seats of the category, area size).
    for event in &all.events {
        let mut tiers: Vec<(String, i32)> = event.tiers.iter().map(|t| (t.name.clone(), t.quota)).collect();
        tiers.sort();
        let expected: Vec<(String, i32)> = if event.title == "Comedy Evening" {
            vec![("Floor".into(), 100)]
        } else {
            vec![("Floor".into(), 100), ("VIP".into(), 10)]
        };
        assert_eq!(tiers, expected, "{}", event.title);
        assert!(event.tiers.iter().all(|t| t.event_id == event.id));
    }

    let mahler = list(pb::ListEventsRequest {
        query: "mahler".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(
        titles(&mahler.events),
        ["Mahler Symphony", "Mahler Songs"],
        "drafts stay hidden"
    );

    let relevant = list(pb::ListEventsRequest {
        query: "symphony".into(),
        order_by: pb::EventOrderBy::Relevance as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(titles(&relevant.events), ["Mahler Symphony"]);

    let in_hamburg = list(pb::ListEventsRequest {
        city: "hamburg".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(titles(&in_hamburg.events), ["Comedy Evening"]);
    let comedy = list(pb::ListEventsRequest {
        categories: vec![pb::EventCategory::Comedy as i32],
        ..Default::default()
    })
    .await;
    assert_eq!(titles(&comedy.events), ["Comedy Evening"]);

    let window = list(pb::ListEventsRequest {
        starts_after: Some(ts(chrono::Utc::now() + chrono::Duration::days(15))),
        starts_before: Some(ts(chrono::Utc::now() + chrono::Duration::days(35))),
        order_by: pb::EventOrderBy::StartsAtDesc as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(
        titles(&window.events),
        ["Mahler Songs", "Comedy Evening", "Jazz Night"]
    );

    // Pages of two, in order, with nothing skipped or repeated.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(pb::ListEventsRequest {
            page_size: 2,
            page_token: token.clone(),
            ..Default::default()
        })
        .await;
        assert!(page.events.len() <= 2);
        seen.extend(titles(&page.events));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, titles(&all.events));

    // Drafts: only for the organization.
    let drafts = pb::ListEventsRequest {
        organization_id: f.org.to_string(),
        statuses: vec![pb::EventStatus::Draft as i32],
        ..Default::default()
    };
    assert_eq!(
        catalog
            .list_events(drafts.clone())
            .await
            .expect_err("anonymous")
            .code(),
        Code::PermissionDenied
    );
    let own = catalog
        .list_events(authed(&f.organizer, drafts))
        .await
        .expect("own drafts")
        .into_inner();
    assert_eq!(titles(&own.events), ["Mahler Draft"]);

    for bad in [
        pb::ListEventsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        },
        pb::ListEventsRequest {
            order_by: pb::EventOrderBy::Relevance as i32,
            ..Default::default()
        },
        pb::ListEventsRequest {
            categories: vec![77],
            ..Default::default()
        },
        pb::ListEventsRequest {
            venue_id: "x".into(),
            ..Default::default()
        },
    ] {
        assert_eq!(
            catalog.list_events(bad).await.expect_err("bad").code(),
            Code::InvalidArgument
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_in_a_filter_is_invalid_argument_naming_it() {
    let s = stack().await;
    let mut client = s.catalog();
    for (request, field) in [
        (
            pb::ListEventsRequest {
                query: "a\0b".into(),
                ..Default::default()
            },
            "query",
        ),
        (
            pb::ListEventsRequest {
                city: "\0".into(),
                ..Default::default()
            },
            "city",
        ),
    ] {
        let status = client.list_events(request).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(ticketing_e2e::violated_fields(&status), vec![field.to_string()]);
    }
}
