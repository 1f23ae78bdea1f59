//! What validation says about objects: [`Finding`]s (Istio's analyzer codes, the object, the
//! field) and the [`Report`] every validator collects one object's findings in.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::object::ObjectKey;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "Info",
            Severity::Warning => "Warning",
            Severity::Error => "Error",
        })
    }
}

/// Istio's code for a schema or semantic error in one object.
pub const SCHEMA_ERROR: &str = "IST0106";
/// Istio's code for a reference to something that does not exist.
pub const REFERENCED_NOT_FOUND: &str = "IST0101";
/// meshd's code for an object left out because Envoy would reject (or did reject) the config it
/// produces; no validation rule of Istio's caught it.
pub const REJECTED_BY_ENVOY: &str = "MESHD0001";
/// meshd's code for a Gateway API object whose status says it is not (wholly) in effect: a
/// route no parent accepted, a reference that does not resolve, a listener that is not served.
pub const GATEWAY_API_CONDITION: &str = "MESHD0002";

/// A validation result about one object, with Istio's analyzer code where one exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub code: &'static str,
    pub object: ObjectKey,
    pub field: String,
    pub message: String,
}

impl Finding {
    pub fn new(
        severity: Severity,
        code: &'static str,
        object: &ObjectKey,
        field: &str,
        message: String,
    ) -> Self {
        Finding {
            severity,
            code,
            object: object.clone(),
            field: field.to_string(),
            message,
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] ({}) {}: {}",
            self.severity, self.code, self.object, self.field, self.message
        )
    }
}

/// Collects the findings of one object while it is validated. Errors reject the object;
/// warnings are reported and the object is kept.
#[derive(Debug)]
pub struct Report<'a> {
    pub key: &'a ObjectKey,
    errors: Vec<Finding>,
    warnings: Vec<Finding>,
}

impl<'a> Report<'a> {
    pub fn new(key: &'a ObjectKey) -> Self {
        Report {
            key,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// A schema error (IST0106): the object is rejected.
    pub fn error(&mut self, field: &str, message: String) {
        self.errors.push(Finding::new(
            Severity::Error,
            SCHEMA_ERROR,
            self.key,
            field,
            message,
        ));
    }

    /// A schema warning (IST0106): reported, the object is kept.
    pub fn warning(&mut self, field: &str, message: String) {
        self.warn(SCHEMA_ERROR, field, message);
    }

    /// A warning under another analyzer code (IST0101 for dangling references, …).
    pub fn warn(&mut self, code: &'static str, field: &str, message: String) {
        self.warnings.push(Finding::new(
            Severity::Warning,
            code,
            self.key,
            field,
            message,
        ));
    }

    /// One error per field the schema does not know; true when there were any.
    pub fn unknown_fields<V>(&mut self, field: &str, unknown: &BTreeMap<String, V>) -> bool {
        for name in unknown.keys() {
            let at = if field.is_empty() {
                name.clone()
            } else {
                format!("{field}.{name}")
            };
            self.error(&at, format!("unknown field {name:?}"));
        }
        !unknown.is_empty()
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Hands the findings over, warnings first; true when the object is accepted (no errors).
    pub fn finish(self, findings: &mut Vec<Finding>) -> bool {
        let accepted = self.errors.is_empty();
        findings.extend(self.warnings);
        findings.extend(self.errors);
        accepted
    }
}

/// A [`Report`] with one validator's helpers: each validator names a marker type `V` and adds
/// its helpers in `impl Checks<'_, V>`, so helpers of different validators never collide, and
/// every one of them reports through the same [`Report`].
#[derive(Debug)]
pub struct Checks<'a, V> {
    report: Report<'a>,
    validator: std::marker::PhantomData<V>,
}

impl<'a, V> Checks<'a, V> {
    pub fn new(key: &'a ObjectKey) -> Self {
        Checks {
            report: Report::new(key),
            validator: std::marker::PhantomData,
        }
    }

    /// See [`Report::finish`].
    pub fn finish(self, findings: &mut Vec<Finding>) -> bool {
        self.report.finish(findings)
    }
}

impl<'a, V> std::ops::Deref for Checks<'a, V> {
    type Target = Report<'a>;
    fn deref(&self) -> &Report<'a> {
        &self.report
    }
}

impl<V> std::ops::DerefMut for Checks<'_, V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::Kind;

    #[test]
    fn a_report_with_errors_rejects_its_object_and_lists_warnings_first() {
        let key = ObjectKey::new(Kind::VirtualService, "ns", "vs");
        let mut report = Report::new(&key);
        report.error("spec.hosts", "at least one host is required".to_string());
        report.warn(
            REFERENCED_NOT_FOUND,
            "spec.gateways[0]",
            "no such gateway".to_string(),
        );
        let mut findings = Vec::new();
        assert!(!report.finish(&mut findings));
        assert_eq!(findings[0].code, REFERENCED_NOT_FOUND);
        assert_eq!(findings[1].severity, Severity::Error);
        assert_eq!(
            findings[1].to_string(),
            "Error [IST0106] (VirtualService ns/vs) spec.hosts: at least one host is required"
        );
    }

    #[test]
    fn warnings_alone_keep_the_object() {
        let key = ObjectKey::new(Kind::DestinationRule, "ns", "dr");
        let mut report = Report::new(&key);
        report.warning("spec.exportTo", "ignored".to_string());
        let mut findings = Vec::new();
        assert!(report.finish(&mut findings));
        assert_eq!(findings.len(), 1);
    }
}
