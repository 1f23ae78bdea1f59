//! `meshd`: the control plane and its istioctl-like toolbox, in one binary.

mod bootstrap;
mod cli;
mod connected;
mod crds;
mod debounce;
mod documents;
mod encode;
mod envoy_http;
mod file_source;
mod identity;
mod jwks;
mod lifecycle;
mod metrics;
mod rfc3339;
mod serve;

// The admission webhooks live in the library (`lib.rs`), where the fuzzers reach them too.
use meshd::{admission, iptables, tls};

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "meshd",
    version,
    about = "Istio-compatible control plane for stock Envoy"
)]
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
    /// Run the control plane.
    // Boxed: its flags outweigh every other command's.
    Serve(Box<serve::Args>),
    /// One row per connected proxy with its CDS/LDS/EDS/RDS/SDS sync state.
    #[command(name = "proxy-status", alias = "ps")]
    ProxyStatus(cli::proxy_status::Args),
    /// The config meshd sent one proxy.
    #[command(name = "proxy-config", alias = "pc")]
    ProxyConfig(cli::proxy_config::Args),
    /// Validate Istio config; exit 1 on any error.
    Analyze(cli::analyze::Args),
    /// Open an add-on's UI (Prometheus, Grafana, Kiali, Jaeger) through a port-forward.
    Dashboard(cli::dashboard::Args),
    /// Print the CustomResourceDefinitions of every Istio kind meshd reads.
    Crds(crds::Args),
    /// Print the version of the binary and of the Envoy API it speaks, then those of the control
    /// plane and its proxies when meshd is reachable.
    Version(cli::version::Args),
    /// Wait until the pod's Envoy is ready (the injected proxy's postStart hook).
    Wait(lifecycle::WaitArgs),
    /// Drain the pod's Envoy before it is stopped (the injected proxy's preStop hook).
    Drain(lifecycle::DrainArgs),
}

fn main() -> anyhow::Result<()> {
    // Every TLS user in the process must agree on one provider; mixing ring and aws-lc-rs panics.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Bootstrap(args) => bootstrap::run(args),
        Command::Iptables(args) => iptables::run(args),
        Command::Serve(args) => {
            init_tracing();
            serve::run(*args)
        }
        Command::ProxyStatus(args) => cli::proxy_status::run(args),
        Command::ProxyConfig(args) => cli::proxy_config::run(args),
        Command::Analyze(args) => cli::analyze::run(args),
        Command::Dashboard(args) => cli::dashboard::run(args),
        Command::Crds(args) => crds::run(args),
        Command::Wait(args) => lifecycle::wait(&args),
        Command::Drain(args) => lifecycle::drain(&args),
        Command::Version(args) => cli::version::run(&args),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESHD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn every_subcommands_flags_are_well_formed() {
        super::Cli::command().debug_assert();
    }
}
