//! `meshd-synth`: writes the synthetic mesh of `make bench` (by default 100 namespaces × 10
//! services × 2 pods: 1,000 Services, 2,000 Pods, their Endpoints) as one YAML file per namespace,
//! for `meshd serve --config-dir`.

// Shared with meshd-loadgen, which uses parts this tool does not.
#[allow(dead_code)]
#[path = "../bench/synth.rs"]
mod synth;

use std::path::PathBuf;

use clap::Parser as _;

#[derive(clap::Parser, Debug)]
#[command(
    name = "meshd-synth",
    about = "Write the synthetic benchmark mesh as Kubernetes YAML"
)]
struct Args {
    /// Directory to write into (created if missing; existing namespace files are replaced).
    #[arg(long, env = "MESHD_BENCH_MESH_DIR")]
    out: PathBuf,
    #[command(flatten)]
    shape: synth::MeshShape,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.shape.write(&args.out)?;
    println!(
        "{}",
        serde_json::json!({
            "dir": args.out.display().to_string(),
            "namespaces": args.shape.namespaces,
            "services": args.shape.services(),
            "pods": args.shape.pods(),
        })
    );
    Ok(())
}
