//! Test utilities shared by every service's integration tests. Tests talk to the machine's real
//! PostgreSQL, Redis and RabbitMQ and isolate themselves: a database of their own, a Redis key
//! prefix of their own. Faults are injected with [`TcpProxy`] between the service and a server,
//! never by stopping the shared server.

mod proxy;
mod smtp;
mod webhooks;

pub use proxy::{ProxyMode, TcpProxy};
pub use smtp::SmtpSink;
pub use ticketing_proto::ticketing::events::v1::Envelope;
pub use webhooks::{Received, WebhookReceiver, verify_independently};

/// PostgreSQL server URL without a database (`TEST_DATABASE_URL`, default the local server).
pub fn postgres_server_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Redis URL (`TEST_REDIS_URL`, default the local server).
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A unique name fragment for databases and key prefixes.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A Redis key prefix for one test; every key under it is deleted when the value is dropped.
pub struct TestRedisPrefix {
    pub prefix: String,
}

impl TestRedisPrefix {
    pub fn new(name: &str) -> Self {
        Self { prefix: unique(name) }
    }
}

impl Drop for TestRedisPrefix {
    fn drop(&mut self) {
        let pattern = format!("{}:*", self.prefix);
        // Drop runs inside the test's runtime; cleaning up needs its own.
        let handle = std::thread::spawn(move || -> redis::RedisResult<()> {
            let client = redis::Client::open(redis_url())?;
            let mut conn = client.get_connection()?;
            let keys: Vec<String> = redis::cmd("SCAN")
                .cursor_arg(0)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(10_000)
                .clone()
                .iter(&mut conn)?
                .collect::<Result<_, _>>()?;
            for chunk in keys.chunks(1_000) {
                redis::cmd("UNLINK").arg(chunk).exec(&mut conn)?;
            }
            Ok(())
        });
        if let Ok(Err(error)) = handle.join() {
            eprintln!("could not clean up test keys: {error}");
        }
    }
}

/// RabbitMQ URL (`TEST_AMQP_URL`, default the local broker).
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// An exchange and queue names of one test on the shared broker; its queues and exchanges are
/// deleted when the value is dropped.
pub struct TestBroker {
    pub config: ticketing_platform::messaging::MessagingConfig,
}

/// The consumers whose queues a test may have created.
const CONSUMERS: [&str; 5] = ["inventory", "orders", "payments", "notify", "reports"];

impl TestBroker {
    pub fn new() -> Self {
        Self::at(&amqp_url())
    }

    /// The same names on the broker at `url` (e.g. through a [`TcpProxy`]).
    pub fn at(url: &str) -> Self {
        let id = unique("t");
        let config = ticketing_platform::messaging::MessagingConfig {
            url: secrecy::SecretString::from(url.to_string()),
            exchange: format!("{id}.events"),
            queue_prefix: format!("{id}."),
            // Fast redelivery and a short poll keep tests quick.
            relay_poll_interval: std::time::Duration::from_millis(100),
            ..Default::default()
        };
        Self { config }
    }

    /// Subscribes to the test's exchange with `binding` (a topic pattern such as `event.*`)
    /// through a private queue that goes away with the tap. Declares the exchange as the
    /// services do, so the tap may start before any of them.
    pub async fn tap(&self, binding: &str) -> anyhow::Result<EventTap> {
        use lapin::{
            ExchangeKind,
            options::{BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
            types::FieldTable,
        };
        let connection =
            lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        let exchange = self.config.exchange.as_str();
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let queue = unique("tap");
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.into(),
                binding.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let deliveries = channel
            .basic_consume(
                queue.as_str().into(),
                queue.as_str().into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(EventTap {
            deliveries,
            _channel: channel,
            _connection: connection,
        })
    }

    /// Waits (up to 20 s) until `consumer`'s queue exists and someone consumes it: events
    /// published before that would never reach it.
    pub async fn wait_for_consumer(&self, consumer: &str) -> anyhow::Result<()> {
        use lapin::{options::QueueDeclareOptions, types::FieldTable};
        let queue = self.config.queue(consumer);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let connection =
            lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await?;
        let consumed = loop {
            // A passive declare of a missing queue closes its channel: a channel per look.
            let channel = connection.create_channel().await?;
            let declared = channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await;
            let _ = channel.close(200, "done".into()).await;
            if declared.is_ok_and(|q| q.consumer_count() > 0) {
                break true;
            }
            if std::time::Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        // Closed, not just dropped: a dropped connection stays open on the broker.
        let _ = connection.close(200, "done".into()).await;
        anyhow::ensure!(consumed, "no consumer on queue {queue} after 20 s");
        Ok(())
    }

    /// Publishes `envelope` to the test's exchange as a producer's relay does (a redelivery,
    /// or a copy under another event id).
    pub async fn publish(&self, envelope: &Envelope) -> anyhow::Result<()> {
        use lapin::{BasicProperties, options::BasicPublishOptions};
        use prost::Message;
        let connection =
            lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/x-protobuf".into())
            .with_message_id(envelope.event_id.as_str().into())
            .with_type(envelope.event_type.as_str().into());
        channel
            .basic_publish(
                self.config.exchange.as_str().into(),
                envelope.event_type.as_str().into(),
                BasicPublishOptions::default(),
                &envelope.encode_to_vec(),
                properties,
            )
            .await?
            .await?;
        let _ = connection.close(200, "done".into()).await;
        Ok(())
    }

    /// Another view of the same names through `url`, not cleaning up on drop.
    pub fn via(&self, url: &str) -> ticketing_platform::messaging::MessagingConfig {
        let mut config = self.config.clone();
        config.url = secrecy::SecretString::from(url.to_string());
        config
    }
}

impl Default for TestBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let config = self.config.clone();
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            // A broker that no longer answers (out of file descriptors, say) must fail the
            // clean-up, not hang the test that is ending.
            let cleanup = async {
                use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
                let connection =
                    lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await?;
                let channel = connection.create_channel().await?;
                for consumer in CONSUMERS {
                    let queue = config.queue(consumer);
                    for name in [queue.clone(), format!("{queue}.dead")] {
                        channel
                            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                            .await?;
                    }
                }
                for exchange in [
                    config.exchange.clone(),
                    format!("{}.dead-letter", config.exchange),
                ] {
                    channel
                        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                        .await?;
                }
                connection.close(200, "done".into()).await
            };
            let result: Result<Result<(), lapin::Error>, _> = rt
                .block_on(async { tokio::time::timeout(std::time::Duration::from_secs(30), cleanup).await });
            match result {
                Ok(Ok(())) => {}
                Ok(Err(error)) => eprintln!("could not clean up test broker names: {error}"),
                Err(_) => {
                    eprintln!("could not clean up test broker names: the broker did not answer in 30 s")
                }
            }
        });
        let _ = handle.join();
    }
}

/// The events published on a [`TestBroker`]'s exchange that match a binding, as they arrive.
pub struct EventTap {
    deliveries: lapin::Consumer,
    _channel: lapin::Channel,
    _connection: lapin::Connection,
}

impl EventTap {
    /// The next event's envelope, or an error if none arrives `within`.
    pub async fn next(&mut self, within: std::time::Duration) -> anyhow::Result<Envelope> {
        use futures::StreamExt;
        use prost::Message;
        let delivery = tokio::time::timeout(within, self.deliveries.next())
            .await
            .map_err(|_| anyhow::anyhow!("no event within {within:?}"))?
            .ok_or_else(|| anyhow::anyhow!("the tap's subscription ended"))??;
        Ok(Envelope::decode(delivery.data.as_slice())?)
    }

    /// Whether another event arrives `within` (for asserting that none does).
    pub async fn quiet_for(&mut self, within: std::time::Duration) -> anyhow::Result<()> {
        match self.next(within).await {
            Ok(envelope) => anyhow::bail!("unexpected event {}", envelope.event_type),
            Err(_) => Ok(()),
        }
    }
}

/// A database created for one test and dropped when the value is dropped.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create(prefix: &str) -> anyhow::Result<Self> {
        let name = unique(&format!("t_{prefix}"));
        let url = format!("{}/{name}", postgres_server_url());
        ticketing_platform::db::create_database_if_missing(&url).await?;
        Ok(Self { name, url })
    }

    /// The same database reached through another host:port (e.g. a [`TcpProxy`]).
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        format!("postgres://postgres@{addr}/{}", self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let url = self.url.clone();
        // Drop runs inside the test's runtime; dropping needs its own.
        let handle = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build()
                && let Err(error) = rt.block_on(ticketing_platform::db::drop_database(&url))
            {
                eprintln!("could not drop test database: {error:#}");
            }
        });
        let _ = handle.join();
    }
}
