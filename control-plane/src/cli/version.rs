//! `meshd version`: this binary, then — as `istioctl version` shows them — the control plane it
//! reaches and the Envoy builds of the proxies connected to it.

use std::collections::BTreeMap;

use super::{DebugAddr, get_json};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this binary's version; do not ask a control plane.
    #[arg(long = "remote", default_value_t = true, action = clap::ArgAction::Set)]
    pub remote: bool,
    #[command(flatten)]
    pub debug: DebugAddr,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    println!("meshd {} (Envoy API v3)", env!("CARGO_PKG_VERSION"));
    if !args.remote {
        return Ok(());
    }
    // A control plane out of reach is no failure of this command: the binary's version stands.
    let reached = args.debug.reach().and_then(|meshd| {
        let version = get_json(&meshd.addr, "/version")?;
        Ok((version, get_json(&meshd.addr, "/debug/syncz")?))
    });
    let (version, syncz) = match reached {
        Ok(answers) => answers,
        Err(err) => {
            eprintln!("control plane version: unknown ({err:#})");
            return Ok(());
        }
    };
    println!(
        "control plane version: {}",
        version["version"].as_str().unwrap_or("unknown")
    );
    let mut builds: BTreeMap<String, usize> = BTreeMap::new();
    for proxy in syncz.as_array().into_iter().flatten() {
        let build = proxy["envoy_version"].as_str().unwrap_or("unknown");
        *builds.entry(build.to_owned()).or_default() += 1;
    }
    if builds.is_empty() {
        println!("data plane version: none (no proxies connected)");
    }
    for (build, proxies) in builds {
        let plural = if proxies == 1 { "proxy" } else { "proxies" };
        println!("data plane version: Envoy {build} ({proxies} {plural})");
    }
    Ok(())
}
