//! `meshd serve`: wiring only. Sources (files, Kubernetes, JWKS) send events to the index loop
//! ([`publish`]), which assembles snapshots; the [`generator`] turns them into Envoy resources
//! for the ADS server; the CA serves certificates over SDS and Istio's certificate API; the debug
//! API and the admission webhooks read the same snapshot.

mod built;
pub mod ca;
pub mod debug;
pub mod generator;
mod guard;
mod index;
mod publish;
mod pusher;
mod secrets;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use meshd_model::{Kind, MeshConfig, ObjectKey, Snapshot};
use meshd_xds::AdsServer;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};

use crate::{admission, identity, jwks, metrics, tls};
use generator::MeshGenerator;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Directory of Kubernetes/Istio YAML (repeatable); watched and hot-reloaded.
    #[arg(long = "config-dir", env = "MESHD_CONFIG_DIR", value_delimiter = ',')]
    pub config_dirs: Vec<PathBuf>,
    /// Plaintext gRPC (ADS, SotW and Delta).
    #[arg(long, env = "MESHD_XDS_ADDR", default_value = "0.0.0.0:15010")]
    pub xds_addr: SocketAddr,
    /// TLS gRPC: ADS (the only port that serves secrets) and Istio's certificate service.
    #[arg(long, env = "MESHD_SECURE_ADDR", default_value = "0.0.0.0:15012")]
    pub secure_addr: SocketAddr,
    /// CA directory in Istio's plug-in layout; a generated root is persisted here. Without it the
    /// root is generated anew, at every start, in a private temporary directory.
    #[arg(long, env = "MESHD_CA_DIR")]
    pub ca_dir: Option<PathBuf>,
    /// Lifetime of workload certificates; they are renewed at half-life.
    #[arg(long, env = "MESHD_WORKLOAD_CERT_TTL", default_value = "24h", value_parser = parse_duration)]
    pub workload_cert_ttl: Duration,
    /// DNS names on meshd's serving certificate (what proxies verify when they connect over TLS).
    #[arg(
        long,
        env = "MESHD_SERVING_NAMES",
        value_delimiter = ',',
        default_value = "istiod.istio-system.svc,meshd.istio-system.svc,localhost"
    )]
    pub serving_names: Vec<String>,
    /// HTTP debug API: /ready, /metrics, /debug/*.
    #[arg(long, env = "MESHD_DEBUG_ADDR", default_value = "0.0.0.0:15014")]
    pub debug_addr: SocketAddr,
    /// MeshConfig YAML (Istio's `mesh` key).
    #[arg(long, env = "MESHD_MESH_CONFIG")]
    pub mesh_config: Option<PathBuf>,
    /// Quiet period before a change is pushed.
    #[arg(long, env = "MESHD_DEBOUNCE_AFTER", default_value = "100ms", value_parser = parse_duration)]
    pub debounce_after: Duration,
    /// Longest a burst of changes may delay a push (a burst of endpoint changes alone waits at
    /// most `--debounce-after`: endpoints are pushed incrementally).
    #[arg(long, env = "MESHD_DEBOUNCE_MAX", default_value = "10s", value_parser = parse_duration)]
    pub debounce_max: Duration,
    /// How often RequestAuthentication `jwksUri` documents are fetched again (meshd fetches them
    /// and inlines the keys; proxies never do). A URI that never answered is retried sooner.
    #[arg(long, env = "MESHD_JWKS_REFRESH", default_value = "10m", value_parser = parse_duration)]
    pub jwks_refresh: Duration,
    /// Kubernetes source: the kubeconfig to use. Without it and without `--config-dir`, meshd
    /// uses its in-cluster service account. With the Kubernetes source, proxies prove their
    /// identity with service-account tokens (TokenReview) instead of their address.
    #[arg(long, env = "MESHD_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Audience proxies' service-account tokens must be issued for (checked by TokenReview).
    #[arg(long, env = "MESHD_TOKEN_AUDIENCE", default_value = "istio-ca")]
    pub token_audience: String,
    /// This replica's name in the leader Lease (a random suffix is added); default: hostname.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Control-plane revision, as istiod's `REVISION`: injects only pods whose namespace (or,
    /// in an unlabelled namespace, the pod) says `istio.io/rev=<revision>`, reads Istio config
    /// labelled for it or for no revision, and its mesh config from ConfigMap `istio-<revision>`.
    /// Unset: the `default` revision (`istio-injection=enabled`, ConfigMap `istio`).
    #[arg(long, env = "REVISION")]
    pub revision: Option<String>,
    #[command(flatten)]
    pub webhook: admission::Args,
    /// A fault for tests only: the routes `Kind/namespace/name` produces are broken after they
    /// passed meshd's checks, to show what happens when a proxy rejects config anyway.
    #[arg(long, env = "MESHD_FAULT_INVALID_ROUTES_OF", hide = true, value_parser = parse_object)]
    pub fault_invalid_routes_of: Option<ObjectKey>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    meshd_model::duration::parse_std(text)
}

/// `Kind/namespace/name`; `Gateway` is Istio's, `Gateway.gateway.networking.k8s.io` the
/// Gateway API's.
fn parse_object(text: &str) -> Result<ObjectKey, String> {
    let mut parts = text.splitn(3, '/');
    let (Some(kind), Some(namespace), Some(name)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("{text:?} is not Kind/namespace/name"));
    };
    let kind = Kind::ALL
        .into_iter()
        .find(|k| k.to_string() == kind)
        .ok_or_else(|| format!("unknown kind {kind:?}"))?;
    Ok(ObjectKey::new(kind, namespace, name))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))
}

/// MeshConfig from `--mesh-config`, or Istio's defaults.
pub fn load_mesh_config(path: Option<&PathBuf>) -> anyhow::Result<MeshConfig> {
    let Some(path) = path else {
        return Ok(MeshConfig::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    MeshConfig::from_yaml(&text).with_context(|| format!("in {}", path.display()))
}

/// What exists only with the Kubernetes source.
struct Kube {
    ctx: meshd_kube::KubeContext,
    election: meshd_kube::LeaderElection,
    reviewer: Arc<meshd_kube::TokenReviewer>,
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let revision = meshd_model::Revision::new(args.revision.as_deref());
    let base_mesh = MeshConfig {
        revision: revision.clone(),
        ..load_mesh_config(args.mesh_config.as_ref())?
    };
    let mut registry = Registry::default();
    // The Kubernetes source: with --kubeconfig, or in-cluster when there is no other source.
    let kube = if args.kubeconfig.is_some() || args.config_dirs.is_empty() {
        let client = meshd_kube::client(args.kubeconfig.as_deref()).await?;
        let (election, leader) = meshd_kube::LeaderElection::start(
            client.clone(),
            &base_mesh.root_namespace,
            &revision,
            meshd_kube::holder_identity(args.pod_name.as_deref()),
            meshd_kube::LeaseTiming::default(),
        );
        register_leader_gauge(&mut registry, leader.clone());
        let reviewer = Arc::new(meshd_kube::TokenReviewer::new(
            client.clone(),
            args.token_audience.clone(),
        ));
        let ctx = meshd_kube::KubeContext {
            client,
            leader,
            root_namespace: base_mesh.root_namespace.clone(),
        };
        Some(Kube {
            ctx,
            election,
            reviewer,
        })
    } else {
        None
    };

    let loaded = ca::load(
        args.ca_dir.as_ref(),
        &base_mesh.trust_domain,
        args.workload_cert_ttl,
    )?;
    let ca = loaded.ca.clone();
    let secrets = Arc::new(secrets::Secrets::new(
        ca.clone(),
        Some(args.workload_cert_ttl),
    ));
    let identity_rejections = Counter::default();
    registry.register(
        "meshd_xds_identity_rejections",
        "xDS streams refused on the TLS port because the proxy could not prove its identity",
        identity_rejections.clone(),
    );
    let proof = match &kube {
        Some(k) => identity::IdentityProof::Token(k.reviewer.clone()),
        None => identity::IdentityProof::Address,
    };
    let rejected = Counter::default();
    registry.register(
        "meshd_rejected_resources",
        "Generated resources held back because Envoy would reject them",
        rejected.clone(),
    );
    // istiod counts the config it failed to build; what meshd holds back is just that.
    registry.register(
        "pilot_total_xds_internal_errors",
        "Total number of internal XDS errors in pilot",
        rejected.clone(),
    );
    metrics::register_build_info(&mut registry);
    let (source_tx, source_rx) = mpsc::unbounded_channel();
    let guard = guard::Guard::new(
        source_tx.clone(),
        rejected,
        args.fault_invalid_routes_of.clone(),
    );
    let generator = Arc::new(
        MeshGenerator::new(
            Arc::new(Snapshot::default()),
            secrets.clone(),
            identity_rejections,
            proof,
            guard,
        )
        // istiod names itself by its pod (`POD_NAME`), as does this.
        .with_instance(args.pod_name.as_deref().unwrap_or("meshd")),
    );
    let (pusher, push_rx) = pusher::Pusher::new();
    let pusher = Arc::new(pusher);
    let metered = Arc::new(metrics::Metered::new(generator.clone(), &mut registry));
    let ads = AdsServer::new(metered, push_rx, &mut registry);
    let authenticator = match &kube {
        Some(k) => ca::CaAuthenticator::Token {
            reviewer: k.reviewer.clone(),
            generator: generator.clone(),
        },
        None => ca::CaAuthenticator::Address(generator.clone()),
    };
    let certificates = meshd_ca::CertificateService::new(ca.clone(), authenticator, &mut registry);
    let webhook_metrics = admission::Metrics::register(&mut registry);
    let publish_metrics = publish::Metrics::register(&mut registry);
    let kube_events = metrics::KubeEvents::register(&mut registry);

    // Index loop → what acts on each snapshot besides the generator.
    let (snapshots, snapshots_rx) = watch::channel(Arc::new(Snapshot::default()));

    // Sources → index loop.
    let mut sources: BTreeSet<String> = BTreeSet::new();
    let rescans = Counter::default();
    registry.register(
        "meshd_config_dir_rescans",
        "Times a config directory was read again because the file watcher reported a change",
        rescans.clone(),
    );
    for dir in &args.config_dirs {
        sources.insert(crate::file_source::source_name(dir));
        crate::file_source::spawn(dir.clone(), source_tx.clone(), rescans.clone())?;
    }
    if let Some(k) = &kube {
        sources.insert(meshd_kube::SOURCE.to_string());
        let (kube_tx, kube_rx) = mpsc::unbounded_channel();
        kube_events.forward(kube_rx, source_tx.clone());
        meshd_kube::spawn_source(
            k.ctx.client.clone(),
            k.ctx.root_namespace.clone(),
            revision.clone(),
            kube_tx,
        );
        meshd_kube::root_cert::spawn(k.ctx.clone(), ca::trust_bundle(&ca));
        meshd_kube::ca_bundle::spawn(
            k.ctx.client.clone(),
            revision.clone(),
            k.ctx.leader.clone(),
            ca::trust_bundle(&ca),
        );
        meshd_kube::gateway_deploy::spawn(k.ctx.clone(), revision.clone(), snapshots_rx.clone());
        meshd_kube::gateway_status::spawn(k.ctx.clone(), snapshots_rx.clone());
    }
    let (jwks_wanted, jwks_wanted_rx) = watch::channel(BTreeSet::new());
    jwks::spawn(
        jwks::Fetcher::new(jwks::FETCH_TIMEOUT).context("building the JWKS HTTP client")?,
        args.jwks_refresh,
        jwks_wanted_rx,
        source_tx.clone(),
    );
    // The generator's guard keeps a sender (quarantines), so the loop lives as long as meshd.
    drop(source_tx);
    let status = Arc::new(publish::Status::default());
    tokio::spawn(publish::run(
        source_rx,
        index::Index::new(sources),
        base_mesh,
        publish::Debounce {
            after: args.debounce_after,
            max: args.debounce_max,
        },
        publish::Outputs {
            generator: generator.clone(),
            pusher: pusher.clone(),
            status: status.clone(),
            metrics: publish_metrics,
            jwks_wanted,
            snapshots,
        },
    ));

    // Listeners.
    let xds_listener = bind(args.xds_addr).await?;
    let secure_listener = bind(args.secure_addr).await?;
    let debug_listener = bind(args.debug_addr).await?;
    tracing::info!(xds = %args.xds_addr, secure = %args.secure_addr, debug = %args.debug_addr, "meshd serving");
    let serving = tls::ServingCert::issue(
        &ca,
        args.serving_names.clone(),
        tls::serving_ips(args.secure_addr),
    )
    .context("minting meshd's serving certificate")?;
    // Native sidecars where the cluster runs them, as istiod decides it.
    let native_sidecars = match &kube {
        Some(k) => meshd_kube::native_sidecars(&k.ctx.client)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "API server version unknown: injecting classic sidecars");
                false
            }),
        None => false,
    };
    let inject = meshd::inject::InjectConfig {
        revision: revision.clone(),
        native_sidecars,
        ..args.webhook.inject_config()
    };
    let webhooks = admission::Server::bind(
        &args.webhook,
        inject,
        &ca,
        snapshot_of(&generator),
        webhook_metrics,
    )
    .await?;
    tokio::spawn(ca::rotate_certificates(
        secrets.clone(),
        vec![serving.clone(), webhooks.cert()],
        pusher.clone(),
    ));
    tokio::spawn(webhooks.run());

    let grpc = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(ads.service())
        .serve_with_incoming_shutdown(
            // Without TCP_NODELAY a response's last segment waits for the proxy's delayed ACK
            // (about 40 ms on Linux) whenever it follows a full one.
            tonic::transport::server::TcpIncoming::from(xds_listener).with_nodelay(Some(true)),
            shutdown_signal(),
        );
    let reviewer = kube.as_ref().map(|k| k.reviewer.clone());
    let secure = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        // Reviews bearer tokens before admission, which then only looks the answer up.
        .layer(meshd_kube::TokenReviewLayer::new(reviewer))
        .add_service(ads.clone().secure(true).service())
        .add_service(certificates.into_server())
        .serve_with_incoming_shutdown(tls::incoming(secure_listener, serving), shutdown_signal());
    let shared = Arc::new(debug::Shared {
        generator,
        ads: ads.clone(),
        status,
        registry,
    });
    let http = axum::serve(debug_listener, debug::router(shared))
        .with_graceful_shutdown(shutdown_signal());
    // Graceful shutdown waits for open streams, and only the ADS server can end those: end them
    // on the signal itself.
    tokio::spawn(async move {
        shutdown_signal().await;
        ads.shutdown();
    });
    let (g, s, h) = tokio::join!(grpc, secure, http);
    if let Some(k) = kube {
        k.election.stop().await;
    }
    drop(loaded);
    g.context("xDS server")?;
    s.context("secure xDS server")?;
    h.context("debug server")?;
    Ok(())
}

/// The current snapshot, for readers that need nothing else of the generator.
fn snapshot_of(
    generator: &Arc<MeshGenerator>,
) -> impl Fn() -> Arc<Snapshot> + Send + Sync + 'static {
    let generator = generator.clone();
    move || generator.snapshot()
}

/// A listener whose accept queue is as deep as the kernel allows (`net.core.somaxconn`): after a
/// control-plane restart every proxy reconnects at once, and a connection that overflows tokio's
/// default of 1,024 waits a second or more for its SYN to be sent again.
async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .with_context(|| format!("a socket for {addr}"))?;
    socket
        .set_reuseaddr(true)
        .with_context(|| format!("SO_REUSEADDR for {addr}"))?;
    socket
        .bind(addr)
        .with_context(|| format!("binding {addr}"))?;
    socket
        .listen(u32::from(u16::MAX))
        .with_context(|| format!("listening on {addr}"))
}

/// `meshd_leader`: 1 while this replica holds the lease.
fn register_leader_gauge(registry: &mut Registry, mut leader: watch::Receiver<bool>) {
    let gauge: Gauge = Gauge::default();
    registry.register(
        "meshd_leader",
        "1 while this replica holds the leader Lease (and so writes to the cluster)",
        gauge.clone(),
    );
    tokio::spawn(async move {
        loop {
            gauge.set(i64::from(*leader.borrow_and_update()));
            if leader.changed().await.is_err() {
                return;
            }
        }
    });
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    // The webhook flags are part of `meshd serve`: they must parse alongside the server's own.
    #[test]
    fn flags_parse_within_serve_with_defaults_and_overrides() {
        use clap::Parser as _;

        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: super::Args,
        }
        let defaults = Cli::try_parse_from(["meshd"]).unwrap().serve.webhook;
        assert_eq!(defaults.webhook_addr, "0.0.0.0:15017".parse().unwrap());
        assert_eq!(
            defaults.webhook_names,
            [
                "istiod.istio-system.svc",
                "meshd.istio-system.svc",
                "istiod.istio-system.svc.cluster.local"
            ]
        );
        assert_eq!(
            defaults.inject_config(),
            meshd::inject::InjectConfig::default()
        );
        let given = Cli::try_parse_from([
            "meshd",
            "--webhook-addr",
            "127.0.0.1:9443",
            "--webhook-names",
            "meshd.mesh.svc,meshd.mesh.svc.cluster.local",
            "--proxy-image",
            "registry.example/envoy:v1.40.0",
            "--proxy-init-image",
            "registry.example/meshd:1",
        ])
        .unwrap()
        .serve
        .webhook;
        assert_eq!(given.webhook_addr, "127.0.0.1:9443".parse().unwrap());
        assert_eq!(given.webhook_names.len(), 2);
        let config = given.inject_config();
        assert_eq!(config.proxy_image, "registry.example/envoy:v1.40.0");
        assert_eq!(config.proxy_init_image, "registry.example/meshd:1");
    }
}
