//! The embedded storage engine: one [redb] database file behind a single group-commit writer.
//!
//! Every embedded adapter (the log in `orderflow-pipeline`, the stock ledger, idempotency keys
//! and the order store in `orderflow-stores`) writes through one [`Engine`]. Writes are closures
//! queued to a dedicated writer thread, which drains whatever is queued, applies it in one
//! transaction and commits it with one fsync: many concurrent writers share one flush (group
//! commit), and a writer's future resolves only once its change is durable. Writes apply in
//! FIFO order, but a write that fails is left out of its group and the others still commit: a
//! store whose writes depend on each other must chain them itself (the stock ledger does, with a
//! sequence number).
//!
//! Reads open a read transaction on the shared [`redb::Database`]; they see committed data only.

use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub use redb;

/// Most jobs applied in one transaction; bounds the latency of one commit.
const MAX_GROUP: usize = 8192;
/// Commits start at least this far apart. Each one writes the B-tree pages it changed and
/// fsyncs, and on the load-test machine an fsync alone costs about 80 µs of kernel CPU: under
/// load, the writes that arrive meanwhile share the next commit; when it is quiet a write is
/// committed at once.
const MIN_COMMIT_INTERVAL: Duration = Duration::from_millis(1);
/// Page cache of the database unless configured otherwise (redb's own default is 1 GiB).
pub const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// A failure of the embedded engine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The write itself failed (it panicked, or was not applied); it was not committed.
    #[error("embedded storage error: {0}")]
    Storage(String),
    /// redb reported an error; this write was not committed.
    #[error("embedded storage error: {source}")]
    Redb {
        /// redb's error.
        #[source]
        source: Arc<redb::Error>,
    },
    /// The database file or the writer thread could not be set up.
    #[error("embedded storage error: {what}: {source}")]
    Io {
        /// What was being done, naming the file.
        what: String,
        /// The operating system's error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The database file cannot be opened (in use by another process, damaged, …).
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The database file.
        path: std::path::PathBuf,
        /// redb's error.
        #[source]
        source: Arc<redb::DatabaseError>,
    },
    /// The writer thread has stopped (the engine is shutting down).
    #[error("embedded storage is closed")]
    Closed,
}

impl From<redb::Error> for EngineError {
    fn from(e: redb::Error) -> Self {
        Self::Redb {
            source: Arc::new(e),
        }
    }
}

impl EngineError {
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source: Arc::new(source),
        }
    }
}

trait Job: Send {
    /// Applies the write inside `txn`; may run more than once (see [`commit_group`]).
    fn apply(&mut self, txn: &WriteTransaction) -> Result<(), EngineError>;
    fn finish(self: Box<Self>, outcome: Result<(), EngineError>);
}

struct TypedJob<T, F, S> {
    work: F,
    output: Option<T>,
    settled: S,
    reply: oneshot::Sender<Result<T, EngineError>>,
}

impl<T, F, S> Job for TypedJob<T, F, S>
where
    T: Send,
    F: FnMut(&WriteTransaction) -> Result<T, redb::Error> + Send,
    S: FnOnce(&Result<T, EngineError>) + Send,
{
    fn apply(&mut self, txn: &WriteTransaction) -> Result<(), EngineError> {
        // A panicking write must not take the writer thread (and every later write) with it.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.work)(txn)));
        match result {
            Ok(Ok(output)) => {
                self.output = Some(output);
                Ok(())
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(EngineError::Storage("a write panicked".into())),
        }
    }

    fn finish(self: Box<Self>, outcome: Result<(), EngineError>) {
        let TypedJob {
            work,
            output,
            settled,
            reply,
        } = *self;
        // The closure goes before the caller hears back: it may hold the last engine handles
        // the caller is about to drop, and if those went on this thread the file would close
        // only after `drop` returned, so a reopen right after could find it still locked.
        drop(work);
        let result = match (outcome, output) {
            (Ok(()), Some(output)) => Ok(output),
            (Ok(()), None) => Err(EngineError::Storage("write was not applied".into())),
            (Err(e), _) => Err(e),
        };
        settled(&result);
        // The caller may have gone away (request cancelled); the write stands regardless.
        let _ = reply.send(result);
    }
}

/// A handle on the embedded database and its writer; cheap to clone. When the last handle is
/// dropped, the writer finishes what is queued and the database file is closed before `drop`
/// returns, so the same directory can be opened again at once.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

struct Shared {
    db: Arc<Database>,
    /// `None` only while dropping: taking it ends the writer's loop.
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// False once the writer thread has stopped.
    alive: Arc<AtomicBool>,
    /// True once [`Engine::close`] was called: new writes are refused.
    closed: AtomicBool,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(writer) = self.writer.take() {
            // The last handle can be dropped by a write closure on the writer thread itself;
            // that thread then ends on its own right after.
            if writer.thread().id() != std::thread::current().id() {
                let _ = writer.join();
            }
        }
    }
}

/// The database file an [`Engine`] keeps in its directory.
pub const DB_FILE: &str = "orderflow.redb";

impl Engine {
    /// Opens (or creates) the database at `dir/orderflow.redb` with the default page cache.
    pub fn open(dir: &Path) -> Result<Self, EngineError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the database at `dir/orderflow.redb` with a page cache of
    /// `cache_bytes`, and starts the writer thread.
    pub fn open_with_cache(dir: &Path, cache_bytes: usize) -> Result<Self, EngineError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            EngineError::io(format!("cannot create data directory {}", dir.display()), e)
        })?;
        let path = dir.join(DB_FILE);
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| EngineError::Open {
                path: path.clone(),
                source: Arc::new(e),
            })?;
        let db = Arc::new(db);
        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        let writer_db = Arc::clone(&db);
        let alive = Arc::new(AtomicBool::new(true));
        let writer_alive = Arc::clone(&alive);
        let writer = std::thread::Builder::new()
            .name("orderflow-writer".into())
            .spawn(move || {
                let _alive = AliveGuard(writer_alive);
                run_writer(&writer_db, &queue);
            })
            .map_err(|e| EngineError::io("cannot start the writer thread", e))?;
        tracing::info!(path = %path.display(), "Embedded storage opened");
        Ok(Self {
            shared: Arc::new(Shared {
                db,
                jobs: Some(jobs),
                writer: Some(writer),
                alive,
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// Queues a write at once and returns a future that resolves when it is durable.
    ///
    /// The closure runs on the writer thread inside a transaction shared with other writes; it
    /// must not block on anything but the transaction. Writes are applied in the order in which
    /// `submit` was called. When a write of the group fails, the group is applied again without
    /// it, so a closure may run several times and must only change the transaction it is given.
    pub fn submit<T, F>(
        &self,
        work: F,
    ) -> impl Future<Output = Result<T, EngineError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<T, redb::Error> + Send + 'static,
    {
        self.submit_then(work, |_| {})
    }

    /// [`submit`](Self::submit), and once the outcome is known, `settled` runs on the writer
    /// thread before the caller hears of it: bookkeeping that must follow a durable write even
    /// if the caller stops waiting (a cancelled request) goes there.
    pub fn submit_then<T, F, S>(
        &self,
        work: F,
        settled: S,
    ) -> impl Future<Output = Result<T, EngineError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<T, redb::Error> + Send + 'static,
        S: FnOnce(&Result<T, EngineError>) + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(TypedJob {
            work,
            output: None,
            settled,
            reply,
        });
        let queued = match &self.shared.jobs {
            Some(jobs) if !self.shared.closed.load(Ordering::SeqCst) => {
                jobs.send(job).map_err(|_| EngineError::Closed)
            }
            _ => Err(EngineError::Closed),
        };
        async move {
            queued?;
            answer.await.map_err(|_| EngineError::Closed)?
        }
    }

    /// Whether writes can be made: the engine is open and its writer thread is running.
    pub fn is_writable(&self) -> bool {
        !self.shared.closed.load(Ordering::SeqCst) && self.shared.alive.load(Ordering::SeqCst)
    }

    /// Refuses new writes from now on (writes already queued still complete). Used at shutdown,
    /// and by tests that need a log that cannot take writes.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
    }

    /// Runs a read against the latest committed state.
    pub fn read<T>(
        &self,
        work: impl FnOnce(&ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, EngineError> {
        let txn = self.shared.db.begin_read().map_err(redb::Error::from)?;
        Ok(work(&txn)?)
    }
}

/// Opens a table for reading; `None` if nothing was ever written to it (a fresh database has
/// no tables until the first write creates them).
pub fn open_existing<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    table: redb::TableDefinition<'static, K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, redb::Error> {
    match txn.open_table(table) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The next request for a group commit being gathered: waits for one until `not_before`, then
/// takes only what is already queued. `None` ends the group. Commits back to back so gather
/// what arrives until the interval since the last one is up: fewer, fuller fsyncs under load,
/// none delayed when quiet.
pub fn gather_next<T>(queue: &mpsc::Receiver<T>, not_before: Instant) -> Option<T> {
    loop {
        let wait = not_before.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            return queue.try_recv().ok();
        }
        match queue.recv_timeout(wait) {
            Ok(next) => return Some(next),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        }
    }
}

fn run_writer(db: &Database, queue: &mpsc::Receiver<Box<dyn Job>>) {
    let mut last_commit = Instant::now();
    while let Ok(first) = queue.recv() {
        let not_before = last_commit + MIN_COMMIT_INTERVAL;
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match gather_next(queue, not_before) {
                Some(job) => group.push(job),
                None => break,
            }
        }
        let started = Instant::now();
        last_commit = started;
        let outcomes = commit_group(db, &mut group);
        metrics::histogram!("orderflow_embedded_commit_seconds").record(started.elapsed());
        metrics::histogram!("orderflow_embedded_commit_group_size").record(group.len() as f64);
        for (job, outcome) in group.into_iter().zip(outcomes) {
            job.finish(outcome);
        }
    }
    tracing::debug!("Embedded writer stopped");
}

/// Commits the group in one transaction. A write that fails is left out and the rest of the
/// group is committed again without it, so one bad write fails alone instead of failing every
/// write queued beside it; only if the commit itself fails are the writes committed one by one.
fn commit_group(db: &Database, group: &mut [Box<dyn Job>]) -> Vec<Result<(), EngineError>> {
    let mut outcomes: Vec<Option<Result<(), EngineError>>> = vec![None; group.len()];
    loop {
        let pending: Vec<usize> = (0..group.len())
            .filter(|i| outcomes[*i].is_none())
            .collect();
        if pending.is_empty() {
            break;
        }
        let attempt = (|| {
            let txn = db
                .begin_write()
                .map_err(|e| (None, EngineError::from(redb::Error::from(e))))?;
            for &i in &pending {
                group[i].apply(&txn).map_err(|e| (Some(i), e))?;
            }
            txn.commit()
                .map_err(|e| (None, EngineError::from(redb::Error::from(e))))
        })();
        match attempt {
            Ok(()) => {
                for i in pending {
                    outcomes[i] = Some(Ok(()));
                }
            }
            Err((Some(bad), e)) => {
                tracing::error!(error = %e, "Embedded write failed; committing the rest of its group without it");
                outcomes[bad] = Some(Err(e));
            }
            Err((None, e)) if pending.len() == 1 => {
                tracing::error!(error = %e, "Embedded commit failed");
                outcomes[pending[0]] = Some(Err(e));
            }
            Err((None, e)) => {
                tracing::warn!(error = %e, writes = pending.len(), "Embedded group commit failed; committing each write alone");
                for i in pending {
                    let alone = (|| {
                        let txn = db.begin_write().map_err(redb::Error::from)?;
                        group[i].apply(&txn)?;
                        txn.commit().map_err(redb::Error::from)?;
                        Ok::<(), EngineError>(())
                    })();
                    if let Err(e) = &alone {
                        tracing::error!(error = %e, "Embedded write failed");
                    }
                    outcomes[i] = Some(alone);
                }
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Err(EngineError::Storage("write was not attempted".into()))))
        .collect()
}

/// Marks the writer as gone when its thread ends, however it ends (a panic included).
struct AliveGuard(Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    #[tokio::test]
    async fn concurrent_writes_commit_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let engine = Engine::open(dir.path()).expect("opens");
            let writes = (0..500u64).map(|i| {
                engine.submit(move |txn| {
                    let mut t = txn.open_table(T)?;
                    t.insert(i, i * 2)?;
                    Ok(i)
                })
            });
            let done = futures_join(writes).await;
            assert_eq!(done.len(), 500);
            assert!(done.iter().all(Result::is_ok));
        }
        // The writer thread exits once every handle is gone; give it a moment to close the file.
        // Dropping the last handle closed the file: it opens again at once.
        let engine = Engine::open(dir.path()).expect("reopens");
        let sum = engine
            .read(|txn| {
                let t = txn.open_table(T)?;
                let mut sum = 0;
                for row in t.iter()? {
                    sum += row?.1.value();
                }
                Ok(sum)
            })
            .expect("reads");
        assert_eq!(sum, (0..500u64).map(|i| i * 2).sum::<u64>());
    }

    #[tokio::test]
    async fn a_failing_or_panicking_write_fails_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(dir.path()).expect("opens");
        // Queued back to back, so they share a group: the good writes must still land.
        let before = engine.submit(|txn| {
            txn.open_table(T)?.insert(1, 1)?;
            Ok(())
        });
        let bad = engine.submit(|_txn| -> Result<(), redb::Error> {
            Err(redb::Error::Corrupted("test".into()))
        });
        let panics =
            engine.submit(|_txn| -> Result<(), redb::Error> { panic!("a bug in a write") });
        let after = engine.submit(|txn| {
            txn.open_table(T)?.insert(2, 2)?;
            Ok(())
        });
        assert!(matches!(bad.await, Err(EngineError::Redb { .. })));
        assert!(matches!(panics.await, Err(EngineError::Storage(_))));
        assert!(before.await.is_ok() && after.await.is_ok());
        let rows = engine
            .read(|txn| Ok(txn.open_table(T)?.len()?))
            .expect("reads");
        assert_eq!(rows, 2);
        assert!(
            engine.is_writable(),
            "the writer survives a panicking write"
        );

        engine.close();
        assert!(!engine.is_writable());
        let refused = engine.submit(|txn| {
            txn.open_table(T)?.insert(3, 3)?;
            Ok(())
        });
        assert!(matches!(refused.await, Err(EngineError::Closed)));
    }

    async fn futures_join<T>(futs: impl Iterator<Item = impl Future<Output = T>>) -> Vec<T> {
        let handles: Vec<_> = futs.map(|f| Box::pin(f)).collect();
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            out.push(h.await);
        }
        out
    }
}
