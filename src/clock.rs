//! Wall-clock time as the numbers stored records and ids carry.
//!
//! Before 1970 (a badly set clock) every reading is 0 rather than a panic: what is stamped then
//! is wrong, as anything stamped with a wrong clock would be, but nothing stops.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far the pool's clock (Redis's `TIME`, read by the readiness probe) is ahead of this
/// host's, in milliseconds; 0 until measured, and in the embedded default.
static POOL_OFFSET_MS: AtomicI64 = AtomicI64::new(0);

fn since_epoch() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Seconds since the Unix epoch.
pub fn unix_secs() -> u64 {
    since_epoch().as_secs()
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    since_epoch().as_millis() as u64
}

/// Microseconds since the Unix epoch.
pub fn unix_micros() -> u64 {
    since_epoch().as_micros() as u64
}

/// Records how far the pool's clock is ahead of this host's (negative: behind).
pub fn set_pool_offset_millis(offset: i64) {
    POOL_OFFSET_MS.store(offset, Ordering::Relaxed);
}

/// How far the pool's clock is ahead of this host's, in milliseconds.
pub fn pool_offset_millis() -> i64 {
    POOL_OFFSET_MS.load(Ordering::Relaxed)
}

/// Milliseconds since the Unix epoch by the pool's clock: what message ids and index watermarks
/// are made of, so frontends whose own clocks disagree still order mail the same way (a
/// frontend minutes behind would otherwise make ids an index written elsewhere already covers).
pub fn pool_millis() -> u64 {
    unix_millis().saturating_add_signed(pool_offset_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_clock_is_this_clock_moved_by_the_measured_offset() {
        let before = unix_millis();
        set_pool_offset_millis(-600_000);
        let pool = pool_millis();
        set_pool_offset_millis(0);
        assert!(pool + 600_000 >= before && pool + 600_000 <= unix_millis() + 1, "{pool} vs {before}");
    }
}
