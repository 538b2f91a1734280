//! Property test: random interleavings of reserve, release, commit, pin and expiry keep the
//! ledger's invariant, match a reference model, and every repeat returns the first answer —
//! on the embedded ledger and on Redis.

use orderflow_domain::OrderId;
use orderflow_storage::kv::Engine;
use orderflow_stores::embedded::EmbeddedLedger;
use orderflow_stores::redis::{RedisConfig, RedisHot, RedisLedger};
use orderflow_stores::{PinOutcome, ReserveOutcome, Shortage, StockLedger};
use orderflow_stores::{SkuQuantity, SkuStock};
use orderflow_testkit::RedisServer;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SKUS: [&str; 2] = ["X", "Y"];
const STOCK: u64 = 6;
const ORDERS: usize = 6;

#[derive(Clone, Debug)]
enum Op {
    Reserve {
        order: usize,
        x: u32,
        y: u32,
        lapsing: bool,
    },
    Release(usize),
    Commit(usize),
    Pin(usize),
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..ORDERS, 0u32..4, 0u32..4, any::<bool>()).prop_map(|(order, x, y, lapsing)| Op::Reserve {
            order,
            x: if x == 0 && y == 0 { 1 } else { x },
            y,
            lapsing,
        }),
        2 => (0..ORDERS).prop_map(Op::Release),
        2 => (0..ORDERS).prop_map(Op::Commit),
        2 => (0..ORDERS).prop_map(Op::Pin),
        1 => Just(Op::Expire),
    ]
}

#[derive(Clone, Debug, PartialEq)]
enum Hold {
    Held {
        lines: Vec<(String, u64)>,
        pinned: bool,
        lapsing: bool,
    },
    Released {
        pinned: bool,
    },
    Committed,
    Refused,
    Expired,
}

/// What the ledger must do, written as plainly as possible.
#[derive(Default)]
struct Model {
    available: BTreeMap<String, u64>,
    reserved: BTreeMap<String, u64>,
    committed: BTreeMap<String, u64>,
    holds: BTreeMap<usize, (Hold, ReserveOutcome)>,
}

impl Model {
    fn new() -> Self {
        let mut m = Self::default();
        for sku in SKUS {
            m.available.insert(sku.into(), STOCK);
            m.reserved.insert(sku.into(), 0);
            m.committed.insert(sku.into(), 0);
        }
        m
    }

    fn give_back(&mut self, lines: &[(String, u64)], to_committed: bool) {
        for (sku, q) in lines {
            *self.reserved.get_mut(sku).expect("sku") -= q;
            if to_committed {
                *self.committed.get_mut(sku).expect("sku") += q;
            } else {
                *self.available.get_mut(sku).expect("sku") += q;
            }
        }
    }

    fn reserve(&mut self, order: usize, lines: &[(String, u64)], lapsing: bool) -> ReserveOutcome {
        if let Some((_, first)) = self.holds.get(&order) {
            return first.clone();
        }
        let short: Vec<Shortage> = lines
            .iter()
            .filter(|(sku, q)| self.available[sku] < *q)
            .map(|(sku, q)| Shortage {
                sku: sku.clone(),
                requested: *q,
                available: self.available[sku],
            })
            .collect();
        if short.is_empty() {
            for (sku, q) in lines {
                *self.available.get_mut(sku).expect("sku") -= q;
                *self.reserved.get_mut(sku).expect("sku") += q;
            }
            let hold = Hold::Held {
                lines: lines.to_vec(),
                pinned: false,
                lapsing,
            };
            self.holds.insert(order, (hold, ReserveOutcome::Reserved));
            ReserveOutcome::Reserved
        } else {
            let outcome = ReserveOutcome::Short(short);
            self.holds.insert(order, (Hold::Refused, outcome.clone()));
            outcome
        }
    }

    fn release(&mut self, order: usize) -> bool {
        match self.holds.get(&order).map(|(h, _)| h.clone()) {
            Some(Hold::Held { lines, pinned, .. }) => {
                self.give_back(&lines, false);
                self.holds.get_mut(&order).expect("hold").0 = Hold::Released { pinned };
                true
            }
            Some(Hold::Released { .. } | Hold::Expired) => true,
            _ => false,
        }
    }

    fn commit(&mut self, order: usize) -> bool {
        match self.holds.get(&order).map(|(h, _)| h.clone()) {
            Some(Hold::Held { lines, .. }) => {
                self.give_back(&lines, true);
                self.holds.get_mut(&order).expect("hold").0 = Hold::Committed;
                true
            }
            Some(Hold::Committed) => true,
            _ => false,
        }
    }

    fn pin(&mut self, order: usize) -> PinOutcome {
        match self.holds.get_mut(&order).map(|(h, _)| h) {
            Some(Hold::Held { pinned, .. }) => {
                *pinned = true;
                PinOutcome::Pinned
            }
            Some(Hold::Committed) => PinOutcome::Pinned,
            Some(Hold::Expired) => PinOutcome::Expired,
            Some(Hold::Released { pinned: true }) => PinOutcome::Released,
            _ => PinOutcome::Missing,
        }
    }

    fn expire(&mut self) -> BTreeSet<usize> {
        let due: Vec<(usize, Vec<(String, u64)>)> = self
            .holds
            .iter()
            .filter_map(|(order, (hold, _))| match hold {
                Hold::Held {
                    lines,
                    pinned: false,
                    lapsing: true,
                } => Some((*order, lines.clone())),
                _ => None,
            })
            .collect();
        for (order, lines) in &due {
            self.give_back(lines, false);
            self.holds.get_mut(order).expect("hold").0 = Hold::Expired;
        }
        due.into_iter().map(|(o, _)| o).collect()
    }
}

/// Runs `ops` against `ledger` and the model; every operation twice, to check idempotence.
async fn check(ledger: &dyn StockLedger, ops: &[Op]) -> Result<(), TestCaseError> {
    let items: Vec<SkuStock> = SKUS.iter().map(|s| SkuStock::new(*s, STOCK)).collect();
    ledger.seed(&items).await.expect("seed");
    let ids: Vec<OrderId> = (0..ORDERS).map(|_| OrderId::new()).collect();
    let mut model = Model::new();
    for op in ops {
        match op {
            Op::Reserve {
                order,
                x,
                y,
                lapsing,
            } => {
                let mut lines = Vec::new();
                if *x > 0 {
                    lines.push(("X".to_owned(), u64::from(*x)));
                }
                if *y > 0 {
                    lines.push(("Y".to_owned(), u64::from(*y)));
                }
                let request: Vec<SkuQuantity> = lines
                    .iter()
                    .map(|(s, q)| SkuQuantity::new(s.clone(), u32::try_from(*q).expect("small")))
                    .collect();
                let ttl = if *lapsing {
                    Duration::from_millis(1)
                } else {
                    Duration::from_secs(900)
                };
                let expected = model.reserve(*order, &lines, *lapsing);
                for _ in 0..2 {
                    let got = ledger
                        .reserve(ids[*order], &request, ttl)
                        .await
                        .expect("reserve");
                    prop_assert_eq!(&got, &expected, "{:?}", op);
                }
            }
            Op::Release(order) => {
                let expected = model.release(*order);
                for _ in 0..2 {
                    prop_assert_eq!(
                        ledger.release(ids[*order]).await.expect("release"),
                        expected,
                        "{:?}",
                        op
                    );
                }
            }
            Op::Commit(order) => {
                let expected = model.commit(*order);
                for _ in 0..2 {
                    prop_assert_eq!(
                        ledger.commit(ids[*order]).await.expect("commit"),
                        expected,
                        "{:?}",
                        op
                    );
                }
            }
            Op::Pin(order) => {
                let expected = model.pin(*order);
                for _ in 0..2 {
                    prop_assert_eq!(
                        ledger.pin(ids[*order]).await.expect("pin"),
                        expected,
                        "{:?}",
                        op
                    );
                }
            }
            Op::Expire => {
                let expected: BTreeSet<OrderId> =
                    model.expire().into_iter().map(|o| ids[o]).collect();
                let later = chrono::Utc::now() + chrono::Duration::seconds(1);
                let got: BTreeSet<OrderId> = ledger
                    .expire_due(later, 100)
                    .await
                    .expect("expire")
                    .into_iter()
                    .collect();
                prop_assert_eq!(&got, &expected);
                let ack: Vec<OrderId> = got.into_iter().collect();
                ledger.acknowledge_expired(&ack).await.expect("ack");
                prop_assert!(
                    ledger
                        .expire_due(later, 100)
                        .await
                        .expect("expire")
                        .is_empty(),
                    "acknowledged expiries are not reported again, nothing lapses twice"
                );
            }
        }
        for level in ledger.levels().await.expect("levels") {
            prop_assert!(
                level.balanced(),
                "invariant broken after {:?}: {:?}",
                op,
                level
            );
            prop_assert_eq!(level.initial, STOCK);
            prop_assert_eq!(level.available, model.available[&level.sku], "{:?}", op);
            prop_assert_eq!(level.reserved, model.reserved[&level.sku], "{:?}", op);
            prop_assert_eq!(level.committed, model.committed[&level.sku], "{:?}", op);
        }
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn embedded_ledger_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let rt = runtime();
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let engine = Engine::open(dir.path()).expect("engine");
            let ledger = EmbeddedLedger::open(engine).expect("ledger");
            check(&ledger, &ops).await
        })?;
    }
}

static CASE: AtomicU64 = AtomicU64::new(0);

#[test]
fn redis_ledger_matches_the_model() {
    let server = RedisServer::start();
    let rt = runtime();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    });
    runner
        .run(&prop::collection::vec(op(), 1..40), |ops| {
            rt.block_on(async {
                // A warehouse per case: every case starts from fresh stock on the same server.
                let mut config = RedisConfig::new(server.url());
                config.warehouse = format!("case{}", CASE.fetch_add(1, Ordering::Relaxed));
                let ledger = RedisLedger::new(RedisHot::connect(config).await.expect("connects"));
                check(&ledger, &ops).await
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
}
