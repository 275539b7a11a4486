//! Per-shard counters: plain `Cell`s owned by the shard (no atomics, no locks on the request
//! path), read on demand by `stats` (and, through the same list, by metrics exporters).

use std::cell::Cell;

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// The server's counters of one shard. Names are stable and carry their unit.
        #[derive(Debug, Default)]
        pub struct Counters {
            $( $(#[$doc])* pub $name: Cell<u64>, )*
        }

        impl Counters {
            /// Every counter as `(name, value)`, in declaration order.
            pub fn list(&self) -> Vec<(&'static str, u64)> {
                vec![$( (stringify!($name), self.$name.get()), )*]
            }
        }
    };
}

counters! {
    /// RPC calls received on this shard's connections (any method).
    calls_total,
    /// Operations received on this shard's connections (a batch counts each of its operations).
    ops_total,
    /// `get` operations received.
    get_ops_total,
    /// `put` operations received.
    put_ops_total,
    /// `delete` operations received.
    delete_ops_total,
    /// `cas` operations received.
    cas_ops_total,
    /// `scan` operations received.
    scan_ops_total,
    /// `putEntity` operations received.
    put_entity_ops_total,
    /// `updateColumns` operations received.
    update_columns_ops_total,
    /// `getColumns` operations received.
    get_columns_ops_total,
    /// `increment` operations received.
    increment_ops_total,
    /// `batch` calls received.
    batch_calls_total,
    /// Operations answered with a typed error.
    op_errors_total,
    /// Operations received here but owned by another shard, sent there over the channels.
    ops_forwarded_out_total,
    /// Operations executed here on behalf of another shard.
    ops_forwarded_in_total,
    /// Scans fanned out from this shard to the others (one per scan per other shard).
    scan_fanouts_total,
    /// Messages (requests and replies) sent to other shards.
    cross_shard_messages_sent_total,
    /// Channel sends to other shards; each carries one or more messages.
    cross_shard_batches_sent_total,
    /// Connections accepted.
    connections_accepted_total,
    /// Connections open now.
    connections_open,
    /// Connections refused because the shard had `shard_connections_max` open.
    connections_rejected_total,
    /// Connections closed for a protocol failure (garbage, malformed or oversized messages).
    protocol_errors_total,
    /// Times a connection was not read because it had too many operations in flight.
    reads_throttled_total,
    /// Depth of this shard's io_uring rings (`--io-concurrency`, else the data directory's
    /// io-properties, else 128); set at start.
    io_ring_depth,
}

/// Adds `n` to a counter.
#[inline]
pub fn add(counter: &Cell<u64>, n: u64) {
    counter.set(counter.get().wrapping_add(n));
}

/// Adds one to a counter.
#[inline]
pub fn incr(counter: &Cell<u64>) {
    add(counter, 1);
}

/// Subtracts one from a gauge.
#[inline]
pub fn decr(gauge: &Cell<u64>) {
    debug_assert!(gauge.get() > 0, "gauge below zero");
    gauge.set(gauge.get().saturating_sub(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_snake_case_and_values_move() {
        let c = Counters::default();
        incr(&c.calls_total);
        add(&c.ops_total, 5);
        incr(&c.connections_open);
        decr(&c.connections_open);
        let list = c.list();
        assert!(list.contains(&("calls_total", 1)));
        assert!(list.contains(&("ops_total", 5)));
        assert!(list.contains(&("connections_open", 0)));
        for (name, _) in list {
            assert!(
                name.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'),
                "{name}"
            );
        }
    }
}
