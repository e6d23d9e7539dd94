//! The buyers: each a real client of the REST gateway, retrying as `Retry-After` says, and
//! the log of every answer it got.

use super::*;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Hold,
    Order,
    Pay,
}

impl Step {
    pub(super) fn index(self) -> usize {
        self as usize
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Hold => "hold",
            Self::Order => "order",
            Self::Pay => "pay",
        }
    }
}

pub(super) struct Sale {
    pub(super) http: reqwest::Client,
    pub(super) gateway: String,
    pub(super) event_id: String,
    pub(super) tier_id: String,
    pub(super) tickets: usize,
    pub(super) hold_ttl: u64,
    pub(super) started: Instant,
    pub(super) hard_stop: Instant,
    pub(super) sold_out: AtomicBool,
    /// Between two checkout starts, whoever starts them: the sale's pace.
    pub(super) interval: Duration,
    pub(super) next_start: Mutex<Instant>,
}

impl Sale {
    pub(super) fn over(&self) -> bool {
        self.sold_out.load(Ordering::Relaxed) || Instant::now() >= self.hard_stop
    }

    /// Waits for the next free start slot; false once the sale is over. A slot missed while
    /// every buyer was stuck is not made up for later, so recovery is not a burst of starts.
    pub(super) async fn turn(&self) -> bool {
        let slot = {
            let mut next = self.next_start.lock().unwrap_or_else(PoisonError::into_inner);
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
        !self.over()
    }

    pub(super) fn since_start(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.started)
    }
}

#[derive(Default)]
pub(super) struct BuyerLog {
    /// Per step, answers by HTTP status (`err`: none, the connection failed).
    pub(super) answers: [BTreeMap<String, usize>; 3],
    /// Each completed checkout: when it started and when it was paid, from the sale's start.
    pub(super) checkouts: Vec<(Duration, Duration)>,
    /// Final refusals of a request that had been sent before.
    pub(super) permanent: Vec<String>,
    /// Final refusals at a first try (the buyer started a new checkout).
    pub(super) refused: Vec<String>,
    pub(super) last_hold: Option<Instant>,
}

impl BuyerLog {
    pub(super) fn answer(&mut self, step: Step, what: &str) {
        if let Some(answers) = self.answers.get_mut(step.index()) {
            *answers.entry(what.to_string()).or_default() += 1;
        }
    }

    pub(super) fn merge(&mut self, other: BuyerLog) {
        for (mine, theirs) in self.answers.iter_mut().zip(other.answers) {
            for (status, n) in theirs {
                *mine.entry(status).or_default() += n;
            }
        }
        self.checkouts.extend(other.checkouts);
        self.permanent.extend(other.permanent);
        self.refused.extend(other.refused);
        self.last_hold = self.last_hold.max(other.last_hold);
    }
}

pub(super) struct Call {
    pub(super) step: Step,
    pub(super) path: String,
    pub(super) body: Value,
    pub(super) idempotency_key: Option<String>,
}

pub(super) enum Reply {
    Done(Value),
    SoldOut,
    OverLimit,
    Refused,
    TimeUp,
}

/// The `google.rpc.ErrorInfo` reason of an error body, if it has one.
pub(super) fn reason(body: &Value) -> Option<&str> {
    body.get("details")?
        .as_array()?
        .iter()
        .find_map(|detail| detail.get("reason")?.as_str())
}

pub(super) fn message(body: &Value) -> &str {
    body.get("message").and_then(Value::as_str).unwrap_or_default()
}

pub(super) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// Sends `call` as a real client would: the same request again (same idempotency key) after a
/// retryable answer or a failed connection, until a final answer or the sale's hard stop.
pub(super) async fn send(sale: &Sale, me: &mut BuyerLog, token: &str, call: &Call) -> Reply {
    let url = format!("{}{}", sale.gateway, call.path);
    let mut sent_before = false;
    loop {
        if Instant::now() >= sale.hard_stop {
            return Reply::TimeUp;
        }
        let mut request = sale.http.post(&url).bearer_auth(token).json(&call.body);
        if let Some(key) = &call.idempotency_key {
            request = request.header("Idempotency-Key", key.as_str());
        }
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status();
                let wait = retry_after(response.headers());
                response.bytes().await.ok().map(|bytes| (status, wait, bytes))
            }
            Err(_) => None,
        };
        if call.step == Step::Hold {
            // Whatever came back, a hold may have been taken now: the audit waits for it.
            me.last_hold = Some(Instant::now());
        }
        let wait = match answer {
            None => {
                me.answer(call.step, "err");
                DEFAULT_RETRY
            }
            Some((status, wait, bytes)) => {
                me.answer(call.step, status.as_str());
                let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                if status.is_success() {
                    return Reply::Done(body);
                }
                if RETRYABLE.contains(&status.as_u16()) {
                    wait.unwrap_or(DEFAULT_RETRY).min(MAX_RETRY)
                } else {
                    if call.step == Step::Hold {
                        if reason(&body) == Some("NOT_ENOUGH_AVAILABLE")
                            || message(&body).contains("places are available")
                        {
                            return Reply::SoldOut;
                        }
                        if reason(&body) == Some("PER_CUSTOMER_LIMIT")
                            || message(&body).contains("per customer")
                        {
                            return Reply::OverLimit;
                        }
                    }
                    let what = format!(
                        "{} {}: {} {}",
                        call.step.name(),
                        call.path,
                        status.as_u16(),
                        message(&body)
                    );
                    if sent_before {
                        me.permanent.push(what);
                    } else {
                        me.refused.push(what);
                    }
                    return Reply::Refused;
                }
            }
        };
        sent_before = true;
        tokio::time::sleep(wait).await;
    }
}

/// One buyer: hold, order, pay, again and again, until the sale is sold out or over.
pub(super) async fn buyer(sale: Arc<Sale>, token: String) -> BuyerLog {
    let mut me = BuyerLog::default();
    while sale.turn().await {
        let started = Instant::now();
        let hold = Call {
            step: Step::Hold,
            path: format!("/v1/events/{}/holds:quantity", sale.event_id),
            body: json!({
                "tierId": sale.tier_id,
                "quantity": sale.tickets,
                "ttl": format!("{}s", sale.hold_ttl),
            }),
            idempotency_key: None,
        };
        let hold = match send(&sale, &mut me, &token, &hold).await {
            Reply::Done(hold) => hold,
            Reply::SoldOut => {
                sale.sold_out.store(true, Ordering::Relaxed);
                break;
            }
            Reply::OverLimit | Reply::TimeUp => break,
            Reply::Refused => continue,
        };
        let Some(hold_id) = hold.get("id").and_then(Value::as_str) else {
            me.refused.push(format!("hold: an answer without an id: {hold}"));
            continue;
        };
        let key = format!("chaos-order-{hold_id}");
        let order = Call {
            step: Step::Order,
            path: "/v1/orders".into(),
            body: json!({ "holdId": hold_id, "idempotencyKey": key }),
            idempotency_key: Some(key),
        };
        let order = match send(&sale, &mut me, &token, &order).await {
            Reply::Done(order) => order,
            Reply::TimeUp => break,
            _ => continue,
        };
        let Some(order_id) = order.get("id").and_then(Value::as_str) else {
            me.refused
                .push(format!("order: an answer without an id: {order}"));
            continue;
        };
        let key = format!("chaos-pay-{order_id}");
        let pay = Call {
            step: Step::Pay,
            path: format!("/v1/orders/{order_id}:pay"),
            body: json!({
                "card": {
                    "number": "4242424242424242",
                    "expMonth": 12,
                    "expYear": 2099,
                    "cvc": "123",
                    "holderName": "Chaos Buyer",
                },
                "idempotencyKey": key,
            }),
            idempotency_key: Some(key),
        };
        let paid = match send(&sale, &mut me, &token, &pay).await {
            Reply::Done(paid) => paid,
            Reply::TimeUp => break,
            _ => continue,
        };
        let status = paid.get("status").and_then(Value::as_str).unwrap_or_default();
        if status != "ORDER_STATUS_PAID" {
            me.refused
                .push(format!("pay {order_id}: 200, but the order is {status}"));
            continue;
        }
        me.checkouts
            .push((sale.since_start(started), sale.since_start(Instant::now())));
    }
    me
}
