//! The [`Log`] with no server: `orderflow-storage`'s segment log behind the trait. The engine
//! does the work; this adapter only names its operations in the trait's terms.

use crate::log::{Committer, Consumer, Log, LogError, Message, Offsets, Position, Record};
use async_trait::async_trait;
use orderflow_storage::segment::{
    GroupPartition, SegmentCommitter, SegmentConsumer, SegmentError, SegmentLog,
};
use std::sync::Arc;
use std::time::Duration;

impl From<SegmentError> for LogError {
    fn from(e: SegmentError) -> Self {
        match e {
            SegmentError::Unavailable(why) => LogError::Unavailable(why),
            SegmentError::Invalid(why) => LogError::Invalid(why),
            failed @ (SegmentError::Io { .. } | SegmentError::Legacy(_)) => {
                LogError::backend("the segment log", failed)
            }
        }
    }
}

#[async_trait]
impl Log for SegmentLog {
    async fn ensure_topics(&self, topics: &[String]) -> Result<(), LogError> {
        Ok(SegmentLog::ensure_topics(self, topics).await?)
    }

    async fn append(&self, messages: Vec<Message>) -> Result<Vec<Position>, LogError> {
        Ok(SegmentLog::append(self, messages).await?)
    }

    async fn consumer(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Consumer>, LogError> {
        Ok(Box::new(SegmentLog::consumer(self, group, topics).await?))
    }

    async fn read(&self, topic: &str, max: usize) -> Result<Vec<Record>, LogError> {
        Ok(SegmentLog::read(self, topic, max).await?)
    }

    async fn ready(&self) -> Result<(), LogError> {
        Ok(SegmentLog::ready(self).await?)
    }

    async fn backlog(&self, group: &str, topic: &str) -> Result<u64, LogError> {
        let lag = SegmentLog::lag(self)?;
        // A partition the group never committed on is behind by everything it keeps.
        Ok(self
            .kept_records()
            .into_iter()
            .filter(|(at, _)| at.topic == topic)
            .map(|(partition, kept)| {
                let at = GroupPartition {
                    group: group.to_owned(),
                    partition,
                };
                lag.get(&at).copied().unwrap_or(kept)
            })
            .sum())
    }
}

#[async_trait]
impl Consumer for SegmentConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, LogError> {
        Ok(SegmentConsumer::poll(self, max, wait).await?)
    }

    async fn complete(&mut self, outputs: Vec<Message>, offsets: Offsets) -> Result<(), LogError> {
        Ok(SegmentConsumer::complete(self, outputs, offsets).await?)
    }

    fn committer(&self) -> Arc<dyn Committer> {
        Arc::new(SegmentConsumer::committer(self))
    }
}

#[async_trait]
impl Committer for SegmentCommitter {
    async fn complete(&self, outputs: Vec<Message>, offsets: Offsets) -> Result<(), LogError> {
        Ok(SegmentCommitter::complete(self, outputs, &offsets).await?)
    }

    fn overlaps(&self) -> bool {
        false
    }
}
