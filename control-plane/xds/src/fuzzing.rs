//! Entry points for the fuzzers in `fuzz/` — not an API. One stream's per-type protocol state,
//! driven by whatever requests a client sends and by pushes, as the stream tasks drive it
//! (`server/sotw.rs`, `server/delta.rs`), with what the server relies on asserted after every
//! step: responses hold only what the subscription selects, each name once, under a fresh nonce;
//! Delta never sends and removes one name at once, and removes only what the client held; state
//! is kept only for served types.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use meshd_proto::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use meshd_proto::type_url::{CLUSTER, ENDPOINT, PUSH_ORDER};

use crate::state::delta::DeltaType;
use crate::state::sotw::SotwType;
use crate::state::{TypeState, served};
use crate::{Any, Resource};

/// What the generator has, by type: set by the fuzzer between requests.
#[derive(Default)]
struct Generated {
    by_type: BTreeMap<String, Vec<Arc<Resource>>>,
}

impl Generated {
    fn set(&mut self, type_url: &str, resources: &[(String, String)]) {
        let list = resources
            .iter()
            .map(|(name, version)| {
                Arc::new(Resource {
                    name: name.clone(),
                    version: version.clone(),
                    body: Any {
                        type_url: type_url.to_string(),
                        value: name.as_bytes().to_vec(),
                    },
                })
            })
            .collect();
        self.by_type.insert(type_url.to_string(), list);
    }

    fn get(&self, type_url: &str) -> Vec<Arc<Resource>> {
        self.by_type.get(type_url).cloned().unwrap_or_default()
    }
}

fn selected(names: Option<&BTreeSet<String>>, name: &str) -> bool {
    names.is_none_or(|n| n.contains(name))
}

/// A SotW stream's state machines.
#[derive(Default)]
pub struct SotwStream {
    types: BTreeMap<String, SotwType>,
    generated: Generated,
    nonces: BTreeSet<String>,
}

impl SotwStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// The generator's resources of `type_url` from now on, as `(name, version)`.
    pub fn set_resources(&mut self, type_url: &str, resources: &[(String, String)]) {
        self.generated.set(type_url, resources);
    }

    /// The nonce of the last response of `type_url`, to ACK or NACK it.
    pub fn last_nonce(&self, type_url: &str) -> Option<String> {
        self.types
            .get(type_url)
            .map(|t| t.snapshot().sent_nonce)
            .filter(|n| !n.is_empty())
    }

    /// One request, as the stream task handles it; the response sent, if any.
    pub fn request(&mut self, request: &DiscoveryRequest) -> Option<DiscoveryResponse> {
        let type_url = request.type_url.as_str();
        if !served(type_url) {
            return None;
        }
        let state = self
            .types
            .entry(type_url.to_string())
            .or_insert_with(|| SotwType::new(type_url));
        let outcome = state.on_request(request);
        let _ = state.nack_suspects();
        if !outcome.respond {
            return None;
        }
        self.respond(type_url, outcome.initial)
    }

    /// A push: each type answers with its set if it changed.
    pub fn push(&mut self) -> Vec<DiscoveryResponse> {
        let types: Vec<&str> = PUSH_ORDER
            .iter()
            .copied()
            .filter(|t| self.types.contains_key(*t))
            .collect();
        types
            .into_iter()
            .filter_map(|t| self.respond(t, false))
            .collect()
    }

    fn respond(&mut self, type_url: &str, force: bool) -> Option<DiscoveryResponse> {
        let generated = self.generated.get(type_url);
        let state = self.types.get_mut(type_url)?;
        let response = state.respond(generated, force)?;
        if type_url == CLUSTER
            && let Some(endpoints) = self.types.get_mut(ENDPOINT)
        {
            endpoints.respond_to_next_ack();
        }
        let state = self.types.get(type_url)?;
        let names = state.names();
        let mut seen = BTreeSet::new();
        for resource in &response.resources {
            let name = String::from_utf8_lossy(&resource.value).into_owned();
            assert!(selected(names, &name), "{name} sent but not subscribed");
            assert!(seen.insert(name.clone()), "{name} sent twice");
        }
        assert_eq!(response.type_url, type_url);
        assert!(
            self.nonces.insert(response.nonce.clone()),
            "nonce {} reused",
            response.nonce
        );
        let status = state.snapshot();
        assert_eq!(status.sent_nonce, response.nonce);
        let _ = status.state();
        assert!(self.types.len() <= PUSH_ORDER.len());
        Some(response)
    }
}

/// A Delta stream's state machines.
#[derive(Default)]
pub struct DeltaStream {
    types: BTreeMap<String, DeltaType>,
    generated: Generated,
    nonces: BTreeSet<String>,
}

impl DeltaStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// The generator's resources of `type_url` from now on, as `(name, version)`.
    pub fn set_resources(&mut self, type_url: &str, resources: &[(String, String)]) {
        self.generated.set(type_url, resources);
    }

    /// The nonce of the last response of `type_url`, to ACK or NACK it.
    pub fn last_nonce(&self, type_url: &str) -> Option<String> {
        self.types
            .get(type_url)
            .map(|t| t.snapshot().sent_nonce)
            .filter(|n| !n.is_empty())
    }

    /// One request, as the stream task handles it; the response sent, if any.
    pub fn request(&mut self, request: &DeltaDiscoveryRequest) -> Option<DeltaDiscoveryResponse> {
        let type_url = request.type_url.as_str();
        if !served(type_url) {
            return None;
        }
        let state = self
            .types
            .entry(type_url.to_string())
            .or_insert_with(|| DeltaType::new(type_url));
        let outcome = state.on_request(request);
        let _ = state.nack_suspects();
        if !outcome.respond {
            return None;
        }
        self.respond(type_url, outcome.initial)
    }

    /// A push: each type sends what changed.
    pub fn push(&mut self) -> Vec<DeltaDiscoveryResponse> {
        let types: Vec<&str> = PUSH_ORDER
            .iter()
            .copied()
            .filter(|t| self.types.contains_key(*t))
            .collect();
        types
            .into_iter()
            .filter_map(|t| self.respond(t, false))
            .collect()
    }

    fn respond(&mut self, type_url: &str, always: bool) -> Option<DeltaDiscoveryResponse> {
        let generated = self.generated.get(type_url);
        let state = self.types.get_mut(type_url)?;
        let held: BTreeSet<String> = state.snapshot().resources.keys().cloned().collect();
        let reply = state.respond(generated, always)?;
        if type_url == CLUSTER
            && let Some(endpoints) = self.types.get_mut(ENDPOINT)
        {
            endpoints.force(&reply.updated);
        }
        let response = reply.response;
        let state = self.types.get(type_url)?;
        let names = state.names();
        let mut seen = BTreeSet::new();
        for resource in &response.resources {
            assert!(
                selected(names, &resource.name),
                "{} sent but not subscribed",
                resource.name
            );
            assert!(
                seen.insert(resource.name.clone()),
                "{} sent twice",
                resource.name
            );
        }
        for name in &response.removed_resources {
            assert!(!seen.contains(name), "{name} sent and removed at once");
            assert!(held.contains(name), "{name} removed but never held");
        }
        assert!(
            self.nonces.insert(response.nonce.clone()),
            "nonce {} reused",
            response.nonce
        );
        let status = state.snapshot();
        assert_eq!(status.sent_nonce, response.nonce);
        let _ = status.state();
        assert!(self.types.len() <= PUSH_ORDER.len());
        Some(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_for_types_the_server_does_not_serve_keep_no_state() {
        let mut stream = SotwStream::new();
        for i in 0..100 {
            let request = DiscoveryRequest {
                type_url: format!("type.googleapis.com/made.up.Type{i}"),
                ..Default::default()
            };
            assert!(stream.request(&request).is_none());
        }
        assert!(stream.types.is_empty());
    }

    #[test]
    fn a_first_request_gets_the_subscribed_set_and_an_ack_gets_nothing_more() {
        let mut stream = SotwStream::new();
        stream.set_resources(
            CLUSTER,
            &[("a".into(), "1".into()), ("b".into(), "1".into())],
        );
        let first = DiscoveryRequest {
            type_url: CLUSTER.to_string(),
            ..Default::default()
        };
        let response = stream.request(&first).unwrap();
        assert_eq!(response.resources.len(), 2);
        let ack = DiscoveryRequest {
            response_nonce: response.nonce.clone(),
            version_info: response.version_info.clone(),
            ..first
        };
        assert!(stream.request(&ack).is_none());
        assert!(stream.push().is_empty());
    }
}
