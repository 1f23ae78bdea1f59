//! Small mutations of generated objects: one field replaced by a value of the sort its name
//! suggests (a port, a duration, a regex, a host...), removed, duplicated, or given garbage.
//! Mostly-valid objects with one thing wrong reach deeper than noise does.

use serde_json::Value;

use super::atoms::Atoms;

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

/// Every position in `value` (the root excluded), depth first.
fn positions(value: &Value, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                prefix.push(Step::Key(k.clone()));
                out.push(prefix.clone());
                positions(v, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                prefix.push(Step::Index(i));
                out.push(prefix.clone());
                positions(v, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn parent_mut<'a>(root: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    let mut cur = root;
    for step in path {
        cur = match step {
            Step::Key(k) => cur.get_mut(k.as_str())?,
            Step::Index(i) => cur.get_mut(*i)?,
        };
    }
    Some(cur)
}

/// The nearest key name on the path: what sort of value the position holds.
fn field_name(path: &[Step]) -> &str {
    path.iter()
        .rev()
        .find_map(|s| match s {
            Step::Key(k) => Some(k.as_str()),
            Step::Index(_) => None,
        })
        .unwrap_or("")
}

/// A value of the sort `field` names.
fn value_for(a: &mut Atoms, field: &str) -> Value {
    let f = field.to_ascii_lowercase();
    if f.contains("port") || f == "number" || f.contains("containerport") {
        a.port()
    } else if f.contains("timeout")
        || f.contains("delay")
        || f.contains("interval")
        || f.contains("time")
        || f == "ttl"
        || f.contains("duration")
        || f.contains("maxage")
    {
        a.duration()
    } else if f == "regex" || f == "match" {
        Value::from(a.regex())
    } else if f.contains("host") || f == "authority" || f == "sni" || f.contains("issuer") {
        Value::from(a.host())
    } else if f == "weight" {
        a.weight()
    } else if f == "value" || f.contains("percent") {
        a.percent()
    } else if f.contains("address") || f == "ip" || f == "podip" || f == "clusterip" {
        Value::from(a.ip())
    } else if f.contains("subnet") || f.contains("ipblock") {
        Value::from(a.cidr())
    } else if f.contains("header") || f == "set" || f == "add" || f == "remove" {
        if a.rng.chance(50) {
            Value::from(a.header_name())
        } else {
            Value::from(a.header_value())
        }
    } else if f.contains("max")
        || f.contains("consecutive")
        || f.contains("attempts")
        || f.contains("size")
        || f == "probes"
    {
        a.count()
    } else if f == "name" || f == "namespace" || f == "subset" {
        Value::from(a.name())
    } else {
        a.garbage()
    }
}

/// Applies one random mutation to `object`. `kind` and `apiVersion` are left alone most of the
/// time: breaking them only tests the outermost check.
pub fn mutate(a: &mut Atoms, object: &mut Value) {
    let mut all = Vec::new();
    positions(object, &mut Vec::new(), &mut all);
    all.retain(|p| {
        !matches!(p.first(), Some(Step::Key(k)) if (k == "kind" || k == "apiVersion") && p.len() == 1)
    });
    if all.is_empty() {
        return;
    }
    let path = all[a.rng.below(all.len())].clone();
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let field = field_name(&path).to_string();
    let Some(parent) = parent_mut(object, parent_path) else {
        return;
    };
    match (a.rng.below(6), last, parent) {
        (0, Step::Key(k), Value::Object(map)) => {
            map.remove(k);
        }
        (1, Step::Index(i), Value::Array(items)) => {
            let copy = items[*i].clone();
            items.insert(*i, copy);
        }
        (2, Step::Index(i), Value::Array(items)) => {
            items.remove(*i);
        }
        (3, Step::Key(k), Value::Object(map)) => {
            map.insert(k.clone(), a.garbage());
        }
        (_, Step::Key(k), Value::Object(map)) => {
            map.insert(k.clone(), value_for(a, &field));
        }
        (_, Step::Index(i), Value::Array(items)) => {
            items[*i] = value_for(a, &field);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::rng::Rng;
    use serde_json::json;

    #[test]
    fn a_mutation_changes_one_field_and_keeps_the_kind() {
        let original = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "a"}, "spec": {"ports": [{"port": 80}]}});
        let mut a = Atoms::new(Rng::new(3), 50);
        let mut changed = 0;
        for _ in 0..50 {
            let mut object = original.clone();
            mutate(&mut a, &mut object);
            assert_eq!(object["kind"], "Service");
            changed += usize::from(object != original);
        }
        assert!(changed > 25, "{changed}");
    }
}
