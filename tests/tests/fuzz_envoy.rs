//! A bounded differential campaign: random meshes through meshd, whatever its checks let through
//! loaded by the real Envoy. Needs Envoy (`make test-deps`), not root. The seed is fixed so CI
//! is repeatable; `MESHD_FUZZ_SEED`, `MESHD_FUZZ_BATCHES` and `MESHD_FUZZ_SECONDS` change it, and
//! `make fuzz` runs a long campaign with a fresh seed.

use meshd_tests::fuzz::{Settings, campaign};

const SEED: u64 = 0x6d65_7368_6421;
const BATCHES: u64 = 400;
/// Wall time the campaign may take on a 2-core machine; batches stop there.
const SECONDS: u64 = 150;

#[test]
fn envoy_accepts_everything_meshd_lets_through_from_random_meshes() {
    let settings = Settings::from_env(SEED, BATCHES, SECONDS).expect("fuzz settings");
    let report = campaign::run(&settings, &mut std::io::stderr()).expect("the campaign runs");
    println!("{report}");
    assert!(report.batches > 0, "no batch ran");
    assert!(
        report.passed(),
        "Envoy rejected what meshd let through, or meshd panicked; replay with \
         MESHD_FUZZ_SEED={:#x} MESHD_FUZZ_BATCH=<batch>:\n{report}",
        report.seed
    );
}
