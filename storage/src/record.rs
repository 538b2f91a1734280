//! What travels on a log: [`Message`]s to append, [`Record`]s read back, their [`Headers`],
//! the committed [`Offsets`] of a consumer group, and the in-process [`Decoded`] copy.

use bytes::Bytes;
use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Message headers as name/value pairs, in order.
pub type Headers = Vec<(String, String)>;

/// The payload of a message as the process that wrote it already holds it, decoded. The
/// embedded log keeps it beside the bytes in its cache of recent records, so a stage in the same
/// process skips decoding what the previous stage just encoded; Kafka drops it. It never stands
/// in for the bytes: a record read from disk or from another process has none, and its reader
/// decodes the bytes, which always say the same thing.
#[derive(Clone)]
pub struct Decoded(Arc<dyn Any + Send + Sync>);

impl Decoded {
    /// Keeps `value` beside the bytes it was encoded to.
    pub fn new<T: Any + Send + Sync>(value: T) -> Self {
        Self(Arc::new(value))
    }

    /// The value, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Debug for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decoded(..)")
    }
}

/// A copy of the bytes' meaning adds nothing to a message's identity.
impl PartialEq for Decoded {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for Decoded {}

/// A message to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Destination topic.
    pub topic: String,
    /// Partitioning key (the order id): one key always lands in one partition.
    pub key: Bytes,
    /// Payload.
    pub value: Bytes,
    /// Headers.
    pub headers: Headers,
    /// The payload decoded, when the writer has it (see [`Decoded`]).
    pub decoded: Option<Decoded>,
}

impl Message {
    /// The value of a header, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// A record read from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Topic it was read from.
    pub topic: String,
    /// Partition within the topic.
    pub partition: u32,
    /// Offset within the partition.
    pub offset: u64,
    /// Partitioning key.
    pub key: Bytes,
    /// Payload.
    pub value: Bytes,
    /// Headers.
    pub headers: Headers,
    /// The payload decoded, when the writer was this process (see [`Decoded`]).
    pub decoded: Option<Decoded>,
}

impl Record {
    /// The partition it was read from.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(&*self.topic, self.partition)
    }

    /// The value of a header, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

fn find_header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// One partition of one topic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition within it.
    pub partition: u32,
}

impl TopicPartition {
    /// `partition` of `topic`.
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Where an appended message landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// The partition its key maps to.
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
}

/// Positions to commit: for each partition, the next offset to read.
pub type Offsets = BTreeMap<TopicPartition, u64>;
