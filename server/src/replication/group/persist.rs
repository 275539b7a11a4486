//! Appends that do not hold up the loop (raft-rs's asynchronous `Ready`): a turn queues its
//! entries in the log's WAL and goes on; the messages that had to wait for them (a follower's
//! acknowledgements) go out once the WAL says they are durable, and raft-rs learns it then
//! ([`raft::RawNode::on_persist_ready`]). So a leader sends the next proposals to its followers
//! while its own append syncs, a follower takes the next append while the last one syncs,
//! and the WAL keeps its writes in flight.
//!
//! A turn that writes the state file (a new term or vote), installs a snapshot or replaces a
//! suffix of the log first waits for everything queued ([`drain`]) and then works as before,
//! waiting for its own append: those turns are rare (elections, a new leader's conflicting
//! entries), and each needs what is queued settled first (a truncation or a snapshot must not
//! overtake an acknowledgement of what it removes; a vote goes out once it is on disk).
//!
//! The commit index recorded meanwhile may pass what this replica's log holds durably; a
//! state file written then (for a compaction) may hold it, and opening clamps it to the log.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use raft::Ready;
use raft::eraftpb::Message;

use super::{Event, Inner, count_append, record_latency, send};

/// A turn whose entries are queued in the WAL and not known durable yet.
pub(super) struct Queued {
    /// The `Ready`'s number, for [`raft::RawNode::on_persist_ready`].
    number: u64,
    /// Every entry up to this index must be durable first.
    index: u64,
    /// What to send then.
    messages: Vec<Message>,
}

/// Turns queued in order.
pub(super) type Queue = VecDeque<Queued>;

/// Whether `ready` may be handled without waiting for its append: it carries no snapshot,
/// no new term or vote, and entries (if any) that follow the log's last one; and it has
/// entries, or earlier turns are still queued (whose durability its messages wait for).
pub(super) fn can_defer(inner: &Inner, ready: &Ready) -> bool {
    ready.snapshot().is_empty()
        && ready
            .hs()
            .is_none_or(|hs| !inner.log.hard_state_changes(hs))
        && inner.log.follows_last(ready.entries())
        && (!ready.entries().is_empty() || !inner.persisting.borrow().is_empty())
}

/// Queues `ready`'s entries and the messages that wait for them, and starts a task that
/// sends those messages and tells the loop ([`Event::Persisted`]) once they are durable. The caller then hands
/// `ready` to `advance_append_async`.
pub(super) fn defer(inner: &Rc<Inner>, ready: &mut Ready) -> Result<(), String> {
    let entries = ready.take_entries();
    let queued = (!entries.is_empty()).then(Instant::now);
    let index = if entries.is_empty() {
        let queue = inner.persisting.borrow();
        let last = queue.back();
        assert!(
            last.is_some(),
            "a turn without entries defers only behind another"
        );
        last.map_or(0, |q| q.index)
    } else {
        count_append(inner, entries.len());
        inner
            .log
            .append_queued(entries)
            .map_err(|e| e.to_string())?
    };
    if let Some(hs) = ready.hs() {
        // Term and vote are unchanged (`can_defer`): only the commit index moved.
        inner.log.set_commit(hs.commit);
    }
    let number = ready.number();
    inner.persisting.borrow_mut().push_back(Queued {
        number,
        index,
        messages: ready.take_persisted_messages(),
    });
    let inner = inner.clone();
    glommio::spawn_local(async move {
        let result = inner.log.wait_durable(index).await;
        if let (Ok(()), Some(queued)) = (&result, queued) {
            record_latency(&inner.log_sync_latency_us, queued);
        }
        // A stopped group takes no further part; a turn already settled (by a `drain`, which a
        // truncation or snapshot follows) has nothing left to wait for.
        let settled = inner
            .persisting
            .borrow()
            .front()
            .is_none_or(|q| q.number > number);
        if inner.stopped.get() || settled {
            return;
        }
        let event = match result {
            Ok(()) => match send_durable(&inner) {
                Some(number) => Event::Persisted(Ok(number)),
                None => return,
            },
            Err(e) => Event::Persisted(Err(e.to_string())),
        };
        let _ = inner.events.unbounded_send(event);
    })
    .detach();
    Ok(())
}

/// Sends the messages of every queued turn the WAL made durable (at once, not a turn of the
/// loop later: a follower's acknowledgement is what its leader's commit waits for); returns
/// the last such turn's number, which raft-rs is to be told of.
fn send_durable(inner: &Inner) -> Option<u64> {
    let durable = inner.log.durable_index();
    let mut messages = Vec::new();
    let mut number = None;
    {
        let mut queue = inner.persisting.borrow_mut();
        while let Some(q) = queue.front_mut() {
            if q.index > durable {
                break;
            }
            messages.append(&mut q.messages);
            number = Some(q.number);
            queue.pop_front();
        }
    }
    send(inner, messages);
    number
}

/// Waits until every queued turn is durable and settles them all: what a turn that waits
/// for its own append needs first.
pub(super) async fn drain(inner: &Inner) -> Result<(), String> {
    let last = inner.persisting.borrow().back().map(|q| q.index);
    let Some(last) = last else {
        return Ok(());
    };
    inner
        .log
        .wait_durable(last)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(number) = send_durable(inner) {
        inner.node.borrow_mut().on_persist_ready(number);
    }
    assert!(
        inner.persisting.borrow().is_empty(),
        "every queued turn is durable"
    );
    Ok(())
}
