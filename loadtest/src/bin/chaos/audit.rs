//! The audit: a snapshot of the sale from the services' databases, the broker and the public
//! API, and every invariant checked against it.

use super::*;

#[derive(QueryableByName)]
pub(super) struct Confirmation {
    #[diesel(sql_type = Text)]
    pub(super) order_id: String,
    #[diesel(sql_type = Text)]
    pub(super) status: String,
}

/// Notify's confirmation mails: order id (the key is `order_confirmed:<order>:<address>`) to
/// the mail's status.
pub(super) async fn confirmations(o: &Options) -> anyhow::Result<HashMap<String, String>> {
    use diesel_async::RunQueryDsl;
    let mut conn = AsyncPgConnection::establish(&o.database_url("notify")).await?;
    let rows: Vec<Confirmation> = diesel::sql_query(
        "SELECT split_part(dedupe_key, ':', 2) AS order_id, status FROM mails WHERE kind = 'order_confirmed'",
    )
    .load(&mut conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.order_id, r.status)).collect())
}

pub(super) async fn dead_letters(amqp: &str) -> anyhow::Result<Vec<(String, u32)>> {
    let connection = lapin::Connection::connect(amqp, lapin::ConnectionProperties::default())
        .await
        .context("connecting to the broker")?;
    let mut counts = Vec::new();
    for consumer in CONSUMERS {
        let queue = format!("{consumer}.dead");
        // A passive declare of a missing queue closes its channel: one channel per queue.
        let channel = connection.create_channel().await?;
        let declared = channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        // A queue never declared (its consumer never connected) holds nothing.
        counts.push((queue, declared.map(|q| q.message_count()).unwrap_or(0)));
        let _ = channel.close(200, "done".into()).await;
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(counts)
}

#[derive(QueryableByName)]
pub(super) struct LedgerRow {
    #[diesel(sql_type = Text)]
    pub(super) seat_id: String,
    #[diesel(sql_type = Text)]
    pub(super) tier_id: String,
    #[diesel(sql_type = Text)]
    pub(super) order_id: String,
}

#[derive(QueryableByName)]
pub(super) struct SeatsOfTier {
    #[diesel(sql_type = Text)]
    pub(super) tier_id: String,
    #[diesel(sql_type = BigInt)]
    pub(super) n: i64,
}

#[derive(QueryableByName)]
pub(super) struct QuotaRow {
    #[diesel(sql_type = Text)]
    pub(super) tier_id: String,
    #[diesel(sql_type = BigInt)]
    pub(super) capacity: i64,
    #[diesel(sql_type = BigInt)]
    pub(super) sold: i64,
}

#[derive(QueryableByName)]
pub(super) struct OrderRow {
    #[diesel(sql_type = Text)]
    pub(super) id: String,
    #[diesel(sql_type = Text)]
    pub(super) status: String,
    #[diesel(sql_type = BigInt)]
    pub(super) total: i64,
    #[diesel(sql_type = Text)]
    pub(super) currency: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) payment_id: Option<String>,
    #[diesel(sql_type = Bool)]
    pub(super) overdue: bool,
    #[diesel(sql_type = Text)]
    pub(super) deadline: String,
}

#[derive(QueryableByName)]
pub(super) struct LineRow {
    #[diesel(sql_type = Text)]
    pub(super) id: String,
    #[diesel(sql_type = Text)]
    pub(super) order_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) seat_id: Option<String>,
    #[diesel(sql_type = Bool)]
    pub(super) refunded: bool,
}

#[derive(QueryableByName)]
pub(super) struct TicketRow {
    #[diesel(sql_type = Text)]
    pub(super) id: String,
    #[diesel(sql_type = Text)]
    pub(super) line_id: String,
    #[diesel(sql_type = Text)]
    pub(super) status: String,
}

#[derive(QueryableByName)]
pub(super) struct PaymentRow {
    #[diesel(sql_type = Text)]
    pub(super) id: String,
    #[diesel(sql_type = Text)]
    pub(super) order_id: String,
    #[diesel(sql_type = Text)]
    pub(super) status: String,
    #[diesel(sql_type = BigInt)]
    pub(super) amount: i64,
    #[diesel(sql_type = Text)]
    pub(super) currency: String,
}

impl PaymentRow {
    fn describe(&self) -> String {
        format!(
            "payment {} ({} {} {}) of order {}",
            self.id, self.status, self.amount, self.currency, self.order_id
        )
    }
}

#[derive(QueryableByName)]
pub(super) struct Present {
    #[diesel(sql_type = Bool)]
    pub(super) present: bool,
}

#[derive(QueryableByName)]
pub(super) struct Waiting {
    #[diesel(sql_type = Text)]
    pub(super) event_type: String,
    #[diesel(sql_type = BigInt)]
    pub(super) n: i64,
}

/// A tier as `GET /v1/events/{id}/availability` shows it to buyers.
pub(super) struct Shown {
    pub(super) tier_id: String,
    pub(super) total: i64,
    pub(super) free: i64,
    pub(super) held: i64,
    pub(super) sold: i64,
}

/// Everything the audit reads, at one moment.
pub(super) struct Snapshot {
    pub(super) ledger: Vec<LedgerRow>,
    pub(super) seats: Vec<SeatsOfTier>,
    pub(super) quotas: Vec<QuotaRow>,
    pub(super) orders: Vec<OrderRow>,
    pub(super) lines: Vec<LineRow>,
    pub(super) tickets: Vec<TicketRow>,
    /// The payments made since the run began.
    pub(super) payments: Vec<PaymentRow>,
    /// Orders of other sales that some of those payments are for.
    pub(super) other_sales: HashSet<String>,
    pub(super) availability: Result<Vec<Shown>, String>,
    /// Per database, events still in its outbox.
    pub(super) outbox: Vec<(String, Vec<Waiting>)>,
    pub(super) dead_letters: Result<Vec<(String, u32)>, String>,
    /// Order id to the status of its confirmation mail (notify's queue).
    pub(super) told: Result<HashMap<String, String>, String>,
}

pub(super) async fn availability(ctx: &Ctx, event_id: &str) -> Result<Vec<Shown>, String> {
    let url = format!(
        "{}/v1/events/{event_id}/availability?countsOnly=true",
        ctx.options.gateway
    );
    let response = ctx
        .http
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| format!("GET {url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("GET {url}: {status} {body}"));
    }
    let tiers = body
        .get("tiers")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("GET {url}: no tiers in {body}"))?;
    Ok(tiers
        .iter()
        .map(|tier| {
            let count = |field: &str| tier.get(field).and_then(Value::as_i64).unwrap_or(0);
            Shown {
                tier_id: tier
                    .get("tierId")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                total: count("total"),
                free: count("free"),
                held: count("held"),
                sold: count("sold"),
            }
        })
        .collect())
}

pub(super) async fn snapshot(ctx: &Ctx, ids: &RunIds) -> anyhow::Result<Snapshot> {
    use diesel_async::RunQueryDsl;
    let o = &ctx.options;
    let event = ids.event_id.clone();
    let mut inventory = AsyncPgConnection::establish(&o.database_url("inventory")).await?;
    let ledger: Vec<LedgerRow> = diesel::sql_query(
        "SELECT seat_id, tier_id, order_id::text AS order_id FROM sold_seats WHERE event_id = $1::uuid",
    )
    .bind::<Text, _>(event.clone())
    .load(&mut inventory)
    .await?;
    let seats: Vec<SeatsOfTier> = diesel::sql_query(
        "SELECT tier_id, count(*)::bigint AS n FROM inventory_seats WHERE event_id = $1::uuid \
         GROUP BY tier_id",
    )
    .bind::<Text, _>(event.clone())
    .load(&mut inventory)
    .await?;
    let quotas: Vec<QuotaRow> = diesel::sql_query(
        "SELECT tier_id, capacity::bigint AS capacity, sold::bigint AS sold FROM inventory_quotas \
         WHERE event_id = $1::uuid",
    )
    .bind::<Text, _>(event.clone())
    .load(&mut inventory)
    .await?;

    let mut orders_db = AsyncPgConnection::establish(&o.database_url("orders")).await?;
    let orders: Vec<OrderRow> = diesel::sql_query(
        "SELECT id::text AS id, status, total, currency, payment_id::text AS payment_id, \
         payment_deadline < now() AS overdue, payment_deadline::text AS deadline \
         FROM orders WHERE event_id = $1::uuid ORDER BY created_at",
    )
    .bind::<Text, _>(event.clone())
    .load(&mut orders_db)
    .await?;
    let lines: Vec<LineRow> = diesel::sql_query(
        "SELECT l.id::text AS id, l.order_id::text AS order_id, l.seat_id, l.refunded \
         FROM order_lines l JOIN orders o ON o.id = l.order_id WHERE o.event_id = $1::uuid",
    )
    .bind::<Text, _>(event.clone())
    .load(&mut orders_db)
    .await?;
    let tickets: Vec<TicketRow> = diesel::sql_query(
        "SELECT id::text AS id, line_id::text AS line_id, status FROM tickets WHERE event_id = $1::uuid",
    )
    .bind::<Text, _>(event.clone())
    .load(&mut orders_db)
    .await?;

    let mut payments_db = AsyncPgConnection::establish(&o.database_url("payments")).await?;
    let payments: Vec<PaymentRow> = diesel::sql_query(
        "SELECT id::text AS id, order_id::text AS order_id, status, amount, currency FROM payments \
         WHERE created_at >= $1::timestamptz ORDER BY created_at",
    )
    .bind::<Text, _>(ids.since.clone())
    .load(&mut payments_db)
    .await?;
    let ours: HashSet<&str> = orders.iter().map(|order| order.id.as_str()).collect();
    let mut other_sales = HashSet::new();
    for payment in &payments {
        if ours.contains(payment.order_id.as_str()) || other_sales.contains(&payment.order_id) {
            continue;
        }
        let found: Vec<Count> =
            diesel::sql_query("SELECT count(*)::bigint AS n FROM orders WHERE id = $1::uuid")
                .bind::<Text, _>(payment.order_id.clone())
                .load(&mut orders_db)
                .await?;
        if found.as_slice().first().is_some_and(|c| c.n > 0) {
            other_sales.insert(payment.order_id.clone());
        }
    }

    let mut outbox = Vec::new();
    for service in DATABASES {
        let mut conn = AsyncPgConnection::establish(&o.database_url(service)).await?;
        let present: Vec<Present> = diesel::sql_query("SELECT to_regclass('outbox') IS NOT NULL AS present")
            .load(&mut conn)
            .await?;
        if !present.as_slice().first().is_some_and(|p| p.present) {
            continue;
        }
        let waiting: Vec<Waiting> = diesel::sql_query(
            "SELECT event_type, count(*)::bigint AS n FROM outbox GROUP BY event_type ORDER BY event_type",
        )
        .load(&mut conn)
        .await?;
        if !waiting.is_empty() {
            outbox.push((format!("{service}{}", o.db_suffix), waiting));
        }
    }

    Ok(Snapshot {
        availability: availability(ctx, &event).await,
        dead_letters: dead_letters(&o.amqp).await.map_err(|e| format!("{e:#}")),
        told: confirmations(o).await.map_err(|e| format!("{e:#}")),
        ledger,
        seats,
        quotas,
        orders,
        lines,
        tickets,
        payments,
        other_sales,
        outbox,
    })
}

/// What breaks an invariant: at any moment (safety), or still at the last look (eventual).
#[derive(Default)]
pub(super) struct Found {
    pub(super) safety: Vec<String>,
    pub(super) eventual: Vec<String>,
}

pub(super) fn is_paid(status: &str) -> bool {
    matches!(status, "paid" | "partially_refunded")
}

pub(super) fn status_of<'a>(orders: &HashMap<&str, &'a OrderRow>, id: &str) -> &'a str {
    orders
        .get(id)
        .map_or("unknown to orders", |order| order.status.as_str())
}

/// The invariants, in the order of [`CHECKS`].
pub(super) fn check(s: &Snapshot, dead_before: &[(String, u32)]) -> Vec<Found> {
    let orders: HashMap<&str, &OrderRow> = s.orders.iter().map(|o| (o.id.as_str(), o)).collect();
    let mut ledger_by_seat: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut sold_by_tier: BTreeMap<&str, i64> = BTreeMap::new();
    let mut sold_by_order: HashMap<&str, usize> = HashMap::new();
    for row in &s.ledger {
        ledger_by_seat
            .entry(row.seat_id.as_str())
            .or_default()
            .push(row.order_id.as_str());
        *sold_by_tier.entry(row.tier_id.as_str()).or_default() += 1;
        *sold_by_order.entry(row.order_id.as_str()).or_default() += 1;
    }
    // The seats of paid orders' lines that were not refunded: seat -> orders.
    let mut paid_by_seat: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut lines_by_order: HashMap<&str, Vec<&LineRow>> = HashMap::new();
    for line in &s.lines {
        lines_by_order
            .entry(line.order_id.as_str())
            .or_default()
            .push(line);
        let paid = orders
            .get(line.order_id.as_str())
            .is_some_and(|o| is_paid(&o.status));
        if let Some(seat) = line.seat_id.as_deref()
            && paid
            && !line.refunded
        {
            paid_by_seat.entry(seat).or_default().push(line.order_id.as_str());
        }
    }
    let mut tickets_by_line: HashMap<&str, Vec<&TicketRow>> = HashMap::new();
    for ticket in &s.tickets {
        tickets_by_line
            .entry(ticket.line_id.as_str())
            .or_default()
            .push(ticket);
    }
    let mut payments_by_order: HashMap<&str, Vec<&PaymentRow>> = HashMap::new();
    for payment in &s.payments {
        payments_by_order
            .entry(payment.order_id.as_str())
            .or_default()
            .push(payment);
    }

    // 1. Sold once.
    let mut sold_once = Found::default();
    for (seat, owners) in &ledger_by_seat {
        if owners.len() > 1 {
            sold_once.safety.push(format!(
                "seat {seat} is in the ledger {} times: orders {}",
                owners.len(),
                owners.join(", ")
            ));
        }
    }
    for (seat, owners) in &paid_by_seat {
        if owners.len() > 1 {
            let shown: Vec<String> = owners
                .iter()
                .map(|id| format!("{id} ({})", status_of(&orders, id)))
                .collect();
            sold_once.safety.push(format!(
                "seat {seat} is in {} paid orders: {}",
                owners.len(),
                shown.join(", ")
            ));
        }
        let ledger = ledger_by_seat.get(seat).map(Vec::as_slice).unwrap_or_default();
        for order in owners {
            if !ledger.contains(order) {
                let holder = if ledger.is_empty() {
                    "nobody".to_string()
                } else {
                    ledger.join(", ")
                };
                sold_once.eventual.push(format!(
                    "order {order} ({}) has seat {seat}, which the ledger gives to {holder}",
                    status_of(&orders, order)
                ));
            }
        }
    }
    for row in &s.ledger {
        let paid_line = paid_by_seat
            .get(row.seat_id.as_str())
            .is_some_and(|owners| owners.contains(&row.order_id.as_str()));
        if !paid_line {
            sold_once.eventual.push(format!(
                "seat {} is sold in the ledger to order {} ({}), which has no paid line for it",
                row.seat_id,
                row.order_id,
                status_of(&orders, &row.order_id)
            ));
        }
    }

    // 2. Not oversold.
    let mut oversold = Found::default();
    let capacity: HashMap<&str, i64> = s.seats.iter().map(|t| (t.tier_id.as_str(), t.n)).collect();
    for (tier, sold) in &sold_by_tier {
        let seats = capacity.get(tier).copied().unwrap_or(0);
        if *sold > seats {
            oversold
                .safety
                .push(format!("tier {tier}: {sold} seats sold of {seats}"));
        }
    }
    for quota in &s.quotas {
        if quota.sold > quota.capacity {
            oversold.safety.push(format!(
                "tier {}: {} places sold of a quota of {}",
                quota.tier_id, quota.sold, quota.capacity
            ));
        }
    }

    // 3. Paid orders whole: a valid ticket per line, one succeeded payment of the total.
    let mut whole = Found::default();
    for order in s.orders.iter().filter(|o| o.status == "paid") {
        let lines = lines_by_order
            .get(order.id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        if lines.is_empty() {
            whole
                .eventual
                .push(format!("order {} is paid and has no lines", order.id));
        }
        for line in lines.iter().filter(|l| !l.refunded) {
            let tickets = tickets_by_line
                .get(line.id.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            let valid = tickets
                .iter()
                .filter(|t| matches!(t.status.as_str(), "valid" | "checked_in"))
                .count();
            if tickets.len() != 1 || valid != 1 {
                let shown: Vec<String> = tickets.iter().map(|t| format!("{} {}", t.id, t.status)).collect();
                whole.eventual.push(format!(
                    "order {} (paid) line {}: tickets [{}]",
                    order.id,
                    line.id,
                    shown.join(", ")
                ));
            }
        }
        let succeeded: Vec<&PaymentRow> = payments_by_order
            .get(order.id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .copied()
            .filter(|p| p.status == "succeeded")
            .collect();
        match succeeded.as_slice() {
            [payment] if payment.amount == order.total && payment.currency == order.currency => {}
            others => {
                let shown: Vec<String> = others.iter().map(|p| p.describe()).collect();
                whole.eventual.push(format!(
                    "order {} (paid, total {} {}) has {} succeeded payment(s): [{}]",
                    order.id,
                    order.total,
                    order.currency,
                    others.len(),
                    shown.join("; ")
                ));
            }
        }
    }

    // 4. No charge without the paid order it paid.
    let mut charges = Found::default();
    for payment in &s.payments {
        match payment.status.as_str() {
            "succeeded" | "partially_refunded" => match orders.get(payment.order_id.as_str()) {
                Some(order) => {
                    if order.payment_id.as_deref() != Some(payment.id.as_str()) || !is_paid(&order.status) {
                        charges.eventual.push(format!(
                            "{}: the order is {}, paid by {}",
                            payment.describe(),
                            order.status,
                            order.payment_id.as_deref().unwrap_or("no payment")
                        ));
                    }
                }
                None if s.other_sales.contains(&payment.order_id) => {}
                None => charges
                    .eventual
                    .push(format!("{}: an order orders does not know", payment.describe())),
            },
            "processing" => charges.eventual.push(format!(
                "{}: still processing, its outcome unknown",
                payment.describe()
            )),
            _ => {}
        }
    }

    // 5. Unpaid orders within their deadline, or closed with their places back on sale.
    let mut unpaid = Found::default();
    for order in &s.orders {
        match order.status.as_str() {
            "pending_payment" if order.overdue => unpaid.eventual.push(format!(
                "order {} is still pending_payment; its deadline {} has passed",
                order.id, order.deadline
            )),
            "expired" | "cancelled" => {
                if let Some(n) = sold_by_order.get(order.id.as_str()) {
                    unpaid.eventual.push(format!(
                        "order {} is {} and still has {n} places in the ledger",
                        order.id, order.status
                    ));
                }
            }
            _ => {}
        }
    }

    // 6. What buyers see is the ledger, and nothing is held.
    let mut visible = Found::default();
    match &s.availability {
        Err(error) => visible.eventual.push(format!("availability: {error}")),
        Ok(tiers) => {
            for tier in tiers {
                let ledger = sold_by_tier.get(tier.tier_id.as_str()).copied().unwrap_or(0);
                if tier.sold != ledger || tier.held != 0 {
                    visible.eventual.push(format!(
                        "tier {}: buyers see {} sold, {} held, {} free of {}; the ledger has {ledger} sold",
                        tier.tier_id, tier.sold, tier.held, tier.free, tier.total
                    ));
                }
            }
            for (tier, sold) in &sold_by_tier {
                if !tiers.iter().any(|t| t.tier_id == *tier) {
                    visible.eventual.push(format!(
                        "tier {tier}: {sold} sold in the ledger, missing from what buyers see"
                    ));
                }
            }
        }
    }

    // 7. Outboxes drained.
    let mut drained = Found::default();
    for (database, waiting) in &s.outbox {
        let total: i64 = waiting.iter().map(|w| w.n).sum();
        let kinds: Vec<String> = waiting
            .iter()
            .map(|w| format!("{} {}", w.event_type, w.n))
            .collect();
        drained.eventual.push(format!(
            "{database}: {total} events not published ({})",
            kinds.join(", ")
        ));
    }

    // 8. No dead letters.
    let mut dead = Found::default();
    match &s.dead_letters {
        Err(error) => dead.eventual.push(format!("the broker: {error}")),
        Ok(queues) => {
            // Dead letters of an earlier sale in the same run are that sale's finding.
            for (queue, n) in queues {
                let before = dead_before
                    .iter()
                    .find(|(q, _)| q == queue)
                    .map_or(0, |(_, n)| *n);
                if *n > before {
                    dead.eventual
                        .push(format!("{queue}: {n} messages ({before} before this sale)"));
                }
            }
        }
    }

    // 9. Every buyer of a paid order told (a refunded order was paid first).
    let mut told = Found::default();
    match &s.told {
        Err(error) => told.eventual.push(format!("notify's database: {error}")),
        Ok(mails) => {
            for order in &s.orders {
                if !(is_paid(&order.status) || order.status == "refunded") {
                    continue;
                }
                match mails.get(&order.id).map(String::as_str) {
                    Some("sent") => {}
                    Some(status) => told.eventual.push(format!(
                        "order {} ({}): its confirmation is {status}",
                        order.id, order.status
                    )),
                    None => told.eventual.push(format!(
                        "order {} ({}): its buyer has no confirmation",
                        order.id, order.status
                    )),
                }
            }
        }
    }

    vec![
        sold_once, oversold, whole, charges, unpaid, visible, drained, dead, told,
    ]
}

pub(super) struct Audit {
    /// Per invariant (as [`CHECKS`]), what breaks it.
    pub(super) violations: Vec<Vec<String>>,
    pub(super) error: Option<String>,
}

impl Audit {
    pub(super) fn passed(&self) -> bool {
        self.error.is_none() && self.violations.iter().all(Vec::is_empty)
    }

    pub(super) fn cell(&self) -> String {
        if self.error.is_some() {
            return "✗ could not audit".into();
        }
        let broken: Vec<String> = self
            .violations
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_empty())
            .map(|(i, _)| (i + 1).to_string())
            .collect();
        if broken.is_empty() {
            format!("✓ {}/{}", CHECKS.len(), CHECKS.len())
        } else {
            format!("✗ broken: {}", broken.join(", "))
        }
    }

    pub(super) fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(error) = &self.error {
            lines.push(format!("could not audit: {error}"));
        }
        for ((number, name), violations) in (1..).zip(CHECKS).zip(&self.violations) {
            if violations.is_empty() {
                continue;
            }
            lines.push(format!("{number}. {name}: {} violation(s)", violations.len()));
            for violation in violations.iter().take(SHOWN) {
                lines.push(format!("   - {violation}"));
            }
            if violations.len() > SHOWN {
                lines.push(format!("   - and {} more", violations.len() - SHOWN));
            }
        }
        lines
    }

    pub(super) fn print(&self) {
        for line in self.lines() {
            println!("  {line}");
        }
    }
}

/// Checks every invariant once the sale has settled. Safety properties count if broken at any
/// look; eventual ones (expiry, events, relays) are looked at again for up to a minute.
pub(super) async fn audit(ctx: &Ctx, ids: &RunIds) -> Audit {
    let until = Instant::now() + EVENTUAL_WITHIN;
    let mut safety: Vec<BTreeSet<String>> = vec![BTreeSet::new(); CHECKS.len()];
    let mut eventual: Option<Vec<Vec<String>>> = None;
    let mut error = None;
    loop {
        match snapshot(ctx, ids).await {
            Ok(look) => {
                let mut now = Vec::with_capacity(CHECKS.len());
                for (seen, found) in safety.iter_mut().zip(check(&look, &ids.dead_before)) {
                    seen.extend(found.safety);
                    now.push(found.eventual);
                }
                let settled = now.iter().all(Vec::is_empty);
                eventual = Some(now);
                if settled {
                    break;
                }
            }
            Err(e) => error = Some(format!("{e:#}")),
        }
        if Instant::now() >= until {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    match eventual {
        Some(eventual) => Audit {
            violations: safety
                .into_iter()
                .zip(eventual)
                .map(|(safety, eventual)| safety.into_iter().chain(eventual).collect())
                .collect(),
            error: None,
        },
        None => Audit {
            violations: vec![Vec::new(); CHECKS.len()],
            error: Some(error.unwrap_or_else(|| "no look at the databases".into())),
        },
    }
}
