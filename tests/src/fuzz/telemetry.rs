//! Telemetry: access logging and tracing rules with the built-in and mesh-config providers (and
//! names no mesh config defines), filters Envoy takes and ones it would refuse, sampling in and out
//! of range, custom tags of every kind.

use serde_json::{Value, json};

use super::world::Gen;

const TELEMETRY: &str = "telemetry.istio.io/v1";

fn providers(g: &mut Gen) -> Value {
    let names: Vec<&str> = (0..g.a.rng.range(0, 2))
        .map(|_| {
            *g.a.rng
                .pick(&["envoy", "envoy", "zipkin", "otel", "json-file", ""])
        })
        .collect();
    json!(names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>())
}

fn mode(g: &mut Gen) -> Value {
    let mode = if g.hostile() {
        *g.a.rng.pick(&["client", "BOTH", ""])
    } else {
        *g.a.rng.pick(&["CLIENT_AND_SERVER", "CLIENT", "SERVER"])
    };
    json!({"mode": mode})
}

fn filter(g: &mut Gen) -> String {
    let expressions = [
        "response.code >= 400",
        "request.path.startsWith('/api') && response.code != 200",
        "has(request.headers.accept)",
        "size(request.path) > 10",
    ];
    let hostile = [
        "response.code >=",
        "request.path.lowerAscii() == '/a'",
        "[1].exists(x, x > 0)",
        "string(response.code) == '200'",
        "'unterminated",
        "has(request.headers['x-debug'])",
    ];
    if g.hostile() {
        (*g.a.rng.pick(&hostile)).to_string()
    } else {
        (*g.a.rng.pick(&expressions)).to_string()
    }
}

fn custom_tag(g: &mut Gen) -> Value {
    match g.below(5) {
        0 => json!({"literal": {"value": g.a.name()}}),
        1 => json!({"environment": {"name": "NODE_NAME", "defaultValue": "unknown"}}),
        2 => json!({"header": {"name": g.a.header_name(), "defaultValue": "-"}}),
        3 => json!({"formatter": {"value": "%REQ(:PATH)%"}}),
        _ if g.hostile() => json!({"literal": {"value": ""}}),
        _ => json!({"header": {"name": "x-user"}}),
    }
}

pub fn telemetry(g: &mut Gen) -> Value {
    let namespace = g.namespace();
    let meta = g.meta(&namespace, "telemetry");
    let mut spec = json!({});
    if g.chance(40) {
        spec["selector"] = json!({"matchLabels": g.labels()});
    }
    if g.chance(70) {
        let mut rules = Vec::new();
        for _ in 0..g.a.rng.range(1, 2) {
            let mut rule = json!({"providers": providers(g)});
            if g.chance(30) {
                rule["match"] = mode(g);
            }
            if g.chance(30) {
                rule["disabled"] = json!(g.chance(50));
            }
            if g.chance(30) {
                rule["filter"] = json!({"expression": filter(g)});
            }
            rules.push(rule);
        }
        spec["accessLogging"] = json!(rules);
    }
    if g.chance(60) {
        let sampling = if g.hostile() {
            *g.a.rng.pick(&[-1.0, 100.5, 250.0])
        } else {
            *g.a.rng.pick(&[0.0, 1.0, 10.0, 100.0])
        };
        let mut rule = json!({"providers": providers(g), "randomSamplingPercentage": sampling});
        if g.chance(30) {
            rule["match"] = mode(g);
        }
        if g.chance(30) {
            rule["disableSpanReporting"] = json!(g.chance(50));
        }
        if g.chance(40) {
            let name = g.a.name();
            rule["customTags"] = json!({name: custom_tag(g)});
        }
        spec["tracing"] = json!([rule]);
    }
    json!({"apiVersion": TELEMETRY, "kind": "Telemetry", "metadata": meta, "spec": spec})
}
