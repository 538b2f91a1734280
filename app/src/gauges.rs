//! Gauges that no code path sets on its own, kept current by chores: whether each dependency
//! is ready, how much disk the data directories use, which SKUs run low, and the process's CPU
//! and memory.

use crate::backends::{Backends, embedded_log_dir};
use crate::config::{Config, LogUrl};
use crate::supervisor::Chore;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The chores of this process; `serves_api` adds the low-stock gauge (one reporter is enough
/// per deployment, and every process has the ledger).
pub fn chores(config: &Config, backends: &Backends, serves_api: bool) -> Vec<Chore> {
    let mut chores = vec![readiness(backends), disk(config), process()];
    if serves_api {
        chores.push(low_stock(backends, config.metrics.low_stock_threshold));
    }
    chores
}

/// `orderflow_ready{dependency}`: 1 while the log (or the stock ledger) can serve, else 0 —
/// what `/readyz` answers, as a series an alert can watch.
fn readiness(backends: &Backends) -> Chore {
    let (log, ledger) = (backends.log.clone(), backends.ledger.clone());
    Chore::new("readiness-gauges", Duration::from_secs(5), move || {
        let (log, ledger) = (log.clone(), ledger.clone());
        async move {
            let up = |ok: bool| if ok { 1.0 } else { 0.0 };
            metrics::gauge!("orderflow_ready", "dependency" => "log")
                .set(up(log.ready().await.is_ok()));
            metrics::gauge!("orderflow_ready", "dependency" => "ledger")
                .set(up(ledger.ready().await.is_ok()));
            Ok(())
        }
    })
}

/// `orderflow_data_dir_bytes`: the size of the embedded data directories (the stores', and
/// the log's when it is embedded), for the disk-filling alert.
fn disk(config: &Config) -> Chore {
    let store = config.store_dir();
    let mut dirs = vec![store.clone()];
    if let LogUrl::Embedded(dir) = &config.log.url {
        let log = embedded_log_dir(dir.clone(), &store);
        if !log.starts_with(&store) {
            dirs.push(log);
        }
    }
    let dirs = Arc::new(dirs);
    Chore::new("disk-gauge", Duration::from_secs(30), move || {
        let dirs = dirs.clone();
        async move {
            let bytes = tokio::task::spawn_blocking(move || dirs.iter().map(|d| size_of(d)).sum())
                .await
                .unwrap_or(0u64);
            metrics::gauge!("orderflow_data_dir_bytes").set(bytes as f64);
            Ok(())
        }
    })
}

/// `orderflow_process_*` (CPU seconds, resident and virtual memory, open files, threads: the
/// Prometheus process metrics, read by `metrics-process`) and `orderflow_allocator_*_bytes`:
/// memory that climbs shows here before the host runs out, and resident against allocated
/// says whether it is data the process keeps or pages the allocator has not given back.
fn process() -> Chore {
    let collector = Arc::new(metrics_process::Collector::new("orderflow_"));
    collector.describe();
    Chore::new("process-gauges", Duration::from_secs(5), move || {
        let collector = collector.clone();
        async move {
            collector.collect();
            allocator();
            Ok(())
        }
    })
}

/// jemalloc's own counts: bytes in live allocations, and the pages it holds resident. The
/// `orderflow` binary makes jemalloc the allocator; where another one serves the process
/// (a test linking this crate), jemalloc has allocated nothing and nothing is reported.
fn allocator() {
    use tikv_jemalloc_ctl::{epoch, stats};
    // The counts are a snapshot taken at the last epoch; advance it to read current ones.
    if epoch::advance().is_err() {
        return;
    }
    if let (Ok(allocated), Ok(resident)) = (stats::allocated::read(), stats::resident::read())
        && allocated > 0
    {
        metrics::gauge!("orderflow_allocator_allocated_bytes").set(allocated as f64);
        metrics::gauge!("orderflow_allocator_resident_bytes").set(resident as f64);
    }
}

/// The bytes of every file under `dir` (0 for what cannot be read).
fn size_of(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => pending.push(entry.path()),
                Ok(meta) => total += meta.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// `orderflow_stock_available{sku}` for every SKU that has gone under `threshold` (and stays
/// reported after, so a refill shows on the same series).
fn low_stock(backends: &Backends, threshold: u64) -> Chore {
    let ledger = backends.ledger.clone();
    let reported = Arc::new(parking_lot::Mutex::new(BTreeSet::<String>::new()));
    Chore::new("low-stock-gauge", Duration::from_secs(15), move || {
        let (ledger, reported) = (ledger.clone(), reported.clone());
        async move {
            match ledger.levels().await {
                Ok(levels) => {
                    let mut reported = reported.lock();
                    for level in levels {
                        if level.available < threshold || reported.contains(&level.sku) {
                            metrics::gauge!("orderflow_stock_available", "sku" => level.sku.clone())
                                .set(level.available as f64);
                            reported.insert(level.sku);
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "Cannot read stock levels for the gauge"),
            }
            Ok(())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_of_a_directory_counts_every_file_below_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a"), [0u8; 100]).expect("write");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub").join("b"), [0u8; 28]).expect("write");
        assert_eq!(size_of(dir.path()), 128);
        assert_eq!(size_of(&dir.path().join("missing")), 0);
    }
}
