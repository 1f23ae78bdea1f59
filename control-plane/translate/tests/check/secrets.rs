//! Secret cases: protoc-gen-validate's rules, which are all Envoy checks before a secret is used.

use meshd_proto::type_url::SECRET;
use serde_json::{Value, json};

use super::case::Case;

fn trust(san_type: &str) -> Value {
    json!({"name": "ca", "validation_context": {"match_typed_subject_alt_names": [
        {"san_type": san_type, "matcher": {"exact": "spiffe://cluster.local/ns/shop/sa/web"}}]}})
}

fn certificate(chain: Value) -> Value {
    json!({"name": "default", "tls_certificate": {"certificate_chain": chain, "private_key": {"inline_string": "key"}}})
}

pub fn cases() -> Vec<Case> {
    vec![
        Case::one(
            "SAN matchers say which kind of name they match",
            SECRET,
            trust("SAN_TYPE_UNSPECIFIED"),
            trust("URI"),
            "value must not be in list",
        ),
        Case::one(
            "certificate data comes from one named place",
            SECRET,
            certificate(json!({})),
            certificate(json!({"inline_string": "chain"})),
            "exactly one of",
        ),
    ]
}
