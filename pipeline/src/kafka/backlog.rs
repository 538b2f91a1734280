//! How far a consumer group is behind on a topic: its committed offsets (`OffsetFetch`) against
//! the partitions' high watermarks (`ListOffsets`), read by a client that never joins the group.

use super::{KafkaLog, unavailable};
use crate::log::LogError;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// One offset reader per consumer group, made on first use and kept: a reading every second
/// should not cost a new connection to the brokers.
pub(super) type Readers = Arc<Mutex<HashMap<String, Arc<BaseConsumer>>>>;

/// How long one backlog reading may take before it counts as failed.
const TIMEOUT: Duration = Duration::from_secs(2);

impl KafkaLog {
    /// [`crate::Log::backlog`] on Kafka: reading offsets does not join the group, so the
    /// stage's members are never rebalanced by it.
    pub(super) async fn group_backlog(&self, group: &str, topic: &str) -> Result<u64, LogError> {
        let known = self.backlog_readers.lock().get(group).cloned();
        let client = match known {
            Some(client) => client,
            None => {
                let mut config = self.config.base();
                config
                    .set("group.id", group)
                    .set("enable.auto.commit", "false");
                let client: Arc<BaseConsumer> = Arc::new(
                    config
                        .create()
                        .map_err(|e| LogError::refused("kafka backlog reader", e))?,
                );
                self.backlog_readers
                    .lock()
                    .insert(group.to_owned(), Arc::clone(&client));
                client
            }
        };
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || behind(&client, &topic))
            .await
            .map_err(|e| LogError::backend("backlog task failed", e))?
    }
}

/// Records of `topic` past the committed offsets of `client`'s group, over every partition. A
/// partition the group never committed counts from its low watermark.
fn behind(client: &BaseConsumer, topic: &str) -> Result<u64, LogError> {
    let metadata = client
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(unavailable)?;
    let Some(meta) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(LogError::Invalid(format!("unknown topic {topic}")));
    };
    let mut wanted = TopicPartitionList::new();
    for p in meta.partitions() {
        wanted.add_partition(topic, p.id());
    }
    let committed = client
        .committed_offsets(wanted, TIMEOUT)
        .map_err(unavailable)?;
    let mut total = 0u64;
    for p in meta.partitions() {
        let (low, high) = client
            .fetch_watermarks(topic, p.id(), TIMEOUT)
            .map_err(unavailable)?;
        let from = match committed.find_partition(topic, p.id()).map(|e| e.offset()) {
            Some(Offset::Offset(next)) => next.max(low),
            _ => low,
        };
        total += u64::try_from(high.saturating_sub(from)).unwrap_or(0);
    }
    Ok(total)
}
