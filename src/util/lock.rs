//! Locking a mutex whose last holder panicked.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex` even when a thread panicked while holding it. Every mutex
/// in roomcam guards plain data that is valid whatever happened to its last
/// holder, so one panicked thread (a media thread, a peer task, a signaling
/// handler) must not take the others down with a poisoned lock.
pub fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_mutex_still_locks_and_keeps_its_data() {
        let mutex = Mutex::new(vec![1]);
        let result = std::thread::scope(|s| {
            s.spawn(|| {
                let mut guard = mutex.lock().unwrap();
                guard.push(2);
                panic!("the holder panics");
            })
            .join()
        });
        assert!(result.is_err());
        assert!(mutex.is_poisoned());
        let mut guard = lock_ignoring_poison(&mutex);
        assert_eq!(*guard, [1, 2]);
        guard.push(3);
        drop(guard);
        assert_eq!(*lock_ignoring_poison(&mutex), [1, 2, 3]);
    }
}
