//! Lives and ends. meshd's own on the host: told to stop (SIGTERM, as Kubernetes tells a pod), it
//! stops promptly even while proxies hold ADS streams open — graceful shutdown waits for open
//! streams, and only meshd itself can end those. A pod's proxy's: `meshd wait` (the injected
//! `postStart`) sees a real Envoy ready, and `meshd drain` (the `preStop`) drains its inbound
//! listeners while a request is in flight, and the request finishes; the app's rewritten probes
//! answer while meshd is out of reach, and readiness waits for meshd.

use std::time::{Duration, Instant};

use meshd_proto::pb::envoy::config::core::v3::Node;
use meshd_proto::pb::envoy::service::discovery::v3::DiscoveryRequest;
use meshd_proto::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use meshd_proto::type_url;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::support::cli::describe;
use crate::support::host_meshd::HostMeshd;
use crate::support::{ECHO_VIP, MeshSetup, client_pod, echo_pod, echo_service, get_until_ok};

/// A proxy on its own thread: one plaintext ADS stream, subscribed to clusters, read (and its
/// connection kept answering, as Envoy's does) until meshd ends it. Says on `first` when the first
/// response arrived.
fn connected_proxy(xds: &str, first: std::sync::mpsc::Sender<String>) {
    let url = format!("http://{xds}");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut client = AggregatedDiscoveryServiceClient::connect(url)
                .await
                .unwrap();
            let (requests, rx) = tokio::sync::mpsc::unbounded_channel();
            requests
                .send(DiscoveryRequest {
                    node: Some(Node {
                        id: "sidecar~10.9.0.1~sleep.default~default.svc.cluster.local".to_string(),
                        ..Default::default()
                    }),
                    type_url: type_url::CLUSTER.to_string(),
                    ..Default::default()
                })
                .unwrap();
            let mut responses = client
                .stream_aggregated_resources(UnboundedReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            if let Ok(Some(response)) = responses.message().await {
                let _ = first.send(response.type_url);
            }
            while let Ok(Some(_)) = responses.message().await {}
            drop(requests);
        });
    });
}

#[test]
fn meshd_with_a_connected_proxy_exits_promptly_on_sigterm() {
    let mut meshd = HostMeshd::with_config_dir();
    let (first, answered) = std::sync::mpsc::channel();
    connected_proxy(meshd.xds_addr(), first);
    let response = answered.recv_timeout(Duration::from_secs(10));
    assert_eq!(
        response.as_deref(),
        Ok(type_url::CLUSTER),
        "no CDS response\n{}",
        meshd.log()
    );
    let asked = Instant::now();
    meshd.signal("TERM");
    let status = meshd.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some(),
        "meshd still runs 10 s after SIGTERM with a proxy connected\n{}",
        meshd.log()
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "meshd exited with {status:?}\n{}",
        meshd.log()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "meshd took {:?} to stop",
        asked.elapsed()
    );
}

/// The sum of every `*.downstream_cx_drain_close` counter of a pod's Envoy: connections it closed
/// because it was draining.
fn drain_closes(pod: &meshd_tests::Pod) -> u64 {
    pod.envoy_stats()
        .unwrap_or_default()
        .iter()
        .filter(|(name, _)| name.ends_with(".downstream_cx_drain_close"))
        .map(|(_, value)| *value)
        .sum()
}

#[test]
fn meshd_wait_sees_envoy_ready_and_meshd_drain_lets_an_in_flight_request_finish()
-> anyhow::Result<()> {
    let env = MeshSetup::new()
        .config([echo_service("echo", ECHO_VIP, &[("http", 8080)])])
        .app(echo_pod("echo-a", "10.77.1.10")?, &[8080], &[])
        .caller(client_pod("sleep", "10.77.1.20")?)
        .start()?;
    let (sleep, echo) = (env.pod("sleep")?, env.pod("echo-a")?);
    let url = format!("http://{ECHO_VIP}:8080/");
    let ready = get_until_ok(&sleep, &url, &[]);
    assert_eq!(ready.status, 200, "{ready:?}");
    assert_eq!(drain_closes(&echo), 0);

    // The injected postStart hook: answered by the real Envoy's readiness listener.
    let meshd = meshd_tests::deps::meshd_binary().display().to_string();
    let waited = echo
        .command(&meshd)
        .args(["wait", "--timeout", "5s"])
        .output()?;
    assert!(waited.status.success(), "{}", describe(&waited));

    // A request that takes 3 s is in flight when the pod is told to stop.
    let slow = {
        let sleep = sleep.clone();
        std::thread::spawn(move || {
            sleep.curl(&format!("http://{ECHO_VIP}:8080/?delay_ms=3000"), &[])
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let drained = echo
        .command(&meshd)
        .args(["drain", "--duration", "4s"])
        .output()?;
    assert!(drained.status.success(), "{}", describe(&drained));
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "drain waits its duration"
    );

    let slow = slow.join().expect("the slow request's thread");
    assert_eq!(slow.status, 200, "the in-flight request finished: {slow:?}");
    // Envoy drained: the connection that carried it was closed once it was done.
    assert!(drain_closes(&echo) >= 1, "{:?}", echo.envoy_stats());
    Ok(())
}

#[test]
fn app_probes_answer_while_meshd_is_out_of_reach_and_readiness_waits_for_it() -> anyhow::Result<()>
{
    let web_ip = "10.77.1.30";
    let env = MeshSetup::new()
        .app(
            meshd_tests::PodSpec::new("web", "default").ip(web_ip.parse()?),
            &[8080],
            &[],
        )
        .start()?;
    let web = env.pod("web")?;
    // The bootstrap injection writes for a pod whose app has a readiness probe on 8080, pointed
    // at an xDS address nobody serves.
    let bootstrap = web.dir().join("unreachable-meshd.json");
    let probers = r#"{"/app-health/app/readyz":{"httpGet":{"path":"/","port":8080,"scheme":"HTTP"},"timeoutSeconds":1}}"#;
    let output = crate::support::cli::meshd_command()
        .args([
            "bootstrap",
            "--pod",
            "web",
            "--namespace",
            "default",
            "--ip",
            web_ip,
        ])
        .args(["--xds-addr", "10.77.0.1:1", "--admin-port", "15000"])
        .args(["--app-probers", probers])
        .arg("-o")
        .arg(&bootstrap)
        .output()?;
    assert!(output.status.success(), "{}", describe(&output));
    std::fs::set_permissions(
        &bootstrap,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    // Envoy goes live without meshd after its initial fetch times out.
    web.start_envoy(&bootstrap)?;

    // kubelet's view: the app's probe through 15020 answers; readiness does not.
    let probe = env
        .mesh
        .hub_curl(&format!("http://{web_ip}:15020/app-health/app/readyz"), &[]);
    assert_eq!(
        probe.status,
        200,
        "the app's probe: {probe:?}\n{}",
        web.envoy_log()
    );
    let ready = env
        .mesh
        .hub_curl(&format!("http://{web_ip}:15021/healthz/ready"), &[]);
    assert_eq!(ready.status, 503, "ready without meshd: {ready:?}");
    Ok(())
}
