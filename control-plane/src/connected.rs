//! The workload addresses proxies are connected from. A change to one workload's inbound config
//! (its served ports, its Pod) matters to the proxies connected now; pushes are announced per
//! resource type to every proxy, so such a change is pushed only when a proxy at that address is
//! connected: one that connects later builds from the newest snapshot anyway.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// How many connected proxies claim each address.
#[derive(Default)]
pub struct ConnectedAddresses {
    counts: Mutex<HashMap<String, usize>>,
}

impl ConnectedAddresses {
    /// Counts a proxy at `address` until the returned registration is dropped.
    pub fn register(self: &Arc<Self>, address: &str) -> Registration {
        *self.counts.lock().entry(address.to_string()).or_default() += 1;
        Registration {
            addresses: Arc::clone(self),
            address: address.to_string(),
        }
    }

    pub fn contains(&self, address: &str) -> bool {
        self.counts.lock().contains_key(address)
    }
}

/// One connected proxy's address, counted while this lives (it lives in the proxy's state, which
/// the stream drops however it ends).
pub struct Registration {
    addresses: Arc<ConnectedAddresses>,
    address: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut counts = self.addresses.counts.lock();
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_connected_while_any_proxy_there_is() {
        let addresses = Arc::new(ConnectedAddresses::default());
        let first = addresses.register("10.0.0.1");
        let second = addresses.register("10.0.0.1");
        assert!(addresses.contains("10.0.0.1"));
        assert!(!addresses.contains("10.0.0.2"));
        drop(first);
        assert!(addresses.contains("10.0.0.1"), "one proxy is still there");
        drop(second);
        assert!(!addresses.contains("10.0.0.1"));
    }
}
