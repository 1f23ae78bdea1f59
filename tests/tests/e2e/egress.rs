//! Leaving the mesh through an egress gateway, as Istio's egress tasks do: a sidecar sends traffic
//! for external hosts (ServiceEntries) to the egress gateway over mesh mTLS (a DestinationRule with
//! `ISTIO_MUTUAL` on a subset), the gateway terminates it with its own mesh certificate (Gateway
//! servers with `tls.mode: ISTIO_MUTUAL`) and sends it on; one VirtualService per host is bound to
//! `mesh` and the gateway and split by match-level `gateways`. Both HTTP and TCP; the external
//! server is a pod without a sidecar and sees the gateway as its client.

use meshd_tests::{Mesh, PodSpec, wait_until, yaml};

use crate::support::{CONVERGE, diagnostics, get_until_ok};

const GATEWAY_IP: &str = "10.77.2.5";
const CLIENT_IP: &str = "10.77.2.30";
const EXTERNAL_IP: &str = "10.77.2.40";
const WEB_HOST: &str = "web.external.example";
const TCP_HOST: &str = "tcp.external.example";
const TCP_VIP: &str = "240.0.0.9";
const EGRESS_FQDN: &str = "istio-egressgateway.istio-system.svc.cluster.local";

/// The Gateway, the DestinationRule for the egress gateway and the two VirtualServices of Istio's
/// egress tasks, in the `default` namespace (so `istio-egressgateway` is a short name there).
fn egress_config() -> Vec<String> {
    vec![
        format!(
            "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: istio-egressgateway, namespace: default}}
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 443, name: https-web, protocol: HTTPS}}
    hosts: [{WEB_HOST}]
    tls: {{mode: ISTIO_MUTUAL}}
  - port: {{number: 443, name: tls-tcp, protocol: TLS}}
    hosts: [{TCP_HOST}]
    tls: {{mode: ISTIO_MUTUAL}}
"
        ),
        format!(
            "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: egressgateway-for-external, namespace: default}}
spec:
  host: {EGRESS_FQDN}
  subsets:
  - name: web
    trafficPolicy:
      portLevelSettings:
      - port: {{number: 443}}
        tls: {{mode: ISTIO_MUTUAL, sni: {WEB_HOST}}}
  - name: tcp
    trafficPolicy:
      portLevelSettings:
      - port: {{number: 443}}
        tls: {{mode: ISTIO_MUTUAL, sni: {TCP_HOST}}}
"
        ),
        format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web-through-egress-gateway, namespace: default}}
spec:
  hosts: [{WEB_HOST}]
  gateways: [istio-egressgateway, mesh]
  http:
  - match: [{{gateways: [mesh], port: 8080}}]
    route: [{{destination: {{host: {EGRESS_FQDN}, subset: web, port: {{number: 443}}}}}}]
  - match: [{{gateways: [istio-egressgateway], port: 443}}]
    route: [{{destination: {{host: {WEB_HOST}, port: {{number: 8080}}}}}}]
"
        ),
        format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp-through-egress-gateway, namespace: default}}
spec:
  hosts: [{TCP_HOST}]
  gateways: [mesh, istio-egressgateway]
  tcp:
  - match: [{{gateways: [mesh], port: 9000}}]
    route: [{{destination: {{host: {EGRESS_FQDN}, subset: tcp, port: {{number: 443}}}}}}]
  - match: [{{gateways: [istio-egressgateway], port: 443}}]
    route: [{{destination: {{host: {TCP_HOST}, port: {{number: 9000}}}}}}]
"
        ),
    ]
}

#[test]
fn a_sidecar_reaches_external_http_and_tcp_services_only_through_the_egress_gateway_over_mtls()
-> anyhow::Result<()> {
    let mesh = Mesh::new()?;
    let gateway_spec = PodSpec::new("istio-egressgateway", "istio-system")
        .ip(GATEWAY_IP.parse()?)
        .label("istio", "egressgateway")
        .service_account("istio-egressgateway-service-account")
        .router()
        .tls();
    let client_spec = PodSpec::new("sleep", "default")
        .ip(CLIENT_IP.parse()?)
        .label("app", "sleep")
        .sidecar()
        .tls();
    let mut config = vec![
        yaml::service(
            "istio-egressgateway",
            "istio-system",
            "10.96.2.50",
            &[("https", 443, 443)],
            &[("istio", "egressgateway")],
        ),
        yaml::service_entry(&yaml::ServiceEntry {
            name: "web",
            namespace: "default",
            hosts: &[WEB_HOST],
            ports: &[("http", 8080, "HTTP")],
            resolution: "STATIC",
            endpoints: &[EXTERNAL_IP],
            ..yaml::ServiceEntry::default()
        }),
        yaml::service_entry(&yaml::ServiceEntry {
            name: "tcp",
            namespace: "default",
            hosts: &[TCP_HOST],
            addresses: &[TCP_VIP],
            ports: &[("tcp", 9000, "TCP")],
            resolution: "STATIC",
            endpoints: &[EXTERNAL_IP],
            ..yaml::ServiceEntry::default()
        }),
        gateway_spec.yaml()?,
        client_spec.yaml()?,
    ];
    config.extend(egress_config());
    mesh.write_config("mesh.yaml", &config)?;
    let meshd = mesh.start_meshd(mesh.config_dir(), &[])?;
    // Outside the mesh: no sidecar, so it sees whoever connects to it.
    let external = mesh.add_pod(PodSpec::new("external", "default").ip(EXTERNAL_IP.parse()?))?;
    let external_app = external.start_echo(&[8080], &[9000])?;
    let gateway = mesh.add_pod(gateway_spec)?;
    let client = mesh.add_pod(client_spec)?;
    let diagnose = || diagnostics(&mesh, &meshd, &[&client, &gateway]);

    // HTTP: the external server answers, and its client was the egress gateway.
    let resolve = format!("{WEB_HOST}:8080:{EXTERNAL_IP}");
    let web = get_until_ok(
        &client,
        &format!("http://{WEB_HOST}:8080/through-egress"),
        &["--resolve", &resolve],
    );
    assert_eq!(
        web.echo_pod().as_deref(),
        Some("external"),
        "{web:?}\n{}",
        diagnose()
    );
    let remote = web.json()?["remote"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        remote.starts_with(&format!("{GATEWAY_IP}:")),
        "the external server was called by {remote}, not the egress gateway {GATEWAY_IP}"
    );

    // TCP: the same, by the ServiceEntry's address.
    let mut last = Ok(String::new());
    let answered = wait_until(CONVERGE, || {
        last = client.tcp_exchange(TCP_VIP, 9000, "hello egress");
        last.as_deref()
            .is_ok_and(|line| line == "external: hello egress")
    });
    assert!(answered, "TCP to {TCP_VIP}:9000: {last:?}\n{}", diagnose());
    let tcp_clients = external_app.output();
    assert!(
        tcp_clients.contains(&format!("tcp connection from {GATEWAY_IP}:")),
        "the external TCP server's clients: {tcp_clients}"
    );

    // Both went through the gateway's clusters, and both sidecar→gateway hops were mTLS that the
    // gateway terminated (TLS handshakes on its listener, a client certificate each time).
    let stat = |name: &str| gateway.envoy_stat(name).unwrap_or(0);
    assert!(
        stat(&format!(
            "cluster.outbound|8080||{WEB_HOST}.upstream_rq_total"
        )) >= 1
    );
    assert!(
        stat(&format!(
            "cluster.outbound|9000||{TCP_HOST}.upstream_cx_total"
        )) >= 1
    );
    assert!(
        stat("listener.0.0.0.0_443.ssl.handshake") >= 2,
        "{:?}",
        gateway.envoy_stats()
    );
    assert_eq!(stat("listener.0.0.0.0_443.ssl.no_certificate"), 0);
    // On the sidecar's side, the connections to the gateway were TLS too.
    let client_tls = client
        .envoy_stat(&format!(
            "cluster.outbound|443|web|{EGRESS_FQDN}.ssl.handshake"
        ))
        .unwrap_or(0)
        + client
            .envoy_stat(&format!(
                "cluster.outbound|443|tcp|{EGRESS_FQDN}.ssl.handshake"
            ))
            .unwrap_or(0);
    assert!(client_tls >= 2, "{:?}", client.envoy_stats());

    // A client outside the mesh (plaintext, no mesh certificate) is refused by the gateway.
    let plaintext = external.curl(
        &format!("http://{GATEWAY_IP}:443/"),
        &["-H", &format!("Host: {WEB_HOST}"), "--max-time", "5"],
    );
    assert_ne!(plaintext.status, 200, "{plaintext:?}");
    let line = external.tcp_exchange(GATEWAY_IP, 443, "hello")?;
    assert!(!line.contains("external: hello"), "{line}");
    assert_eq!(
        gateway.envoy_stat("listener_manager.lds.update_rejected"),
        Some(0)
    );
    Ok(())
}
