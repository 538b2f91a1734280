//! What a redb commit costs by the number of tables it touches, for the same rows: the stores'
//! writer copies a leaf and its branch pages in every table a commit reaches, one `pwrite`
//! each, so a layout with fewer tables per order should commit faster. A model of the
//! embedded stores' writes for a group of orders (not the stores themselves), to weigh that
//! lever before building it. `cargo bench -p orderflow-storage --bench tables`.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use redb::{Database, ReadableTable, TableDefinition};
use std::time::{Duration, Instant};

/// Orders in one group commit (the stores' writer commits ~440 times a second at 5,000
/// orders/s, each holding the writes of about a dozen orders).
const GROUP: u64 = 12;
/// Orders written before measuring, so every tree has its steady height.
const PREFILL: u64 = 100_000;

/// The order-keyed rows an order of the load tests writes (no coupon, no refund, no webhook),
/// as the embedded stores do: the table and the value's size.
const ROWS: [(&str, usize); 7] = [
    ("order_views", 2_300),
    ("order_views_by_customer", 0),
    ("stock_reservations", 120),
    ("payment_journal", 200),
    ("outbox_messages", 1_500),
    ("outbox_keys", 60),
    ("outbox_delivered", 0),
];

const LEVELS: TableDefinition<u32, u64> = TableDefinition::new("stock_levels");
const DUE: TableDefinition<u128, ()> = TableDefinition::new("outbox_due");
const ONE: TableDefinition<(u128, u8), &[u8]> = TableDefinition::new("by_order");

/// How the rows are laid out.
#[derive(Clone, Copy)]
enum Layout {
    /// One table per kind of row, as today.
    PerKind,
    /// Every row keyed by the order in one table (`(order, kind)`), levels and the due
    /// index kept apart (their keys are not the order).
    ByOrder,
}

/// Writes `orders` (their ids) in one transaction, with `durable` deciding the fsync.
fn write_group(db: &Database, layout: Layout, orders: std::ops::Range<u64>, durable: bool) {
    let mut txn = db.begin_write().expect("begin");
    if !durable {
        txn.set_durability(redb::Durability::None)
            .expect("durability");
    }
    {
        let mut levels = txn.open_table(LEVELS).expect("levels");
        let mut due = txn.open_table(DUE).expect("due");
        let filler = [7u8; 2_300];
        match layout {
            Layout::PerKind => {
                for (name, size) in ROWS {
                    let def: TableDefinition<u128, &[u8]> = TableDefinition::new(name);
                    let mut table = txn.open_table(def).expect("table");
                    for order in orders.clone() {
                        table
                            .insert(u128::from(order), &filler[..size])
                            .expect("insert");
                    }
                }
            }
            Layout::ByOrder => {
                let mut table = txn.open_table(ONE).expect("table");
                for order in orders.clone() {
                    for (kind, (_, size)) in ROWS.iter().enumerate() {
                        table
                            .insert((u128::from(order), kind as u8), &filler[..*size])
                            .expect("insert");
                    }
                }
            }
        }
        for order in orders {
            // Three lines an order over a catalog of 200 SKUs.
            for line in 0..3u64 {
                let sku = ((order * 7 + line * 13) % 200) as u32;
                let level = levels
                    .get(sku)
                    .expect("get")
                    .map(|v| v.value())
                    .unwrap_or(0);
                levels.insert(sku, level + 1).expect("insert");
            }
            due.insert(u128::from(order), ()).expect("insert");
        }
    }
    txn.commit().expect("commit");
}

/// A database of `layout` in a fresh directory, prefilled; and the next order id.
fn prefilled(layout: Layout) -> (tempfile::TempDir, Database, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::create(dir.path().join("bench.redb")).expect("create");
    let mut next = 0;
    while next < PREFILL {
        write_group(&db, layout, next..next + 1_000, false);
        next += 1_000;
    }
    write_group(&db, layout, next..next + GROUP, true);
    (dir, db, next + GROUP)
}

fn commits(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit of 12 orders");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(10));
    for (name, layout) in [("per kind", Layout::PerKind), ("by order", Layout::ByOrder)] {
        for durable in [true, false] {
            let (_dir, db, mut next) = prefilled(layout);
            let label = format!("{name}, {}", if durable { "fsync" } else { "no fsync" });
            group.bench_function(label, |b| {
                b.iter_custom(|iters| {
                    let started = Instant::now();
                    for _ in 0..iters {
                        write_group(&db, layout, next..next + GROUP, durable);
                        next += GROUP;
                    }
                    started.elapsed()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, commits);
criterion_main!(benches);
