//! Delta xDS: hostile request streams (subscribes and unsubscribes of any names, wildcards,
//! initial versions, stale and garbage nonces, NACKs) interleaved with generator changes and
//! pushes, through the protocol state machines the server runs per stream, with their
//! invariants asserted (`meshd_xds::fuzzing`). Raw bytes are also decoded as a
//! `DeltaDiscoveryRequest`.

#![no_main]

mod script;

use libfuzzer_sys::fuzz_target;
use meshd_proto::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use meshd_proto::pb::google::rpc::Status;
use meshd_xds::fuzzing::DeltaStream;
use prost::Message as _;
use script::{Event, Nonce, Script};

fuzz_target!(|data: &[u8]| {
    let mut stream = DeltaStream::new();
    if let Ok(request) = DeltaDiscoveryRequest::decode(data) {
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
                names,
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
                // A reconnecting client says what it holds, at whatever versions.
                let initial_resource_versions = names
                    .iter()
                    .map(|n| (n.clone(), version.clone()))
                    .collect();
                let request = DeltaDiscoveryRequest {
                    type_url: type_url.to_string(),
                    resource_names_subscribe: names,
                    resource_names_unsubscribe: unsubscribe,
                    initial_resource_versions,
                    response_nonce,
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
