//! Authorization end to end, through stock Envoy sidecars talking mutual TLS: AuthorizationPolicy
//! by caller identity and path, DENY before ALLOW, network RBAC on a TCP port, and
//! RequestAuthentication with keys meshd fetches from a `jwksUri` (no proxy fetches them).

use std::path::PathBuf;

use meshd_tests::{Mesh, Meshd, Pod, wait_for, yaml};

use crate::support::jwt::{ISSUER, Issuer, bearer, serve_jwks};
use crate::support::{
    CONVERGE, ECHO_VIP, MeshSetup, client_pod, echo_pod, echo_service, get_until, write_readable,
};

const SERVER_IP: &str = "10.77.1.10";
const SLEEP_IP: &str = "10.77.1.20";
const OTHER_IP: &str = "10.77.1.21";
const KEYS_IP: &str = "10.77.1.40";
const KEYS_PORT: u16 = 8000;
const HTTP_PORT: u16 = 8080;
const TCP_PORT: u16 = 9000;

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
    let jwks_file = match jwks {
        Some(document) => Some(serve_jwks(&mesh, KEYS_IP, KEYS_PORT, document)?),
        None => None,
    };
    let env = MeshSetup::new()
        .config([
            echo_service(
                "echo",
                ECHO_VIP,
                &[("http", HTTP_PORT), ("tcp-echo", TCP_PORT)],
            ),
            yaml::peer_authentication("default", "default", "STRICT"),
        ])
        .config(extra.iter().cloned())
        .meshd_args(meshd_args)
        .app(
            echo_pod("echo", SERVER_IP)?.tls(),
            &[HTTP_PORT],
            &[TCP_PORT],
        )
        .caller(client_pod("sleep", SLEEP_IP)?.tls())
        .caller(client_pod("other", OTHER_IP)?.tls())
        .start_in(mesh)?;
    Ok(Env {
        server: env.pod("echo")?,
        sleep: env.pod("sleep")?,
        other: env.pod("other")?,
        mesh: env.mesh,
        meshd: env.meshd,
        jwks_file,
    })
}

fn echo_url(path: &str) -> String {
    format!("http://{ECHO_VIP}:{HTTP_PORT}{path}")
}

fn diagnostics(env: &Env) -> String {
    crate::support::diagnostics(&env.mesh, &env.meshd, &[&env.server])
}

/// Sends `line` to echo's TCP port from `pod`; the line that came back, empty if none.
fn tcp_exchange(pod: &Pod, line: &str) -> anyhow::Result<String> {
    pod.tcp_exchange(ECHO_VIP, TCP_PORT, line)
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
    let right = get_until(
        &env.sleep,
        &echo_url("/orders/1"),
        &["-H", &alice_admin],
        200,
    );
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
    let before = get_until(&env.sleep, &echo_url("/orders/1"), &["-H", &old_token], 200);
    assert_eq!(before.status, 200, "{before:?}\n{}", diagnostics(&env));

    let new = Issuer::new("key-after");
    write_readable(env.jwks_file.as_ref().unwrap(), &new.jwks())?;
    let new_token = bearer(&new.token("alice", &["admins"]));
    let after = get_until(&env.sleep, &echo_url("/orders/1"), &["-H", &new_token], 200);
    assert_eq!(after.status, 200, "{after:?}\n{}", diagnostics(&env));
    let retired = env.sleep.curl(&echo_url("/orders/1"), &["-H", &old_token]);
    assert_eq!(
        retired.status, 401,
        "the old key still verifies: {retired:?}"
    );
    assert!(env.meshd.log().contains("JWKS changed"));
    Ok(())
}
