//! What Envoy would refuse, found before meshd sends it: protoc-gen-validate's rules
//! (`meshd_proto::validate`) and the checks Envoy makes beyond them when it builds a cluster,
//! listener, route table or endpoint set, and across one response (duplicate names, two listeners
//! on one address). Pure: no I/O.

pub mod regex;

pub use meshd_proto::validate::Violation;
