//! Ordered values: numbers, enums, booleans, durations and timestamps. Every numeric rule type has
//! the same shape (`const`, `lt`, `lte`, `gt`, `gte`, `in`, `not_in`), so each is turned into one
//! [`Bounds`] over a type wide enough for all of them: `i128` for integers, `f64` for floats,
//! nanoseconds for durations and timestamps.

use std::fmt::Display;

use crate::pb::google::protobuf::{Duration, Timestamp};
use crate::pb::validate::field_rules::Type;
use crate::pb::validate::{DurationRules, EnumRules, TimestampRules};

pub(super) struct Bounds<T> {
    r#const: Option<T>,
    lt: Option<T>,
    lte: Option<T>,
    gt: Option<T>,
    gte: Option<T>,
    r#in: Vec<T>,
    not_in: Vec<T>,
    ignore_empty: bool,
}

/// A scalar read from a message, widened.
#[derive(Clone, Copy, Debug)]
pub(super) enum Number {
    Int(i128),
    Float(f64),
}

macro_rules! bounds {
    ($rules:expr, $widen:expr) => {{
        let r = $rules;
        let w = $widen;
        Bounds {
            r#const: r.r#const.map(w),
            lt: r.lt.map(w),
            lte: r.lte.map(w),
            gt: r.gt.map(w),
            gte: r.gte.map(w),
            r#in: r.r#in.iter().copied().map(w).collect(),
            not_in: r.not_in.iter().copied().map(w).collect(),
            ignore_empty: r.ignore_empty(),
        }
    }};
}

/// Checks `value` against numeric rules; rules of another kind (a mismatch the API never has)
/// check nothing.
pub(super) fn number(rules: &Type, value: Number, out: &mut Vec<String>) {
    match (rules, value) {
        (Type::Int32(r), Number::Int(v)) => check(&bounds!(r, |x: i32| i128::from(x)), v, out),
        (Type::Int64(r), Number::Int(v)) => check(&bounds!(r, |x: i64| i128::from(x)), v, out),
        (Type::Uint32(r), Number::Int(v)) => check(&bounds!(r, |x: u32| i128::from(x)), v, out),
        (Type::Uint64(r), Number::Int(v)) => check(&bounds!(r, |x: u64| i128::from(x)), v, out),
        (Type::Sint32(r), Number::Int(v)) => check(&bounds!(r, |x: i32| i128::from(x)), v, out),
        (Type::Sint64(r), Number::Int(v)) => check(&bounds!(r, |x: i64| i128::from(x)), v, out),
        (Type::Fixed32(r), Number::Int(v)) => check(&bounds!(r, |x: u32| i128::from(x)), v, out),
        (Type::Fixed64(r), Number::Int(v)) => check(&bounds!(r, |x: u64| i128::from(x)), v, out),
        (Type::Sfixed32(r), Number::Int(v)) => check(&bounds!(r, |x: i32| i128::from(x)), v, out),
        (Type::Sfixed64(r), Number::Int(v)) => check(&bounds!(r, |x: i64| i128::from(x)), v, out),
        (Type::Float(r), Number::Float(v)) => check(&bounds!(r, |x: f32| f64::from(x)), v, out),
        (Type::Double(r), Number::Float(v)) => check(&bounds!(r, |x: f64| x), v, out),
        (Type::Bool(r), Number::Int(v)) => {
            if let Some(c) = r.r#const
                && (v != 0) != c
            {
                out.push(format!("value must equal {c}"));
            }
        }
        _ => {}
    }
}

pub(super) fn enumeration(
    rules: &EnumRules,
    value: i32,
    descriptor: &prost_reflect::EnumDescriptor,
    out: &mut Vec<String>,
) {
    if let Some(c) = rules.r#const
        && value != c
    {
        out.push(format!("value must equal {c}"));
    }
    if rules.defined_only() && descriptor.get_value(value).is_none() {
        out.push(format!(
            "value {value} must be one of the defined values of {}",
            descriptor.full_name()
        ));
    }
    if !rules.r#in.is_empty() && !rules.r#in.contains(&value) {
        out.push(format!("value must be in list {:?}", rules.r#in));
    }
    if rules.not_in.contains(&value) {
        out.push(format!("value must not be in list {:?}", rules.not_in));
    }
}

/// A duration or timestamp as nanoseconds, printed as seconds.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Default)]
pub(super) struct Nanos(pub(super) i128);

impl Display for Nanos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seconds = self.0 / 1_000_000_000;
        let nanos = (self.0 % 1_000_000_000).abs();
        if nanos == 0 {
            write!(f, "{seconds}s")
        } else {
            let sign = if self.0 < 0 && seconds == 0 { "-" } else { "" };
            let fraction = format!("{nanos:09}");
            write!(f, "{sign}{seconds}.{}s", fraction.trim_end_matches('0'))
        }
    }
}

impl Nanos {
    pub(super) fn of_duration(d: &Duration) -> Nanos {
        Nanos(i128::from(d.seconds) * 1_000_000_000 + i128::from(d.nanos))
    }

    pub(super) fn of_timestamp(t: &Timestamp) -> Nanos {
        Nanos(i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos))
    }
}

pub(super) fn duration(rules: &DurationRules, value: Nanos, out: &mut Vec<String>) {
    let w = |d: &Duration| Nanos::of_duration(d);
    let bounds = Bounds {
        r#const: rules.r#const.as_ref().map(w),
        lt: rules.lt.as_ref().map(w),
        lte: rules.lte.as_ref().map(w),
        gt: rules.gt.as_ref().map(w),
        gte: rules.gte.as_ref().map(w),
        r#in: rules.r#in.iter().map(w).collect(),
        not_in: rules.not_in.iter().map(w).collect(),
        ignore_empty: false,
    };
    check(&bounds, value, out);
}

pub(super) fn timestamp(rules: &TimestampRules, value: Nanos, out: &mut Vec<String>) {
    let w = |t: &Timestamp| Nanos::of_timestamp(t);
    let bounds = Bounds {
        r#const: rules.r#const.as_ref().map(w),
        lt: rules.lt.as_ref().map(w),
        lte: rules.lte.as_ref().map(w),
        gt: rules.gt.as_ref().map(w),
        gte: rules.gte.as_ref().map(w),
        r#in: Vec::new(),
        not_in: Vec::new(),
        ignore_empty: false,
    };
    check(&bounds, value, out);
    // `lt_now`, `gt_now` and `within` depend on the clock; none of Envoy's fields uses them, and a
    // pure checker should not, so they are left to Envoy.
}

/// protoc-gen-validate's semantics: with both a lower and an upper bound, the value must lie
/// between them when upper > lower, and outside them otherwise (an exclusive range).
fn check<T: PartialOrd + Copy + Display + Default>(b: &Bounds<T>, v: T, out: &mut Vec<String>) {
    if b.ignore_empty && v == T::default() {
        return;
    }
    if let Some(c) = b.r#const
        && v != c
    {
        out.push(format!("value must equal {c}"));
    }
    let lower = match (b.gt, b.gte) {
        (Some(g), _) => Some((g, v > g, "greater than")),
        (None, Some(g)) => Some((g, v >= g, "greater than or equal to")),
        (None, None) => None,
    };
    let upper = match (b.lt, b.lte) {
        (Some(l), _) => Some((l, v < l, "less than")),
        (None, Some(l)) => Some((l, v <= l, "less than or equal to")),
        (None, None) => None,
    };
    match (lower, upper) {
        (Some((lo, lo_ok, lo_word)), Some((hi, hi_ok, hi_word))) => {
            let inside = hi > lo;
            if inside && !(lo_ok && hi_ok) {
                out.push(format!("value must be {lo_word} {lo} and {hi_word} {hi}"));
            } else if !inside && !lo_ok && !hi_ok {
                out.push(format!("value must be {lo_word} {lo} or {hi_word} {hi}"));
            }
        }
        (Some((bound, false, word)), None) | (None, Some((bound, false, word))) => {
            out.push(format!("value must be {word} {bound}"));
        }
        _ => {}
    }
    if !b.r#in.is_empty() && !b.r#in.contains(&v) {
        out.push(format!("value {v} is not one of the allowed values"));
    }
    if b.not_in.contains(&v) {
        out.push(format!("value {v} is one of the refused values"));
    }
}

impl Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Number::Int(v) => write!(f, "{v}"),
            Number::Float(v) => write!(f, "{v}"),
        }
    }
}
