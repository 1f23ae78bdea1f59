//! `meshd`: the control plane and its istioctl-like toolbox, in one binary.

mod bootstrap;
mod iptables;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "meshd", version, about = "Istio-compatible control plane for stock Envoy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print or write a stock-Envoy bootstrap for one workload.
    Bootstrap(bootstrap::Args),
    /// Install the sidecar capture rules in the current network namespace.
    Iptables(iptables::Args),
    /// Print the version of the binary and of the Envoy API it speaks.
    Version,
}

fn main() -> anyhow::Result<()> {
    // Every TLS user in the process must agree on one provider; mixing ring and aws-lc-rs panics.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Bootstrap(args) => bootstrap::run(args),
        Command::Iptables(args) => iptables::run(args),
        Command::Version => {
            println!("meshd {} (Envoy API v3)", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}
