//! Per-type protocol state of one connection: pure state machines, no I/O, no locks.
//!
//! The stream tasks feed them requests and generated resources; they answer whether to respond and
//! which resources the response carries. [`sotw::SotwType`] and [`delta::DeltaType`] differ in
//! what a request means; both keep only shared parts ([`desired::Desired`]) of what was sent and
//! accepted, and build a [`TypeStatus`] only when asked.

pub(crate) mod delta;
pub(crate) mod desired;
pub(crate) mod sotw;

use std::sync::Arc;

use meshd_proto::type_url::PUSH_ORDER;

use crate::names::Names;
use crate::{Nack, Resource, TypeStatus};

/// The types a stream keeps state for: those the server serves. Requests for others are ignored.
pub(crate) fn served(type_url: &str) -> Option<&'static str> {
    PUSH_ORDER.iter().copied().find(|t| *t == type_url)
}

/// One type URL's protocol state on one stream, SotW or Delta.
pub(crate) trait TypeState: Send + 'static {
    /// The request message of the protocol.
    type Request;

    /// State for one of the [`served`] types.
    fn new(type_url: &'static str) -> Self;

    /// What a request says, and whether to answer it.
    fn on_request(&mut self, request: &Self::Request) -> Outcome;

    /// The names to generate for; `None` is a wildcard subscription.
    fn names(&self) -> Option<&Arc<Names>>;

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
    /// SotW: answer with everything requested, changed or not. Off for a push that waited for
    /// this answer, which carries only what changed.
    pub full: bool,
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
