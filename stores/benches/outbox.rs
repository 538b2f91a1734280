//! The embedded outbox's retention pass: what purging a delivered email costs the stores'
//! writer, per message. `cargo bench -p orderflow-stores --bench outbox`.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use chrono::{Duration as Span, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use orderflow_domain::OrderId;
use orderflow_storage::kv::Engine;
use orderflow_stores::embedded::EmbeddedOutbox;
use orderflow_stores::{Attempt, NewMessage, Next, Outbox, Tried};
use std::time::{Duration, Instant};

/// Messages purged per measured pass, in writes of this many (as the retention chore does).
const PASS: usize = 2_000;
const ROWS_A_WRITE: usize = 100;

/// An email of the size the notify stage writes (about 1.5 KB of text).
fn email(order: OrderId) -> NewMessage {
    NewMessage {
        key: format!("{order}:order_confirmation:mail"),
        order_id: order,
        event: "order_confirmation".into(),
        destination: "mail".into(),
        payload: format!(
            "To: load-1@example.com\nSubject: Order {order}\n\n{}",
            "x".repeat(1_400)
        ),
    }
}

/// Writes `n` emails and marks them delivered, as the dispatcher does.
async fn delivered(outbox: &EmbeddedOutbox, n: usize) {
    for first in (0..n).step_by(ROWS_A_WRITE) {
        let fresh = (first..n.min(first + ROWS_A_WRITE))
            .map(|_| email(OrderId::new()))
            .collect();
        outbox.enqueue(fresh).await.expect("enqueue");
    }
    loop {
        let due = outbox.due(Utc::now(), 500).await.expect("due");
        if due.is_empty() {
            break;
        }
        let tries = due
            .into_iter()
            .map(|d| Tried {
                id: d.id,
                attempt: Attempt {
                    at: Utc::now(),
                    status: None,
                    error: None,
                    millis: 1,
                },
                next: Next::Delivered,
            })
            .collect();
        outbox.record(tries).await.expect("record");
    }
}

fn purge(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = EmbeddedOutbox::new(Engine::open(dir.path()).expect("engine"));
    let mut group = c.benchmark_group("outbox");
    group.sample_size(10);
    group.bench_function("purge 2,000 delivered emails", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                runtime.block_on(delivered(&outbox, PASS));
                let horizon = Utc::now() + Span::seconds(1);
                let started = Instant::now();
                let mut purged = 0;
                while purged < PASS {
                    let n = runtime
                        .block_on(outbox.purge_delivered(horizon, ROWS_A_WRITE))
                        .expect("purge");
                    assert!(n > 0, "every delivered email is purged");
                    purged += n;
                }
                spent += started.elapsed();
            }
            spent
        })
    });
    group.finish();
}

criterion_group!(benches, purge);
criterion_main!(benches);
