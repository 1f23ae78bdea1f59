//! Delta (incremental) xDS: responses carry only the resources that changed and the names removed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use meshd_proto::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use meshd_proto::type_url;

use super::desired::{Changes, Desired, Span, diff, diff_known};
use super::{Outcome, Reply, TypeState};
use crate::names::{Names, intern_sorted};
use crate::version::{format_version, next_nonce, parse_version};
use crate::wire::{self, Encoded};
use crate::{Nack, Resource, ResourceSet, TypeStatus};

const WILDCARD: &str = "*";

/// A response to send.
#[derive(Clone, Debug)]
pub(crate) struct DeltaResponse {
    pub(crate) type_url: &'static str,
    pub(crate) system_version: u64,
    pub(crate) nonce: String,
    pub(crate) resources: Vec<Span>,
    pub(crate) removed: Vec<Arc<str>>,
}

impl DeltaResponse {
    pub(crate) fn encode(&self) -> Encoded {
        let entries = self.resources().map(|r| (r.name(), r.version(), r.field()));
        wire::delta(
            self.system_version,
            self.type_url,
            &self.nonce,
            entries,
            &self.removed,
        )
    }

    pub(crate) fn resources(&self) -> impl Iterator<Item = &Arc<Resource>> + Clone {
        self.resources.iter().flat_map(|s| s.resources().iter())
    }
}

/// A built response, and the names it replaced at a new version.
#[derive(Clone, Debug)]
pub(crate) struct DeltaReply {
    pub response: DeltaResponse,
    /// Names the client held at another version (for CDS: clusters Envoy will re-warm).
    pub updated: Vec<Arc<str>>,
}

/// What the client holds.
#[derive(Debug)]
enum Held {
    /// Nothing sent on this stream yet: what the client said it kept from an earlier stream
    /// (`initial_resource_versions`).
    Declared(HashMap<Arc<str>, u64>),
    /// The set the last response made it hold, but for names it unsubscribed from since.
    Sent {
        desired: Arc<Desired>,
        forgotten: BTreeSet<Arc<str>>,
    },
}

/// One type URL on one Delta stream.
#[derive(Debug)]
pub(crate) struct DeltaType {
    type_url: &'static str,
    requested: bool,
    wildcard: bool,
    /// Names subscribed explicitly, interned (Delta EDS subscriptions are as long as SotW's).
    names: Arc<Names>,
    held: Held,
    /// Sent in the next response even if the client holds them at the current version.
    forced: BTreeSet<Arc<str>>,
    /// What the last response brought.
    last_sent: Vec<Span>,
    sent_version: String,
    sent_nonce: String,
    last_sent_at: Option<SystemTime>,
    acked_version: String,
    acked_nonce: String,
    nack: Option<Nack>,
    /// The last response is not answered yet.
    in_flight: bool,
    /// A push waits for the last response's answer: the client gets one response per type at a
    /// time, so under churn changes coalesce instead of queueing behind a slow client.
    deferred: bool,
}

impl DeltaType {
    /// Whether a push must wait for the answer to the last response (and is now owed then).
    pub(crate) fn defer_while_in_flight(&mut self) -> bool {
        if self.in_flight {
            self.deferred = true;
        }
        self.in_flight
    }

    /// Whether the next response must carry some names regardless of versions.
    pub(crate) fn has_forced(&self) -> bool {
        !self.forced.is_empty()
    }

    /// Resends these names (those subscribed) in the next response, even if unchanged.
    pub(crate) fn force<'a>(&mut self, names: impl IntoIterator<Item = &'a Arc<str>>) {
        for name in names {
            if self.wildcard || self.names.contains(name) {
                self.forced.insert(Arc::clone(name));
            }
        }
    }

    fn first_request(&mut self, request: &DeltaDiscoveryRequest) {
        let subscribe = &request.resource_names_subscribe;
        self.wildcard = type_url::is_wildcard(self.type_url)
            && (subscribe.is_empty() || subscribe.iter().any(|n| n == WILDCARD));
        let mut names: BTreeSet<&str> = subscribe
            .iter()
            .map(String::as_str)
            .filter(|n| *n != WILDCARD)
            .collect();
        for name in &request.resource_names_unsubscribe {
            names.remove(name.as_str());
        }
        self.names = intern_sorted(&names.into_iter().collect::<Vec<_>>(), None);
        // What the client kept from an earlier stream: sent again only if it differs.
        self.held = Held::Declared(
            request
                .initial_resource_versions
                .iter()
                .map(|(name, version)| (Arc::from(name.as_str()), parse_version(version)))
                .collect(),
        );
    }

    fn reply(&mut self, request: &DeltaDiscoveryRequest) -> Reply {
        if request.response_nonce.is_empty() {
            return Reply::None;
        }
        if request.response_nonce != self.sent_nonce {
            return Reply::Stale;
        }
        self.in_flight = false;
        if let Some(error) = &request.error_detail {
            let nack = Nack {
                version: self.sent_version.clone(),
                nonce: request.response_nonce.clone(),
                message: error.message.clone(),
            };
            self.nack = Some(nack.clone());
            return Reply::Nack(nack);
        }
        self.acked_version.clone_from(&self.sent_version);
        self.acked_nonce.clone_from(&request.response_nonce);
        Reply::Ack
    }

    /// Applies a request's subscription changes; whether something must be sent.
    fn subscribe(&mut self, request: &DeltaDiscoveryRequest) -> bool {
        if request.resource_names_subscribe.is_empty()
            && request.resource_names_unsubscribe.is_empty()
        {
            return false;
        }
        let mut names: BTreeSet<&str> = self.names.iter().collect();
        let mut respond = false;
        for name in &request.resource_names_subscribe {
            if name == WILDCARD {
                if type_url::is_wildcard(self.type_url) && !self.wildcard {
                    self.wildcard = true;
                    respond = true;
                }
            } else {
                names.insert(name);
                self.forced.insert(Arc::from(name.as_str()));
                respond = true;
            }
        }
        let mut unsubscribed: Vec<&str> = Vec::new();
        for name in &request.resource_names_unsubscribe {
            if name == WILDCARD {
                self.wildcard = false;
            } else {
                names.remove(name.as_str());
                self.forced.remove(name.as_str());
                unsubscribed.push(name);
            }
        }
        self.names = intern_sorted(&names.iter().copied().collect::<Vec<_>>(), None);
        if !self.wildcard {
            // The client forgets what it no longer subscribes to; a later subscribe must resend it.
            let subscribed = &self.names;
            match &mut self.held {
                Held::Declared(known) => known.retain(|name, _| subscribed.contains(name)),
                Held::Sent { desired, forgotten } => forgotten.extend(
                    desired
                        .iter()
                        .filter(|r| !subscribed.contains(r.name()))
                        .map(|r| Arc::clone(r.shared_name())),
                ),
            }
        }
        respond
    }

    /// Builds a response with what the client lacks or holds at another version, and the names it
    /// holds that no longer exist. `None` when there is nothing to say and `always` is off.
    pub(crate) fn respond(
        &mut self,
        generated: Vec<Arc<ResourceSet>>,
        always: bool,
    ) -> Option<DeltaReply> {
        let names = (!self.wildcard).then_some(&self.names);
        let desired = Arc::new(Desired::select(generated, names));
        let mut changes = match &self.held {
            Held::Declared(known) => diff_known(known, &desired),
            Held::Sent {
                desired: held,
                forgotten,
            } => {
                let mut changes = diff(held, &desired);
                changes
                    .changed
                    .extend(forgotten.iter().filter_map(|n| desired.find(n)));
                changes.removed.retain(|n| !forgotten.contains(n));
                changes
            }
        };
        changes
            .changed
            .extend(self.forced.iter().filter_map(|n| desired.find(n)));
        self.forced.clear();
        let Changes {
            changed,
            updated,
            removed,
        } = changes;
        if changed.is_empty() && removed.is_empty() && !always {
            if let Held::Sent {
                desired: held,
                forgotten,
            } = &mut self.held
                && forgotten.is_empty()
                && held.version() == desired.version()
            {
                // The same content in the newest parts: older snapshots' sets can go.
                *held = desired;
            }
            return None;
        }
        let resources = desired.spans_of(changed);
        let nonce = next_nonce();
        let response = DeltaResponse {
            type_url: self.type_url,
            system_version: desired.version(),
            nonce: nonce.clone(),
            resources: resources.clone(),
            removed,
        };
        self.sent_version = format_version(desired.version());
        self.sent_nonce = nonce;
        self.last_sent_at = Some(SystemTime::now());
        self.last_sent = resources;
        self.in_flight = true;
        self.deferred = false;
        self.held = Held::Sent {
            desired,
            forgotten: BTreeSet::new(),
        };
        Some(DeltaReply { response, updated })
    }
}

impl TypeState for DeltaType {
    type Request = DeltaDiscoveryRequest;

    fn new(type_url: &'static str) -> Self {
        Self {
            type_url,
            requested: false,
            wildcard: false,
            names: intern_sorted(&[], None),
            held: Held::Declared(HashMap::new()),
            forced: BTreeSet::new(),
            last_sent: Vec::new(),
            sent_version: String::new(),
            sent_nonce: String::new(),
            last_sent_at: None,
            acked_version: String::new(),
            acked_nonce: String::new(),
            nack: None,
            in_flight: false,
            deferred: false,
        }
    }

    fn names(&self) -> Option<&Arc<Names>> {
        (!self.wildcard).then_some(&self.names)
    }

    fn on_request(&mut self, request: &DeltaDiscoveryRequest) -> Outcome {
        if !self.requested {
            self.requested = true;
            self.first_request(request);
            return Outcome {
                reply: Reply::None,
                respond: true,
                initial: true,
                full: false,
            };
        }
        let reply = self.reply(request);
        // Subscription changes ride on ACKs, NACKs and spontaneous requests alike, and are sent only
        // once: apply them whatever the nonce says.
        let answered = matches!(reply, Reply::Ack | Reply::Nack(_));
        let deferred = answered && std::mem::take(&mut self.deferred);
        let respond = self.subscribe(request) || deferred;
        Outcome {
            reply,
            respond,
            initial: false,
            full: false,
        }
    }

    fn snapshot(&self) -> TypeStatus {
        let resources = match &self.held {
            Held::Declared(known) => known
                .iter()
                .map(|(name, version)| {
                    (
                        name.to_string(),
                        Arc::new(Resource::known(Arc::clone(name), *version)),
                    )
                })
                .collect(),
            Held::Sent { desired, forgotten } => desired
                .iter()
                .filter(|r| !forgotten.contains(r.name()))
                .map(|r| (r.name().to_owned(), Arc::clone(r)))
                .collect(),
        };
        TypeStatus {
            sent_version: self.sent_version.clone(),
            sent_nonce: self.sent_nonce.clone(),
            acked_version: self.acked_version.clone(),
            acked_nonce: self.acked_nonce.clone(),
            nack: self.nack.clone(),
            subscribed: self.names().map(|n| n.iter().map(str::to_owned).collect()),
            resources,
            last_sent: self.last_sent_at,
        }
    }

    /// In Delta a response carries only what changed, so all of it is suspect.
    fn nack_suspects(&self) -> Vec<Arc<Resource>> {
        self.last_sent
            .iter()
            .flat_map(|s| s.resources().iter().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests;
