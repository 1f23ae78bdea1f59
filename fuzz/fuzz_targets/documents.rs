//! The loaders: any text through `documents::parse` (as YAML and as JSON) and the objects that
//! parse through `Snapshot::assemble`, as the file source and `meshd analyze` take them.

#![no_main]

use std::collections::BTreeMap;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use meshd_model::{MeshConfig, Snapshot, documents};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for json in [false, true] {
        let (objects, _errors) = documents::parse(text, json);
        let objects: BTreeMap<_, _> = objects.into_iter().map(|o| (o.key(), o)).collect();
        let snapshot = Snapshot::assemble(
            1,
            Arc::new(objects),
            &MeshConfig::default(),
            &BTreeMap::new(),
        );
        // Findings render for analyze and the webhook.
        for finding in &snapshot.findings {
            let _ = finding.to_string();
        }
    }
});
