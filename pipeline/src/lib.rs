//! The log and the machinery that moves orders through it, with no business types.
//!
//! - [`log`]: the [`Log`] trait (durable, partitioned, keyed appends; consumer groups with
//!   committed offsets) and the records that travel on it.
//! - [`segment`]: the [`Log`] with no server: `orderflow-storage`'s segment log behind the trait.
//! - [`kafka`]: the [`Log`] on Kafka (rdkafka): idempotent producer, consumer groups, offsets
//!   stored after the outputs land, and an opt-in exactly-once mode with transactions.
//! - [`stage`]: the [`Stage`] trait: one record in, an [`Outcome`] or a classified [`StageError`] out.
//! - [`runner`]: consumes a stage's topics, calls the stage, retries with backoff and jitter,
//!   dead-letters to `T.dlq`, and commits offsets only together with the outputs.
//! - [`dlq`]: dead letters: the record written to `T.dlq`, listing them, replaying them.

pub mod dlq;
pub mod kafka;
pub mod log;
pub mod runner;
pub mod segment;
pub mod stage;

pub use dlq::dlq_topic;
pub use kafka::{Compression, KafkaConfig, KafkaLog};
pub use log::{
    Consumer, Decoded, Headers, Log, LogError, Message, Offsets, Position, Record, TopicPartition,
    header,
};
pub use orderflow_storage::segment::{SegmentLog, SegmentLogOptions};
pub use runner::{RetryPolicy, Runner};
pub use stage::{ErrorKind, Outcome, Stage, StageError};
