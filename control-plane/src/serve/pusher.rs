//! Push announcements: which resource types changed, at which epoch. Shared by the index (config
//! changes) and certificate rotation, so epochs stay strictly increasing whoever pushes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use meshd_xds::Push;
use tokio::sync::watch;

pub struct Pusher {
    state: parking_lot::Mutex<(u64, BTreeMap<String, u64>)>,
    tx: watch::Sender<Arc<Push>>,
}

impl Pusher {
    /// A pusher and the channel the ADS server reads; epoch 0 (streams refused) until the first push.
    pub fn new() -> (Self, watch::Receiver<Arc<Push>>) {
        let (tx, rx) = watch::channel(Arc::new(Push::unsynced()));
        let pusher = Pusher {
            state: parking_lot::Mutex::default(),
            tx,
        };
        (pusher, rx)
    }

    /// Announces that `types` changed; returns the new epoch.
    pub fn push(&self, types: &[&str], triggered_at: Instant) -> u64 {
        let mut state = self.state.lock();
        state.0 += 1;
        let epoch = state.0;
        for t in types {
            state.1.insert(t.to_string(), epoch);
        }
        let _ = self.tx.send(Arc::new(Push {
            epoch,
            changed_at: state.1.clone(),
            triggered_at,
        }));
        epoch
    }

    /// Pushes only once sources have synced (epoch 0 still refuses streams).
    pub fn push_if_serving(&self, types: &[&str]) {
        if self.state.lock().0 > 0 {
            self.push(types, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_increase_and_remember_when_each_type_last_changed() {
        let (pusher, rx) = Pusher::new();
        pusher.push_if_serving(&["a"]);
        assert_eq!(
            rx.borrow().epoch,
            0,
            "nothing is pushed before the first config"
        );
        assert_eq!(pusher.push(&["a", "b"], Instant::now()), 1);
        assert_eq!(pusher.push(&["b"], Instant::now()), 2);
        let push = rx.borrow().clone();
        assert_eq!(push.changed_at.get("a"), Some(&1));
        assert_eq!(push.changed_at.get("b"), Some(&2));
        pusher.push_if_serving(&["a"]);
        assert_eq!(rx.borrow().epoch, 3);
    }
}
