//! `meshd wait` and `meshd drain`: the proxy's lifecycle hooks, what pilot-agent does for Istio's
//! sidecars, here for stock Envoy. Injection copies meshd into the pod's Envoy volume
//! (`meshd bootstrap --install-self`), and the `istio-proxy` container runs these as its
//! `postStart` (hold the app until Envoy is ready) and `preStop` (drain before SIGTERM) hooks.
//!
//! Both speak plain HTTP/1.1 to Envoy on loopback; nothing else is needed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;

#[derive(clap::Args, Debug, Clone)]
pub struct WaitArgs {
    /// Envoy's readiness endpoint.
    #[arg(long, default_value = "127.0.0.1:15021")]
    pub addr: SocketAddr,
    #[arg(long, default_value = "/healthz/ready")]
    pub path: String,
    /// Give up after this long (the pod then starts its app anyway, as pilot-agent's does).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DrainArgs {
    /// Envoy's admin address.
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin: SocketAddr,
    /// How long in-flight requests get after listeners stop accepting (Istio's
    /// `terminationDrainDuration`, 5s by default).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    meshd_model::duration::parse_std(text)
}

/// The status code of `METHOD path` on `addr`, within `timeout`.
fn status(addr: SocketAddr, method: &str, path: &str, timeout: Duration) -> anyhow::Result<u16> {
    Ok(crate::envoy_http::request(&addr.to_string(), method, path, timeout)?.0)
}

/// Polls Envoy's readiness until it answers 200, or the timeout passes.
pub fn wait(args: &WaitArgs) -> anyhow::Result<()> {
    let deadline = Instant::now() + args.timeout;
    loop {
        if let Ok(200) = status(args.addr, "GET", &args.path, Duration::from_secs(1)) {
            println!("Envoy is ready");
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "Envoy was not ready at {}{} within {:?}",
                args.addr,
                args.path,
                args.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Stops Envoy's inbound listeners from accepting, gracefully (existing connections finish, HTTP
/// clients are told to go away), then waits `duration` for in-flight requests before the kubelet
/// sends SIGTERM.
pub fn drain(args: &DrainArgs) -> anyhow::Result<()> {
    let code = status(
        args.admin,
        "POST",
        "/drain_listeners?inboundonly&graceful",
        Duration::from_secs(5),
    )
    .with_context(|| format!("asking Envoy at {} to drain", args.admin))?;
    anyhow::ensure!(code == 200, "Envoy answered {code} to drain_listeners");
    println!("draining for {:?}", args.duration);
    std::thread::sleep(args.duration);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::net::TcpListener;

    /// Answers each connection with `code` and records the request lines.
    fn server(codes: Vec<u16>) -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for code in codes {
                let (mut conn, _) = listener.accept().unwrap();
                // The whole request head, however it arrives.
                let mut request = Vec::new();
                let mut buf = [0u8; 512];
                while !request.ends_with(b"\r\n\r\n") {
                    let n = conn.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                let request = String::from_utf8_lossy(&request);
                seen.push(request.lines().next().unwrap_or_default().to_owned());
                write!(conn, "HTTP/1.0 {code} X\r\nContent-Length: 0\r\n\r\n").unwrap();
            }
            seen
        });
        (addr, handle)
    }

    #[test]
    fn wait_polls_until_envoy_is_ready() {
        let (addr, seen) = server(vec![503, 503, 200]);
        let args = WaitArgs {
            addr,
            path: "/healthz/ready".to_owned(),
            timeout: Duration::from_secs(10),
        };
        wait(&args).unwrap();
        assert_eq!(seen.join().unwrap(), ["GET /healthz/ready HTTP/1.1"; 3]);
    }

    #[test]
    fn wait_gives_up_after_its_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let args = WaitArgs {
            addr,
            path: "/healthz/ready".to_owned(),
            timeout: Duration::from_millis(300),
        };
        assert!(wait(&args).is_err());
    }

    #[test]
    fn drain_asks_for_a_graceful_inbound_drain_then_waits() {
        let (addr, seen) = server(vec![200]);
        let started = Instant::now();
        drain(&DrainArgs {
            admin: addr,
            duration: Duration::from_millis(200),
        })
        .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(
            seen.join().unwrap(),
            ["POST /drain_listeners?inboundonly&graceful HTTP/1.1"]
        );
    }
}
