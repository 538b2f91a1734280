//! orderflow's application: everything between the command line and the crates that do the
//! work. A reader looking for how a process is put together starts here.
//!
//! - [`config`]: the typed [`Config`], one section per component, layered defaults → file →
//!   `ORDERFLOW_*` environment → flags, checked at start.
//! - [`backends`]: [`Backends::connect`] turns the configured URLs into trait objects, with the
//!   periodic chores their adapters need.
//! - [`supervisor`]: the one [`Supervisor`] every background task runs under.
//! - [`backlog`]: the chore that reads the pipeline's backlog for the API's load shedding.
//! - [`dispatch`]: the outbox's chores: deliver webhooks and emails, remove delivered ones.
//! - [`keys`]: the chore that reloads the JWT key file when it changes (key rotation).
//! - [`process`]: [`App::build`] and [`App::run_until_stopped`] for a [`Role`] (`serve`,
//!   `ingest`, stage workers); every process serves `/metrics`, `/healthz` and `/readyz`.
//! - [`commands`]: `seed`, `token`, `audit`, `dlq list|replay`.
//! - [`tables`]: the catalog and promotion codes, with demo tables built in.
//! - [`telemetry`]: log lines and the metrics recorder; [`gauges`]: the chores that keep the
//!   readiness, disk, stock and dead-letter gauges current.
//! - [`error`]: the [`AppError`] type.

pub mod audit;
pub mod backends;
pub mod backlog;
pub mod commands;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod gauges;
pub mod keys;
pub mod price_reload;
pub mod process;
pub mod quote;
pub mod retention;
pub mod supervisor;
pub mod tables;
pub mod telemetry;

pub use backends::Backends;
pub use config::{Config, Overrides};
pub use error::AppError;
pub use process::{App, Role};
pub use supervisor::{Chore, Supervisor};
