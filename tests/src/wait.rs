//! Polling: end-to-end tests wait for eventual states (a push arrived, a listener is up) instead
//! of sleeping for a guessed time.

use std::time::{Duration, Instant};

/// Polls `condition` until it holds or `timeout` passes; true if it held. Checks once more at the
/// deadline, so a slow last poll still counts.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    wait_for(timeout, || condition().then_some(())).is_some()
}

/// Polls `probe` until it yields a value or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(20);
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_returns_as_soon_as_the_condition_holds() {
        let mut calls = 0;
        let started = Instant::now();
        assert!(wait_until(Duration::from_secs(10), || {
            calls += 1;
            calls == 3
        }));
        assert_eq!(calls, 3);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn wait_for_gives_up_after_the_timeout() {
        let started = Instant::now();
        assert_eq!(wait_for(Duration::from_millis(200), || None::<()>), None);
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}
