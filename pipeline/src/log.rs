//! The [`Log`] trait: what every log backend (embedded, Kafka) provides.

use async_trait::async_trait;
use std::time::Duration;

/// Names of the headers the pipeline relies on.
pub mod header {
    /// `{order_id}:{stage}`: what makes a stage's side effect idempotent.
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
    /// W3C trace context of the request that created the order.
    pub const TRACEPARENT: &str = "traceparent";
    /// How many times the producing step had been attempted.
    pub const ATTEMPT: &str = "attempt";
    /// Dead letters: the stage that gave up.
    pub const DLQ_STAGE: &str = "dlq-stage";
    /// Dead letters: the last error.
    pub const DLQ_ERROR: &str = "dlq-error";
    /// Dead letters: attempts made.
    pub const DLQ_ATTEMPTS: &str = "dlq-attempts";
    /// Dead letters: the topic the record came from.
    pub const DLQ_SOURCE_TOPIC: &str = "dlq-source-topic";
    /// Dead letters: its partition.
    pub const DLQ_SOURCE_PARTITION: &str = "dlq-source-partition";
    /// Dead letters: its offset.
    pub const DLQ_SOURCE_OFFSET: &str = "dlq-source-offset";
    /// Replayed records: the dead letter they were put back from (`topic/partition/offset`).
    pub const REPLAYED_FROM: &str = "replayed-from";
    /// Replayed records: the `dlq replay` run that put them back.
    pub const REPLAY_RUN: &str = "replay-run";
    /// Replayed records: the one stage (consumer group) that should process the record again;
    /// the other groups reading the topic handled the original already and skip it.
    pub const REPLAY_FOR: &str = "replay-for";
}

pub use orderflow_storage::record::{
    Decoded, Headers, Message, Offsets, Position, Record, TopicPartition,
};

/// The cause of a log error, shared so the error stays cheap to clone.
pub type Cause = std::sync::Arc<dyn std::error::Error + Send + Sync>;

/// A failure of the log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// The log cannot take or serve data right now; retrying later may succeed.
    #[error("log unavailable: {0}")]
    Unavailable(String),
    /// The log's client or storage failed (`what` names the call); retrying later may succeed.
    #[error("log unavailable: {what}: {source}")]
    Backend {
        /// What was being done.
        what: String,
        /// The client's or the storage's error.
        #[source]
        source: Cause,
    },
    /// The request itself is wrong (unknown topic, bad configuration).
    #[error("log request invalid: {0}")]
    Invalid(String),
    /// The log's client refused the request or its configuration (`what` names the call).
    #[error("log request invalid: {what}: {source}")]
    Refused {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: Cause,
    },
}

impl LogError {
    /// A failed call that may pass later.
    pub fn backend(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Backend {
            what: what.into(),
            source: std::sync::Arc::new(source),
        }
    }

    /// A refused call that will not pass as it is.
    pub fn refused(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Refused {
            what: what.into(),
            source: std::sync::Arc::new(source),
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Backend { .. })
    }
}

/// A durable, partitioned, keyed log with consumer groups.
#[async_trait]
pub trait Log: Send + Sync + 'static {
    /// Creates the topics if they do not exist yet.
    async fn ensure_topics(&self, topics: &[String]) -> Result<(), LogError>;

    /// Appends messages; returns once every one of them is durable, with their
    /// (partition, offset) in the same order.
    async fn append(&self, messages: Vec<Message>) -> Result<Vec<Position>, LogError>;

    /// Joins consumer group `group` on `topics`, starting at the group's committed offsets.
    async fn consumer(&self, group: &str, topics: &[String])
    -> Result<Box<dyn Consumer>, LogError>;

    /// Reads up to `max` records of one topic from the start of each partition, without a
    /// consumer group (for `dlq list` and audits).
    async fn read(&self, topic: &str, max: usize) -> Result<Vec<Record>, LogError>;

    /// Whether the log can take appends now.
    async fn ready(&self) -> Result<(), LogError>;

    /// Records of `topic` that consumer group `group` has not committed yet, summed over the
    /// partitions: how far a stage is behind. The ingest refuses checkouts while the first
    /// stage's backlog is over its bound.
    async fn backlog(&self, group: &str, topic: &str) -> Result<u64, LogError>;
}

/// One member of a consumer group.
#[async_trait]
pub trait Consumer: Send {
    /// Returns up to `max` records in offset order per partition, waiting at most `wait` for
    /// the first one.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, LogError>;

    /// Appends `outputs`, then commits `offsets` only once they are durable. A consumer that
    /// fails here has committed nothing new, and will see the same records again.
    async fn complete(&mut self, outputs: Vec<Message>, offsets: Offsets) -> Result<(), LogError>;

    /// A handle that completes this member's batches without borrowing it, so the next batch
    /// can be polled and processed while one is being acknowledged.
    fn committer(&self) -> std::sync::Arc<dyn Committer>;

    /// Commits whatever `complete` left pending before the member leaves its group.
    async fn close(&mut self) {}
}

/// Completes one consumer's batches apart from the consumer (see [`Consumer::committer`]).
#[async_trait]
pub trait Committer: Send + Sync {
    /// As [`Consumer::complete`]: appends `outputs`, then commits `offsets` only once they are
    /// durable; a failure commits nothing new. Batches are completed one at a time, in the
    /// order they were read, and a failed one is repeated before any later one is started: a
    /// failure does not hand the batch's records out again.
    async fn complete(&self, outputs: Vec<Message>, offsets: Offsets) -> Result<(), LogError>;

    /// Whether the runner should poll and process beside a slow completion. A broker's
    /// acknowledgement is worth overlapping; a local group commit is not (measured: more,
    /// smaller batches cost CPU and latency on the embedded log).
    fn overlaps(&self) -> bool {
        true
    }

    /// How many batches may be on their way at once while the runner overlaps (1: each is
    /// completed whole before the next starts). Above 1 the runner calls [`send`](Self::send)
    /// for each batch as soon as it is ready, and [`commit`](Self::commit) for their offsets
    /// strictly in batch order, each after its own batch's send: a broker's acknowledgements
    /// then overlap instead of queueing one behind the other.
    fn sends_ahead(&self) -> usize {
        1
    }

    /// Sends a batch's outputs and returns once they are durable, committing nothing (only
    /// called when [`sends_ahead`](Self::sends_ahead) is above 1).
    async fn send(&self, _outputs: &[Message]) -> Result<(), LogError> {
        Err(LogError::Invalid(
            "this log sends outputs only together with their offsets".into(),
        ))
    }

    /// Commits the offsets of a batch whose outputs [`send`](Self::send) made durable (only
    /// called when [`sends_ahead`](Self::sends_ahead) is above 1).
    async fn commit(&self, _offsets: Offsets) -> Result<(), LogError> {
        Err(LogError::Invalid(
            "this log commits offsets only together with their outputs".into(),
        ))
    }
}
