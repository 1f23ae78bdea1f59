//! Leader election among meshd replicas.
//!
//! Every replica watches and serves (xDS, CA); only the leader writes (root-certificate
//! ConfigMaps, webhook CA bundles, status). Leadership is a coordination.k8s.io/v1 Lease
//! `meshd-leader` (`meshd-leader-<revision>` for a revision other than the default: replicas of
//! one revision compete with each other only) in the root namespace, renewed every 2 s and held for 15 s, as client-go's
//! leader election does it: a replica takes an expired lease, a leader that cannot renew within
//! 10 s steps down before anyone else may take over, and a replica that stops releases it.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use meshd_model::Revision;

use crate::client::is_conflict;

/// The Lease every replica of the default revision competes for.
pub const LEADER_LEASE: &str = "meshd-leader";

/// Timing of the leader Lease.
#[derive(Clone, Copy, Debug)]
pub struct LeaseTiming {
    /// How long a lease is valid without renewal (`leaseDurationSeconds`).
    pub duration: Duration,
    /// How often the holder renews and the others look.
    pub retry: Duration,
    /// A leader that could not renew for this long steps down (shorter than `duration`, so it
    /// has stopped writing before another replica can take over).
    pub renew_deadline: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            duration: Duration::from_secs(15),
            retry: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(10),
        }
    }
}

/// The running election: stop it to release the lease.
pub struct LeaderElection {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaderElection {
    /// Starts competing for `revision`'s lease as `identity`; the receiver says whether we hold it.
    pub fn start(
        client: kube::Client,
        namespace: &str,
        revision: &Revision,
        identity: String,
        timing: LeaseTiming,
    ) -> (LeaderElection, watch::Receiver<bool>) {
        let (leader_tx, leader_rx) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let elector = Elector {
            api: Api::namespaced(client, namespace),
            lease: revision.suffixed(LEADER_LEASE),
            identity,
            timing,
            observed: None,
        };
        let task = tokio::spawn(elector.run(leader_tx, stop_rx));
        (LeaderElection { stop, task }, leader_rx)
    }

    /// Stops competing; a leader gives the lease up so another replica takes over at once.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// `HOSTNAME-xxxxxxxx`: the pod name (a pod's hostname) and a random suffix, so a restarted
/// replica never mistakes its predecessor's lease for its own.
pub fn holder_identity(pod_name: Option<&str>) -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let host = pod_name
        .map(str::to_string)
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "meshd".to_string());
    // RandomState is seeded from the OS's randomness per process.
    let suffix = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{host}-{:08x}", suffix as u32)
}

struct Elector {
    api: Api<Lease>,
    lease: String,
    identity: String,
    timing: LeaseTiming,
    /// Another holder's record as last seen, and when it was first seen: expiry is judged by our
    /// own clock from that moment, never by comparing clocks across machines.
    observed: Option<(String, Option<MicroTime>, Instant)>,
}

impl Elector {
    async fn run(mut self, leader: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        let mut last_renewed: Option<Instant> = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    last_renewed = Some(Instant::now());
                    if !*leader.borrow() {
                        tracing::info!(identity = %self.identity, lease = %self.lease, "became the leader");
                        leader.send_replace(true);
                    }
                }
                Ok(false) => {
                    if *leader.borrow() {
                        tracing::warn!(identity = %self.identity, "lost the leader lease");
                        leader.send_replace(false);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: cannot reach the lease");
                    let stale =
                        last_renewed.is_none_or(|at| at.elapsed() >= self.timing.renew_deadline);
                    if *leader.borrow() && stale {
                        tracing::warn!(identity = %self.identity, "stepping down: lease not renewed in time");
                        leader.send_replace(false);
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.timing.retry) => {}
                _ = stop.changed() => break,
            }
        }
        if *leader.borrow() {
            leader.send_replace(false);
            match self.release().await {
                Ok(()) => tracing::info!(identity = %self.identity, "released the leader lease"),
                Err(e) => tracing::warn!(error = %e, "releasing the leader lease failed"),
            }
        }
    }

    /// One round: true when we hold the lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.lease).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.lease.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.timing.duration.as_secs() as i32),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder != self.identity {
            let record = (holder.clone(), spec.renew_time.clone());
            let first_seen = match &self.observed {
                Some((h, r, at)) if (h, r) == (&record.0, &record.1) => *at,
                _ => {
                    let at = Instant::now();
                    self.observed = Some((record.0, record.1, at));
                    at
                }
            };
            let duration = spec
                .lease_duration_seconds
                .map(|s| Duration::from_secs(s.max(1) as u64))
                .unwrap_or(self.timing.duration);
            if !holder.is_empty() && first_seen.elapsed() < duration {
                return Ok(false);
            }
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            tracing::info!(previous = %holder, "taking over an expired leader lease");
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(self.timing.duration.as_secs() as i32);
        spec.renew_time = Some(now);
        // The resourceVersion we read makes this a compare-and-swap: a racing writer wins, we lose.
        match self
            .api
            .replace(&self.lease, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (as client-go's ReleaseOnCancel): no holder, and already expired.
    async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.lease).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        self.api
            .replace(&self.lease, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_identities_differ_between_replicas_of_one_pod() {
        let a = holder_identity(Some("meshd-7c9f"));
        let b = holder_identity(Some("meshd-7c9f"));
        assert!(a.starts_with("meshd-7c9f-"), "{a}");
        assert_ne!(a, b);
        assert!(!holder_identity(None).is_empty());
    }
}
