//! Istio's standard metrics turned off for one workload by a Telemetry, end to end, read from
//! each sidecar's `:15090/stats/prometheus` as Prometheus would scrape it: `quiet` reports no
//! `istio_requests_total` at all while `web` reports every request it sent; the server (`prices`)
//! still reports both callers' requests, `quiet`'s named by the peer header its sidecar keeps
//! sending; and once the Telemetry is gone, `quiet` counts again (the change reaches its
//! listeners without a restart).

use meshd_tests::{Mesh, Pod, PodSpec, wait_until, yaml};

use crate::support::{CONVERGE, MeshSetup, client_pod, get_until_ok};

const PRICES_IP: &str = "10.77.9.10";
const WEB_IP: &str = "10.77.9.20";
const QUIET_IP: &str = "10.77.9.21";
const PRICES_VIP: &str = "10.96.9.10";
const PORT: u16 = 8080;
const REQUESTS: u64 = 7;

fn no_metrics_for_quiet() -> String {
    "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: no-metrics, namespace: default}
spec:
  selector: {matchLabels: {app: quiet}}
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: ALL_METRICS, mode: CLIENT_AND_SERVER}
      disabled: true
"
    .to_owned()
}

/// The pod's `istio_requests_total` series whose labels include every one of `wanted`: how many,
/// and their sum. The page is the one Prometheus scrapes, read from inside the pod.
fn requests(pod: &Pod, wanted: &[(&str, &str)]) -> anyhow::Result<(usize, u64)> {
    let page = pod.curl(
        "http://127.0.0.1:15090/stats/prometheus",
        &["--max-time", "5"],
    );
    anyhow::ensure!(page.status == 200, "{}: {page:?}", pod.name());
    let mut series = 0;
    let mut total = 0;
    for line in page.body.lines() {
        let Some(rest) = line.strip_prefix("istio_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        if wanted
            .iter()
            .all(|(k, v)| labels.contains(&format!("{k}=\"{v}\"")))
        {
            series += 1;
            total += value.trim().parse::<u64>()?;
        }
    }
    Ok((series, total))
}

#[test]
fn a_telemetry_turns_istio_metrics_off_for_one_workload_and_its_removal_turns_them_on()
-> anyhow::Result<()> {
    let mesh = Mesh::new()?;
    mesh.write_config("telemetry.yaml", &[no_metrics_for_quiet()])?;
    let env = MeshSetup::new()
        .config([yaml::service(
            "prices",
            "default",
            PRICES_VIP,
            &[("http", PORT, PORT)],
            &[("app", "prices")],
        )])
        .app(
            PodSpec::new("prices", "default")
                .ip(PRICES_IP.parse()?)
                .label("app", "prices")
                .service_account("prices")
                .sidecar(),
            &[PORT],
            &[],
        )
        .caller(client_pod("web", WEB_IP)?)
        .caller(client_pod("quiet", QUIET_IP)?)
        .start_in(mesh)?;
    let (prices, web, quiet) = (env.pod("prices")?, env.pod("web")?, env.pod("quiet")?);
    let diagnostics =
        || crate::support::diagnostics(&env.mesh, &env.meshd, &[&prices, &web, &quiet]);
    let url = format!("http://{PRICES_VIP}:{PORT}/quote");

    // Counters are live on the page: compare before and after, past the warm-up requests.
    for caller in [&web, &quiet] {
        get_until_ok(caller, &url, &[]);
    }
    let source = [("reporter", "source")];
    let from = |workload| [("reporter", "destination"), ("source_workload", workload)];
    let web_before = requests(&web, &source)?.1;
    let at_prices_before = [
        requests(&prices, &from("web"))?.1,
        requests(&prices, &from("quiet"))?.1,
    ];
    for _ in 0..REQUESTS {
        for caller in [&web, &quiet] {
            let answer = caller.curl(&url, &[]);
            assert_eq!(answer.status, 200, "{answer:?}\n{}", diagnostics());
        }
    }

    let (quiet_series, _) = requests(&quiet, &[])?;
    assert_eq!(quiet_series, 0, "quiet reports requests\n{}", diagnostics());
    assert_eq!(requests(&web, &source)?.1 - web_before, REQUESTS);
    // The server reports both callers, quiet named by the header its sidecar still sends.
    let at_prices = [
        requests(&prices, &from("web"))?.1,
        requests(&prices, &from("quiet"))?.1,
    ];
    assert_eq!(
        [
            at_prices[0] - at_prices_before[0],
            at_prices[1] - at_prices_before[1]
        ],
        [REQUESTS, REQUESTS],
        "{}",
        diagnostics()
    );
    let quiet_at_prices = requests(
        &prices,
        &[
            ("reporter", "destination"),
            ("source_workload", "quiet"),
            ("source_canonical_service", "quiet"),
            ("source_workload_namespace", "default"),
        ],
    )?;
    assert!(quiet_at_prices.1 >= REQUESTS, "{quiet_at_prices:?}");

    // Without the Telemetry, quiet's listeners count again.
    env.mesh.write_config("telemetry.yaml", &[])?;
    let counts = wait_until(CONVERGE, || {
        quiet.curl(&url, &[]);
        requests(&quiet, &source).is_ok_and(|(_, total)| total > 0)
    });
    assert!(counts, "quiet still reports nothing\n{}", diagnostics());
    Ok(())
}
