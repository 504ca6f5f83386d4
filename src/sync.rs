//! The one way raftvip takes a `std::sync::Mutex`: poison-tolerant.
//!
//! A mutex is poisoned when a thread panicked while holding it. In raftvip a panic aborts the
//! process (`release::release_on_panic`), so a poisoned lock is met only in tests and by
//! threads still running while the panic hook releases the VIPs. The guarded data (VIP slots,
//! nonce caches, connection tables) is consistent between statements, so taking it is safe;
//! panicking instead would only add a second failure to the first.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, taking the data even if a panicking thread poisoned it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_mutex_still_yields_its_data() {
        let mutex = Mutex::new(7);
        let _ = std::panic::catch_unwind(|| {
            let _guard = mutex.lock().unwrap();
            panic!("poison it");
        });
        assert!(mutex.is_poisoned());
        assert_eq!(*lock(&mutex), 7);
    }
}
