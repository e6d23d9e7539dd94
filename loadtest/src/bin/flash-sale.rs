//! The flash sale: `--buyers` concurrent buyers each run hold → order → pay over gRPC, again and
//! again, against a fresh `--seats`-seat event until it is sold out. Against a running platform
//! (`PROFILE=release ./dev up`):
//!
//!     cargo run --release -p loadtest --bin flash-sale -- --password "$(cat .dev/demo-password)"
//!
//! As the demo organizer it creates a venue of `--seats` seats (rows of 100), an event with one
//! tier over all of them, and publishes it; it registers `--buyers` customers. Each checkout is
//! `HoldQuantity` of `--tickets` best-available seats, `CreateOrder` from the hold, `PayOrder`
//! with a test card. Reported: completed checkouts/s, p50/p99 of each step and of the whole
//! checkout, PostgreSQL commits per checkout (all databases, from `pg_stat_database`, with the
//! idle rate measured just before subtracted), and a consistency check read from the services'
//! databases: seats sold = tickets issued = the paid orders' tickets, and the succeeded payments
//! total = the paid orders total, with no seat sold twice.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use diesel::{
    QueryableByName,
    sql_types::{BigInt, Text},
};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use loadtest::{arg, authed, channel, login, ms, organization_of, publish_sale, register_buyers, summarize};
use ticketing_proto::ticketing::{
    catalog::v1::catalog_service_client::CatalogServiceClient,
    identity::v1::identity_service_client::IdentityServiceClient,
    inventory::v1::{self as inv, inventory_service_client::InventoryServiceClient},
    orders::v1::{self as ord, orders_service_client::OrdersServiceClient},
};
use tonic::{Code, transport::Channel};
use uuid::Uuid;

const BUYER_PASSWORD: &str = "benchmark passphrase 1";

#[derive(Default)]
struct Buyer {
    checkouts: usize,
    hold: Vec<Duration>,
    create: Vec<Duration>,
    pay: Vec<Duration>,
    total: Vec<Duration>,
    errors: Vec<String>,
}

struct Sale {
    event_id: String,
    tier_id: String,
    tickets: i32,
    sold_out: AtomicBool,
}

/// One buyer checking out until the event is sold out (or its per-customer limit is reached).
async fn buy(sale: Arc<Sale>, token: String, inventory: Channel, orders: Channel) -> anyhow::Result<Buyer> {
    let mut inventory = InventoryServiceClient::new(inventory);
    let mut orders = OrdersServiceClient::new(orders);
    let mut me = Buyer::default();
    while !sale.sold_out.load(Ordering::Relaxed) && me.errors.len() < 20 {
        let started = Instant::now();
        let hold = inventory
            .hold_quantity(authed(
                &token,
                inv::HoldQuantityRequest {
                    event_id: sale.event_id.clone(),
                    tier_id: sale.tier_id.clone(),
                    quantity: sale.tickets,
                    ttl: None,
                },
            )?)
            .await;
        let hold = match hold {
            Ok(hold) => hold.into_inner(),
            // NOT_ENOUGH_AVAILABLE: the sale is over.
            Err(status)
                if status.code() == Code::FailedPrecondition && status.message().contains("available") =>
            {
                sale.sold_out.store(true, Ordering::Relaxed);
                break;
            }
            // PER_CUSTOMER_LIMIT: this buyer is done.
            Err(status)
                if status.code() == Code::FailedPrecondition && status.message().contains("per customer") =>
            {
                break;
            }
            Err(status) => {
                me.errors.push(format!("hold: {status}"));
                continue;
            }
        };
        let held = started.elapsed();
        let order = orders
            .create_order(authed(
                &token,
                ord::CreateOrderRequest {
                    hold_id: hold.id.clone(),
                    idempotency_key: format!("flash-{}", hold.id),
                    ..Default::default()
                },
            )?)
            .await;
        let order = match order {
            Ok(order) => order.into_inner(),
            Err(status) => {
                me.errors.push(format!("create: {status}"));
                continue;
            }
        };
        let created = started.elapsed();
        let paid = orders
            .pay_order(authed(
                &token,
                ord::PayOrderRequest {
                    order_id: order.id.clone(),
                    card: Some(ord::Card {
                        number: "4242424242424242".into(),
                        exp_month: 12,
                        exp_year: 2099,
                        cvc: "123".into(),
                        holder_name: "Flash Buyer".into(),
                    }),
                    idempotency_key: format!("flash-pay-{}", order.id),
                },
            )?)
            .await;
        if let Err(status) = paid {
            me.errors.push(format!("pay: {status}"));
            continue;
        }
        let done = started.elapsed();
        me.checkouts += 1;
        me.hold.push(held);
        me.create.push(created - held);
        me.pay.push(done - created);
        me.total.push(done);
    }
    Ok(me)
}

#[derive(QueryableByName)]
struct Commits {
    #[diesel(sql_type = Text)]
    datname: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Transactions committed so far, by database.
async fn commits(conn: &mut AsyncPgConnection) -> anyhow::Result<BTreeMap<String, i64>> {
    use diesel_async::RunQueryDsl;
    // Statistics reach pg_stat_database when backends flush them (about once a second).
    diesel::sql_query("SELECT pg_stat_clear_snapshot()")
        .execute(conn)
        .await?;
    let rows: Vec<Commits> = diesel::sql_query(
        "SELECT datname, xact_commit::bigint AS n FROM pg_stat_database WHERE datname IS NOT NULL",
    )
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.datname, r.n)).collect())
}

fn delta(after: &BTreeMap<String, i64>, before: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    after
        .iter()
        .map(|(db, n)| (db.clone(), n - before.get(db).copied().unwrap_or(0)))
        .collect()
}

#[derive(QueryableByName)]
struct Number {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// One number from `query` (with the event id bound as `$1`) in `database`.
async fn number(conn: &mut AsyncPgConnection, query: &str, event: Uuid) -> anyhow::Result<i64> {
    use diesel_async::RunQueryDsl;
    let rows: Vec<Number> = diesel::sql_query(query)
        .bind::<diesel::sql_types::Uuid, _>(event)
        .load(conn)
        .await?;
    Ok(rows.as_slice().first().map_or(0, |r| r.n))
}

/// Reads what the services recorded about the sale, with SQL of its own (the load tools know
/// the services' databases, not their code), and checks the invariants.
async fn consistency(pg: &str, event: Uuid) -> anyhow::Result<bool> {
    let mut inventory = AsyncPgConnection::establish(&format!("{pg}/inventory")).await?;
    let mut orders_db = AsyncPgConnection::establish(&format!("{pg}/orders")).await?;
    let mut payments_db = AsyncPgConnection::establish(&format!("{pg}/payments")).await?;
    let sold = number(
        &mut inventory,
        "SELECT count(*)::bigint AS n FROM sold_seats WHERE event_id = $1",
        event,
    )
    .await?;
    let distinct_sold = number(
        &mut inventory,
        "SELECT count(DISTINCT seat_id)::bigint AS n FROM sold_seats WHERE event_id = $1",
        event,
    )
    .await?;
    let paid = number(
        &mut orders_db,
        "SELECT count(*)::bigint AS n FROM orders WHERE event_id = $1 AND status = 'paid'",
        event,
    )
    .await?;
    let paid_total = number(
        &mut orders_db,
        "SELECT coalesce(sum(total), 0)::bigint AS n FROM orders WHERE event_id = $1 AND status = 'paid'",
        event,
    )
    .await?;
    let issued = number(
        &mut orders_db,
        "SELECT count(*)::bigint AS n FROM tickets WHERE event_id = $1 AND status = 'valid'",
        event,
    )
    .await?;
    let of_paid_orders = number(
        &mut orders_db,
        "SELECT count(*)::bigint AS n FROM tickets t JOIN orders o ON o.id = t.order_id \
         WHERE o.event_id = $1 AND o.status = 'paid'",
        event,
    )
    .await?;
    let other_orders = number(
        &mut orders_db,
        "SELECT count(*)::bigint AS n FROM orders WHERE event_id = $1 AND status <> 'paid'",
        event,
    )
    .await?;
    // Payments knows orders, not events: its succeeded payments of this sale's paid orders.
    let paid_ids: Vec<Uuid> = {
        use diesel_async::RunQueryDsl;
        #[derive(QueryableByName)]
        struct Id {
            #[diesel(sql_type = diesel::sql_types::Uuid)]
            id: Uuid,
        }
        diesel::sql_query("SELECT id FROM orders WHERE event_id = $1 AND status = 'paid'")
            .bind::<diesel::sql_types::Uuid, _>(event)
            .load::<Id>(&mut orders_db)
            .await?
            .into_iter()
            .map(|row| row.id)
            .collect()
    };
    let (charged, charged_total) = {
        use diesel_async::RunQueryDsl;
        #[derive(QueryableByName)]
        struct Charged {
            #[diesel(sql_type = BigInt)]
            n: i64,
            #[diesel(sql_type = BigInt)]
            total: i64,
        }
        let rows: Vec<Charged> = diesel::sql_query(
            "SELECT count(*)::bigint AS n, coalesce(sum(amount), 0)::bigint AS total FROM payments \
             WHERE order_id = ANY($1) AND status = 'succeeded'",
        )
        .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(&paid_ids)
        .load(&mut payments_db)
        .await?;
        rows.as_slice().first().map_or((0, 0), |r| (r.n, r.total))
    };
    println!(
        "consistency: seats sold {sold} (distinct {distinct_sold}); tickets issued {issued}; tickets of paid \
         orders {of_paid_orders}; paid orders {paid} totalling {paid_total}; succeeded payments {charged} \
         totalling {charged_total}; orders not paid {other_orders}",
    );
    Ok(sold == distinct_sold
        && sold == issued
        && issued == of_paid_orders
        && paid_total == charged_total
        && charged == paid)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let identity_url: String = arg("identity", loadtest::local_url("identity"));
    let catalog_url: String = arg("catalog", loadtest::local_url("catalog"));
    let inventory_url: String = arg("inventory", loadtest::local_url("inventory"));
    let orders_url: String = arg("orders", loadtest::local_url("orders"));
    let pg: String = arg("postgres", "postgres://postgres@127.0.0.1:5432".to_string());
    let organizer: String = arg("organizer", "organizer@demo.ticketing.dev".to_string());
    let password: String = arg("password", String::new());
    let seats: usize = arg("seats", 10_000);
    let buyers: usize = arg("buyers", 256);
    let tickets: i32 = arg("tickets", 1);
    let connections: usize = arg("connections", 8).max(1);
    anyhow::ensure!(
        !password.is_empty(),
        "--password: the demo organizer's password (.dev/demo-password)"
    );
    anyhow::ensure!((1..=10).contains(&tickets), "--tickets: 1 to 10");

    let mut identity = IdentityServiceClient::new(channel(&identity_url).await?);
    let organizer_token = login(&mut identity, &organizer, &password).await?;
    let org = organization_of(&mut identity, &organizer_token).await?;
    // Room for uneven luck: a buyer may take up to twice the fair share.
    let per_customer = i32::try_from((2 * seats).div_ceil(buyers).max(tickets as usize))?.min(50);
    let mut catalog = CatalogServiceClient::new(channel(&catalog_url).await?)
        .max_encoding_message_size(32 * 1024 * 1024)
        .max_decoding_message_size(32 * 1024 * 1024);
    let (event_id, tier_id) = publish_sale(&mut catalog, &organizer_token, &org, seats, per_customer).await?;

    let run = Uuid::new_v4().simple().to_string();
    let tokens = register_buyers(&identity, &format!("flash-{run}"), buyers, BUYER_PASSWORD, 8).await?;
    let mut inventory_channels = Vec::new();
    let mut orders_channels = Vec::new();
    for _ in 0..connections {
        inventory_channels.push(channel(&inventory_url).await?);
        orders_channels.push(channel(&orders_url).await?);
    }
    println!(
        "flash-sale: event {event_id}, {seats} seats, {buyers} buyers, {tickets} ticket(s) per checkout, \
         {connections} connections per service"
    );

    let mut stats = AsyncPgConnection::establish(&format!("{pg}/postgres")).await?;
    // The idle commit rate (sweepers, relays, health checks), to subtract.
    let idle_window = Duration::from_secs(5);
    let idle_start = commits(&mut stats).await?;
    tokio::time::sleep(idle_window).await;
    let idle = delta(&commits(&mut stats).await?, &idle_start);

    let sale = Arc::new(Sale {
        event_id: event_id.clone(),
        tier_id,
        tickets,
        sold_out: AtomicBool::new(false),
    });
    let before = commits(&mut stats).await?;
    let cpu_before = loadtest::cpu_by_process();
    let started = Instant::now();
    let workers: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| {
            tokio::spawn(buy(
                sale.clone(),
                token,
                inventory_channels[i % connections].clone(),
                orders_channels[i % connections].clone(),
            ))
        })
        .collect();
    let mut all = Buyer::default();
    for worker in futures::future::join_all(workers).await {
        let b = worker??;
        all.checkouts += b.checkouts;
        all.hold.extend(b.hold);
        all.create.extend(b.create);
        all.pay.extend(b.pay);
        all.total.extend(b.total);
        all.errors.extend(b.errors);
    }
    let elapsed = started.elapsed();
    // Let the relays and consumers finish what the sale queued, and the statistics flush.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = commits(&mut stats).await?;
    let cpu_after = loadtest::cpu_by_process();
    let settle = elapsed + Duration::from_secs(3);
    // Per database: commits during the sale minus what the idle rate would have made.
    let per_db: Vec<(String, f64)> = delta(&after, &before)
        .into_iter()
        .map(|(db, n)| {
            let idle_rate = idle.get(&db).copied().unwrap_or(0) as f64 / idle_window.as_secs_f64();
            (db, n as f64 - idle_rate * settle.as_secs_f64())
        })
        .collect();
    let checkouts = all.checkouts.max(1) as f64;
    let sale_commits: f64 = per_db.iter().map(|(_, n)| n).sum();

    let rate = all.checkouts as f64 / elapsed.as_secs_f64();
    println!(
        "{} checkouts ({} tickets) in {:.2} s = {rate:.0} checkouts/s; {} errors",
        all.checkouts,
        all.checkouts * tickets as usize,
        elapsed.as_secs_f64(),
        all.errors.len()
    );
    for (step, samples) in [
        ("hold", all.hold),
        ("create order", all.create),
        ("pay", all.pay),
        ("checkout", all.total),
    ] {
        let s = summarize(samples);
        println!(
            "  {step:<12} p50 {:>9}  p90 {:>9}  p99 {:>9}  max {:>9}",
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.max)
        );
    }
    let by_database: Vec<String> = per_db
        .iter()
        .filter(|(_, n)| n / checkouts >= 0.05)
        .map(|(db, n)| format!("{db} {:.2}", n / checkouts))
        .collect();
    println!(
        "PostgreSQL commits per checkout (idle rate subtracted): {:.1} = {}",
        sale_commits / checkouts,
        by_database.join(", ")
    );
    // CPU per checkout: the sale and the 3 s after it, when relays and consumers finish.
    let (cpu, cpu_total) = loadtest::cpu_used(&cpu_after, &cpu_before);
    let per_checkout = |t: Duration| t.as_secs_f64() * 1e6 / checkouts;
    let shares: Vec<String> = cpu
        .iter()
        .filter(|(_, t)| per_checkout(*t) >= 20.0)
        .map(|(name, t)| format!("{name} {:.0}", per_checkout(*t)))
        .collect();
    println!(
        "CPU per checkout, all processes: {:.0} µs = {}",
        per_checkout(cpu_total),
        shares.join(", ")
    );
    let mut kinds: Vec<&String> = all.errors.iter().collect();
    kinds.sort();
    kinds.dedup_by(|a, b| a.split(':').next() == b.split(':').next());
    for error in kinds.iter().take(5) {
        println!("  e.g. {error}");
    }
    let consistent = consistency(&pg, Uuid::parse_str(&event_id)?).await?;
    println!(
        "consistency check: {}",
        if consistent { "PASSED" } else { "FAILED" }
    );
    anyhow::ensure!(consistent, "the sale left inconsistent records");
    Ok(())
}
