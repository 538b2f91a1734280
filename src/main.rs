//! The `orderflow` binary: the command line and its dispatch to `orderflow-app`, nothing else.
//!
//! `serve` (the default) runs the API, the six stages and the projector in one process on the
//! backends the configuration names: embedded under `./data` unless told otherwise.

use anyhow::Result;
use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand};
use orderflow_app::config::Flags;
use orderflow_app::process::{Role, stage_names};
use orderflow_app::{App, Config, commands, error, telemetry};
use std::process::ExitCode;
use std::time::Duration;

/// jemalloc instead of the system allocator: a profile of the checkout path spent about a fifth
/// of its samples in glibc's malloc and free, and mimalloc, used before, a sixth in its
/// cross-thread frees (buffers made on a tokio worker are freed on the log's or the stores'
/// writer thread); jemalloc cost about a tenth less CPU an order (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// orderflow: a streaming checkout pipeline.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    flags: Flags,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything in one process: API, six stages, projector (the default).
    Serve,
    /// Run only the API.
    Ingest,
    /// Run the named stages as a worker, serving /metrics, /healthz and /readyz on --listen.
    Stage {
        /// Stage names, from the stage table.
        #[arg(required = true, value_parser = PossibleValuesParser::new(stage_names()))]
        names: Vec<String>,
    },
    /// Run only the status projector (and the reservation expiry sweeper beside it).
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
        /// Sign with this PEM private key (RSA: RS256, EC P-256: ES256) instead of jwt.secret;
        /// needed when tokens are verified with jwt.jwks_file or jwt.public_key_file.
        #[arg(long, value_name = "PEM")]
        private_key: Option<std::path::PathBuf>,
        /// The key id (kid) the token names: the key's id in jwt.jwks_file.
        #[arg(long, requires = "private_key")]
        kid: Option<String>,
    },
    /// Check initial = available + reserved + committed for every SKU; exit 1 on a breach.
    Audit,
    /// Price a cart with the configured tables and print the breakdown; exit 1 when a coupon
    /// would reject the order.
    Price {
        /// The cart: a checkout body (JSON); its payment is ignored.
        #[arg(long, value_name = "FILE")]
        cart: std::path::PathBuf,
        /// The customer whose promotion uses count (read from Redis when redis.url is set).
        #[arg(long, value_name = "ID")]
        customer: Option<String>,
        /// Price as at this RFC 3339 time instead of now (promotion windows).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// Exit 0 if the process on --listen (or --url) is ready (GET /readyz), else 1: for
    /// container health checks.
    Healthcheck {
        /// Ask this URL instead, e.g. http://127.0.0.1:8080/readyz.
        #[arg(long)]
        url: Option<String>,
    },
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.flags.config.as_deref(), &cli.flags.overrides()) {
        Ok(config) => config,
        Err(e) => return fail(&e.into()),
    };
    telemetry::init_tracing(config.logging.format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e.into()),
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

/// Prints the error with its causes and exits 2.
fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("orderflow: error: {}", error::one_line(e.as_ref()));
    ExitCode::from(2)
}

/// 0 when a check passed, 1 when it did not.
fn exit(passed: bool) -> ExitCode {
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn run(command: Command, config: Config) -> Result<ExitCode> {
    let ok = ExitCode::SUCCESS;
    let role = match command {
        Command::Serve => Role::Serve,
        Command::Ingest => Role::Ingest,
        Command::Stage { names } => Role::workers(&names)?,
        Command::Project => Role::workers(&[orderflow_app::process::PROJECTOR])?,
        Command::Seed => return Ok(commands::seed(&config).await.map(|()| ok)?),
        Command::Token {
            sub,
            scope,
            ttl_secs,
            private_key,
            kid,
        } => {
            let ttl = Duration::from_secs(ttl_secs);
            let signing = commands::Signing {
                private_key: private_key.as_deref(),
                kid: kid.as_deref(),
            };
            return Ok(commands::token(&config, &sub, &scope, ttl, signing).map(|()| ok)?);
        }
        Command::Audit => return Ok(exit(orderflow_app::audit::audit(&config).await?)),
        Command::Price { cart, customer, at } => {
            let request = orderflow_app::quote::Request {
                cart: &cart,
                customer: customer.as_deref(),
                at: at.as_deref(),
            };
            return Ok(exit(orderflow_app::quote::price(&config, request).await?));
        }
        Command::Healthcheck { url } => {
            return Ok(exit(commands::healthcheck(&config, url.as_deref()).await?));
        }
        Command::Dlq { command } => {
            match command {
                DlqCommand::List { topic, limit } => {
                    commands::dlq_list(&config, &topic, limit).await
                }
                DlqCommand::Replay { topic, limit } => {
                    commands::dlq_replay(&config, &topic, limit).await
                }
            }?;
            return Ok(ok);
        }
    };
    App::build(config, role).await?.run_until_stopped().await?;
    Ok(ok)
}
