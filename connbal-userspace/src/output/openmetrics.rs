//! OpenMetrics text for Prometheus (`connbal trace --metrics ADDR`), so a
//! fleet of connbal instances (a DaemonSet) is aggregated by Prometheus
//! rather than by connbal. The HTTP side is `trace::metrics_server`.
//!
//! The exposition is rendered from the aggregator's report at scrape time,
//! by the trace loop that owns the aggregator: nothing is kept up to date
//! per packet. Label cardinality is capped: past `max_series` the rows with
//! the fewest connections are folded into one counter, and how many were
//! folded is itself a metric.

use crate::aggregator::verdict::Check;
use crate::aggregator::{Client, Report, Row, Service};
use crate::tally::Tally;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

pub const DEFAULT_MAX_SERIES: usize = 10_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    client: String,
    backend: String,
    port: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    client: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    client: String,
    name: String,
    check: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CounterLabels {
    counter: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// For an owner client, `app` (its command) and `container` (the
/// container's short id, or else the cgroup path): labels to aggregate a
/// fleet by, bounded by the same series cap. None for a client known by
/// address, whose series stay as they were.
type OwnerLabels = Vec<(&'static str, String)>;

fn owner_labels(client: &Client) -> OwnerLabels {
    if !client.is_owner() {
        return Vec::new();
    }
    let container = match &client.workload().container {
        Some(container) => container.short_id().to_string(),
        None => client.cgroup_path().unwrap_or_default(),
    };
    vec![
        ("app", client.command().unwrap_or_default()),
        ("container", container),
    ]
}

/// The OpenMetrics text for `report` and for `input` (the input's own
/// counters: records read, the kernel program's), at most `max_series`
/// backend series and as many service series.
pub fn render(report: &Report, input: &dyn Tally, max_series: usize) -> String {
    let mut registry = Registry::with_prefix("connbal");
    let connections = Family::<(BackendLabels, OwnerLabels), Counter>::default();
    let appearances = Family::<(BackendLabels, OwnerLabels), Counter>::default();
    let outcomes = Family::<((BackendLabels, OutcomeLabel), OwnerLabels), Counter>::default();
    let folded = Gauge::<i64>::default();
    let folded_connections = Counter::<u64>::default();

    // Keep the busiest rows when there are too many.
    let mut rows: Vec<&Row> = report.rows().collect();
    rows.sort_by(|a, b| b.conns.cmp(&a.conns).then_with(|| a.report_order(b)));
    let mut folded_series = 0i64;
    for (i, row) in rows.iter().enumerate() {
        if i >= max_series {
            folded_series += 1;
            folded_connections.inc_by(row.conns);
            continue;
        }
        let labels = (
            BackendLabels {
                client: row.client.to_string(),
                backend: row.backend.to_string(),
                port: row.port.map_or("?".to_string(), |p| p.to_string()),
                name: row.name.to_string(),
            },
            owner_labels(&row.client),
        );
        connections.get_or_create(&labels).inc_by(row.conns);
        appearances.get_or_create(&labels).inc_by(row.dns);
        let o = row.outcomes.unwrap_or_default();
        for (outcome, count) in [
            ("answered", o.answered),
            ("refused", o.refused),
            ("unanswered", o.unanswered),
        ] {
            if count > 0 {
                let (backend, owner) = labels.clone();
                let outcome = OutcomeLabel { outcome };
                outcomes
                    .get_or_create(&((backend, outcome), owner))
                    .inc_by(count);
            }
        }
    }

    let lookups = Family::<(ServiceLabels, OwnerLabels), Counter>::default();
    let lookups_within_ttl = Family::<(ServiceLabels, OwnerLabels), Counter>::default();
    let after_expiry = Family::<(ServiceLabels, OwnerLabels), Counter>::default();
    let stale = Family::<(ServiceLabels, OwnerLabels), Counter>::default();
    let backends = Family::<(ServiceLabels, OwnerLabels), Gauge>::default();
    let unused = Family::<(ServiceLabels, OwnerLabels), Gauge>::default();
    let p_value = Family::<(ServiceLabels, OwnerLabels), FloatGauge>::default();
    let verdict_ok = Family::<(VerdictLabels, OwnerLabels), Gauge>::default();
    // Busiest first here too, so the cap folds the quietest names.
    let mut services: Vec<&Service> = report.services.iter().collect();
    services.sort_by_key(|s| std::cmp::Reverse(s.connections));
    for (i, service) in services.into_iter().enumerate() {
        if i >= max_series {
            folded_series += 1;
            continue;
        }
        let owner = owner_labels(&service.client);
        let labels = (
            ServiceLabels {
                client: service.client.to_string(),
                name: service.name.to_string(),
            },
            owner.clone(),
        );
        lookups.get_or_create(&labels).inc_by(service.lookups);
        lookups_within_ttl
            .get_or_create(&labels)
            .inc_by(service.lookups_within_ttl);
        after_expiry
            .get_or_create(&labels)
            .inc_by(service.connections_after_expiry);
        stale
            .get_or_create(&labels)
            .inc_by(service.stale_backends.iter().map(|b| b.connections).sum());
        backends
            .get_or_create(&labels)
            .set(to_i64(service.backends));
        unused
            .get_or_create(&labels)
            .set(to_i64(service.backends - service.backends_used));
        if let Some(balance) = &service.balance {
            p_value.get_or_create(&labels).set(balance.p_value);
        }
        for verdict in &service.verdicts {
            verdict_ok
                .get_or_create(&(
                    VerdictLabels {
                        client: labels.0.client.clone(),
                        name: labels.0.name.clone(),
                        check: Check::name(verdict.check).to_string(),
                    },
                    owner.clone(),
                ))
                .set(i64::from(verdict.ok));
        }
    }
    folded.set(folded_series);

    let aggregator_counters = counter_family(&report.counters);
    let input_counters = counter_family(input);

    registry.register(
        "connections",
        "Connection attempts from a client to a backend and port it got from DNS",
        connections,
    );
    registry.register(
        "connection_outcomes",
        "What connection attempts came to: answered (SYN-ACK), refused (reset) or unanswered",
        outcomes,
    );
    registry.register(
        "dns_appearances",
        "Times the backend (and port, for SRV) appeared in DNS answers to the client",
        appearances,
    );
    registry.register(
        "service_lookups",
        "Lookups of the name by the client (its most-asked question)",
        lookups,
    );
    registry.register(
        "service_lookups_within_ttl",
        "Lookups made before the previous answer's TTL ran out",
        lookups_within_ttl,
    );
    registry.register(
        "service_connections_after_expiry",
        "Connection attempts made after the whole answer in force expired, with no new lookup",
        after_expiry,
    );
    registry.register(
        "service_stale_connections",
        "Connection attempts to addresses DNS no longer offered, after the last answer holding them expired",
        stale,
    );
    registry.register(
        "service_backends",
        "Backends DNS gave the client for the name",
        backends,
    );
    registry.register(
        "service_backends_unused",
        "Backends of the name that got no connection from the client",
        unused,
    );
    registry.register(
        "service_balance_p_value",
        "Probability of a spread this uneven under random choice (present when judged)",
        p_value,
    );
    registry.register(
        "service_verdict_ok",
        "1 when the check found nothing worth attention, 0 otherwise",
        verdict_ok,
    );
    registry.register(
        "metrics_folded_series",
        "Backend and service series left out of this scrape by the cardinality cap",
        folded,
    );
    registry.register(
        "folded_connections",
        "Connections counted in backend series left out by the cardinality cap",
        folded_connections,
    );
    registry.register(
        "aggregator_events",
        "What the aggregator saw, skipped, evicted or dropped, by counter",
        aggregator_counters,
    );
    registry.register(
        "input_events",
        "Records read, and the kernel program's counters (packets seen, records lost), by counter",
        input_counters,
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("writing to a String cannot fail");
    text
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One series per counter of `tally`, labelled with its name.
fn counter_family(tally: &dyn Tally) -> Family<CounterLabels, Counter> {
    let family = Family::<CounterLabels, Counter>::default();
    tally.for_each_counter(&mut |name, value| {
        family
            .get_or_create(&CounterLabels {
                counter: name.to_string(),
            })
            .inc_by(value);
    });
    family
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregator::dns::TYPE_A;
    use crate::aggregator::Owner;
    use crate::aggregator::{Aggregator, Config, Datagram, Event, Segment, Timestamp};
    use crate::tally::counter_set;
    use crate::testing::MessageBuilder;
    use std::net::SocketAddr;

    const CLIENT: &str = "10.0.0.2:40000";

    /// A lookup of web.example. answered with `backends` addresses
    /// (10.1.0.1, …), both packets on a socket of `owner`.
    fn lookup(agg: &mut Aggregator, backends: u8, owner: Option<&Owner>) {
        let client: SocketAddr = CLIENT.parse().unwrap();
        let server: SocketAddr = "10.0.0.53:53".parse().unwrap();
        let query = MessageBuilder::new(1, false, [1, 0, 0, 0])
            .question("web.example", TYPE_A)
            .build();
        let mut answer = MessageBuilder::new(1, true, [1, u16::from(backends), 0, 0]);
        answer.question("web.example", TYPE_A);
        for b in 0..backends {
            answer.a("web.example", [10, 1, 0, b + 1]);
        }
        let answer = answer.build();
        let ts = Timestamp::from_secs(100);
        for (src, dst, payload) in [(client, server, &query), (server, client, &answer)] {
            agg.process(&Event::Udp(Datagram {
                ts,
                src,
                dst,
                payload,
                truncated: false,
                owner,
            }));
        }
    }

    fn report_with(backends: u8, connections_to_first: u64) -> Report {
        let mut agg = Aggregator::new(Config::default());
        lookup(&mut agg, backends, None);
        for attempt in 0..connections_to_first {
            agg.process(&Event::Tcp(Segment {
                ts: Timestamp::from_secs(100),
                src: CLIENT.parse().unwrap(),
                dst: "10.1.0.1:443".parse().unwrap(),
                flags: connbal_common::tcp_flags::SYN,
                // Distinct attempts: a repeated SYN would count once.
                seq: attempt as u32,
                payload: &[],
                truncated: false,
                first_of_flow: None,
                owner: None,
            }));
        }
        agg.report()
    }

    counter_set! {
        pub struct Input {
            pub records: u64,
            pub kernel_records_lost: u64,
        }
    }

    #[test]
    fn series_carry_the_report_and_verdicts() {
        let input = Input {
            records: 7,
            kernel_records_lost: 0,
        };
        let text = render(&report_with(2, 3), &input, 100);
        assert!(text.contains(
            "connbal_connections_total{client=\"10.0.0.2\",backend=\"10.1.0.1\",port=\"443\",name=\"web.example.\"} 3\n"
        ), "{text}");
        assert!(text.contains(
            "connbal_dns_appearances_total{client=\"10.0.0.2\",backend=\"10.1.0.2\",port=\"?\",name=\"web.example.\"} 1\n"
        ));
        assert!(text.contains(
            "connbal_service_verdict_ok{client=\"10.0.0.2\",name=\"web.example.\",check=\"unused_backends\"} 1\n"
        ), "{text}");
        assert!(text.contains(
            "connbal_service_backends_unused{client=\"10.0.0.2\",name=\"web.example.\"} 1\n"
        ));
        assert!(text.contains("connbal_input_events_total{counter=\"kernel_records_lost\"} 0\n"));
        assert!(text.contains("connbal_input_events_total{counter=\"records\"} 7\n"));
        assert!(text.contains("connbal_aggregator_events_total{counter=\"responses_matched\"} 1\n"));
        assert!(text.contains("connbal_metrics_folded_series 0\n"));
        assert!(text.ends_with("# EOF\n"));
    }

    /// Outcomes per backend: the three attempts share a 4-tuple (each a
    /// new ISN); the reset settles the latest, the other two stay
    /// unanswered.
    #[test]
    fn attempt_outcomes_are_series_per_backend() {
        let mut agg = Aggregator::new(Config::default());
        lookup(&mut agg, 2, None);
        for seq in 0..3 {
            agg.process(&Event::Tcp(Segment {
                ts: Timestamp::from_secs(100),
                src: CLIENT.parse().unwrap(),
                dst: "10.1.0.1:443".parse().unwrap(),
                flags: connbal_common::tcp_flags::SYN,
                seq,
                payload: &[],
                truncated: false,
                first_of_flow: None,
                owner: None,
            }));
        }
        agg.process(&Event::Tcp(Segment {
            ts: Timestamp::from_secs(100),
            src: "10.1.0.1:443".parse().unwrap(),
            dst: CLIENT.parse().unwrap(),
            flags: connbal_common::tcp_flags::RST | connbal_common::tcp_flags::ACK,
            seq: 0,
            payload: &[],
            truncated: false,
            first_of_flow: None,
            owner: None,
        }));
        let none = Input {
            records: 0,
            kernel_records_lost: 0,
        };
        let text = render(&agg.report(), &none, 100);
        let labels = "client=\"10.0.0.2\",backend=\"10.1.0.1\",port=\"443\",name=\"web.example.\"";
        for (outcome, count) in [("refused", 1), ("unanswered", 2)] {
            let line = format!(
                "connbal_connection_outcomes_total{{{labels},outcome=\"{outcome}\"}} {count}\n"
            );
            assert!(text.contains(&line), "{line}{text}");
        }
        assert!(!text.contains("outcome=\"answered\""), "{text}");
    }

    #[test]
    fn owner_clients_get_app_and_container_labels() {
        use crate::aggregator::{cgroup, ClientBy, Process};
        let mut agg = Aggregator::new(Config {
            by: ClientBy::App,
            ..Config::default()
        });
        let mut command = [0u8; 16];
        command[..4].copy_from_slice(b"curl");
        let id = "3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708";
        let path = format!("/system.slice/docker-{id}.scope");
        let owner = Owner {
            cgroup: cgroup(5, Some(&path)),
            socket: 1,
            process: Some(Process {
                tgid: 10,
                pid: 10,
                command,
                netns_cookie: 1,
            }),
        };
        lookup(&mut agg, 2, Some(&owner));
        let none = Input {
            records: 0,
            kernel_records_lost: 0,
        };
        let text = render(&agg.report(), &none, 100);
        assert!(text.contains(
            "connbal_dns_appearances_total{client=\"curl in docker 3f2a1b4c5d6e\",backend=\"10.1.0.1\",port=\"?\",name=\"web.example.\",app=\"curl\",container=\"3f2a1b4c5d6e\"} 1\n"
        ), "{text}");
        assert!(text.contains(
            "connbal_service_lookups_total{client=\"curl in docker 3f2a1b4c5d6e\",name=\"web.example.\",app=\"curl\",container=\"3f2a1b4c5d6e\"} 1\n"
        ), "{text}");
    }

    #[test]
    fn the_cardinality_cap_keeps_the_busiest_rows_and_counts_the_rest() {
        let none = Input {
            records: 0,
            kernel_records_lost: 0,
        };
        let text = render(&report_with(5, 4), &none, 1);
        let series = text
            .lines()
            .filter(|l| l.starts_with("connbal_connections_total{"))
            .count();
        assert_eq!(series, 1, "{text}");
        assert!(
            text.contains("backend=\"10.1.0.1\",port=\"443\""),
            "the busiest row stays"
        );
        // 4 backend rows folded; the one service fits.
        assert!(text.contains("connbal_metrics_folded_series 4\n"), "{text}");
        assert!(text.contains("connbal_folded_connections_total 0\n"));
    }
}
