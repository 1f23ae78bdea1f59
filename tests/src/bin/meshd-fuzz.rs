//! `meshd-fuzz`: a long differential campaign of meshd against the real Envoy (`make fuzz`).
//! Exits 1 when Envoy rejected anything meshd let through or meshd panicked.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use meshd_tests::fuzz::{Settings, campaign};

#[derive(Parser, Debug)]
#[command(about = "Differential fuzzing of meshd against envoy --mode validate")]
struct Args {
    /// Seed of the campaign (decimal or 0x hex); a fresh one from the clock if not given.
    #[arg(long, env = "MESHD_FUZZ_SEED", value_parser = parse_seed)]
    seed: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, env = "MESHD_FUZZ_SECONDS", default_value_t = 600)]
    seconds: u64,
    /// Stop after this many batches.
    #[arg(long, env = "MESHD_FUZZ_BATCHES", default_value_t = u64::MAX)]
    batches: u64,
    /// Run only this batch of the campaign (to replay a failure).
    #[arg(long, env = "MESHD_FUZZ_BATCH")]
    batch: Option<u64>,
}

fn parse_seed(text: &str) -> Result<u64, String> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let settings = Settings {
        seed,
        batches: args.batches,
        time_limit: Duration::from_secs(args.seconds),
        envoy: meshd_tests::deps::envoy_binary()?,
        shrink_budget: 400,
        only_batch: args.batch,
    };
    let report = campaign::run(&settings, &mut std::io::stderr())?;
    println!("{report}");
    if !report.passed() {
        std::process::exit(1);
    }
    Ok(())
}
