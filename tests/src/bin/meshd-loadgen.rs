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

use client::{Counters, Ctx, Event, Interner, Marker, Phase, Totals};
use inspect::Ty;
use procstat::ProcSample;
use synth::{Change, MeshShape};

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
    /// The ADS server (host:port, plaintext gRPC).
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
    changes: Vec<ChangeReport>,
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

async fn run(args: &RunArgs) -> anyhow::Result<Report> {
    let pods = args.shape.pod_list();
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
    anyhow::ensure!(
        args.changes.is_empty() || args.mesh_dir.is_some(),
        "--change needs --mesh-dir"
    );
    anyhow::ensure!(
        !(args.delta && args.record.is_some()),
        "--record works with SotW only"
    );
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", args.xds_addr))
        .context("--xds-addr")?
        .initial_stream_window_size(Some(ENVOY_WINDOW))
        .initial_connection_window_size(Some(ENVOY_WINDOW))
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(30));
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (phase_tx, phase_rx) = watch::channel(Arc::new(Phase::default()));
    let ctx = Arc::new(Ctx {
        endpoint,
        max_message_bytes: args.max_message_bytes,
        counters: Counters::default(),
        events: events_tx,
        phase: phase_rx,
        ramp: Arc::new(Semaphore::new(args.ramp.max(1))),
        interner: Interner::default(),
        record: args.record.as_ref().map(|_| Default::default()),
    });
    let sampler = Sampler {
        pid: args.server_pid,
        clk_tck: args.clk_tck,
    };
    let mut report = Report {
        mode: if args.delta { "delta" } else { "sotw" },
        target: args.xds_addr.clone(),
        clients,
        shape: Some(args.shape),
        services: args.shape.services(),
        pods: pods.len(),
        ..Default::default()
    };
    let settle = Duration::from_millis(args.settle_ms);
    let timeout = Duration::from_secs(args.timeout_secs);

    // Initial push: connect everyone, wait for every client to have ACKed every type, then for quiet.
    let server_before = sampler.server()?;
    report.server_idle = server_before;
    let own_before = sampler.own()?;
    let before = ctx.counters.totals();
    let start = Instant::now();
    let mut tally = Tally {
        start,
        ready: Vec::with_capacity(clients),
        changed: Vec::new(),
        phase: 0,
        phase_start: start,
        connected: 0,
        last_connected: None,
        last_answer: None,
        failed: 0,
        first_failure: None,
        reconnects: 0,
        first_reconnect: None,
    };
    for (id, pod) in pods.into_iter().take(clients).enumerate() {
        tokio::spawn(client::run(Arc::clone(&ctx), id, pod, args.delta));
    }
    let done = |t: &Tally| t.ready.len() + t.failed >= clients;
    if !wait(&mut events, &mut tally, start + timeout, done).await {
        report.error = Some(format!(
            "initial push: {} of {clients} clients ready after {}s",
            tally.ready.len(),
            args.timeout_secs
        ));
    }
    quiet(&mut events, &mut tally, settle).await;
    let mut ready = tally.ready.clone();
    ready.sort_by(f64::total_cmp);
    report.initial = Initial {
        connected_s: tally.last_connected.map_or(0.0, |t| secs(t - start)),
        all_acked_s: ready.last().copied().unwrap_or_default(),
        p50_s: percentile(&ready, 0.5),
        p90_s: percentile(&ready, 0.9),
        p99_s: percentile(&ready, 0.99),
        last_answer_s: tally.last_answer.map_or(0.0, |t| secs(t - start)),
        reconnects: tally.reconnects,
        received: ctx.counters.totals().since(&before),
        usage: sampler.usage(server_before, own_before)?,
    };
    eprintln!(
        "loadgen: initial push: {} clients ACKed everything in {:.2}s",
        ready.len(),
        report.initial.all_acked_s
    );
    if let (Some(path), Some(record)) = (&args.record, &ctx.record) {
        replay::save(path, &record.lock())?;
    }

    for (i, change) in args.changes.iter().enumerate() {
        if report.error.is_some() {
            break;
        }
        let phase = i + 1;
        phase_tx.send_replace(Arc::new(Phase {
            index: phase,
            markers: markers(&args.shape, *change),
        }));
        let failed_before = tally.failed;
        let alive = clients - failed_before;
        let server_before = sampler.server()?;
        let own_before = sampler.own()?;
        let before = ctx.counters.totals();
        let reconnects_before = tally.reconnects;
        let started = Instant::now();
        tally.phase = phase;
        tally.phase_start = started;
        tally.changed.clear();
        tally.last_answer = None;
        let dir = args
            .mesh_dir
            .as_deref()
            .context("--change needs --mesh-dir")?;
        args.shape.apply(dir, &args.changes[..=i])?;
        let done = |t: &Tally| t.changed.len() + (t.failed - failed_before) >= alive;
        if !wait(&mut events, &mut tally, started + timeout, done).await {
            report.error = Some(format!(
                "change {}: {} of {alive} clients saw it after {}s",
                change.name(),
                tally.changed.len(),
                args.timeout_secs
            ));
        }
        quiet(&mut events, &mut tally, settle).await;
        let mut changed = tally.changed.clone();
        changed.sort_by(f64::total_cmp);
        let entry = ChangeReport {
            change: change.name(),
            all_acked_s: changed.last().copied().unwrap_or_default(),
            p50_s: percentile(&changed, 0.5),
            last_answer_s: tally.last_answer.map_or(0.0, |t| secs(t - started)),
            reconnects: tally.reconnects - reconnects_before,
            received: ctx.counters.totals().since(&before),
            usage: sampler.usage(server_before, own_before)?,
        };
        eprintln!(
            "loadgen: change {}: {} clients ACKed it in {:.2}s",
            entry.change,
            changed.len(),
            entry.all_acked_s
        );
        report.changes.push(entry);
    }
    report.server_end = sampler.server()?;
    report.loadgen_end = sampler.own()?;
    report.failed = tally.failed;
    report.first_failure = tally.first_failure;
    report.first_reconnect = tally.first_reconnect;
    Ok(report)
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
