//! A State-of-the-World stream: full sets per type (EDS and RDS pushes: what changed), and EDS
//! answered after every CDS response.

use std::time::Instant;

use meshd_proto::type_url::{CLUSTER, ENDPOINT};

use super::debug::DebugRequest;
use super::session::{ClientGone, Protocol, Session, changed_since};
use crate::request::SotwRequest;
use crate::state::Outcome;
use crate::state::sotw::SotwType;
use crate::wire::Encoded;
use crate::{Generator, Node, Push};

pub(crate) struct SotwStream<G: Generator> {
    session: Session<G, SotwType>,
}

impl<G: Generator> SotwStream<G> {
    /// Builds the response for one type: generated outside the connection's lock, then diffed
    /// under it, without awaiting. (Only this stream's task changes its state, so nothing moves
    /// between the two.) Encoded after the lock is released.
    fn build(&self, type_url: &str, force: bool) -> Option<Encoded> {
        let generated = self.session.generate(type_url)?;
        let response = {
            let mut types = self.session.conn.types.lock();
            let state = types.get_mut(type_url)?;
            let response = state.respond(generated, force)?;
            if type_url == CLUSTER {
                // Envoy re-warms changed clusters and waits for EDS; it asks with a request that
                // looks like an ACK, which must not go unanswered.
                if let Some(endpoints) = types.get_mut(ENDPOINT) {
                    endpoints.respond_to_next_ack();
                }
            }
            response
        };
        Some(response.encode())
    }

    async fn push_type(&mut self, type_url: &str, triggered_at: Instant) -> Result<(), ClientGone> {
        match self.build(type_url, false) {
            Some(response) => {
                self.session
                    .send(type_url, response, Some(triggered_at))
                    .await
            }
            None => Ok(()),
        }
    }
}

impl<G: Generator> Protocol for SotwStream<G> {
    type Gen = G;
    type Request = SotwRequest;
    type State = SotwType;
    const DELTA: bool = false;

    fn node(request: &SotwRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn new(session: Session<G, SotwType>) -> Self {
        Self { session }
    }

    fn session(&mut self) -> &mut Session<G, SotwType> {
        &mut self.session
    }

    fn type_url(request: &SotwRequest) -> &str {
        &request.type_url
    }

    fn debug_request(request: &SotwRequest) -> Option<DebugRequest> {
        let names = || {
            request
                .resource_names
                .iter()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect()
        };
        DebugRequest::of(&request.type_url, names, &request.response_nonce)
    }

    async fn answer_request(&mut self, type_url: &str, outcome: Outcome) -> Result<(), ClientGone> {
        // Everything asked for, or the changes of a push that waited for this answer.
        match self.build(type_url, outcome.full) {
            Some(response) => self.session.send(type_url, response, None).await,
            None => Ok(()),
        }
    }

    async fn on_push(&mut self, push: &Push, since: u64) -> Result<(), ClientGone> {
        for type_url in self.session.push_order() {
            if changed_since(push, type_url, since) {
                self.push_type(type_url, push.triggered_at).await?;
            }
        }
        Ok(())
    }
}
