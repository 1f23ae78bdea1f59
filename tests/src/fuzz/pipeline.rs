//! One batch through meshd as `meshd serve` takes it: parse, assemble, translate per proxy, and
//! the checks the server screens every resource with. A panic anywhere is caught and named by
//! the stage it happened in.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use meshd_model::{MeshConfig, Proxy, Snapshot};
use meshd_proto::pb::google::protobuf::Any;
use meshd_proto::{pack, type_url};

use super::batch::Batch;
use super::check;

/// A resource the checks let through: what the server would send.
#[derive(Clone, Debug, PartialEq)]
pub struct Passed {
    pub type_url: &'static str,
    pub name: String,
    /// Index of the proxy it was generated for.
    pub proxy: usize,
    pub body: Any,
}

#[derive(Debug, Default)]
pub struct Translated {
    pub objects_parsed: usize,
    pub proxies: usize,
    pub checked: usize,
    pub held_back: usize,
    pub passed: Vec<Passed>,
}

/// A panic and where it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Panic {
    pub stage: String,
    pub message: String,
}

/// Runs `batch` through meshd; `Err` if any stage panicked.
pub fn run(batch: &Batch) -> Result<Translated, Panic> {
    let text = batch.text();
    let mut stage = String::from("parse");
    let result = catch_unwind(AssertUnwindSafe(|| translate(batch, &text, &mut stage)));
    result.map_err(|payload| Panic {
        stage: stage.clone(),
        message: payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".to_string()),
    })
}

fn translate(batch: &Batch, text: &str, stage: &mut String) -> Translated {
    let (objects, _errors) = meshd_model::documents::parse(text, batch.as_json_list);
    let mut out = Translated {
        objects_parsed: objects.len(),
        ..Translated::default()
    };
    *stage = "assemble".to_string();
    let objects: BTreeMap<_, _> = objects.into_iter().map(|o| (o.key(), o)).collect();
    let snapshot = Snapshot::assemble(
        1,
        Arc::new(objects),
        &MeshConfig::default(),
        &BTreeMap::new(),
    );
    for (index, spec) in batch.proxies.iter().enumerate() {
        let Ok(mut proxy) = Proxy::from_node_id(&spec.node_id) else {
            continue;
        };
        proxy.labels = spec.labels.clone();
        proxy.mtls = spec.mtls;
        out.proxies += 1;
        *stage = format!("translate for {}", spec.node_id);
        let config = meshd_translate::generate(&snapshot, &proxy);
        let typed: [(&'static str, Vec<(String, Any)>); 4] = [
            (
                type_url::CLUSTER,
                config
                    .clusters
                    .iter()
                    .map(|c| (c.name.clone(), pack(c)))
                    .collect(),
            ),
            (
                type_url::ENDPOINT,
                config
                    .endpoints
                    .iter()
                    .map(|e| (e.cluster_name.clone(), pack(e)))
                    .collect(),
            ),
            (
                type_url::LISTENER,
                config
                    .listeners
                    .iter()
                    .map(|l| (l.name.clone(), pack(l)))
                    .collect(),
            ),
            (
                type_url::ROUTE,
                config
                    .routes
                    .iter()
                    .map(|r| (r.name.clone(), pack(r)))
                    .collect(),
            ),
        ];
        for (type_url, resources) in typed {
            *stage = format!("check {} for {}", type_url::short(type_url), spec.node_id);
            out.checked += resources.len();
            let kept: Vec<(String, Any)> = resources
                .into_iter()
                .filter(|(_, body)| check::resource_passes(type_url, body))
                .collect();
            // What one response may not hold together: the server drops these too.
            let bodies: Vec<Any> = kept.iter().map(|(_, b)| b.clone()).collect();
            let dropped = check::set_clashes(type_url, &bodies);
            // The server sends one resource per name, the last generated (`select` in meshd-xds).
            let mut last: BTreeMap<&str, usize> = BTreeMap::new();
            for (i, (name, _)) in kept.iter().enumerate() {
                last.insert(name.as_str(), i);
            }
            let last: Vec<usize> = last.into_values().collect();
            for (i, (name, body)) in kept.iter().enumerate() {
                if last.contains(&i) && !dropped.contains(name) {
                    let (name, body) = (name.clone(), body.clone());
                    out.passed.push(Passed {
                        type_url,
                        name,
                        proxy: index,
                        body,
                    });
                }
            }
        }
    }
    out.held_back = out.checked - out.passed.len();
    out
}
