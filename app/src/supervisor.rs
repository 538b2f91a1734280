//! The one place background tasks run: a tokio-util [`TaskTracker`] to join them and a
//! [`CancellationToken`] to stop them. Long-running parts (stage runners, the HTTP server) are
//! [`spawn`](Supervisor::spawn)ed; periodic upkeep (retention, purges, sweeps, gauges) is a
//! [`Chore`] run [`every`](Supervisor::every) period. A part that ends on its own while the
//! process is serving is a failure: the supervisor records why and stops everything, so the
//! process exits non-zero and its own supervisor (systemd, Kubernetes) restarts it.

use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A piece of upkeep a backend needs while the process runs: periodic, or a loop of its own.
pub struct Chore {
    /// Short name for logs (`log-retention`).
    pub name: &'static str,
    /// Time between the end of one run and the start of the next.
    pub every: Duration,
    /// One run. An `Err` means the backend cannot go on (the process stops); passing
    /// problems are logged by the chore itself and retried at the next run.
    pub run: Box<dyn FnMut() -> BoxFuture<'static, Result<(), String>> + Send>,
    /// A loop that runs until shutdown instead (a client's connection task); it ending by
    /// itself is a failure.
    pub task: Option<BoxFuture<'static, ()>>,
}

impl Chore {
    /// A chore from a closure that makes one run's future.
    pub fn new<F, Fut>(name: &'static str, every: Duration, mut f: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self {
            name,
            every,
            run: Box::new(move || Box::pin(f())),
            task: None,
        }
    }

    /// A chore that is one long loop, run until shutdown.
    pub fn task(name: &'static str, task: BoxFuture<'static, ()>) -> Self {
        Self {
            name,
            every: Duration::ZERO,
            run: Box::new(|| Box::pin(async { Ok(()) })),
            task: Some(task),
        }
    }
}

/// Spawns, stops and joins every background task of a process.
#[derive(Clone, Default)]
pub struct Supervisor {
    tracker: TaskTracker,
    token: CancellationToken,
    failure: Arc<Mutex<Option<String>>>,
}

impl Supervisor {
    /// A supervisor with no tasks.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token every task watches; cancelled at shutdown.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Runs `task` until shutdown. If it ends first (with an error or not), the process is
    /// failing: the reason is kept and every other task is stopped.
    pub fn spawn<F, E>(&self, name: impl Into<String>, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        let name = name.into();
        let this = self.clone();
        self.tracker.spawn(async move {
            // A panic must stop the process like any other early end, not vanish with its task.
            let ended = AssertUnwindSafe(task).catch_unwind().await;
            let reason = match ended {
                Err(_) => format!("{name} panicked"),
                Ok(result) if this.token.is_cancelled() => {
                    if let Err(e) = result {
                        tracing::error!(task = %name, error = %e, "A task failed while stopping");
                    }
                    return;
                }
                Ok(Ok(())) => format!("{name} stopped unexpectedly"),
                Ok(Err(e)) => format!("{name} stopped: {e}"),
            };
            this.fail(reason);
        });
    }

    /// Runs `chore` at once and then every `chore.every` until shutdown (a [`Chore::task`] runs
    /// its loop until shutdown; the loop ending by itself stops the process). A run that has started
    /// finishes (within
    /// the shutdown grace): a sweep is not cut off between its append and its bookkeeping.
    pub fn every(&self, mut chore: Chore) {
        if let Some(task) = chore.task.take() {
            let token = self.token();
            self.spawn(chore.name, async move {
                tokio::select! {
                    () = task => Err("its loop ended"),
                    () = token.cancelled() => Ok(()),
                }
            });
            return;
        }
        let this = self.clone();
        self.tracker.spawn(async move {
            // The first run is at once: gauges have values from the first scrape on.
            loop {
                if this.token.is_cancelled() {
                    return;
                }
                match AssertUnwindSafe((chore.run)()).catch_unwind().await {
                    Ok(Ok(())) => {}
                    Ok(Err(reason)) => {
                        this.fail(format!("{}: {reason}", chore.name));
                        return;
                    }
                    Err(_) => {
                        this.fail(format!("{} panicked", chore.name));
                        return;
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(chore.every) => {}
                    () = this.token.cancelled() => return,
                }
            }
        });
    }

    /// Stops the process because of `reason` (the first reason given is kept).
    pub fn fail(&self, reason: String) {
        tracing::error!(reason = %reason, "Shutting down after a failure");
        self.failure.lock().get_or_insert(reason);
        self.token.cancel();
    }

    /// Why the process is stopping, if a part failed.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }

    /// Resolves when shutdown has begun (a signal, or a failure).
    pub async fn stopping(&self) {
        self.token.cancelled().await;
    }

    /// Cancels every task and waits up to `within` for all of them to end; false if some did
    /// not (their uncommitted records are redelivered after a restart).
    pub async fn shutdown(&self, within: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        tokio::time::timeout(within, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// Resolves at SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "Cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "Cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn chores_run_until_shutdown_and_everything_is_joined() {
        let supervisor = Supervisor::new();
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        supervisor.every(Chore::new("count", Duration::from_millis(5), move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }));
        let token = supervisor.token();
        supervisor.spawn("waiter", async move {
            token.cancelled().await;
            Ok::<(), String>(())
        });
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(supervisor.shutdown(Duration::from_secs(1)).await);
        let seen = runs.load(Ordering::SeqCst);
        assert!(seen >= 2, "the chore ran {seen} times");
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(runs.load(Ordering::SeqCst), seen, "no run after shutdown");
        assert_eq!(supervisor.failure(), None);
    }

    #[tokio::test]
    async fn a_task_ending_early_or_a_failed_chore_stops_the_process() {
        let supervisor = Supervisor::new();
        supervisor.spawn("stage validate", async { Err::<(), _>("log gone") });
        tokio::time::timeout(Duration::from_secs(1), supervisor.stopping())
            .await
            .expect("stopping");
        assert_eq!(
            supervisor.failure().as_deref(),
            Some("stage validate stopped: log gone")
        );
        let chores = Supervisor::new();
        chores.every(Chore::new(
            "ledger-health",
            Duration::from_millis(1),
            || async { Err("storage failure".to_owned()) },
        ));
        tokio::time::timeout(Duration::from_secs(1), chores.stopping())
            .await
            .expect("stopping");
        assert_eq!(
            chores.failure().as_deref(),
            Some("ledger-health: storage failure")
        );
        assert!(chores.shutdown(Duration::from_secs(1)).await);
    }

    #[tokio::test]
    async fn a_panicking_task_or_chore_stops_the_process() {
        let supervisor = Supervisor::new();
        supervisor.spawn("stage project", async {
            if supervisor_test_flag() {
                panic!("a bug in flush");
            }
            Ok::<(), String>(())
        });
        tokio::time::timeout(Duration::from_secs(1), supervisor.stopping())
            .await
            .expect("stopping");
        assert_eq!(
            supervisor.failure().as_deref(),
            Some("stage project panicked")
        );
        let chores = Supervisor::new();
        chores.every(Chore::new("sweeper", Duration::from_millis(1), || async {
            if supervisor_test_flag() {
                panic!("a bug in a sweep");
            }
            Ok(())
        }));
        tokio::time::timeout(Duration::from_secs(1), chores.stopping())
            .await
            .expect("stopping");
        assert_eq!(chores.failure().as_deref(), Some("sweeper panicked"));
        assert!(chores.shutdown(Duration::from_secs(1)).await);
    }

    #[tokio::test]
    async fn a_task_chore_runs_until_shutdown_and_its_end_is_a_failure() {
        let supervisor = Supervisor::new();
        supervisor.every(Chore::task("feed", Box::pin(std::future::pending())));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            supervisor.shutdown(Duration::from_secs(1)).await,
            "cancelled and joined"
        );
        assert_eq!(supervisor.failure(), None);
        let ended = Supervisor::new();
        ended.every(Chore::task("feed", Box::pin(async {})));
        tokio::time::timeout(Duration::from_secs(1), ended.stopping())
            .await
            .expect("stopping");
        assert_eq!(
            ended.failure().as_deref(),
            Some("feed stopped: its loop ended")
        );
    }

    /// True, in a way the compiler cannot see through (so the code after a panic compiles).
    fn supervisor_test_flag() -> bool {
        std::hint::black_box(true)
    }

    #[tokio::test]
    async fn a_started_chore_run_finishes_at_shutdown() {
        let supervisor = Supervisor::new();
        let finished = Arc::new(AtomicU32::new(0));
        let seen = finished.clone();
        supervisor.every(Chore::new("slow", Duration::from_millis(1), move || {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                seen.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(supervisor.shutdown(Duration::from_secs(2)).await);
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "the run in progress completed"
        );
    }
}
