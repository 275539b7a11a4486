//! Pacing of outgoing snapshot streams (`--snapshot-send-mib-per-s`), so that sending a
//! shard's tables to a lagging follower does not take the disk and network bandwidth the
//! shard's own traffic needs (TiKV's `snap-io-max-bytes-per-sec`; etcd does not pace).

use std::cell::Cell;
use std::time::{Duration, Instant};

/// A byte-rate budget shared by all of a shard's outgoing snapshot streams: each reserves
/// its chunk before sending it and waits until the budget has room for it.
#[derive(Debug)]
pub(crate) struct Pacer {
    /// Bytes per second; 0: no limit.
    rate: Cell<u64>,
    /// When the bytes reserved so far will have been sent at `rate`.
    free_at: Cell<Option<Instant>>,
}

impl Pacer {
    pub(crate) fn new(bytes_per_s: u64) -> Pacer {
        Pacer {
            rate: Cell::new(bytes_per_s),
            free_at: Cell::new(None),
        }
    }

    pub(crate) fn set_rate(&self, bytes_per_s: u64) {
        self.rate.set(bytes_per_s);
    }

    /// Reserves `bytes` at time `now`: how long to wait before sending them. Bursts never
    /// build up: time the streams left unused is not saved for later.
    pub(crate) fn reserve(&self, now: Instant, bytes: u64) -> Duration {
        let rate = self.rate.get();
        if rate == 0 {
            return Duration::ZERO;
        }
        let start = self.free_at.get().map_or(now, |t| t.max(now));
        let takes = Duration::from_secs_f64(bytes as f64 / rate as f64);
        self.free_at.set(Some(start + takes));
        start - now
    }

    /// Waits until `bytes` may be sent; returns how long that was.
    pub(crate) async fn pace(&self, bytes: u64) -> Duration {
        let wait = self.reserve(Instant::now(), bytes);
        if !wait.is_zero() {
            glommio::timer::sleep(wait).await;
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_follow_the_rate_and_idle_time_is_not_saved() {
        const MIB: u64 = 1 << 20;
        let p = Pacer::new(2 * MIB);
        let t0 = Instant::now();
        // The first chunk goes at once; the next waits for the first's share of a second.
        assert_eq!(p.reserve(t0, MIB), Duration::ZERO);
        assert_eq!(p.reserve(t0, MIB), Duration::from_millis(500));
        // A third reserved at the same moment queues behind both (two streams share it).
        assert_eq!(p.reserve(t0, 2 * MIB), Duration::from_secs(1));
        // Long after the budget drained: no wait, and no burst credit either.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(p.reserve(later, 4 * MIB), Duration::ZERO);
        assert_eq!(p.reserve(later, MIB), Duration::from_secs(2));
        // No limit.
        p.set_rate(0);
        assert_eq!(p.reserve(later, 100 * MIB), Duration::ZERO);
    }
}
