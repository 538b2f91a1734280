//! The error every store returns.

use orderflow_storage::kv::EngineError;
use std::sync::Arc;

/// The cause of a store error, shared so the error stays cheap to clone.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// A store could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend is unreachable or refused the call; retrying later may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend's client failed (`what` names the call); retrying later may succeed.
    #[error("store unavailable: {what}: {source}")]
    Backend {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: Cause,
    },
    /// The request refers to something that does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Stored data is not what it should be.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// Stored data could not be decoded (`what` names it).
    #[error("corrupt stored data: {what}: {source}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// The decoder's error.
        #[source]
        source: Cause,
    },
}

impl StoreError {
    /// A failed call of a backend's client.
    pub fn backend(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Backend {
            what: what.into(),
            source: Arc::new(source),
        }
    }

    /// Stored data that does not decode.
    pub fn decode(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Decode {
            what: what.into(),
            source: Arc::new(source),
        }
    }

    /// Whether retrying later may succeed (the backend is away or failing), as opposed to a
    /// request or stored data that will stay wrong.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Backend { .. })
    }

    /// Whether stored data is wrong: retrying will not help.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, Self::Corrupt(_) | Self::Decode { .. })
    }
}

impl From<EngineError> for StoreError {
    fn from(e: EngineError) -> Self {
        StoreError::backend("embedded storage", e)
    }
}

impl From<orderflow_storage::kv::redb::Error> for StoreError {
    fn from(e: orderflow_storage::kv::redb::Error) -> Self {
        StoreError::backend("embedded storage", e)
    }
}
