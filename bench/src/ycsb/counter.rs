//! YCSB's acknowledged insert counter (`AcknowledgedCounterGenerator`): the run phase's inserts
//! take key numbers from it, and reads only target key numbers below its acknowledged limit, so
//! a read never asks for a record whose insert has not completed.
//!
//! `next()` hands out `start, start + 1, ...` to any thread. When an insert completes (whether it
//! succeeded or not, as in YCSB), its number is acknowledged. The *limit* moves past a number
//! only once every number before it is acknowledged too; numbers acknowledged out of order wait
//! in a window of 2^20 slots (YCSB's size). A thread that finds the window busy (another thread
//! is advancing the limit) leaves its number for that thread or the next acknowledgement to
//! pick up, exactly as YCSB's `tryLock` does: the limit may lag, never lead.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Slots in the window of pending acknowledgements (YCSB's `WINDOW_SIZE`).
pub const ACK_WINDOW_SLOTS: u64 = 1 << 20;

/// Shared by every client thread of a run phase.
#[derive(Debug)]
pub struct AcknowledgedCounter {
    next: AtomicU64,
    /// Every number below this one is acknowledged (YCSB's `limit + 1`).
    acknowledged_below: AtomicU64,
    window: Box<[AtomicBool]>,
    advancing: Mutex<()>,
}

/// More than [`ACK_WINDOW_SLOTS`] inserts are outstanding: the driver cannot track them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowFull {
    /// The number being acknowledged.
    pub value: u64,
}

impl AcknowledgedCounter {
    /// A counter whose first `next()` is `start`; numbers below `start` (the loaded records)
    /// count as acknowledged.
    pub fn new(start: u64) -> Self {
        AcknowledgedCounter {
            next: AtomicU64::new(start),
            acknowledged_below: AtomicU64::new(start),
            window: (0..ACK_WINDOW_SLOTS)
                .map(|_| AtomicBool::new(false))
                .collect(),
            advancing: Mutex::new(()),
        }
    }

    /// The next key number to insert.
    pub fn next(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Every key number below this one has been acknowledged: reads may target it.
    pub fn acknowledged_below(&self) -> u64 {
        self.acknowledged_below.load(Ordering::Acquire)
    }

    /// Marks `value` (from [`next`](Self::next)) as done.
    pub fn acknowledge(&self, value: u64) -> Result<(), WindowFull> {
        let slot = &self.window[(value % ACK_WINDOW_SLOTS) as usize];
        if slot.swap(true, Ordering::AcqRel) {
            return Err(WindowFull { value });
        }
        // A poisoned lock only means another thread panicked mid-advance; the window itself is
        // atomics, so carrying on is safe.
        let guard = match self.advancing.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::WouldBlock) => return Ok(()),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        let mut below = self.acknowledged_below.load(Ordering::Acquire);
        let stop = below + ACK_WINDOW_SLOTS;
        while below < stop {
            let slot = &self.window[(below % ACK_WINDOW_SLOTS) as usize];
            if !slot.swap(false, Ordering::AcqRel) {
                break;
            }
            below += 1;
        }
        self.acknowledged_below.store(below, Ordering::Release);
        drop(guard);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn limit_moves_only_over_contiguous_acknowledgements() {
        let c = AcknowledgedCounter::new(10);
        assert_eq!(c.acknowledged_below(), 10);
        let (a, b, d) = (c.next(), c.next(), c.next());
        assert_eq!((a, b, d), (10, 11, 12));
        c.acknowledge(b).unwrap();
        c.acknowledge(d).unwrap();
        assert_eq!(c.acknowledged_below(), 10, "10 is still in flight");
        c.acknowledge(a).unwrap();
        assert_eq!(c.acknowledged_below(), 13);
    }

    #[test]
    fn double_acknowledgement_of_a_pending_slot_is_refused() {
        let c = AcknowledgedCounter::new(0);
        let a = c.next();
        let _gap = c.next();
        let b = c.next();
        c.acknowledge(b).unwrap();
        // b is parked in the window; the same slot cannot take another number.
        assert_eq!(
            c.acknowledge(b + ACK_WINDOW_SLOTS),
            Err(WindowFull {
                value: b + ACK_WINDOW_SLOTS
            })
        );
        c.acknowledge(a).unwrap();
        assert_eq!(c.acknowledged_below(), 1);
    }

    #[test]
    fn concurrent_inserters_never_expose_an_unacknowledged_number() {
        let c = Arc::new(AcknowledgedCounter::new(0));
        let done: Arc<Vec<AtomicBool>> =
            Arc::new((0..40_000).map(|_| AtomicBool::new(false)).collect());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (c, done) = (c.clone(), done.clone());
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let v = c.next();
                        done[v as usize].store(true, Ordering::Release);
                        c.acknowledge(v).unwrap();
                        // Whatever the limit says is done must really be done.
                        let below = c.acknowledged_below();
                        for k in below.saturating_sub(64)..below {
                            assert!(
                                done[k as usize].load(Ordering::Acquire),
                                "{k} exposed early"
                            );
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Every number was acknowledged; the last acknowledger to get the lock saw all of them
        // unless it lost a tryLock race, in which case one more acknowledgement settles it.
        let v = c.next();
        c.acknowledge(v).unwrap();
        assert_eq!(c.acknowledged_below(), 40_001);
    }
}
