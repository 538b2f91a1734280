//! The [`Stage`] trait: the one thing a business step must say.

use crate::log::{Message, Record};
use async_trait::async_trait;
use std::time::Duration;

/// What a stage made of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Pass the order on: append these messages.
    Emit(Vec<Message>),
    /// A business refusal: append this message (to the rejection topic) after compensating.
    Reject(Message),
    /// Nothing to append (a projector, or a duplicate that was already handled).
    Nothing,
}

/// Whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A transient failure (a dependency down, a timeout): retry with backoff.
    Retryable,
    /// Retrying cannot help (undecodable input, a bug): dead-letter at once.
    Permanent,
    /// A dependency of the stage (a store, the ledger) is down: the record is fine, so it is
    /// retried without limit, holding its partition, until the dependency is back or the
    /// process stops; it is never dead-lettered for this.
    Unavailable,
}

/// A technical failure of a stage, classified for the runner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct StageError {
    /// Retryable, permanent or unavailable.
    pub kind: ErrorKind,
    /// What went wrong, for logs and dead-letter headers.
    pub message: String,
}

impl StageError {
    /// A transient failure.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Retryable,
            message: message.into(),
        }
    }

    /// A dependency is down; wait for it rather than give up on the record.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Unavailable,
            message: message.into(),
        }
    }

    /// A failure that retrying cannot fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            message: message.into(),
        }
    }
}

/// One step of the pipeline. The runner owns consuming, retries, dead letters and commits; a
/// stage only turns a record into an outcome, and must make any side effect idempotent, since
/// a record can be delivered more than once.
#[async_trait]
pub trait Stage: Send + Sync + 'static {
    /// Name used for the consumer group, metrics and dead-letter headers.
    fn name(&self) -> &str;

    /// Processes one record. `attempt` starts at 1.
    async fn process(&self, record: &Record, attempt: u32) -> Result<Outcome, StageError>;

    /// Makes durable whatever [`process`](Self::process) kept in memory. The runner calls it
    /// before every commit of the stage's position, so a stage that buffers its writes (the
    /// projector) never has its records committed ahead of them. Most stages keep nothing.
    async fn flush(&self) -> Result<(), StageError> {
        Ok(())
    }

    /// How long the runner may leave the stage's position uncommitted after batches that
    /// appended nothing, so a stage that buffers its writes flushes once for many batches.
    /// Zero (the default) commits after every batch.
    fn commit_interval(&self) -> Duration {
        Duration::ZERO
    }
}
