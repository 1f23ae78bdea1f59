//! PeerAuthentication, AuthorizationPolicy and RequestAuthentication: modes, port-level
//! settings, every source and operation field, conditions, JWT rules with inline keys.

use serde_json::{Map, Value, json};

use super::world::Gen;

const SECURITY: &str = "security.istio.io/v1";

/// An RSA public key as a JWKS (the one the translate goldens use).
const JWKS: &str = r#"{"keys":[{"kty":"RSA","alg":"RS256","use":"sig","kid":"test-1","n":"n_GLoz45x2XRhX7juyEnqdoZRnrAO-WKjoh7OlE5sddb9V47DEpm1eKqWy9cKpLJy6JcOCxzqzTxLS96xXLmch7kynZ0zfsqLSEChZ1l9HlgUX0_Dss_LV6O2L_xVHUdTjaFJwB2_rdR0eBA3AIfGhwhsCEEXzC_iEe5Ba4JKhh_6RYzo9ZlNGTSoX_UKgxK-ek4e3AYepzpFv6MR3YzP77DOEvtqfjU9mwnP8PzmhD95CwsQIefALz2ljsugmDTZXep-FqOPbBRmmYZtZKZ7zRAjnTxC5SlIAW6eOhz7BvJuU_puOsjE0oqnfJL4daX0_jHvnYoaScCRL5edB8n5Q","e":"AQAB"}]}"#;

fn mtls_mode(g: &mut Gen) -> String {
    if g.hostile() {
        return (*g.a.rng.pick(&["", "strict", "ISTIO_MUTUAL", "OFF"])).to_string();
    }
    (*g.a.rng.pick(&["STRICT", "PERMISSIVE", "DISABLE", "UNSET"])).to_string()
}

pub fn peer_authentication(g: &mut Gen) -> Value {
    let namespace = g.namespace();
    let meta = g.meta(&namespace, "pa");
    let mut spec = json!({});
    if g.chance(50) {
        spec["selector"] = g.workload_selector();
    }
    if g.chance(80) {
        spec["mtls"] = json!({"mode": mtls_mode(g)});
    }
    if g.chance(30) {
        let mut ports = Map::new();
        for _ in 0..g.a.rng.range(0, 2) {
            let port = g.port().to_string();
            ports.insert(port, json!({"mode": mtls_mode(g)}));
        }
        spec["portLevelMtls"] = Value::Object(ports);
    }
    json!({"apiVersion": SECURITY, "kind": "PeerAuthentication", "metadata": meta, "spec": spec})
}

fn principal(g: &mut Gen) -> String {
    match g.below(5) {
        0 => "*".to_string(),
        1 => format!("cluster.local/ns/{}/sa/{}", g.namespace(), g.a.name()),
        2 => format!("*/ns/{}/sa/*", g.namespace()),
        3 => format!("https://{}/{}", g.a.host(), g.a.name()),
        _ => g.a.name(),
    }
}

/// Draws one value of a source field.
type Draw = fn(&mut Gen) -> String;

fn source(g: &mut Gen) -> Value {
    let mut s = json!({});
    let fields: [(&str, Draw); 8] = [
        ("principals", principal),
        ("notPrincipals", principal),
        ("requestPrincipals", principal),
        ("namespaces", |g| g.namespace()),
        ("notNamespaces", |g| g.namespace()),
        ("ipBlocks", |g| g.a.cidr()),
        ("notRemoteIpBlocks", |g| g.a.cidr()),
        ("serviceAccounts", |g| {
            format!("{}/{}", g.namespace(), g.a.name())
        }),
    ];
    for (field, value) in fields {
        if g.chance(25) {
            s[field] = json!(g.some(2, value));
        }
    }
    if g.chance(10) {
        s["remoteIpBlocks"] = json!(g.some(2, |g| g.a.cidr()));
    }
    s
}

fn operation(g: &mut Gen) -> Value {
    let mut o = json!({});
    if g.chance(40) {
        o["paths"] = json!(g.some(2, |g| {
            match g.below(4) {
                0 => "/api/*".to_string(),
                1 => "*/admin".to_string(),
                2 => "/a/{*}/b".to_string(),
                _ => (*g
                    .a
                    .rng
                    .pick(&["/", "/health", "", "/x*y", "/{**}", "no-slash"]))
                .to_string(),
            }
        }));
    }
    if g.chance(20) {
        o["notPaths"] = json!(g.some(1, |_| "/private/*".to_string()));
    }
    if g.chance(30) {
        o["methods"] = json!(g.some(2, |g| {
            (*g.a.rng.pick(&["GET", "POST", "*", "get", ""])).to_string()
        }));
    }
    if g.chance(30) {
        o["ports"] = json!(g.some(2, |g| g.port().to_string()));
    }
    if g.chance(10) {
        o["notPorts"] = json!(g.some(1, |g| g.a.port()));
    }
    if g.chance(30) {
        o["hosts"] = json!(g.some(2, |g| g.a.host()));
    }
    if g.chance(10) {
        o["notHosts"] = json!(g.some(1, |g| g.a.host()));
    }
    o
}

fn condition(g: &mut Gen) -> Value {
    let key = if g.hostile() {
        (*g.a
            .rng
            .pick(&["bogus.key", "request.headers", "request.auth.claims[", ""]))
        .to_string()
    } else {
        match g.below(6) {
            0 => format!("request.headers[{}]", g.a.header_name()),
            1 => "source.ip".to_string(),
            2 => "source.namespace".to_string(),
            3 => "request.auth.claims[groups]".to_string(),
            4 => "destination.port".to_string(),
            _ => "connection.sni".to_string(),
        }
    };
    let mut c = json!({"key": key});
    let values = if key.ends_with(".ip") {
        json!(g.some(2, |g| g.a.cidr()))
    } else if key.ends_with(".port") {
        json!(g.some(2, |g| g.port()))
    } else {
        json!(g.some(2, |g| g.a.header_value()))
    };
    if g.chance(70) {
        c["values"] = values;
    } else {
        c["notValues"] = values;
    }
    c
}

pub fn authorization_policy(g: &mut Gen) -> Value {
    let namespace = g.namespace();
    let meta = g.meta(&namespace, "authz");
    let mut spec = json!({});
    if g.chance(60) {
        spec["selector"] = g.workload_selector();
    }
    let action = if g.hostile() {
        *g.a.rng.pick(&["", "allow", "REJECT"])
    } else {
        *g.a.rng.pick(&["ALLOW", "DENY", "AUDIT", "CUSTOM", "ALLOW"])
    };
    if action != "ALLOW" || g.chance(50) {
        spec["action"] = json!(action);
    }
    if action == "CUSTOM" && g.chance(80) {
        spec["provider"] = json!({"name": g.a.name()});
    }
    if g.chance(90) {
        spec["rules"] = json!(g.list(3, |g| {
            let mut r = json!({});
            if g.chance(60) {
                r["from"] = json!(g.some(2, |g| json!({"source": source(g)})));
            }
            if g.chance(60) {
                r["to"] = json!(g.some(2, |g| json!({"operation": operation(g)})));
            }
            if g.chance(30) {
                r["when"] = json!(g.some(2, condition));
            }
            r
        }));
    }
    json!({"apiVersion": SECURITY, "kind": "AuthorizationPolicy", "metadata": meta, "spec": spec})
}

fn jwt_rule(g: &mut Gen) -> Value {
    let issuer = if g.hostile() {
        g.a.host()
    } else {
        format!("https://{}", g.a.host())
    };
    let mut r = json!({"issuer": issuer});
    match g.below(4) {
        0 => r["jwksUri"] = json!(format!("https://{}/jwks.json", g.a.host())),
        1 if g.hostile() => {
            r["jwks"] = json!(*g.a.rng.pick(&["not json", "{\"keys\":[]}", "{}", ""]))
        }
        _ => r["jwks"] = json!(JWKS),
    }
    if g.chance(40) {
        r["audiences"] = json!(g.some(2, |g| g.a.name()));
    }
    if g.chance(30) {
        r["fromHeaders"] = json!(g.some(2, |g| json!({"name": g.a.header_name(),
            "prefix": *g.a.rng.pick(&["Bearer ", "", "Token"])})));
    }
    if g.chance(20) {
        r["fromParams"] = json!(g.some(2, |g| g.a.name()));
    }
    if g.chance(15) {
        r["fromCookies"] = json!(g.some(2, |g| g.a.name()));
    }
    if g.chance(20) {
        r["outputPayloadToHeader"] = json!(g.a.header_name());
    }
    if g.chance(20) {
        r["outputClaimToHeaders"] = json!(g.some(
            2,
            |g| json!({"header": g.a.header_name(), "claim": g.a.name()})
        ));
    }
    if g.chance(20) {
        r["forwardOriginalToken"] = json!(true);
    }
    if g.chance(10) {
        r["timeout"] = g.a.duration();
    }
    if g.chance(10) {
        r["spaceDelimitedClaims"] = json!(g.some(2, |g| g.a.name()));
    }
    r
}

pub fn request_authentication(g: &mut Gen) -> Value {
    let namespace = g.namespace();
    let meta = g.meta(&namespace, "jwt");
    let mut spec = json!({"jwtRules": g.some(2, jwt_rule)});
    if g.chance(60) {
        spec["selector"] = g.workload_selector();
    }
    json!({"apiVersion": SECURITY, "kind": "RequestAuthentication", "metadata": meta, "spec": spec})
}
