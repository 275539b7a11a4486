//! The wall clock TTLs are judged by. Tests substitute a manual clock so expiry needs no sleep.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, from the system clock or a manual one (tests).
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Rc<Cell<u64>>>,
}

impl Clock {
    /// The system wall clock.
    pub fn system() -> Self {
        Clock { manual: None }
    }

    /// A clock that reads `start_ms` until moved with [`Clock::advance_ms`] or
    /// [`Clock::set_ms`]. Clones share the same time.
    pub fn manual(start_ms: u64) -> Self {
        Clock {
            manual: Some(Rc::new(Cell::new(start_ms))),
        }
    }

    /// Moves a manual clock forward (no effect on the system clock).
    pub fn advance_ms(&self, ms: u64) {
        if let Some(t) = &self.manual {
            t.set(t.get().saturating_add(ms));
        }
    }

    /// Sets a manual clock (no effect on the system clock).
    pub fn set_ms(&self, ms: u64) {
        if let Some(t) = &self.manual {
            t.set(ms);
        }
    }

    /// Now, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match &self.manual {
            Some(t) => t.get(),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}
