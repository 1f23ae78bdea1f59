//! A Delta stream: only what changed per type, and EDS re-sent for clusters CDS just replaced.

use std::time::Instant;

use meshd_proto::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use meshd_proto::type_url::{CLUSTER, ENDPOINT};

use super::session::{ClientGone, Protocol, Session, changed_since};
use crate::state::Outcome;
use crate::state::delta::{DeltaReply, DeltaType};
use crate::wire::Encoded;
use crate::{Generator, Node, Push};

pub(crate) struct DeltaStream<G: Generator> {
    session: Session<G, DeltaType>,
}

/// Why a type is being answered.
#[derive(Clone, Copy)]
enum Cause {
    /// A request: send even an empty response if it is the first for the type.
    Request { initial: bool },
    /// A push, or a resend that follows one.
    Push {
        triggered_at: Instant,
        changed: bool,
    },
}

impl<G: Generator> DeltaStream<G> {
    /// Builds the response for one type: generated outside the connection's lock, then diffed
    /// under it, without awaiting. (Only this stream's task changes its state, so nothing moves
    /// between the two.) Encoded after the lock is released.
    fn build(&self, type_url: &str, cause: Cause) -> Option<(Encoded, bool)> {
        let always = match cause {
            Cause::Request { initial } => initial,
            Cause::Push { changed, .. } => {
                let mut types = self.session.conn.types.lock();
                let state = types.get_mut(type_url)?;
                if !changed && !state.has_forced() {
                    return None;
                }
                // One response per type in flight; the answer to it brings this one.
                if state.defer_while_in_flight() {
                    return None;
                }
                false
            }
        };
        let generated = self.session.generate(type_url)?;
        let DeltaReply { response, updated } = {
            let mut types = self.session.conn.types.lock();
            let state = types.get_mut(type_url)?;
            let reply = state.respond(generated, always)?;
            if type_url == CLUSTER && !reply.updated.is_empty() {
                // Envoy re-warms replaced clusters and waits for their endpoints, which it
                // already holds and will not ask for again.
                if let Some(endpoints) = types.get_mut(ENDPOINT) {
                    endpoints.force(&reply.updated);
                }
            }
            reply
        };
        let rewarm = type_url == CLUSTER && !updated.is_empty();
        Some((response.encode(), rewarm))
    }

    async fn answer(&mut self, type_url: &str, cause: Cause) -> Result<(), ClientGone> {
        let Some((response, rewarm)) = self.build(type_url, cause) else {
            return Ok(());
        };
        let triggered_at = match cause {
            Cause::Request { .. } => None,
            Cause::Push { triggered_at, .. } => Some(triggered_at),
        };
        self.session.send(type_url, response, triggered_at).await?;
        if rewarm && matches!(cause, Cause::Request { .. }) {
            // On a push the loop reaches EDS next; on a request nothing else would send it.
            let cause = Cause::Push {
                triggered_at: Instant::now(),
                changed: false,
            };
            if let Some((response, _)) = self.build(ENDPOINT, cause) {
                self.session.send(ENDPOINT, response, None).await?;
            }
        }
        Ok(())
    }
}

impl<G: Generator> Protocol for DeltaStream<G> {
    type Gen = G;
    type Request = DeltaDiscoveryRequest;
    type State = DeltaType;
    const DELTA: bool = true;

    fn node(request: &DeltaDiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn new(session: Session<G, DeltaType>) -> Self {
        Self { session }
    }

    fn session(&mut self) -> &mut Session<G, DeltaType> {
        &mut self.session
    }

    fn type_url(request: &DeltaDiscoveryRequest) -> &str {
        &request.type_url
    }

    async fn answer_request(&mut self, type_url: &str, outcome: Outcome) -> Result<(), ClientGone> {
        let cause = Cause::Request {
            initial: outcome.initial,
        };
        self.answer(type_url, cause).await
    }

    async fn on_push(&mut self, push: &Push, since: u64) -> Result<(), ClientGone> {
        for type_url in self.session.push_order() {
            let cause = Cause::Push {
                triggered_at: push.triggered_at,
                changed: changed_since(push, type_url, since),
            };
            self.answer(type_url, cause).await?;
        }
        Ok(())
    }
}
