//! What the driver needs from a database: four operations on records, issued concurrently by
//! several slots of one client thread over one connection.
//!
//! A [`Backend`] is the recipe (address, options); it is cloned into every client thread, which
//! opens its connections with [`Backend::connect`] on its own (single-threaded) executor. A
//! [`Connection`] is used by `--inflight` slots at once, so its methods take `&self`; it should
//! pipeline their requests (many in flight, answered in order or matched by id).
//!
//! Records arrive encoded as in [`crate::ycsb::record`]; a backend maps them to its own storage
//! (corekv: an entity of one column per field; Redis: a hash; etcd: one value).

pub mod corekv;
pub mod etcd;
pub mod memory;
pub mod redis;

use crate::ycsb::measure::Status;

/// How an update changes a record (YCSB's `writeallfields`).
#[derive(Debug, Clone, Copy)]
pub enum Update<'a> {
    /// Replace the whole record with this encoded record.
    All(&'a [u8]),
    /// Set one field.
    Field {
        /// Field index (`field{index}`).
        index: usize,
        /// New value.
        value: &'a [u8],
    },
}

/// One connection to the database, shared by the slots of one client thread.
#[allow(async_fn_in_trait)] // used with static dispatch on single-threaded executors only
pub trait Connection: 'static {
    /// Writes a new record (YCSB `insert`).
    async fn insert(&self, key: &[u8], record: &[u8]) -> Status;

    /// Reads all fields of a record (YCSB `read`). When `keep` is given and the backend stores
    /// a record as one encoded value, the value is left there for a following
    /// [`update`](Self::update) of the same record.
    async fn read(&self, key: &[u8], keep: Option<&mut Vec<u8>>) -> Status;

    /// Changes an existing record (YCSB `update`). `current`, when given, is the record's
    /// encoded value just read by this slot, which spares a one-value backend its own read.
    async fn update(&self, key: &[u8], update: Update<'_>, current: Option<&[u8]>) -> Status;

    /// Reads `count` consecutive records starting at `start` (YCSB `scan`).
    async fn scan(&self, start: &[u8], count: u64) -> Status;

    /// Why the connection can no longer be used, once it cannot.
    fn failure(&self) -> Option<String>;

    /// The message of the most recent operation that returned `ERROR`, if the backend has one
    /// (taken: the next call returns `None` until another error). Samples go to stderr.
    fn last_error(&self) -> Option<String> {
        None
    }
}

/// A database the driver can talk to.
#[allow(async_fn_in_trait)]
pub trait Backend: Clone + Send + 'static {
    /// Its connections.
    type Conn: Connection;

    /// Name in reports (`corekv`, `redis`, ...).
    fn name(&self) -> &'static str;

    /// Opens a connection; called on the client thread that will use it.
    async fn connect(&self) -> Result<Self::Conn, crate::Error>;
}
