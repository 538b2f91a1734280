//! The `orderflow` binary: the command line and the wiring of the crates, nothing else.
//!
//! `serve` (the default) runs the API, the six stages and the projector in one process on the
//! backends the configuration names: embedded under `./data` unless told otherwise.

mod config;
mod wiring;

use anyhow::{Context, Result, bail};

/// mimalloc instead of the system allocator: a profile of the checkout path spent about a fifth
/// of its samples in glibc's malloc and free (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Args, Parser, Subcommand};
use config::{Config, Layer};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use orderflow_ingest::{ApiSettings, AppState, Auth};
use orderflow_pipeline::dlq_topic;
use orderflow_stages::topology;
use orderflow_stores::Rate;
use std::future::IntoFuture;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// orderflow: a streaming checkout pipeline.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    flags: Flags,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Settings that can be given as flags; each also reads from the file and `ORDERFLOW_*`.
#[derive(Args)]
struct Flags {
    /// Config file (TOML); default: config/orderflow.toml when present.
    #[arg(long, global = true, env = "ORDERFLOW_CONFIG")]
    config: Option<PathBuf>,
    /// API listen address, e.g. 127.0.0.1:8080 (port 0 picks a free one).
    #[arg(long, global = true)]
    listen: Option<String>,
    /// Log backend: embedded://DIR or kafka://HOST:PORT[,HOST:PORT…].
    #[arg(long, global = true)]
    log: Option<String>,
    /// Kafka only: commit each batch's outputs and input offsets in one transaction.
    #[arg(long, global = true)]
    exactly_once: bool,
    /// Order store backend: embedded://DIR or scylla://HOST:PORT[/KEYSPACE].
    #[arg(long, global = true)]
    store: Option<String>,
    /// Put the log and the store under DIR (shorthand for --log and --store embedded://DIR).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Redis URL for the hot path, redis://HOST:PORT (absent: embedded).
    #[arg(long, global = true)]
    redis: Option<String>,
    /// Partitions per topic.
    #[arg(long, global = true)]
    partitions: Option<u32>,
    /// Catalog file (JSON).
    #[arg(long, global = true)]
    catalog: Option<PathBuf>,
    /// Promotion codes file (JSON).
    #[arg(long, global = true)]
    promotions: Option<PathBuf>,
    /// HS256 secret for tokens.
    #[arg(long, global = true)]
    jwt_secret: Option<String>,
}

impl Flags {
    fn layer(&self) -> Layer {
        let dir = self
            .data_dir
            .as_ref()
            .map(|d| format!("embedded://{}", d.display()));
        Layer {
            listen: self.listen.clone(),
            log: self.log.clone().or(dir.clone()),
            exactly_once: self.exactly_once.then_some(true),
            store: self.store.clone().or(dir),
            redis: self.redis.clone(),
            partitions: self.partitions,
            catalog: self.catalog.clone(),
            promotions: self.promotions.clone(),
            jwt_secret: self.jwt_secret.clone(),
            ..Layer::default()
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run everything in one process: API, six stages, projector (the default).
    Serve,
    /// Run only the API.
    Ingest,
    /// Run the named stages as a worker (validate reserve price charge ship notify project).
    Stage {
        /// Stage names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Run only the status projector.
    Project,
    /// Create the topics and seed the catalog's stock where a SKU has none yet.
    Seed,
    /// Print a signed token for curl, k6 and tests.
    Token {
        /// Customer id (the `sub` claim).
        #[arg(long)]
        sub: String,
        /// Space-separated scopes.
        #[arg(long, default_value = "checkout orders:read")]
        scope: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
    /// Check initial = available + reserved + committed for every SKU; exit 1 on a breach.
    Audit,
    /// Dead-letter topics.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List the dead letters of a topic (e.g. orders.accepted).
    List {
        /// Source topic or its .dlq topic.
        topic: String,
        /// Most records to show.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Put dead letters back on the topic they came from, oldest first; each one is replayed
    /// once (the replay's position is committed like a stage's).
    Replay {
        /// Source topic or its .dlq topic.
        topic: String,
        /// Most records to replay.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A setting that is not valid UTF-8 is an error, never silently the default.
    if let Some((key, _)) = std::env::vars_os().find(|(k, v)| {
        k.to_str().is_some_and(|k| k.starts_with("ORDERFLOW_")) && v.to_str().is_none()
    }) {
        return fail(&anyhow::anyhow!(
            "invalid {}: the value is not valid UTF-8",
            key.to_string_lossy()
        ));
    }
    let env = match Layer::from_env(&|k| std::env::var(k).ok()) {
        Ok(env) => env,
        Err(e) => return fail(&e),
    };
    let config = match Config::load(cli.flags.config.as_deref(), env, cli.flags.layer()) {
        Ok(config) => config,
        Err(e) => return fail(&e),
    };
    init_tracing(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::from(e)),
    };
    let result = runtime.block_on(run(cli.command.unwrap_or(Command::Serve), config));
    // Blocking calls still running (a Kafka client closing on a broker that does not answer)
    // must not hold the exit past the 10 s shutdown promise.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> std::process::ExitCode {
    eprintln!("orderflow: error: {e:#}");
    std::process::ExitCode::from(2)
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(command: Command, config: Config) -> Result<std::process::ExitCode> {
    match command {
        Command::Serve => {
            if config::embedded_dir(&config.log).is_none() && config.redis.is_none() {
                tracing::warn!(
                    "Serving over Kafka with the embedded stock ledger: run only one such process \
                     per set of topics; a second one would share the partitions but not the stock \
                     (use --redis to scale out)"
                );
            }
            let all: Vec<String> = wiring::STAGE_NAMES
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
            run_process(&config, true, &all).await?;
        }
        Command::Ingest => {
            require_shared_hot_path(&config, "ingest")?;
            if config::embedded_dir(&config.log).is_none() && !config.store.starts_with("scylla://")
            {
                tracing::warn!(
                    "The API runs apart from the projector with an embedded order store: it sees \
                     views only through Redis's hot copy (an hour after their last change) and \
                     order history is empty; use --store scylla://… shared with the projector"
                );
            }
            run_process(&config, true, &[]).await?
        }
        Command::Stage { names } => {
            require_shared_hot_path(&config, "stage")?;
            run_process(&config, false, &names).await?
        }
        Command::Project => {
            require_shared_hot_path(&config, "project")?;
            run_process(&config, false, &[topology::PROJECTOR.to_owned()]).await?
        }
        Command::Seed => {
            let backends = wiring::connect(&config).await?;
            let seeded = wiring::prepare(&backends).await?;
            println!(
                "Seeded {seeded} SKUs ({} in the catalog)",
                backends.catalog.items().len()
            );
        }
        Command::Token {
            sub,
            scope,
            ttl_secs,
        } => {
            warn_dev_secret(&config);
            let token = Auth::new(config.jwt_secret.as_bytes()).mint(
                &sub,
                &scope,
                Duration::from_secs(ttl_secs),
            )?;
            println!("{token}");
        }
        Command::Audit => return audit(&config).await,
        Command::Dlq {
            command: DlqCommand::List { topic, limit },
        } => dlq_list(&config, &topic, limit).await?,
        Command::Dlq {
            command: DlqCommand::Replay { topic, limit },
        } => dlq_replay(&config, &topic, limit).await?,
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Processes that split the pipeline over a Kafka log must share the hot path: with embedded
/// stores each would keep its own stock, keys and views, and stock could be sold twice.
fn require_shared_hot_path(config: &Config, command: &str) -> Result<()> {
    if config::embedded_dir(&config.log).is_none() && config.redis.is_none() {
        bail!(
            "invalid redis: `orderflow {command}` over Kafka runs beside other processes, which \
             must share one stock ledger, idempotency keys and order views; set --redis \
             redis://HOST:PORT (or ORDERFLOW_REDIS), or run everything in one process with \
             `orderflow serve`"
        );
    }
    Ok(())
}

fn warn_dev_secret(config: &Config) {
    if config.jwt_secret == config::DEV_SECRET {
        tracing::warn!(
            "Using the built-in development JWT secret; set ORDERFLOW_JWT_SECRET in production"
        );
    }
}

fn install_metrics() -> Result<PrometheusHandle> {
    // Fine enough between 1 ms and 1 s for the load tests' p99 plots.
    let buckets = [
        0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
        0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)?
        .install_recorder()?;
    Ok(handle)
}

/// Runs the API (if `api`) and the named stages until SIGINT or SIGTERM.
async fn run_process(config: &Config, api: bool, stages: &[String]) -> Result<()> {
    let metrics = install_metrics()?;
    let backends = wiring::connect(config).await?;
    let seeded = wiring::prepare(&backends).await?;
    if seeded > 0 {
        tracing::info!(skus = seeded, "Seeded stock from the catalog");
    }
    let runners = wiring::runners(stages, &backends, config)?;

    let (stop, stopping) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for runner in runners {
        tasks.spawn(runner.run(stopping.clone()));
    }
    let upkeep = metrics.clone();
    let mut upkeep_stop = stopping.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => upkeep.run_upkeep(),
                _ = upkeep_stop.changed() => break,
            }
        }
    });
    if let Some(log) = backends.embedded_log.clone() {
        let every =
            (config.log_retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        tokio::spawn(
            log.clone()
                .run_retention(config.log_retention, every, stopping.clone()),
        );
        tokio::spawn(log.run_lag_metrics(Duration::from_secs(5), stopping.clone()));
    }
    if stages.iter().any(|s| s == topology::PROJECTOR) {
        // The sweeper rebuilds rejections from order views, so it runs beside the projector,
        // whose store has them; a second sweeper elsewhere only duplicates a rejection.
        tokio::spawn(wiring::sweeper(&backends).run(config.reservation_sweep, stopping.clone()));
    }
    if let Some(ledger) = backends.embedded_ledger.clone() {
        // Settled holds leave memory a minute after their order was minted; repeats after that
        // are answered from disk.
        tokio::spawn(ledger.run_eviction(
            Duration::from_secs(10),
            Duration::from_secs(60),
            stopping.clone(),
        ));
    }
    if let Some(store) = backends.embedded_idempotency.clone() {
        let mut purge_stop = stopping.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(600)) => {
                        match store.purge_expired().await {
                            Ok(n) if n > 0 => tracing::info!(keys = n, "Purged expired idempotency keys"),
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "Cannot purge idempotency keys"),
                        }
                    }
                    _ = purge_stop.changed() => break,
                }
            }
        });
    }

    let mut server = if api {
        warn_dev_secret(config);
        let state = AppState {
            log: backends.log.clone(),
            ledger: backends.ledger.clone(),
            idempotency: backends.idempotency.clone(),
            orders: backends.orders.clone(),
            limiter: backends.limiter.clone(),
            feed: backends.feed.clone(),
            catalog: backends.catalog.clone(),
            auth: Arc::new(Auth::new(config.jwt_secret.as_bytes())),
            metrics: Some(metrics),
            settings: Arc::new(ApiSettings {
                max_body_bytes: config.max_body_bytes,
                accepted_topic: topology::ACCEPTED.to_owned(),
                idempotency_ttl: config.idempotency_ttl,
                rate_limit: (config.rate_limit_per_second > 0).then_some(Rate {
                    per_second: config.rate_limit_per_second,
                    burst: config.rate_limit_burst,
                }),
            }),
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (listen)", config.listen))?;
        let addr = listener.local_addr()?;
        println!("orderflow listening on http://{addr}");
        println!(
            "  stages: {}",
            if stages.is_empty() {
                "none (ingest only)".to_owned()
            } else {
                stages.join(" ")
            }
        );
        println!("  get a token: cargo run --release -- token --sub alice");
        println!("  then: curl -H \"Authorization: Bearer $TOKEN\" http://{addr}/v1/catalog");
        tracing::info!(%addr, "API listening");
        let mut api_stop = stopping.clone();
        let server = axum::serve(listener, orderflow_ingest::app(state)).with_graceful_shutdown(
            async move {
                let _ = api_stop.changed().await;
            },
        );
        Some(tokio::spawn(server.into_future()))
    } else {
        println!("orderflow worker running stages: {}", stages.join(" "));
        None
    };

    // Run until a signal, or until a part stops on its own: a stage or the API ending while
    // the process serves is a failure, and the process exits non-zero so a supervisor restarts it
    // rather than keep accepting orders that nothing processes.
    let failure: Option<String> = tokio::select! {
        _ = shutdown_signal() => None,
        Some(ended) = tasks.join_next() => Some(match ended {
            Ok(Ok(())) => "a stage stopped unexpectedly".to_owned(),
            Ok(Err(e)) => format!("a stage stopped: {e}"),
            Err(e) => format!("a stage task failed: {e}"),
        }),
        () = ledger_failed(backends.embedded_ledger.clone()) => Some("the stock ledger stopped after a storage failure".to_owned()),
        ended = async {
            match server.as_mut() {
                Some(handle) => handle.await,
                None => std::future::pending().await,
            }
        } => Some(match ended {
            Ok(Ok(())) => "the API server stopped unexpectedly".to_owned(),
            Ok(Err(e)) => format!("the API server failed: {e}"),
            Err(e) => format!("the API server task failed: {e}"),
        }),
    };
    if let Some(reason) = &failure {
        tracing::error!(reason = %reason, "Shutting down after a failure");
    }

    tracing::info!("Shutting down: finishing in-flight batches");
    let _ = stop.send(true);
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(result) = tasks.join_next().await {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "A stage stopped with an error"),
                Err(e) => tracing::error!(error = %e, "A stage task failed"),
            }
        }
        if let Some(handle) = server.take()
            && let Ok(Err(e)) = handle.await
        {
            tracing::error!(error = %e, "The API server failed while stopping");
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("Stages did not stop within 10 s; uncommitted records will be redelivered");
    }
    match failure {
        Some(reason) => bail!("{reason}"),
        None => Ok(()),
    }
}

/// Resolves once the embedded stock ledger reports it cannot serve any more (it refuses calls
/// after a failed write until a restart rebuilds it from disk). A Redis ledger that is away is
/// waited for instead: stages hold their records and `/readyz` says so.
async fn ledger_failed(ledger: Option<orderflow_stores::embedded::EmbeddedLedger>) {
    use orderflow_stores::StockLedger;
    let Some(ledger) = ledger else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if ledger.ready().await.is_err() {
            return;
        }
    }
}

async fn shutdown_signal() {
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
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

async fn audit(config: &Config) -> Result<std::process::ExitCode> {
    let ledger = wiring::connect_ledger(config).await?;
    let levels = ledger.levels().await?;
    let mut breaches = 0;
    println!(
        "{:<12} {:>10} {:>10} {:>10} {:>10}  ok",
        "sku", "initial", "available", "reserved", "committed"
    );
    for l in &levels {
        let ok = l.balanced();
        if !ok {
            breaches += 1;
        }
        println!(
            "{:<12} {:>10} {:>10} {:>10} {:>10}  {}",
            l.sku,
            l.initial,
            l.available,
            l.reserved,
            l.committed,
            if ok { "yes" } else { "BREACH" }
        );
    }
    if breaches > 0 {
        eprintln!(
            "orderflow: audit: {breaches} of {} SKUs break initial = available + reserved + committed",
            levels.len()
        );
        return Ok(std::process::ExitCode::from(1));
    }
    println!(
        "{} SKUs checked: initial = available + reserved + committed holds for all",
        levels.len()
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// The dead-letter topic named by `topic` (a source topic or its `.dlq`), if it is one of ours.
fn dlq_of(topic: &str) -> Result<String> {
    let dlq = if topic.ends_with(".dlq") {
        topic.to_owned()
    } else {
        dlq_topic(topic)
    };
    if !topology::all_topics().contains(&dlq) {
        bail!(
            "unknown topic {topic:?}; dead-letter topics sit beside {}",
            topology::PROJECTOR_INPUTS.join(", ")
        );
    }
    Ok(dlq)
}

/// The consumer group whose committed position marks what `dlq replay` has put back.
const REPLAY_GROUP: &str = "orderflow-dlq-replay";

async fn dlq_replay(config: &Config, topic: &str, limit: usize) -> Result<()> {
    use orderflow_pipeline::{Message, Offsets, header};
    let dlq = dlq_of(topic)?;
    let backends = wiring::connect(config).await?;
    backends.log.ensure_topics(&topology::all_topics()).await?;
    let mut consumer = backends
        .log
        .consumer(REPLAY_GROUP, std::slice::from_ref(&dlq))
        .await?;
    let sources = topology::all_topics();
    // Records this run put back can fail again and land behind us in the same partition; such
    // a partition is finished for this run, and its position stays at that record so a later
    // run (after a fix) replays it.
    let run = uuid::Uuid::now_v7().to_string();
    let mut finished: std::collections::HashSet<u32> = std::collections::HashSet::new();
    let (mut replayed, mut skipped) = (0usize, 0usize);
    while replayed + skipped < limit {
        // The first fetch after joining takes longest; after that, 2 s of quiet means done.
        let wait = Duration::from_secs(if replayed + skipped == 0 { 5 } else { 2 });
        let batch = consumer
            .poll((limit - replayed - skipped).min(500), wait)
            .await?;
        if batch.is_empty() {
            break;
        }
        let mut outputs = Vec::with_capacity(batch.len());
        let mut offsets = Offsets::new();
        for r in &batch {
            if finished.contains(&r.partition) {
                continue;
            }
            if r.header(header::REPLAY_RUN) == Some(run.as_str()) {
                finished.insert(r.partition);
                offsets.insert((r.topic.clone(), r.partition), r.offset);
                continue;
            }
            let next = offsets.entry((r.topic.clone(), r.partition)).or_insert(0);
            *next = (*next).max(r.offset + 1);
            let source = r.header(header::DLQ_SOURCE_TOPIC).unwrap_or_default();
            if !sources.iter().any(|t| t == source) || source.ends_with(".dlq") {
                skipped += 1;
                eprintln!(
                    "skipping {}/{}/{}: no known source topic ({source:?})",
                    r.topic, r.partition, r.offset
                );
                continue;
            }
            let mut headers: Vec<(String, String)> = r
                .headers
                .iter()
                .filter(|(n, _)| !n.starts_with("dlq-") && !n.starts_with("replay"))
                .cloned()
                .collect();
            headers.push((
                header::REPLAYED_FROM.to_owned(),
                format!("{}/{}/{}", r.topic, r.partition, r.offset),
            ));
            headers.push((header::REPLAY_RUN.to_owned(), run.clone()));
            if let Some(stage) = r.header(header::DLQ_STAGE) {
                headers.push((header::REPLAY_FOR.to_owned(), stage.to_owned()));
            }
            outputs.push(Message {
                topic: source.to_owned(),
                key: r.key.clone(),
                value: r.value.clone(),
                headers,
                decoded: None,
            });
            replayed += 1;
        }
        // The position moves only after the replayed records are on their topics: a replay
        // interrupted here repeats some records (stages take repeats), and loses none.
        consumer.complete(outputs, offsets).await?;
        eprintln!("replayed {replayed} record(s) from {dlq} so far");
    }
    consumer.close().await;
    println!("Replayed {replayed} record(s) from {dlq}; skipped {skipped}");
    Ok(())
}

async fn dlq_list(config: &Config, topic: &str, limit: usize) -> Result<()> {
    let dlq = dlq_of(topic)?;
    let backends = wiring::connect(config).await?;
    let records = backends.log.read(&dlq, limit).await?;
    println!("{} record(s) in {dlq}", records.len());
    for r in records {
        let key = String::from_utf8_lossy(&r.key);
        let field = |name: &str| r.header(name).unwrap_or("-").to_owned();
        println!(
            "{}/{} key={key} stage={} attempts={} source={}/{}/{} error={}",
            r.partition,
            r.offset,
            field("dlq-stage"),
            field("dlq-attempts"),
            field("dlq-source-topic"),
            field("dlq-source-partition"),
            field("dlq-source-offset"),
            field("dlq-error"),
        );
    }
    Ok(())
}
