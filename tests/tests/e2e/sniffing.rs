//! Ports without a declared protocol (no `appProtocol`, no protocol-prefixed name) are sniffed by
//! the sidecars, as istiod configures them: HTTP gets HTTP routing on both sides (over mesh mTLS
//! too), and a client-first binary protocol — a Postgres startup exchange — passes through as TCP.

use meshd_tests::{Mesh, PodSpec, wait_until};

use crate::support::{CONVERGE, diagnostics, get_until_ok};

const SERVER_IP: &str = "10.77.3.10";
const CLIENT_IP: &str = "10.77.3.30";
const DB_VIP: &str = "10.96.3.1";
const WEB_VIP: &str = "10.96.3.2";

/// A Postgres-shaped server: reads a startup message (length, protocol 3.0, parameters) and answers
/// AuthenticationOk then ReadyForQuery, as a Postgres server does for a trusted user.
const PG_SERVER: &str = r#"
import socket, struct
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5432))
s.listen(16)
while True:
    c, addr = s.accept()
    print("startup from", addr, flush=True)
    try:
        length, version = struct.unpack("!II", c.recv(8, socket.MSG_WAITALL))
        c.recv(length - 8, socket.MSG_WAITALL)
        if version == 196608:
            c.sendall(b"R" + struct.pack("!II", 8, 0) + b"Z" + struct.pack("!I", 5) + b"I")
    except Exception as e:
        print("bad startup:", e, flush=True)
    finally:
        c.close()
"#;

/// The client's side: a startup message for user `meshd`; prints the answer in hex.
const PG_CLIENT: &str = r#"
import socket, struct, sys
params = b"user\x00meshd\x00database\x00shop\x00\x00"
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
c.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
data = b""
while len(data) < 15:
    chunk = c.recv(15 - len(data))
    if not chunk:
        break
    data += chunk
print(data.hex())
"#;

/// AuthenticationOk (`R`, length 8, 0) and ReadyForQuery (`Z`, length 5, idle).
const PG_READY: &str = "5200000008000000005a0000000549";

/// Services whose ports name no protocol.
fn unnamed_services() -> Vec<String> {
    vec![
        format!(
            "apiVersion: v1
kind: Service
metadata: {{name: db, namespace: default}}
spec:
  clusterIP: {DB_VIP}
  selector: {{app: server}}
  ports: [{{port: 5432}}]
"
        ),
        format!(
            "apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  clusterIP: {WEB_VIP}
  selector: {{app: server}}
  ports: [{{port: 80, targetPort: 8080}}]
"
        ),
    ]
}

#[test]
fn a_postgres_like_protocol_and_http_on_unnamed_ports_both_work_through_sidecars()
-> anyhow::Result<()> {
    let mesh = Mesh::new()?;
    let server_spec = PodSpec::new("server", "default")
        .ip(SERVER_IP.parse()?)
        .label("app", "server")
        .sidecar()
        .tls();
    let client_spec = PodSpec::new("client", "default")
        .ip(CLIENT_IP.parse()?)
        .label("app", "client")
        .sidecar()
        .tls();
    let mut config = unnamed_services();
    config.extend([server_spec.yaml()?, client_spec.yaml()?]);
    mesh.write_config("mesh.yaml", &config)?;
    let meshd = mesh.start_meshd(mesh.config_dir(), &[])?;
    let server = mesh.add_pod(server_spec)?;
    server.start_echo(&[8080], &[])?;
    let pg = server.spawn(&["python3", "-c", PG_SERVER])?;
    server.wait_listening(5432, std::time::Duration::from_secs(10))?;
    let client = mesh.add_pod(client_spec)?;
    let diagnose = || diagnostics(&mesh, &meshd, &[&client, &server]);

    // HTTP on the unnamed port: routed as HTTP by the client's sidecar and served as HTTP by the
    // server's, behind mTLS.
    let web = get_until_ok(&client, &format!("http://{WEB_VIP}/sniffed"), &[]);
    assert_eq!(
        web.echo_pod().as_deref(),
        Some("server"),
        "{web:?}\n{}",
        diagnose()
    );
    let requests = |pod: &meshd_tests::Pod, stat: &str| pod.envoy_stat(stat).unwrap_or(0);
    assert!(
        requests(&client, "http.outbound_0.0.0.0_80.downstream_rq_total") >= 1,
        "the client's sidecar did not route it as HTTP: {:?}",
        client.envoy_stats()
    );
    assert!(
        requests(&server, "http.inbound_0.0.0.0_8080.downstream_rq_total") >= 1,
        "the server's sidecar did not serve it as HTTP: {:?}",
        server.envoy_stats()
    );
    // The caller's identity arrived from the mTLS handshake.
    let xfcc = web.json()?["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        xfcc.contains("spiffe://cluster.local/ns/default/sa/"),
        "{web:?}"
    );

    // The Postgres-like exchange on the other unnamed port: binary, client first, passed as TCP.
    let mut answer = String::new();
    let answered = wait_until(CONVERGE, || {
        answer = client
            .exec(&["python3", "-c", PG_CLIENT, DB_VIP, "5432"])
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        answer == PG_READY
    });
    assert!(
        answered,
        "Postgres startup answered {answer:?}\n--- server app ---\n{}\n{}",
        pg.output(),
        diagnose()
    );
    let db_cluster = "cluster.outbound|5432||db.default.svc.cluster.local";
    assert!(requests(&client, &format!("{db_cluster}.upstream_cx_total")) >= 1);
    assert!(
        requests(&client, &format!("{db_cluster}.ssl.handshake")) >= 1,
        "not over mTLS: {:?}",
        client.envoy_stats()
    );
    for pod in [&client, &server] {
        assert_eq!(
            pod.envoy_stat("listener_manager.lds.update_rejected"),
            Some(0)
        );
    }
    Ok(())
}
