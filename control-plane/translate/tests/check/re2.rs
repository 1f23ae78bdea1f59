//! The RE2 estimate against what Envoy 1.40 reported for 771 patterns (realistic route
//! regexes, adversarial ones and random combinations of RE2's constructs): each line of
//! `re2_calibration.jsonl` holds a pattern and either the program size Envoy stated with
//! `re2.max_program_size.error_level` set to 1, or the error it refused the pattern with.

use meshd_translate::check::regex::{Verdict, judge};
use serde_json::Value;

fn calibration() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/check/re2_calibration.jsonl"
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_program_size_estimate_is_never_below_what_envoy_reports() {
    let mut below = Vec::new();
    let mut realistic_ratios = Vec::new();
    let mut exact = 0;
    let mut measured = 0;
    for row in calibration() {
        let Some(real) = row["envoy_size"].as_u64() else {
            continue;
        };
        let pattern = row["pattern"].as_str().unwrap();
        let estimate = match judge(pattern) {
            Verdict::Compiles { program_size } => program_size,
            other => panic!("{pattern:?}: Envoy compiled it to {real}, judged {other:?}"),
        };
        measured += 1;
        if estimate < real {
            below.push(format!("{pattern:?}: estimate {estimate} < real {real}"));
        }
        if estimate == real {
            exact += 1;
        }
        if row["kind"] == "realistic" {
            realistic_ratios.push(estimate as f64 / real as f64);
        }
    }
    assert!(
        below.is_empty(),
        "estimates below Envoy's sizes:\n{}",
        below.join("\n")
    );
    assert!(measured > 700, "{measured}");
    // Close for realistic patterns: most exact, none far off (the worst are anchored literals,
    // whose prefix RE2 matches outside the program).
    realistic_ratios.sort_by(f64::total_cmp);
    let median = realistic_ratios[realistic_ratios.len() / 2];
    assert!(median <= 1.01, "median {median}");
    assert!(
        realistic_ratios.iter().all(|r| *r <= 8.0),
        "{realistic_ratios:?}"
    );
    assert!(exact * 2 > measured, "{exact} of {measured} exact");
}

#[test]
fn patterns_envoy_refuses_are_judged_invalid_and_those_it_takes_are_not() {
    for row in calibration() {
        let pattern = row["pattern"].as_str().unwrap();
        let verdict = judge(pattern);
        if let Some(error) = row["envoy_error"].as_str() {
            assert!(
                matches!(verdict, Verdict::Invalid(_)),
                "{pattern:?}: Envoy says {error:?}, judged {verdict:?}"
            );
        } else {
            assert!(
                matches!(verdict, Verdict::Compiles { .. }),
                "{pattern:?}: Envoy compiles it, judged {verdict:?}"
            );
        }
    }
}

#[test]
fn the_largest_patterns_are_cut_off_rather_than_built() {
    let huge = "(?:[a-z]{1000}){1000}".to_string();
    // Nested counts past 1000 are refused by RE2 itself.
    assert!(matches!(judge(&huge), Verdict::Invalid(_)));
    let long = "(?:x{1000})".repeat(1100);
    assert_eq!(judge(&long), Verdict::TooLarge);
}
