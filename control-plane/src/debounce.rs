//! How long meshd's index loop (`serve/publish.rs`) gathers source events into one snapshot.

use std::collections::BTreeSet;
use std::time::Duration;

use meshd_model::Kind;

/// How long the loop waits for more events before publishing.
#[derive(Clone, Copy, Debug)]
pub struct Debounce {
    /// Quiet period before a change is published.
    pub after: Duration,
    /// Longest a burst of changes may delay a publication.
    pub max: Duration,
}

impl Debounce {
    /// The longest the batch holding `kinds` may wait since its first event. Endpoints are
    /// published incrementally (only the ClusterLoadAssignments they touch are rebuilt and sent),
    /// so a batch of nothing else waits no longer than the quiet period: under steady endpoint
    /// churn (a rollout, autoscaling) proxies get endpoints every `after` instead of when the
    /// churn stops or `max` runs out.
    pub fn limit(&self, kinds: &BTreeSet<Kind>) -> Duration {
        let endpoints_only = !kinds.is_empty()
            && kinds
                .iter()
                .all(|k| matches!(k, Kind::Endpoints | Kind::EndpointSlice));
        if endpoints_only {
            self.after.min(self.max)
        } else {
            self.max
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_of_endpoint_changes_alone_waits_only_the_quiet_period() {
        let debounce = Debounce {
            after: Duration::from_millis(100),
            max: Duration::from_secs(10),
        };
        let kinds = |k: &[Kind]| k.iter().copied().collect::<BTreeSet<_>>();
        assert_eq!(
            debounce.limit(&kinds(&[Kind::Endpoints, Kind::EndpointSlice])),
            Duration::from_millis(100)
        );
        for config in [
            &[Kind::EndpointSlice, Kind::Pod][..],
            &[Kind::VirtualService],
            &[],
        ] {
            assert_eq!(debounce.limit(&kinds(config)), Duration::from_secs(10));
        }
    }
}
