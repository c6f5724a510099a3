//! The metrics model: which families connbal exports, their labels, and the
//! cardinality fold, decided once from a report. Encoders (`openmetrics`
//! today; an OTLP exporter would be another) only write it out, so that a
//! second exporter is an encoder, not a copy (Inspektor Gadget's
//! otel-metrics operator is the model).
//!
//! Label cardinality is capped: past `max_series` the rows with the fewest
//! connections are folded into one counter, and how many were folded is
//! itself a metric.

use crate::aggregator::verdict::Check;
use crate::aggregator::{Client, Report, Row, Service};
use crate::tally::Tally;
use std::collections::HashMap;
use std::sync::Arc;

pub const DEFAULT_MAX_SERIES: usize = 10_000;

/// Label names: OpenTelemetry's semantic conventions in Prometheus form
/// (dots to underscores) where one exists, so that connbal's series join
/// those of other OTel-named exporters (Beyla's, the collector's k8s
/// attributes) on the same names.
pub mod label {
    /// connbal's client: an address, or an owner as `--by` groups it. No
    /// convention names this.
    pub const CLIENT: &str = "client";
    /// `dns.question.name`: the name credited, the question's own or the
    /// canonical name its CNAMEs led to (`connbal_service_asked_as` maps
    /// the names asked to it).
    pub const NAME: &str = "dns_question_name";
    /// `server.address` and `server.port`: the backend DNS gave and the
    /// client connected to (behind a VIP, the VIP).
    pub const SERVER_ADDRESS: &str = "server_address";
    pub const SERVER_PORT: &str = "server_port";
    /// `network.peer.address` and `.port`: where a DNAT sent a connection
    /// to a VIP, the peer the packets then reached.
    pub const PEER_ADDRESS: &str = "network_peer_address";
    pub const PEER_PORT: &str = "network_peer_port";
    /// `process.executable.name`: the owner's command.
    pub const EXECUTABLE: &str = "process_executable_name";
    /// `container.name`: as the runtime's API names it, or its short id.
    pub const CONTAINER: &str = "container_name";
    /// `k8s.namespace.name`, `k8s.pod.name`, `k8s.container.name`, from
    /// the labels kubelet sets on each container.
    pub const K8S_NAMESPACE: &str = "k8s_namespace_name";
    pub const K8S_POD: &str = "k8s_pod_name";
    pub const K8S_CONTAINER: &str = "k8s_container_name";
    /// A client outside any container: its cgroup's path. No convention
    /// names this.
    pub const CGROUP: &str = "cgroup";
}

/// Label names and values, in the order they are written.
pub type Labels = Vec<(&'static str, LabelValue)>;

/// A label's value: a word connbal writes (a check, an outcome) or text
/// shared by every sample of one client, service or row. A scrape that
/// shows every series held each label's text once per sample, twice over
/// (here and in the encoder's registry): 1.5 KB a series at the heap peak
/// of a churning node's agent (BENCHMARKS.md, workload churn). Shared, a
/// client's name is one string however many series carry it.
#[derive(Clone, Debug, Eq)]
pub enum LabelValue {
    Fixed(&'static str),
    Shared(Arc<str>),
}

impl LabelValue {
    pub fn as_str(&self) -> &str {
        match self {
            LabelValue::Fixed(text) => text,
            LabelValue::Shared(text) => text,
        }
    }
}

/// By text, whichever kind holds it.
impl PartialEq for LabelValue {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl std::hash::Hash for LabelValue {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl From<String> for LabelValue {
    fn from(text: String) -> Self {
        LabelValue::Shared(Arc::from(text))
    }
}

impl From<&Arc<str>> for LabelValue {
    fn from(text: &Arc<str>) -> Self {
        LabelValue::Shared(Arc::clone(text))
    }
}

impl From<&'static str> for LabelValue {
    fn from(text: &'static str) -> Self {
        LabelValue::Fixed(text)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    FloatGauge,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// Monotonic since the start of the trace.
    Counter(u64),
    Gauge(i64),
    FloatGauge(f64),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub value: Value,
}

/// One metric family: its name without the `connbal_` prefix (and, for
/// counters, without the `_total` suffix that encoders add), its help,
/// and its samples, all of its kind.
#[derive(Clone, Debug)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<Sample>,
    /// Where each label set's sample is, so that adding stays O(1).
    index: HashMap<Labels, usize>,
}

impl Family {
    fn new(kind: Kind, name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            kind,
            samples: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Adds `value` to the series of `labels`: counters sum (two clients
    /// may print alike), gauges take the latest.
    fn add(&mut self, labels: Labels, value: Value) {
        if let Some(&at) = self.index.get(&labels) {
            let sample = &mut self.samples[at];
            sample.value = match (sample.value, value) {
                (Value::Counter(a), Value::Counter(b)) => Value::Counter(a.saturating_add(b)),
                (_, latest) => latest,
            }
        } else {
            self.index.insert(labels.clone(), self.samples.len());
            self.samples.push(Sample { labels, value });
        }
    }
}

/// Every family of one exposition, in the order they are written.
/// The fewest series a service costs in [`model`].
const SERVICE_SERIES_AT_LEAST: usize = 6;

/// More services than [`model`] can show under `max_series`: a scrape's
/// report needs no more (`Aggregator::report_busiest`). Each costs at least
/// SERVICE_SERIES_AT_LEAST series, so the busiest this many cannot all
/// fit, and once one does not, every later service and every row is
/// folded: leaving out the rest changes nothing but the fold counts,
/// which the report's `left_out` supplies.
pub fn services_that_fit(max_series: usize) -> usize {
    max_series / SERVICE_SERIES_AT_LEAST + 1
}

pub fn model(report: &Report, input: &dyn Tally, max_series: usize) -> Vec<Family> {
    let mut connections = Family::new(
        Kind::Counter,
        "connections",
        "Connection attempts from a client to a backend and port it got from DNS",
    );
    let mut outcomes = Family::new(
        Kind::Counter,
        "connection_outcomes",
        "What connection attempts came to: answered (SYN-ACK), refused (reset) or unanswered",
    );
    let mut appearances = Family::new(
        Kind::Counter,
        "dns_appearances",
        "Times the backend (and port, for SRV) appeared in DNS answers to the client",
    );
    let mut lookups = Family::new(
        Kind::Counter,
        "service_lookups",
        "Lookups of the name by the client (its most-asked question)",
    );
    let mut lookups_within_ttl = Family::new(
        Kind::Counter,
        "service_lookups_within_ttl",
        "Lookups made before the previous answer's TTL ran out",
    );
    let mut after_expiry = Family::new(
        Kind::Counter,
        "service_connections_after_expiry",
        "Connection attempts made after the whole answer in force expired, with no new lookup",
    );
    let mut stale = Family::new(
        Kind::Counter,
        "service_stale_connections",
        "Connection attempts to addresses DNS no longer offered, after the last answer holding them expired",
    );
    let mut backends = Family::new(
        Kind::Gauge,
        "service_backends",
        "Backends DNS gave the client for the name",
    );
    let mut unused = Family::new(
        Kind::Gauge,
        "service_backends_unused",
        "Backends of the name that got no connection from the client",
    );
    let mut p_value = Family::new(
        Kind::FloatGauge,
        "service_balance_p_value",
        "Probability of a spread this uneven under random choice (present when judged)",
    );
    let mut verdict_ok = Family::new(
        Kind::Gauge,
        "service_verdict_ok",
        "1 when the check found nothing worth attention, 0 otherwise",
    );
    let mut verdict_incomplete = Family::new(
        Kind::Gauge,
        "service_verdict_incomplete",
        "Present (1) for a verdict judged from input that may miss something (records lost, full tables, a trace begun within the TTL): alerts leave these out",
    );
    let mut cell_connections = Family::new(
        Kind::Gauge,
        "service_balance_connections",
        "Connections the balance test judged, per backend random choice could pick (a cell of its chi-square; sum a fleet's per backend)",
    );
    let mut cell_expected = Family::new(
        Kind::FloatGauge,
        "service_balance_expected_connections",
        "Connections random choice over the answers in force would have given the backend (a cell of the balance test's chi-square; sum a fleet's per backend)",
    );
    let mut asked_as = Family::new(
        Kind::Gauge,
        "service_asked_as",
        "1 for each name the client asked (asked) that CNAMEs answered with the name credited (dns_question_name)",
    );
    // The cap counts every series of the exposition. The counter families
    // and the two fold series are always written; the rest of the budget
    // goes to the busiest services first (their verdicts are what alerts
    // read), then to the busiest backend rows. Past it, what does not fit
    // is folded and counted.
    let aggregator_events = counter_family(
        "aggregator_events",
        "What the aggregator saw, skipped, evicted or dropped, by counter",
        &report.counters,
    );
    let input_events = counter_family(
        "input_events",
        "Records read, and the kernel program's counters (packets seen, records lost), by counter",
        input,
    );
    let mut build_info = Family::new(
        Kind::Gauge,
        "build_info",
        "1, labelled with the version of connbal that writes these series",
    );
    build_info.add(
        vec![("version", env!("CARGO_PKG_VERSION").into())],
        Value::Gauge(1),
    );
    let mut window_start = Family::new(
        Kind::FloatGauge,
        "verdict_window_start_timestamp_seconds",
        "With --window: when the time the verdicts, balance cells and unused backends judge began (the counters are since the start)",
    );
    if let Some(since) = report.window.and_then(|w| w.since) {
        window_start.add(Vec::new(), Value::FloatGauge(since.0 as f64 / 1e9));
    }
    // The counters, the two fold series, build_info and the window.
    let always = aggregator_events.samples.len()
        + input_events.samples.len()
        + 3
        + window_start.samples.len();
    let mut budget = max_series.saturating_sub(always);
    // Services the report left out could not have fitted (see
    // `services_that_fit`), nor could any row once a service did not.
    let left_out = report.left_out;
    let mut folded_connections = left_out.connections;
    let mut folded_series =
        to_i64(u64::try_from(left_out.services + left_out.rows).unwrap_or(u64::MAX));
    let mut full = false;
    let mut clients = ClientLabels::default();
    let mut services: Vec<&Service> = report.services.iter().collect();
    services.sort_by_key(|s| std::cmp::Reverse(s.connections));
    for service in services {
        let cost = SERVICE_SERIES_AT_LEAST
            + usize::from(service.balance.is_some())
            + service.verdicts.len()
            + service.verdicts.iter().filter(|v| !v.complete).count()
            + service.asked_as.len()
            + 2 * service.balance_cells.len();
        if full || cost > budget {
            full = true;
            folded_series += 1;
            continue;
        }
        budget -= cost;
        let (client, owner) = clients.of(&service.client);
        let labels = joined(
            &[
                (label::CLIENT, client),
                (label::NAME, (&service.name).into()),
            ],
            &[],
            &owner,
        );
        lookups.add(labels.clone(), Value::Counter(service.lookups));
        lookups_within_ttl.add(labels.clone(), Value::Counter(service.lookups_within_ttl));
        after_expiry.add(
            labels.clone(),
            Value::Counter(service.connections_after_expiry),
        );
        let stale_connections = service.stale_backends.iter().map(|b| b.connections).sum();
        stale.add(labels.clone(), Value::Counter(stale_connections));
        backends.add(labels.clone(), Value::Gauge(to_i64(service.backends)));
        unused.add(
            labels.clone(),
            Value::Gauge(to_i64(service.backends - service.backends_used)),
        );
        if let Some(balance) = &service.balance {
            p_value.add(labels.clone(), Value::FloatGauge(balance.p_value));
        }
        for cell in &service.balance_cells {
            let backend = [(label::SERVER_ADDRESS, cell.backend.to_string().into())];
            let labels = joined(&labels[..2], &backend, &owner);
            cell_connections.add(labels.clone(), Value::Gauge(to_i64(cell.connections)));
            cell_expected.add(labels, Value::FloatGauge(cell.expected));
        }
        for asked in &service.asked_as {
            let asked = [("asked", asked.into())];
            asked_as.add(joined(&labels[..2], &asked, &owner), Value::Gauge(1));
        }
        for verdict in &service.verdicts {
            let check = [("check", Check::name(verdict.check).into())];
            verdict_ok.add(
                joined(&labels[..2], &check, &owner),
                Value::Gauge(i64::from(verdict.ok)),
            );
            if !verdict.complete {
                verdict_incomplete.add(joined(&labels[..2], &check, &owner), Value::Gauge(1));
            }
        }
    }

    // Keep the busiest rows when there are too many.
    let mut rows: Vec<&Row> = report.rows().collect();
    rows.sort_by(|a, b| b.conns.cmp(&a.conns).then_with(|| a.report_order(b)));
    for row in rows {
        let o = row.outcomes.unwrap_or_default();
        let cost = 2 + [o.answered, o.refused, o.unanswered]
            .iter()
            .filter(|&&n| n > 0)
            .count();
        if full || cost > budget {
            full = true;
            folded_series += 1;
            folded_connections += row.conns;
            continue;
        }
        budget -= cost;
        let (client, owner) = clients.of(&row.client);
        let backend = vec![
            (label::CLIENT, client),
            (label::SERVER_ADDRESS, row.backend.to_string().into()),
            (
                label::SERVER_PORT,
                row.port.map_or("?".into(), |p| p.to_string().into()),
            ),
            (label::NAME, (&row.name).into()),
        ];
        connections.add(joined(&backend, &[], &owner), Value::Counter(row.conns));
        appearances.add(joined(&backend, &[], &owner), Value::Counter(row.dns));
        for (outcome, count) in [
            ("answered", o.answered),
            ("refused", o.refused),
            ("unanswered", o.unanswered),
        ] {
            if count > 0 {
                let outcome = [("outcome", outcome.into())];
                outcomes.add(joined(&backend, &outcome, &owner), Value::Counter(count));
            }
        }
    }

    // Behind each VIP: a series per backend the DNAT chose, and one for
    // connections whose translation was not seen.
    let mut behind_vip = Family::new(
        Kind::Counter,
        "vip_backend_connections",
        "Connection attempts from a client to an address DNS gave it alone (a Service's VIP, server_address and server_port), by the backend a DNAT sent them to (network_peer_address and network_peer_port; `network_peer_address=\"untranslated\"`: not seen)",
    );
    // And the bytes their connections carried, where host mode counted
    // them: what tells one busy connection from many.
    let mut behind_vip_bytes = Family::new(
        Kind::Counter,
        "vip_backend_bytes",
        "Bytes (payload, both ways) the connections behind a VIP carried, by backend, as their sockets counted them: closed connections', and open ones' so far",
    );
    for spread in &report.behind_vips {
        let (client, owner) = clients.of(&spread.client);
        let level = [
            (label::CLIENT, client),
            (label::NAME, (&spread.name).into()),
            (label::SERVER_ADDRESS, spread.vip.ip().to_string().into()),
            (label::SERVER_PORT, spread.vip.port().to_string().into()),
        ];
        let untranslated = (spread.untranslated > 0).then(|| {
            let peer = vec![(label::PEER_ADDRESS, "untranslated".into())];
            (peer, spread.untranslated, None)
        });
        let each = spread
            .backends
            .iter()
            .map(|b| {
                let peer = vec![
                    (label::PEER_ADDRESS, b.backend.ip().to_string().into()),
                    (label::PEER_PORT, b.backend.port().to_string().into()),
                ];
                (peer, b.connections, b.bytes)
            })
            .chain(untranslated);
        for (backend, count, bytes) in each {
            if full || budget == 0 {
                full = true;
                folded_series += 1;
                folded_connections += count;
                continue;
            }
            budget -= 1;
            let labels = joined(&level, &backend, &owner);
            if let Some(bytes) = bytes {
                behind_vip_bytes.add(labels.clone(), Value::Counter(bytes));
            }
            behind_vip.add(labels, Value::Counter(count));
        }
    }

    let mut folded = Family::new(
        Kind::Gauge,
        "metrics_folded_series",
        "Backend and service series left out of this scrape by the cardinality cap",
    );
    folded.add(Vec::new(), Value::Gauge(folded_series));
    let mut folded_total = Family::new(
        Kind::Counter,
        "folded_connections",
        "Connections counted in backend series left out by the cardinality cap",
    );
    folded_total.add(Vec::new(), Value::Counter(folded_connections));

    let mut families = vec![
        connections,
        outcomes,
        appearances,
        lookups,
        lookups_within_ttl,
        after_expiry,
        stale,
        backends,
        unused,
        p_value,
        verdict_ok,
        verdict_incomplete,
        asked_as,
        cell_connections,
        cell_expected,
        behind_vip,
        folded,
        folded_total,
        aggregator_events,
        input_events,
        build_info,
    ];
    // Only where bytes were counted (host mode behind a VIP).
    if !behind_vip_bytes.samples.is_empty() {
        let at = families
            .iter()
            .position(|f| f.name == "vip_backend_connections");
        families.insert(at.map_or(families.len(), |i| i + 1), behind_vip_bytes);
    }
    // Only with --window: an exposition without it is as it was.
    if report.window.is_some() {
        families.push(window_start);
    }
    families
}

fn joined(
    first: &[(&'static str, LabelValue)],
    then: &[(&'static str, LabelValue)],
    owner: &Labels,
) -> Labels {
    first.iter().chain(then).chain(owner).cloned().collect()
}

/// Each client's label and owner labels, made once per exposition and
/// shared by all of its series.
#[derive(Default)]
struct ClientLabels<'r> {
    made: HashMap<&'r Client, (LabelValue, Labels)>,
}

impl<'r> ClientLabels<'r> {
    fn of(&mut self, client: &'r Client) -> (LabelValue, Labels) {
        self.made
            .entry(client)
            .or_insert_with(|| (client.to_string().into(), owner_labels(client)))
            .clone()
    }
}

/// For an owner client, labels to aggregate a fleet by: its command, and
/// its container's name (a pod's also its namespace, pod and container
/// name, as kubelet labels them) or else its cgroup path. They add no
/// series: the client label already tells owners apart. None for a client
/// known by address, whose series stay as they were.
fn owner_labels(client: &Client) -> Labels {
    if !client.is_owner() {
        return Vec::new();
    }
    let mut labels = vec![(
        label::EXECUTABLE,
        client.command().unwrap_or_default().into(),
    )];
    let Some(container) = &client.workload().container else {
        labels.push((
            label::CGROUP,
            client.cgroup_path().unwrap_or_default().into(),
        ));
        return labels;
    };
    labels.push((label::CONTAINER, container.shown_name().to_string().into()));
    if let Some(names) = container.names.get() {
        let pod = [
            (label::K8S_NAMESPACE, &names.pod_namespace),
            (label::K8S_POD, &names.pod_name),
            (label::K8S_CONTAINER, &names.pod_container),
        ];
        for (name, value) in pod {
            if let Some(value) = value {
                labels.push((name, value.clone().into()));
            }
        }
    }
    labels
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One series per counter of `tally`, labelled with its name.
fn counter_family(name: &'static str, help: &'static str, tally: &dyn Tally) -> Family {
    let mut family = Family::new(Kind::Counter, name, help);
    tally.for_each_counter(&mut |counter, value| {
        family.add(
            vec![("counter", counter.to_string().into())],
            Value::Counter(value),
        );
    });
    family
}
