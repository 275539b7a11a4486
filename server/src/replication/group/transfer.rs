//! Leader transfer: an operator hands a group's leadership to another replica.

use std::time::{Duration, Instant};

use raft::RawNode;
use raft::StateRole;

use super::{Event, Group, Inner, ProposeError, ReadWaiter};
use crate::replication::log_store::RaftLog;

impl Group {
    /// Asks this replica, the leader, to hand its leadership to `to` (raft-rs brings `to` up
    /// to date, then tells it to campaign at once; proposals are refused meanwhile) and
    /// resolves once this replica knows `to` leads. [`ProposeError::TimedOut`] when that did
    /// not happen within two election timeouts: the transfer is then given up here, but an
    /// order to campaign already sent may still make `to` leader. A transfer to this replica
    /// gives up a pending one.
    pub async fn transfer_leader(&self, to: u64) -> Result<(), ProposeError> {
        self.ask(|tx| Event::TransferLeader(to, tx)).await?;
        let deadline = Instant::now() + 2 * self.inner.config.election_timeout();
        // Finer than a tick: the new leader's first heartbeat tells this replica soon after
        // the election.
        let poll = self
            .inner
            .config
            .tick_interval
            .min(Duration::from_millis(5));
        while self.status().leader != to {
            if self.is_stopped() {
                return Err(ProposeError::Stopped);
            }
            if Instant::now() >= deadline {
                let me = self.inner.config.node_id;
                let _ = self.ask(|tx| Event::TransferLeader(me, tx)).await;
                return Err(ProposeError::TimedOut);
            }
            glommio::timer::sleep(poll).await;
        }
        Ok(())
    }
}

/// Starts handing the leadership to `to` if this replica leads; answers `tx` at once.
pub(super) fn start(inner: &Inner, node: &mut RawNode<RaftLog>, to: u64, tx: ReadWaiter) {
    let answer = if node.raft.state != StateRole::Leader {
        let leader = (node.raft.leader_id != 0).then_some(node.raft.leader_id);
        Err(ProposeError::NotLeader { leader })
    } else {
        if to != node.raft.id {
            // The transferee campaigns at once and the voters grant it without waiting out
            // this leader's lease: no lease reads for the rest of the term (an order to
            // campaign may still arrive after raft-rs gave the transfer up).
            inner.lease.set(None);
            inner.lease_off_term.set(node.raft.term);
        }
        // To itself: raft-rs gives up a pending transfer (and moves nothing).
        node.transfer_leader(to);
        Ok(())
    };
    let _ = tx.send(answer);
}
