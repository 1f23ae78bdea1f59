//! A campaign: batches from one seed, each through meshd and then the real Envoy, with figures,
//! and every failure shrunk to the objects and resources that cause it.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use meshd_proto::pb::envoy::config::bootstrap::v3::Bootstrap;

use super::batch::{Batch, to_yaml};
use super::envoy::{self, Envoy, normalized};
use super::minimize::minimize;
use super::pipeline::{self, Passed, Translated};
use super::rng::Rng;

#[derive(Clone, Debug)]
pub struct Settings {
    pub seed: u64,
    /// At most this many batches...
    pub batches: u64,
    /// ...and no more batches once this much time has passed.
    pub time_limit: Duration,
    pub envoy: PathBuf,
    /// Calls of Envoy (or of meshd, for panics) one shrinking may take.
    pub shrink_budget: usize,
    /// Only this batch of the campaign (to replay a failure).
    pub only_batch: Option<u64>,
}

/// What a failure is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Envoy refused what meshd's checks let through.
    Rejected(String),
    Panic {
        stage: String,
        message: String,
    },
}

/// A failure, shrunk.
#[derive(Clone, Debug)]
pub struct Failure {
    pub batch: u64,
    pub batch_seed: u64,
    pub kind: Kind,
    /// The objects that still cause it, as YAML documents.
    pub objects: String,
    /// The resources that still cause it (Envoy JSON); empty for panics.
    pub resources: serde_json::Value,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub batches: u64,
    pub objects_generated: u64,
    pub objects_parsed: u64,
    pub proxies: u64,
    pub resources_checked: u64,
    pub resources_held_back: u64,
    pub resources_to_envoy: u64,
    /// Envoy runs of the campaign itself (shrinking runs are not counted).
    pub envoy_runs: u64,
    pub rejections: u64,
    pub panics: u64,
    pub failures: Vec<Failure>,
    pub elapsed: Duration,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.rejections == 0 && self.panics == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {:#x}: {} batches in {:.1}s",
            self.seed,
            self.batches,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "  objects generated {}, parsed {}; proxies {}",
            self.objects_generated, self.objects_parsed, self.proxies
        )?;
        writeln!(
            f,
            "  resources checked {}, held back by the checks {}, handed to Envoy {}",
            self.resources_checked, self.resources_held_back, self.resources_to_envoy
        )?;
        writeln!(
            f,
            "  Envoy runs {}; unpredicted rejections {}; panics {}",
            self.envoy_runs, self.rejections, self.panics
        )?;
        for failure in &self.failures {
            write!(f, "{failure}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "---- failure in batch {} (batch seed {:#x})",
            self.batch, self.batch_seed
        )?;
        match &self.kind {
            Kind::Rejected(why) => writeln!(f, "Envoy rejected what meshd let through: {why}")?,
            Kind::Panic { stage, message } => writeln!(f, "panic in {stage}: {message}")?,
        }
        writeln!(f, "objects:\n{}", self.objects)?;
        if !self.resources.as_array().is_none_or(|r| r.is_empty()) {
            let json = serde_json::to_string_pretty(&self.resources).unwrap_or_default();
            writeln!(f, "resources (Envoy JSON):\n{json}")?;
        }
        Ok(())
    }
}

/// Runs the campaign, printing progress and failures to `log` as they come.
pub fn run(settings: &Settings, log: &mut dyn Write) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut envoy = Envoy::new(&settings.envoy)?;
    let base = envoy::base_bootstrap();
    let mut report = Report {
        seed: settings.seed,
        ..Report::default()
    };
    writeln!(
        log,
        "fuzzing meshd against Envoy with seed {:#x} (MESHD_FUZZ_SEED)",
        settings.seed
    )?;
    let mut seen = Vec::new();
    let indexes: Box<dyn Iterator<Item = u64>> = match settings.only_batch {
        Some(i) => Box::new(std::iter::once(i)),
        None => Box::new(0..settings.batches),
    };
    for index in indexes {
        if started.elapsed() > settings.time_limit {
            break;
        }
        let batch_seed = Rng::derive(settings.seed, index);
        let batch = Batch::generate(batch_seed);
        report.batches += 1;
        report.objects_generated += batch.objects.len() as u64;
        let translated = match pipeline::run(&batch) {
            Ok(t) => t,
            Err(panic) => {
                report.panics += 1;
                let kind = Kind::Panic {
                    stage: panic.stage,
                    message: panic.message,
                };
                if !seen.contains(&kind) {
                    seen.push(kind.clone());
                    let failure = shrink_panic(settings, index, &batch, kind);
                    write!(log, "{failure}")?;
                    report.failures.push(failure);
                }
                continue;
            }
        };
        tally(&mut report, &translated);
        let config = envoy::config(&base, &translated.passed);
        report.envoy_runs += 1;
        if let Err(why) = envoy.validate(&config)? {
            report.rejections += 1;
            let kind = Kind::Rejected(why);
            let key = match &kind {
                Kind::Rejected(why) => Kind::Rejected(normalized(why)),
                other => other.clone(),
            };
            if !seen.contains(&key) {
                seen.push(key);
                let failure = shrink_rejection(
                    settings,
                    &mut envoy,
                    &base,
                    index,
                    &batch,
                    &translated,
                    kind,
                )?;
                write!(log, "{failure}")?;
                report.failures.push(failure);
            }
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

fn tally(report: &mut Report, translated: &Translated) {
    report.objects_parsed += translated.objects_parsed as u64;
    report.proxies += translated.proxies as u64;
    report.resources_checked += translated.checked as u64;
    report.resources_held_back += translated.held_back as u64;
    report.resources_to_envoy += translated.passed.len() as u64;
}

fn yaml(objects: &[serde_json::Value]) -> String {
    objects
        .iter()
        .map(to_yaml)
        .collect::<Vec<_>>()
        .join("---\n")
}

fn shrink_panic(settings: &Settings, index: u64, batch: &Batch, kind: Kind) -> Failure {
    let same = |objects: &[serde_json::Value]| match pipeline::run(
        &batch.with_objects(objects.to_vec()),
    ) {
        Err(p) => {
            Kind::Panic {
                stage: p.stage,
                message: p.message,
            } == kind
        }
        Ok(_) => false,
    };
    let objects = minimize(batch.objects.clone(), settings.shrink_budget, same);
    Failure {
        batch: index,
        batch_seed: batch.seed,
        kind,
        objects: yaml(&objects),
        resources: serde_json::Value::Array(Vec::new()),
    }
}

/// The objects, then the resources, that still make Envoy say the same thing.
fn shrink_rejection(
    settings: &Settings,
    envoy: &mut Envoy,
    base: &Bootstrap,
    index: u64,
    batch: &Batch,
    translated: &Translated,
    kind: Kind,
) -> anyhow::Result<Failure> {
    let Kind::Rejected(why) = &kind else {
        anyhow::bail!("not a rejection");
    };
    let want = normalized(why);
    let mut error = None;
    let mut rejects_same = |envoy: &mut Envoy, passed: &[Passed]| -> bool {
        match envoy.validate(&envoy::config(base, passed)) {
            Ok(Err(got)) => normalized(&got) == want,
            Ok(Ok(())) => false,
            Err(e) => {
                error = Some(e);
                false
            }
        }
    };
    let objects =
        minimize(
            batch.objects.clone(),
            settings.shrink_budget,
            |objects| match pipeline::run(&batch.with_objects(objects.to_vec())) {
                Ok(t) => rejects_same(envoy, &t.passed),
                Err(_) => false,
            },
        );
    let passed = match pipeline::run(&batch.with_objects(objects.clone())) {
        Ok(t) => t.passed,
        Err(_) => translated.passed.clone(),
    };
    let resources = minimize(passed, settings.shrink_budget, |passed| {
        rejects_same(envoy, passed)
    });
    if let Some(e) = error {
        return Err(e);
    }
    Ok(Failure {
        batch: index,
        batch_seed: batch.seed,
        kind,
        objects: yaml(&objects),
        resources: envoy::to_json(&resources),
    })
}
