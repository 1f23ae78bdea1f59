//! Authorization end to end, through stock Envoy sidecars talking mutual TLS: AuthorizationPolicy
//! by caller identity and path, DENY before ALLOW, network RBAC on a TCP port, and
//! RequestAuthentication with keys meshd fetches from a `jwksUri` (no proxy fetches them).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use meshd_tests::{HttpResult, Mesh, Meshd, Pod, PodSpec, wait_for, yaml};

const SERVER_IP: &str = "10.77.1.10";
const SLEEP_IP: &str = "10.77.1.20";
const OTHER_IP: &str = "10.77.1.21";
const KEYS_IP: &str = "10.77.1.40";
const KEYS_PORT: u16 = 8000;
const ECHO_VIP: &str = "10.96.0.10";
const HTTP_PORT: u16 = 8080;
const TCP_PORT: u16 = 9000;
const CONVERGE: Duration = Duration::from_secs(30);
const ISSUER: &str = "https://issuer.meshd.test";

struct Env {
    // Field order is drop order: the mesh goes first and takes every process with it.
    mesh: Mesh,
    meshd: Meshd,
    server: Pod,
    /// Service account `sleep`.
    sleep: Pod,
    /// Service account `other`.
    other: Pod,
    /// The JWKS document the keys pod serves, when there is one.
    jwks_file: Option<PathBuf>,
}

/// `echo` (sa `echo`; HTTP on 8080, TCP line echo on 9000) called by `sleep` and `other`, all with
/// sidecars holding meshd certificates, STRICT mTLS. With `jwks`, a pod without sidecar serves
/// that document at `http://KEYS_IP:KEYS_PORT/jwks.json`, started before meshd.
fn authz_mesh(extra: &[String], meshd_args: &[&str], jwks: Option<&str>) -> anyhow::Result<Env> {
    let mesh = Mesh::new()?;
    let server_spec = PodSpec::new("echo", "default")
        .ip(SERVER_IP.parse()?)
        .label("app", "echo")
        .service_account("echo")
        .sidecar()
        .tls();
    let client = |name: &str, ip: &str| -> anyhow::Result<PodSpec> {
        Ok(PodSpec::new(name, "default")
            .ip(ip.parse()?)
            .label("app", name)
            .service_account(name)
            .sidecar()
            .tls())
    };
    let sleep_spec = client("sleep", SLEEP_IP)?;
    let other_spec = client("other", OTHER_IP)?;
    let mut docs = vec![
        yaml::service(
            "echo",
            "default",
            ECHO_VIP,
            &[
                ("http", HTTP_PORT, HTTP_PORT),
                ("tcp-echo", TCP_PORT, TCP_PORT),
            ],
            &[("app", "echo")],
        ),
        yaml::peer_authentication("default", "default", "STRICT"),
        server_spec.yaml()?,
        sleep_spec.yaml()?,
        other_spec.yaml()?,
    ];
    docs.extend(extra.iter().cloned());
    mesh.write_config("mesh.yaml", &docs)?;
    let jwks_file = match jwks {
        Some(document) => Some(serve_jwks(&mesh, document)?),
        None => None,
    };
    let meshd = mesh.start_meshd(mesh.config_dir(), meshd_args)?;
    let server = mesh.add_pod(server_spec)?;
    server.start_echo(&[HTTP_PORT], &[TCP_PORT])?;
    let sleep = mesh.add_pod(sleep_spec)?;
    let other = mesh.add_pod(other_spec)?;
    Ok(Env {
        mesh,
        meshd,
        server,
        sleep,
        other,
        jwks_file,
    })
}

/// Serves `document` as `/jwks.json` from a pod without sidecar (an issuer outside the mesh that
/// only meshd, in the hub, talks to); returns the file, which can be replaced while it runs.
fn serve_jwks(mesh: &Mesh, document: &str) -> anyhow::Result<PathBuf> {
    let dir = mesh.dir().join("issuer");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("jwks.json");
    write_atomically(&file, document)?;
    let keys = mesh.add_pod(PodSpec::new("issuer", "default").ip(KEYS_IP.parse()?))?;
    keys.spawn(&[
        "python3",
        "-m",
        "http.server",
        &KEYS_PORT.to_string(),
        "--bind",
        "0.0.0.0",
        "--directory",
        dir.to_str().unwrap(),
    ])?;
    keys.wait_listening(KEYS_PORT, Duration::from_secs(10))?;
    Ok(file)
}

fn write_atomically(file: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

fn echo_url(path: &str) -> String {
    format!("http://{ECHO_VIP}:{HTTP_PORT}{path}")
}

/// Calls `url` until it answers `status` (policies reach the sidecars asynchronously).
fn get_until(pod: &Pod, url: &str, headers: &[&str], status: u16) -> HttpResult {
    let mut args = Vec::new();
    for h in headers {
        args.extend(["-H", h]);
    }
    let mut last = HttpResult::default();
    wait_for(CONVERGE, || {
        last = pod.curl(url, &args);
        (last.status == status).then_some(())
    });
    last
}

fn diagnostics(env: &Env) -> String {
    format!(
        "logs in {}\n--- server envoy ---\n{}\n--- meshd ---\n{}",
        env.mesh.dir().display(),
        env.server.envoy_log(),
        env.meshd.log()
    )
}

/// Sends `line` over TCP from inside `pod` (captured like any app) and returns the first line
/// that comes back, empty if the connection closed without one.
fn tcp_exchange(pod: &Pod, line: &str) -> anyhow::Result<String> {
    let script = format!(
        "exec 3<>/dev/tcp/{ECHO_VIP}/{TCP_PORT} && printf '%s\\n' '{line}' >&3 && timeout 5 head -n1 <&3"
    );
    let output = pod.exec(&["bash", "-c", &script])?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn allow_sleep_only() -> String {
    "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: echo-allow-sleep, namespace: default}
spec:
  selector: {matchLabels: {app: echo}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/sleep]}}]
"
    .to_string()
}

#[test]
fn an_allow_policy_for_one_service_account_lets_it_in_and_denies_another_identity()
-> anyhow::Result<()> {
    let env = authz_mesh(&[allow_sleep_only()], &[], None)?;
    let allowed = get_until(&env.sleep, &echo_url("/hello"), &[], 200);
    assert_eq!(allowed.status, 200, "{allowed:?}\n{}", diagnostics(&env));
    let denied = get_until(&env.other, &echo_url("/hello"), &[], 403);
    assert_eq!(denied.status, 403, "{denied:?}\n{}", diagnostics(&env));
    assert_eq!(denied.body, "RBAC: access denied");
    // The caller did reach the server's sidecar over mTLS: it was refused there, by identity.
    assert!(stat_sum(&env.server, ".rbac.denied") >= 1);
    Ok(())
}

/// The sum of a pod's Envoy stats ending in `suffix` (stat prefixes follow chain names).
fn stat_sum(pod: &Pod, suffix: &str) -> u64 {
    pod.envoy_stats()
        .unwrap_or_default()
        .iter()
        .filter(|(name, _)| name.ends_with(suffix))
        .map(|(_, v)| *v)
        .sum()
}

#[test]
fn a_deny_on_a_path_wins_over_the_allow() -> anyhow::Result<()> {
    let deny_admin = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: echo-no-admin, namespace: default}
spec:
  selector: {matchLabels: {app: echo}}
  action: DENY
  rules:
  - to: [{operation: {paths: [/admin, /admin/*]}}]
"
    .to_string();
    let env = authz_mesh(&[allow_sleep_only(), deny_admin], &[], None)?;
    let open = get_until(&env.sleep, &echo_url("/orders"), &[], 200);
    assert_eq!(open.status, 200, "{open:?}\n{}", diagnostics(&env));
    for path in ["/admin", "/admin/users"] {
        let denied = get_until(&env.sleep, &echo_url(path), &[], 403);
        assert_eq!(denied.status, 403, "{path}: {denied:?}");
        assert_eq!(denied.body, "RBAC: access denied");
    }
    // The rest stays allowed for sleep.
    let after = env.sleep.curl(&echo_url("/administrators"), &[]);
    assert_eq!(after.status, 200, "{after:?}");
    Ok(())
}

#[test]
fn a_tcp_service_gets_network_rbac_and_a_denied_identitys_connection_is_closed()
-> anyhow::Result<()> {
    let env = authz_mesh(&[allow_sleep_only()], &[], None)?;
    let mut answer = String::new();
    wait_for(CONVERGE, || {
        answer = tcp_exchange(&env.sleep, "hello").unwrap_or_default();
        (answer == "echo: hello").then_some(())
    });
    assert_eq!(answer, "echo: hello", "{}", diagnostics(&env));
    let mut refused = String::from("never tried");
    let closed = wait_for(CONVERGE, || {
        refused = tcp_exchange(&env.other, "hello").unwrap_or_default();
        (refused.is_empty() && stat_sum(&env.server, "tcp.rbac.denied") >= 1).then_some(())
    });
    assert!(
        closed.is_some(),
        "other's connection was not closed by network RBAC (answer {refused:?}, tcp.rbac.denied \
         {})\n{}",
        stat_sum(&env.server, "tcp.rbac.denied"),
        diagnostics(&env)
    );
    Ok(())
}

/// An ES256 issuer: a P-256 key made for the test, its JWKS, and the tokens it signs.
struct Issuer {
    key: EcdsaKeyPair,
    kid: String,
}

impl Issuer {
    fn new(kid: &str) -> Issuer {
        Issuer {
            key: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
            kid: kid.to_string(),
        }
    }

    fn jwks(&self) -> String {
        // Uncompressed point: 0x04, then x and y, 32 bytes each.
        let point = self.key.public_key().as_ref();
        serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
            "x": b64url(&point[1..33]), "y": b64url(&point[33..65]),
        }]})
        .to_string()
    }

    /// A token from [`ISSUER`] for `sub`, valid for an hour, with `groups`.
    fn token(&self, sub: &str, groups: &[&str]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": sub, "iat": now, "exp": now + 3600, "groups": groups,
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .unwrap();
        format!("{signing_input}.{}", b64url(signature.as_ref()))
    }
}

/// Base64url without padding, as JOSE writes it.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn bearer(token: &str) -> String {
    format!("authorization: Bearer {token}")
}

/// RequestAuthentication for echo with keys at the keys pod's `jwksUri`; `/orders/*` only for
/// alice in group admins, `/public/*` for anyone.
fn jwt_policies() -> Vec<String> {
    vec![
        format!(
            "apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: echo-jwt, namespace: default}}
spec:
  selector: {{matchLabels: {{app: echo}}}}
  jwtRules:
  - issuer: {ISSUER}
    jwksUri: http://{KEYS_IP}:{KEYS_PORT}/jwks.json
"
        ),
        format!(
            "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: echo-orders, namespace: default}}
spec:
  selector: {{matchLabels: {{app: echo}}}}
  rules:
  - from: [{{source: {{requestPrincipals: [{ISSUER}/alice]}}}}]
    to: [{{operation: {{paths: [/orders/*]}}}}]
    when: [{{key: \"request.auth.claims[groups]\", values: [admins]}}]
  - to: [{{operation: {{paths: [/public/*]}}}}]
"
        ),
    ]
}

#[test]
fn a_jwt_gated_path_answers_401_without_a_token_403_with_wrong_claims_and_200_with_the_right_one()
-> anyhow::Result<()> {
    let issuer = Issuer::new("test-key-1");
    let env = authz_mesh(&jwt_policies(), &[], Some(&issuer.jwks()))?;
    let open = get_until(&env.sleep, &echo_url("/public/info"), &[], 200);
    assert_eq!(open.status, 200, "{open:?}\n{}", diagnostics(&env));

    let alice_admin = bearer(&issuer.token("alice", &["admins"]));
    let right = get_until(&env.sleep, &echo_url("/orders/1"), &[&alice_admin], 200);
    assert_eq!(right.status, 200, "{right:?}\n{}", diagnostics(&env));

    let missing = env.sleep.curl(&echo_url("/orders/1"), &[]);
    assert_eq!(missing.status, 401, "no token: {missing:?}");
    assert_eq!(missing.body, "Jwt is missing");

    for (who, token) in [
        ("alice, not in admins", issuer.token("alice", &["guests"])),
        ("bob, in admins", issuer.token("bob", &["admins"])),
    ] {
        let wrong = env
            .sleep
            .curl(&echo_url("/orders/1"), &["-H", &bearer(&token)]);
        assert_eq!(wrong.status, 403, "{who}: {wrong:?}");
        assert_eq!(wrong.body, "RBAC: access denied");
    }

    // A token signed by a key the issuer never published fails validation: 401.
    let forged = Issuer::new("test-key-1").token("alice", &["admins"]);
    let invalid = env
        .sleep
        .curl(&echo_url("/orders/1"), &["-H", &bearer(&forged)]);
    assert_eq!(invalid.status, 401, "forged token: {invalid:?}");

    // Keys reached the proxy inline, fetched by meshd: the server's sidecar has no cluster for
    // the issuer and never connected to it.
    let dump = env.server.envoy_admin("/config_dump")?;
    assert!(dump.contains("test-key-1"), "keys not inlined");
    assert!(
        !dump.contains("remote_jwks"),
        "a proxy was told to fetch keys"
    );
    Ok(())
}

#[test]
fn rotated_issuer_keys_reach_the_proxies_at_the_next_jwks_refresh() -> anyhow::Result<()> {
    let old = Issuer::new("key-before");
    let env = authz_mesh(
        &jwt_policies(),
        &["--jwks-refresh", "2s"],
        Some(&old.jwks()),
    )?;
    let old_token = bearer(&old.token("alice", &["admins"]));
    let before = get_until(&env.sleep, &echo_url("/orders/1"), &[&old_token], 200);
    assert_eq!(before.status, 200, "{before:?}\n{}", diagnostics(&env));

    let new = Issuer::new("key-after");
    write_atomically(env.jwks_file.as_ref().unwrap(), &new.jwks())?;
    let new_token = bearer(&new.token("alice", &["admins"]));
    let after = get_until(&env.sleep, &echo_url("/orders/1"), &[&new_token], 200);
    assert_eq!(after.status, 200, "{after:?}\n{}", diagnostics(&env));
    let retired = env.sleep.curl(&echo_url("/orders/1"), &["-H", &old_token]);
    assert_eq!(
        retired.status, 401,
        "the old key still verifies: {retired:?}"
    );
    assert!(env.meshd.log().contains("JWKS changed"));
    Ok(())
}

#[test]
fn base64url_matches_the_rfc_4648_vectors() {
    for (plain, encoded) in [
        ("", ""),
        ("f", "Zg"),
        ("fo", "Zm8"),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg"),
        ("fooba", "Zm9vYmE"),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(b64url(plain.as_bytes()), encoded);
    }
    assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
}
