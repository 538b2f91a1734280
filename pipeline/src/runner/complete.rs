//! How the runner completes a batch: its outputs appended and its offsets committed together,
//! or, on a log that sends ahead, the outputs sent at once and the offsets committed in batch
//! order.

use super::{Pending, Runner, sleep_or_shutdown};
use crate::log::{Committer, LogError};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a completion in flight ended.
pub(super) enum Sent {
    /// Outputs appended and offsets committed together (false: shutdown interrupted it).
    Whole(bool),
    /// The outputs are durable; the offsets are the runner's to commit, in batch order.
    Ahead { batch: Pending, started: Instant },
}

/// The oldest completion in flight (the caller knows there is one).
pub(super) async fn oldest(inflight: &mut FuturesOrdered<BoxFuture<'_, Sent>>) -> Sent {
    inflight.next().await.unwrap_or(Sent::Whole(true))
}

impl Runner {
    /// Appends a batch's outputs and commits its offsets together, retrying until it works;
    /// false if shutdown came first (nothing new is committed then).
    pub(super) async fn complete(
        &self,
        committer: Arc<dyn Committer>,
        batch: Pending,
        shutdown: CancellationToken,
    ) -> Sent {
        Sent::Whole(self.complete_whole(committer, batch, shutdown).await)
    }

    /// [`complete`](Self::complete)'s retries.
    pub(super) async fn complete_whole(
        &self,
        committer: Arc<dyn Committer>,
        batch: Pending,
        shutdown: CancellationToken,
    ) -> bool {
        let started = Instant::now();
        let done = self
            .until_done("Commit", &shutdown, || {
                committer.complete(batch.outputs.clone(), batch.offsets.clone())
            })
            .await;
        if done {
            self.record_completed(started, &batch);
        }
        done
    }

    /// Sends a batch's outputs ahead of its offsets ([`Committer::sends_ahead`]), retrying
    /// until it works; [`finish`](Self::finish) commits the offsets in batch order.
    pub(super) async fn send_ahead(
        &self,
        committer: Arc<dyn Committer>,
        batch: Pending,
        shutdown: CancellationToken,
    ) -> Sent {
        let started = Instant::now();
        if !self
            .until_done("Send", &shutdown, || committer.send(&batch.outputs))
            .await
        {
            return Sent::Whole(false);
        }
        let batch = Pending {
            outputs: Vec::new(),
            ..batch
        };
        Sent::Ahead { batch, started }
    }

    /// Ends the oldest completion: a batch sent ahead has its offsets committed now, retrying
    /// until it works; false if shutdown came first.
    pub(super) async fn finish(
        &self,
        committer: &dyn Committer,
        sent: Sent,
        shutdown: &CancellationToken,
    ) -> bool {
        let (batch, started) = match sent {
            Sent::Whole(done) => return done,
            Sent::Ahead { batch, started } => (batch, started),
        };
        let done = self
            .until_done("Commit", shutdown, || {
                committer.commit(batch.offsets.clone())
            })
            .await;
        if done {
            self.record_completed(started, &batch);
        }
        done
    }

    /// Tries `once` until it works, backing off between tries (a failure hands nothing out
    /// again, so the same batch is always the one retried); false if shutdown came first.
    async fn until_done<F, Fut>(
        &self,
        what: &str,
        shutdown: &CancellationToken,
        mut once: F,
    ) -> bool
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), LogError>>,
    {
        let mut attempt = 0;
        loop {
            match once().await {
                Ok(()) => return true,
                Err(error) => {
                    attempt += 1;
                    tracing::warn!(stage = self.stage.name(), %error, attempt, "{what} failed, retrying");
                    if sleep_or_shutdown(self.policy.backoff(attempt), shutdown).await {
                        return false;
                    }
                }
            }
        }
    }

    /// The commit and batch times of a completed batch.
    fn record_completed(&self, started: Instant, batch: &Pending) {
        self.metrics.commit_seconds.record(started.elapsed());
        if let Some(since) = batch.since {
            self.metrics.batch_seconds.record(since.elapsed());
        }
    }
}
