//! Every store on the embedded engine: durable across restarts, no server needed.

mod feed;
mod idempotency;
mod ledger;
mod orders;
mod outbox;
mod payments;

pub use feed::EmbeddedStatusFeed;
pub use idempotency::EmbeddedIdempotency;
pub use ledger::EmbeddedLedger;
pub use orders::EmbeddedOrderStore;
pub use outbox::EmbeddedOutbox;
pub use payments::EmbeddedPaymentJournal;

use orderflow_embedded::redb::{self, ReadOnlyTable, ReadTransaction, TableDefinition, TableError};

/// Opens a table for reading; `None` if nothing was ever written to it.
fn open_read<K, V>(
    txn: &ReadTransaction,
    table: TableDefinition<'static, K, V>,
) -> Result<Option<ReadOnlyTable<K, V>>, redb::Error>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
{
    match txn.open_table(table) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
