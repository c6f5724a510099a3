//! `connbal trace`: the kernel pre-filters, userspace aggregates.
//!
//! Records arrive through a BPF ring buffer read with tokio's `AsyncFd`;
//! each becomes the same event replay produces and goes through the same
//! pipeline. A run is three steps: [`attach`] (everything privileged, then
//! privileges dropped), [`Session::follow`] (the loop), and
//! [`Session::finish`] (the last drain, the report, detaching).

mod affinity;
mod async_fd;
pub(crate) mod btf;
mod cgroup_watch;
mod cgroups;
mod counters;
pub mod loader;
mod metrics_server;
mod netns;
mod plan;
mod privileges;
mod processes;
mod records;
mod resolved_monitor;
mod ring_reader;
mod runtimes;
mod sinks;
mod stdout_writer;

use crate::aggregator::{ClientBy, Config, Event, Span, Timestamp};
use crate::output::{self, Coverage, Finish, Format, OutputError, Printed, Style};
use crate::pipeline::Pipeline;
use crate::tally::Tally;
use cgroups::{CgroupError, CgroupLookup, CgroupNames};
use connbal_common::record::RecordHeader;
use loader::{AttachMode, KernelCounters, LibcProbing, Loaded, LoaderError};
use metrics_server::MetricsError;
use plan::Plan;
use processes::ProcessNames;
use records::Clock;
use ring_reader::{Batch, RingReader};
use serde::Serialize;
use sinks::{Due, Scope, Snapshot};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use stdout_writer::{StdoutWriter, Stream};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{Signal, SignalKind};
use tokio::sync::mpsc;

/// How long the last report may wait for a reader that is behind (the
/// programs are detached by then); systemd waits 90 s before SIGKILL,
/// Kubernetes 30 s.
const LAST_REPORT_WAIT: Duration = Duration::from_secs(10);
/// How often to check that the traced interfaces still exist.
const INTERFACE_CHECK: Duration = Duration::from_millis(250);

/// What `connbal trace` was asked to do.
/// The runtime API sockets `--runtime-socket` names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RuntimeSockets {
    /// Those of `runtimes::DEFAULT_SOCKETS` that exist.
    #[default]
    Default,
    These(Vec<PathBuf>),
    /// `--runtime-socket none`: containers are shown by id.
    None,
}

/// Where systemd-resolved's monitor is (`--resolved-monitor`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ResolvedMonitor {
    /// `resolved_monitor::DEFAULT_SOCKET`, if there.
    #[default]
    Default,
    At(PathBuf),
    /// `--resolved-monitor none`.
    None,
}

pub struct TraceOptions {
    /// Interfaces for the TC classifier; none means host mode.
    pub interfaces: Vec<String>,
    /// Host mode: the cgroup v2 subtrees to observe (`--cgroup`), each a
    /// directory under the mount or a path as /proc/PID/cgroup shows it;
    /// none for the whole hierarchy.
    pub cgroups: Vec<PathBuf>,
    /// Host mode: where container names come from (`--runtime-socket`).
    pub runtime_sockets: RuntimeSockets,
    /// `--runtime-state`: containerd's or CRI-O's state directories; none
    /// for the defaults that exist.
    pub runtime_states: Vec<PathBuf>,
    /// `--by`; `None`: by app in host mode, by address with interfaces.
    pub by: Option<ClientBy>,
    pub duration: Option<Duration>,
    pub interval: Option<Duration>,
    pub config: Config,
    /// `None`: the table on a terminal, TSV otherwise.
    pub format: Option<Format>,
    pub ring_size: u64,
    pub verbose: bool,
    pub attach: AttachMode,
    pub kernel_debug: bool,
    /// Switch to this user after attaching.
    pub user: Option<String>,
    /// Which programs: all, all but the NAT tracepoint
    /// (`--no-vip-backends`), or the empty ones (benchmarks' floor).
    pub programs: loader::Programs,
    /// Host mode: whether and how libc's getaddrinfo is probed (lookups
    /// that never become a DNS packet).
    pub libc: loader::LibcProbing,
    /// Host mode, with getaddrinfo: systemd-resolved's monitor, for the
    /// TTLs of the answers it gives over nss-resolve.
    pub resolved_monitor: ResolvedMonitor,
    /// Serve OpenMetrics here.
    pub metrics: Option<std::net::SocketAddr>,
    pub metrics_max_series: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("starting the tokio runtime: {0}")]
    Runtime(io::Error),
    #[error("handling {signal}: {source}")]
    Signal {
        signal: &'static str,
        source: io::Error,
    },
    #[error("no such user: {0}")]
    NoSuchUser(String),
    #[error("{0}")]
    WrongMode(&'static str),
    #[error("looking up user {user}: {source}")]
    UserLookup {
        user: String,
        source: nix::errno::Errno,
    },
    /// With `-v`, the verifier's log follows on the next lines.
    #[error("{error}{}", verifier_log.as_deref().map(|log| format!("\n{log}")).unwrap_or_default())]
    Load {
        /// Boxed: aya's errors are large, and this one is rare.
        error: Box<LoaderError>,
        verifier_log: Option<String>,
    },
    #[error("starting kernel debug logs: {0}")]
    KernelLog(aya_log::Error),
    #[error("registering {what} with tokio: {source}")]
    Register {
        what: &'static str,
        source: io::Error,
    },
    #[error("waiting on {what}: {source}")]
    Wait {
        what: &'static str,
        source: io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Privileges(#[from] privileges::DropError),
    #[error(transparent)]
    Prober(loader::ProberError),
    #[error("--resolved-monitor: {0}")]
    ResolvedMonitor(#[from] resolved_monitor::MonitorError),
    #[error("reading the clocks: {0}")]
    Clock(nix::errno::Errno),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("interface {0} disappeared; the report covers the trace until then")]
    InterfaceGone(String),
    #[error("cgroup {0} disappeared; the report covers the trace until then")]
    CgroupGone(String),
}

/// Reports within this of the last walk over open connections to VIPs
/// use its figures rather than walk again.
const WALK_EVERY: Duration = Duration::from_secs(10);

/// The "input" section of a trace report.
#[derive(Clone, Debug, Serialize)]
pub struct TraceStats {
    pub interfaces: Vec<String>,
    /// Traced interfaces that disappeared during the trace.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interfaces_gone: Vec<String>,
    /// Host mode: the traced cgroups, as /proc/PID/cgroup shows paths.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cgroups: Vec<String>,
    /// Traced cgroups removed during the trace.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cgroups_gone: Vec<String>,
    /// TCX or netlink; absent in host mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attach: Option<AttachMode>,
    pub records: u64,
    /// Records that did not parse; non-zero means a kernel/userspace layout
    /// mismatch.
    pub unreadable_records: u64,
    /// Reports built for the sinks while tracing (`--interval`, scrapes);
    /// scrapes within a second of one another share one.
    pub reports_built: u64,
    /// `--interval` reports skipped, and `--events` lines dropped, because
    /// stdout was not read fast enough (the trace never waits for it).
    pub reports_skipped: u64,
    pub event_lines_dropped: u64,
    /// Host mode: names of cgroups gone long enough (or gone when the name
    /// table was full) forgotten, and cgroups left unnamed because it was
    /// full of live ones.
    pub cgroups_forgotten: u64,
    pub cgroup_names_refused: u64,
    /// Host mode: sockets open before the trace that were given their
    /// process at start (a daemon's long-lived connection to its
    /// resolver, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_sockets_owned: Option<u64>,
    /// Host mode: walks over open connections to VIPs before reports,
    /// the connections they read, and the longest walk, in microseconds
    /// (its cost grows with the host's open files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_connection_walks: Option<Walks>,
    pub kernel: KernelCounters,
    /// Why the trace ended (in the last report only): `signal SIGTERM`,
    /// `duration`, `output closed`, or what disappeared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
}

impl Tally for TraceStats {
    fn for_each_counter(&self, visit: &mut dyn FnMut(&str, u64)) {
        visit("records", self.records);
        visit("unreadable_records", self.unreadable_records);
        visit("reports_built", self.reports_built);
        visit("reports_skipped", self.reports_skipped);
        visit("event_lines_dropped", self.event_lines_dropped);
        visit("cgroups_forgotten", self.cgroups_forgotten);
        visit("cgroup_names_refused", self.cgroup_names_refused);
        self.kernel
            .for_each_counter(&mut |name, value| visit(&format!("kernel_{name}"), value));
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Walks {
    pub walks: u64,
    pub connections_read: u64,
    pub longest_us: u64,
}

/// Why a trace ended; JSON's input section says it (`ended`).
enum Ending {
    /// SIGINT, SIGTERM or SIGHUP: what a person or a process manager sends.
    Signal(&'static str),
    Duration,
    /// The reader of the reports went away (`connbal trace --interval 1s |
    /// head -1`).
    OutputClosed,
    InterfaceGone(String),
    CgroupGone(String),
}

impl Ending {
    fn describe(&self) -> String {
        match self {
            Ending::Signal(signal) => format!("signal {signal}"),
            Ending::Duration => "duration".to_string(),
            Ending::OutputClosed => "output closed".to_string(),
            Ending::InterfaceGone(name) => format!("interface {name} disappeared"),
            Ending::CgroupGone(path) => format!("cgroup {path} disappeared"),
        }
    }
}

/// `connbal libc-prober`: the helper host mode starts to probe libc files
/// (see `loader::lookups`).
pub fn run_libc_prober(entry_id: u32, return_id: u32) -> Result<(), TraceError> {
    loader::run_prober(entry_id, return_id).map_err(TraceError::Prober)
}

pub fn run(options: TraceOptions) -> Result<(), TraceError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(TraceError::Runtime)?;
    runtime.block_on(async {
        let mut session = attach(options).await?;
        let ending = session.follow().await?;
        session.finish(ending)
    })
}

struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        eprintln!("connbal: kernel: {}", record.args());
    }

    fn flush(&self) {}
}

/// A trace between attaching and detaching.
struct Session {
    options: TraceOptions,
    style: Style,
    sigint: Signal,
    sigterm: Signal,
    sighup: Signal,
    ring: RingReader,
    kernel_log: Option<AsyncFd<aya_log::EbpfLogger<StderrLog>>>,
    /// Reports asked for by the sinks (`--interval`, `--metrics`); `None`
    /// when there are none, or all have gone.
    due: Option<mpsc::Receiver<Due>>,
    loaded: Loaded,
    clock: Clock,
    /// When tracing began: every report covers the time since.
    started: Timestamp,
    pipeline: Pipeline<StdoutWriter>,
    /// Where reports and events go, never blocking the loop.
    writer: StdoutWriter,
    stats: TraceStats,
    host: Option<Host>,
    /// Why the walk over open connections to VIPs failed, after which it
    /// is not tried again; and when the last one began.
    traffic_walk_error: Option<String>,
    last_walk: Option<std::time::Instant>,
}

/// Host mode: the traced cgroups, and the names of what runs under them.
struct Host {
    mount: PathBuf,
    /// The traced directories still there.
    dirs: Vec<PathBuf>,
    cgroups: CgroupNames,
    processes: ProcessNames,
    /// systemd-resolved's monitor, subscribed to while privileged.
    monitor: Option<resolved_monitor::Monitor>,
    /// Why the default one could not be subscribed to.
    monitor_error: Option<String>,
}

/// Everything privileged: signal handlers, the program loaded and attached,
/// the metrics port bound; then every privilege dropped, before the first
/// record is read.
async fn attach(mut options: TraceOptions) -> Result<Session, TraceError> {
    let plan = Plan::resolve(&options)?;
    options.config = plan.config;
    let host = plan.host;
    let loader_options = plan.loader;
    let user = plan.user;
    // Before anything is attached: a signal from now on ends the run
    // through the normal path, which detaches.
    let handle = |kind: SignalKind, signal: &'static str| {
        tokio::signal::unix::signal(kind).map_err(|source| TraceError::Signal { signal, source })
    };
    let sigint = handle(SignalKind::interrupt(), "SIGINT")?;
    let sigterm = handle(SignalKind::terminate(), "SIGTERM")?;
    // A closed terminal or `systemctl reload`: the report and a clean
    // detach, as for SIGTERM, not death with filters left behind.
    let sighup = handle(SignalKind::hangup(), "SIGHUP")?;
    let attached = match &host {
        Some((_, dirs)) => loader::load_and_attach_cgroup(dirs, &loader_options),
        None => loader::load_and_attach(&options.interfaces, &loader_options),
    };
    let mut loaded = attached.map_err(|error| {
        let verifier_log = error
            .verifier_log()
            .filter(|_| options.verbose)
            .map(str::to_string);
        TraceError::Load {
            error: Box::new(error),
            verifier_log,
        }
    })?;
    let ring = loaded.take_ring().map_err(|error| TraceError::Load {
        error: Box::new(error),
        verifier_log: None,
    })?;
    let kernel_log = if options.kernel_debug {
        let logger = aya_log::EbpfLogger::init_with_logger(&mut loaded.ebpf, StderrLog)
            .map_err(TraceError::KernelLog)?;
        Some(
            async_fd::logger(logger).map_err(|source| TraceError::Register {
                what: "kernel logs",
                source,
            })?,
        )
    } else {
        None
    };

    // The sinks that ask for reports while the trace runs. The metrics
    // port is bound while still privileged, so a port below 1024 works too.
    let (due_tx, due) = mpsc::channel::<Due>(sinks::QUEUE);
    if let Some(addr) = options.metrics {
        let listener = metrics_server::bind(addr).await?;
        tokio::spawn(metrics_server::serve(
            listener,
            due_tx.clone(),
            options.metrics_max_series,
        ));
    }
    if let Some(period) = options.interval {
        sinks::every(period, due_tx.clone());
    }
    // With no sink left holding a sender, the channel reports closed.
    drop(due_tx);

    // Its socket is resolved's own (mode 0600): subscribed to while root.
    // One named on the command line must be there; the default may not.
    let monitor = match (&host, &options.resolved_monitor) {
        (Some(_), ResolvedMonitor::At(path)) if loader_options.libc != LibcProbing::Off => {
            Some(Ok(resolved_monitor::Monitor::connect(path)?))
        }
        (Some(_), ResolvedMonitor::Default)
            if loader_options.libc != LibcProbing::Off
                && Path::new(resolved_monitor::DEFAULT_SOCKET).exists() =>
        {
            Some(
                resolved_monitor::Monitor::connect(Path::new(resolved_monitor::DEFAULT_SOCKET))
                    .map_err(|e| e.to_string()),
            )
        }
        _ => None,
    };
    let (monitor, monitor_error) = match monitor {
        Some(Ok(monitor)) => (Some(monitor), None),
        Some(Err(error)) => (None, Some(error)),
        None => (None, None),
    };

    // Everything privileged is done: drop it all before reading a record.
    privileges::drop_after_attach(user.as_ref(), loaded.mode == Some(AttachMode::Netlink))?;
    // Started after the drop: a thread keeps the capabilities it was
    // created with (capset changes the calling thread's alone).
    let ring = RingReader::start(ring).map_err(|source| TraceError::Register {
        what: "the ring buffer's reader thread",
        source,
    })?;

    let serving = options
        .metrics
        .map(|addr| format!("; metrics at http://{addr}/metrics"))
        .unwrap_or_default();
    match (&host, loaded.mode) {
        (Some((mount, dirs)), _) => eprintln!(
            "connbal: tracing every socket under cgroup {} (host mode, by {}){serving}; Ctrl-C to stop",
            dirs.iter()
                .map(|dir| cgroups::relative(mount, dir))
                .collect::<Vec<_>>()
                .join(", "),
            by_name(options.config.by),
        ),
        (None, mode) => eprintln!(
            "connbal: tracing {} (ingress and egress, {}){serving}; Ctrl-C to stop",
            options.interfaces.join(", "),
            if mode == Some(AttachMode::Tcx) {
                "tcx"
            } else {
                "netlink clsact"
            },
        ),
    }

    let clock = Clock::now().map_err(TraceError::Clock)?;
    let runtime_sockets = options.runtime_sockets.clone();
    let runtime_states = options.runtime_states.clone();
    let stats = TraceStats {
        interfaces: options.interfaces.clone(),
        interfaces_gone: Vec::new(),
        cgroups: host.as_ref().map_or_else(Vec::new, |(mount, dirs)| {
            dirs.iter()
                .map(|dir| cgroups::relative(mount, dir))
                .collect()
        }),
        cgroups_gone: Vec::new(),
        attach: loaded.mode,
        records: 0,
        unreadable_records: 0,
        reports_built: 0,
        reports_skipped: 0,
        event_lines_dropped: 0,
        cgroups_forgotten: 0,
        cgroup_names_refused: 0,
        open_sockets_owned: loaded
            .open_sockets
            .as_ref()
            .and_then(|found| found.as_ref().ok().copied()),
        open_connection_walks: None,
        kernel: KernelCounters::default(),
        ended: None,
    };
    let writer = StdoutWriter::start();
    Ok(Session {
        style: Style::decide(options.format, options.config.events),
        pipeline: Pipeline::with_events_to(
            Config {
                // Answers given before now were not seen: the TTL verdicts
                // of names first looked up within their TTL of it say so.
                live_since: Some(wall_clock_now()),
                connection_bytes: matches!(loaded.traffic, Some(Ok(_))),
                ..options.config.clone()
            },
            writer.clone(),
        ),
        writer,
        options,
        sigint,
        sigterm,
        sighup,
        ring,
        kernel_log,
        due: Some(due),
        loaded,
        traffic_walk_error: None,
        last_walk: None,
        clock,
        started: wall_clock_now(),
        stats,
        host: host.map(|(mount, dirs)| {
            let mut cgroups = CgroupNames::new(mount.clone(), dirs.clone());
            let sockets = match &runtime_sockets {
                RuntimeSockets::Default => Some(&[][..]),
                RuntimeSockets::These(sockets) => Some(&sockets[..]),
                RuntimeSockets::None => None,
            };
            if let Some(api) =
                sockets.and_then(|sockets| runtimes::RuntimeApi::start(sockets, &runtime_states))
            {
                cgroups.name_containers_with(api);
            }
            // Without it, cgroups are named by walking when their records
            // come, which a short-lived container may not outlive.
            if let Err(error) = cgroups.watch_creations() {
                eprintln!(
                    "connbal: warning: cgroups are named when their records are read only: {error}"
                );
            }
            Host {
                cgroups,
                processes: ProcessNames::new(),
                mount,
                dirs,
                monitor,
                monitor_error,
            }
        }),
    })
}

/// A ring size as --ring-size takes it: 8M, 64K, or bytes.
fn ring_size_text(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}M", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}K", b >> 10),
        b => b.to_string(),
    }
}

fn wall_clock_now() -> Timestamp {
    Timestamp::from_system_time(std::time::SystemTime::now())
}

fn by_name(by: ClientBy) -> &'static str {
    match by {
        ClientBy::Ip => "ip",
        ClientBy::App => "app",
        ClientBy::Cgroup => "cgroup",
        ClientBy::Process => "process",
    }
}

impl Session {
    /// Reads records until a signal, the duration, or a vanished interface
    /// ends the run; meanwhile prints periodic reports and answers scrapes.
    async fn follow(&mut self) -> Result<Ending, TraceError> {
        let deadline = self
            .options
            .duration
            .map(|d| tokio::time::Instant::now() + d);
        let mut interface_check = tokio::time::interval(INTERFACE_CHECK);
        loop {
            tokio::select! {
                batch = self.ring.next() => {
                    // None: the reader thread is gone, which only ending
                    // the trace does.
                    let Some(batch) = batch else {
                        return Err(TraceError::Wait { what: "the ring buffer's reader thread", source: io::Error::other("it stopped") });
                    };
                    aggregate([batch], &mut self.pipeline, &self.clock, &mut self.stats, self.host.as_mut());
                }
                ready = async { self.kernel_log.as_mut().expect("guarded").readable_mut().await }, if self.kernel_log.is_some() => {
                    let mut guard = ready.map_err(|source| TraceError::Wait { what: "kernel logs", source })?;
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                _ = async { self.host.as_ref().and_then(|h| h.monitor.as_ref()).expect("guarded").readable().await }, if self.host.as_ref().is_some_and(|h| h.monitor.as_ref().is_some_and(|m| m.closed.is_none())) => {
                    let host = self.host.as_mut().expect("guarded");
                    drain_monitor(host, &mut self.pipeline);
                }
                _ = self.sigint.recv() => return Ok(Ending::Signal("SIGINT")),
                _ = self.sigterm.recv() => return Ok(Ending::Signal("SIGTERM")),
                _ = self.sighup.recv() => return Ok(Ending::Signal("SIGHUP")),
                () = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => return Ok(Ending::Duration),
                due = async { self.due.as_mut().expect("guarded").recv().await }, if self.due.is_some() => {
                    // None: every sink is gone; stop polling for requests.
                    let Some(due) = due else {
                        self.due = None;
                        continue;
                    };
                    self.catch_up();
                    self.walk_open_traffic(false);
                    self.pipeline.advance(wall_clock_now());
                    self.stats.reports_built += 1;
                    let report = self.report(due.scope());
                    let delivered = due.deliver(&Snapshot {
                        report: &report,
                        stats: &self.stats,
                        coverage: self.coverage(),
                        style: &self.style,
                        writer: &self.writer,
                    });
                    match delivered {
                        Err(TraceError::Output(OutputError::Closed { .. })) => return Ok(Ending::OutputClosed),
                        other => other?,
                    }
                }
                _ = interface_check.tick() => {
                    if let Some(gone) = self.vanished() {
                        return Ok(gone);
                    }
                    self.forget_gone_cgroups();
                    // A quiet input still moves the window on.
                    self.pipeline.advance(wall_clock_now());
                }
            }
        }
    }

    /// Host mode, before a report: the bytes so far of each open
    /// connection to a VIP, from one walk over every task's open files,
    /// all at one time. The walk costs about 0.55 µs per open file on the
    /// host (BENCHMARKS.md), so reports in between the last walk and
    /// `WALK_EVERY` after it use that walk's figures; the last report
    /// always walks (`fresh`). A walk that fails is said once, at the end.
    fn walk_open_traffic(&mut self, fresh: bool) {
        if !matches!(self.loaded.traffic, Some(Ok(_))) {
            return;
        }
        if self.pipeline.open_behind_vips() == 0 || self.traffic_walk_error.is_some() {
            return;
        }
        if !fresh && self.last_walk.is_some_and(|at| at.elapsed() < WALK_EVERY) {
            return;
        }
        let began = std::time::Instant::now();
        self.last_walk = Some(began);
        let records = match loader::traffic::walk_open(&mut self.loaded.ebpf) {
            Ok(records) => records,
            Err(error) => {
                self.traffic_walk_error = Some(error.to_string());
                return;
            }
        };
        let took = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
        let walks = self.stats.open_connection_walks.get_or_insert_default();
        walks.walks += 1;
        walks.connections_read += (records.len() / connbal_common::record::TRAFFIC_LEN) as u64;
        walks.longest_us = walks.longest_us.max(took);
        let now = wall_clock_now();
        for item in records.chunks_exact(connbal_common::record::TRAFFIC_LEN) {
            let event = RecordHeader::from_bytes(item)
                .and_then(|header| records::to_event(&header, item, &self.clock, false, None));
            match event {
                Some(Event::Traffic(mut carried)) => {
                    carried.ts = now;
                    self.pipeline.event(&Event::Traffic(carried));
                }
                _ => self.stats.unreadable_records += 1,
            }
        }
    }

    /// A report of `scope`; in host mode, with the levels behind a VIP
    /// that kube-proxy's affinity pinned said so.
    fn report(&self, scope: Scope) -> crate::aggregator::Report {
        let mut report = match scope {
            Scope::Whole => self.pipeline.report(),
            Scope::Busiest(limit) => self.pipeline.report_busiest(limit),
        };
        if self.host.is_some() {
            affinity::mark_pinned(&mut report.behind_vips, Path::new(affinity::LISTS));
        }
        report
    }

    /// Everything the kernel has produced so far, and its counters.
    /// The kernel's packet count and the time since tracing began; call
    /// after `catch_up`, which reads the kernel's counters.
    fn coverage(&self) -> Coverage {
        Coverage {
            packets: self.stats.kernel.packets_seen,
            span: Some(Span {
                start: self.started,
                end: wall_clock_now(),
            }),
        }
    }

    fn catch_up(&mut self) {
        aggregate(
            self.ring.ready(),
            &mut self.pipeline,
            &self.clock,
            &mut self.stats,
            self.host.as_mut(),
        );
        self.stats.kernel = self.loaded.counters();
        self.pipeline.input_lost(self.stats.kernel.records_lost);
        self.stats.reports_skipped = self.writer.reports_skipped();
        self.stats.event_lines_dropped = self.writer.event_lines_dropped();
        if let Some(host) = &self.host {
            self.stats.cgroups_forgotten = host.cgroups.forgotten;
            self.stats.cgroup_names_refused = host.cgroups.refused;
        }
    }

    /// The clients of cgroups whose names were forgotten (gone for
    /// `FORGET_GONE_AFTER`, or pushed out of a full name table) are
    /// forgotten too.
    fn forget_gone_cgroups(&mut self) {
        let Some(host) = &mut self.host else {
            return;
        };
        let ids = host.cgroups.refresh();
        if ids.is_empty() {
            return;
        }
        let ids: std::collections::HashSet<u64> = ids.into_iter().collect();
        self.pipeline
            .forget_clients(&|client| client.cgroup_id().is_some_and(|id| ids.contains(&id)));
    }

    /// The last traced cgroup or interface gone. One that goes while
    /// others remain (a pod's veth, one of several containers) is dropped
    /// from the trace with a warning, and listed in the report.
    fn vanished(&mut self) -> Option<Ending> {
        if let Some(host) = &mut self.host {
            let (live, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut host.dirs)
                .into_iter()
                .partition(|dir| dir.is_dir());
            host.dirs = live;
            let mut last = None;
            for dir in gone {
                let path = cgroups::relative(&host.mount, &dir);
                if !host.dirs.is_empty() {
                    eprintln!("connbal: cgroup {path} disappeared; still tracing the others");
                }
                self.stats.cgroups_gone.push(path.clone());
                last = Some(path);
            }
            return last
                .filter(|_| host.dirs.is_empty())
                .map(Ending::CgroupGone);
        }
        let (live, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.loaded.interfaces)
            .into_iter()
            .partition(|(name, index)| loader::interface_index(name) == Some(*index));
        self.loaded.interfaces = live;
        let last = gone.last().map(|(name, _)| name.clone());
        for (name, _) in gone {
            if !self.loaded.interfaces.is_empty() {
                let left: Vec<&str> = self
                    .loaded
                    .interfaces
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect();
                eprintln!(
                    "connbal: interface {name} disappeared; still tracing {}",
                    left.join(", ")
                );
            }
            self.stats.interfaces_gone.push(name);
        }
        match last {
            Some(name) if self.loaded.interfaces.is_empty() => Some(Ending::InterfaceGone(name)),
            _ => None,
        }
    }

    /// The last records, the report, and detaching.
    fn finish(mut self, ending: Ending) -> Result<(), TraceError> {
        // Every record: those the reader handed over, and the ring's last.
        let rest = self.ring.stop();
        aggregate(
            rest,
            &mut self.pipeline,
            &self.clock,
            &mut self.stats,
            self.host.as_mut(),
        );
        self.catch_up();
        self.walk_open_traffic(true);
        self.pipeline.advance(wall_clock_now());
        self.stats.ended = Some(ending.describe());
        let report = self.report(Scope::Whole);
        let mut source_warnings = Vec::new();
        if self.stats.kernel.records_lost > 0 {
            source_warnings.push(format!(
                "{} records lost because the ring buffer was full; the report undercounts. Try a larger --ring-size (now {})",
                self.stats.kernel.records_lost,
                ring_size_text(self.options.ring_size)
            ));
        }
        if self.stats.cgroup_names_refused > 0 {
            source_warnings.push(format!(
                "{} cgroups were left unnamed (shown by id): the name table was full of live cgroups",
                self.stats.cgroup_names_refused
            ));
        }
        if let Some(host) = &self.host {
            source_warnings.extend(host.cgroups.runtime_notes());
        }
        if let Some(Err(error)) = &self.loaded.traffic {
            source_warnings.push(format!(
                "the bytes connections behind a VIP carried are not known: {error}"
            ));
        }
        if let Some(error) = &self.traffic_walk_error {
            source_warnings.push(format!(
                "the bytes so far of connections still open behind a VIP are not known: {error}"
            ));
        }
        if let Some(Err(error)) = &self.loaded.nat {
            source_warnings.push(format!(
                "where a DNAT sent each connection (a Service's pods behind its VIP) is not known: {error}"
            ));
        }
        match &mut self.loaded.lookups {
            Some(Err(error)) => source_warnings.push(format!(
                "lookups that never become a DNS packet (nss-resolve, nscd) are not seen: {error}"
            )),
            Some(Ok(probing)) => {
                let probes = probing.probes();
                if probes.files.is_empty() {
                    source_warnings.push(format!(
                        "lookups that never become a DNS packet (nss-resolve, nscd) are not seen: no libc could be probed{}",
                        probes.first_failure.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
                    ));
                } else if let Some(error) = &probes.first_failure {
                    source_warnings.push(format!(
                        "getaddrinfo is not probed in {} libc files: {error}",
                        probes.failed
                    ));
                }
            }
            None => {}
        }
        if let Some(host) = &self.host {
            if let Some(error) = &host.monitor_error {
                source_warnings.push(format!("lookups over nss-resolve carry no TTL: {error}"));
            }
            if let Some(monitor) = &host.monitor {
                if let Some(why) = &monitor.closed {
                    source_warnings.push(format!(
                        "systemd-resolved's monitor {} ended ({why}): later lookups over nss-resolve carry no TTL",
                        monitor.path.display()
                    ));
                }
            }
        }
        if let Some(Err(error)) = &self.loaded.open_sockets {
            source_warnings.push(format!(
                "sockets open before the trace were given no process (each gets one when it next connects or sends to an address): {error}"
            ));
        }
        if self.stats.unreadable_records > 0 {
            source_warnings.push(format!(
                "{} unreadable records from the kernel (program and binary out of step?)",
                self.stats.unreadable_records
            ));
        }
        let coverage = self.coverage();
        // Detach before the last report: a reader that does not read can
        // delay the exit, never keep the programs attached.
        drop(self.ring);
        drop(self.kernel_log);
        drop(self.loaded);
        let stream = if self.style.to_stderr {
            Stream::Stderr
        } else {
            Stream::Stdout
        };
        output::finish_with(
            &self.style,
            &Finish {
                printed: Printed {
                    report: &report,
                    input: &self.stats,
                    error: match &ending {
                        Ending::InterfaceGone(_) | Ending::CgroupGone(_) => Some(ending.describe()),
                        _ => None,
                    },
                    interrupted: matches!(ending, Ending::Signal(_)),
                    periodic: self.options.interval.is_some(),
                    coverage,
                },
                source_warnings,
                verbose: self.options.verbose,
            },
            |printed| {
                let bytes = output::render_report(&self.style, printed);
                self.writer.finish(stream, bytes, LAST_REPORT_WAIT)
            },
        )?;
        match ending {
            Ending::InterfaceGone(name) => Err(TraceError::InterfaceGone(name)),
            Ending::CgroupGone(path) => Err(TraceError::CgroupGone(path)),
            Ending::Signal(_) | Ending::Duration | Ending::OutputClosed => Ok(()),
        }
    }
}

/// Records, as the reader thread copied them out, to the aggregator.
fn aggregate(
    batches: impl IntoIterator<Item = Batch>,
    pipeline: &mut Pipeline<StdoutWriter>,
    clock: &Clock,
    stats: &mut TraceStats,
    mut host: Option<&mut Host>,
) {
    let now = std::time::Instant::now();
    for batch in batches {
        // resolved tells its monitor before it answers the caller, whose
        // getaddrinfo record comes after: read what it said first.
        if let Some(host) = host.as_deref_mut() {
            drain_monitor(host, pipeline);
        }
        for item in batch.records() {
            aggregate_record(item, pipeline, (clock, now), stats, host.as_deref_mut());
        }
    }
    pipeline.flush_events();
}

/// systemd-resolved's answers so far, to the aggregator.
fn drain_monitor(host: &mut Host, pipeline: &mut Pipeline<StdoutWriter>) {
    if let Some(monitor) = host.monitor.as_mut() {
        monitor.drain(wall_clock_now(), |answer| {
            pipeline.event(&Event::ResolverAnswer(*answer));
        });
    }
}

fn aggregate_record(
    item: &[u8],
    pipeline: &mut Pipeline<StdoutWriter>,
    (clock, now): (&Clock, std::time::Instant),
    stats: &mut TraceStats,
    mut host: Option<&mut Host>,
) {
    stats.records += 1;
    let Some(header) = RecordHeader::from_bytes(item) else {
        stats.unreadable_records += 1;
        return;
    };
    {
        let lookup = host
            .as_mut()
            .map(|host| &mut host.cgroups as &mut dyn CgroupLookup);
        let mut owner = records::owner(&header, lookup);
        // An app is its process: named by its main thread, not the thread
        // that made the call.
        if let (Some(Host { processes, .. }), Some(process)) = (
            host.as_mut(),
            owner.as_mut().and_then(|o| o.process.as_mut()),
        ) {
            process.command = processes.command(process.tgid, process.command, now);
        }
        let mut addresses = [std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
            connbal_common::record::LOOKUP_ADDRESSES];
        let event = if header.kind == connbal_common::record::KIND_LOOKUP {
            records::lookup(&header, item, clock, owner.as_ref(), &mut addresses)
        } else {
            records::to_event(&header, item, clock, pipeline.all_tcp(), owner.as_ref())
        };
        match event {
            Some(event) => pipeline.event(&event),
            None => stats.unreadable_records += 1,
        }
    }
}
