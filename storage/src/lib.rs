//! orderflow's local storage engines, knowing nothing of the project's traits: the adapters in
//! `orderflow-pipeline` (the `Log`) and `orderflow-stores` (the stores) are thin layers over them.
//!
//! - [`segment`]: the segment log, a directory of checksummed segment files written by one
//!   group-commit thread, with consumer groups, a cache of recent records, retention and crash
//!   recovery; [`segment::legacy`] moves a log that earlier versions kept in redb into it.
//! - [`kv`]: the key-value engine, one redb database behind one group-commit writer thread,
//!   which the embedded stores (ledger, keys, views, outbox, journal) share.
//! - [`record`]: what travels on a log: messages, records, headers, offsets.

pub mod kv;
pub mod record;
pub mod segment;
