//! raft-rs logs through `slog`; this drain forwards its records to `tracing`, so Raft's log
//! lines land in the server's log with the same format and filters (target `raft`).

use slog::{Drain, KV, Level, OwnedKVList, Record, Serializer};

/// A `slog` drain writing to `tracing`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingDrain;

/// Collects a record's key-value pairs as `key=value` text.
struct Fields(String);

impl Serializer for Fields {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        use std::fmt::Write;
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut fields = Fields(String::new());
        let _ = record.kv().serialize(record, &mut fields);
        let _ = values.serialize(record, &mut fields);
        let msg = record.msg();
        let fields = fields.0;
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{msg}{fields}"),
            Level::Warning => tracing::warn!(target: "raft", "{msg}{fields}"),
            Level::Info => tracing::info!(target: "raft", "{msg}{fields}"),
            Level::Debug => tracing::debug!(target: "raft", "{msg}{fields}"),
            Level::Trace => tracing::trace!(target: "raft", "{msg}{fields}"),
        }
        Ok(())
    }
}

/// The logger handed to raft-rs for the group of `shard` on node `node`.
pub fn logger(node: u64, shard: u32) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("node" => node, "shard" => shard))
}
