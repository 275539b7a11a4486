//! Read barriers (ReadIndex): asked of raft-rs, answered once the replica applied up to them.

use raft::RawNode;
use raft::StateRole;
use std::time::Instant;

use super::{Inner, ProposeError, ReadWaiter, count};
use crate::replication::log_store::RaftLog;

/// Asks raft-rs to confirm this leader's leadership for a read barrier.
fn ask_read_index(inner: &Inner, node: &mut RawNode<RaftLog>, tx: ReadWaiter) {
    let n = inner.next_read.get();
    inner.next_read.set(n + 1);
    count(inner, |c| c.read_index_requests += 1);
    inner.reads.borrow_mut().insert(n, (tx, Instant::now()));
    inner.reads_term.set(node.raft.term);
    node.read_index(n.to_le_bytes().to_vec());
}

/// After a turn: read barriers that waited for the leader's first commit are asked now;
/// barriers asked in an earlier term, or of a replica that is no longer leader, are refused
/// (the client retries; a barrier has no effect).
pub(super) fn settle_reads(inner: &Inner) {
    let mut node = inner.node.borrow_mut();
    let leader = node.raft.state == StateRole::Leader;
    let refusal = || ProposeError::NotLeader {
        leader: (node.raft.leader_id != 0).then_some(node.raft.leader_id),
    };
    if !leader || inner.reads_term.get() != node.raft.term {
        let stale: Vec<_> = inner.reads.borrow_mut().drain().collect();
        for (_, (tx, _)) in stale {
            let _ = tx.send(Err(refusal()));
        }
    }
    if !leader {
        for tx in std::mem::take(&mut *inner.reads_waiting_commit.borrow_mut()) {
            let _ = tx.send(Err(refusal()));
        }
        return;
    }
    if node.raft.commit_to_current_term() {
        let waiting = std::mem::take(&mut *inner.reads_waiting_commit.borrow_mut());
        for tx in waiting {
            ask_read_index(inner, &mut node, tx);
        }
    }
}

/// Answers the read barriers whose index the replica has applied.
pub(super) fn answer_reads(inner: &Inner) {
    let applied = inner.applied.get();
    let mut reads = inner.reads_at.borrow_mut();
    let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut *reads)
        .into_iter()
        .partition(|(index, _)| *index <= applied);
    *reads = waiting;
    for (_, tx) in ready {
        let _ = tx.send(Ok(()));
    }
}

/// A read barrier asked of this replica: refused unless it leads; answered at once (once
/// applied) under a valid lease; otherwise confirmed by a quorum (ReadIndex).
pub(super) fn barrier(inner: &Inner, node: &mut RawNode<RaftLog>, tx: ReadWaiter) {
    if node.raft.state != StateRole::Leader {
        let leader = (node.raft.leader_id != 0).then_some(node.raft.leader_id);
        let _ = tx.send(Err(ProposeError::NotLeader { leader }));
        return;
    }
    if !node.raft.commit_to_current_term() {
        inner.reads_waiting_commit.borrow_mut().push(tx);
        return;
    }
    if let Some((term, until)) = inner.lease.get()
        && term == node.raft.term
        && term != inner.lease_off_term.get()
        && node.raft.lead_transferee.is_none()
        && Instant::now() < until
    {
        // No other leader can exist before `until`: what is committed now is all a read
        // must see, once applied here.
        count(inner, |c| c.lease_reads += 1);
        let committed = node.raft.raft_log.committed;
        if committed <= inner.applied.get() {
            let _ = tx.send(Ok(()));
        } else {
            inner.reads_at.borrow_mut().push((committed, tx));
        }
        return;
    }
    ask_read_index(inner, node, tx);
}

/// Takes a `Ready`'s read states: each confirmed barrier waits for its index to be applied,
/// and with lease reads extends the lease.
pub(super) fn record_read_states(inner: &Inner, states: Vec<raft::ReadState>) {
    for rs in states {
        tracing::debug!(
            index = rs.index,
            applied = inner.applied.get(),
            "read state"
        );
        let Some(n) = rs.request_ctx.get(..8).and_then(|b| b.try_into().ok()) else {
            continue;
        };
        if let Some((tx, asked)) = inner.reads.borrow_mut().remove(&u64::from_le_bytes(n)) {
            inner.reads_at.borrow_mut().push((rs.index, tx));
            // A majority heard from this leader after `asked`: none of them votes for
            // another before `asked` plus the lease.
            if let Some(lease) = inner.config.lease {
                let (term, until) = (inner.reads_term.get(), asked + lease);
                match inner.lease.get() {
                    Some((t, u)) if t == term && u >= until => {}
                    _ => inner.lease.set(Some((term, until))),
                }
            }
        }
    }
}
