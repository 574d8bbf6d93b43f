//! The runtime's clock: wall time derived from tokio's clock, so paused-time tests advance it.

use perdure_core::Timestamp;
use tokio::time::Instant;

/// Wall-clock milliseconds that follow tokio's (possibly paused) clock.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base_wall: Timestamp,
    base_instant: Instant,
}

impl Clock {
    /// A clock starting at the system time now.
    pub fn system() -> Self {
        Self {
            base_wall: Timestamp::from_system_time(std::time::SystemTime::now()),
            base_instant: Instant::now(),
        }
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        self.base_wall.add(self.base_instant.elapsed())
    }

    /// The tokio instant at which the wall clock reaches `t` (never earlier).
    pub fn instant_at(&self, t: Timestamp) -> Instant {
        // Round up by a millisecond so that a timer never fires before its due time.
        self.base_instant + t.since(self.base_wall) + std::time::Duration::from_millis(1)
    }
}
