//! `connbal trace`: the kernel pre-filters, userspace aggregates.
//!
//! Records arrive through a BPF ring buffer read with tokio's `AsyncFd`;
//! each becomes the same event replay produces and goes into the same
//! aggregator.

mod async_fd;
mod counters;
pub mod loader;
pub mod privileges;
pub mod records;

use crate::aggregator::{Aggregator, Config};
use crate::metrics;
use crate::output::{self, Printed};
use crate::report::Format;
use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use loader::{AttachMode, KernelCounters, Loaded};
use records::Clock;
use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

const EXIT_BAD_INPUT: u8 = 2;
/// How often to check that the traced interfaces still exist.
const INTERFACE_CHECK: Duration = Duration::from_millis(250);
/// The kernel wakes us only when a quarter of the ring is full; below that,
/// records wait at most this long.
const DRAIN_EVERY: Duration = Duration::from_millis(50);

pub struct TraceOptions {
    pub interfaces: Vec<String>,
    pub duration: Option<Duration>,
    pub interval: Option<Duration>,
    pub config: Config,
    pub format: Format,
    pub style: output::TableStyle,
    pub ring_size: u64,
    pub verbose: bool,
    pub attach: AttachMode,
    pub kernel_debug: bool,
    /// Switch to this user after attaching.
    pub user: Option<String>,
    /// Attach the empty classifier (benchmarks' floor).
    pub noop_program: bool,
    /// Serve OpenMetrics here.
    pub metrics: Option<std::net::SocketAddr>,
    pub metrics_max_series: usize,
}

/// The "input" section of a trace report.
#[derive(Clone, Debug, Serialize)]
pub struct TraceStats {
    pub interfaces: Vec<String>,
    pub attach: AttachMode,
    pub records: u64,
    /// Records that did not parse; non-zero means a kernel/userspace layout
    /// mismatch.
    pub unreadable_records: u64,
    pub kernel: KernelCounters,
}

enum Ending {
    Signal,
    Duration,
    InterfaceGone(String),
}

pub fn run(options: TraceOptions) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(trace(options))
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

async fn trace(options: TraceOptions) -> anyhow::Result<ExitCode> {
    let loader_options = loader::Options {
        all_tcp: options.config.all_tcp,
        debug_log: options.kernel_debug,
        ring_size: options.ring_size,
        attach: options.attach,
        noop: options.noop_program,
    };
    // Before anything is attached: a signal from now on ends the run
    // through the normal path, which detaches.
    let mut sigint = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let user = match options.user.as_deref().map(nix::unistd::User::from_name) {
        None => None,
        Some(Ok(Some(user))) => Some(user),
        Some(Ok(None)) => {
            eprintln!(
                "connbal: no such user: {}",
                options.user.as_deref().unwrap_or_default()
            );
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
        Some(Err(e)) => anyhow::bail!(
            "looking up user {}: {e}",
            options.user.as_deref().unwrap_or_default()
        ),
    };
    let mut loaded = match loader::load_and_attach(&options.interfaces, &loader_options) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("connbal: {error}");
            if let (true, Some(log)) = (options.verbose, error.verifier_log()) {
                eprintln!("{log}");
            }
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let mut ring = async_fd::ring(loaded.take_ring()?)?;
    let mut kernel_log = if options.kernel_debug {
        let logger = aya_log::EbpfLogger::init_with_logger(&mut loaded.ebpf, StderrLog)
            .context("starting kernel debug logs")?;
        Some(async_fd::logger(logger)?)
    } else {
        None
    };

    // Bound while still privileged, so a port below 1024 works too.
    let (scrape_tx, mut scrapes) = tokio::sync::mpsc::channel::<metrics::ScrapeRequest>(8);
    let mut serving_metrics = match options.metrics {
        Some(addr) => match metrics::bind(addr).await {
            Ok(listener) => {
                tokio::spawn(metrics::serve(listener, scrape_tx));
                true
            }
            Err(error) => {
                eprintln!("connbal: {error}");
                return Ok(ExitCode::from(EXIT_BAD_INPUT));
            }
        },
        None => false,
    };

    // Everything privileged is done: drop it all before reading a record.
    privileges::drop_after_attach(user.as_ref(), loaded.mode == AttachMode::Netlink)?;

    let names: Vec<&str> = options.interfaces.iter().map(String::as_str).collect();
    let mode = if loaded.mode == AttachMode::Tcx {
        "tcx"
    } else {
        "netlink clsact"
    };
    let serving = options
        .metrics
        .map(|addr| format!("; metrics at http://{addr}/metrics"))
        .unwrap_or_default();
    eprintln!(
        "connbal: tracing {} (ingress and egress, {mode}){serving}; Ctrl-C to stop",
        names.join(", ")
    );

    let clock = Clock::now().context("reading the clocks")?;
    let mut aggregator = Aggregator::new(options.config.clone());
    let mut stats = TraceStats {
        interfaces: options.interfaces.clone(),
        attach: loaded.mode,
        records: 0,
        unreadable_records: 0,
        kernel: KernelCounters::default(),
    };
    let deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
    let mut reports = options
        .interval
        .map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
    let mut interface_check = tokio::time::interval(INTERFACE_CHECK);
    let mut drain_tick = tokio::time::interval(DRAIN_EVERY);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let all_tcp = options.config.all_tcp;
    let mut events = options.config.events.then(output::EventSink::default);

    let ending = loop {
        tokio::select! {
            ready = ring.readable_mut() => {
                let mut guard = ready.context("waiting on the ring buffer")?;
                drain(guard.get_inner_mut(), &mut aggregator, &clock, all_tcp, &mut stats, events.as_mut());
                guard.clear_ready();
            }
            ready = async { kernel_log.as_mut().expect("guarded").readable_mut().await }, if kernel_log.is_some() => {
                let mut guard = ready.context("waiting on kernel logs")?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            _ = sigint.recv() => break Ending::Signal,
            _ = sigterm.recv() => break Ending::Signal,
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => break Ending::Duration,
            _ = async { reports.as_mut().expect("guarded").tick().await }, if reports.is_some() => {
                drain(ring.get_mut(), &mut aggregator, &clock, all_tcp, &mut stats, events.as_mut());
                stats.kernel = loaded.counters();
                print(&options, &aggregator, &stats, false, true)?;
            }
            scrape = scrapes.recv(), if serving_metrics => {
                // None: the server task is gone; stop polling for scrapes.
                let Some(reply) = scrape else {
                    serving_metrics = false;
                    continue;
                };
                drain(ring.get_mut(), &mut aggregator, &clock, all_tcp, &mut stats, events.as_mut());
                stats.kernel = loaded.counters();
                let stats_json = serde_json::to_value(&stats).unwrap_or_default();
                let text = metrics::render(&aggregator.report(), &stats_json, options.metrics_max_series);
                // The scraper may have hung up; nothing to do then.
                let _ = reply.send(text);
            }
            _ = drain_tick.tick() => {
                drain(ring.get_mut(), &mut aggregator, &clock, all_tcp, &mut stats, events.as_mut());
            }
            _ = interface_check.tick() => {
                if let Some(gone) = vanished(&loaded) {
                    break Ending::InterfaceGone(gone);
                }
            }
        }
    };
    drain(
        ring.get_mut(),
        &mut aggregator,
        &clock,
        all_tcp,
        &mut stats,
        events.as_mut(),
    );
    stats.kernel = loaded.counters();
    let interrupted = matches!(ending, Ending::Signal);
    print(
        &options,
        &aggregator,
        &stats,
        interrupted,
        options.interval.is_some(),
    )?;
    if stats.kernel.records_lost > 0 {
        eprintln!(
            "connbal: warning: {} records lost because the ring buffer was full; the report undercounts. Try a larger --ring-size (now {})",
            stats.kernel.records_lost, options.ring_size
        );
    }
    if stats.unreadable_records > 0 {
        eprintln!("connbal: warning: {} unreadable records from the kernel (program and binary out of step?)", stats.unreadable_records);
    }
    if options.verbose {
        let mut err = std::io::stderr().lock();
        crate::report::write_counters(&mut err, &stats, aggregator.counters())?;
    }
    // Detach before saying goodbye, so a caller that waits for exit sees a
    // clean interface.
    drop(ring);
    drop(kernel_log);
    drop(loaded);
    match ending {
        Ending::InterfaceGone(name) => {
            eprintln!(
                "connbal: interface {name} disappeared; the report covers the trace until then"
            );
            Ok(ExitCode::from(EXIT_BAD_INPUT))
        }
        Ending::Signal | Ending::Duration => Ok(ExitCode::SUCCESS),
    }
}

fn drain(
    ring: &mut RingBuf<MapData>,
    aggregator: &mut Aggregator,
    clock: &Clock,
    all_tcp: bool,
    stats: &mut TraceStats,
    mut events: Option<&mut output::EventSink>,
) {
    while let Some(item) = ring.next() {
        stats.records += 1;
        match records::to_event(&item, clock, all_tcp) {
            Some(event) => {
                aggregator.process(&event);
                if let Some(sink) = events.as_deref_mut() {
                    sink.write(aggregator.take_observations());
                }
            }
            None => stats.unreadable_records += 1,
        }
    }
    if let Some(sink) = events {
        sink.flush();
    }
}

fn vanished(loaded: &Loaded) -> Option<String> {
    loaded
        .interfaces
        .iter()
        .find(|(name, index)| loader::interface_index(name) != Some(*index))
        .map(|(name, _)| name.clone())
}

fn print(
    options: &TraceOptions,
    aggregator: &Aggregator,
    stats: &TraceStats,
    interrupted: bool,
    periodic: bool,
) -> anyhow::Result<()> {
    let report = aggregator.report();
    // `--events` has stdout; the report goes to stderr.
    let to_stderr = options.config.events;
    let terminal = output::report_on_terminal(to_stderr);
    // On a terminal a periodic table replaces the previous one; anywhere
    // else reports follow each other, a blank line apart.
    let redraw = periodic && terminal && options.format == Format::Table;
    output::print_report(&Printed {
        format: options.format,
        report: &report,
        input: stats,
        error: None,
        interrupted,
        compact: periodic,
        style: output::TableStyle {
            redraw,
            ..options.style
        },
        to_stderr,
    })?;
    if periodic && !redraw && options.format != Format::Json {
        if to_stderr {
            eprintln!();
        } else {
            println!();
        }
    }
    if !periodic || interrupted {
        output::print_warnings(&report.counters);
    }
    Ok(())
}
