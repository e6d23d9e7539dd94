//! The report: the table of faults and the page written to `docs/chaos.md`.

use super::*;

pub(super) fn table(rows: &[Row]) -> String {
    let mut lines = vec![
        "| fault | answers (hold / order / pay) | checkout p99 during fault | restart → half rate \
         | longest stall | permanent errors on retry | audit |"
            .to_string(),
        "| --- | --- | --- | --- | --- | --- | --- |".to_string(),
    ];
    for row in rows {
        lines.push(match row {
            Row::Ran(o) => format!(
                "| `{}` | {} | {} | {} | {} | {} | {} |",
                o.fault,
                o.answers_cell(),
                o.during_cell(),
                o.half_rate.cell(),
                o.stall_cell(),
                o.permanent_cell(),
                o.audit_cell()
            ),
            Row::Failed { fault, error } => {
                // One table cell: no row or column breaks from the error's text.
                let error = error.replace('|', "\\|").replace('\n', " ");
                format!("| `{fault}` | — | — | — | — | — | ✗ the run failed: {error} |")
            }
        });
    }
    lines.join("\n")
}

pub(super) fn memory_gib() -> Option<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: f64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / (1024.0 * 1024.0))
}

pub(super) fn report(o: &Options, rows: &[Row], table: &str) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = memory_gib().map_or_else(|| "unknown".to_string(), |gib| format!("{gib:.0} GiB"));
    let date = chrono::Utc::now().format("%Y-%m-%d");
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let (places, buyers, tickets, ttl) = (o.places, o.buyers, o.tickets, o.hold_ttl);
    let seconds = o.sale_seconds;
    let fault_at = o.fault_at.as_secs_f64();
    let eventual = EVENTUAL_WITHIN.as_secs();
    let (half_rate, stall) = (AIM_HALF_RATE.as_secs(), AIM_STALL.as_secs());
    let invariants: Vec<String> = (1..)
        .zip(CHECKS)
        .map(|(number, name)| format!("{number}. {name}"))
        .collect();
    let invariants = invariants.join("\n");
    let mut text = format!(
        "# Chaos suite

For each fault below, a flash sale through the REST gateway with the fault injected in the
middle of it; the platform heals, then every invariant is audited straight from the services'
databases, the broker and the public API.

```sh
./dev chaos          # the full suite; writes this file
./dev chaos --short  # four faults and a smaller sale; the last step of ./dev test
```

The platform is the {build} build started by `./dev up` as an instance of its own (state
`.dev-chaos`, ports +100, databases `*_chaos`) with a private Redis and a private RabbitMQ
node, so no fault touches anything else. Each fault gets a new event and new buyers: here
{places} seats in one tier, {buyers} buyers, {tickets} places per checkout. A checkout holds
the places (`POST /v1/events/{{id}}/holds:quantity`, a {ttl} s hold), orders them
(`POST /v1/orders`, with an idempotency key) and pays (`POST /v1/orders/{{id}}:pay`, a test
card). Checkouts start at a shared pace meant to sell out in about {seconds:.0} s; the fault is
injected {fault_at:.0} s in. Buyers behave like real clients: after a 409, 429, 502, 503, 504
or a failed connection they send the same request again (same idempotency keys) after
`Retry-After` (250 ms without one, at most 5 s); a sold-out answer ends a buyer; any other
refusal ends the checkout, and counts as a permanent error when the request had been sent
before.

Machine: {cores} cores, {memory} of memory, shared with the load generator; run on {date}.

## Results

{table}

## The faults

- `kill:<service>`: SIGKILL, 3 s, then `./dev up` starts it again (the restart is when that
  returns).
- `stop:<service>`: SIGSTOP for 12 s, longer than its callers' deadlines, then SIGCONT.
- `broker`: every connection closed, then the broker stopped for 3 s (`rabbitmqctl stop_app`,
  `start_app`).
- `redis-flush`: `FLUSHALL` on the instance's Redis: every hold and seat map gone.
- `pg-terminate:<service>`: every connection to its database terminated, every 200 ms for 3 s.
- `cut:payments`: the link from the services to payments cut for 5 s (open connections closed,
  new ones refused) by the suite's own proxy.

## The columns

- answers: every HTTP answer buyers got, by status, per step (`err`: no answer, the connection
  failed).
- checkout p99 during fault: of the checkouts started between the injection and 3 s after the
  restart (or the fault's end), from the hold to the payment, retries included.
- restart → half rate: from the restart to the first moment the checkouts completed within one
  second reach half their rate before the fault (from 2 s in to the injection); \"—\" when the
  sale sold out first.
- longest stall: the longest time without a completed checkout, from the first to the last (to
  the end of a sale that did not sell out), and the longest part of such a time after the
  restart (or the fault's end): a freeze of a service the sale needs stalls it for as long as
  the freeze lasts, and the aim is on what is left after it.
- permanent errors on retry: requests sent again after a retryable answer, then refused for
  good.
- audit: the invariants below, checked once every hold and unpaid order has timed out (the hold
  TTL and 5 s after the last hold); what settles eventually (expiry, events, relays) is looked
  at again for up to {eventual} s. ✓ when all hold, else the numbers of those broken.

## The invariants

{invariants}

## Aims

Every audit passes and no retried request is refused for good: either fails the run. The
checkouts are back at half their rate within {half_rate} s of the restart, and no stall lasts
over {stall} s after it: aims, marked ✓ or ✗.
"
    );
    let broken: Vec<&Row> = rows.iter().filter(|r| r.failed()).collect();
    if !broken.is_empty() {
        let mut lines = vec![String::new(), "## What failed".to_string()];
        for row in broken {
            lines.extend([String::new(), format!("`{}`:", row.fault()), String::new()]);
            match row {
                Row::Ran(outcome) => {
                    if let Err(error) = &outcome.window {
                        lines.push(format!("- the fault: {error}"));
                    }
                    for error in outcome.permanent.iter().take(SHOWN) {
                        lines.push(format!("- permanent error on retry: {error}"));
                    }
                    for line in outcome.audit.lines() {
                        lines.push(format!("- {line}"));
                    }
                }
                Row::Failed { error, .. } => lines.push(format!("- the run failed: {error}")),
            }
        }
        lines.push(String::new());
        text.push_str(&lines.join("\n"));
    }
    text
}
