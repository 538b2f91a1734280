//! The error every store returns.

use orderflow_storage::kv::EngineError;

/// A store could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend is unreachable or failed; retrying later may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The request refers to something that does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Stored data could not be decoded.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

impl From<EngineError> for StoreError {
    fn from(e: EngineError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl From<orderflow_storage::kv::redb::Error> for StoreError {
    fn from(e: orderflow_storage::kv::redb::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}
