//! Conditions as the Gateway API writes them: `type`, `status` (`"True"`/`"False"`), `reason`,
//! `message` and the generation they judged. `lastTransitionTime` is the writer's business.

use serde_json::{Value, json};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Condition {
    pub kind: &'static str,
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Condition {
    pub(crate) fn yes(kind: &'static str, reason: &'static str) -> Condition {
        Condition {
            kind,
            ok: true,
            reason,
            message: String::new(),
        }
    }

    pub(crate) fn no(kind: &'static str, reason: &'static str, message: String) -> Condition {
        Condition {
            kind,
            ok: false,
            reason,
            message,
        }
    }

    pub(crate) fn to_json(&self, generation: Option<i64>) -> Value {
        let mut c = json!({
            "type": self.kind,
            "status": if self.ok { "True" } else { "False" },
            "reason": self.reason,
            "message": self.message,
        });
        if let Some(g) = generation {
            c["observedGeneration"] = json!(g);
        }
        c
    }
}

pub(crate) fn conditions(list: &[Condition], generation: Option<i64>) -> Value {
    Value::Array(list.iter().map(|c| c.to_json(generation)).collect())
}

/// The first failing condition of `kind` among `problems`, else `kind` true with `ok_reason`.
pub(crate) fn first_problem(
    kind: &'static str,
    ok_reason: &'static str,
    problems: &[(&'static str, String)],
) -> Condition {
    match problems.first() {
        Some((reason, message)) => Condition::no(kind, reason, message.clone()),
        None => Condition::yes(kind, ok_reason),
    }
}
