//! Debian's Prometheus as the mesh's scraper: run in a pod of the mesh (no sidecar), scraping
//! each sidecar's `:15090/stats/prometheus` as Istio's addon does (`honor_labels`), queried
//! over its HTTP API.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

use crate::mesh::Pod;
use crate::process::{App, log_tail};
use crate::wait::wait_for;

/// How often Prometheus scrapes: short, so tests wait little.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
const PORT: u16 = 9090;

/// One series of a query's answer: its labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A running Prometheus.
pub struct Prometheus {
    pod: Pod,
    app: App,
}

impl Prometheus {
    /// Starts Prometheus in `pod`, scraping `:15090/stats/prometheus` of `targets`, and waits
    /// until it is ready.
    pub fn start(pod: &Pod, targets: &[Ipv4Addr]) -> anyhow::Result<Prometheus> {
        let binary = crate::deps::prometheus_binary()?;
        let config = pod.dir().join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|ip| format!("\"{ip}:15090\"")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {interval}s\n  evaluation_interval: {interval}s\n\
                 scrape_configs:\n- job_name: envoy-stats\n  metrics_path: /stats/prometheus\n  \
                 honor_labels: true\n  static_configs:\n  - targets: [{targets}]\n",
                interval = SCRAPE_INTERVAL.as_secs(),
                targets = targets.join(", "),
            ),
        )
        .with_context(|| format!("writing {}", config.display()))?;
        let data = pod.dir().join("prometheus-data");
        let listen = format!("{}:{PORT}", pod.ip());
        let args = [
            binary.display().to_string(),
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", data.display()),
            format!("--web.listen-address={listen}"),
        ];
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let app = pod.spawn(&argv)?;
        let prometheus = Prometheus {
            pod: pod.clone(),
            app,
        };
        let ready = wait_for(Duration::from_secs(30), || {
            (prometheus.get("/-/ready", &[]).status == 200).then_some(())
        });
        if ready.is_none() {
            anyhow::bail!(
                "Prometheus did not become ready:\n{}",
                log_tail(&prometheus.app.log, 30)
            );
        }
        Ok(prometheus)
    }

    fn get(&self, path: &str, args: &[&str]) -> crate::HttpResult {
        let url = format!("http://{}:{PORT}{path}", self.pod.ip());
        self.pod.curl(&url, args)
    }

    /// The instant vector `promql` evaluates to now.
    pub fn query(&self, promql: &str) -> anyhow::Result<Vec<Sample>> {
        let query = format!("query={promql}");
        let answer = self.get("/api/v1/query", &["-G", "--data-urlencode", &query]);
        let body: Value = answer.json()?;
        anyhow::ensure!(body["status"] == "success", "{promql}: {body}");
        let series = body["data"]["result"]
            .as_array()
            .with_context(|| format!("{promql}: no result in {body}"))?;
        series
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                let value = s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .with_context(|| format!("{promql}: no value in {s}"))?;
                Ok(Sample { labels, value })
            })
            .collect()
    }

    /// [`Prometheus::query`] until `wanted` holds of the answer (or `timeout` passes); the last
    /// answer either way.
    pub fn query_until(
        &self,
        promql: &str,
        timeout: Duration,
        wanted: impl Fn(&[Sample]) -> bool,
    ) -> Vec<Sample> {
        let mut last = Vec::new();
        wait_for(timeout, || {
            last = self.query(promql).unwrap_or_default();
            wanted(&last).then_some(())
        });
        last
    }

    /// The targets' scrape health, for diagnostics.
    pub fn targets(&self) -> String {
        self.get("/api/v1/targets", &[]).body
    }
}
