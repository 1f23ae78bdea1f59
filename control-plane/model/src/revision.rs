//! Control-plane revisions, as istiod has them: several control planes side by side in one
//! cluster (a canary upgrade), each injecting and configuring only what belongs to it.
//!
//! A revision is named by `meshd serve --revision`; no name is the `default` revision. What
//! belongs to which revision follows Istio:
//! - Istio config labelled `istio.io/rev` belongs to that revision only; config without the
//!   label belongs to every revision;
//! - revision `R` reads its mesh config from ConfigMap `istio-R` (the default one: `istio`);
//! - which revision injects a pod is [`injecting_revision`]'s answer.

use std::collections::BTreeMap;

/// The label naming the revision an object or namespace belongs to.
pub const REVISION_LABEL: &str = "istio.io/rev";
/// The revision that has no name of its own.
pub const DEFAULT_REVISION: &str = "default";
/// Namespace label that turns injection on (`enabled`) or off (`disabled`) — for the default
/// revision, and ahead of any `istio.io/rev` label.
pub const INJECTION_LABEL: &str = "istio-injection";

/// A revision's name, `default` when none was given.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(String);

impl Default for Revision {
    fn default() -> Self {
        Revision(DEFAULT_REVISION.to_owned())
    }
}

impl Revision {
    /// `None`, an empty name and `default` are all the default revision.
    pub fn new(name: Option<&str>) -> Revision {
        match name.map(str::trim) {
            None | Some("") => Revision::default(),
            Some(name) => Revision(name.to_owned()),
        }
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_REVISION
    }

    /// `base` for the default revision, `base-<name>` for the others: how istiod names the
    /// per-revision objects (ConfigMaps `istio` / `istio-canary`, webhook configurations, leases).
    pub fn suffixed(&self, base: &str) -> String {
        if self.is_default() {
            base.to_owned()
        } else {
            format!("{base}-{}", self.0)
        }
    }

    /// Whether Istio config with these labels is this revision's: unlabelled config is everyone's.
    pub fn owns_config(&self, labels: &BTreeMap<String, String>) -> bool {
        match labels.get(REVISION_LABEL) {
            None => true,
            Some(rev) => Revision::new(Some(rev)) == *self,
        }
    }
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which revision injects a pod with these labels in a namespace with these labels, or `None`
/// when no revision does. As Istio's webhook selectors decide it: `istio-injection` on the
/// namespace wins (`enabled` is the default revision, anything else is off); then the
/// namespace's `istio.io/rev`; then the pod's own `istio.io/rev`; then a pod that opted in with
/// `sidecar.istio.io/inject=true` goes to the default revision.
pub fn injecting_revision(
    namespace_labels: &BTreeMap<String, String>,
    pod_labels: &BTreeMap<String, String>,
    pod_opted_in: bool,
) -> Option<Revision> {
    if let Some(injection) = namespace_labels.get(INJECTION_LABEL) {
        return (injection == "enabled").then(Revision::default);
    }
    if let Some(rev) = namespace_labels.get(REVISION_LABEL) {
        return Some(Revision::new(Some(rev)));
    }
    if let Some(rev) = pod_labels.get(REVISION_LABEL) {
        return Some(Revision::new(Some(rev)));
    }
    pod_opted_in.then(Revision::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_name_empty_and_default_are_one_revision() {
        assert_eq!(Revision::new(None), Revision::new(Some("default")));
        assert_eq!(Revision::new(Some("")), Revision::default());
        assert!(Revision::default().is_default());
        assert_eq!(Revision::default().suffixed("istio"), "istio");
        assert_eq!(
            Revision::new(Some("canary")).suffixed("istio"),
            "istio-canary"
        );
    }

    #[test]
    fn labelled_config_is_its_revision_only_and_unlabelled_config_is_everyones() {
        let canary = Revision::new(Some("canary"));
        let default = Revision::default();
        let unlabelled = labels(&[("app", "web")]);
        let for_canary = labels(&[(REVISION_LABEL, "canary")]);
        let for_default = labels(&[(REVISION_LABEL, "default")]);
        assert!(canary.owns_config(&unlabelled) && default.owns_config(&unlabelled));
        assert!(canary.owns_config(&for_canary) && !default.owns_config(&for_canary));
        assert!(!canary.owns_config(&for_default) && default.owns_config(&for_default));
    }

    #[test]
    fn the_injecting_revision_follows_istios_webhook_selectors() {
        let none = labels(&[]);
        let enabled = labels(&[(INJECTION_LABEL, "enabled")]);
        let disabled = labels(&[(INJECTION_LABEL, "disabled")]);
        let canary_ns = labels(&[(REVISION_LABEL, "canary")]);
        let both = labels(&[(INJECTION_LABEL, "enabled"), (REVISION_LABEL, "canary")]);
        let canary_pod = labels(&[(REVISION_LABEL, "canary")]);
        let canary = Some(Revision::new(Some("canary")));
        let default = Some(Revision::default());
        let cases = [
            (&enabled, &none, false, &default),
            (&disabled, &canary_pod, true, &None),
            (&canary_ns, &none, false, &canary),
            // The namespace's istio-injection wins over its revision label, as in Istio.
            (&both, &none, false, &default),
            // The namespace's revision wins over the pod's.
            (
                &canary_ns,
                &labels(&[(REVISION_LABEL, "blue")]),
                false,
                &canary,
            ),
            (&none, &canary_pod, false, &canary),
            (&none, &none, true, &default),
            (&none, &none, false, &None),
        ];
        for (ns, pod, opted_in, want) in cases {
            assert_eq!(
                &injecting_revision(ns, pod, opted_in),
                want,
                "namespace {ns:?}, pod {pod:?}, opted in {opted_in}"
            );
        }
    }
}
