//! A running orderflow process: [`App::build`] connects the backends and binds the listener for
//! a [`Role`], [`App::run_until_stopped`] runs every part under the [`Supervisor`] until a
//! signal or a failure, then drains and joins them within [`SHUTDOWN_GRACE`].

use crate::backends::Backends;
use crate::config::{Config, LogUrl, StoreUrl};
use crate::error::AppError;
use crate::supervisor::{Chore, Supervisor, shutdown_signal};
use crate::telemetry;
use metrics_exporter_prometheus::PrometheusHandle;
use orderflow_ingest::auth::KeyFile;
use orderflow_ingest::limits::Backlog;
use orderflow_ingest::{ApiSettings, AppParts, AppState, Auth, OpsState};
use orderflow_pipeline::{RetryPolicy, Runner};
use orderflow_stages::topology::{self, STAGES, StageSpec};
pub use orderflow_stages::topology::{PROJECTOR, stage_names};
use orderflow_stores::Rate;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long stopping may take: in-flight batches finish and commit, the server drains. Under
/// the 10 s promised to operators, leaving room for the runtime and the writer threads to end.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// What a process runs.
#[derive(Debug, Clone)]
pub enum Role {
    /// The API, the six stages and the projector (`orderflow serve`).
    Serve,
    /// The API only (`orderflow ingest`).
    Ingest,
    /// The named stages only, with `/metrics`, `/healthz` and `/readyz` (`orderflow stage`,
    /// `orderflow project`).
    Workers(Vec<&'static StageSpec>),
}

impl Role {
    /// The stages this role runs.
    pub fn stages(&self) -> Vec<&'static StageSpec> {
        match self {
            Self::Serve => STAGES.iter().collect(),
            Self::Ingest => Vec::new(),
            Self::Workers(stages) => stages.clone(),
        }
    }

    /// The workers role for stage names, refusing names the stage table does not have.
    pub fn workers<S: AsRef<str>>(names: &[S]) -> Result<Self, AppError> {
        names
            .iter()
            .map(|name| {
                topology::stage(name.as_ref()).ok_or_else(|| {
                    AppError::Usage(format!(
                        "unknown stage {:?}; stages are {}",
                        name.as_ref(),
                        topology::stage_names().join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self::Workers)
    }

    fn serves_api(&self) -> bool {
        matches!(self, Self::Serve | Self::Ingest)
    }

    fn command(&self) -> &'static str {
        match self {
            Self::Serve => "serve",
            Self::Ingest => "ingest",
            Self::Workers(stages) if stages.iter().all(|s| s.name == PROJECTOR) => "project",
            Self::Workers(_) => "stage",
        }
    }
}

/// A process, built and ready to run.
pub struct App {
    config: Config,
    role: Role,
    backends: Backends,
    chores: Vec<Chore>,
    metrics: PrometheusHandle,
    listener: TcpListener,
    addr: SocketAddr,
    /// Token checks, and the key file they were read from (reloaded when it changes).
    auth: Arc<Auth>,
    key_file: Option<KeyFile>,
}

impl App {
    /// Checks the role against the configuration, installs the metrics recorder, connects the
    /// backends, creates the topics, seeds stock and binds `api.listen`.
    pub async fn build(config: Config, role: Role) -> Result<Self, AppError> {
        check_role(&config, &role)?;
        let (auth, key_file) = config.jwt.load()?;
        let metrics = telemetry::install_metrics(role.command())?;
        let (backends, chores) = Backends::connect(&config).await?;
        let seeded = backends.prepare().await?;
        if seeded > 0 {
            tracing::info!(skus = seeded, "Seeded stock from the catalog");
        }
        let listener = TcpListener::bind(config.api.listen)
            .await
            .map_err(|source| AppError::Listen {
                addr: config.api.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| AppError::Listen {
            addr: config.api.listen,
            source,
        })?;
        Ok(Self {
            config,
            role,
            backends,
            chores,
            metrics,
            listener,
            addr,
            auth: Arc::new(auth),
            key_file,
        })
    }

    /// The address the process serves HTTP on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs every part until SIGINT/SIGTERM or until one fails, then stops them all. A part
    /// ending on its own is a failure: the error says which, and the process should exit
    /// non-zero so its supervisor restarts it rather than keep accepting orders that nothing
    /// processes.
    pub async fn run_until_stopped(self) -> Result<(), AppError> {
        let supervisor = Supervisor::new();
        let stages = self.role.stages();
        let policy = RetryPolicy {
            max_attempts: self.config.retry.max_attempts,
            base_backoff: Duration::from_millis(self.config.retry.base_ms),
            max_backoff: Duration::from_millis(self.config.retry.max_ms),
            batch_size: self.config.stages.batch_size,
            ..RetryPolicy::default()
        };
        let deps = self.backends.stage_deps(&self.config);
        for spec in &stages {
            let runner = Runner::new(
                self.backends.log.clone(),
                spec.build(&deps),
                spec.input_topics(),
                policy.clone(),
            );
            supervisor.spawn(
                format!("stage {}", spec.name),
                runner.run(supervisor.token()),
            );
        }
        for chore in self.chores {
            supervisor.every(chore);
        }
        // Where the outbox is written (notify's emails, the projector's webhooks), it is sent.
        if stages
            .iter()
            .any(|s| s.name == "notify" || s.name == PROJECTOR)
        {
            for chore in crate::dispatch::chores(&self.config, &self.backends)? {
                supervisor.every(chore);
            }
        }
        for chore in crate::gauges::chores(&self.config, &self.backends, self.role.serves_api()) {
            supervisor.every(chore);
        }
        orderflow_ingest::pricing::register_metrics();
        if self.role.serves_api() {
            orderflow_ingest::poll::register_metrics();
            orderflow_ingest::ws::register_metrics();
        }
        orderflow_ingest::pricing::record_version(None, &self.backends.prices.load().version);
        if let Some(every) = self.config.pricing.reload_every() {
            supervisor.every(crate::price_reload::reloader(
                self.backends.prices.clone(),
                self.backends.tables.clone(),
                every,
            ));
        }
        let upkeep = self.metrics.clone();
        supervisor.every(Chore::new(
            "metrics-upkeep",
            Duration::from_secs(5),
            move || {
                upkeep.run_upkeep();
                async { Ok(()) }
            },
        ));
        if stages.iter().any(|s| s.name == PROJECTOR) {
            // The sweeper rebuilds rejections from order views, so it runs beside the
            // projector, whose store has them; a second sweeper elsewhere only duplicates one.
            let sweeper = Arc::new(self.backends.sweeper());
            supervisor.every(Chore::new(
                "reservation-sweeper",
                self.config.stages.reservation_sweep(),
                move || {
                    let sweeper = sweeper.clone();
                    async move {
                        if let Err(e) = sweeper.sweep().await {
                            tracing::warn!(error = %e, "Reservation expiry sweep failed; retrying");
                        }
                        Ok(())
                    }
                },
            ));
        }

        let router = if self.role.serves_api() {
            if self.config.uses_dev_secret() {
                warn_dev_secret();
            }
            if let (Some(file), Some(every)) = (self.key_file, self.config.jwt.reload_every()) {
                supervisor.every(crate::keys::reloader(self.auth.clone(), file, every));
            }
            // A reading missed a few times over is ignored rather than trusted.
            let backlog = Arc::new(Backlog::new(
                Duration::from_millis(self.config.limits.backlog_check_ms * 5)
                    .max(Duration::from_secs(2)),
            ));
            if !self.config.limits.on() {
                tracing::warn!(
                    "Limits are off (limits.switch = off): no budgets per customer or client \
                     address, no cap on requests in flight, no backlog bound; for benchmarks \
                     and load tests only"
                );
            } else if self.config.limits.max_backlog > 0 {
                supervisor.every(crate::backlog::reader(
                    &self.config,
                    &self.backends,
                    backlog.clone(),
                ));
            }
            orderflow_ingest::app(api_state(
                &self.config,
                &self.backends,
                self.metrics,
                backlog,
                self.auth,
            ))
        } else {
            orderflow_ingest::ops::router(OpsState {
                log: self.backends.log.clone(),
                ledger: self.backends.ledger.clone(),
                metrics: Some(self.metrics),
            })
            .merge(orderflow_ingest::webhooks::admin_router(
                orderflow_ingest::webhooks::DeliveriesAdmin {
                    auth: self.auth.clone(),
                    outbox: self.backends.outbox.clone(),
                },
            ))
            .merge(orderflow_ingest::pricing::admin_router(
                orderflow_ingest::pricing::PricingAdmin {
                    auth: self.auth,
                    book: self.backends.prices.clone(),
                    tables: Some(Arc::new(self.backends.tables.clone())),
                },
            ))
        };
        let token = supervisor.token();
        let limits = orderflow_ingest::server::ServerLimits {
            header_read_timeout: Duration::from_millis(self.config.api.header_read_timeout_ms),
            max_connections: self.config.api.max_connections,
        };
        let server = orderflow_ingest::server::serve(self.listener, router, limits, token);
        supervisor.spawn("the HTTP server", server);
        banner(self.addr, &self.role, &stages);
        tracing::info!(addr = %self.addr, role = self.role.command(), "Serving");

        tokio::select! {
            () = shutdown_signal() => tracing::info!("Shutting down: finishing in-flight batches"),
            () = supervisor.stopping() => {}
        }
        if !supervisor.shutdown(SHUTDOWN_GRACE).await {
            tracing::warn!(
                "Some tasks did not stop within {} s; uncommitted records will be redelivered",
                SHUTDOWN_GRACE.as_secs()
            );
        }
        match supervisor.failure() {
            Some(reason) => Err(AppError::Failed(reason)),
            None => Ok(()),
        }
    }
}

/// Processes that split the pipeline over a Kafka log must share the hot path: with embedded
/// stores each would keep its own stock, keys and views, and stock could be sold twice.
fn check_role(config: &Config, role: &Role) -> Result<(), AppError> {
    let on_kafka = matches!(config.log.url, LogUrl::Kafka(_));
    let shared = config.redis.url.is_some();
    match role {
        Role::Serve if on_kafka && !shared => tracing::warn!(
            "Serving over Kafka with the embedded stock ledger: run only one such process per \
             set of topics; a second one would share the partitions but not the stock (use \
             --redis to scale out)"
        ),
        Role::Ingest | Role::Workers(_) if on_kafka && !shared => {
            return Err(AppError::Usage(format!(
                "invalid redis.url: `orderflow {}` over Kafka runs beside other processes, which \
                 must share one stock ledger, idempotency keys and order views; set --redis \
                 redis://HOST:PORT (or ORDERFLOW_REDIS), or run everything in one process with \
                 `orderflow serve`",
                role.command()
            )));
        }
        Role::Ingest if on_kafka && !matches!(config.store.url, StoreUrl::Scylla(_)) => {
            tracing::warn!(
                "The API runs apart from the projector with an embedded order store: it sees \
                 views only through Redis's hot copy (an hour after their last change) and order \
                 history is empty; use --store scylla://… shared with the projector"
            );
        }
        _ => {}
    }
    Ok(())
}

/// A limit of `per_second` with `burst`, or none for 0.
fn rate(per_second: u32, burst: u32) -> Option<Rate> {
    (per_second > 0).then_some(Rate { per_second, burst })
}

/// The API's state from the backends and the `[api]` and `[limits]` settings.
fn api_state(
    config: &Config,
    b: &Backends,
    metrics: PrometheusHandle,
    backlog: Arc<Backlog>,
    auth: Arc<Auth>,
) -> AppState {
    // `limits.switch = off` (benchmarks, load tests) lifts every limit at once.
    let (limits, on) = (&config.limits, config.limits.on());
    AppState::new(AppParts {
        log: b.log.clone(),
        ledger: b.ledger.clone(),
        refunds: b.refunds.clone(),
        idempotency: b.idempotency.clone(),
        orders: b.orders.clone(),
        limiter: b.limiter.clone(),
        backlog,
        feed: b.feed.clone(),
        polls: Arc::new(orderflow_ingest::poll::HeldPolls::new(
            config.api.max_long_polls,
        )),
        outbox: b.outbox.clone(),
        catalog: b.catalog.clone(),
        pricing: Arc::new(orderflow_ingest::pricing::Pricing {
            book: b.prices.clone(),
            coupons: b.coupons.clone(),
            tables: Some(Arc::new(b.tables.clone())),
            currencies: config.stages.currencies.clone(),
            countries: config.stages.countries.clone(),
        }),
        auth,
        metrics: Some(metrics),
        settings: Arc::new(ApiSettings {
            max_body_bytes: config.api.max_body_bytes,
            accepted_topic: topology::ACCEPTED.to_owned(),
            cancel_requested_topic: topology::CANCEL_REQUESTED.to_owned(),
            refunds_topic: topology::REFUNDS_REQUESTED.to_owned(),
            idempotency_ttl: config.api.idempotency_ttl(),
            customer_limit: rate(limits.customer_per_second, limits.customer_burst).filter(|_| on),
            ip_limit: rate(limits.ip_per_second, limits.ip_burst).filter(|_| on),
            client_ip_header: axum::http::HeaderName::from_bytes(
                limits.client_ip_header.as_bytes(),
            )
            .ok(),
            max_backlog: (on && limits.max_backlog > 0).then_some(limits.max_backlog),
            cors_origins: config.api.cors_origins.clone(),
            max_in_flight: if on {
                config.api.max_in_flight
            } else {
                tokio::sync::Semaphore::MAX_PERMITS
            },
        }),
    })
}

/// Warns that tokens are signed with the built-in development secret.
pub fn warn_dev_secret() {
    tracing::warn!(
        "Using the built-in development JWT secret; set ORDERFLOW_JWT_SECRET in production"
    );
}

/// What a person starting the process sees on stdout (tests read the first line too).
fn banner(addr: SocketAddr, role: &Role, stages: &[&'static StageSpec]) {
    let names: Vec<&str> = stages.iter().map(|s| s.name).collect();
    println!("orderflow listening on http://{addr}");
    if role.serves_api() {
        println!(
            "  stages: {}",
            if names.is_empty() {
                "none (ingest only)".to_owned()
            } else {
                names.join(" ")
            }
        );
        println!(
            "  get a token: orderflow token --sub alice   (in a checkout: cargo run --release -- token --sub alice)"
        );
        println!("  then: curl -H \"Authorization: Bearer $TOKEN\" http://{addr}/v1/catalog");
    } else {
        println!("orderflow worker running stages: {}", names.join(" "));
        println!("  metrics: http://{addr}/metrics, health: http://{addr}/readyz");
    }
}
