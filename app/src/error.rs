//! Why a process cannot start or had to stop, with the cause kept as the error's source.

use crate::config::ConfigError;
use orderflow_domain::CatalogError;
use orderflow_pipeline::LogError;
use orderflow_storage::kv::EngineError;
use orderflow_stores::StoreError;
use std::path::PathBuf;

/// The application's errors.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The catalog cannot be read.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A pricing table (catalog, promotions, tax, shipping) cannot be used.
    #[error(transparent)]
    Pricing(#[from] orderflow_domain::TableError),
    /// A token cannot be signed.
    #[error("cannot sign a token")]
    Mint(#[source] orderflow_ingest::auth::MintError),
    /// The embedded database in `dir` cannot be opened.
    #[error(
        "cannot open embedded storage in {} (if orderflow is running on it, stop it first, or \
         ask the running process: GET /v1/admin/audit)", dir.display()
    )]
    Storage {
        /// The directory.
        dir: PathBuf,
        /// The engine's error.
        #[source]
        source: EngineError,
    },
    /// A backend named by `key` cannot be used.
    #[error("cannot use {what} ({key})")]
    Backend {
        /// What was being connected, with its address.
        what: String,
        /// The configuration key that names it.
        key: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A log kept by an earlier version cannot be moved into segment files.
    #[error("cannot move the earlier log into segment files (log.url)")]
    LegacyLog(#[from] orderflow_storage::segment::SegmentError),
    /// The log refused an operation.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A store refused an operation.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The API cannot listen.
    #[error("cannot listen on {addr} (api.listen)")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The metrics recorder cannot be installed.
    #[error("cannot install the metrics recorder")]
    Metrics(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The request makes no sense for this configuration (the message says what to change).
    #[error("{0}")]
    Usage(String),
    /// A part of a running process failed and the process stopped.
    #[error("{0}")]
    Failed(String),
}

impl AppError {
    /// A [`AppError::Backend`] error.
    pub fn backend(
        what: impl Into<String>,
        key: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Backend {
            what: what.into(),
            key,
            source: Box::new(source),
        }
    }
}

/// An error and its causes on one line, each cause once: errors here end their message with
/// their cause's (so log lines are complete), and walking the chain would repeat it.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = String::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        let text = cause.to_string();
        if !message.ends_with(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
        next = cause.source();
    }
    message
}
