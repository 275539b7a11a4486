//! A group's settings ([`GroupConfig`]), what it counts and times about its work
//! ([`GroupCounts`], latency histograms), and why a request failed ([`ProposeError`]).

use std::cell::RefCell;
use std::time::{Duration, Instant};

use super::Inner;

/// Settings of a group.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// This node's id (non-zero).
    pub node_id: u64,
    /// The shard (and so the group) number.
    pub shard: u32,
    /// Every voter's node id (this node's included), for a new log.
    pub voters: Vec<u64>,
    /// Time between ticks.
    pub tick_interval: Duration,
    /// Ticks without a leader's heartbeat before a follower campaigns.
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Entries kept in the log behind the engine's flushed state, for followers that lag.
    pub log_retain_entries: u64,
    /// Bytes of entries kept in the log behind the engine's flushed state, at most.
    pub log_retain_bytes: u64,
    /// Bytes of entries a leader holds proposed and not yet committed, at most (raft-rs's
    /// `max_uncommitted_size`; at least its 1 MiB message size): past it a proposal is refused
    /// [`ProposeError::Overloaded`], so a slow or unreachable majority bounds the leader's
    /// memory instead of queueing every client's writes. One entry is always taken.
    pub max_uncommitted_bytes: u64,
    /// How long a proposal or read barrier waits for its outcome.
    pub request_timeout: Duration,
    /// Lease reads (`--read-mode lease`): how long after asking a ReadIndex that a majority
    /// then confirmed this leader answers reads without asking again. Must stay under the
    /// time a follower that heard from the leader refuses to vote for another candidate
    /// (`election_ticks - 1` ticks). None: every read barrier asks (ReadIndex).
    pub lease: Option<Duration>,
}

impl GroupConfig {
    /// The longest lease that is safe with these timings: 90% of the `election_ticks - 1`
    /// ticks a follower that just heard from the leader refuses votes for (clock rates may
    /// differ a little; a late timer only makes the follower wait longer).
    pub fn safe_lease(&self) -> Duration {
        let ticks = self.election_ticks.saturating_sub(1) as u32;
        self.tick_interval * ticks * 9 / 10
    }

    pub(super) fn election_timeout(&self) -> Duration {
        self.tick_interval * self.election_ticks as u32
    }
}

/// Longest latency the group's histograms (commit, log sync) tell apart; longer ones count as this.
pub(super) const LATENCY_US_MAX: u64 = 60_000_000;

/// What a group counts about its own work since it started (`stats`: `raft_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCounts {
    /// Read barriers answered by the leader's lease.
    pub lease_reads: u64,
    /// ReadIndex requests asked of Raft.
    pub read_index_requests: u64,
    /// Durable appends of entries to this replica's log (each one fsync).
    pub log_appends: u64,
    /// Entries those appends wrote: divided by `log_appends`, entries per append.
    pub log_appended_entries: u64,
    /// Append messages sent to followers with at least one entry.
    pub append_messages: u64,
    /// Entries those messages carried: divided by `append_messages`, entries per message.
    pub append_message_entries: u64,
    /// Proposals this replica answered as leader with their outcome.
    pub proposals_committed: u64,
}

/// Why a proposal or read barrier did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This replica is not the leader; `leader` is the one it knows of (None during an
    /// election). Nothing was proposed.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader's node id, if known.
        leader: Option<u64>,
    },
    /// The entry was replaced by another leader's: it was not applied and never will be.
    #[error("the proposal was dropped by a change of leader; it was not applied")]
    Dropped,
    /// A snapshot from another leader replaced this replica's log past the entry before it
    /// was applied here: it may or may not be in the snapshot.
    #[error("a snapshot replaced the log past the proposal; the outcome is unknown")]
    Superseded,
    /// The leader already holds `max_uncommitted_bytes` of entries not yet committed (a
    /// majority is slow or unreachable): nothing was proposed.
    #[error("too many uncommitted writes on the leader; nothing was proposed")]
    Overloaded,
    /// The group had stopped before the request reached it: nothing was proposed.
    #[error("the group has stopped; nothing was proposed")]
    Closed,
    /// The group stopped (shutdown or a storage failure) before the outcome was known.
    #[error("the group stopped; the outcome is unknown")]
    Stopped,
    /// No outcome within the group's request timeout (a partition, a lost leadership): a
    /// proposal may still be applied later; a read barrier had no effect.
    #[error("no outcome within the request timeout")]
    TimedOut,
}

/// Counts an append of `n` entries (none: no append).
pub(super) fn count_append(inner: &Inner, n: usize) {
    if n > 0 {
        count(inner, |c| {
            c.log_appends += 1;
            c.log_appended_entries += n as u64;
        });
    }
}

/// Updates the group's counts.
pub(super) fn count(inner: &Inner, f: impl FnOnce(&mut GroupCounts)) {
    let mut c = inner.counts.get();
    f(&mut c);
    inner.counts.set(c);
}

/// A histogram of microseconds, up to [`LATENCY_US_MAX`].
pub(super) fn latency_histogram() -> Result<hdrhistogram::Histogram<u64>, raft::Error> {
    hdrhistogram::Histogram::new_with_bounds(1, LATENCY_US_MAX, 2)
        .map_err(|e| raft::Error::ConfigInvalid(e.to_string()))
}

/// Records the time since `since` (at least 1 µs, at most the histogram's bound).
pub(super) fn record_latency(h: &RefCell<hdrhistogram::Histogram<u64>>, since: Instant) {
    let us = (since.elapsed().as_micros() as u64).clamp(1, LATENCY_US_MAX);
    h.borrow_mut().saturating_record(us);
}

/// Median and 99th percentile; zeros when nothing was recorded.
pub(super) fn quantiles(h: &RefCell<hdrhistogram::Histogram<u64>>) -> (u64, u64) {
    let h = h.borrow();
    if h.is_empty() {
        return (0, 0);
    }
    (h.value_at_quantile(0.5), h.value_at_quantile(0.99))
}
