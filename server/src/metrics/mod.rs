//! Prometheus metrics: what each shard records, and how a scrape gathers it.
//!
//! Recording costs no lock and no atomic: every shard owns a [`ShardMetrics`] (plain `Cell`s and
//! `RefCell`'d hdrhistograms, touched only by the shard's own thread) next to its
//! [`Counters`](crate::counters::Counters) and its engine's `Stats`. A scrape of
//! `http://ADDR/metrics` ([`http`]) is served by shard 0, which asks every shard for a
//! [`ShardSnapshot`] over the cross-shard channels (the same path as the `stats` call) and
//! renders them all in the Prometheus text format ([`exposition`]). The request path pays two
//! clock reads and a histogram increment per call.

pub mod exposition;
pub mod http;
pub mod io;

use std::cell::{Cell, RefCell};
use std::time::Instant;

use corekv_proto::{Op, OpResult};
use hdrhistogram::Histogram;

/// Largest latency a histogram tracks, in microseconds (longer calls are clamped to it).
pub const LATENCY_US_MAX: u64 = 60_000_000;
/// Significant decimal digits kept by latency histograms (1% resolution).
const LATENCY_SIGFIG: u8 = 2;

/// The kinds of operation, for per-operation counts and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// `get`
    Get,
    /// `put`
    Put,
    /// `delete`
    Delete,
    /// `cas`
    Cas,
    /// `scan`
    Scan,
    /// `putEntity`
    PutEntity,
    /// `updateColumns`
    UpdateColumns,
    /// `getColumns`
    GetColumns,
    /// `increment`
    Increment,
}

impl OpKind {
    /// Every kind, in label order.
    pub const ALL: [OpKind; 9] = [
        OpKind::Get,
        OpKind::Put,
        OpKind::Delete,
        OpKind::Cas,
        OpKind::Scan,
        OpKind::PutEntity,
        OpKind::UpdateColumns,
        OpKind::GetColumns,
        OpKind::Increment,
    ];

    /// The kind of `op`.
    pub fn of(op: &Op) -> OpKind {
        match op {
            Op::Get { .. } => OpKind::Get,
            Op::Put { .. } => OpKind::Put,
            Op::Delete { .. } => OpKind::Delete,
            Op::Cas(_) => OpKind::Cas,
            Op::Scan(_) => OpKind::Scan,
            Op::PutEntity(_) => OpKind::PutEntity,
            Op::UpdateColumns(_) => OpKind::UpdateColumns,
            Op::GetColumns(_) => OpKind::GetColumns,
            Op::Increment(_) => OpKind::Increment,
        }
    }

    /// The `op` label value.
    pub fn label(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Put => "put",
            OpKind::Delete => "delete",
            OpKind::Cas => "cas",
            OpKind::Scan => "scan",
            OpKind::PutEntity => "put_entity",
            OpKind::UpdateColumns => "update_columns",
            OpKind::GetColumns => "get_columns",
            OpKind::Increment => "increment",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The RPC methods whose latency is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `get`
    Get,
    /// `put`
    Put,
    /// `delete`
    Delete,
    /// `cas`
    Cas,
    /// `scan`
    Scan,
    /// `batch` (one sample per call, whatever its size)
    Batch,
    /// `putEntity`
    PutEntity,
    /// `updateColumns`
    UpdateColumns,
    /// `getColumns`
    GetColumns,
    /// `increment`
    Increment,
}

impl Method {
    /// Every method, in label order.
    pub const ALL: [Method; 10] = [
        Method::Get,
        Method::Put,
        Method::Delete,
        Method::Cas,
        Method::Scan,
        Method::Batch,
        Method::PutEntity,
        Method::UpdateColumns,
        Method::GetColumns,
        Method::Increment,
    ];

    /// The `method` label value.
    pub fn label(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Put => "put",
            Method::Delete => "delete",
            Method::Cas => "cas",
            Method::Scan => "scan",
            Method::Batch => "batch",
            Method::PutEntity => "put_entity",
            Method::UpdateColumns => "update_columns",
            Method::GetColumns => "get_columns",
            Method::Increment => "increment",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

fn new_histogram() -> Result<Histogram<u64>, hdrhistogram::CreationError> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGFIG)
}

/// One method's latency: a histogram in microseconds and the exact sum (Prometheus' `_sum`).
#[derive(Debug, Clone)]
pub struct Latency {
    /// Call latencies, microseconds.
    pub histogram_us: Histogram<u64>,
    /// Exact sum of the recorded latencies, microseconds.
    pub sum_us: u64,
}

/// What one shard records beyond its counters. Single-threaded: owned by the shard.
#[derive(Debug)]
pub struct ShardMetrics {
    op_errors_total: [Cell<u64>; OpKind::ALL.len()],
    /// Indexed by `Method::index`.
    latency: Vec<RefCell<Latency>>,
    network_bytes_received_total: Cell<u64>,
    network_bytes_sent_total: Cell<u64>,
}

/// A call being timed; [`ShardMetrics::finish`] records it.
#[must_use = "a timer records only when finished"]
pub struct CallTimer {
    method: Method,
    started: Instant,
}

impl ShardMetrics {
    /// Empty metrics (allocates the histograms, a few KiB each).
    pub fn new() -> Result<ShardMetrics, hdrhistogram::CreationError> {
        let mut latency = Vec::with_capacity(Method::ALL.len());
        for _ in Method::ALL {
            latency.push(RefCell::new(Latency {
                histogram_us: new_histogram()?,
                sum_us: 0,
            }));
        }
        Ok(ShardMetrics {
            op_errors_total: Default::default(),
            latency,
            network_bytes_received_total: Cell::new(0),
            network_bytes_sent_total: Cell::new(0),
        })
    }

    /// Adds `n` bytes read from client connections.
    pub fn add_bytes_received(&self, n: usize) {
        let c = &self.network_bytes_received_total;
        c.set(c.get().wrapping_add(n as u64));
    }

    /// Adds `n` bytes written to client connections.
    pub fn add_bytes_sent(&self, n: usize) {
        let c = &self.network_bytes_sent_total;
        c.set(c.get().wrapping_add(n as u64));
    }

    /// Starts timing a call of `method`.
    pub fn start(&self, method: Method) -> CallTimer {
        CallTimer {
            method,
            started: Instant::now(),
        }
    }

    /// Records a finished call.
    pub fn finish(&self, timer: CallTimer) {
        let us = (timer.started.elapsed().as_micros() as u64).clamp(1, LATENCY_US_MAX);
        let mut l = self.latency[timer.method.index()].borrow_mut();
        l.histogram_us.saturating_record(us);
        l.sum_us = l.sum_us.wrapping_add(us);
    }

    /// Counts the errors among `results`, by the kind of operation each answers.
    pub fn count_errors<'a>(
        &self,
        kinds: impl IntoIterator<Item = OpKind>,
        results: impl IntoIterator<Item = &'a OpResult>,
    ) {
        for (kind, r) in kinds.into_iter().zip(results) {
            if matches!(r, OpResult::Error(_)) {
                let c = &self.op_errors_total[kind.index()];
                c.set(c.get().wrapping_add(1));
            }
        }
    }

    /// A copy of everything, to send to the shard serving a scrape.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            op_errors_total: OpKind::ALL
                .iter()
                .map(|k| (*k, self.op_errors_total[k.index()].get()))
                .collect(),
            latency: Method::ALL
                .iter()
                .map(|m| (*m, self.latency[m.index()].borrow().clone()))
                .collect(),
            network_bytes_received_total: self.network_bytes_received_total.get(),
            network_bytes_sent_total: self.network_bytes_sent_total.get(),
        }
    }
}

/// A copy of one shard's [`ShardMetrics`] (sendable to another shard).
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    /// Errors per operation kind.
    pub op_errors_total: Vec<(OpKind, u64)>,
    /// Latency per RPC method.
    pub latency: Vec<(Method, Latency)>,
    /// Bytes read from client connections.
    pub network_bytes_received_total: u64,
    /// Bytes written to client connections.
    pub network_bytes_sent_total: u64,
}

/// Everything one shard reports to a scrape.
#[derive(Debug, Clone)]
pub struct ShardSnapshot {
    /// Shard id.
    pub shard: usize,
    /// The server's per-shard counters (`counters.rs`), as `(name, value)`.
    pub server: Vec<(&'static str, u64)>,
    /// The storage engine's counters (`Stats::counters()`), as `(name, value)`.
    pub storage: Vec<(&'static str, u64)>,
    /// Latencies and per-operation errors.
    pub metrics: MetricsSnapshot,
}

#[cfg(test)]
mod tests {
    use super::*;
    use corekv_proto::{ErrorCode, OpError};

    #[test]
    fn records_latency_and_errors_by_kind() {
        let m = ShardMetrics::new().unwrap();
        m.add_bytes_received(10);
        m.add_bytes_sent(3);
        let t = m.start(Method::Get);
        m.finish(t);
        let t = m.start(Method::Batch);
        m.finish(t);
        let err = OpResult::Error(OpError::new(ErrorCode::Internal, "x"));
        let ok = OpResult::Write { sequence: 1 };
        m.count_errors([OpKind::Put, OpKind::Get, OpKind::Put], [&err, &ok, &err]);
        let s = m.snapshot();
        let errors: Vec<(OpKind, u64)> = s.op_errors_total.clone();
        assert_eq!(errors[OpKind::Put.index()], (OpKind::Put, 2));
        assert_eq!(errors[OpKind::Get.index()], (OpKind::Get, 0));
        let get = &s.latency[Method::Get.index()].1;
        assert_eq!(get.histogram_us.len(), 1);
        assert!(get.sum_us >= 1);
        assert_eq!(s.latency[Method::Put.index()].1.histogram_us.len(), 0);
        assert_eq!(s.latency[Method::Batch.index()].1.histogram_us.len(), 1);
        assert_eq!(
            (s.network_bytes_received_total, s.network_bytes_sent_total),
            (10, 3)
        );
    }
}
