//! Mails per second through notify and a real SMTP server, against a running platform
//! (`PROFILE=release ./dev up`, whose aiosmtpd keeps each mail in `.dev/mail/new/`).
//!
//!     cargo run --release -p loadtest --bin mail-bench -- --mails 2000 --maildir .dev/mail
//!
//! Publishes `--mails` `user.registered` events (each a new user) to the platform's exchange at
//! once, as identity's relay would, and times until the welcome of every one is a file in the
//! Maildir: consuming, rendering and queueing each in its transaction, then sending them over
//! SMTP and recording each outcome.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use lapin::{BasicProperties, options::BasicPublishOptions};
use loadtest::arg;
use prost::Message;
use ticketing_proto::ticketing::events::v1::{Envelope, UserRegistered};
use uuid::Uuid;

/// How many of the run's mails (to `<run>-<n>@bench.example`) are in the Maildir.
fn recipients_arrived(maildir: &Path, run: &str, seen: &mut HashSet<PathBuf>) -> usize {
    let Ok(dir) = std::fs::read_dir(maildir.join("new")) else {
        return 0;
    };
    let tag = format!("X-RcptTo: {run}-");
    for entry in dir.flatten() {
        let path = entry.path();
        if seen.contains(&path) {
            continue;
        }
        if std::fs::read_to_string(&path).is_ok_and(|m| m.contains(&tag)) {
            seen.insert(path);
        }
    }
    seen.len()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mails: usize = arg("mails", 2000);
    let maildir = PathBuf::from(arg("maildir", ".dev/mail".to_string()));
    let amqp = arg("amqp", "amqp://guest:guest@127.0.0.1:5672/%2f".to_string());
    let exchange = arg("exchange", "ticketing.events".to_string());
    anyhow::ensure!(
        maildir.join("new").is_dir(),
        "{} is not a Maildir",
        maildir.display()
    );
    let run = format!("mb{}", &Uuid::new_v4().simple().to_string()[..8]);

    let connection = lapin::Connection::connect(&amqp, lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    let started = Instant::now();
    let mut confirms = Vec::with_capacity(mails);
    for n in 0..mails {
        let user = Uuid::now_v7();
        let payload = UserRegistered {
            user_id: user.to_string(),
            email: format!("{run}-{n}@bench.example"),
            display_name: format!("Bench {n}"),
        }
        .encode_to_vec();
        let event_id = Uuid::now_v7().to_string();
        let envelope = Envelope {
            event_id: event_id.clone(),
            event_type: "user.registered".into(),
            occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            aggregate_type: "user".into(),
            aggregate_id: user.to_string(),
            aggregate_sequence: 1,
            producer: "mail-bench".into(),
            payload,
        };
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(event_id.as_str().into())
            .with_type("user.registered".into());
        confirms.push(
            channel
                .basic_publish(
                    exchange.as_str().into(),
                    "user.registered".into(),
                    BasicPublishOptions::default(),
                    &envelope.encode_to_vec(),
                    properties,
                )
                .await?,
        );
    }
    for confirm in confirms {
        anyhow::ensure!(confirm.await?.is_ack(), "the broker refused an event");
    }
    let published = started.elapsed();
    println!(
        "published {mails} user.registered in {:.2} s",
        published.as_secs_f64()
    );

    let mut seen = HashSet::new();
    let mut last_report = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let arrived = recipients_arrived(&maildir, &run, &mut seen);
        if arrived >= mails {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {arrived} of {mails} mails after 10 minutes"
        );
        if last_report.elapsed() >= Duration::from_secs(2) {
            eprintln!(
                "  {arrived}/{mails} mails after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "{mails} welcome mails, event published to file in the Maildir: {took:.2} s, {:.0} mails/s",
        mails as f64 / took
    );
    Ok(())
}
