//! Parity with istiod's validation: a table of objects (in `istio_parity/*.yaml`), each with the
//! verdict istiod gives it and where in Istio that verdict comes from. An object istiod refuses
//! must be refused by meshd (an error naming the object and the field); an object istiod takes
//! must be taken by meshd (no error, and the object takes effect in the snapshot). A row where
//! meshd deliberately differs says so (`meshd`) and why (`why`).

use std::collections::BTreeMap;
use std::sync::Arc;

use meshd_model::finding::Severity;
use meshd_model::{Kind, MeshConfig, Object, ObjectKey, Snapshot};
use serde::Deserialize;

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Verdict {
    Accept,
    Reject,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    kind: String,
    source: String,
    istiod: Verdict,
    /// meshd's verdict where it deliberately differs from istiod's.
    meshd: Option<Verdict>,
    why: Option<String>,
    field: Option<String>,
    message: Option<String>,
    yaml: String,
}

const TABLES: [(&str, &str); 8] = [
    (
        "virtual_service",
        include_str!("istio_parity/virtual_service.yaml"),
    ),
    (
        "destination_rule",
        include_str!("istio_parity/destination_rule.yaml"),
    ),
    ("gateway", include_str!("istio_parity/gateway.yaml")),
    (
        "service_entry",
        include_str!("istio_parity/service_entry.yaml"),
    ),
    (
        "workload_entry",
        include_str!("istio_parity/workload_entry.yaml"),
    ),
    ("sidecar", include_str!("istio_parity/sidecar.yaml")),
    ("security", include_str!("istio_parity/security.yaml")),
    ("telemetry", include_str!("istio_parity/telemetry.yaml")),
];

fn cases() -> Vec<(&'static str, Case)> {
    TABLES
        .iter()
        .flat_map(|(table, text)| {
            let cases: Vec<Case> = serde_saphyr::from_str(text)
                .unwrap_or_else(|e| panic!("istio_parity/{table}.yaml: {e}"));
            cases.into_iter().map(move |c| (*table, c))
        })
        .collect()
}

/// The object appears in what the snapshot derives: routes, rules, services, endpoints, policies.
fn takes_effect(snapshot: &Snapshot, key: &ObjectKey) -> bool {
    match key.kind {
        Kind::VirtualService => snapshot
            .traffic
            .virtual_services
            .iter()
            .any(|v| &v.key == key),
        Kind::DestinationRule => snapshot
            .traffic
            .destination_rules
            .iter()
            .any(|r| &r.key == key),
        Kind::Gateway => snapshot.traffic.gateways.iter().any(|g| &g.key == key),
        Kind::ServiceEntry => snapshot
            .registry
            .services
            .values()
            .any(|s| &s.source == key),
        Kind::WorkloadEntry => snapshot.registry.endpoints.values().any(|eps| {
            eps.iter()
                .any(|e| e.workload.as_deref() == Some(&key.name) && e.namespace == key.namespace)
        }),
        Kind::Sidecar => snapshot.sidecars.get(key).is_some(),
        Kind::PeerAuthentication => snapshot.peer_authentications.get(key).is_some(),
        Kind::AuthorizationPolicy => snapshot.authorization_policies.get(key).is_some(),
        Kind::RequestAuthentication => snapshot.request_authentications.get(key).is_some(),
        Kind::Telemetry => snapshot.telemetries.get(key).is_some(),
        other => panic!("no parity cases for {other}"),
    }
}

/// What meshd makes of a case: `Err` with why the verdict is not the expected one.
fn judge(case: &Case) -> Result<(), String> {
    let expected = case.meshd.unwrap_or(case.istiod);
    let kind = Kind::from_name(&case.kind).ok_or_else(|| format!("unknown kind {}", case.kind))?;
    let (objects, invalid) = meshd_model::documents::parse(&case.yaml, false);
    let subject = objects.iter().find(|o| o.kind() == kind).map(Object::key);
    let field = case.field.as_deref().unwrap_or_default();
    let fragment = case.message.as_deref().unwrap_or_default().to_lowercase();
    // A document refused while parsing (a wrong type, a negative count) is refused whole.
    if let Some(doc) = invalid.iter().find(|d| d.message.contains(&case.kind)) {
        return match expected {
            Verdict::Reject
                if doc.message.contains(field)
                    && doc.message.to_lowercase().contains(&fragment) =>
            {
                Ok(())
            }
            Verdict::Reject => Err(format!(
                "refused while parsing, but not for {field:?} / {fragment:?}: {}",
                doc.message
            )),
            Verdict::Accept => Err(format!("refused while parsing: {}", doc.message)),
        };
    }
    if !invalid.is_empty() {
        return Err(format!("other documents did not parse: {invalid:?}"));
    }
    let key = subject.ok_or_else(|| format!("no {} in the case", case.kind))?;
    let objects: BTreeMap<ObjectKey, Object> = objects.into_iter().map(|o| (o.key(), o)).collect();
    let snapshot = Snapshot::assemble(
        1,
        Arc::new(objects),
        &MeshConfig::default(),
        &BTreeMap::new(),
    );
    let errors: Vec<_> = snapshot
        .findings
        .iter()
        .filter(|f| f.object == key && f.severity == Severity::Error)
        .collect();
    match expected {
        Verdict::Accept if !errors.is_empty() => Err(format!("refused: {errors:#?}")),
        Verdict::Accept if !takes_effect(&snapshot, &key) => {
            Err("accepted but it does not take effect".to_string())
        }
        Verdict::Accept => Ok(()),
        Verdict::Reject => {
            let named = errors
                .iter()
                .any(|f| f.field == field && f.message.to_lowercase().contains(&fragment));
            if named {
                Ok(())
            } else if errors.is_empty() {
                Err("accepted".to_string())
            } else {
                Err(format!(
                    "refused, but not at {field:?} with {fragment:?}: {errors:#?}"
                ))
            }
        }
    }
}

#[test]
fn meshd_accepts_and_refuses_what_istiod_does() {
    let cases = cases();
    let mut disagreements = Vec::new();
    for (table, case) in &cases {
        if let Err(why) = judge(case) {
            disagreements.push(format!(
                "{table}: {} ({}):\n  {why}",
                case.name, case.source
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} cases disagree:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n")
    );
}

#[test]
fn the_table_covers_every_kind_and_explains_every_difference() {
    let cases = cases();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    for kind in [
        "VirtualService",
        "DestinationRule",
        "Gateway",
        "ServiceEntry",
        "WorkloadEntry",
        "Sidecar",
        "PeerAuthentication",
        "AuthorizationPolicy",
        "RequestAuthentication",
        "Telemetry",
    ] {
        assert!(
            cases.iter().any(|(_, c)| c.kind == kind),
            "no case for {kind}"
        );
    }
    for (table, c) in &cases {
        assert!(!c.source.is_empty(), "{table}: {} has no source", c.name);
        let rejects = c.meshd.unwrap_or(c.istiod) == Verdict::Reject;
        assert_eq!(
            rejects,
            c.field.is_some() && c.message.is_some(),
            "{table}: {}: a refusal names its field and message, an acceptance neither",
            c.name
        );
        assert_eq!(
            c.meshd.is_some_and(|m| m != c.istiod),
            c.why.is_some(),
            "{table}: {}: a deliberate difference says why, and only then",
            c.name
        );
    }
    let mut names: Vec<&str> = cases.iter().map(|(_, c)| c.name.as_str()).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "case names are unique");
}
