//! `--format table`: the report for a person at a terminal. Rows grouped by
//! client, then name; each backend's share of the name's connections as a
//! percentage and a bar; the aggregator's verdicts under each name.
//!
//! Every name printed here went through `name::presentation`, which escapes
//! control bytes, so a hostile name cannot move the cursor or recolour the
//! terminal.

use crate::aggregator::verdict::{p_is, plural};
use crate::aggregator::{Client, Report, Service, VipFinding, VipSpread, VipTraffic};
use anstyle::{AnsiColor, Style};
use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;

/// Clears a terminal and homes the cursor: a report of a series replaces
/// the one before.
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

const BAR_WIDTH: usize = 20;
/// Eighths of a cell, for bars finer than one character.
const BAR_EIGHTHS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];

/// Whether to colour: only on a terminal, and never when `NO_COLOR` is set
/// to anything non-empty (<https://no-color.org>).
pub fn colour_wanted(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

struct Palette {
    colour: bool,
}

impl Palette {
    fn paint(&self, style: Style, text: &str) -> String {
        if self.colour {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_string()
        }
    }

    fn heading(&self, text: &str) -> String {
        self.paint(Style::new().bold(), text)
    }

    fn dim(&self, text: &str) -> String {
        self.paint(Style::new().dimmed(), text)
    }

    fn good(&self, text: &str) -> String {
        self.paint(AnsiColor::Green.on_default(), text)
    }

    fn bad(&self, text: &str) -> String {
        self.paint(AnsiColor::Red.on_default().bold(), text)
    }
}

/// The table; in a series (`--interval`) it redraws in place when `redraw`
/// (a terminal), and otherwise ends with a blank line.
pub fn write(
    out: &mut impl io::Write,
    report: &Report,
    colour: bool,
    redraw: bool,
    periodic: bool,
    summary: &str,
) -> io::Result<()> {
    if redraw {
        out.write_all(CLEAR_SCREEN.as_bytes())?;
    }
    out.write_all(render(report, colour).as_bytes())?;
    let palette = Palette { colour };
    writeln!(out, "\n{}", palette.dim(summary))?;
    if periodic && !redraw {
        writeln!(out)?;
    }
    Ok(())
}

fn render(report: &Report, colour: bool) -> String {
    let mut out = if report.services.is_empty() && !report.behind_vips.is_empty() {
        String::new()
    } else {
        render_services(report, colour)
    };
    if !report.behind_vips.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&render_behind_vips(&report.behind_vips, colour));
    }
    out
}

/// Each client's connections to a name it got one address for (a
/// Service's VIP), by the backend a DNAT chose.
fn render_behind_vips(spreads: &[VipSpread], colour: bool) -> String {
    let palette = Palette { colour };
    let mut out = String::new();
    let mut client: Option<&Client> = None;
    for spread in spreads {
        if client != Some(&spread.client) {
            if client.is_some() {
                out.push('\n');
            }
            client = Some(&spread.client);
            let _ = writeln!(
                out,
                "{}",
                palette.heading(&format!("client {} behind VIPs", spread.client))
            );
        }
        let _ = writeln!(
            out,
            "  {} via {}: {}",
            spread.name,
            spread.vip,
            plural(spread.connections, "connection", "connections"),
        );
        let translated: u64 = spread.backends.iter().map(|b| b.connections).sum();
        for backend in &spread.backends {
            let share = backend.connections as f64 / translated.max(1) as f64;
            // The bytes in a column after the bar, padded to line up.
            let (bar, bytes) = match backend.bytes {
                Some(b) => (bar(share), format!(" {:>9}", human_bytes(b))),
                None => (bar(share).trim_end().to_string(), String::new()),
            };
            let _ = writeln!(
                out,
                "    {:<40}  {:>5}  {:>4.0}% {bar}{bytes}",
                backend.backend.to_string(),
                backend.connections,
                share * 100.0,
            );
        }
        if let Some(traffic) = &spread.traffic {
            let _ = writeln!(out, "    {}", traffic_line(traffic));
        }
        if let Some(balance) = &spread.balance {
            let p = balance.p_value.map(p_is).unwrap_or_default();
            let finding = match balance.finding {
                VipFinding::Even => palette.good(&format!(
                    "even over the {} backends seen ({p})",
                    balance.backends_seen
                )),
                VipFinding::Uneven => palette.bad(&format!(
                    "uneven over the {} backends seen: not an even random choice ({p}); by design under an IPVS scheduler, internalTrafficPolicy: Local or trafficDistribution",
                    balance.backends_seen
                )),
                VipFinding::OneBackend => palette.bad(
                    "every connection to one backend: session affinity (sessionAffinity: ClientIP), or one ready endpoint",
                ),
                VipFinding::SessionAffinity => palette.good(&format!(
                    "every connection to one backend, by session affinity: the NAT's affinity list {} holds this client (sessionAffinity: ClientIP)",
                    balance.affinity_list.as_deref().unwrap_or_default()
                )),
            };
            let _ = writeln!(out, "    {finding}");
        }
        if spread.untranslated > 0 {
            let _ = writeln!(
                out,
                "    {}",
                palette.dim(&format!(
                    "{} with no translation seen",
                    plural(spread.untranslated, "connection", "connections")
                ))
            );
        }
    }
    out
}

/// How many connections carried a VIP's bytes: one carrying nearly all
/// reads as connection reuse, not the NAT's choice.
fn traffic_line(traffic: &VipTraffic) -> String {
    let measured = plural(traffic.connections_measured, "connection", "connections");
    let open = if traffic.still_open > 0 {
        format!(", {} still open", traffic.still_open)
    } else {
        String::new()
    };
    let most = match traffic.connections_for_most_bytes {
        Some(0) => String::new(),
        Some(1) => {
            let busiest = &traffic.busiest[0];
            format!(
                "; one connection, to {}, carried {:.0}% of them",
                busiest.backend,
                busiest.bytes as f64 * 100.0 / traffic.bytes.max(1) as f64
            )
        }
        Some(n) => format!("; {n} connections carried 90% of them"),
        None => format!(
            "; more than {} connections carried 90% of them",
            traffic.busiest.len()
        ),
    };
    format!(
        "traffic: {} over {measured}{open}{most}",
        human_bytes(traffic.bytes)
    )
}

/// Bytes in the units a person reads: 1.2 MB, 640 kB, 12 B (decimal).
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// With `--window`: what the verdicts judge, since the counts do not.
fn window_line(report: &Report) -> Option<String> {
    let window = report.window?;
    let width = crate::time::human_duration(std::time::Duration::from_nanos(window.width_nanos));
    Some(match window.since {
        Some(since) => format!(
            "verdicts judge what happened since {} (--window {width}); counts are since the start",
            humantime::format_rfc3339_seconds(since.to_system_time())
        ),
        None => format!("verdicts judge the last {width} at most (--window)"),
    })
}

fn render_services(report: &Report, colour: bool) -> String {
    let palette = Palette { colour };
    let mut out = String::new();
    if report.services.is_empty() {
        let filtered = report.counters.responses_filtered_out;
        if filtered > 0 {
            // Not "nothing seen": answers came, and -F left them out.
            let _ = writeln!(
                out,
                "no lookup with several backends matched the filter ({} left out by -F)",
                plural(filtered, "response", "responses")
            );
        } else {
            out.push_str("no lookup with several backends seen yet\n");
        }
        return out;
    }
    if let Some(line) = window_line(report) {
        let _ = writeln!(out, "{}\n", palette.dim(&line));
    }
    let mut client: Option<&Client> = None;
    for service in &report.services {
        if client != Some(&service.client) {
            if client.is_some() {
                out.push('\n');
            }
            client = Some(&service.client);
            let pids = if service.pids.is_empty() {
                String::new()
            } else {
                let pids: Vec<String> = service.pids.iter().map(u32::to_string).collect();
                let (word, more) = match (pids.len(), service.more_pids) {
                    (1, false) => ("pid", ""),
                    (_, false) => ("pids", ""),
                    (_, true) => ("pids", ", …"),
                };
                palette.dim(&format!("  {word} {}{more}", pids.join(", ")))
            };
            let _ = writeln!(
                out,
                "{}{pids}",
                palette.heading(&format!("client {}", service.client))
            );
        }
        render_service(&mut out, &palette, service);
    }
    out
}

fn render_service(out: &mut String, palette: &Palette, service: &Service) {
    let rows = &service.rows;
    let mut facts = vec![plural(service.connections, "connection", "connections")];
    if service.lookups > 0 {
        facts.push(plural(service.lookups, "lookup", "lookups"));
    }
    match (service.ttl_min_secs, service.ttl_max_secs) {
        (Some(lo), Some(hi)) if lo == hi => facts.push(format!("TTL {lo} s")),
        (Some(lo), Some(hi)) => facts.push(format!("TTL {lo}-{hi} s")),
        _ => {}
    }
    if !service.asked_as.is_empty() {
        let names: Vec<&str> = service.asked_as.iter().map(|n| &**n).collect();
        facts.push(format!("asked as {}", names.join(", ")));
    }
    let _ = writeln!(
        out,
        "  {}  {}",
        palette.heading(&service.name),
        palette.dim(&facts.join(", "))
    );

    let backends: Vec<String> = rows.iter().map(|r| backend_text(r.backend)).collect();
    let backend_width = backends.iter().map(String::len).max().unwrap_or(0).max(7);
    let srv = rows.iter().any(|r| r.srv.is_some());
    let mut header = format!(
        "    {:<backend_width$}  {:>5}  {:>5}  {:<share$}  {:>5}",
        "backend",
        "port",
        "conns",
        "share",
        "dns",
        share = BAR_WIDTH + 6
    );
    if srv {
        header.push_str("  prio/weight");
    }
    let _ = writeln!(out, "{}", palette.dim(&header));
    for (row, backend) in rows.iter().zip(&backends) {
        let port = row.port.map_or("?".to_string(), |p| p.to_string());
        let share = if service.connections == 0 {
            0.0
        } else {
            row.conns as f64 / service.connections as f64
        };
        let mut line = format!(
            "    {backend:<backend_width$}  {port:>5}  {:>5}  {:>4.0}% {}  {:>5}",
            row.conns,
            share * 100.0,
            bar(share),
            row.dns,
        );
        if let Some(p) = row.srv {
            let _ = write!(line, "  {}/{}", p.priority, p.weight);
        }
        let line = line.trim_end();
        // Attempts that failed, where any did: a busy backend that never
        // answers is the one to look at.
        let o = row.outcomes.unwrap_or_default();
        let failed = match (o.refused, o.unanswered) {
            (0, 0) => String::new(),
            (r, 0) => format!("  {r} refused"),
            (0, u) => format!("  {u} unanswered"),
            (r, u) => format!("  {r} refused, {u} unanswered"),
        };
        let _ = writeln!(
            out,
            "{}{}",
            if row.conns == 0 {
                palette.dim(line)
            } else {
                line.to_string()
            },
            if failed.is_empty() {
                failed
            } else {
                palette.bad(&failed)
            }
        );
    }
    for verdict in &service.verdicts {
        let mark = if verdict.ok {
            palette.good("✓")
        } else {
            palette.bad("✗")
        };
        let _ = writeln!(out, "    {mark} {}", verdict.text);
    }
}

fn backend_text(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// A bar of `BAR_WIDTH` cells for a share in 0..=1, in eighths.
fn bar(share: f64) -> String {
    let eighths = (share.clamp(0.0, 1.0) * (BAR_WIDTH * 8) as f64).round() as usize;
    let mut bar = "█".repeat(eighths / 8);
    if !eighths.is_multiple_of(8) {
        bar.push(BAR_EIGHTHS[eighths % 8]);
    }
    let cells = bar.chars().count();
    bar.extend(std::iter::repeat_n(' ', BAR_WIDTH - cells));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Behind a VIP: the name and VIP, each backend's share of the
    /// translated connections, and what was not translated; no "nothing
    /// seen" when that is all there is.
    #[test]
    fn connections_behind_a_vip_get_a_section_of_their_own() {
        let agg = crate::testing::behind_a_vip(
            "api.example",
            "10.96.0.10:80".parse().unwrap(),
            &[
                Some("10.244.1.1:8080"),
                Some("10.244.1.1:8080"),
                Some("10.244.1.2:8080"),
                None,
            ],
        );
        let text = render(&agg.report(), false);
        assert!(
            text.starts_with(
                "client 10.0.0.2 behind VIPs\n  api.example. via 10.96.0.10:80: 4 connections\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("    10.244.1.1:8080                               2    67% "),
            "{text}"
        );
        assert!(
            text.contains("    10.244.1.2:8080                               1    33% "),
            "{text}"
        );
        assert!(
            text.contains("    1 connection with no translation seen\n"),
            "{text}"
        );
        assert!(!text.contains("no lookup"), "{text}");
    }

    /// With bytes counted: each backend's beside its connections, and how
    /// few connections carried most of them.
    #[test]
    fn the_bytes_behind_a_vip_say_how_few_connections_carried_them() {
        let vip = "10.96.0.10:80".parse().unwrap();
        let mut agg = crate::testing::behind_a_vip(
            "api.example",
            vip,
            &[
                Some("10.244.1.1:8080"),
                Some("10.244.1.1:8080"),
                Some("10.244.1.2:8080"),
            ],
        );
        let text = render(&agg.report(), false);
        assert!(!text.contains("traffic"), "{text}");
        crate::testing::carried_behind_a_vip(&mut agg, vip, 0, (100, 900), false);
        crate::testing::carried_behind_a_vip(&mut agg, vip, 1, (1_000, 8_000), true);
        crate::testing::carried_behind_a_vip(&mut agg, vip, 2, (10, 90), false);
        let text = render(&agg.report(), false);
        assert!(
            text.contains("    10.244.1.1:8080                               2    67% ")
                && text.contains(" 10.0 kB\n"),
            "{text}"
        );
        let columns: Vec<usize> = text
            .lines()
            .filter(|l| l.ends_with('B'))
            .map(|l| l.chars().count())
            .collect();
        assert_eq!(columns.len(), 2, "{text}");
        assert_eq!(columns[0], columns[1], "the bytes line up: {text}");
        assert!(text.contains("     100 B\n"), "{text}");
        assert!(
            text.contains(
                "    traffic: 10.1 kB over 3 connections, 1 still open; 2 connections carried 90% of them\n"
            ),
            "{text}"
        );
        // The open one growing past nine tenths on its own.
        crate::testing::carried_behind_a_vip(&mut agg, vip, 1, (1_000, 98_000), true);
        let text = render(&agg.report(), false);
        assert!(
            text.contains(
                "    traffic: 100.1 kB over 3 connections, 1 still open; one connection, to 10.244.1.1:8080, carried 99% of them\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn bytes_read_in_decimal_units() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_000), "1.0 kB");
        assert_eq!(human_bytes(999_949), "999.9 kB");
        assert_eq!(human_bytes(999_950), "1.0 MB");
        assert_eq!(human_bytes(3_200_000_000), "3.2 GB");
    }

    /// A report whose answers `-F` all left out says so, not "nothing seen".
    #[test]
    fn an_empty_report_says_the_filter_left_answers_out() {
        let mut report = Report {
            services: Vec::new(),
            counters: crate::aggregator::Counters::default(),
            filter: None,
            left_out: crate::aggregator::LeftOut::default(),
            behind_vips: Vec::new(),
            window: None,
        };
        assert_eq!(
            render(&report, false),
            "no lookup with several backends seen yet\n"
        );
        report.counters.responses_filtered_out = 3;
        assert_eq!(
            render(&report, false),
            "no lookup with several backends matched the filter (3 responses left out by -F)\n"
        );
    }

    #[test]
    fn bars_fill_in_eighths() {
        assert_eq!(bar(0.0), " ".repeat(BAR_WIDTH));
        assert_eq!(bar(1.0), "█".repeat(BAR_WIDTH));
        assert_eq!(bar(0.5).trim_end(), "█".repeat(10));
        assert_eq!(bar(1.0 / 160.0).trim_end(), "▏");
        assert_eq!(bar(0.3125).trim_end(), "██████▎");
        for share in [0.0, 0.13, 0.5, 0.99, 1.0] {
            assert_eq!(bar(share).chars().count(), BAR_WIDTH);
        }
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(!colour_wanted(false));
        // NO_COLOR itself is exercised through the binary (tests/terminal.rs),
        // where the environment belongs to one process.
    }
}
