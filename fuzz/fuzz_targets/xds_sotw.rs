//! State-of-the-World xDS: hostile request streams (any type URL, names, stale and garbage
//! nonces, NACKs) interleaved with generator changes and pushes, through the protocol state
//! machines the server runs per stream, with their invariants asserted
//! (`meshd_xds::fuzzing`). Raw bytes are also decoded as a `DiscoveryRequest`.

#![no_main]

mod script;

use libfuzzer_sys::fuzz_target;
use meshd_proto::pb::envoy::service::discovery::v3::DiscoveryRequest;
use meshd_proto::pb::google::rpc::Status;
use meshd_xds::fuzzing::SotwStream;
use prost::Message as _;
use script::{Event, Nonce, Script};

fuzz_target!(|data: &[u8]| {
    let mut stream = SotwStream::new();
    if let Ok(request) = DiscoveryRequest::decode(data) {
        let _ = stream.request(&request);
    }
    let mut script = Script::new(data);
    while !script.done() {
        match script.event() {
            Event::Resources {
                type_url,
                resources,
            } => stream.set_resources(type_url, &resources),
            Event::Push => {
                let _ = stream.push();
            }
            Event::Request {
                type_url,
                mut names,
                unsubscribe,
                nonce,
                version,
                error,
            } => {
                let response_nonce = match nonce {
                    Nonce::Last => stream.last_nonce(type_url).unwrap_or_default(),
                    Nonce::Empty => String::new(),
                    Nonce::Garbage(text) => text,
                };
                // SotW unsubscribes by leaving names out.
                names.retain(|n| !unsubscribe.contains(n));
                let request = DiscoveryRequest {
                    type_url: type_url.to_string(),
                    resource_names: names,
                    response_nonce,
                    version_info: version,
                    error_detail: error.map(|message| Status {
                        code: 3,
                        message,
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let _ = stream.request(&request);
            }
        }
    }
});
