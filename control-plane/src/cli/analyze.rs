//! `meshd analyze`: validate Istio and Kubernetes config without a running server.

use std::path::PathBuf;
use std::sync::Arc;

use meshd_model::{MeshConfig, Severity, Snapshot};

use crate::documents::{config_files, load_file};

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
    /// Root namespace, where the mesh config ConfigMap `istio` lives (with `--kubeconfig`).
    #[arg(long, default_value = "istio-system")]
    pub root_namespace: String,
    /// Output format: text or json.
    #[arg(short = 'o', long = "output", default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.config_dirs.is_empty() && args.files.is_empty() && args.kubeconfig.is_none() {
        anyhow::bail!("nothing to analyze: pass --config-dir DIR, -f FILE or --kubeconfig PATH");
    }
    let mut files = args.files.clone();
    for dir in &args.config_dirs {
        if !dir.is_dir() {
            anyhow::bail!("{} is not a directory", dir.display());
        }
        files.extend(config_files(dir));
    }
    let mut objects = std::collections::BTreeMap::new();
    let mut lines: Vec<(Severity, String, serde_json::Value)> = Vec::new();
    for file in &files {
        let (objs, errors) = load_file(file);
        for e in errors {
            lines.push((
                Severity::Error,
                format!("Error [IST0106] {e}"),
                serde_json::json!({"severity": "Error", "code": "IST0106", "file": e.file, "document": e.document, "message": e.message}),
            ));
        }
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
            let client = crate::serve::kube::client(Some(path)).await?;
            crate::serve::kube_source::list_once(&client, &args.root_namespace).await
        })?;
        for e in errors {
            lines.push((
                Severity::Error,
                format!("Error [IST0106] {e}"),
                serde_json::json!({"severity": "Error", "code": "IST0106", "file": e.file, "document": e.document, "message": e.message}),
            ));
        }
        sources = if files.is_empty() {
            format!("{} object(s) in the cluster", objs.len())
        } else {
            format!("{sources} and {} object(s) in the cluster", objs.len())
        };
        for o in objs {
            objects.insert(o.key(), o);
        }
    }
    let snapshot = Snapshot::build(0, Arc::new(objects), Arc::new(MeshConfig::default()));
    for f in &snapshot.findings {
        lines.push((f.severity, f.to_string(), serde_json::json!(f)));
    }
    let errors = lines
        .iter()
        .filter(|(s, _, _)| *s == Severity::Error)
        .count();
    if args.output == "json" {
        let list: Vec<_> = lines.iter().map(|(_, _, j)| j.clone()).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if lines.is_empty() {
        println!("\u{2714} No validation issues found when analyzing {sources}.");
    } else {
        for (_, text, _) in &lines {
            println!("{text}");
        }
    }
    if errors > 0 {
        std::process::exit(1);
    }
    Ok(())
}
