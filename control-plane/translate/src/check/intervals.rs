//! Durations that must be in order: an outlier detector ejects for at most its
//! `max_ejection_time` (`source/common/upstream/outlier_detection_impl.cc`), and a retry back-off
//! waits at most its `max_interval` (`source/common/router/retry_policy_impl.cc`). Envoy checks
//! only a maximum that is set: unset, it is derived from the base.

use meshd_proto::pb::envoy::config::cluster::v3::OutlierDetection;
use meshd_proto::pb::envoy::config::route::v3::retry_policy::RetryBackOff;
use meshd_proto::pb::google::protobuf::Duration;

use super::{Violation, join};

fn millis(d: &Duration) -> i128 {
    i128::from(d.seconds) * 1000 + i128::from(d.nanos) / 1_000_000
}

pub(super) fn outlier_detection(o: &OutlierDetection, path: &str, out: &mut Vec<Violation>) {
    let Some(max) = &o.max_ejection_time else {
        return;
    };
    // Envoy's default base ejection time is 30 s.
    let base = o.base_ejection_time.as_ref().map_or(30_000, millis);
    if millis(max) < base {
        out.push(Violation::new(
            join(path, "max_ejection_time"),
            "outlier detector's max_ejection_time cannot be smaller than base_ejection_time",
        ));
    }
}

pub(super) fn retry_back_off(b: &RetryBackOff, path: &str, out: &mut Vec<Violation>) {
    let (Some(base), Some(max)) = (&b.base_interval, &b.max_interval) else {
        return;
    };
    if millis(max) < millis(base) {
        out.push(Violation::new(
            join(path, "max_interval"),
            "retry_policy.max_interval must greater than or equal to the base_interval",
        ));
    }
}
