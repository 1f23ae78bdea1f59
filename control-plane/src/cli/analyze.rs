//! `meshd analyze`: validate Istio and Kubernetes config without a running server, judging it
//! exactly as `meshd serve` does — the same snapshot assembly, the `istio` ConfigMap included.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use meshd_model::finding::REJECTED_BY_ENVOY;
use meshd_model::{Finding, InvalidObject, Severity, Snapshot};

use crate::documents::{config_files, invalid_object_json, load_file};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to analyze (recursively).
    #[arg(long = "config-dir")]
    pub config_dirs: Vec<PathBuf>,
    /// Files to analyze.
    #[arg(short = 'f', long = "file", num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Analyze what a cluster holds (listed once, as `meshd serve` would watch it).
    #[arg(long, env = "MESHD_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// MeshConfig YAML, as `meshd serve --mesh-config` takes it (ConfigMap `istio` in the root
    /// namespace overrides it, as in `serve`).
    #[arg(long, env = "MESHD_MESH_CONFIG")]
    pub mesh_config: Option<PathBuf>,
    /// Root namespace, where the mesh config ConfigMap `istio` lives; default: the mesh config's.
    #[arg(long)]
    pub root_namespace: Option<String>,
    /// Output format: text or json.
    #[arg(short = 'o', long = "output", default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

/// One line of the report.
struct Line {
    severity: Severity,
    text: String,
    json: serde_json::Value,
}

fn invalid_line(e: &InvalidObject) -> Line {
    let mut json = invalid_object_json(e);
    json["severity"] = serde_json::json!("Error");
    json["code"] = serde_json::json!("IST0106");
    Line {
        severity: Severity::Error,
        text: format!("Error [IST0106] {e}"),
        json,
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.config_dirs.is_empty() && args.files.is_empty() && args.kubeconfig.is_none() {
        anyhow::bail!("nothing to analyze: pass --config-dir DIR, -f FILE or --kubeconfig PATH");
    }
    let mut base = crate::serve::load_mesh_config(args.mesh_config.as_ref())?;
    if let Some(ns) = &args.root_namespace {
        base.root_namespace = ns.clone();
    }
    let mut files = args.files.clone();
    for dir in &args.config_dirs {
        if !dir.is_dir() {
            anyhow::bail!("{} is not a directory", dir.display());
        }
        files.extend(config_files(dir));
    }
    let mut objects = BTreeMap::new();
    let mut lines: Vec<Line> = Vec::new();
    for file in &files {
        let (objs, errors) = load_file(file);
        lines.extend(errors.iter().map(invalid_line));
        for o in objs {
            objects.insert(o.key(), o);
        }
    }
    let mut sources = format!("{} file(s)", files.len());
    if let Some(path) = &args.kubeconfig {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (objs, errors) = runtime.block_on(async {
            let client = meshd_kube::client(Some(path)).await?;
            meshd_kube::list_once(&client, &base.root_namespace).await
        })?;
        lines.extend(errors.iter().map(invalid_line));
        sources = if files.is_empty() {
            format!("{} object(s) in the cluster", objs.len())
        } else {
            format!("{sources} and {} object(s) in the cluster", objs.len())
        };
        for o in objs {
            objects.insert(o.key(), o);
        }
    }
    // Nothing is fetched here: a `jwksUri` is judged by its syntax, as before the first fetch.
    let mut snapshot = Snapshot::assemble(0, Arc::new(objects), &base, &BTreeMap::new());
    // What `meshd serve` would hold back: config Envoy would reject, by the object behind it.
    for (key, reason) in meshd_translate::audit::audit(&snapshot) {
        snapshot.findings.push(Finding::new(
            Severity::Error,
            REJECTED_BY_ENVOY,
            &key,
            "",
            format!(
                "Envoy would reject the config it produces ({reason}); `meshd serve` leaves it out"
            ),
        ));
    }
    for f in &snapshot.findings {
        lines.push(Line {
            severity: f.severity,
            text: f.to_string(),
            json: serde_json::json!(f),
        });
    }
    let errors = lines
        .iter()
        .filter(|l| l.severity == Severity::Error)
        .count();
    if args.output == "json" {
        let list: Vec<_> = lines.iter().map(|l| l.json.clone()).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if lines.is_empty() {
        println!("\u{2714} No validation issues found when analyzing {sources}.");
    } else {
        for line in &lines {
            println!("{}", line.text);
        }
    }
    if errors > 0 {
        std::process::exit(1);
    }
    Ok(())
}
