//! Locking a `std::sync::Mutex` that a panicking thread may have poisoned.
//!
//! Every mutex in cloudpop guards a cache or a table whose invariants hold between statements
//! (no guard is held across a half-done update), so the data behind a poisoned lock is still
//! sound: taking it keeps the process serving instead of turning one panic into many.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, recovering the guard if a previous holder panicked.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
