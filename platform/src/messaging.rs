//! Domain events on RabbitMQ: a transactional outbox, its relay, and idempotent consumers.
//!
//! - A service writes its events with [`enqueue`] inside the transaction that changes its state,
//!   so an event exists exactly when the change does.
//! - The [`Relay`] publishes the outbox in id order to the durable topic exchange with publisher
//!   confirms and deletes only what the broker confirmed; a failure leaves the rows for the next
//!   try, so every event is published at least once. Writers lock the aggregate's row before they
//!   enqueue, so for one aggregate id order is commit order; the id travels as the envelope's
//!   `aggregate_sequence`.
//! - A [`Consumer`] owns a durable quorum queue per service with manual acks and bounded
//!   prefetch. It records each handled event id in `processed_messages` in the handler's own
//!   transaction, so a redelivery has no second effect; a message that keeps failing is
//!   dead-lettered after `max_deliveries`. Both sides reconnect after the broker goes away.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use futures::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use prost::Message;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
pub use ticketing_proto::{DomainEvent, ticketing::events::v1::Envelope};
// For `event_set!` in crates that do not name anyhow themselves.
#[doc(hidden)]
pub use anyhow as __anyhow;
use tokio::sync::Notify;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    ApiResult,
    background::Stop,
    config::{ConfigError, duration_secs, serialize_secret},
    db::PgPool,
    time::to_timestamp,
};

/// The outbox and inbox tables; run with the service's own migrations.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The header that carries W3C trace context across the broker.
pub const TRACEPARENT: &str = "traceparent";

pub mod schema {
    diesel::table! {
        outbox (id) {
            id -> Int8,
            event_id -> Uuid,
            event_type -> Text,
            aggregate_type -> Text,
            aggregate_id -> Text,
            occurred_at -> Timestamptz,
            payload -> Bytea,
            traceparent -> Nullable<Text>,
        }
    }

    diesel::table! {
        processed_messages (consumer, event_id) {
            consumer -> Text,
            event_id -> Uuid,
            event_type -> Text,
            processed_at -> Timestamptz,
        }
    }
}

use schema::{outbox, processed_messages};

/// Where and how events travel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessagingConfig {
    /// `amqp://user:password@host:port/vhost` (vhost `/` is `%2f`). Kept out of logs.
    #[serde(serialize_with = "serialize_secret")]
    pub url: SecretString,
    /// The durable topic exchange every service publishes to.
    pub exchange: String,
    /// Prepended to this service's queue names (tests isolate themselves with it).
    pub queue_prefix: String,
    /// Unacknowledged deliveries a consumer holds at once.
    pub prefetch: u16,
    /// Deliveries of one message before it goes to the dead-letter queue.
    pub max_deliveries: u32,
    /// Outbox rows published per relay round.
    pub relay_batch: i64,
    /// How often the relay looks for rows written by other processes.
    #[serde(with = "duration_secs")]
    pub relay_poll_interval: Duration,
    /// How long the relay, once woken, lets more commits join its batch: one transaction
    /// and one round of broker confirms for a burst of events instead of one each.
    #[serde(with = "duration_secs", default = "default_relay_linger")]
    pub relay_linger: Duration,
}

fn default_relay_linger() -> Duration {
    Duration::from_millis(5)
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from("amqp://guest:guest@127.0.0.1:5672/%2f"),
            exchange: "ticketing.events".into(),
            queue_prefix: String::new(),
            prefetch: 32,
            max_deliveries: 5,
            relay_batch: 200,
            relay_poll_interval: Duration::from_millis(500),
            relay_linger: default_relay_linger(),
        }
    }
}

impl MessagingConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let url = self.url.expose_secret();
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return Err(ConfigError::invalid(
                format!("{key}.url"),
                "must be an amqp:// URL",
            ));
        }
        if self.exchange.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.exchange"),
                "must not be empty",
            ));
        }
        if self.prefetch == 0 {
            return Err(ConfigError::invalid(
                format!("{key}.prefetch"),
                "must be at least 1",
            ));
        }
        if self.max_deliveries == 0 {
            return Err(ConfigError::invalid(
                format!("{key}.max_deliveries"),
                "must be at least 1",
            ));
        }
        if !(1..=10_000).contains(&self.relay_batch) {
            return Err(ConfigError::invalid(
                format!("{key}.relay_batch"),
                "must be 1 to 10000",
            ));
        }
        if self.relay_linger > Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                format!("{key}.relay_linger"),
                "must be at most 1 second",
            ));
        }
        if self.relay_poll_interval.is_zero() {
            return Err(ConfigError::invalid(
                format!("{key}.relay_poll_interval"),
                "must be above zero",
            ));
        }
        Ok(())
    }

    /// A queue name of this deployment.
    pub fn queue(&self, name: &str) -> String {
        format!("{}{name}", self.queue_prefix)
    }

    fn dead_letter_exchange(&self) -> String {
        format!("{}.dead-letter", self.exchange)
    }
}

/// One event to publish, written with [`enqueue`].
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub event_type: &'static str,
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub payload: Vec<u8>,
}

impl OutboxEvent {
    /// `message` about the aggregate `aggregate_id`, under the type and aggregate kind its
    /// message declares.
    pub fn of<M: DomainEvent>(aggregate_id: impl ToString, message: &M) -> Self {
        Self {
            event_type: M::TYPE,
            aggregate_type: M::AGGREGATE,
            aggregate_id: aggregate_id.to_string(),
            payload: message.encode_to_vec(),
        }
    }
}

/// Writes events to the outbox. Call it inside the transaction of the state change, after
/// locking the aggregate's row.
pub async fn enqueue(conn: &mut AsyncPgConnection, events: Vec<OutboxEvent>) -> ApiResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    // The trace of the call that made the change continues in every consumer.
    let traceparent = crate::telemetry::current_traceparent();
    let rows: Vec<_> = events
        .into_iter()
        .map(|e| {
            (
                outbox::event_id.eq(Uuid::now_v7()),
                outbox::event_type.eq(e.event_type),
                outbox::aggregate_type.eq(e.aggregate_type),
                outbox::aggregate_id.eq(e.aggregate_id),
                outbox::payload.eq(e.payload),
                outbox::traceparent.eq(traceparent.clone()),
            )
        })
        .collect();
    diesel::insert_into(outbox::table)
        .values(rows)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = outbox)]
struct OutboxRow {
    id: i64,
    event_id: Uuid,
    event_type: String,
    aggregate_type: String,
    aggregate_id: String,
    occurred_at: DateTime<Utc>,
    payload: Vec<u8>,
    traceparent: Option<String>,
}

async fn declare_exchange(channel: &Channel, name: &str, kind: ExchangeKind) -> lapin::Result<()> {
    channel
        .exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

/// Waits before reconnecting: 100 ms doubling up to 5 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_millis(100))
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
    }

    fn reset(&mut self) {
        self.0 = Duration::from_millis(100);
    }
}

/// Wakes the relay right after a commit that wrote events, instead of at its next poll.
#[derive(Debug, Clone, Default)]
pub struct OutboxSignal(Arc<Notify>);

impl OutboxSignal {
    pub fn notify(&self) {
        self.0.notify_one();
    }
}

/// Publishes a service's outbox. One per process; several replicas take turns (the batch's
/// rows are locked), so order per aggregate holds across replicas too.
pub struct Relay {
    pool: PgPool,
    config: MessagingConfig,
    producer: &'static str,
    signal: OutboxSignal,
}

impl Relay {
    pub fn new(pool: PgPool, config: MessagingConfig, producer: &'static str) -> Self {
        Self {
            pool,
            config,
            producer,
            signal: OutboxSignal::default(),
        }
    }

    pub fn signal(&self) -> OutboxSignal {
        self.signal.clone()
    }

    /// Runs until asked to stop, reconnecting to the broker whenever it goes away. Asked to stop,
    /// it first publishes what is left (the calls that drained before it wrote their events).
    pub async fn run(self, mut stop: Stop) {
        let mut backoff = Backoff::new();
        while !stop.is_requested() {
            match self.session(&mut backoff, &mut stop).await {
                Ok(()) => return,
                Err(error) => tracing::warn!(error = format!("{error:#}"), "outbox relay: reconnecting"),
            }
            tokio::select! {
                () = backoff.wait() => {}
                () = stop.requested() => {}
            }
        }
    }

    async fn session(&self, backoff: &mut Backoff, stop: &mut Stop) -> anyhow::Result<()> {
        let connection =
            Connection::connect(self.config.url.expose_secret(), ConnectionProperties::default())
                .await
                .context("connecting to the broker")?;
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        declare_exchange(&channel, &self.config.exchange, ExchangeKind::Topic).await?;
        tracing::info!(exchange = %self.config.exchange, "outbox relay connected");
        loop {
            let published = self.publish_batch(&channel).await?;
            backoff.reset();
            // Events waiting to leave: none after a short batch; counted after a full one.
            let backlog = if published < self.config.relay_batch as usize {
                0
            } else {
                let mut conn = self.pool.get().await.context("outbox relay: database")?;
                outbox_backlog(&mut conn).await.unwrap_or(0)
            };
            metrics::gauge!("outbox_backlog", "producer" => self.producer).set(backlog as f64);
            // A full batch may have more behind it; after a short one, rows come only with a
            // signal (one sent while publishing is kept, so none is missed) or from another
            // process, which the poll finds.
            if backlog == 0 {
                if stop.is_requested() {
                    // Rows written while that batch was under way are seen by the next one:
                    // stop only after a batch that found nothing (every writer stopped before).
                    if published == 0 {
                        return Ok(());
                    }
                    continue;
                }
                tokio::select! {
                    () = self.signal.0.notified() => {}
                    () = tokio::time::sleep(self.config.relay_poll_interval) => {}
                    // One more round publishes what was written until now; then it returns.
                    () = stop.requested() => continue,
                }
                if !self.config.relay_linger.is_zero() {
                    tokio::time::sleep(self.config.relay_linger).await;
                }
            }
        }
    }

    /// Publishes the oldest rows and deletes them once the broker confirmed every one. The rows
    /// stay locked meanwhile, so another replica waits instead of publishing them out of order.
    async fn publish_batch(&self, channel: &Channel) -> anyhow::Result<usize> {
        let mut conn = self.pool.get().await.context("outbox relay: database")?;
        let exchange = self.config.exchange.as_str();
        let producer = self.producer;
        let limit = self.config.relay_batch;
        conn.transaction::<_, anyhow::Error, _>(async |conn| {
            let rows: Vec<OutboxRow> = outbox::table
                .order(outbox::id)
                .limit(limit)
                .select(OutboxRow::as_select())
                .for_update()
                .load(conn)
                .await?;
            if rows.is_empty() {
                return Ok(0);
            }
            let mut confirms = Vec::with_capacity(rows.len());
            for row in &rows {
                let envelope = Envelope {
                    event_id: row.event_id.to_string(),
                    event_type: row.event_type.clone(),
                    occurred_at: Some(to_timestamp(row.occurred_at)),
                    aggregate_type: row.aggregate_type.clone(),
                    aggregate_id: row.aggregate_id.clone(),
                    aggregate_sequence: row.id,
                    producer: producer.to_string(),
                    payload: row.payload.clone(),
                };
                let mut headers = FieldTable::default();
                if let Some(traceparent) = &row.traceparent {
                    headers.insert(
                        TRACEPARENT.into(),
                        AMQPValue::LongString(LongString::from(traceparent.as_str())),
                    );
                }
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type(ShortString::from("application/x-protobuf"))
                    .with_message_id(ShortString::from(row.event_id.to_string()))
                    .with_type(ShortString::from(row.event_type.as_str()))
                    .with_app_id(ShortString::from(producer))
                    .with_timestamp(u64::try_from(row.occurred_at.timestamp()).unwrap_or(0))
                    .with_headers(headers);
                let confirm = channel
                    .basic_publish(
                        exchange.into(),
                        row.event_type.as_str().into(),
                        BasicPublishOptions::default(),
                        &envelope.encode_to_vec(),
                        properties,
                    )
                    .await?;
                confirms.push(confirm);
            }
            for confirm in confirms {
                if !confirm.await?.is_ack() {
                    bail!("the broker refused an event");
                }
            }
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            diesel::delete(outbox::table.filter(outbox::id.eq_any(&ids)))
                .execute(conn)
                .await?;
            metrics::counter!("outbox_published_total", "producer" => producer).increment(rows.len() as u64);
            Ok(rows.len())
        })
        .await
    }
}

/// Rows still waiting in the outbox (for readiness checks and tests).
pub async fn outbox_backlog(conn: &mut AsyncPgConnection) -> ApiResult<i64> {
    Ok(outbox::table.count().get_result(conn).await?)
}

/// The events a consumer handles, declared once with [`event_set!`](crate::event_set): its
/// queue is bound to [`EventSet::TYPES`] and each delivery is decoded into the set before its
/// handler sees it.
pub trait EventSet: Sized + Send + Sync + 'static {
    const TYPES: &'static [&'static str];
    /// The event `envelope` carries, or None when it is none of the set's.
    fn decode(envelope: &Envelope) -> anyhow::Result<Option<Self>>;
}

/// Declares an enum of the domain events a consumer handles, one variant per message, and its
/// [`EventSet`]: the binding list and the dispatch both come from this one declaration.
///
/// ```ignore
/// ticketing_platform::event_set! {
///     pub enum Heard {
///         PaymentSucceeded(events::PaymentSucceeded),
///         PaymentRefunded(events::PaymentRefunded),
///     }
/// }
/// ```
#[macro_export]
macro_rules! event_set {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident($message:ty)),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $($(#[$variant_meta])* $variant($message)),+
        }

        impl $crate::messaging::EventSet for $name {
            const TYPES: &'static [&'static str] =
                &[$(<$message as $crate::messaging::DomainEvent>::TYPE),+];

            fn decode(
                envelope: &$crate::messaging::Envelope,
            ) -> $crate::messaging::__anyhow::Result<::core::option::Option<Self>> {
                $(
                    if envelope.event_type == <$message as $crate::messaging::DomainEvent>::TYPE {
                        return $crate::messaging::payload::<$message>(envelope)
                            .map(|m| ::core::option::Option::Some(Self::$variant(m)));
                    }
                )+
                ::core::result::Result::Ok(::core::option::Option::None)
            }
        }
    };
}

/// What a consumer does with one event of its set, inside a transaction that also records the
/// event as handled. An error rolls both back and the event is delivered again; effects outside
/// the database must therefore be idempotent themselves.
pub trait Handler: Send + Sync + 'static {
    type Events: EventSet;

    fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &Self::Events,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// [`Handler::handle`] with the envelope the event came in (its id and time), for a handler
    /// that records those too. Inside the same transaction.
    fn handle_delivered(
        &self,
        conn: &mut AsyncPgConnection,
        event: &Self::Events,
        _envelope: &Envelope,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.handle(conn, event)
    }

    /// Whether the event can no longer have any effect, read before the handler's transaction
    /// (for state that never moves back, such as an order already paid): such an event is
    /// acknowledged without writing anything, as handling it would change nothing.
    fn settled(
        &self,
        _conn: &mut AsyncPgConnection,
        _event: &Self::Events,
    ) -> impl Future<Output = anyhow::Result<bool>> + Send {
        async { Ok(false) }
    }
}

/// A service's subscription: its queue and the event types bound to it.
pub struct Consumer<H> {
    pool: PgPool,
    config: MessagingConfig,
    /// Also the `consumer` column of `processed_messages`.
    name: String,
    handler: H,
    connected: Arc<Notify>,
}

impl<H: Handler> Consumer<H> {
    pub fn new(pool: PgPool, config: MessagingConfig, name: impl Into<String>, handler: H) -> Self {
        Self {
            pool,
            config,
            name: name.into(),
            handler,
            connected: Arc::new(Notify::new()),
        }
    }

    /// Signalled each time the queue is declared and consuming (tests wait for it).
    pub fn connected(&self) -> Arc<Notify> {
        self.connected.clone()
    }

    /// Runs until asked to stop, reconnecting whenever the broker goes away. Asked to stop, it
    /// finishes the event in hand and closes its channel, so that the broker hands what this
    /// process had prefetched to another consumer at once.
    pub async fn run(self, mut stop: Stop) {
        let mut backoff = Backoff::new();
        while !stop.is_requested() {
            match self.session(&mut backoff, &mut stop).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(consumer = %self.name, error = format!("{error:#}"), "consumer: reconnecting")
                }
            }
            tokio::select! {
                () = backoff.wait() => {}
                () = stop.requested() => {}
            }
        }
    }

    /// Declares the topology (idempotent): the exchange, a quorum queue bound to the event
    /// types with a delivery limit, and its dead-letter queue.
    pub async fn declare(&self, channel: &Channel) -> anyhow::Result<String> {
        let queue = self.config.queue(&self.name);
        let dead_letter_exchange = self.config.dead_letter_exchange();
        let dead_letter_queue = format!("{queue}.dead");
        declare_exchange(channel, &self.config.exchange, ExchangeKind::Topic).await?;
        declare_exchange(channel, &dead_letter_exchange, ExchangeKind::Direct).await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let mut dead_args = FieldTable::default();
        dead_args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        channel
            .queue_declare(dead_letter_queue.as_str().into(), durable, dead_args)
            .await?;
        channel
            .queue_bind(
                dead_letter_queue.as_str().into(),
                dead_letter_exchange.as_str().into(),
                queue.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(i32::try_from(self.config.max_deliveries).unwrap_or(i32::MAX)),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(dead_letter_exchange.as_str().into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(queue.as_str().into()),
        );
        channel
            .queue_declare(queue.as_str().into(), durable, args)
            .await?;
        for event_type in H::Events::TYPES {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    self.config.exchange.as_str().into(),
                    (*event_type).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(queue)
    }

    async fn session(&self, backoff: &mut Backoff, stop: &mut Stop) -> anyhow::Result<()> {
        let connection =
            Connection::connect(self.config.url.expose_secret(), ConnectionProperties::default())
                .await
                .context("connecting to the broker")?;
        let channel = connection.create_channel().await?;
        let queue = self.declare(&channel).await?;
        channel
            .basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await?;
        let mut deliveries = channel
            .basic_consume(
                queue.as_str().into(),
                format!("{}-{}", self.name, Uuid::new_v4().simple())
                    .as_str()
                    .into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(consumer = %self.name, %queue, "consuming");
        backoff.reset();
        self.connected.notify_waiters();
        loop {
            let delivery = tokio::select! {
                delivery = deliveries.next() => delivery,
                () = stop.requested() => {
                    let _ = channel.close(200, "stopping".into()).await;
                    let _ = connection.close(200, "stopping".into()).await;
                    return Ok(());
                }
            };
            let Some(delivery) = delivery else {
                bail!("the broker ended the subscription")
            };
            self.process(delivery?).await?;
        }
    }

    async fn process(&self, delivery: lapin::message::Delivery) -> anyhow::Result<()> {
        let Ok(envelope) = Envelope::decode(delivery.data.as_slice()) else {
            tracing::error!(consumer = %self.name, "undecodable message: dead-lettered");
            delivery
                .nack(BasicNackOptions {
                    requeue: false,
                    ..BasicNackOptions::default()
                })
                .await?;
            return Ok(());
        };
        let Ok(event_id) = Uuid::parse_str(&envelope.event_id) else {
            tracing::error!(consumer = %self.name, "message without an event id: dead-lettered");
            delivery
                .nack(BasicNackOptions {
                    requeue: false,
                    ..BasicNackOptions::default()
                })
                .await?;
            return Ok(());
        };
        let traceparent = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(TRACEPARENT))
            .and_then(|v| v.as_long_string().map(|s| s.to_string()));
        let span = tracing::info_span!(
            "consume",
            otel.name = %format!("{} process", envelope.event_type),
            otel.kind = "consumer",
            messaging.system = "rabbitmq",
            messaging.operation = "process",
            messaging.destination.name = %envelope.event_type,
            consumer = %self.name,
            event_type = %envelope.event_type,
            %event_id,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        // The consumer's work belongs to the trace of the change that published the event.
        crate::telemetry::continue_trace_from(&span, traceparent.as_deref());
        self.settle(delivery, event_id, &envelope).instrument(span).await
    }

    /// Handles a decoded delivery and acknowledges it, or returns it for a later try.
    async fn settle(
        &self,
        delivery: lapin::message::Delivery,
        event_id: Uuid,
        envelope: &Envelope,
    ) -> anyhow::Result<()> {
        match self.handle_once(event_id, envelope).await {
            Ok(first) => {
                if !first {
                    tracing::debug!("already handled: acknowledged again");
                }
                metrics::counter!("events_consumed_total", "consumer" => self.name.clone(), "event_type" => envelope.event_type.clone(), "duplicate" => (!first).to_string()).increment(1);
                delivery.ack(BasicAckOptions::default()).await?;
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "handling failed: delivered again later"
                );
                metrics::counter!("events_failed_total", "consumer" => self.name.clone(), "event_type" => envelope.event_type.clone()).increment(1);
                // Returned for another try after a pause that grows with each delivery (1 s, 4 s,
                // 16 s, 60 s: about 80 s over the delivery limit, enough for a peer to restart
                // or a charge lease to run out), in a task of its own so that the events behind
                // this one are not held up meanwhile.
                let pause = redelivery_pause(redeliveries(&delivery));
                tokio::spawn(async move {
                    tokio::time::sleep(pause).await;
                    let nacked = delivery
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        })
                        .await;
                    if let Err(error) = nacked {
                        tracing::warn!(%error, "returning a delivery failed; the broker redelivers it on reconnect");
                    }
                });
            }
        }
        Ok(())
    }

    /// Handles the event unless this consumer already did; Ok(false) for a duplicate.
    async fn handle_once(&self, event_id: Uuid, envelope: &Envelope) -> anyhow::Result<bool> {
        let Some(event) = H::Events::decode(envelope)? else {
            // Bound by an earlier version of this consumer, say: nothing here handles it.
            tracing::warn!(event_type = %envelope.event_type, "an event this consumer does not handle: acknowledged");
            return Ok(true);
        };
        let mut conn = self.pool.get().await.context("database")?;
        let name = self.name.as_str();
        let handler = &self.handler;
        if handler.settled(&mut conn, &event).await? {
            return Ok(true);
        }
        conn.transaction::<_, anyhow::Error, _>(async |conn| {
            let inserted = diesel::insert_into(processed_messages::table)
                .values((
                    processed_messages::consumer.eq(name),
                    processed_messages::event_id.eq(event_id),
                    processed_messages::event_type.eq(&envelope.event_type),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if inserted == 0 {
                return Ok(false);
            }
            handler.handle_delivered(conn, &event, envelope).await?;
            Ok(true)
        })
        .await
    }
}

/// How often a message was delivered before this delivery (quorum queues count them).
fn redeliveries(delivery: &lapin::message::Delivery) -> u32 {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned())
        .and_then(|v| match v {
            AMQPValue::LongLongInt(n) => u32::try_from(n).ok(),
            AMQPValue::LongInt(n) => u32::try_from(n).ok(),
            AMQPValue::ShortInt(n) => u32::try_from(n).ok(),
            AMQPValue::LongUInt(n) => Some(n),
            _ => None,
        })
        .unwrap_or(0)
}

/// The pause before a failed delivery goes back: 1 s, then four times longer each time, at most
/// a minute.
fn redelivery_pause(redeliveries: u32) -> Duration {
    Duration::from_secs(4u64.saturating_pow(redeliveries.min(3))).min(Duration::from_secs(60))
}

/// Decodes an envelope's payload as `T`, naming the event type on failure.
pub fn payload<T: Message + Default>(envelope: &Envelope) -> anyhow::Result<T> {
    T::decode(envelope.payload.as_slice()).with_context(|| format!("decoding {}", envelope.event_type))
}
