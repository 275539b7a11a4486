//! The backlog controller: how much of the core background work (flushes, compactions) gets,
//! as ScyllaDB does for compaction — the background task queue's shares follow the backlog.
//!
//! Two mechanisms, both needed on a glommio executor whose foreground never waits (a loop of
//! reads served from memtables and the block cache):
//!
//! * **Shares.** The background queue has [`Shares::Dynamic`] shares from [`BacklogShares`]:
//!   `background_shares` (default 250 of the foreground's 1000) while nothing waits, rising
//!   linearly with the backlog ([`shares_for`]) to parity (1000) when writes are about to
//!   stall: the memtables' memory is used up (the immutable queue full and the active memtable
//!   full), level 0 reaches `l0_stop_writes_files`, or pending compaction bytes reach
//!   `pending_compaction_bytes_stop`. One queue per executor thread, shared by its engines: it
//!   gets the largest share any live engine asks for.
//! * **Polling.** Glommio reaps I/O completions only between task-queue slices, and a busy
//!   queue keeps the core until its preempt timer fires (100 ms by default) *and* it reaches
//!   a `yield_if_needed`; yielding the queue does not poll for I/O either. A compaction that
//!   awaits hundreds of writes then moves one write per 100 ms under a foreground that never
//!   waits. So while background work is pending, engine calls ([`crate::Engine::get`],
//!   iterator seeks and moves, writes) check in ([`cooperate`]): every
//!   `background_poll_interval_us` (default 1 ms) of such calls, the calling task sleeps on a
//!   1 µs glommio timer, which takes its queue off the core until the executor has polled the
//!   reactor (reaping background I/O) and run the other runnable queues by their shares; at
//!   glommio's own preemption points it yields as `yield_if_needed` would. With no backlog
//!   a check is one `Cell` read. A shorter executor preempt timer is no substitute: glommio
//!   0.9 parks with a runnable `Latency::Matters` queue. Background tasks do not take turns
//!   of their own for the foreground: they would run through a following read workload at
//!   their shares and evict what it reads.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use glommio::{Latency, Shares, SharesManager, TaskQueueHandle};

/// Engine calls between two looks at the clock while background work is pending.
const CALLS_PER_CLOCK_CHECK: u32 = 16;

/// Shares of the background queue at most (glommio's maximum; the foreground's default).
pub(crate) const SHARES_MAX: usize = 1000;

/// What waits for the background tasks of one engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Immutable memtables waiting for their flush.
    pub memtables_immutable: usize,
    /// Bound of that queue (`memtables_immutable_max`).
    pub memtables_immutable_max: usize,
    /// Bytes in the active memtable.
    pub memtable_active_bytes: usize,
    /// `memtable_size_bytes_max`.
    pub memtable_bytes_max: usize,
    /// Tables in level 0.
    pub level0_files: usize,
    /// `l0_compaction_trigger_files`.
    pub level0_trigger_files: usize,
    /// `l0_stop_writes_files`.
    pub level0_stop_files: usize,
    /// Whether the compaction picker has a compaction to run.
    pub compaction_due: bool,
    /// Estimated bytes compaction still has to rewrite.
    pub compaction_pending_bytes: u64,
    /// `pending_compaction_bytes_stop`.
    pub compaction_pending_bytes_stop: u64,
}

impl Backlog {
    /// Whether a flush or a compaction is waiting.
    pub fn pending(&self) -> bool {
        self.memtables_immutable > 0 || self.compaction_due
    }

    /// How close the backlog is to the bounds that stall writes, in thousandths: 0 with
    /// nothing waiting; 1000 at a bound.
    ///
    /// While a memtable waits for its flush: the share of the memtables' memory in use (each
    /// immutable memtable counted full, plus the active one's bytes) out of what writes may
    /// fill before they stall (`memtables_immutable_max + 1` memtables), as ScyllaDB's flush
    /// controller follows dirty memory. One memtable waiting beside a nearly empty active one
    /// is far from a stall, and a read workload that follows a load gets most of the core.
    ///
    /// A compaction due counts at least 500, rising linearly from the level-0 trigger to the
    /// stop bound, or with pending bytes towards their stop bound.
    pub fn permille(&self) -> u64 {
        let mut p = 0u64;
        if self.memtables_immutable > 0 {
            let max = self.memtables_immutable_max.max(1) as u128;
            let size = self.memtable_bytes_max.max(1) as u128;
            let used = (self.memtables_immutable as u128).min(max) * size
                + (self.memtable_active_bytes as u128).min(size);
            p = p.max((1000 * used / ((max + 1) * size)) as u64);
        }
        if self.compaction_due {
            p = p.max(500);
            if self.level0_files >= self.level0_trigger_files {
                let span = self
                    .level0_stop_files
                    .saturating_sub(self.level0_trigger_files)
                    .max(1) as u64;
                let over = (self.level0_files - self.level0_trigger_files) as u64;
                p = p.max(500 + 500 * over.min(span) / span);
            }
            let stop = self.compaction_pending_bytes_stop.max(1);
            let frac =
                (self.compaction_pending_bytes.min(stop) as u128 * 500 / stop as u128) as u64;
            p = p.max(500 + frac);
        }
        p.min(1000)
    }
}

/// Background shares for `backlog`: `base` (the `background_shares` option) with no backlog,
/// rising linearly with [`Backlog::permille`] to [`SHARES_MAX`].
pub fn shares_for(base: usize, backlog: &Backlog) -> usize {
    let base = base.clamp(1, SHARES_MAX);
    let extra = (SHARES_MAX - base) as u64 * backlog.permille() / 1000;
    base + extra as usize
}

/// Per-engine backlog state, read by the executor's controller and the engine's calls.
#[derive(Debug)]
pub(crate) struct EngineBacklog {
    /// `background_shares` of this engine.
    base_shares: usize,
    /// Shares this engine asks for now.
    shares: Cell<usize>,
    /// Whether a flush or compaction waits (and the background tasks still run).
    pending: Cell<bool>,
    /// Engine calls since the clock was last read (while work was pending).
    calls_since_check: Cell<u32>,
    /// When a foreground call last let the executor poll.
    last_poll: Cell<Instant>,
    /// `background_poll_interval_us` (zero: only glommio's own preemption points).
    poll_interval: Duration,
    /// The last backlog seen.
    last: Cell<Backlog>,
    /// The active memtable's fill, in [`MEMTABLE_STEPS`]ths, when the backlog was last read.
    memtable_step: Cell<usize>,
}

/// Steps of the active memtable's fill at which a write re-reads the backlog while a memtable
/// waits for its flush (the shares follow the fill without a re-read per write).
pub(crate) const MEMTABLE_STEPS: usize = 16;

impl EngineBacklog {
    pub(crate) fn new(base_shares: usize, poll_interval_us: u64) -> Self {
        EngineBacklog {
            base_shares,
            shares: Cell::new(base_shares),
            pending: Cell::new(false),
            calls_since_check: Cell::new(0),
            last_poll: Cell::new(Instant::now()),
            poll_interval: Duration::from_micros(poll_interval_us),
            last: Cell::new(Backlog::default()),
            memtable_step: Cell::new(0),
        }
    }

    /// Whether a write that left the active memtable at `bytes` of `max` should re-read the
    /// backlog: a memtable waits for its flush and the fill passed a step since the last read.
    #[inline]
    pub(crate) fn memtable_step_passed(&self, bytes: usize, max: usize) -> bool {
        self.pending.get()
            && self.last.get().memtables_immutable > 0
            && memtable_step(bytes, max) != self.memtable_step.get()
    }

    /// Records the current backlog (`stopped`: the background tasks no longer run).
    pub(crate) fn set(&self, backlog: Backlog, stopped: bool) {
        let pending = backlog.pending() && !stopped;
        self.last.set(backlog);
        self.memtable_step.set(memtable_step(
            backlog.memtable_active_bytes,
            backlog.memtable_bytes_max,
        ));
        self.shares.set(if pending {
            shares_for(self.base_shares, &backlog)
        } else {
            self.base_shares
        });
        let was = self.pending.replace(pending);
        if pending && !was {
            self.last_poll.set(Instant::now());
        }
    }

    pub(crate) fn shares(&self) -> usize {
        self.shares.get()
    }

    pub(crate) fn backlog(&self) -> Backlog {
        self.last.get()
    }

    pub(crate) fn pending(&self) -> bool {
        self.pending.get()
    }

    /// Called by foreground engine calls: what the caller should do to let background work
    /// in (see the module doc).
    #[inline]
    pub(crate) fn check(&self) -> Cooperate {
        if !self.pending.get() {
            return Cooperate::Go;
        }
        if !self.poll_interval.is_zero() {
            let n = self.calls_since_check.get() + 1;
            if n < CALLS_PER_CLOCK_CHECK {
                self.calls_since_check.set(n);
            } else {
                self.calls_since_check.set(0);
                let now = Instant::now();
                if now.duration_since(self.last_poll.get()) >= self.poll_interval {
                    self.last_poll.set(now);
                    return Cooperate::Poll;
                }
            }
        }
        if glommio::executor().need_preempt() {
            Cooperate::Yield
        } else {
            Cooperate::Go
        }
    }
}

fn memtable_step(bytes: usize, max: usize) -> usize {
    (bytes.min(max) as u128 * MEMTABLE_STEPS as u128 / max.max(1) as u128) as usize
}

/// What a foreground call does for the background work (from [`EngineBacklog::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cooperate {
    /// Nothing: go on.
    Go,
    /// The executor wants to preempt: yield (`yield_if_needed`).
    Yield,
    /// Sleep on a 1 µs timer: the executor polls I/O and runs the other queues first.
    Poll,
}

impl Cooperate {
    pub(crate) async fn run(self) {
        match self {
            Cooperate::Go => {}
            Cooperate::Yield => glommio::yield_if_needed().await,
            Cooperate::Poll => glommio::timer::sleep(Duration::from_micros(1)).await,
        }
    }
}

/// Lets background work in when [`EngineBacklog::check`] says so.
#[inline]
pub(crate) async fn cooperate(b: &EngineBacklog) {
    let c = b.check();
    if c != Cooperate::Go {
        c.run().await;
    }
}

/// One per executor thread: the engines living on it and their background queue.
#[derive(Default)]
struct Controller {
    engines: RefCell<Vec<Weak<EngineBacklog>>>,
    queue: Cell<Option<TaskQueueHandle>>,
}

thread_local! {
    static CONTROLLER: Rc<Controller> = Rc::new(Controller::default());
}

impl Controller {
    fn live(&self) -> Vec<Rc<EngineBacklog>> {
        let mut engines = self.engines.borrow_mut();
        engines.retain(|w| w.strong_count() > 0);
        engines.iter().filter_map(Weak::upgrade).collect()
    }

    fn shares(&self) -> usize {
        self.live()
            .iter()
            .map(|e| e.shares())
            .max()
            .unwrap_or(SHARES_MAX / 4)
    }
}

/// The background queue's [`SharesManager`]: the largest share any live engine on this
/// executor asks for, re-read every 10 ms.
#[derive(Debug)]
pub struct BacklogShares;

impl SharesManager for BacklogShares {
    fn shares(&self) -> usize {
        CONTROLLER.with(|c| c.shares())
    }

    fn adjustment_period(&self) -> Duration {
        Duration::from_millis(10)
    }
}

/// This executor thread's background task queue (flushes and compactions of every engine
/// on it), once an engine has been opened here.
pub fn background_queue() -> Option<TaskQueueHandle> {
    CONTROLLER.with(|c| c.queue.get())
}

/// Registers `engine` with this thread's controller and returns the background task queue
/// (made on first use).
pub(crate) fn register(engine: &Rc<EngineBacklog>) -> TaskQueueHandle {
    CONTROLLER.with(|c| {
        c.engines.borrow_mut().push(Rc::downgrade(engine));
        if let Some(q) = c.queue.get() {
            return q;
        }
        let q = glommio::executor().create_task_queue(
            Shares::Dynamic(Rc::new(BacklogShares)),
            Latency::NotImportant,
            "corekv-background",
        );
        c.queue.set(Some(q));
        q
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle() -> Backlog {
        Backlog {
            memtables_immutable_max: 2,
            memtable_bytes_max: 64 << 20,
            level0_trigger_files: 4,
            level0_stop_files: 20,
            compaction_pending_bytes_stop: 64 << 30,
            ..Backlog::default()
        }
    }

    #[test]
    fn no_backlog_keeps_the_base_shares() {
        assert_eq!(shares_for(250, &idle()), 250);
        assert!(!idle().pending());
        assert_eq!(idle().permille(), 0);
    }

    #[test]
    fn shares_rise_with_waiting_memtables() {
        let one = Backlog {
            memtables_immutable: 1,
            ..idle()
        };
        let two = Backlog {
            memtables_immutable: 2,
            ..idle()
        };
        let full = Backlog {
            memtable_active_bytes: 64 << 20,
            ..two
        };
        assert!(one.pending());
        // A third, then two thirds, of the memory writes may fill before they stall.
        assert_eq!(shares_for(250, &one), 250 + 750 * 333 / 1000);
        assert_eq!(two.permille(), 666);
        assert_eq!(shares_for(250, &full), SHARES_MAX);
        let half = Backlog {
            memtable_active_bytes: 32 << 20,
            ..one
        };
        assert_eq!(half.permille(), 500);
        // The active memtable alone is no backlog: nothing waits for a flush.
        let active = Backlog {
            memtable_active_bytes: 64 << 20,
            ..idle()
        };
        assert_eq!(shares_for(250, &active), 250);
    }

    #[test]
    fn a_write_rereads_the_backlog_when_the_active_memtable_passes_a_step() {
        let max = 64 << 20;
        let b = EngineBacklog::new(250, 1000);
        let one = Backlog {
            memtables_immutable: 1,
            ..idle()
        };
        b.set(one, false);
        assert!(!b.memtable_step_passed(max / MEMTABLE_STEPS - 1, max));
        assert!(b.memtable_step_passed(max / MEMTABLE_STEPS, max));
        b.set(
            Backlog {
                memtable_active_bytes: max / MEMTABLE_STEPS,
                ..one
            },
            false,
        );
        assert!(!b.memtable_step_passed(max / MEMTABLE_STEPS + 1, max));
        // Nothing waits for a flush: no re-read.
        b.set(idle(), false);
        assert!(!b.memtable_step_passed(max, max));
    }

    #[test]
    fn shares_rise_with_level0_past_the_trigger() {
        let at = |files| Backlog {
            level0_files: files,
            compaction_due: true,
            ..idle()
        };
        // At the trigger: half way to parity; at the stop bound: parity.
        assert_eq!(shares_for(250, &at(4)), 250 + 375);
        assert!(shares_for(250, &at(12)) > shares_for(250, &at(4)));
        assert_eq!(shares_for(250, &at(20)), SHARES_MAX);
        assert_eq!(shares_for(250, &at(40)), SHARES_MAX);
        let mut last = 0;
        for files in 4..=20 {
            let s = shares_for(250, &at(files));
            assert!(s >= last, "not monotone at {files} files");
            last = s;
        }
    }

    #[test]
    fn shares_rise_with_pending_compaction_bytes() {
        let b = |bytes| Backlog {
            compaction_due: true,
            compaction_pending_bytes: bytes,
            ..idle()
        };
        assert_eq!(shares_for(250, &b(0)), 625);
        assert_eq!(shares_for(250, &b(32 << 30)), 250 + 750 * 750 / 1000);
        assert_eq!(shares_for(250, &b(64 << 30)), SHARES_MAX);
        // Pending bytes without a compaction to run ask for nothing.
        let stuck = Backlog {
            compaction_pending_bytes: 64 << 30,
            ..idle()
        };
        assert_eq!(shares_for(250, &stuck), 250);
    }

    #[test]
    fn base_shares_are_clamped() {
        assert_eq!(shares_for(0, &idle()), 1);
        assert_eq!(shares_for(5000, &idle()), SHARES_MAX);
    }
}
