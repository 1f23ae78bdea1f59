//! `meshd proxy-status`: one row per connected proxy with its per-type sync state.

use meshd_model::finding::REJECTED_BY_ENVOY;

use super::{DebugAddr, get_json, print_table};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub debug: DebugAddr,
    /// Output format: table or json.
    #[arg(short = 'o', long = "output", default_value = "table")]
    pub output: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let meshd = args.debug.reach()?;
    let value = get_json(&meshd.addr, "/debug/syncz")?;
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = value
        .as_array()
        .map(|list| {
            list.iter()
                .map(|p| {
                    let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
                    let t = |k: &str| {
                        p["types"][k]["state"]
                            .as_str()
                            .unwrap_or("NOT SENT")
                            .to_string()
                    };
                    vec![
                        s("proxy"),
                        s("cluster_id"),
                        t("CDS"),
                        t("LDS"),
                        t("EDS"),
                        t("RDS"),
                        t("SDS"),
                        s("control_plane"),
                        s("proxy_version"),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    print_table(
        &[
            "NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "SDS", "ISTIOD", "VERSION",
        ],
        &rows,
    );
    // What no proxy gets because Envoy would reject (or did reject) what it produces.
    let configz = get_json(&meshd.addr, "/debug/configz")?;
    let left_out: Vec<String> = configz["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["code"] == REJECTED_BY_ENVOY)
        .map(|f| {
            let o = &f["object"];
            format!(
                "  {} {}/{}: {}",
                o["kind"].as_str().unwrap_or_default(),
                o["namespace"].as_str().unwrap_or_default(),
                o["name"].as_str().unwrap_or_default(),
                f["message"].as_str().unwrap_or_default()
            )
        })
        .collect();
    if !left_out.is_empty() {
        println!("\nQUARANTINED (left out of every proxy's config until changed):");
        for line in left_out {
            println!("{line}");
        }
    }
    Ok(())
}
