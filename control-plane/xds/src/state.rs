//! Per-type protocol state of one connection: pure state machines, no I/O, no locks.
//!
//! The stream tasks feed them requests and generated resources; they answer whether to respond and
//! build the response. [`sotw::SotwType`] and [`delta::DeltaType`] differ in what a request means,
//! not in what they record: both keep a [`TypeStatus`].

pub(crate) mod delta;
pub(crate) mod sotw;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::{Any, Nack, Resource, TypeStatus};

/// The types a stream keeps state for: those the server serves. Requests for others are ignored.
pub(crate) fn served(type_url: &str) -> bool {
    meshd_proto::type_url::PUSH_ORDER.contains(&type_url)
}

/// One type URL's protocol state on one stream, SotW or Delta.
pub(crate) trait TypeState: Send + 'static {
    /// The request message of the protocol.
    type Request;

    fn new(type_url: &str) -> Self;

    /// What a request says, and whether to answer it.
    fn on_request(&mut self, request: &Self::Request) -> Outcome;

    /// The names to generate for; `None` is a wildcard subscription.
    fn names(&self) -> Option<&BTreeSet<String>>;

    /// What `statuses()` shows.
    fn snapshot(&self) -> TypeStatus;

    /// The resources the last response brought that the proxy did not hold at those versions when
    /// it last accepted one: what a NACK of that response can be about.
    fn nack_suspects(&self) -> Vec<Arc<Resource>>;
}

/// What to do about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub reply: Reply,
    /// Generate and send: the whole set (SotW), or what the client lacks (Delta).
    pub respond: bool,
    /// The first request for this type on this stream: a response is owed even if it is empty.
    pub initial: bool,
}

/// What a request said about the previous response of its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// No previous response to speak of: a first request, or a Delta subscription change.
    None,
    /// Accepted the response with the nonce last sent.
    Ack,
    /// Rejected the response with the nonce last sent.
    Nack(Nack),
    /// Speaks of a response that a newer one has superseded.
    Stale,
}

/// The generated resources a subscription selects, by name. `None` selects everything.
pub(crate) fn select(
    generated: Vec<Arc<Resource>>,
    names: Option<&BTreeSet<String>>,
) -> BTreeMap<String, Arc<Resource>> {
    generated
        .into_iter()
        .filter(|r| names.is_none_or(|names| names.contains(&r.name)))
        .map(|r| (r.name.clone(), r))
        .collect()
}

/// Whether two sets hold the same names at the same versions.
pub(crate) fn same_versions(
    a: &BTreeMap<String, Arc<Resource>>,
    b: &BTreeMap<String, Arc<Resource>>,
) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((an, ar), (bn, br))| an == bn && ar.version == br.version)
}

/// A resource the client says it holds, of which only the version is known.
pub(crate) fn held_elsewhere(name: &str, version: &str) -> Arc<Resource> {
    Arc::new(Resource {
        name: name.to_owned(),
        version: version.to_owned(),
        body: Any::default(),
    })
}
