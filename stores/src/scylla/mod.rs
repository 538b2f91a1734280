//! The ScyllaDB [`OrderStore`] (scylla driver): the durable order views of the distributed
//! deployment.
//!
//! Three tables in one keyspace, created or migrated at start:
//! - `orders`: one row per order, its view as JSON and a version (its timeline length);
//! - `order_timeline`: one row per status an order reached (per refund for `refunded` and
//!   `refund_failed`: `refunded:rf_…`), with when;
//! - `orders_by_customer`: each customer's order ids, newest first (UUIDv7 ids as blobs sort by
//!   time), for `GET /v1/orders`.
//!
//! Every statement is prepared, so the driver's default policy routes it to a replica that owns
//! the row (token-aware). Plain writes are upserts and marked idempotent, so the driver may
//! retry them; the view write is a lightweight transaction on its version (two projectors
//! during a rebalance never overwrite each other's progress) and is retried here, a bounded
//! number of times, by reading and folding again.

use crate::{OrderStore, Page, StoreError};
use async_trait::async_trait;
use orderflow_domain::{OrderEvent, OrderId, OrderView};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlValue, Row};
use std::collections::BTreeMap;
use std::time::Duration;

/// Where the store lives and how it is replicated.
#[derive(Clone, Debug)]
pub struct ScyllaConfig {
    /// Contact points, `HOST:PORT`.
    pub nodes: Vec<String>,
    /// The keyspace (created if missing).
    pub keyspace: String,
    /// Replicas per row (`NetworkTopologyStrategy`), used when the keyspace is created.
    pub replication_factor: u32,
    /// How long one request may take.
    pub request_timeout: Duration,
}

impl ScyllaConfig {
    /// Parses `scylla://HOST:PORT[,HOST:PORT…][/KEYSPACE]` (keyspace `orderflow` by default).
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::Unavailable(format!("invalid store URL {url:?}: {why}"));
        let rest = url
            .strip_prefix("scylla://")
            .ok_or_else(|| bad("expected scylla://HOST:PORT[/KEYSPACE]"))?;
        let (hosts, keyspace) = rest.split_once('/').unwrap_or((rest, "orderflow"));
        let nodes: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| {
                if h.contains(':') {
                    h.to_owned()
                } else {
                    format!("{h}:9042")
                }
            })
            .collect();
        if nodes.is_empty() {
            return Err(bad("no host"));
        }
        let keyspace = if keyspace.is_empty() {
            "orderflow"
        } else {
            keyspace
        };
        if !keyspace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || keyspace.len() > 48
            || keyspace.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(bad(
                "the keyspace is 1 to 48 letters, digits or '_', not starting with a digit",
            ));
        }
        Ok(Self {
            nodes,
            keyspace: keyspace.to_owned(),
            replication_factor: 1,
            request_timeout: Duration::from_secs(2),
        })
    }
}

/// Schema changes in order; each runs once per keyspace.
const MIGRATIONS: [(i32, &str); 3] = [
    (
        1,
        "CREATE TABLE IF NOT EXISTS {ks}.orders (order_id uuid PRIMARY KEY, customer_id text, \
         view text, version int)",
    ),
    (
        2,
        "CREATE TABLE IF NOT EXISTS {ks}.order_timeline (order_id uuid, status text, \
         at timestamp, PRIMARY KEY (order_id, status))",
    ),
    (
        3,
        "CREATE TABLE IF NOT EXISTS {ks}.orders_by_customer (customer_id text, order_id blob, \
         PRIMARY KEY (customer_id, order_id)) WITH CLUSTERING ORDER BY (order_id DESC)",
    ),
];

/// Attempts of a view write that lost its version race before the caller hears `Unavailable`.
const LWT_ATTEMPTS: usize = 5;

struct Statements {
    get_view: PreparedStatement,
    insert_view: PreparedStatement,
    update_view: PreparedStatement,
    insert_timeline: PreparedStatement,
    insert_by_customer: PreparedStatement,
    list_first: PreparedStatement,
    list_after: PreparedStatement,
}

/// Order views in ScyllaDB.
pub struct ScyllaOrderStore {
    session: Session,
    statements: Statements,
}

fn unavailable(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::backend(format!("scylla: {what}"), e)
}

/// A failed request as a store error: a statement the server refuses (bad CQL, wrong types,
/// no permission) will never pass and is a data problem; anything else may pass.
fn request_error(what: &str, e: ExecutionError) -> StoreError {
    let permanent = match &e {
        ExecutionError::BadQuery(_) => true,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => matches!(
            db,
            DbError::SyntaxError | DbError::Invalid | DbError::Unauthorized | DbError::ConfigError
        ),
        _ => false,
    };
    if permanent {
        corrupt(what, e)
    } else {
        unavailable(what, e)
    }
}

fn corrupt(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::decode(format!("scylla: {what}"), e)
}

impl ScyllaOrderStore {
    /// Connects, creates or migrates the schema, and prepares the statements.
    pub async fn connect(config: &ScyllaConfig) -> Result<Self, StoreError> {
        let session = SessionBuilder::new()
            .known_nodes(&config.nodes)
            .connection_timeout(config.request_timeout)
            .build()
            .await
            .map_err(|e| unavailable(&format!("cannot connect to {:?}", config.nodes), e))?;
        let ks = &config.keyspace;
        let replication = format!(
            "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = \
             {{'class': 'NetworkTopologyStrategy', 'replication_factor': {}}}",
            config.replication_factor.max(1)
        );
        // Lightweight transactions need a keyspace without tablets on ScyllaDB 6.0 to 2025.3,
        // where new keyspaces get tablets by default; older servers do not know the option.
        if let Err(e) = session
            .query_unpaged(
                format!("{replication} AND tablets = {{'enabled': false}}"),
                (),
            )
            .await
        {
            tracing::debug!(error = %e, "Creating the keyspace without the tablets option");
            session
                .query_unpaged(replication, ())
                .await
                .map_err(|e| request_error("create keyspace", e))?;
        }
        session
            .query_unpaged(
                format!(
                    "CREATE TABLE IF NOT EXISTS {ks}.schema_migrations (version int PRIMARY KEY, \
                     applied_at timestamp)"
                ),
                (),
            )
            .await
            .map_err(|e| unavailable("create schema_migrations", e))?;
        session
            .await_schema_agreement()
            .await
            .map_err(|e| unavailable("schema agreement", e))?;
        let applied = session
            .query_unpaged(format!("SELECT version FROM {ks}.schema_migrations"), ())
            .await
            .map_err(|e| unavailable("read migrations", e))?
            .into_rows_result()
            .map_err(|e| corrupt("read migrations", e))?;
        let done: Vec<i32> = applied
            .rows::<(i32,)>()
            .map_err(|e| corrupt("read migrations", e))?
            .map(|row| row.map(|(v,)| v))
            .collect::<Result<_, _>>()
            .map_err(|e| corrupt("read migrations", e))?;
        for (version, ddl) in MIGRATIONS {
            if done.contains(&version) {
                continue;
            }
            tracing::info!(keyspace = %ks, version, "Applying a ScyllaDB schema migration");
            session
                .query_unpaged(ddl.replace("{ks}", ks), ())
                .await
                .map_err(|e| unavailable(&format!("migration {version}"), e))?;
            session
                .await_schema_agreement()
                .await
                .map_err(|e| unavailable("schema agreement", e))?;
            session
                .query_unpaged(
                    format!(
                        "INSERT INTO {ks}.schema_migrations (version, applied_at) VALUES (?, ?)"
                    ),
                    (version, CqlTimestamp(chrono::Utc::now().timestamp_millis())),
                )
                .await
                .map_err(|e| unavailable("record migration", e))?;
        }
        // Fail at start, not at the first order, if this cluster refuses lightweight
        // transactions on the keyspace.
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {ks}.schema_migrations (version, applied_at) VALUES (0, ?) \
                     IF NOT EXISTS"
                ),
                (CqlTimestamp(chrono::Utc::now().timestamp_millis()),),
            )
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "scylla: keyspace {ks} refuses lightweight transactions, which the order \
                     views need (on ScyllaDB 6.0 to 2025.3 create it without tablets): {e}"
                ))
            })?;
        let statements = Statements {
            get_view: prepare(
                &session,
                format!("SELECT view, version FROM {ks}.orders WHERE order_id = ?"),
                true,
                config,
            )
            .await?,
            insert_view: prepare(
                &session,
                format!(
                    "INSERT INTO {ks}.orders (order_id, customer_id, view, version) \
                     VALUES (?, ?, ?, ?) IF NOT EXISTS"
                ),
                false,
                config,
            )
            .await?,
            update_view: prepare(
                &session,
                format!(
                    "UPDATE {ks}.orders SET view = ?, version = ? WHERE order_id = ? \
                     IF version = ?"
                ),
                false,
                config,
            )
            .await?,
            insert_timeline: prepare(
                &session,
                format!("INSERT INTO {ks}.order_timeline (order_id, status, at) VALUES (?, ?, ?)"),
                true,
                config,
            )
            .await?,
            insert_by_customer: prepare(
                &session,
                format!(
                    "INSERT INTO {ks}.orders_by_customer (customer_id, order_id) VALUES (?, ?)"
                ),
                true,
                config,
            )
            .await?,
            list_first: prepare(
                &session,
                format!(
                    "SELECT order_id FROM {ks}.orders_by_customer WHERE customer_id = ? LIMIT ?"
                ),
                true,
                config,
            )
            .await?,
            list_after: prepare(
                &session,
                format!(
                    "SELECT order_id FROM {ks}.orders_by_customer WHERE customer_id = ? \
                     AND order_id < ? LIMIT ?"
                ),
                true,
                config,
            )
            .await?,
        };
        Ok(Self {
            session,
            statements,
        })
    }

    /// The stored view and its version.
    async fn read(&self, id: OrderId) -> Result<Option<(OrderView, i32)>, StoreError> {
        let rows = self
            .session
            .execute_unpaged(&self.statements.get_view, (id.0,))
            .await
            .map_err(|e| request_error("read view", e))?
            .into_rows_result()
            .map_err(|e| corrupt("read view", e))?;
        let Some((json, version)) = rows
            .maybe_first_row::<(String, i32)>()
            .map_err(|e| corrupt("read view", e))?
        else {
            return Ok(None);
        };
        let view = serde_json::from_str(&json).map_err(|e| corrupt("order view", e))?;
        Ok(Some((view, version)))
    }

    /// The timeline rows and the customer-index row of `view`, written together.
    async fn write_side_rows(&self, view: &OrderView) -> Result<(), StoreError> {
        let id = view.order_id.0;
        // A refund's entry is keyed by its id too (`refunded:rf_…`): an order may have several.
        let keys: Vec<String> = view
            .timeline
            .iter()
            .map(|entry| match &entry.refund_id {
                Some(refund) => format!("{}:{refund}", entry.status),
                None => entry.status.as_str().to_owned(),
            })
            .collect();
        let timeline = view.timeline.iter().zip(&keys).map(|(entry, key)| {
            self.session.execute_unpaged(
                &self.statements.insert_timeline,
                (id, key.as_str(), CqlTimestamp(entry.at.timestamp_millis())),
            )
        });
        for result in futures::future::join_all(timeline).await {
            result.map_err(|e| request_error("write timeline", e))?;
        }
        self.session
            .execute_unpaged(
                &self.statements.insert_by_customer,
                (view.customer_id.as_str(), view.order_id.as_bytes().to_vec()),
            )
            .await
            .map_err(|e| request_error("write customer index", e))?;
        Ok(())
    }

    /// Folds one order's events into its stored view; the new view if it changed.
    async fn apply_order(&self, events: &[&OrderEvent]) -> Result<Option<OrderView>, StoreError> {
        for _ in 0..LWT_ATTEMPTS {
            let current = self.read(events[0].order.id).await?;
            let (view, before, changed) = match current {
                Some((mut view, version)) => {
                    let mut changed = false;
                    for event in events {
                        changed |= view.apply(event);
                    }
                    (view, Some(version), changed)
                }
                None => {
                    let mut view = OrderView::from_event(events[0]);
                    for event in &events[1..] {
                        view.apply(event);
                    }
                    (view, None, true)
                }
            };
            if !changed {
                return Ok(None);
            }
            let json = serde_json::to_string(&view).map_err(|e| corrupt("order view", e))?;
            // Every write moves the version on, so two writers never both pass `IF version`.
            let version = before.map_or(1, |v| v.saturating_add(1));
            // The timeline rows and the customer index are idempotent upserts written before
            // the view: if anything fails after them, the retry (which finds the view already
            // folded) has nothing left to do.
            self.write_side_rows(&view).await?;
            let result = match before {
                None => {
                    self.session
                        .execute_unpaged(
                            &self.statements.insert_view,
                            (
                                view.order_id.0,
                                view.customer_id.as_str(),
                                json.as_str(),
                                version,
                            ),
                        )
                        .await
                }
                Some(before) => {
                    self.session
                        .execute_unpaged(
                            &self.statements.update_view,
                            (json.as_str(), version, view.order_id.0, before),
                        )
                        .await
                }
            }
            .map_err(|e| request_error("write view", e))?;
            let rows = result
                .into_rows_result()
                .map_err(|e| corrupt("write view", e))?;
            let applied = matches!(
                rows.maybe_first_row::<Row>()
                    .map_err(|e| corrupt("write view", e))?
                    .and_then(|row| row.columns.into_iter().next().flatten()),
                Some(CqlValue::Boolean(true))
            );
            if !applied {
                // Another writer moved the view since the read: fold again on top of it.
                tokio::time::sleep(Duration::from_millis(fastrand::u64(5..50))).await;
                continue;
            }
            return Ok(Some(view));
        }
        Err(StoreError::Unavailable(format!(
            "scylla: order {} kept changing under {LWT_ATTEMPTS} writes; retry",
            events[0].order.id
        )))
    }
}

async fn prepare(
    session: &Session,
    cql: String,
    idempotent: bool,
    config: &ScyllaConfig,
) -> Result<PreparedStatement, StoreError> {
    let mut statement = session
        .prepare(cql.clone())
        .await
        .map_err(|e| unavailable(&format!("prepare {cql:?}"), e))?;
    statement.set_is_idempotent(idempotent);
    statement.set_request_timeout(Some(config.request_timeout));
    Ok(statement)
}

#[async_trait]
impl OrderStore for ScyllaOrderStore {
    async fn apply(&self, events: &[OrderEvent]) -> Result<Vec<OrderView>, StoreError> {
        let mut by_order: BTreeMap<OrderId, Vec<&OrderEvent>> = BTreeMap::new();
        for event in events {
            by_order.entry(event.order.id).or_default().push(event);
        }
        let mut changed = Vec::new();
        for order_events in by_order.values() {
            if let Some(view) = self.apply_order(order_events).await? {
                changed.push(view);
            }
        }
        Ok(changed)
    }

    async fn get(&self, id: OrderId) -> Result<Option<OrderView>, StoreError> {
        Ok(self.read(id).await?.map(|(view, _)| view))
    }

    async fn list_for_customer(
        &self,
        customer: &str,
        limit: usize,
        after: Option<OrderId>,
    ) -> Result<Page, StoreError> {
        let limit = limit.max(1);
        // One more than asked says whether another page follows.
        let fetch = i32::try_from(limit + 1).unwrap_or(i32::MAX);
        let result = match after {
            None => {
                self.session
                    .execute_unpaged(&self.statements.list_first, (customer, fetch))
                    .await
            }
            Some(after) => {
                self.session
                    .execute_unpaged(
                        &self.statements.list_after,
                        (customer, after.as_bytes().to_vec(), fetch),
                    )
                    .await
            }
        }
        .map_err(|e| request_error("list orders", e))?;
        let rows = result
            .into_rows_result()
            .map_err(|e| corrupt("list orders", e))?;
        let ids: Vec<Vec<u8>> = rows
            .rows::<(Vec<u8>,)>()
            .map_err(|e| corrupt("list orders", e))?
            .map(|row| row.map(|(id,)| id))
            .collect::<Result<_, _>>()
            .map_err(|e| corrupt("list orders", e))?;
        let more = ids.len() > limit;
        let ids: Vec<OrderId> = ids
            .into_iter()
            .take(limit)
            .map(|bytes| {
                <[u8; 16]>::try_from(bytes)
                    .map(|b| OrderId(uuid::Uuid::from_bytes(b)))
                    .map_err(|_| StoreError::Corrupt("scylla: an order id is not 16 bytes".into()))
            })
            .collect::<Result<_, _>>()?;
        // The page's views in parallel; an index row whose view is not written yet is skipped
        // (it is written just before its view).
        let views = futures::future::join_all(ids.iter().map(|id| self.get(*id))).await;
        let mut orders = Vec::with_capacity(ids.len());
        for view in views {
            if let Some(view) = view? {
                orders.push(view);
            }
        }
        // The cursor is the last id scanned, so skipped rows never end the paging early.
        let next = if more { ids.last().copied() } else { None };
        Ok(Page { orders, next })
    }
}
