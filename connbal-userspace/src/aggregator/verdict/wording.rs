//! The English of every verdict, written from its structured finding in
//! this one place.

use super::statistics::SIGNIFICANCE;
use super::types::{Expectation, FailingBackend, Family, Incomplete, Judgement, StaleBackend};

/// The verdict's text for a person.
pub(super) fn text(judgement: &Judgement) -> String {
    match judgement {
        Judgement::NoConnections { backends } => format!(
            "no connection to any of the {} it was given",
            plural(*backends, "backend", "backends")
        ),
        Judgement::AllUsed {
            backends,
            priority,
            family,
        } => {
            let q = qualifier(*priority);
            let text = match backends {
                1 => format!("its one {q}backend got connections"),
                2 => format!("both {q}backends got connections"),
                _ => format!("all {backends} {q}backends got connections"),
            };
            within(text, *family)
        }
        Judgement::Unused {
            unused,
            backends,
            priority,
            family,
            judged,
            unused_choosable,
            certain,
            chance,
        } => {
            let head = format!(
                "{unused} of {backends} {}backends got no connection",
                qualifier(*priority)
            );
            let how_many = if *unused_choosable == 1 {
                "one".to_string()
            } else {
                format!("at least {unused_choosable}")
            };
            let over = plural(*judged, "connection", "connections");
            let odds = if *certain {
                format!("random choice over {over} always leaves {how_many} unused")
            } else {
                format!(
                    "random choice over {over} leaves {how_many} unused with chance {}",
                    percent_bound(*chance)
                )
            };
            let head = within(head, *family);
            let threshold = format!("{}%", SIGNIFICANCE * 100.0);
            if *chance >= SIGNIFICANCE {
                format!("{head}; plausible by chance (at least {threshold}): {odds}")
            } else {
                format!("{head}; not chance (below {threshold}): {odds}")
            }
        }
        Judgement::TooFewToJudge {
            connections,
            backends,
            family,
        } => within(
            format!(
                "{} over {backends} backends: too few to judge the spread",
                plural(*connections, "connection", "connections")
            ),
            *family,
        ),
        Judgement::Spread {
            family,
            expected,
            over_answers_in_force,
            min_share,
            max_share,
            in_force,
            judged,
            p_value,
        } => within(
            spread(
                *expected,
                *over_answers_in_force,
                (*min_share, *max_share),
                *in_force,
                *judged,
                *p_value,
            ),
            *family,
        ),
        Judgement::DoesNotReresolve {
            late_connections,
            late_max_secs,
            lookups,
            ttl,
        } => {
            let how = if *lookups <= 1 {
                "this client does not re-resolve".to_string()
            } else {
                format!("this client re-resolves too rarely ({lookups} lookups)")
            };
            format!(
                "{} up to {} after the answer expired ({}): {how}",
                plural(*late_connections, "connection", "connections"),
                duration(*late_max_secs),
                ttl_text(*ttl)
            )
        }
        Judgement::TtlUnknown { lookups } => format!(
            "{lookups} lookups, all through getaddrinfo, which gives no TTL: how often it re-resolves is not judged"
        ),
        Judgement::SingleLookup { ttl } => format!("1 lookup ({})", ttl_text(*ttl)),
        Judgement::HonoursTtl { lookups, ttl } => format!(
            "honours the TTL: {lookups} lookups, none before the previous answer expired ({})",
            ttl_text(*ttl)
        ),
        Judgement::ResolvesBeforeEveryConnection {
            lookups,
            within_ttl,
            connections,
            ttl,
        } => format!(
            "resolves before every connection: {lookups} lookups for {}, {within_ttl} of them within the {}",
            plural(*connections, "connection", "connections"),
            ttl_text(*ttl)
        ),
        Judgement::ReresolvesWithinTtl {
            lookups,
            within_ttl,
            connections,
            ttl,
        } => format!(
            "re-resolves within the TTL: {within_ttl} of {lookups} lookups came before the previous answer expired ({}), for {}",
            ttl_text(*ttl),
            plural(*connections, "connection", "connections")
        ),
        Judgement::ThroughLocalResolver {
            lookups,
            within_ttl,
            connections,
            server,
        } => format!(
            "{lookups} lookups for {}, {within_ttl} within the previous answer's TTL, all answered by the resolver on its own host {}: fine, that cache spares the upstream",
            plural(*connections, "connection", "connections"),
            if server.is_unspecified() {
                "without DNS (systemd-resolved over nss-resolve, or nscd)".to_string()
            } else {
                format!("at {server}")
            }
        ),
        Judgement::NoneStale { answer_sets } => format!(
            "{answer_sets} answer sets; no connection went to an address after the last answer holding it expired"
        ),
        Judgement::Stale { backends } => format!(
            "connections to addresses DNS no longer offers: {}",
            backends.iter().map(stale).collect::<Vec<_>>().join("; ")
        ),
        Judgement::PriorityHonoured {
            connections,
            best,
            one_level,
        } => {
            let detail = if *one_level {
                format!(" (all targets share priority {best})")
            } else {
                String::new()
            };
            let went = match connections {
                1 => "the connection went".to_string(),
                2 => "both connections went".to_string(),
                n => format!("all {n} connections went"),
            };
            format!("SRV priority honoured: {went} to priority-{best} targets{detail}")
        }
        Judgement::PriorityIgnored {
            outside,
            connections,
            best,
        } => format!(
            "SRV priority not honoured: {outside} of {connections} connections went to lower-preference targets than priority {best} (fine only if those were down)"
        ),
        Judgement::AllAnswered { attempts } => {
            if *attempts == 1 {
                "its one connection attempt was answered".to_string()
            } else {
                format!("all {attempts} connection attempts were answered")
            }
        }
        Judgement::Failing {
            backends,
            answered_elsewhere,
            none_answered,
        } => {
            let why = if *answered_elsewhere > 0 {
                format!(
                    "; the client reached the other backends {}, so part of their share is failover, not choice",
                    plural(*answered_elsewhere, "time", "times")
                )
            } else if *none_answered {
                "; no attempt was answered".to_string()
            } else {
                String::new()
            };
            let each: Vec<String> = backends.iter().map(failing).collect();
            format!("{}{why}", each.join("; "))
        }
        Judgement::FirstNotPreferred {
            to_first,
            connections,
            expected,
        } => format!(
            "no preference for the address listed first: {to_first} of {connections} connections went to it, random choice gives {expected:.1}"
        ),
        Judgement::TakesFirst {
            to_first,
            connections,
            expected,
            chance,
            firsts: (ever, least, most, backends),
            always_first,
        } => {
            let head = format!(
                "takes the address listed first: {to_first} of {connections} connections went to it, random choice gives {expected:.1} (chance {}, below {}%)",
                percent_bound(*chance),
                SIGNIFICANCE * 100.0
            );
            match always_first {
                Some(address) => format!(
                    "{head}; and the DNS server lists {address} first in every answer, so both are the cause: the server does not rotate its answers (CoreDNS without its loadbalance plugin), and the client takes the first"
                ),
                None if *ever > 1 => format!(
                    "{head}; the DNS server rotates its answers ({ever} of the {backends} backends came first, {least} to {most} times each), so the spread follows its rotation (a client that takes the first record, or getaddrinfo's RFC 6724 sorting among equals)"
                ),
                None => head,
            }
        }
        Judgement::Shared {
            connections,
            of,
            names,
        } => format!(
            "{connections} of {} went to addresses that {} also offered, unexpired; each counts here, the name looked up last",
            plural(*of, "connection", "connections"),
            names.join(", ")
        ),
    }
}

/// Why a verdict may be wrong, appended to its text.
pub(super) fn incomplete(why: Incomplete) -> String {
    match why {
        Incomplete::RecordsLost { records } => format!(
            "may be wrong: {} lost before they were counted (the ring buffer was full)",
            plural(records, "record was", "records were")
        ),
        Incomplete::TablesFull { entries } => format!(
            "may be wrong: {} refused or evicted by full tables",
            plural(entries, "entry was", "entries were")
        ),
        Incomplete::TraceBeganWithinTtl { secs } => format!(
            "may be wrong: the trace began {} before the first lookup seen, within its TTL, so an earlier answer may have been in force",
            duration(secs as f64)
        ),
    }
}

/// A dual-stack service judged within the one family its client used says
/// so: the other family's backends were not in the client's choice.
fn within(text: String, family: Option<Family>) -> String {
    match family {
        None => text,
        Some(Family::Ipv6) => {
            format!("{text} (IPv6 only, as RFC 6724 prefers; its IPv4 backends are not judged)")
        }
        Some(Family::Ipv4) => {
            format!("{text} (IPv4 only, the one family it used; its IPv6 backends are not judged)")
        }
    }
}

fn spread(
    expected: Expectation,
    over_answers_in_force: bool,
    (min_share, max_share): (f64, f64),
    in_force: Option<(u64, f64, f64)>,
    judged: Option<(u64, u64)>,
    p_value: f64,
) -> String {
    let against = match (expected, over_answers_in_force) {
        (Expectation::Uniform, false) => "random choice",
        (Expectation::SrvWeights, false) => "weighted random choice (SRV weights)",
        (Expectation::Uniform, true) => {
            "random choice among the addresses its latest answers held at each connection"
        }
        (Expectation::SrvWeights, true) => {
            "weighted random choice (SRV weights) among the targets its latest answers held at each connection"
        }
    };
    let mut shares = format!(
        "shares {:.0}% to {:.0}%",
        min_share * 100.0,
        max_share * 100.0
    );
    // The shares are of the connections judged, which the table's (of all
    // of the name's connections) are not when some fell outside.
    if let Some((judged, of)) = judged {
        shares = format!("{shares} of the {judged} of {of} connections judged");
    }
    if let Some((n, low, high)) = in_force {
        shares = format!(
            "{} to addresses its latest answers held, {shares} against {:.0}% to {:.0}% expected",
            plural(n, "connection", "connections"),
            low * 100.0,
            high * 100.0
        );
    }
    let threshold = SIGNIFICANCE;
    if p_value < SIGNIFICANCE {
        format!(
            "uneven: {shares}; {against} gives a spread this uneven with {}, below {threshold}",
            p_is(p_value)
        )
    } else {
        format!(
            "spread consistent with {against} ({shares}, {}, not below {threshold})",
            p_is(p_value)
        )
    }
}

fn stale(s: &StaleBackend) -> String {
    format!(
        "{}: {} up to {} after the last answer holding it expired",
        s.address,
        plural(s.connections, "connection", "connections"),
        duration(s.max_secs_after_expiry)
    )
}

fn failing(b: &FailingBackend) -> String {
    let how = match (b.refused, b.unanswered) {
        (r, 0) => format!("refused {r} of {}", b.tried),
        (0, u) => format!("left {u} of {} unanswered", b.tried),
        (r, u) => format!("refused {r} and left {u} unanswered of {}", b.tried),
    };
    let port = b.port.map_or_else(|| "?".to_string(), |p| p.to_string());
    match b.address {
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port} {how}"),
        std::net::IpAddr::V4(v4) => format!("{v4}:{port} {how}"),
    }
}

/// "priority-10 " while the SRV targets chosen among kept one priority.
fn qualifier(priority: Option<u16>) -> String {
    priority.map_or_else(String::new, |p| format!("priority-{p} "))
}

/// "1 connection", "2 connections": the one plural the report's text uses.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A chance as a percentage, and below 0.01% in scientific notation, so
/// that 6·10⁻⁶ and 10⁻³⁰ read differently.
fn percent_bound(p: f64) -> String {
    if p >= 0.0001 {
        format!("{:.2}%", p * 100.0)
    } else if p > 0.0 {
        format!("{p:.1e}")
    } else {
        "0".to_string()
    }
}

/// "p = 0.308", or "p < 0.001" below what three decimals show.
pub fn p_is(p: f64) -> String {
    if p < 0.001 {
        "p < 0.001".to_string()
    } else {
        format!("p = {p:.3}")
    }
}

fn ttl_text(ttl: Option<(u32, u32)>) -> String {
    match ttl {
        Some((lo, hi)) if lo == hi => format!("TTL {lo} s"),
        Some((lo, hi)) => format!("TTL {lo}-{hi} s"),
        None => "TTL unknown".to_string(),
    }
}

/// Seconds as every report writes a duration.
fn duration(secs: f64) -> String {
    crate::time::human_duration(std::time::Duration::from_secs_f64(secs.max(0.0)))
}
