//! The run's time base: one monotonic start instant and the wall-clock time that goes with it.
//! Every time in the history and observations is relative to it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The time base of one run. Cheap to copy; share it with whoever records observations (an
/// engine that injects faults) so all times line up.
#[derive(Clone, Copy, Debug)]
pub struct RunClock {
    start: Instant,
    start_unix_ms: u64,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl RunClock {
    /// A clock that starts now.
    pub fn start_now() -> Self {
        Self {
            start: Instant::now(),
            start_unix_ms: unix_ms(SystemTime::now()),
        }
    }

    /// The monotonic start.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Wall-clock start, Unix milliseconds.
    pub fn start_unix_ms(&self) -> u64 {
        self.start_unix_ms
    }

    /// ns since the start, now.
    pub fn now_ns(&self) -> u64 {
        self.ns_at(Instant::now())
    }

    /// ns since the start at `t` (0 before the start).
    pub fn ns_at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start)
            .as_nanos()
            .min(u128::from(u64::MAX)) as u64
    }

    /// The instant `ns` after the start.
    pub fn instant_at(&self, ns: u64) -> Instant {
        self.start + Duration::from_nanos(ns)
    }

    /// Unix milliseconds at `ns` after the start.
    pub fn unix_ms_at(&self, ns: u64) -> u64 {
        self.start_unix_ms + ns / 1_000_000
    }

    /// ns since the start of a wall-clock time in Unix milliseconds (0 when it is earlier),
    /// e.g. a fault record's creation time.
    pub fn ns_from_unix_ms(&self, unix_ms: u64) -> u64 {
        unix_ms
            .saturating_sub(self.start_unix_ms)
            .saturating_mul(1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_line_up() {
        let clock = RunClock::start_now();
        assert_eq!(
            clock.unix_ms_at(2_500_000_000),
            clock.start_unix_ms() + 2_500
        );
        assert_eq!(
            clock.ns_from_unix_ms(clock.start_unix_ms() + 1_500),
            1_500_000_000
        );
        assert_eq!(clock.ns_from_unix_ms(clock.start_unix_ms() - 10), 0);
        assert_eq!(clock.ns_at(clock.instant_at(42)), 42);
        assert!(clock.now_ns() < 1_000_000_000);
    }
}
