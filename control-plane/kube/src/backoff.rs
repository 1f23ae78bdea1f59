//! Waiting after watch errors: short at first, longer while errors repeat, none for routine
//! re-lists.

use std::time::Duration;

use futures::{Stream, StreamExt as _};
use kube::runtime::watcher::{self, Event};

/// An expired resourceVersion (410 Gone): routine, the watcher lists again.
pub(crate) fn is_expired(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::WatchError(status) if status.code == 410)
}

/// Backoff between watch errors: from 500 ms, doubling up to 10 s, with jitter; back to the
/// start as soon as the watch delivers anything again, and none after a 410 (a re-list is all
/// that takes). kube-runtime's default keeps its delay for two minutes after the last error, so
/// after an outage even a routine 410 would stall a kind for many seconds.
#[derive(Debug)]
pub(crate) struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(10);

    pub(super) fn new() -> Self {
        WatchBackoff { next: Self::FIRST }
    }

    pub(super) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// How long to wait after `error` before watching again.
    pub(super) fn after(&mut self, error: &watcher::Error) -> Duration {
        if is_expired(error) {
            return Duration::ZERO;
        }
        use std::hash::{BuildHasher as _, Hasher as _};
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        // Between half and all of the delay, so replicas do not retry in lockstep.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        base / 2 + base.mul_f64((random % 1000) as f64 / 2000.0)
    }
}

/// A watcher stream that waits per [`WatchBackoff`] after each error it yields.
pub(crate) fn with_backoff<K: Send + 'static>(
    stream: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send {
    let state = (stream.boxed(), WatchBackoff::new(), Duration::ZERO);
    futures::stream::unfold(state, |(mut stream, mut backoff, wait)| async move {
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let item = stream.next().await?;
        let wait = match &item {
            Ok(_) => {
                backoff.reset();
                Duration::ZERO
            }
            Err(e) => backoff.after(e),
        };
        Some((item, (stream, backoff, wait)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_backoff_grows_resets_and_skips_expired_watches() {
        let failed = || watcher::Error::NoResourceVersion;
        let expired = watcher::Error::WatchError(Box::new(kube::core::Status {
            code: 410,
            ..Default::default()
        }));
        let mut backoff = WatchBackoff::new();
        let first = backoff.after(&failed());
        assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(500));
        for _ in 0..10 {
            backoff.after(&failed());
        }
        assert!(backoff.after(&failed()) >= Duration::from_secs(5));
        assert_eq!(backoff.after(&expired), Duration::ZERO);
        backoff.reset();
        assert!(backoff.after(&failed()) <= Duration::from_millis(500));
    }
}
