//! `meshd dashboard prometheus|grafana|kiali|jaeger`: forwards a local port to the add-on's
//! Service with `kubectl port-forward` and prints the URL, as `istioctl dashboard` does; it runs
//! until interrupted.

use std::io::{BufRead, BufReader};

use super::port_forward::Kubectl;

/// The add-ons Istio's samples install, by their Services in the add-on namespace.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addon {
    Prometheus,
    Grafana,
    Kiali,
    Jaeger,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Which add-on to open.
    pub addon: Addon,
    /// The namespace the add-on runs in.
    #[arg(short = 'n', long, default_value = "istio-system")]
    pub namespace: String,
    /// The local port; the add-on's own by default.
    #[arg(short = 'p', long)]
    pub port: Option<u16>,
    /// The local address to listen on.
    #[arg(long, default_value = "localhost")]
    pub address: String,
    #[command(flatten)]
    pub kubectl: Kubectl,
}

/// Where an add-on answers: its Service, the Service's port, the local port by default, and the
/// path of its UI.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    service: &'static str,
    service_port: u16,
    local_port: u16,
    path: &'static str,
}

fn target(addon: Addon) -> Target {
    let (service, service_port, local_port, path) = match addon {
        Addon::Prometheus => ("prometheus", 9090, 9090, "/"),
        Addon::Grafana => ("grafana", 3000, 3000, "/"),
        Addon::Kiali => ("kiali", 20001, 20001, "/kiali"),
        // Istio's Jaeger add-on serves its UI as Service `tracing`, port 80.
        Addon::Jaeger => ("tracing", 80, 16686, "/"),
    };
    Target {
        service,
        service_port,
        local_port,
        path,
    }
}

/// kubectl's arguments, and the URL to print.
fn plan(args: &Args) -> (Vec<String>, String) {
    let t = target(args.addon);
    let local = args.port.unwrap_or(t.local_port);
    let argv = args.kubectl.argv(
        &args.namespace,
        &args.address,
        &format!("service/{}", t.service),
        &format!("{local}:{}", t.service_port),
    );
    (argv, format!("http://{}:{local}{}", args.address, t.path))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (argv, url) = plan(&args);
    let mut child = args.kubectl.spawn(&argv)?;
    let mut printed = false;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            // kubectl says so once the port is open; the URL works from then on.
            if !printed && line.starts_with("Forwarding from") {
                println!("{url}");
                printed = true;
            }
        }
    }
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "kubectl port-forward: {status}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(addon: Addon) -> Args {
        Args {
            addon,
            namespace: "istio-system".to_string(),
            port: None,
            address: "localhost".to_string(),
            kubectl: Kubectl::default(),
        }
    }

    #[test]
    fn each_addon_is_forwarded_from_its_service_to_istioctls_url() {
        let (argv, url) = plan(&args(Addon::Prometheus));
        assert_eq!(
            argv.join(" "),
            "--namespace istio-system port-forward --address localhost service/prometheus 9090:9090"
        );
        assert_eq!(url, "http://localhost:9090/");
        assert_eq!(plan(&args(Addon::Kiali)).1, "http://localhost:20001/kiali");
        assert!(
            plan(&args(Addon::Jaeger))
                .0
                .contains(&"16686:80".to_string())
        );
        assert!(
            plan(&args(Addon::Grafana))
                .0
                .contains(&"service/grafana".to_string())
        );
    }

    #[test]
    fn a_namespace_and_port_move_the_forward() {
        let mut a = args(Addon::Grafana);
        a.namespace = "monitoring".to_string();
        a.port = Some(8080);
        a.kubectl.kubeconfig = Some("kubeconfig.yaml".to_string());
        let (argv, url) = plan(&a);
        assert_eq!(
            &argv[..4],
            [
                "--kubeconfig",
                "kubeconfig.yaml",
                "--namespace",
                "monitoring"
            ]
        );
        assert!(argv.contains(&"8080:3000".to_string()));
        assert_eq!(url, "http://localhost:8080/");
    }
}
