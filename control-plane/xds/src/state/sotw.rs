//! State-of-the-World: a response carries the whole set of a type the proxy is subscribed to, except
//! that EDS and RDS pushes carry only what changed.
//!
//! The xDS protocol groups every SotW type but LDS and CDS "in the same way as in the incremental
//! protocol variants": Envoy keeps the `ClusterLoadAssignment`s and `RouteConfiguration`s a
//! response leaves out, and notifies only the watches whose resources it carries. So after a push
//! an EDS or RDS response holds only the resources whose version differs from what the proxy last
//! accepted. A first request, a changed subscription and the EDS request that follows a CDS
//! response still get everything requested: the protocol requires newly requested names to be
//! sent again, and clusters Envoy re-created wait for their endpoints.
//!
//! What the proxy holds must be known exactly for that: a push that finds a response of its type
//! unanswered waits for the answer (one response of changes in flight, never two whose order of
//! acceptance matters), and after a NACK the next response carries everything again.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use meshd_proto::type_url;

use super::desired::{Desired, Span, diff};
use super::{Outcome, Reply, TypeState};
use crate::names::{Names, intern};
use crate::request::SotwRequest;
use crate::version::{format_version, next_nonce};
use crate::wire::{self, Encoded};
use crate::{Nack, Resource, ResourceSet, TypeStatus};

/// A response to send.
#[derive(Clone, Debug)]
pub(crate) struct SotwResponse {
    pub(crate) type_url: &'static str,
    pub(crate) version: u64,
    pub(crate) nonce: String,
    pub(crate) resources: Vec<Span>,
}

impl SotwResponse {
    pub(crate) fn encode(&self) -> Encoded {
        let runs: Vec<_> = self.resources.iter().map(Span::bytes).collect();
        wire::sotw(self.version, self.type_url, &self.nonce, &runs)
    }

    pub(crate) fn resources(&self) -> impl Iterator<Item = &Arc<Resource>> {
        self.resources.iter().flat_map(|s| s.resources().iter())
    }
}

/// One type URL on one SotW stream.
#[derive(Debug)]
pub(crate) struct SotwType {
    type_url: &'static str,
    /// Pushes carry only what changed (EDS, RDS).
    partial: bool,
    /// `None`: wildcard.
    subscribed: Option<Arc<Names>>,
    /// What the last response made the proxy's set (all of it, even when the response carried
    /// only the changes), and its nonce.
    sent: Option<Arc<Desired>>,
    sent_nonce: String,
    last_sent: Option<SystemTime>,
    /// The set the proxy last accepted.
    acked: Option<Arc<Desired>>,
    /// `acked` is what the proxy holds, name for name: not after a NACK, a change of names or a
    /// fresh request, until it accepts a response again.
    holds_acked: bool,
    /// The last response is not answered yet.
    in_flight: bool,
    /// A push of changes waits for the last response's answer.
    deferred: bool,
    acked_version: String,
    acked_nonce: String,
    nack: Option<Nack>,
    /// Answer the next ACK even if nothing changed: set on EDS when CDS was sent, because Envoy
    /// keeps re-created clusters warming until it sees an EDS response.
    always_respond: bool,
}

impl SotwType {
    /// The next ACK gets a response even if it changes nothing.
    pub(crate) fn respond_to_next_ack(&mut self) {
        self.always_respond = true;
    }

    /// Builds a response from freshly generated sets, or `None` when `force` is off and the proxy
    /// already holds these names at these versions (which also keeps a NACKed set from being
    /// re-sent until something in it changes). `force` asks for everything requested; without it
    /// EDS and RDS carry only what differs from the accepted set, and wait (`None`, answered
    /// with the next ACK or NACK) while the last response is unanswered.
    pub(crate) fn respond(
        &mut self,
        generated: Vec<Arc<ResourceSet>>,
        force: bool,
    ) -> Option<SotwResponse> {
        let desired = Arc::new(Desired::select(generated, self.subscribed.as_ref()));
        if !force
            && let Some(sent) = &self.sent
            && sent.version() == desired.version()
        {
            // Hold the new, equal parts: the old ones may belong to a snapshot gone since.
            if self
                .acked
                .as_ref()
                .is_some_and(|a| a.version() == desired.version())
            {
                self.acked = Some(Arc::clone(&desired));
            }
            self.sent = Some(desired);
            self.deferred = false;
            return None;
        }
        if self.partial && !force && self.in_flight {
            self.deferred = true;
            return None;
        }
        let resources = match &self.acked {
            Some(acked) if self.partial && !force && self.holds_acked => {
                desired.spans_of(diff(acked, &desired).changed)
            }
            _ => desired.spans(),
        };
        let nonce = next_nonce();
        let response = SotwResponse {
            type_url: self.type_url,
            version: desired.version(),
            nonce: nonce.clone(),
            resources,
        };
        self.sent = Some(desired);
        self.sent_nonce = nonce;
        self.last_sent = Some(SystemTime::now());
        self.always_respond = false;
        self.in_flight = true;
        self.deferred = false;
        Some(response)
    }
}

impl TypeState for SotwType {
    type Request = SotwRequest;

    fn new(type_url: &'static str) -> Self {
        Self {
            type_url,
            partial: matches!(type_url, type_url::ENDPOINT | type_url::ROUTE),
            subscribed: None,
            sent: None,
            sent_nonce: String::new(),
            last_sent: None,
            acked: None,
            holds_acked: false,
            in_flight: false,
            deferred: false,
            acked_version: String::new(),
            acked_nonce: String::new(),
            nack: None,
            always_respond: false,
        }
    }

    fn names(&self) -> Option<&Arc<Names>> {
        self.subscribed.as_ref()
    }

    fn on_request(&mut self, request: &SotwRequest) -> Outcome {
        let subscribed = subscription(self.type_url, &request.resource_names);

        // A first request, or one re-sent after a reconnect (the nonce is from another stream):
        // the proxy is owed the full set, and nothing is known of what it holds.
        if request.response_nonce.is_empty() || self.sent_nonce.is_empty() {
            self.subscribed = subscribed;
            self.holds_acked = false;
            return Outcome {
                reply: Reply::None,
                respond: true,
                initial: true,
                full: true,
            };
        }
        if request.response_nonce != self.sent_nonce {
            return Outcome {
                reply: Reply::Stale,
                respond: false,
                initial: false,
                full: false,
            };
        }
        if let Some(error) = &request.error_detail {
            // Subscriptions are left as they were: the ACK that follows a fix then still shows the
            // change and gets its response.
            let nack = Nack {
                version: self
                    .sent
                    .as_ref()
                    .map(|s| format_version(s.version()))
                    .unwrap_or_default(),
                nonce: request.response_nonce.clone(),
                message: error.message.clone(),
            };
            self.nack = Some(nack.clone());
            self.in_flight = false;
            // What the rejection left the proxy holding is not known to the name.
            self.holds_acked = false;
            return Outcome {
                reply: Reply::Nack(nack),
                respond: std::mem::take(&mut self.deferred),
                initial: false,
                full: false,
            };
        }

        self.acked_version.clone_from(&request.version_info);
        self.acked_nonce.clone_from(&request.response_nonce);
        self.acked = self.sent.clone();
        self.holds_acked = true;
        self.in_flight = false;
        // Interned: equal lists are the same `Arc`.
        let names_changed = match (&subscribed, &self.subscribed) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
            (None, None) => false,
            _ => true,
        };
        self.subscribed = subscribed;
        if names_changed {
            // The proxy forgets what it no longer asks for; until it accepts the full response a
            // change of names gets, pushes carry everything (a name dropped and asked for again
            // must be sent again).
            self.holds_acked = false;
        }
        let full = names_changed || std::mem::take(&mut self.always_respond);
        Outcome {
            reply: Reply::Ack,
            respond: full || std::mem::take(&mut self.deferred),
            initial: false,
            full,
        }
    }

    fn snapshot(&self) -> TypeStatus {
        TypeStatus {
            sent_version: self
                .sent
                .as_ref()
                .filter(|_| !self.sent_nonce.is_empty())
                .map(|s| format_version(s.version()))
                .unwrap_or_default(),
            sent_nonce: self.sent_nonce.clone(),
            acked_version: self.acked_version.clone(),
            acked_nonce: self.acked_nonce.clone(),
            nack: self.nack.clone(),
            subscribed: self
                .subscribed
                .as_ref()
                .map(|n| n.iter().map(str::to_owned).collect()),
            resources: self
                .sent
                .iter()
                .flat_map(|s| s.iter())
                .map(|r| (r.name().to_owned(), Arc::clone(r)))
                .collect(),
            last_sent: self.last_sent,
        }
    }

    fn nack_suspects(&self) -> Vec<Arc<Resource>> {
        let Some(sent) = &self.sent else {
            return Vec::new();
        };
        let changed = match &self.acked {
            Some(acked) => diff(acked, sent).changed,
            None => return sent.iter().cloned().collect(),
        };
        sent.spans_of(changed)
            .iter()
            .flat_map(|s| s.resources().iter().cloned())
            .collect()
    }
}

/// CDS and LDS requests with no names (or `*`) are wildcard; other types are named.
fn subscription(type_url: &str, names: &[Bytes]) -> Option<Arc<Names>> {
    if type_url::is_wildcard(type_url) && (names.is_empty() || names.iter().any(|n| n == "*")) {
        None
    } else {
        Some(intern(names))
    }
}

#[cfg(test)]
mod tests;
