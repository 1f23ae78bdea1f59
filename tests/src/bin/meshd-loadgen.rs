//! `meshd-loadgen`: simulated sidecars for `make bench`.
//!
//! Opens one ADS stream (SotW, or Delta with `--delta`) per Pod of the synthetic mesh (see
//! `meshd-synth`), each on its own connection and with that Pod's node id, subscribes the way Envoy
//! does, decodes every resource and ACKs every response. Reports, as one JSON line on stdout:
//!
//! * `initial`: how long until every client had ACKed CDS, EDS, LDS and RDS at least once (from the
//!   first connect), percentiles over clients, and what was received;
//! * `changes`: for each `--change` (an edit of namespace 0's file in `--mesh-dir`), how long until
//!   every client had ACKed the responses that carry it, and what else was pushed;
//! * `failover`: with `--kill-pid`, the first `--xds-addr`'s server is killed and the clients that
//!   were on it reconnect to the next one: how long until each had ACKed everything again;
//! * `edits`: `--edits N` VirtualService edits of namespace 0, one after the other, each timed until
//!   every client that sees the service ACKed the route configuration carrying it;
//! * `churn`: `--churn-rate R` endpoint changes per second for `--churn-secs`, spread over the
//!   namespaces, each timed from its file write until every client that sees it ACKed it;
//! * with `--server-pid`, the server's CPU seconds and resident memory over each phase;
//! * streams the server closed: like Envoy, such a client reconnects and subscribes again.
//!
//! `meshd-loadgen replay --from FILE` is the baseline server: it answers every client with the
//! responses one client recorded from meshd (`--record FILE`), doing nothing else.

#[path = "../bench/client.rs"]
mod client;
#[path = "../bench/inspect.rs"]
mod inspect;
#[path = "../bench/procstat.rs"]
mod procstat;
#[path = "../bench/replay.rs"]
mod replay;
// Shared with meshd-synth, which uses parts this tool does not.
#[allow(dead_code)]
#[path = "../bench/synth.rs"]
mod synth;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser as _;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc, watch};

use client::{Churn, Counters, Ctx, Event, Interner, Marker, Phase, Totals};
use inspect::Ty;
use procstat::ProcSample;
use synth::{Change, Edits, MeshShape, PodRef};

/// Envoy's default HTTP/2 windows (256 MiB), which its xDS gRPC client uses unless configured.
const ENVOY_WINDOW: u32 = 256 * 1024 * 1024;

#[derive(clap::Parser, Debug)]
#[command(
    name = "meshd-loadgen",
    about = "Simulated Envoy sidecars against an ADS server",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Serve a recording (`--record`) to every client: the no-control-plane baseline.
    Replay(ReplayArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The ADS server (host:port, plaintext gRPC; with `--tls-root`, TLS). Several, comma-separated,
    /// are replicas: client `i` starts on the `i % n`th and moves to the next when its stream fails.
    #[arg(
        long,
        env = "MESHD_LOADGEN_XDS_ADDR",
        default_value = "127.0.0.1:27010"
    )]
    xds_addr: String,
    /// Clients to run, one per Pod of the mesh in order; 0 means every Pod.
    #[arg(long, env = "MESHD_LOADGEN_CLIENTS", default_value_t = 0)]
    clients: usize,
    /// Use Delta xDS instead of State-of-the-World.
    #[arg(long, env = "MESHD_LOADGEN_DELTA")]
    delta: bool,
    /// At most this many clients connecting at once.
    #[arg(long, env = "MESHD_LOADGEN_RAMP", default_value_t = 200)]
    ramp: usize,
    /// Worker threads (default: one per core).
    #[arg(long, env = "MESHD_LOADGEN_THREADS")]
    threads: Option<usize>,
    /// Largest message accepted or sent.
    #[arg(long, env = "MESHD_LOADGEN_MAX_MESSAGE_BYTES", default_value_t = 256 * 1024 * 1024)]
    max_message_bytes: usize,
    /// The mesh the server serves (node ids and the files `--change` edits must match it).
    #[command(flatten)]
    shape: MeshShape,
    /// Directory `meshd-synth` wrote; needed for `--change`.
    #[arg(long, env = "MESHD_LOADGEN_MESH_DIR")]
    mesh_dir: Option<PathBuf>,
    /// After the initial push, make this change and time its push (repeatable, applied in order
    /// and cumulatively).
    #[arg(long = "change", value_enum)]
    changes: Vec<Change>,
    /// The server's pid: its CPU time and memory are sampled at phase boundaries.
    #[arg(long, env = "MESHD_LOADGEN_SERVER_PID")]
    server_pid: Option<u32>,
    /// Clock ticks per second of /proc stat times (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100.0)]
    clk_tck: f64,
    /// A phase is over once every client is done and nothing was received for this long.
    #[arg(long, env = "MESHD_LOADGEN_SETTLE_MS", default_value_t = 2000)]
    settle_ms: u64,
    /// Give up on a phase after this long.
    #[arg(long, env = "MESHD_LOADGEN_TIMEOUT_SECS", default_value_t = 900)]
    timeout_secs: u64,
    /// Write client 0's responses here after the initial push (SotW only), for `replay`.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Connect over TLS, verifying the server against this root certificate (PEM), each client
    /// from its pod's address (see `meshd-synth --loopback-pods`), and subscribe to secrets.
    #[arg(long)]
    tls_root: Option<PathBuf>,
    /// The name the server's certificate carries.
    #[arg(long, default_value = "istiod.istio-system.svc")]
    tls_server_name: String,
    /// After the initial push, SIGKILL this process (the server of the first `--xds-addr`) and
    /// time until every client that was on it had ACKed everything from another replica.
    #[arg(long)]
    kill_pid: Option<u32>,
    /// After the changes, this many VirtualService edits of namespace 0, one after the other.
    #[arg(long, default_value_t = 0)]
    edits: usize,
    /// After the edits, this many endpoint changes per second (0: none) ...
    #[arg(long, default_value_t = 0.0)]
    churn_rate: f64,
    /// ... for this long.
    #[arg(long, default_value_t = 60)]
    churn_secs: u64,
}

#[derive(clap::Args, Debug)]
struct ReplayArgs {
    /// The recording (`--record` of a run).
    #[arg(long)]
    from: PathBuf,
    #[arg(long, default_value = "127.0.0.1:27020")]
    listen: SocketAddr,
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    max_message_bytes: usize,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        builder.worker_threads(threads);
    }
    Ok(builder.enable_all().build()?)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Replay(args)) => runtime(args.threads)?.block_on(replay::serve(
            &args.from,
            args.listen,
            args.max_message_bytes,
        )),
        None => {
            let rt = runtime(cli.run.threads)?;
            let report = rt.block_on(run(&cli.run))?;
            println!("{}", serde_json::to_string(&report)?);
            // Streams are not closed one by one: the process is done.
            rt.shutdown_background();
            if report.failed > 0 || report.error.is_some() {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// CPU and memory over one phase.
#[derive(Debug, Default, Serialize)]
struct Usage {
    /// The server's CPU seconds from the start of the phase until it settled.
    server_cpu_s: Option<f64>,
    /// The server at the end of the phase.
    server_end: Option<ProcSample>,
    /// This process's CPU seconds over the phase (decoding, ACKing).
    loadgen_cpu_s: f64,
}

#[derive(Debug, Default, Serialize)]
struct Initial {
    /// Until every stream was open.
    connected_s: f64,
    /// Until every client had ACKed all four types at least once.
    all_acked_s: f64,
    /// Per-client time to fully ACKed, percentiles.
    p50_s: f64,
    p90_s: f64,
    p99_s: f64,
    /// Until the last response of the phase was answered.
    last_answer_s: f64,
    /// Streams that failed and were opened again (see `first_reconnect`).
    reconnects: usize,
    received: Totals,
    usage: Usage,
}

#[derive(Debug, Default, Serialize)]
struct ChangeReport {
    change: &'static str,
    /// From writing the file until every client had ACKed the responses carrying the change.
    all_acked_s: f64,
    p50_s: f64,
    /// Until the last response caused by the change was answered.
    last_answer_s: f64,
    reconnects: usize,
    received: Totals,
    usage: Usage,
}

/// Latencies over several timed changes, in milliseconds.
#[derive(Debug, Default, Serialize)]
struct Latencies {
    count: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latencies {
    fn of(mut secs: Vec<f64>) -> Latencies {
        secs.sort_by(f64::total_cmp);
        let ms = |v: f64| round3(v * 1000.0);
        Latencies {
            count: secs.len(),
            p50_ms: ms(percentile(&secs, 0.5)),
            p99_ms: ms(percentile(&secs, 0.99)),
            max_ms: ms(secs.last().copied().unwrap_or_default()),
        }
    }
}

#[derive(Debug, Default, Serialize)]
struct EditsReport {
    /// Per edit: from the file write until every client that sees it ACKed it.
    until_all_acked: Latencies,
    clients_per_edit: usize,
    server_cpu_s_per_edit: Option<f64>,
    received: Totals,
    reconnects: usize,
}

#[derive(Debug, Default, Serialize)]
struct ChurnReport {
    rate_per_s: f64,
    secs: u64,
    /// Changes written, and those every client that sees them ACKed in time.
    written: usize,
    completed: usize,
    /// Per change: from its file write until every client that sees it ACKed it (or a later
    /// change of the same endpoints).
    until_all_acked: Latencies,
    server_cpu_s: Option<f64>,
    server_cpu_s_per_change: Option<f64>,
    received: Totals,
    reconnects: usize,
    usage: Usage,
}

#[derive(Debug, Default, Serialize)]
struct FailoverReport {
    /// Clients that were on the killed server.
    moved: usize,
    /// From the kill until every moved client had ACKed everything from another server.
    all_resynced_s: f64,
    p50_s: f64,
    /// The survivor (`--server-pid`) over the failover.
    usage: Usage,
    received: Totals,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    mode: &'static str,
    target: String,
    clients: usize,
    shape: Option<MeshShape>,
    services: usize,
    pods: usize,
    /// The server before the first client connected.
    server_idle: Option<ProcSample>,
    initial: Initial,
    failover: Option<FailoverReport>,
    changes: Vec<ChangeReport>,
    edits: Option<EditsReport>,
    churn: Option<ChurnReport>,
    /// The server at the end.
    server_end: Option<ProcSample>,
    /// This process at the end (its peak is the client side's memory).
    loadgen_end: ProcSample,
    failed: usize,
    first_failure: Option<String>,
    first_reconnect: Option<String>,
    error: Option<String>,
}

/// Where the coordinator's events are tallied.
struct Tally {
    start: Instant,
    ready: Vec<f64>,
    changed: Vec<f64>,
    resynced: Vec<f64>,
    phase: usize,
    phase_start: Instant,
    connected: usize,
    last_connected: Option<Instant>,
    last_answer: Option<Instant>,
    failed: usize,
    first_failure: Option<String>,
    reconnects: usize,
    first_reconnect: Option<String>,
}

impl Tally {
    fn on(&mut self, event: Event) {
        match event {
            Event::Connected { at } => {
                self.connected += 1;
                self.last_connected = Some(at);
            }
            Event::Answered { at } => self.last_answer = Some(at),
            Event::Ready { at, .. } => self.ready.push(secs(at - self.start)),
            Event::Resynced { at } => self.resynced.push(secs(at - self.phase_start)),
            Event::Changed { phase, at } => {
                if phase == self.phase {
                    self.changed.push(secs(at - self.phase_start));
                }
            }
            Event::Reconnecting { client, error } => {
                self.reconnects += 1;
                self.first_reconnect
                    .get_or_insert_with(|| format!("client {client}: {error}"));
            }
            Event::Failed { client, error } => {
                self.failed += 1;
                self.first_failure
                    .get_or_insert_with(|| format!("client {client}: {error}"));
            }
        }
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The resources that show a change has reached a client.
fn markers(shape: &MeshShape, change: Change) -> Vec<Marker> {
    let ns = shape.namespace(0);
    match change {
        Change::Endpoint => vec![Marker {
            ty: Ty::Eds,
            name: format!("outbound|8080||svc-0.{ns}.svc.cluster.local"),
            needle: Some(synth::ADDED_ENDPOINT_IP.to_string()),
        }],
        Change::Service => {
            let cluster = format!(
                "outbound|8080||{}.{ns}.svc.cluster.local",
                synth::ADDED_SERVICE
            );
            vec![
                Marker {
                    ty: Ty::Cds,
                    name: cluster.clone(),
                    needle: None,
                },
                Marker {
                    ty: Ty::Eds,
                    name: cluster,
                    needle: None,
                },
                Marker {
                    ty: Ty::Rds,
                    name: "8080".to_string(),
                    needle: Some(format!("{}.{ns}", synth::ADDED_SERVICE)),
                },
            ]
        }
    }
}

struct Sampler {
    pid: Option<u32>,
    clk_tck: f64,
}

impl Sampler {
    fn server(&self) -> anyhow::Result<Option<ProcSample>> {
        self.pid
            .map(|pid| procstat::sample(Some(pid), self.clk_tck))
            .transpose()
    }

    fn own(&self) -> anyhow::Result<ProcSample> {
        procstat::sample(None, self.clk_tck)
    }

    fn usage(
        &self,
        server_before: Option<ProcSample>,
        own_before: ProcSample,
    ) -> anyhow::Result<Usage> {
        let server_end = self.server()?;
        Ok(Usage {
            server_cpu_s: server_before
                .zip(server_end)
                .map(|(b, e)| round3(e.cpu_s - b.cpu_s)),
            server_end,
            loadgen_cpu_s: round3(self.own()?.cpu_s - own_before.cpu_s),
        })
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn endpoints(args: &RunArgs) -> anyhow::Result<Vec<tonic::transport::Endpoint>> {
    let tls = match &args.tls_root {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Some(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem))
                    .domain_name(&args.tls_server_name),
            )
        }
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    args.xds_addr
        .split(',')
        .map(|addr| {
            let endpoint =
                tonic::transport::Endpoint::from_shared(format!("{scheme}://{}", addr.trim()))
                    .context("--xds-addr")?
                    .initial_stream_window_size(Some(ENVOY_WINDOW))
                    .initial_connection_window_size(Some(ENVOY_WINDOW))
                    .tcp_nodelay(true)
                    .connect_timeout(Duration::from_secs(30));
            Ok(match &tls {
                Some(tls) => endpoint.tls_config(tls.clone()).context("TLS")?,
                None => endpoint,
            })
        })
        .collect()
}

async fn run(args: &RunArgs) -> anyhow::Result<Report> {
    let mut pods = args.shape.pod_list();
    let clients = if args.clients == 0 {
        pods.len()
    } else {
        args.clients
    };
    anyhow::ensure!(
        clients <= pods.len(),
        "{clients} clients but the mesh has only {} pods",
        pods.len()
    );
    pods.truncate(clients);
    anyhow::ensure!(
        (args.changes.is_empty() && args.edits == 0 && args.churn_rate <= 0.0)
            || args.mesh_dir.is_some(),
        "--change, --edits and --churn-rate need --mesh-dir"
    );
    anyhow::ensure!(
        !(args.delta && args.record.is_some()),
        "--record works with SotW only"
    );
    let churn_changes = (args.churn_rate.max(0.0) * args.churn_secs as f64).round() as usize;
    let (events_tx, events) = mpsc::unbounded_channel();
    let (phase_tx, phase_rx) = watch::channel(Arc::new(Phase::default()));
    let ctx = Arc::new(Ctx {
        endpoints: endpoints(args)?,
        secure: args.tls_root.is_some(),
        churn: (churn_changes > 0).then(|| Churn::new(&args.shape, &pods, churn_changes)),
        max_message_bytes: args.max_message_bytes,
        counters: Counters::default(),
        events: events_tx,
        phase: phase_rx,
        ramp: Arc::new(Semaphore::new(args.ramp.max(1))),
        interner: Interner::default(),
        record: args.record.as_ref().map(|_| Default::default()),
    });
    let start = Instant::now();
    let mut run = Coordinator {
        args,
        ctx,
        events,
        phase_tx,
        sampler: Sampler {
            pid: args.server_pid,
            clk_tck: args.clk_tck,
        },
        tally: Tally {
            start,
            ready: Vec::with_capacity(clients),
            changed: Vec::new(),
            resynced: Vec::new(),
            phase: 0,
            phase_start: start,
            connected: 0,
            last_connected: None,
            last_answer: None,
            failed: 0,
            first_failure: None,
            reconnects: 0,
            first_reconnect: None,
        },
        edits: Edits::default(),
        settle: Duration::from_millis(args.settle_ms),
        timeout: Duration::from_secs(args.timeout_secs),
        clients,
        error: None,
    };
    let mut report = Report {
        mode: if args.delta { "delta" } else { "sotw" },
        target: args.xds_addr.clone(),
        clients,
        shape: Some(args.shape),
        services: args.shape.services(),
        pods: args.shape.pods(),
        ..Default::default()
    };
    report.server_idle = run.sampler.server()?;
    report.initial = run.initial(pods).await?;
    if let Some(pid) = args.kill_pid
        && run.error.is_none()
    {
        report.failover = Some(run.failover(pid).await?);
    }
    for (i, change) in args.changes.iter().enumerate() {
        if run.error.is_some() {
            break;
        }
        let markers = markers(&args.shape, *change);
        let affected = clients;
        let entry = run
            .timed(change.name(), markers, affected, |edits| {
                edits.changes = args.changes[..=i].to_vec();
                0
            })
            .await?;
        report.changes.push(entry);
    }
    if args.edits > 0 && run.error.is_none() {
        report.edits = Some(run.edits().await?);
    }
    if churn_changes > 0 && run.error.is_none() {
        report.churn = Some(run.churn(churn_changes).await?);
    }
    report.server_end = run.sampler.server()?;
    report.loadgen_end = run.sampler.own()?;
    report.failed = run.tally.failed;
    report.first_failure = run.tally.first_failure;
    report.first_reconnect = run.tally.first_reconnect;
    report.error = run.error;
    Ok(report)
}

/// The clients' coordinator: starts them, makes the changes, and times each phase.
struct Coordinator<'a> {
    args: &'a RunArgs,
    ctx: Arc<Ctx>,
    events: mpsc::UnboundedReceiver<Event>,
    phase_tx: watch::Sender<Arc<Phase>>,
    sampler: Sampler,
    tally: Tally,
    /// What has been written to the mesh's files so far.
    edits: Edits,
    settle: Duration,
    timeout: Duration,
    clients: usize,
    /// The first phase that did not complete; later phases are skipped.
    error: Option<String>,
}

impl Coordinator<'_> {
    /// Tallies events until `done` holds — or, `--timeout-secs` after `started`, records as the
    /// run's error what `failed` says of how many got there and of the timeout — then until
    /// quiet; returns the times `times` keeps, sorted.
    async fn finish_phase(
        &mut self,
        started: Instant,
        done: impl Fn(&Tally) -> bool,
        times: impl Fn(&Tally) -> &Vec<f64>,
        failed: impl FnOnce(usize, u64) -> String,
    ) -> Vec<f64> {
        if !wait(
            &mut self.events,
            &mut self.tally,
            started + self.timeout,
            done,
        )
        .await
        {
            self.error = Some(failed(times(&self.tally).len(), self.args.timeout_secs));
        }
        quiet(&mut self.events, &mut self.tally, self.settle).await;
        let mut sorted = times(&self.tally).clone();
        sorted.sort_by(f64::total_cmp);
        sorted
    }

    /// Initial push: connect everyone, wait for every client to have ACKed every type, then for
    /// quiet.
    async fn initial(&mut self, pods: Vec<PodRef>) -> anyhow::Result<Initial> {
        let server_before = self.sampler.server()?;
        let own_before = self.sampler.own()?;
        let before = self.ctx.counters.totals();
        let start = self.tally.start;
        for (id, pod) in pods.into_iter().enumerate() {
            tokio::spawn(client::run(Arc::clone(&self.ctx), id, pod, self.args.delta));
        }
        let clients = self.clients;
        let ready = self
            .finish_phase(
                start,
                |t| t.ready.len() + t.failed >= clients,
                |t| &t.ready,
                |n, secs| format!("initial push: {n} of {clients} clients ready after {secs}s"),
            )
            .await;
        let initial = Initial {
            connected_s: self.tally.last_connected.map_or(0.0, |t| secs(t - start)),
            all_acked_s: ready.last().copied().unwrap_or_default(),
            p50_s: percentile(&ready, 0.5),
            p90_s: percentile(&ready, 0.9),
            p99_s: percentile(&ready, 0.99),
            last_answer_s: self.tally.last_answer.map_or(0.0, |t| secs(t - start)),
            reconnects: self.tally.reconnects,
            received: self.ctx.counters.totals().since(&before),
            usage: self.sampler.usage(server_before, own_before)?,
        };
        eprintln!(
            "loadgen: initial push: {} clients ACKed everything in {:.2}s",
            ready.len(),
            initial.all_acked_s
        );
        if let (Some(path), Some(record)) = (&self.args.record, &self.ctx.record) {
            replay::save(path, &record.lock())?;
        }
        Ok(initial)
    }

    /// Kills the first server and waits for its clients to have everything from the others.
    async fn failover(&mut self, pid: u32) -> anyhow::Result<FailoverReport> {
        let servers = self.ctx.endpoints.len();
        anyhow::ensure!(servers >= 2, "--kill-pid needs several --xds-addr");
        let moved = (0..self.clients).filter(|id| id % servers == 0).count();
        let server_before = self.sampler.server()?;
        let own_before = self.sampler.own()?;
        let before = self.ctx.counters.totals();
        self.tally.resynced.clear();
        self.tally.phase_start = Instant::now();
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .context("running kill")?;
        anyhow::ensure!(killed.success(), "kill -KILL {pid} failed");
        let resynced = self
            .finish_phase(
                self.tally.phase_start,
                |t| t.resynced.len() >= moved,
                |t| &t.resynced,
                |n, secs| format!("failover: {n} of {moved} clients resynced after {secs}s"),
            )
            .await;
        let report = FailoverReport {
            moved,
            all_resynced_s: resynced.last().copied().unwrap_or_default(),
            p50_s: percentile(&resynced, 0.5),
            usage: self.sampler.usage(server_before, own_before)?,
            received: self.ctx.counters.totals().since(&before),
        };
        eprintln!(
            "loadgen: failover: {moved} clients had everything again after {:.2}s",
            report.all_resynced_s
        );
        Ok(report)
    }

    /// One change written to the mesh's files by `edit`, timed until `affected` clients saw every
    /// marker in an ACKed response.
    async fn timed(
        &mut self,
        name: &'static str,
        markers: Vec<Marker>,
        affected: usize,
        edit: impl FnOnce(&mut Edits) -> usize,
    ) -> anyhow::Result<ChangeReport> {
        let phase = self.tally.phase + 1;
        self.phase_tx.send_replace(Arc::new(Phase {
            index: phase,
            markers,
        }));
        let failed_before = self.tally.failed;
        let server_before = self.sampler.server()?;
        let own_before = self.sampler.own()?;
        let before = self.ctx.counters.totals();
        let reconnects_before = self.tally.reconnects;
        let started = Instant::now();
        self.tally.phase = phase;
        self.tally.phase_start = started;
        self.tally.changed.clear();
        self.tally.last_answer = None;
        let dir = self.args.mesh_dir.as_deref().context("needs --mesh-dir")?;
        let namespace = edit(&mut self.edits);
        self.args.shape.apply(dir, namespace, &self.edits)?;
        let changed = self
            .finish_phase(
                started,
                |t| t.changed.len() + (t.failed - failed_before) >= affected,
                |t| &t.changed,
                |n, secs| format!("change {name}: {n} of {affected} clients saw it after {secs}s"),
            )
            .await;
        let entry = ChangeReport {
            change: name,
            all_acked_s: changed.last().copied().unwrap_or_default(),
            p50_s: percentile(&changed, 0.5),
            last_answer_s: self.tally.last_answer.map_or(0.0, |t| secs(t - started)),
            reconnects: self.tally.reconnects - reconnects_before,
            received: self.ctx.counters.totals().since(&before),
            usage: self.sampler.usage(server_before, own_before)?,
        };
        eprintln!(
            "loadgen: change {name}: {} clients ACKed it in {:.3}s",
            changed.len(),
            entry.all_acked_s
        );
        Ok(entry)
    }

    /// VirtualService edits of namespace 0's `svc-0`, one after the other.
    async fn edits(&mut self) -> anyhow::Result<EditsReport> {
        let affected = self.affected(0);
        let before = self.ctx.counters.totals();
        let reconnects_before = self.tally.reconnects;
        let mut times = Vec::with_capacity(self.args.edits);
        let mut cpu = Some(0.0);
        for edit in 0..self.args.edits {
            if self.error.is_some() {
                break;
            }
            let markers = vec![Marker {
                ty: Ty::Rds,
                name: "8080".to_string(),
                needle: Some(synth::edit_marker(edit)),
            }];
            let entry = self
                .timed("virtual-service", markers, affected, |edits| {
                    edits.virtual_service = Some(edit);
                    0
                })
                .await?;
            times.push(entry.all_acked_s);
            cpu = cpu.zip(entry.usage.server_cpu_s).map(|(a, b)| a + b);
        }
        Ok(EditsReport {
            clients_per_edit: affected,
            server_cpu_s_per_edit: cpu.map(|c| round3(c / times.len().max(1) as f64)),
            until_all_acked: Latencies::of(times),
            received: self.ctx.counters.totals().since(&before),
            reconnects: self.tally.reconnects - reconnects_before,
        })
    }

    /// Clients that see namespace `index`'s `svc-0`.
    fn affected(&self, index: usize) -> usize {
        let shape = &self.args.shape;
        shape
            .pod_list()
            .iter()
            .take(self.clients)
            .filter(|p| shape.sees(p, index))
            .count()
    }

    /// `changes` endpoint changes at `--churn-rate` per second, written from their own thread so
    /// that the schedule holds whatever the clients do.
    async fn churn(&mut self, changes: usize) -> anyhow::Result<ChurnReport> {
        let rate = self.args.churn_rate;
        let shape = self.args.shape;
        let dir = self.args.mesh_dir.clone().context("needs --mesh-dir")?;
        let mut edits = self.edits.clone();
        let server_before = self.sampler.server()?;
        let own_before = self.sampler.own()?;
        let before = self.ctx.counters.totals();
        let reconnects_before = self.tally.reconnects;
        let start = Instant::now();
        let mut writer = tokio::task::spawn_blocking(move || {
            let mut written = Vec::with_capacity(changes);
            for seq in 0..changes {
                let due = start + Duration::from_secs_f64(seq as f64 / rate);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                let namespace = seq % shape.namespaces;
                edits.churn.insert(namespace, seq);
                written.push(Instant::now());
                shape.apply(&dir, namespace, &edits)?;
            }
            anyhow::Ok((written, edits))
        });
        let (written, edits) = loop {
            tokio::select! {
                joined = &mut writer => break joined.context("churn writer")??,
                Some(event) = self.events.recv() => self.tally.on(event),
            }
        };
        self.edits = edits;
        let ctx = Arc::clone(&self.ctx);
        let churn = ctx.churn.as_ref().context("no churn state")?;
        let deadline = Instant::now() + Duration::from_secs(30).min(self.timeout);
        loop {
            let pending = (0..changes)
                .filter(|&seq| churn.done(seq).is_none())
                .count();
            if pending == 0 || Instant::now() >= deadline {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(20), async {
                while let Some(event) = self.events.recv().await {
                    self.tally.on(event);
                }
            })
            .await;
        }
        let usage = self.sampler.usage(server_before, own_before)?;
        quiet(&mut self.events, &mut self.tally, self.settle).await;
        let latencies: Vec<f64> = written
            .iter()
            .enumerate()
            .filter_map(|(seq, at)| churn.done(seq).map(|done| (done - *at).as_secs_f64()))
            .collect();
        let completed = latencies.len();
        if completed < changes {
            self.error = Some(format!(
                "churn: {} of {changes} changes never reached every client that sees them",
                changes - completed
            ));
        }
        let report = ChurnReport {
            rate_per_s: rate,
            secs: self.args.churn_secs,
            written: changes,
            completed,
            until_all_acked: Latencies::of(latencies),
            server_cpu_s: usage.server_cpu_s,
            server_cpu_s_per_change: usage.server_cpu_s.map(|c| round3(c / changes as f64)),
            received: self.ctx.counters.totals().since(&before),
            reconnects: self.tally.reconnects - reconnects_before,
            usage,
        };
        eprintln!(
            "loadgen: churn: {completed}/{changes} changes; p50 {} ms, p99 {} ms, max {} ms",
            report.until_all_acked.p50_ms,
            report.until_all_acked.p99_ms,
            report.until_all_acked.max_ms
        );
        Ok(report)
    }
}

/// Tallies events until `done` holds; false if `deadline` came first.
async fn wait(
    events: &mut mpsc::UnboundedReceiver<Event>,
    tally: &mut Tally,
    deadline: Instant,
    done: impl Fn(&Tally) -> bool,
) -> bool {
    while !done(tally) {
        match tokio::time::timeout_at(deadline.into(), events.recv()).await {
            Ok(Some(event)) => tally.on(event),
            Ok(None) | Err(_) => return false,
        }
    }
    true
}

/// Tallies events until none arrived for `settle`.
async fn quiet(events: &mut mpsc::UnboundedReceiver<Event>, tally: &mut Tally, settle: Duration) {
    while let Ok(Some(event)) = tokio::time::timeout(settle, events.recv()).await {
        tally.on(event);
    }
}
