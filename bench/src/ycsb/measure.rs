//! Latency measurement, as YCSB's `Measurements` with `measurementtype=hdrhistogram`.
//!
//! Every operation's latency goes into an hdrhistogram (microseconds, 3 significant digits,
//! up to one hour) kept per thread and per operation kind, merged at the end. Successful
//! operations are measured under their name (`READ`), failed ones under `READ-FAILED`, and the
//! return code of each is counted (`Return=OK`, `Return=NOT_FOUND`, ...), as YCSB's `DBWrapper`
//! does. Minimum, maximum and mean are exact (tracked beside the histogram); percentiles come
//! from the histogram.
//!
//! With a target rate, a latency runs from the operation's *intended* start time (its slot in
//! the schedule), not from when the driver got round to sending it, so a stalled server is
//! charged for the requests it delayed (no coordinated omission).

use std::time::Duration;

use hdrhistogram::Histogram;

use super::workload::OpKind;

/// Highest latency tracked: one hour, in microseconds; longer ones are recorded as one hour.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// An operation's outcome, with YCSB's `Status` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// `OK`.
    Ok,
    /// `NOT_FOUND`: the record (or, for a scan, the start key) does not exist.
    NotFound,
    /// `ERROR`: the server answered with an error, or the connection failed.
    Error,
    /// `UNEXPECTED_STATE`: the server answered, but with data the driver did not write.
    UnexpectedState,
}

impl Status {
    /// Every status, in report order.
    pub const ALL: [Status; 4] = [
        Status::Ok,
        Status::NotFound,
        Status::Error,
        Status::UnexpectedState,
    ];

    /// YCSB's name.
    pub fn ycsb_name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::NotFound => "NOT_FOUND",
            Status::Error => "ERROR",
            Status::UnexpectedState => "UNEXPECTED_STATE",
        }
    }

    /// Whether this counts as a success.
    pub fn is_ok(self) -> bool {
        self == Status::Ok
    }
}

/// Creates an empty latency histogram (µs).
pub fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; a failure here is a programming error.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS)
        .expect("valid hdrhistogram bounds")
}

/// Microseconds in `d`, rounded to the nearest µs and clamped to the tracked range.
pub fn latency_us(d: Duration) -> u64 {
    let us = (d.as_nanos() + 500) / 1000;
    (us as u64).min(LATENCY_US_MAX)
}

/// Latencies of one kind of operation with one outcome class (success or failure).
#[derive(Debug, Clone)]
pub struct OpStats {
    /// The distribution, µs.
    pub histogram: Histogram<u64>,
    /// Exact sum, µs (for the mean).
    pub sum_us: u64,
    /// Exact minimum, µs.
    pub min_us: u64,
    /// Exact maximum, µs.
    pub max_us: u64,
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats {
            histogram: latency_histogram(),
            sum_us: 0,
            min_us: u64::MAX,
            max_us: 0,
        }
    }
}

impl OpStats {
    /// Operations recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// Records one latency.
    pub fn record(&mut self, us: u64) {
        self.histogram.saturating_record(us);
        self.sum_us += us;
        self.min_us = self.min_us.min(us);
        self.max_us = self.max_us.max(us);
    }

    /// Adds `other`'s latencies.
    pub fn merge(&mut self, other: &OpStats) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
        self.sum_us += other.sum_us;
        self.min_us = self.min_us.min(other.min_us);
        self.max_us = self.max_us.max(other.max_us);
    }

    /// Mean latency, µs.
    pub fn mean_us(&self) -> f64 {
        if self.count() == 0 {
            0.0
        } else {
            self.sum_us as f64 / self.count() as f64
        }
    }

    /// Latency at `percentile` (0–100), µs: the highest value equivalent to the histogram's
    /// bucket at that rank, as YCSB's `getValueAtPercentile`.
    pub fn percentile_us(&self, percentile: f64) -> u64 {
        self.histogram.value_at_percentile(percentile)
    }
}

/// Everything one thread (or, merged, one phase) measured.
#[derive(Debug, Clone, Default)]
pub struct Measurements {
    /// Successful operations, per kind ([`OpKind::index`]).
    pub ok: [Option<OpStats>; 5],
    /// Failed operations, per kind.
    pub failed: [Option<OpStats>; 5],
    /// Return codes, per kind, per [`Status`] (in [`Status::ALL`] order).
    pub returns: [[u64; 4]; 5],
    /// Transactions completed (a read-modify-write is one, though it records a read and an
    /// update too); YCSB's `opsdone`.
    pub transactions: u64,
    /// With a target rate: how late the driver's timer woke a slot for an operation it was
    /// waiting to start (the driver's own scheduling error, included in the latencies).
    pub timer_lateness: Option<OpStats>,
}

impl Measurements {
    /// Records an operation of `kind` with outcome `status` that took `latency`.
    pub fn record(&mut self, kind: OpKind, status: Status, latency: Duration) {
        let i = kind.index();
        let slot = if status.is_ok() {
            &mut self.ok[i]
        } else {
            &mut self.failed[i]
        };
        slot.get_or_insert_with(OpStats::default)
            .record(latency_us(latency));
        let s = Status::ALL.iter().position(|&x| x == status).unwrap_or(0);
        self.returns[i][s] += 1;
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Measurements) {
        for i in 0..5 {
            for (mine, theirs) in [
                (&mut self.ok[i], &other.ok[i]),
                (&mut self.failed[i], &other.failed[i]),
            ] {
                if let Some(t) = theirs {
                    mine.get_or_insert_with(OpStats::default).merge(t);
                }
            }
            for s in 0..4 {
                self.returns[i][s] += other.returns[i][s];
            }
        }
        self.transactions += other.transactions;
        if let Some(t) = &other.timer_lateness {
            self.timer_lateness
                .get_or_insert_with(OpStats::default)
                .merge(t);
        }
    }

    /// Number of operations of `kind` that returned `status`.
    pub fn returned(&self, kind: OpKind, status: Status) -> u64 {
        let s = Status::ALL.iter().position(|&x| x == status).unwrap_or(0);
        self.returns[kind.index()][s]
    }

    /// Operations that did not return OK, over all kinds.
    pub fn failures(&self) -> u64 {
        self.returns.iter().map(|r| r[1] + r[2] + r[3]).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_successes_from_failures() {
        let mut m = Measurements::default();
        m.record(OpKind::Read, Status::Ok, Duration::from_micros(100));
        m.record(OpKind::Read, Status::Ok, Duration::from_micros(300));
        m.record(OpKind::Read, Status::NotFound, Duration::from_micros(50));
        let ok = m.ok[OpKind::Read.index()].as_ref().unwrap();
        assert_eq!(ok.count(), 2);
        assert_eq!((ok.min_us, ok.max_us), (100, 300));
        assert_eq!(ok.mean_us(), 200.0);
        assert_eq!(m.failed[OpKind::Read.index()].as_ref().unwrap().count(), 1);
        assert_eq!(m.returned(OpKind::Read, Status::Ok), 2);
        assert_eq!(m.returned(OpKind::Read, Status::NotFound), 1);
        assert_eq!(m.failures(), 1);
        assert!(m.ok[OpKind::Update.index()].is_none());
    }

    #[test]
    fn merge_adds_counts_and_keeps_extremes() {
        let (mut a, mut b) = (Measurements::default(), Measurements::default());
        for us in 1..=100 {
            a.record(OpKind::Update, Status::Ok, Duration::from_micros(us));
            b.record(OpKind::Update, Status::Ok, Duration::from_micros(us * 1000));
        }
        a.transactions = 100;
        b.transactions = 100;
        a.merge(&b);
        let s = a.ok[OpKind::Update.index()].as_ref().unwrap();
        assert_eq!(s.count(), 200);
        assert_eq!((s.min_us, s.max_us), (1, 100_000));
        assert_eq!(a.transactions, 200);
        // Half the values are <= 100 us: the median sits at the boundary.
        assert!(s.percentile_us(50.0) <= 100);
        let p99 = s.percentile_us(99.0);
        assert!((98_000..=99_100).contains(&p99), "p99 {p99}");
    }

    #[test]
    fn latency_rounds_to_microseconds_and_clamps() {
        assert_eq!(latency_us(Duration::from_nanos(1499)), 1);
        assert_eq!(latency_us(Duration::from_nanos(1500)), 2);
        assert_eq!(latency_us(Duration::from_secs(10 * 3600)), LATENCY_US_MAX);
    }
}
