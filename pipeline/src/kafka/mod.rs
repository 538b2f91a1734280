//! The [`Log`] on Kafka (rdkafka over librdkafka).
//!
//! - Appends go through one idempotent producer with `acks=all`; an append returns once the
//!   broker acknowledged every message, or fails within `message_timeout` so the API can say 503.
//! - A consumer joins its group (one per stage) and returns from [`Log::consumer`] only once the
//!   group gave it its partitions. Offsets are *stored* only after the batch's outputs are
//!   acknowledged, and the stored offsets are committed every second and on every partition
//!   revoke (the pattern of rdkafka's `at_least_once` example and vector's Kafka source).
//! - With `exactly_once`, each consumer owns a transactional producer: the outputs and the
//!   input offsets of a batch commit in one transaction (`send_offsets_to_transaction`), and
//!   consumers read committed records only.

mod backlog;
mod compression;
mod consumer;

pub use compression::Compression;

use crate::log::{
    Committer, Consumer, Headers, Log, LogError, Message, Offsets, Position, Record, TopicPartition,
};
use async_trait::async_trait;
use bytes::Bytes;
use consumer::{GroupContext, KafkaCommitter, KafkaConsumer, Transactions};
use futures::FutureExt;
use futures::StreamExt;
use futures::future::join_all;
use parking_lot::RwLock;
use rdkafka::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How a [`KafkaLog`] connects and what it creates.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// Partitions of each topic created at start.
    pub partitions: u32,
    /// Replicas of each topic created at start; `-1` takes the broker's default.
    pub replication_factor: i32,
    /// Outputs and input offsets of a batch commit together in a Kafka transaction.
    pub exactly_once: bool,
    /// How long an append may wait for the broker before it fails (the API then answers 503).
    pub message_timeout: Duration,
    /// A consumer that sends no heartbeat for this long loses its partitions to the others.
    pub session_timeout: Duration,
    /// Longest wait for a new consumer's first partition assignment.
    pub join_timeout: Duration,
    /// How long the producer gathers messages into one request (`linger.ms`).
    pub linger: Duration,
    /// How long a broker may hold a fetch that finds nothing new (`fetch.wait.max.ms`).
    pub fetch_wait: Duration,
    /// How the producer compresses its batches (`compression.type`).
    pub compression: Compression,
}

impl KafkaConfig {
    /// Settings for `kafka://HOST:PORT[,HOST:PORT…]` with the defaults for everything else.
    pub fn from_url(url: &str, partitions: u32) -> Result<Self, LogError> {
        let brokers = url
            .strip_prefix("kafka://")
            .ok_or_else(|| LogError::Invalid(format!("{url:?} is not a kafka:// URL")))?
            .trim_end_matches('/');
        let valid = !brokers.is_empty()
            && brokers.split(',').all(|b| {
                b.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                })
            });
        if !valid {
            return Err(LogError::Invalid(format!(
                "{url:?}: expected kafka://HOST:PORT[,HOST:PORT…]"
            )));
        }
        Ok(Self {
            brokers: brokers.to_owned(),
            partitions,
            replication_factor: -1,
            exactly_once: false,
            message_timeout: Duration::from_secs(5),
            session_timeout: Duration::from_secs(10),
            join_timeout: Duration::from_secs(60),
            linger: Duration::from_millis(5),
            fetch_wait: Duration::from_millis(20),
            compression: Compression::default(),
        })
    }

    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", "orderflow")
            .set("socket.keepalive.enable", "true");
        c
    }

    fn producer_config(&self) -> ClientConfig {
        let mut c = self.base();
        // The Java clients' partitioner, so a key lands where a JVM producer would put it.
        c.set("partitioner", "murmur2_random")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", self.linger.as_millis().to_string())
            .set("compression.type", self.compression.as_str())
            .set(
                "message.timeout.ms",
                self.message_timeout.as_millis().to_string(),
            );
        c
    }
}

fn unavailable(e: KafkaError) -> LogError {
    LogError::backend("kafka", e)
}

/// The idempotent producer every append goes through, replaced when it hits a fatal error.
struct SharedProducer {
    config: Arc<KafkaConfig>,
    current: RwLock<FutureProducer>,
}

impl SharedProducer {
    fn create(config: &KafkaConfig) -> Result<FutureProducer, LogError> {
        config
            .producer_config()
            .create()
            .map_err(|e| LogError::refused("kafka producer", e))
    }

    fn get(&self) -> FutureProducer {
        self.current.read().clone()
    }

    /// Appends on the current producer. An idempotent producer that the broker fenced (after
    /// message timeouts, a broker may refuse its epoch bump) can never send again: it is
    /// replaced, and the failed append reported as unavailable so the caller retries.
    async fn send(&self, messages: &[Message]) -> Result<Vec<Position>, LogError> {
        let producer = self.get();
        let result = send_all(&producer, messages, self.config.message_timeout).await;
        if let Err(e) = &result
            && (spends_producer(e) || producer.client().fatal_error().is_some())
        {
            let replaced = {
                let mut current = self.current.write();
                if current.client().native_ptr() == producer.client().native_ptr() {
                    tracing::warn!(error = %e, "The Kafka producer cannot send any more; replacing it");
                    Some(std::mem::replace(
                        &mut *current,
                        Self::create(&self.config)?,
                    ))
                } else {
                    None
                }
            };
            drop_blocking((replaced, producer)).await;
        }
        result.map_err(send_error)
    }
}

/// The order log on a Kafka cluster.
#[derive(Clone)]
pub struct KafkaLog {
    config: Arc<KafkaConfig>,
    producer: Arc<SharedProducer>,
    admin: Arc<AdminClient<DefaultClientContext>>,
    /// Offset readers by consumer group, for [`Log::backlog`] (made on first use, kept).
    backlog_readers: backlog::Readers,
}

impl KafkaLog {
    /// Creates the producer and admin clients; nothing is sent until first use.
    pub fn connect(config: KafkaConfig) -> Result<Self, LogError> {
        if config.partitions == 0 {
            return Err(LogError::Invalid("partitions must be at least 1".into()));
        }
        let producer = SharedProducer::create(&config)?;
        let admin: AdminClient<DefaultClientContext> = config
            .base()
            .create()
            .map_err(|e| LogError::refused("kafka admin client", e))?;
        let config = Arc::new(config);
        Ok(Self {
            producer: Arc::new(SharedProducer {
                config: Arc::clone(&config),
                current: RwLock::new(producer),
            }),
            config,
            admin: Arc::new(admin),
            backlog_readers: backlog::Readers::default(),
        })
    }

    /// The settings this log runs with.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    fn consumer_config(&self, group: &str) -> ClientConfig {
        let c = &self.config;
        let mut cc = c.base();
        cc.set("group.id", group)
            // Incremental rebalances: a member that joins or leaves moves only the partitions
            // that change hands; the others keep working instead of stopping for every join.
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed")
            .set(
                "session.timeout.ms",
                c.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (c.session_timeout.as_millis() / 3).max(100).to_string(),
            )
            // A fetch that finds nothing new is answered after at most this long; brokers that
            // do not wake a parked fetch on new data (tansu 0.6) would otherwise add up to the
            // default 500 ms at every stage.
            .set("fetch.wait.max.ms", c.fetch_wait.as_millis().to_string())
            .set("statistics.interval.ms", "5000");
        if c.exactly_once {
            cc.set("enable.auto.commit", "false");
        } else {
            // Committed every second, but only what `complete` stored after the outputs landed.
            cc.set("enable.auto.commit", "true")
                .set("auto.commit.interval.ms", "1000")
                .set("enable.auto.offset.store", "false");
        }
        cc
    }
}

/// Sends `messages` on `producer` and waits for every acknowledgement, in order.
async fn send_all(
    producer: &FutureProducer,
    messages: &[Message],
    queue_timeout: Duration,
) -> Result<Vec<Position>, KafkaError> {
    let sends = messages.iter().map(|m| {
        let mut headers = OwnedHeaders::new_with_capacity(m.headers.len());
        for (name, value) in &m.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        let record = FutureRecord::to(&m.topic)
            .key(&m.key[..])
            .payload(&m.value[..])
            .headers(headers);
        producer.send(record, queue_timeout)
    });
    let mut placed = Vec::with_capacity(messages.len());
    for result in join_all(sends).await {
        let delivery = result.map_err(|(e, _)| e)?;
        placed.push(Position {
            partition: u32::try_from(delivery.partition).unwrap_or_default(),
            offset: u64::try_from(delivery.offset).unwrap_or_default(),
        });
    }
    Ok(placed)
}

/// A failed send as the [`Log`] reports it.
fn send_error(e: KafkaError) -> LogError {
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize,
        ) => LogError::refused("kafka", e),
        _ => unavailable(e),
    }
}

/// How long one blocking transaction call (init, offsets, commit, abort) may take.
const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What librdkafka says about a failed transaction call.
struct TxnFlags {
    retriable: bool,
    fatal: bool,
}

fn txn_flags(e: &KafkaError) -> TxnFlags {
    match e {
        KafkaError::Transaction(rd) => TxnFlags {
            retriable: rd.is_retriable(),
            fatal: rd.is_fatal(),
        },
        _ => TxnFlags {
            retriable: false,
            fatal: false,
        },
    }
}

/// Errors that mean this consumer is no longer the group member it was.
fn is_membership_error(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::FencedInstanceId
        )
    )
}

/// Drops a librdkafka handle on a blocking thread: closing one waits for the broker.
async fn drop_blocking<T: Send + 'static>(handle: T) {
    let _ = tokio::task::spawn_blocking(move || drop(handle)).await;
}

/// Errors after which an idempotent producer's identity is spent.
fn spends_producer(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::InvalidProducerIdMapping
                | RDKafkaErrorCode::UnknownProducerId
                | RDKafkaErrorCode::OutOfOrderSequenceNumber
                | RDKafkaErrorCode::Fatal
        )
    )
}

#[async_trait]
impl Log for KafkaLog {
    async fn ensure_topics(&self, topics: &[String]) -> Result<(), LogError> {
        let partitions = i32::try_from(self.config.partitions)
            .map_err(|_| LogError::Invalid("too many partitions".into()))?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    partitions,
                    TopicReplication::Fixed(self.config.replication_factor),
                )
            })
            .collect();
        let options = AdminOptions::new()
            .request_timeout(Some(Duration::from_secs(30)))
            .operation_timeout(Some(Duration::from_secs(30)));
        let results = self
            .admin
            .create_topics(new.iter(), &options)
            .await
            .map_err(unavailable)?;
        for result in results {
            match result {
                Ok(topic) => tracing::info!(%topic, partitions, "Created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(LogError::Invalid(format!(
                        "cannot create topic {topic}: {code}"
                    )));
                }
            }
        }
        Ok(())
    }

    async fn append(&self, messages: Vec<Message>) -> Result<Vec<Position>, LogError> {
        self.producer.send(&messages).await
    }

    async fn consumer(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Consumer>, LogError> {
        let context = GroupContext {
            group: group.to_owned(),
            assigned: AtomicBool::new(false),
            exactly_once: self.config.exactly_once,
        };
        let consumer: StreamConsumer<GroupContext> = self
            .consumer_config(group)
            .create_with_context(context)
            .map_err(|e| LogError::refused("kafka consumer", e))?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        if let Err(e) = consumer.subscribe(&names) {
            drop_blocking(consumer).await;
            return Err(LogError::Invalid(format!(
                "cannot subscribe to {topics:?}: {e}"
            )));
        }
        let transactions = if self.config.exactly_once {
            match Transactions::start(&self.config, group).await {
                Ok(t) => Some(t),
                Err(e) => {
                    drop_blocking(consumer).await;
                    return Err(e);
                }
            }
        } else {
            None
        };
        let consumer = Arc::new(consumer);
        let mut member = KafkaConsumer {
            consumer: Arc::clone(&consumer),
            pending: VecDeque::new(),
            committer: Arc::new(KafkaCommitter {
                consumer,
                producer: Arc::clone(&self.producer),
                transactions: transactions.map(tokio::sync::Mutex::new),
                message_timeout: self.config.message_timeout,
            }),
            record_wait: metrics::histogram!(
                "orderflow_kafka_record_wait_seconds",
                "stage" => group.to_owned()
            ),
        };
        if let Err(e) = member.wait_for_assignment(self.config.join_timeout).await {
            drop_blocking(member).await;
            return Err(e);
        }
        Ok(Box::new(member))
    }

    async fn read(&self, topic: &str, max: usize) -> Result<Vec<Record>, LogError> {
        let mut config = self.config.base();
        config
            .set(
                "group.id",
                format!("orderflow-reader-{}", uuid::Uuid::now_v7()),
            )
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "20")
            .set("enable.partition.eof", "false");
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || read_topic(&config, &topic, max))
            .await
            .map_err(|e| LogError::backend("reader task failed", e))?
    }

    async fn ready(&self) -> Result<(), LogError> {
        let producer = self.producer.get();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(2))
                .map(|_| ())
                .map_err(unavailable)
        })
        .await
        .map_err(|e| LogError::backend("readiness task failed", e))?
    }

    async fn backlog(&self, group: &str, topic: &str) -> Result<u64, LogError> {
        self.group_backlog(group, topic).await
    }
}

/// How long a topic read by [`Log::read`] must stay quiet to count as read to its end.
const READ_QUIET: Duration = Duration::from_secs(1);
/// How long [`Log::read`] waits for the first record of a topic that has some.
const READ_FIRST_WAIT: Duration = Duration::from_secs(10);

/// Reads `topic` from the start of each partition until it stays quiet.
fn read_topic(config: &ClientConfig, topic: &str, max: usize) -> Result<Vec<Record>, LogError> {
    let consumer: BaseConsumer = config
        .create()
        .map_err(|e| LogError::refused("kafka reader", e))?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(unavailable)?;
    let Some(meta) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(LogError::Invalid(format!("unknown topic {topic}")));
    };
    if let Some(e) = meta.error() {
        return Err(LogError::Invalid(format!("topic {topic}: {e:?}")));
    }
    let mut assignment = TopicPartitionList::new();
    let mut any = false;
    for p in meta.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), timeout)
            .map_err(unavailable)?;
        if high > low {
            any = true;
            assignment
                .add_partition_offset(topic, p.id(), Offset::Offset(low))
                .map_err(unavailable)?;
        }
    }
    let mut records = Vec::new();
    if !any {
        return Ok(records);
    }
    consumer.assign(&assignment).map_err(unavailable)?;
    // Read until the topic stays quiet rather than up to the high watermarks: brokers differ
    // in how they count a multi-record batch (tansu 0.6 reports one past its first offset),
    // and transaction markers count but are never delivered.
    let mut idle_since = Instant::now();
    // The first fetch (offsets, leaders) takes a while: the quiet window starts with data.
    let quiet = |records: &Vec<Record>| {
        if records.is_empty() {
            READ_FIRST_WAIT
        } else {
            READ_QUIET
        }
    };
    while records.len() < max && idle_since.elapsed() < quiet(&records) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                idle_since = Instant::now();
                records.push(to_record(&m));
            }
            Some(Err(e)) => return Err(unavailable(e)),
            None => {}
        }
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    records.truncate(max);
    Ok(records)
}

fn to_record(m: &BorrowedMessage<'_>) -> Record {
    let headers: Headers = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Record {
        topic: m.topic().to_owned(),
        partition: u32::try_from(m.partition()).unwrap_or_default(),
        offset: u64::try_from(m.offset()).unwrap_or_default(),
        key: m.key().map(Bytes::copy_from_slice).unwrap_or_default(),
        value: m.payload().map(Bytes::copy_from_slice).unwrap_or_default(),
        headers,
        decoded: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let c = KafkaConfig::from_url("kafka://a:9092,b:9093", 6).expect("valid");
        assert_eq!(c.brokers, "a:9092,b:9093");
        for bad in [
            "kafka://",
            "kafka://host",
            "kafka://host:0",
            "kafka://:9092",
            "redis://h:1",
            "kafka://a:9092,",
        ] {
            assert!(KafkaConfig::from_url(bad, 6).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn the_producer_compresses_with_lz4_unless_told_otherwise() {
        let mut c = KafkaConfig::from_url("kafka://a:9092", 1).expect("valid");
        assert_eq!(c.producer_config().get("compression.type"), Some("lz4"));
        c.compression = Compression::None;
        assert_eq!(c.producer_config().get("compression.type"), Some("none"));
    }
}
