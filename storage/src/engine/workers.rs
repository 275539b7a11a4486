//! [`Workers`]: what the engine and its background tasks (flush, compaction) share: the signals
//! between them, the queue of stalled writers, and the first background failure.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;

use crate::signal::Signal;

#[derive(Debug, Default)]
pub(super) struct Workers {
    /// Wakes the tasks: a memtable became immutable, a table was added, or stop.
    work: Signal,
    /// Wakes stalled writers: a flush or compaction finished, or a task stopped.
    room: Signal,
    stop: Cell<bool>,
    /// Tasks still running.
    running: Cell<u32>,
    /// Tasks currently doing a job (not idle).
    busy: Cell<u32>,
    /// A compaction is running (its inputs are not offered to the picker meanwhile).
    compacting: Cell<bool>,
    /// The first failure of a task; the engine refuses writes after it.
    failure: RefCell<Option<String>>,
    /// Stalled writers take numbered tickets and go on in ticket order.
    next_ticket: Cell<u64>,
    /// Tickets whose writers are done waiting (in order or not).
    done_tickets: RefCell<BTreeSet<u64>>,
    /// The smallest ticket not yet done: its writer's turn.
    serving: Cell<u64>,
}

impl Workers {
    /// Asks the tasks to stop and wakes everyone waiting on them.
    pub(super) fn stop(&self) {
        self.stop.set(true);
        self.work.notify();
        self.room.notify();
    }

    pub(super) fn is_stopped(&self) -> bool {
        self.stop.get()
    }

    /// Wakes the tasks: there may be work.
    pub(super) fn wake(&self) {
        self.work.notify();
    }

    pub(super) fn work_generation(&self) -> u64 {
        self.work.generation()
    }

    /// Resolves once [`Workers::wake`] has been called since `seen` was read.
    pub(super) async fn work_changed(&self, seen: u64) {
        self.work.changed(seen).await
    }

    /// Wakes stalled writers and everyone waiting for a flush or for idleness.
    pub(super) fn room_made(&self) {
        self.room.notify();
    }

    pub(super) fn room_generation(&self) -> u64 {
        self.room.generation()
    }

    /// Resolves once [`Workers::room_made`] has been called since `seen` was read.
    pub(super) async fn room_changed(&self, seen: u64) {
        self.room.changed(seen).await
    }

    /// `tasks` tasks are starting.
    pub(super) fn tasks_started(&self, tasks: u32) {
        self.running.set(self.running.get() + tasks);
    }

    /// A task has ended for good.
    pub(super) fn task_ended(&self) {
        self.running.set(self.running.get() - 1);
        self.room.notify();
        self.work.notify();
    }

    /// Resolves once every task has ended.
    pub(super) async fn wait_stopped(&self) {
        while self.running.get() > 0 {
            let seen = self.room.generation();
            if self.running.get() == 0 {
                break;
            }
            self.room.changed(seen).await;
        }
    }

    pub(super) fn job_started(&self) {
        self.busy.set(self.busy.get() + 1);
    }

    pub(super) fn job_ended(&self) {
        self.busy.set(self.busy.get() - 1);
    }

    /// No task is doing a job.
    pub(super) fn is_idle(&self) -> bool {
        self.busy.get() == 0
    }

    pub(super) fn set_compacting(&self, compacting: bool) {
        self.compacting.set(compacting);
    }

    pub(super) fn is_compacting(&self) -> bool {
        self.compacting.get()
    }

    /// Records a task's failure; only the first is kept.
    pub(super) fn fail(&self, reason: String) {
        self.failure.borrow_mut().get_or_insert(reason);
    }

    /// The first failure of a task, if one failed.
    pub(super) fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    pub(super) fn has_failed(&self) -> bool {
        self.failure.borrow().is_some()
    }

    /// Writers waiting for room.
    pub(super) fn stalled_writers(&self) -> u64 {
        self.next_ticket.get() - self.serving.get()
    }

    pub(super) fn take_ticket(&self) -> u64 {
        let t = self.next_ticket.get();
        self.next_ticket.set(t + 1);
        t
    }

    pub(super) fn is_turn(&self, ticket: u64) -> bool {
        ticket == self.serving.get()
    }

    /// The writer holding `ticket` stopped waiting (it goes on, or it failed).
    pub(super) fn done_ticket(&self, ticket: u64) {
        let mut done = self.done_tickets.borrow_mut();
        done.insert(ticket);
        let mut s = self.serving.get();
        while done.remove(&s) {
            s += 1;
        }
        self.serving.set(s);
        drop(done);
        self.room.notify();
    }
}
