//! Loopback ports for servers the tests start on the host (etcd, kube-apiserver, meshd).
//!
//! Tests run in parallel threads of one process: two of them asking the kernel for a free port at
//! nearly the same moment could be handed the same one once the first let go of it. Every port
//! handed out here is remembered, so no two callers in this process ever get the same port.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};

use anyhow::Context as _;
use parking_lot::Mutex;

/// Gives up after this many ports in a row that were handed out before.
const ATTEMPTS: usize = 1000;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// `N` distinct loopback ports that were free just now and that this process never handed out
/// before. They are only chosen, not held: the caller's server binds them.
pub fn free_loopback_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let mut handed_out = HANDED_OUT.lock();
    // Held until all N are chosen, so the kernel cannot hand one of them out twice.
    let mut listeners = Vec::with_capacity(N);
    let mut ports = Vec::with_capacity(N);
    for _ in 0..ATTEMPTS {
        if ports.len() == N {
            break;
        }
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a loopback port")?;
        let port = listener.local_addr()?.port();
        if !handed_out.contains(&port) {
            ports.push(port);
        }
        listeners.push(listener);
    }
    let ports: [u16; N] = ports.try_into().map_err(|chosen: Vec<u16>| {
        anyhow::anyhow!(
            "only {} fresh loopback ports after {ATTEMPTS} tries",
            chosen.len()
        )
    })?;
    handed_out.extend(ports);
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_never_handed_out_twice() {
        let mut seen = BTreeSet::new();
        for _ in 0..50 {
            let ports = free_loopback_ports::<3>().expect("loopback ports");
            for port in ports {
                assert!(seen.insert(port), "{port} handed out twice");
            }
        }
    }
}
