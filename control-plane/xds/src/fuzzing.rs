//! Entry points for the fuzzers in `fuzz/` — not an API. One stream's per-type protocol state,
//! driven by whatever requests a client sends and by pushes, as the stream tasks drive it
//! (`server/sotw.rs`, `server/delta.rs`), with what the server relies on asserted after every
//! step: responses decode as what they claim to carry, hold only what the subscription selects,
//! each name once, under a fresh nonce; a SotW client that accepts the latest response holds every
//! resource the server thinks it sent at the version sent, though EDS and RDS pushes carry only
//! what changed; Delta never sends and removes one name at once, and removes only what the client
//! held; state is kept only for served types.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use meshd_proto::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use meshd_proto::type_url::{self, CLUSTER, ENDPOINT, PUSH_ORDER};

use crate::request::SotwRequest;
use crate::state::delta::DeltaType;
use crate::state::sotw::SotwType;
use crate::state::{TypeState, served};
use crate::version::{format_version, parse_version};
use crate::{Any, Resource, ResourceSet};

/// What the generator has, by type: set by the fuzzer between requests.
#[derive(Default)]
struct Generated {
    by_type: BTreeMap<String, Arc<ResourceSet>>,
}

impl Generated {
    /// Each body is the resource's version (16 hex digits) and its name, so a decoded response
    /// says what it carries.
    fn set(&mut self, type_url: &str, resources: &[(String, String)]) {
        let set = resources
            .iter()
            .map(|(name, version)| {
                let version = parse_version(version);
                let body = Any {
                    type_url: type_url.to_string(),
                    value: format!("{}{name}", format_version(version)).into_bytes(),
                };
                Arc::new(Resource::with_version(name.as_str(), version, &body))
            })
            .collect();
        self.by_type.insert(type_url.to_string(), Arc::new(set));
    }

    fn get(&self, type_url: &str) -> Vec<Arc<ResourceSet>> {
        self.by_type.get(type_url).cloned().into_iter().collect()
    }
}

/// `(name, version)` of a body [`Generated`] made.
fn carried(body: &Any) -> (String, u64) {
    let text = String::from_utf8_lossy(&body.value);
    let (version, name) = text.split_at(text.len().min(16));
    (name.to_owned(), parse_version(version))
}

fn selected(names: Option<&crate::Names>, name: &str) -> bool {
    names.is_none_or(|n| n.contains(name))
}

/// What an Envoy that accepts every response it does not NACK would hold of one type.
#[derive(Default)]
struct ClientView {
    /// Responses received and not answered yet: nonce, and what each carried.
    pending: Vec<(String, Vec<(String, u64)>)>,
    held: BTreeMap<String, u64>,
}

/// A SotW stream's state machines.
#[derive(Default)]
pub struct SotwStream {
    types: BTreeMap<&'static str, SotwType>,
    generated: Generated,
    nonces: BTreeSet<String>,
    client: BTreeMap<&'static str, ClientView>,
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
        let type_url = served(&request.type_url)?;
        let state = self
            .types
            .entry(type_url)
            .or_insert_with(|| SotwType::new(type_url));
        let outcome = state.on_request(&SotwRequest::from(request));
        let _ = state.nack_suspects();
        self.client_answered(type_url, request);
        if !outcome.respond {
            return None;
        }
        self.respond(type_url, outcome.full)
    }

    /// A push: each type answers with what changed, if anything did.
    pub fn push(&mut self) -> Vec<DiscoveryResponse> {
        let types: Vec<&'static str> = PUSH_ORDER
            .iter()
            .copied()
            .filter(|t| self.types.contains_key(*t))
            .collect();
        types
            .into_iter()
            .filter_map(|t| self.respond(t, false))
            .collect()
    }

    /// A request naming the last response's nonce answers every response received since the last
    /// answer: the client applied each in order (CDS and LDS replace what it holds, other types add
    /// to it) but the last if it NACKs it, then forgets what it no longer subscribes to. If it
    /// accepted the server's latest response, it now holds what the server thinks it sent.
    fn client_answered(&mut self, type_url: &'static str, request: &DiscoveryRequest) {
        let view = self.client.entry(type_url).or_default();
        let answers = view
            .pending
            .last()
            .is_some_and(|(nonce, _)| *nonce == request.response_nonce);
        if !answers {
            return;
        }
        let wildcard = type_url::is_wildcard(type_url);
        let mut pending = std::mem::take(&mut view.pending);
        if request.error_detail.is_some() {
            pending.pop();
        }
        for (_, carried) in pending {
            if wildcard {
                view.held.clear();
            }
            view.held.extend(carried);
        }
        if request.error_detail.is_some() {
            return;
        }
        let explicit = !request.resource_names.is_empty();
        let named = !wildcard || explicit && !request.resource_names.iter().any(|n| n == "*");
        if named {
            view.held
                .retain(|name, _| request.resource_names.contains(name));
        }
        let Some(state) = self.types.get(type_url) else {
            return;
        };
        let status = state.snapshot();
        if status.sent_nonce != request.response_nonce {
            return;
        }
        for (name, resource) in &status.resources {
            if named && !request.resource_names.contains(name) {
                continue;
            }
            assert_eq!(
                view.held.get(name),
                Some(&resource.version()),
                "{type_url}: client does not hold {name} as sent"
            );
        }
    }

    fn respond(&mut self, type_url: &'static str, force: bool) -> Option<DiscoveryResponse> {
        let generated = self.generated.get(type_url);
        let state = self.types.get_mut(type_url)?;
        let response = state.respond(generated, force)?;
        if type_url == CLUSTER
            && let Some(endpoints) = self.types.get_mut(ENDPOINT)
        {
            endpoints.respond_to_next_ack();
        }
        let encoded = response.encode();
        let decoded: DiscoveryResponse = match encoded.decode() {
            Ok(decoded) => decoded,
            Err(error) => panic!("a response does not decode: {error}"),
        };
        let state = self.types.get(type_url)?;
        let names = state.names().map(|n| &**n);
        let mut seen = BTreeSet::new();
        let mut sent = Vec::new();
        for (body, resource) in decoded.resources.iter().zip(response.resources()) {
            let (name, version) = carried(body);
            assert_eq!(
                (name.as_str(), version),
                (resource.name(), resource.version())
            );
            assert!(selected(names, &name), "{name} sent but not subscribed");
            assert!(seen.insert(name.clone()), "{name} sent twice");
            sent.push((name, version));
        }
        assert_eq!(decoded.resources.len(), response.resources().count());
        assert_eq!(decoded.type_url, type_url);
        assert_eq!(decoded.version_info, format_version(response.version));
        assert!(
            self.nonces.insert(decoded.nonce.clone()),
            "nonce {} reused",
            decoded.nonce
        );
        let status = state.snapshot();
        assert_eq!(status.sent_nonce, decoded.nonce);
        if type_url::is_wildcard(type_url) {
            assert_eq!(
                sent.len(),
                status.resources.len(),
                "CDS and LDS send everything"
            );
        }
        let _ = status.state();
        assert!(self.types.len() <= PUSH_ORDER.len());
        let view = self.client.entry(type_url).or_default();
        view.pending.push((decoded.nonce.clone(), sent));
        Some(decoded)
    }
}

/// A Delta stream's state machines.
#[derive(Default)]
pub struct DeltaStream {
    types: BTreeMap<&'static str, DeltaType>,
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
        let type_url = served(&request.type_url)?;
        let state = self
            .types
            .entry(type_url)
            .or_insert_with(|| DeltaType::new(type_url));
        let outcome = state.on_request(request);
        let _ = state.nack_suspects();
        if !outcome.respond {
            return None;
        }
        self.respond(type_url, outcome.initial)
    }

    /// A push: each type sends what changed, unless its last response is unanswered (then the
    /// answer brings it, as in `server/delta.rs`).
    pub fn push(&mut self) -> Vec<DeltaDiscoveryResponse> {
        let types: Vec<&'static str> = PUSH_ORDER
            .iter()
            .copied()
            .filter(|t| {
                self.types
                    .get_mut(*t)
                    .is_some_and(|state| !state.defer_while_in_flight())
            })
            .collect();
        types
            .into_iter()
            .filter_map(|t| self.respond(t, false))
            .collect()
    }

    fn respond(&mut self, type_url: &'static str, always: bool) -> Option<DeltaDiscoveryResponse> {
        let generated = self.generated.get(type_url);
        let state = self.types.get_mut(type_url)?;
        let held: BTreeSet<String> = state.snapshot().resources.keys().cloned().collect();
        let reply = state.respond(generated, always)?;
        if type_url == CLUSTER
            && let Some(endpoints) = self.types.get_mut(ENDPOINT)
        {
            endpoints.force(&reply.updated);
        }
        let response: DeltaDiscoveryResponse = match reply.response.encode().decode() {
            Ok(decoded) => decoded,
            Err(error) => panic!("a response does not decode: {error}"),
        };
        let state = self.types.get(type_url)?;
        let names = state.names().map(|n| &**n);
        let mut seen = BTreeSet::new();
        for resource in &response.resources {
            let body = resource.resource.clone().unwrap_or_default();
            assert_eq!(
                carried(&body),
                (resource.name.clone(), parse_version(&resource.version))
            );
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
    use meshd_proto::pb::google::rpc::Status;

    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

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
        stream.set_resources(CLUSTER, &pairs(&[("a", "1"), ("b", "1")]));
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

    #[test]
    #[should_panic(expected = "client does not hold")]
    fn the_client_view_catches_a_push_that_leaves_a_change_out() {
        let mut stream = SotwStream::new();
        stream.set_resources(ENDPOINT, &pairs(&[("a", "1")]));
        let request = |nonce: &str| DiscoveryRequest {
            type_url: ENDPOINT.to_string(),
            resource_names: vec!["a".to_owned()],
            response_nonce: nonce.to_owned(),
            ..Default::default()
        };
        let first = stream.request(&request("")).unwrap();
        assert!(stream.request(&request(&first.nonce)).is_none());
        stream.set_resources(ENDPOINT, &pairs(&[("a", "2")]));
        let pushed = stream.push().pop().unwrap();
        // Pretend the client got a response that said nothing of `a`'s new version.
        if let Some(view) = stream.client.get_mut(ENDPOINT) {
            view.pending = vec![(pushed.nonce.clone(), Vec::new())];
        }
        stream.request(&request(&pushed.nonce));
    }

    /// A tiny deterministic generator (xorshift), so a failure here replays.
    struct Dice(u64);

    impl Dice {
        fn roll(&mut self, sides: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % sides
        }
    }

    #[test]
    fn random_sotw_and_delta_scripts_keep_every_invariant() {
        let types = [CLUSTER, ENDPOINT, type_url::LISTENER, type_url::ROUTE];
        for seed in 1..40u64 {
            let mut dice = Dice(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let (mut sotw, mut delta) = (SotwStream::new(), DeltaStream::new());
            for _ in 0..300 {
                let type_url = types[dice.roll(4) as usize];
                let names: Vec<String> = (0..dice.roll(5))
                    .map(|_| format!("r{}", dice.roll(6)))
                    .collect();
                match dice.roll(6) {
                    0 | 1 => {
                        let resources: Vec<(String, String)> = (0..dice.roll(6))
                            .map(|i| (format!("r{i}"), format!("{}", dice.roll(3))))
                            .collect();
                        sotw.set_resources(type_url, &resources);
                        delta.set_resources(type_url, &resources);
                    }
                    2 => {
                        sotw.push();
                        delta.push();
                    }
                    roll => {
                        let error = (roll == 3 && dice.roll(3) == 0).then(|| Status {
                            code: 3,
                            message: "no".to_owned(),
                            details: vec![],
                        });
                        let nonce = match dice.roll(4) {
                            0 => String::new(),
                            1 => "garbage".to_owned(),
                            _ => sotw.last_nonce(type_url).unwrap_or_default(),
                        };
                        sotw.request(&DiscoveryRequest {
                            type_url: type_url.to_owned(),
                            resource_names: names.clone(),
                            response_nonce: nonce,
                            error_detail: error.clone(),
                            ..Default::default()
                        });
                        let split = dice.roll(names.len() as u64 + 1) as usize;
                        delta.request(&DeltaDiscoveryRequest {
                            type_url: type_url.to_owned(),
                            resource_names_subscribe: names[..split].to_vec(),
                            resource_names_unsubscribe: names[split..].to_vec(),
                            response_nonce: delta.last_nonce(type_url).unwrap_or_default(),
                            error_detail: error,
                            ..Default::default()
                        });
                    }
                }
            }
        }
    }

    #[test]
    fn an_eds_push_after_an_ack_carries_only_the_change_and_the_client_converges() {
        let mut stream = SotwStream::new();
        stream.set_resources(ENDPOINT, &pairs(&[("a", "1"), ("b", "1"), ("c", "1")]));
        let names: Vec<String> = ["a", "b", "c"].iter().map(|n| (*n).to_owned()).collect();
        let request = |nonce: &str| DiscoveryRequest {
            type_url: ENDPOINT.to_string(),
            resource_names: names.clone(),
            response_nonce: nonce.to_owned(),
            ..Default::default()
        };
        let first = stream.request(&request("")).unwrap();
        assert_eq!(first.resources.len(), 3);
        assert!(stream.request(&request(&first.nonce)).is_none());
        stream.set_resources(ENDPOINT, &pairs(&[("a", "1"), ("b", "2"), ("c", "1")]));
        let pushed = stream.push();
        assert_eq!(pushed.len(), 1);
        assert_eq!(pushed[0].resources.len(), 1);
        assert_eq!(carried(&pushed[0].resources[0]).0, "b");
        assert!(stream.request(&request(&pushed[0].nonce)).is_none());
    }
}
