//! OpenMetrics text for Prometheus (`connbal trace --metrics ADDR`), so a
//! fleet of connbal instances (a DaemonSet) is aggregated by Prometheus
//! rather than by connbal. The HTTP side is `trace::metrics_server`.
//!
//! This file is only the encoding: which families there are, their labels
//! and the cardinality fold are the metrics model's (`output::metrics`).
//! The exposition is rendered from the aggregator's report at scrape time,
//! by the trace loop that owns the aggregator: nothing is kept up to date
//! per packet.

use super::metrics::{self, Family, Kind, LabelValue, Labels, Value};
use crate::aggregator::Report;
use crate::tally::Tally;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family as Series;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

type FloatGauge = Gauge<f64, AtomicU64>;

/// The OpenMetrics text for `report` and for `input` (the input's own
/// counters: records read, the kernel program's), at most `max_series`
/// backend series and as many service series.
pub fn render(report: &Report, input: &dyn Tally, max_series: usize) -> String {
    encode(&metrics::model(report, input, max_series))
}

/// The families as OpenMetrics text, through prometheus-client's encoder
/// (names prefixed `connbal_`, counters suffixed `_total`, `# EOF`).
pub fn encode(families: &[Family]) -> String {
    let mut registry = Registry::with_prefix("connbal");
    for family in families {
        // A family of one unlabelled sample is a plain metric, as
        // prometheus-client writes those.
        let unlabelled = match &family.samples[..] {
            [only] if only.labels.is_empty() => Some(only.value),
            _ => None,
        };
        match (family.kind, unlabelled) {
            (Kind::Counter, Some(value)) => {
                let counter = Counter::<u64>::default();
                counter.inc_by(counter_value(value));
                registry.register(family.name, family.help, counter);
            }
            (Kind::Gauge, Some(value)) => {
                let gauge = Gauge::<i64>::default();
                gauge.set(gauge_value(value));
                registry.register(family.name, family.help, gauge);
            }
            (Kind::Counter, None) => registry.register(
                family.name,
                family.help,
                series(family, |c: &Counter, v| {
                    c.inc_by(counter_value(v));
                }),
            ),
            (Kind::Gauge, None) => registry.register(
                family.name,
                family.help,
                series(family, |g: &Gauge, v| {
                    g.set(gauge_value(v));
                }),
            ),
            (Kind::FloatGauge, Some(Value::FloatGauge(value))) => {
                let gauge = FloatGauge::default();
                gauge.set(value);
                registry.register(family.name, family.help, gauge);
            }
            (Kind::FloatGauge, _) => registry.register(
                family.name,
                family.help,
                series(family, |g: &FloatGauge, v| {
                    if let Value::FloatGauge(v) = v {
                        g.set(v);
                    }
                }),
            ),
        }
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("writing to a String cannot fail");
    text
}

impl prometheus_client::encoding::EncodeLabelValue for LabelValue {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        prometheus_client::encoding::EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// One series per sample of `family`, each given its value by `set`.
fn series<M: Default>(family: &Family, set: impl Fn(&M, Value)) -> Series<Labels, M> {
    let series = Series::<Labels, M>::default();
    for sample in &family.samples {
        set(&series.get_or_create(&sample.labels), sample.value);
    }
    series
}

fn counter_value(value: Value) -> u64 {
    match value {
        Value::Counter(v) => v,
        Value::Gauge(v) => u64::try_from(v).unwrap_or(0),
        // Never made: the model keeps each family to its kind.
        Value::FloatGauge(_) => 0,
    }
}

fn gauge_value(value: Value) -> i64 {
    match value {
        Value::Gauge(v) => v,
        Value::Counter(v) => i64::try_from(v).unwrap_or(i64::MAX),
        Value::FloatGauge(_) => 0,
    }
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
                ack: None,
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
            "connbal_connections_total{client=\"10.0.0.2\",server_address=\"10.1.0.1\",server_port=\"443\",dns_question_name=\"web.example.\"} 3\n"
        ), "{text}");
        assert!(text.contains(
            "connbal_dns_appearances_total{client=\"10.0.0.2\",server_address=\"10.1.0.2\",server_port=\"?\",dns_question_name=\"web.example.\"} 1\n"
        ));
        assert!(text.contains(
            "connbal_service_verdict_ok{client=\"10.0.0.2\",dns_question_name=\"web.example.\",check=\"unused_backends\"} 1\n"
        ), "{text}");
        assert!(text.contains(
            "connbal_service_backends_unused{client=\"10.0.0.2\",dns_question_name=\"web.example.\"} 1\n"
        ));
        assert!(text.contains("connbal_input_events_total{counter=\"kernel_records_lost\"} 0\n"));
        assert!(text.contains("connbal_input_events_total{counter=\"records\"} 7\n"));
        assert!(text.contains("connbal_aggregator_events_total{counter=\"responses_matched\"} 1\n"));
        assert!(text.contains("connbal_metrics_folded_series 0\n"));
        assert!(text.ends_with("# EOF\n"));
    }

    /// The shipped alerting rules (deploy/prometheus) read only series
    /// connbal writes: a renamed metric fails here, not silently in a
    /// fleet's Prometheus.
    #[test]
    fn every_series_the_alerting_rules_read_is_written() {
        let mut report = report_with(2, 3);
        for verdict in &mut report.services[0].verdicts {
            verdict.mark_incomplete(crate::aggregator::verdict::Incomplete::RecordsLost {
                records: 1,
            });
        }
        let input = Input {
            records: 7,
            kernel_records_lost: 1,
        };
        let text = render(&report, &input, 100);
        let rules = include_str!("../../../deploy/prometheus/connbal.rules.yml");
        let mut read = Vec::new();
        for (at, _) in rules.match_indices("connbal_") {
            let name: String = rules[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !read.contains(&name) {
                read.push(name);
            }
        }
        assert!(read.len() >= 3, "{read:?}");
        for name in &read {
            assert!(
                text.contains(&format!("\n{name}{{")) || text.contains(&format!("\n{name} ")),
                "the rules read {name}, which connbal does not write:\n{text}"
            );
        }
    }

    /// Behind a VIP: a series per backend the DNAT chose, and one for the
    /// connections whose translation was not seen.
    #[test]
    fn connections_behind_a_vip_are_series_per_backend() {
        let agg = crate::testing::behind_a_vip(
            "web.example",
            "10.1.0.1:80".parse().unwrap(),
            &[Some("10.244.1.1:8080"), Some("10.244.1.1:8080"), None],
        );
        let none = Input {
            records: 0,
            kernel_records_lost: 0,
        };
        let text = render(&agg.report(), &none, 100);
        let labels = "client=\"10.0.0.2\",dns_question_name=\"web.example.\",server_address=\"10.1.0.1\",server_port=\"80\"";
        for (peer, count) in [
            (
                "network_peer_address=\"10.244.1.1\",network_peer_port=\"8080\"",
                2,
            ),
            ("network_peer_address=\"untranslated\"", 1),
        ] {
            let line =
                format!("connbal_vip_backend_connections_total{{{labels},{peer}}} {count}\n");
            assert!(text.contains(&line), "{line}{text}");
        }
        // No bytes counted (replay): no bytes family at all.
        assert!(!text.contains("vip_backend_bytes"), "{text}");
    }

    /// Where host mode counted them, each backend's bytes behind the VIP.
    #[test]
    fn the_bytes_behind_a_vip_are_series_per_backend() {
        let vip = "10.1.0.1:80".parse().unwrap();
        let mut agg = crate::testing::behind_a_vip(
            "web.example",
            vip,
            &[Some("10.244.1.1:8080"), Some("10.244.1.2:8080"), None],
        );
        crate::testing::carried_behind_a_vip(&mut agg, vip, 0, (100, 900), false);
        let none = Input {
            records: 0,
            kernel_records_lost: 0,
        };
        let text = render(&agg.report(), &none, 100);
        let labels = "client=\"10.0.0.2\",dns_question_name=\"web.example.\",server_address=\"10.1.0.1\",server_port=\"80\"";
        for (pod, bytes) in [("10.244.1.1", 1_000), ("10.244.1.2", 0)] {
            let line = format!(
                "connbal_vip_backend_bytes_total{{{labels},network_peer_address=\"{pod}\",network_peer_port=\"8080\"}} {bytes}\n"
            );
            assert!(text.contains(&line), "{line}{text}");
        }
        assert!(
            !text.contains("connbal_vip_backend_bytes_total{client=\"10.0.0.2\",dns_question_name=\"web.example.\",server_address=\"10.1.0.1\",server_port=\"80\",network_peer_address=\"untranslated\""),
            "{text}"
        );
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
                ack: None,
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
            ack: None,
            first_of_flow: None,
            owner: None,
        }));
        let none = Input {
            records: 0,
            kernel_records_lost: 0,
        };
        let text = render(&agg.report(), &none, 100);
        let labels = "client=\"10.0.0.2\",server_address=\"10.1.0.1\",server_port=\"443\",dns_question_name=\"web.example.\"";
        for (outcome, count) in [("refused", 1), ("unanswered", 2)] {
            let line = format!(
                "connbal_connection_outcomes_total{{{labels},outcome=\"{outcome}\"}} {count}\n"
            );
            assert!(text.contains(&line), "{line}{text}");
        }
        assert!(!text.contains("outcome=\"answered\""), "{text}");
    }

    /// The owner a process `command` in cgroup `id` at `path` gives its
    /// socket.
    fn owner_in(id: u64, path: &str, command: &[u8]) -> Owner {
        let mut comm = [0u8; 16];
        comm[..command.len()].copy_from_slice(command);
        Owner {
            cgroup: crate::aggregator::cgroup(id, Some(path)),
            socket: id,
            process: Some(crate::aggregator::Process {
                tgid: 10,
                pid: 10,
                command: comm,
                netns_cookie: 1,
            }),
        }
    }

    /// `agg`'s exposition, with no input counters.
    fn exposition_of(agg: &Aggregator) -> String {
        let none = Input {
            records: 0,
            kernel_records_lost: 0,
        };
        render(&agg.report(), &none, 100)
    }

    #[test]
    fn owner_clients_get_app_and_container_labels() {
        let mut agg = Aggregator::new(Config {
            by: crate::aggregator::ClientBy::App,
            ..Config::default()
        });
        let id = "3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708";
        let owner = owner_in(5, &format!("/system.slice/docker-{id}.scope"), b"curl");
        lookup(&mut agg, 2, Some(&owner));
        let text = exposition_of(&agg);
        assert!(text.contains(
            "connbal_dns_appearances_total{client=\"curl in docker 3f2a1b4c5d6e\",server_address=\"10.1.0.1\",server_port=\"?\",dns_question_name=\"web.example.\",process_executable_name=\"curl\",container_name=\"3f2a1b4c5d6e\"} 1\n"
        ), "{text}");
        assert!(text.contains(
            "connbal_service_lookups_total{client=\"curl in docker 3f2a1b4c5d6e\",dns_question_name=\"web.example.\",process_executable_name=\"curl\",container_name=\"3f2a1b4c5d6e\"} 1\n"
        ), "{text}");

        // Once its runtime named the container, the labels carry the name.
        let container = owner.cgroup.workload.container.as_ref().unwrap();
        container
            .names
            .set(crate::aggregator::ContainerNames {
                runtime: "docker",
                shown: "shop-web-1".into(),
                name: "shop-web-1".into(),
                compose_service: Some("web".into()),
                ..Default::default()
            })
            .unwrap();
        let text = exposition_of(&agg);
        assert!(text.contains(
            "connbal_service_lookups_total{client=\"curl in docker shop-web-1\",dns_question_name=\"web.example.\",process_executable_name=\"curl\",container_name=\"shop-web-1\"} 1\n"
        ), "{text}");
        let json = serde_json::to_value(agg.report().services[0].client.info()).unwrap();
        assert_eq!(json["container_name"], "shop-web-1");
        assert_eq!(json["compose_service"], "web");
        assert_eq!(json["container"], id);
        assert!(json.get("compose_project").is_none(), "{json}");
    }

    /// A pod's container carries OTel's k8s labels from kubelet's; a
    /// client outside any container its cgroup's path.
    #[test]
    fn a_pods_client_gets_k8s_labels_and_a_plain_cgroup_its_path() {
        let mut agg = Aggregator::new(Config {
            by: crate::aggregator::ClientBy::App,
            ..Config::default()
        });
        let owner = |id: u64, path: &str| owner_in(id, path, b"java");
        let id = "3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708";
        let pod = owner(
            5,
            &format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope"),
        );
        pod.cgroup
            .workload
            .container
            .as_ref()
            .unwrap()
            .names
            .set(crate::aggregator::ContainerNames {
                runtime: "containerd",
                shown: "shop/web-5d9c/app".into(),
                name: "app".into(),
                pod_namespace: Some("shop".into()),
                pod_name: Some("web-5d9c".into()),
                pod_container: Some("app".into()),
                ..Default::default()
            })
            .unwrap();
        lookup(&mut agg, 2, Some(&pod));
        lookup(
            &mut agg,
            2,
            Some(&owner(6, "/system.slice/billing.service")),
        );
        let text = exposition_of(&agg);
        assert!(text.contains(
            "connbal_service_lookups_total{client=\"java in containerd shop/web-5d9c/app\",dns_question_name=\"web.example.\",process_executable_name=\"java\",container_name=\"shop/web-5d9c/app\",k8s_namespace_name=\"shop\",k8s_pod_name=\"web-5d9c\",k8s_container_name=\"app\"} 1\n"
        ), "{text}");
        assert!(text.contains(
            "connbal_service_lookups_total{client=\"java in /system.slice/billing.service\",dns_question_name=\"web.example.\",process_executable_name=\"java\",cgroup=\"/system.slice/billing.service\"} 1\n"
        ), "{text}");
    }

    /// Series lines: every line that is not a comment.
    fn series(text: &str) -> usize {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count()
    }

    #[test]
    fn the_cap_bounds_every_series_of_the_exposition_and_keeps_the_busiest() {
        // --metrics-max-series names the whole exposition's series: 10,000
        // used to give 138,087, the cap applying to one family at a time.
        let none = Input {
            records: 0,
            kernel_records_lost: 0,
        };
        let report = report_with(5, 4);
        let everything = render(&report, &none, usize::MAX);
        let total = series(&everything);
        assert!(everything.contains("connbal_metrics_folded_series 0\n"));
        // The counter families and the fold series are always written.
        let always = series(&render(&report, &none, 0));
        for max in [always, always + 5, total - 1, total] {
            let text = render(&report, &none, max);
            assert!(
                series(&text) <= max,
                "{max}: {} series\n{text}",
                series(&text)
            );
        }
        // One series short: the quietest row (two series, no connection)
        // is folded, and the busiest row and the service stay.
        let text = render(&report, &none, total - 1);
        assert!(text.contains("connbal_metrics_folded_series 1\n"), "{text}");
        assert!(
            text.contains("connbal_folded_connections_total 0\n"),
            "{text}"
        );
        assert!(
            text.contains("server_address=\"10.1.0.1\",server_port=\"443\""),
            "the busiest row stays: {text}"
        );
        assert!(text.contains("connbal_service_verdict_ok{"), "{text}");
        // Nothing but what is always written: the row and the service fold.
        let text = render(&report, &none, always);
        assert!(text.contains("connbal_metrics_folded_series 6\n"), "{text}");
        assert!(
            text.contains("connbal_folded_connections_total 4\n"),
            "{text}"
        );
    }

    /// A scrape builds a report of the busiest services only; its
    /// exposition must be the one the whole report gives, fold counts
    /// included, at every cap.
    #[test]
    fn a_scrape_of_the_busiest_services_reads_as_one_of_the_whole_report() {
        let mut agg = Aggregator::new(Config::default());
        let server: SocketAddr = "10.0.0.53:53".parse().unwrap();
        let ts = Timestamp::from_secs(100);
        let mut seq = 0u32;
        for service in 0u8..30 {
            // Three clients, names of two to five backends, and connection
            // counts with ties, so that the ranking's tie order matters.
            let client: SocketAddr = format!("10.0.0.{}:40000", 2 + service % 3).parse().unwrap();
            let name = format!("n{service}.example");
            let backends = 2 + service % 4;
            let id = u16::from(service);
            let query = MessageBuilder::new(id, false, [1, 0, 0, 0])
                .question(&name, TYPE_A)
                .build();
            let mut answer = MessageBuilder::new(id, true, [1, u16::from(backends), 0, 0]);
            answer.question(&name, TYPE_A);
            for b in 0..backends {
                answer.a(&name, [10, 2, service, b + 1]);
            }
            let answer = answer.build();
            crate::testing::exchange(&mut agg, ts, (client, server), (&query, &answer));
            for attempt in 0..u32::from(service % 7) {
                seq += 1;
                agg.process(&Event::Tcp(Segment {
                    ts,
                    src: client,
                    dst: SocketAddr::from(([10, 2, service, 1 + (attempt % 2) as u8], 443)),
                    flags: connbal_common::tcp_flags::SYN,
                    seq,
                    payload: &[],
                    truncated: false,
                    ack: None,
                    first_of_flow: None,
                    owner: None,
                }));
            }
        }
        let none = Input {
            records: 0,
            kernel_records_lost: 0,
        };
        let whole = agg.report();
        let total = series(&render(&whole, &none, usize::MAX));
        let mut left_out_somewhere = false;
        for max in (0..=total + 6).step_by(3) {
            let busiest = agg.report_busiest(crate::output::metrics::services_that_fit(max));
            left_out_somewhere |= busiest.left_out.services > 0;
            // prometheus-client writes a family's series in hash order.
            let lines = |report| {
                let mut lines: Vec<String> = render(report, &none, max)
                    .lines()
                    .map(str::to_string)
                    .collect();
                lines.sort();
                lines
            };
            assert_eq!(lines(&busiest), lines(&whole), "max {max}");
        }
        assert!(left_out_somewhere, "no cap left a service out");
    }
}
