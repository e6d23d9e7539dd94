//! Every annotated RPC of the running services, called through REST end to end: a new user signs
//! up, becomes an organizer, sets up an organization, a venue and events, sells tickets, scans
//! them and refunds one. The last step checks the route table against the calls that succeeded,
//! so an annotated RPC added to a proto without a REST call here fails this test.

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use ticketing_platform::auth::Role;

use crate::helpers::{Auth, Stack, stack};

/// The services this stack runs; routes of the others (reports) answer 503 until built.
const RUNNING: [&str; 6] = ["identity", "catalog", "inventory", "orders", "payments", "notify"];

fn id(json: &Json) -> String {
    json["id"].as_str().expect("an id").to_string()
}

async fn login(s: &Stack, email: &str, password: &str) -> Json {
    s.post(
        "/v1/auth:login",
        Auth::None,
        json!({ "email": email, "password": password }),
    )
    .await
    .ok()
}

async fn patch(s: &Stack, path: &str, auth: Auth<'_>, body: Json) -> Json {
    s.call(Method::PATCH, path, auth, Some(body)).await.ok()
}

async fn delete(s: &Stack, path: &str, auth: Auth<'_>) -> Json {
    s.call(Method::DELETE, path, auth, None).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_annotated_rpc_answers_through_rest() {
    let s = stack().await;
    let (_, admin) = s.identity.user(&[Role::Admin]).await;

    // Identity: sign up, sign in, refresh, profile, password, sign out.
    let email = format!("tour-{}@example.com", uuid::Uuid::now_v7().simple());
    let password = "tour passphrase one";
    let registered = s
        .post(
            "/v1/auth:register",
            Auth::None,
            json!({ "email": email, "password": password, "displayName": "Tour" }),
        )
        .await
        .ok();
    let user_id = id(&registered["user"]);
    let tokens = login(&s, &email, password).await;
    let refreshed = s
        .post(
            "/v1/auth:refresh",
            Auth::None,
            json!({ "refreshToken": tokens["refreshToken"] }),
        )
        .await
        .ok();
    let token = refreshed["accessToken"].as_str().expect("token").to_string();
    assert!(
        !s.get("/v1/auth/jwks", Auth::None).await.ok()["keys"]
            .as_array()
            .expect("keys")
            .is_empty()
    );
    assert_eq!(
        s.get("/v1/users/me", Auth::Bearer(&token)).await.ok()["email"],
        email
    );
    let renamed = patch(
        &s,
        "/v1/users/me?updateMask=displayName",
        Auth::Bearer(&token),
        json!({ "displayName": "Tour Guide" }),
    )
    .await;
    assert_eq!(renamed["displayName"], "Tour Guide");
    let password = "tour passphrase two";
    s.post(
        "/v1/users/me:changePassword",
        Auth::Bearer(&token),
        json!({ "currentPassword": "tour passphrase one", "newPassword": password }),
    )
    .await
    .ok();
    let tokens = login(&s, &email, password).await;
    s.post(
        "/v1/auth:logout",
        Auth::None,
        json!({ "refreshToken": tokens["refreshToken"] }),
    )
    .await
    .ok();

    // An admin looks the user up and makes them an organizer.
    assert_eq!(
        s.get(&format!("/v1/users/{user_id}"), Auth::Bearer(&admin))
            .await
            .ok()["email"],
        email
    );
    let found = s
        .get(
            "/v1/users?emailPrefix=tour-&role=ROLE_CUSTOMER&pageSize=50",
            Auth::Bearer(&admin),
        )
        .await
        .ok();
    assert!(found["users"].to_string().contains(&user_id));
    let granted = s
        .post(
            &format!("/v1/users/{user_id}:grantRole"),
            Auth::Bearer(&admin),
            json!({ "role": "ROLE_ORGANIZER" }),
        )
        .await
        .ok();
    assert!(granted["roles"].to_string().contains("ROLE_ORGANIZER"));

    // The organization, its members and API keys.
    let organizer = login(&s, &email, password).await["accessToken"]
        .as_str()
        .expect("token")
        .to_string();
    let org = s
        .post(
            "/v1/organizations",
            Auth::Bearer(&organizer),
            json!({ "slug": format!("tour-{}", &user_id[24..]), "displayName": "Tour Org" }),
        )
        .await
        .ok();
    let org_id = id(&org);
    // A fresh token carries the new membership for the other services.
    let organizer = login(&s, &email, password).await["accessToken"]
        .as_str()
        .expect("token")
        .to_string();
    let org_path = format!("/v1/organizations/{org_id}");
    assert_eq!(
        s.get(&org_path, Auth::Bearer(&organizer)).await.ok()["displayName"],
        "Tour Org"
    );
    assert!(
        s.get("/v1/organizations", Auth::Bearer(&organizer)).await.ok()["organizations"]
            .to_string()
            .contains(&org_id)
    );
    patch(
        &s,
        &format!("{org_path}?updateMask=displayName"),
        Auth::Bearer(&organizer),
        json!({ "displayName": "Tour Organization" }),
    )
    .await;
    let (colleague, _) = s.identity.user(&[Role::Customer]).await;
    s.post(
        &format!("{org_path}/members"),
        Auth::Bearer(&organizer),
        json!({ "userId": colleague.to_string(), "role": "MEMBER_ROLE_MEMBER" }),
    )
    .await
    .ok();
    assert!(
        s.get(&format!("{org_path}/members"), Auth::Bearer(&organizer))
            .await
            .ok()
            .to_string()
            .contains(&colleague.to_string())
    );
    delete(
        &s,
        &format!("{org_path}/members/{colleague}"),
        Auth::Bearer(&organizer),
    )
    .await;
    let key = s
        .post(
            &format!("{org_path}/apiKeys"),
            Auth::Bearer(&organizer),
            json!({ "name": "box office", "scopes": ["API_KEY_SCOPE_EVENTS_READ"] }),
        )
        .await
        .ok();
    let key_id = id(&key["apiKey"]);
    assert!(
        s.get(&format!("{org_path}/apiKeys"), Auth::Bearer(&organizer))
            .await
            .ok()
            .to_string()
            .contains(&key_id)
    );
    s.post(
        &format!("{org_path}/apiKeys/{key_id}:revoke"),
        Auth::Bearer(&organizer),
        json!({}),
    )
    .await
    .ok();

    // Catalog: venues (one to keep, one to delete), events and tiers.
    let venue_body = |name: &str| {
        let seats: Vec<Json> = (1..=6)
            .map(|n| json!({ "label": format!("A{n}"), "categoryCode": "STD", "x": n, "y": 1 }))
            .collect();
        json!({
            "organizationId": org_id,
            "name": name,
            "address": { "line1": "Tour Street 1", "city": "Lyon", "postalCode": "69001", "country": "FR" },
            "timezone": "Europe/Paris",
            "seatingChart": {
                "categories": [{ "code": "STD", "name": "Standard", "color": "#336699" }],
                "sections": [{ "name": "Hall", "rows": [{ "label": "A", "seats": seats }] }],
            },
        })
    };
    let venue = s
        .post("/v1/venues", Auth::Bearer(&organizer), venue_body("Tour Hall"))
        .await
        .ok();
    let venue_id = id(&venue);
    let seat_ids: Vec<String> = venue["seatingChart"]["sections"][0]["rows"][0]["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .map(id)
        .collect();
    let spare = s
        .post("/v1/venues", Auth::Bearer(&organizer), venue_body("Spare Hall"))
        .await
        .ok();
    assert_eq!(
        s.get(&format!("/v1/venues/{venue_id}"), Auth::Bearer(&organizer))
            .await
            .ok()["name"],
        "Tour Hall"
    );
    assert!(
        s.get(
            &format!("/v1/venues?organizationId={org_id}&city=Lyon"),
            Auth::Bearer(&organizer)
        )
        .await
        .ok()["venues"]
            .to_string()
            .contains(&venue_id)
    );
    patch(
        &s,
        &format!("/v1/venues/{venue_id}?updateMask=name"),
        Auth::Bearer(&organizer),
        json!({ "name": "Tour Hall Renamed" }),
    )
    .await;
    delete(
        &s,
        &format!("/v1/venues/{}", id(&spare)),
        Auth::Bearer(&organizer),
    )
    .await;

    let event_body = |title: &str, starts: chrono::DateTime<Utc>, ends: chrono::DateTime<Utc>| {
        json!({
            "organizationId": org_id,
            "venueId": venue_id,
            "title": title,
            "startsAt": starts.to_rfc3339(),
            "endsAt": ends.to_rfc3339(),
            "category": "EVENT_CATEGORY_THEATRE",
        })
    };
    let tier_body = json!({
        "name": "Standard",
        "price": { "amountMinor": "2500", "currency": "EUR" },
        "seatCategoryCode": "STD",
        "perOrderLimit": 4,
    });
    let starts = Utc::now() + chrono::Duration::days(30);
    let event = s
        .post(
            "/v1/events",
            Auth::Bearer(&organizer),
            event_body("Tour Night", starts, starts + chrono::Duration::hours(2)),
        )
        .await
        .ok();
    let event_id = id(&event);
    let event_path = format!("/v1/events/{event_id}");
    let tier = s
        .post(
            &format!("{event_path}/tiers"),
            Auth::Bearer(&organizer),
            tier_body.clone(),
        )
        .await
        .ok();
    let tier_id = id(&tier);
    patch(
        &s,
        &format!("{event_path}/tiers/{tier_id}?updateMask=name"),
        Auth::Bearer(&organizer),
        json!({ "name": "Stalls" }),
    )
    .await;
    patch(
        &s,
        &format!("{event_path}?updateMask=description"),
        Auth::Bearer(&organizer),
        json!({ "description": "A night out" }),
    )
    .await;
    s.post(
        &format!("{event_path}:publish"),
        Auth::Bearer(&organizer),
        json!({}),
    )
    .await
    .ok();
    assert_eq!(
        s.get(&event_path, Auth::None).await.ok()["status"],
        "EVENT_STATUS_PUBLISHED"
    );
    assert!(
        s.get(
            "/v1/events?query=tour&categories=EVENT_CATEGORY_THEATRE",
            Auth::None
        )
        .await
        .ok()["events"]
            .to_string()
            .contains(&event_id)
    );
    assert!(
        s.get(
            &format!("/v1/organizations/{org_id}/events"),
            Auth::Bearer(&organizer)
        )
        .await
        .ok()["events"]
            .to_string()
            .contains(&event_id)
    );
    assert_eq!(
        s.get(&format!("{event_path}/tiers"), Auth::None).await.ok()["tiers"][0]["name"],
        "Stalls"
    );
    assert!(s.get(&format!("{event_path}/seatMap"), Auth::None).await.ok()["chart"].is_object());
    // A draft deleted, a draft cancelled, and a short event that will have ended by the end.
    let draft = s
        .post(
            "/v1/events",
            Auth::Bearer(&organizer),
            event_body("Tour Draft", starts, starts + chrono::Duration::hours(1)),
        )
        .await
        .ok();
    let draft_path = format!("/v1/events/{}", id(&draft));
    let extra = s
        .post(
            &format!("{draft_path}/tiers"),
            Auth::Bearer(&organizer),
            tier_body.clone(),
        )
        .await
        .ok();
    delete(
        &s,
        &format!("{draft_path}/tiers/{}", id(&extra)),
        Auth::Bearer(&organizer),
    )
    .await;
    delete(&s, &draft_path, Auth::Bearer(&organizer)).await;
    let doomed = s
        .post(
            "/v1/events",
            Auth::Bearer(&organizer),
            event_body("Tour Rained Off", starts, starts + chrono::Duration::hours(1)),
        )
        .await
        .ok();
    s.post(
        &format!("/v1/events/{}:cancel", id(&doomed)),
        Auth::Bearer(&organizer),
        json!({ "reason": "weather" }),
    )
    .await
    .ok();
    let short_ends = Utc::now() + chrono::Duration::seconds(2);
    let short = s
        .post(
            "/v1/events",
            Auth::Bearer(&organizer),
            event_body(
                "Tour Matinee",
                Utc::now() - chrono::Duration::hours(1),
                short_ends,
            ),
        )
        .await
        .ok();
    let short_id = id(&short);
    s.post(
        &format!("/v1/events/{short_id}/tiers"),
        Auth::Bearer(&organizer),
        tier_body.clone(),
    )
    .await
    .ok();
    s.post(
        &format!("/v1/events/{short_id}:publish"),
        Auth::Bearer(&organizer),
        json!({}),
    )
    .await
    .ok();

    // Orders' discount codes: one to use, one to delete.
    let codes_path = format!("{event_path}/discountCodes");
    s.post(
        &codes_path,
        Auth::Bearer(&organizer),
        json!({ "code": "TOUR10", "percentOff": 10, "maxUses": 5, "active": true }),
    )
    .await
    .ok();
    s.post(
        &codes_path,
        Auth::Bearer(&organizer),
        json!({ "code": "GONE", "percentOff": 50, "active": true }),
    )
    .await
    .ok();
    assert_eq!(
        s.get(&format!("{codes_path}/TOUR10"), Auth::Bearer(&organizer))
            .await
            .ok()["percentOff"],
        10
    );
    assert!(
        s.get(&codes_path, Auth::Bearer(&organizer))
            .await
            .ok()
            .to_string()
            .contains("TOUR10")
    );
    patch(
        &s,
        &format!("{codes_path}/TOUR10?updateMask=maxUses"),
        Auth::Bearer(&organizer),
        json!({ "maxUses": 10 }),
    )
    .await;
    // Without updateMask the body's keys are the mask (grpc-gateway's PATCH feature), so a
    // default value is a change: `false` deactivates. The code in the path is no change.
    let deactivated = patch(
        &s,
        &format!("{codes_path}/TOUR10"),
        Auth::Bearer(&organizer),
        json!({ "active": false, "code": "TOUR10" }),
    )
    .await;
    assert_eq!(
        (deactivated["active"].clone(), deactivated["maxUses"].clone()),
        (json!(false), json!(10))
    );
    let nothing = s
        .call(
            Method::PATCH,
            &format!("{codes_path}/TOUR10"),
            Auth::Bearer(&organizer),
            Some(json!({})),
        )
        .await;
    assert_eq!(nothing.status, 400, "{}", nothing.json);
    assert!(
        nothing.json.to_string().contains("update_mask"),
        "{}",
        nothing.json
    );
    patch(
        &s,
        &format!("{codes_path}/TOUR10"),
        Auth::Bearer(&organizer),
        json!({ "active": true }),
    )
    .await;
    delete(&s, &format!("{codes_path}/GONE"), Auth::Bearer(&organizer)).await;

    // Inventory: hold, look, release, watch.
    let (buyer_id, buyer) = s.identity.user(&[Role::Customer]).await;
    let holds = format!("{event_path}/holds");
    let released = s
        .post(
            &format!("{holds}:seats"),
            Auth::Bearer(&buyer),
            json!({ "seatIds": [seat_ids[0]] }),
        )
        .await
        .ok();
    let released_id = id(&released);
    assert_eq!(
        s.get(&format!("/v1/holds/{released_id}"), Auth::Bearer(&buyer))
            .await
            .ok()["status"],
        "HOLD_STATUS_ACTIVE"
    );
    s.post(
        &format!("/v1/holds/{released_id}:release"),
        Auth::Bearer(&buyer),
        json!({}),
    )
    .await
    .ok();
    let watch = s
        .http
        .get(format!("{}{event_path}/availability:watch", s.base))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("stream");
    assert_eq!(watch.status(), StatusCode::OK);
    s.calls.lock().unwrap_or_else(|p| p.into_inner()).push((
        Method::GET,
        format!("{event_path}/availability:watch"),
        watch.status(),
    ));
    drop(watch);

    // Inventory's waiting list: an event sold out (held) by two buyers; a third joins its
    // line, sees the entry, the organizer sees the list's length, and the third leaves.
    let sold_out = s
        .post(
            "/v1/events",
            Auth::Bearer(&organizer),
            event_body("Tour Sold Out", starts, starts + chrono::Duration::hours(2)),
        )
        .await
        .ok();
    let sold_out_id = id(&sold_out);
    let sold_out_tier = s
        .post(
            &format!("/v1/events/{sold_out_id}/tiers"),
            Auth::Bearer(&organizer),
            tier_body.clone(),
        )
        .await
        .ok();
    s.post(
        &format!("/v1/events/{sold_out_id}:publish"),
        Auth::Bearer(&organizer),
        json!({}),
    )
    .await
    .ok();
    for half in seat_ids.chunks(3) {
        let (_, filler) = s.identity.user(&[Role::Customer]).await;
        s.post(
            &format!("/v1/events/{sold_out_id}/holds:seats"),
            Auth::Bearer(&filler),
            json!({ "seatIds": half }),
        )
        .await
        .ok();
    }
    let (_, waiter) = s.identity.user(&[Role::Customer]).await;
    let entry = s
        .post(
            &format!("/v1/events/{sold_out_id}/waitlist:join"),
            Auth::Bearer(&waiter),
            json!({ "tierId": id(&sold_out_tier), "quantity": 2 }),
        )
        .await
        .ok();
    assert_eq!(entry["status"], "WAITLIST_STATUS_WAITING");
    assert_eq!(
        s.get("/v1/waitlistEntries", Auth::Bearer(&waiter)).await.ok()["entries"][0]["id"],
        entry["id"]
    );
    assert_eq!(
        s.get(
            &format!("/v1/events/{sold_out_id}/waitlist"),
            Auth::Bearer(&organizer)
        )
        .await
        .ok()["tiers"][0]["placesWanted"],
        2
    );
    let left = s
        .post(
            &format!("/v1/waitlistEntries/{}:leave", id(&entry)),
            Auth::Bearer(&waiter),
            json!({}),
        )
        .await
        .ok();
    assert_eq!(left["status"], "WAITLIST_STATUS_LEFT");

    // Checkout three times: one order paid and scanned, one paid and refunded, one cancelled.
    let mut orders = Vec::new();
    for (n, seat) in seat_ids.iter().take(3).enumerate() {
        let hold = if n == 0 {
            s.post(
                &format!("{holds}:quantity"),
                Auth::Bearer(&buyer),
                json!({ "tierId": tier_id, "quantity": 1 }),
            )
            .await
            .ok()
        } else {
            s.post(
                &format!("{holds}:seats"),
                Auth::Bearer(&buyer),
                json!({ "seatIds": [seat] }),
            )
            .await
            .ok()
        };
        let order = s
            .post(
                "/v1/orders",
                Auth::Bearer(&buyer),
                json!({ "holdId": id(&hold), "idempotencyKey": format!("tour-{n}-{}", id(&hold)), "discountCode": "TOUR10" }),
            )
            .await
            .ok();
        assert_eq!(order["total"]["amountMinor"], "2250", "{order}");
        orders.push(id(&order));
    }
    for order in &orders[..2] {
        let paid = s
            .post(
                &format!("/v1/orders/{order}:pay"),
                Auth::Bearer(&buyer),
                json!({ "card": { "number": "4242424242424242", "expMonth": 12, "expYear": 2040, "cvc": "123" } }),
            )
            .await
            .ok();
        assert_eq!(paid["status"], "ORDER_STATUS_PAID", "{paid}");
    }
    s.post(
        &format!("/v1/orders/{}:cancel", orders[2]),
        Auth::Bearer(&buyer),
        json!({ "reason": "changed my mind" }),
    )
    .await
    .ok();
    assert_eq!(
        s.get(&format!("/v1/orders/{}", orders[0]), Auth::Bearer(&buyer))
            .await
            .ok()["status"],
        "ORDER_STATUS_PAID"
    );
    assert_eq!(
        s.get("/v1/orders?statuses=ORDER_STATUS_PAID", Auth::Bearer(&buyer))
            .await
            .ok()["orders"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(
        s.get(&format!("{event_path}/orders"), Auth::Bearer(&organizer))
            .await
            .ok()["orders"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    assert_eq!(
        s.get("/v1/tickets", Auth::Bearer(&buyer)).await.ok()["tickets"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let tickets = s
        .get(&format!("/v1/orders/{}/tickets", orders[0]), Auth::Bearer(&buyer))
        .await
        .ok();
    let ticket = &tickets["tickets"][0];
    let ticket_id = id(ticket);
    assert_eq!(
        s.get(&format!("/v1/tickets/{ticket_id}"), Auth::Bearer(&buyer))
            .await
            .ok()["secret"],
        ticket["secret"]
    );
    let qr = s
        .get(
            &format!("/v1/tickets/{ticket_id}/qr?format=QR_FORMAT_SVG"),
            Auth::Bearer(&buyer),
        )
        .await;
    assert_eq!(qr.status, StatusCode::OK);
    assert_eq!(
        qr.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("image/svg+xml")
    );
    assert!(
        !s.get(&format!("{event_path}/ticketKeys"), Auth::Bearer(&organizer))
            .await
            .ok()["keys"]
            .as_object()
            .expect("keys by id")
            .is_empty()
    );
    let scanned = s
        .post(
            &format!("{event_path}:checkIn"),
            Auth::Bearer(&organizer),
            json!({ "secret": ticket["secret"], "gate": "east" }),
        )
        .await
        .ok();
    assert_eq!(scanned["result"], "CHECK_IN_RESULT_ACCEPTED", "{scanned}");
    let refunded = s
        .post(
            &format!("/v1/orders/{}:refund", orders[1]),
            Auth::Bearer(&buyer),
            json!({ "reason": "cannot come" }),
        )
        .await
        .ok();
    assert_eq!(refunded["refundedTotal"]["amountMinor"], "2250", "{refunded}");

    // Payments: the buyer's charges.
    let payments = s
        .get(
            &format!("/v1/payments?orderId={}", orders[0]),
            Auth::Bearer(&buyer),
        )
        .await
        .ok();
    let payment_id = id(&payments["payments"][0]);
    assert_eq!(
        s.get(&format!("/v1/payments/{payment_id}"), Auth::Bearer(&buyer))
            .await
            .ok()["cardLast4"],
        "4242"
    );
    assert_eq!(
        s.get("/v1/payments", Auth::Bearer(&buyer)).await.ok()["payments"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert!(
        s.get("/v1/payments/testCards", Auth::None).await.ok()["cards"]
            .to_string()
            .contains("4242424242424242")
    );
    // Two seats were sold and one refunded: inventory puts it back on sale when it consumes
    // `order.refunded`, which happens after the refund answered.
    let mut sold = serde_json::Value::Null;
    for _ in 0..100 {
        sold = s
            .get(&format!("{event_path}/availability"), Auth::None)
            .await
            .ok()["tiers"][0]["sold"]
            .clone();
        if sold == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(sold, 1, "the refunded seat is back on sale");

    // The short event has ended by now: it completes. The organizer role is taken back.
    let wait = short_ends - Utc::now() + chrono::Duration::milliseconds(100);
    if let Ok(wait) = wait.to_std() {
        tokio::time::sleep(wait).await;
    }
    s.post(
        &format!("/v1/events/{short_id}:complete"),
        Auth::Bearer(&organizer),
        json!({}),
    )
    .await
    .ok();
    s.post(
        &format!("/v1/users/{user_id}:revokeRole"),
        Auth::Bearer(&admin),
        json!({ "role": "ROLE_ORGANIZER" }),
    )
    .await
    .ok();

    // Notify: the buyer's news, read and watched; their preferences.
    let mut listed = Json::Null;
    for _ in 0..100 {
        listed = s.get("/v1/notifications", Auth::Bearer(&buyer)).await.ok();
        if listed["unreadCount"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(listed["unreadCount"].as_i64().unwrap_or(0) > 0, "{listed}");
    let marked = s
        .post("/v1/notifications:markRead", Auth::Bearer(&buyer), json!({}))
        .await
        .ok();
    assert!(marked["marked"].as_i64().unwrap_or(0) > 0, "{marked}");
    let news = s
        .http
        .get(format!("{}/v1/notifications:watch", s.base))
        .bearer_auth(&buyer)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("stream");
    assert_eq!(news.status(), StatusCode::OK);
    s.calls.lock().unwrap_or_else(|p| p.into_inner()).push((
        Method::GET,
        "/v1/notifications:watch".into(),
        news.status(),
    ));
    drop(news);
    let preferences = s
        .get("/v1/notifications/preferences", Auth::Bearer(&buyer))
        .await
        .ok();
    assert_eq!(preferences["remindersEnabled"], true, "{preferences}");
    let changed = patch(
        &s,
        "/v1/notifications/preferences",
        Auth::Bearer(&buyer),
        json!({ "remindersEnabled": false, "locale": "de" }),
    )
    .await;
    assert_eq!(changed["remindersEnabled"], false, "{changed}");
    assert_eq!(changed["locale"], "de", "{changed}");
    patch(
        &s,
        "/v1/notifications/preferences",
        Auth::Bearer(&buyer),
        json!({ "remindersEnabled": true }),
    )
    .await;
    // Support: the buyer asks about their paid order; the organizer answers; both read, close
    // and reopen; each side can follow it live.
    let mut asked = Json::Null;
    for _ in 0..100 {
        let reply = s
            .post(
                "/v1/conversations",
                Auth::Bearer(&buyer),
                json!({ "subject": "Parking", "body": "Is there parking?", "orderId": orders[0] }),
            )
            .await;
        if reply.status.is_success() {
            asked = reply.json;
            break;
        }
        // order.created reaches notify a moment after the order exists.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let conversation = id(&asked);
    let thread = format!("/v1/conversations/{conversation}");
    let inbox = s
        .get(
            &format!("/v1/conversations?organizationId={org_id}"),
            Auth::Bearer(&organizer),
        )
        .await
        .ok();
    assert_eq!(inbox["conversations"][0]["unreadCount"], 1, "{inbox}");
    s.post(
        &format!("{thread}/messages"),
        Auth::Bearer(&organizer),
        json!({ "body": "Yes, behind the hall." }),
    )
    .await
    .ok();
    assert_eq!(s.get(&thread, Auth::Bearer(&buyer)).await.ok()["unreadCount"], 1);
    let messages = s
        .get(&format!("{thread}/messages"), Auth::Bearer(&buyer))
        .await
        .ok();
    assert_eq!(
        messages["messages"].as_array().map(Vec::len),
        Some(2),
        "{messages}"
    );
    s.post(&format!("{thread}:markRead"), Auth::Bearer(&buyer), json!({}))
        .await
        .ok();
    s.get("/v1/conversations", Auth::Bearer(&buyer)).await.ok();
    s.post(&format!("{thread}:close"), Auth::Bearer(&buyer), json!({}))
        .await
        .ok();
    s.post(&format!("{thread}:reopen"), Auth::Bearer(&organizer), json!({}))
        .await
        .ok();
    let live = s
        .http
        .get(format!("{}{thread}:watch", s.base))
        .bearer_auth(&buyer)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("stream");
    assert_eq!(live.status(), StatusCode::OK);
    s.calls.lock().unwrap_or_else(|p| p.into_inner()).push((
        Method::GET,
        format!("{thread}:watch"),
        live.status(),
    ));
    drop(live);

    // Webhooks: an endpoint (on loopback, where nothing listens), its log, a ping and a
    // redelivery, a rotated secret, and its removal.
    let hooks = format!("/v1/organizations/{org_id}/webhooks");
    let created = s
        .post(
            &hooks,
            Auth::Bearer(&organizer),
            json!({ "url": "http://127.0.0.1:9/hooks", "eventTypes": ["order.paid"] }),
        )
        .await
        .ok();
    assert!(
        created["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_")),
        "{created}"
    );
    let hook = format!(
        "/v1/webhooks/{}",
        created["endpoint"]["id"].as_str().unwrap_or_default()
    );
    assert_eq!(
        s.get(&hooks, Auth::Bearer(&organizer)).await.ok()["endpoints"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        s.get(&hook, Auth::Bearer(&organizer)).await.ok()["url"],
        "http://127.0.0.1:9/hooks"
    );
    let described = patch(
        &s,
        &hook,
        Auth::Bearer(&organizer),
        json!({ "description": "tour" }),
    )
    .await;
    assert_eq!(described["description"], "tour", "{described}");
    let rotated = s
        .post(
            &format!("{hook}:rotateSecret"),
            Auth::Bearer(&organizer),
            json!({}),
        )
        .await
        .ok();
    assert_ne!(rotated["secret"], created["secret"]);
    let pinged = s
        .post(&format!("{hook}:ping"), Auth::Bearer(&organizer), json!({}))
        .await
        .ok();
    assert_eq!(pinged["eventType"], "webhook.ping", "{pinged}");
    let listed = s
        .get(&format!("{hook}/deliveries"), Auth::Bearer(&organizer))
        .await
        .ok();
    assert_eq!(listed["deliveries"][0]["id"], pinged["id"], "{listed}");
    let redeliver = format!(
        "{hook}/deliveries/{}:redeliver",
        pinged["id"].as_str().unwrap_or_default()
    );
    let mut redelivered = false;
    for _ in 0..100 {
        // Refused while the first attempt is in flight.
        if s.post(&redeliver, Auth::Bearer(&organizer), json!({}))
            .await
            .status
            .is_success()
        {
            redelivered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(redelivered, "redelivery accepted once the first attempt ended");
    delete(&s, &hook, Auth::Bearer(&organizer)).await;
    assert_eq!(
        s.get(&hook, Auth::Bearer(&organizer)).await.status,
        StatusCode::NOT_FOUND
    );

    // A mail client's one-click unsubscribe (RFC 8058): a form POST, no credentials.
    let signer = svc_notify::unsubscribe::Unsubscribe::load_or_create(&s.notify.0.pool)
        .await
        .expect("key");
    let token = signer.token(buyer_id, svc_notify::domain::Kind::EventReminder);
    let path = format!("/v1/notifications:unsubscribe?token={token}");
    let one_click = s
        .http
        .post(format!("{}{path}", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .expect("unsubscribe");
    assert_eq!(one_click.status(), StatusCode::OK);
    s.calls.lock().unwrap_or_else(|p| p.into_inner()).push((
        Method::POST,
        "/v1/notifications:unsubscribe".into(),
        one_click.status(),
    ));
    let after = s
        .get("/v1/notifications/preferences", Auth::Bearer(&buyer))
        .await
        .ok();
    assert_eq!(after["remindersEnabled"], false, "{after}");
    let forged = s
        .call(
            Method::POST,
            &format!("/v1/notifications:unsubscribe?token={token}x"),
            Auth::None,
            None,
        )
        .await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST, "{}", forged.json);

    assert_every_route_answered(&s);
}

/// Each route of a running service had at least one 2xx reply above.
fn assert_every_route_answered(s: &Stack) {
    let pool =
        prost_reflect::DescriptorPool::decode(ticketing_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
    let table = grpc_gateway::routes::RouteTable::from_pool(&pool).expect("routes");
    let calls = s.calls.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut missing = Vec::new();
    let mut checked = 0;
    for route in table.routes() {
        if !RUNNING.contains(&route.upstream.as_str()) {
            continue;
        }
        checked += 1;
        let answered = calls.iter().any(|(method, path, status)| {
            status.is_success()
                && matches!(
                    table.resolve(method, path),
                    grpc_gateway::routes::Resolved::Found(found, _)
                        if found.rpc.full_name() == route.rpc.full_name()
                            && found.template.to_string() == route.template.to_string()
                )
        });
        if !answered {
            missing.push(format!("{} {}", route.method, route.template));
        }
    }
    assert!(
        missing.is_empty(),
        "routes never answered through REST: {missing:#?}"
    );
    // The six services have 96 routes today; the check must not have filtered them away.
    assert!(checked >= 96, "only {checked} routes checked");
}
