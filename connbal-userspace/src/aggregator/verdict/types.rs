//! What a verdict is: the service it judges, and each check's finding.

use super::super::backends::{Row, SrvPreference};
use super::super::client::Client;
use super::statistics::SIGNIFICANCE;
use serde::Serialize;
use std::net::IpAddr;
use std::sync::Arc;

/// One backend address of a service, with its connections over all ports.
#[derive(Clone, Copy, Debug)]
pub struct BackendLoad {
    pub address: IpAddr,
    pub connections: u64,
    pub srv: Option<SrvPreference>,
}

/// One cell of the balance test.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BalanceCell {
    pub backend: IpAddr,
    pub connections: u64,
    pub expected: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Service {
    pub client: Client,
    /// The name credited: the canonical name behind CNAMEs, or the SRV
    /// service.
    pub name: Arc<str>,
    /// Names the client asked that were answered with `name` through
    /// CNAMEs (OpenTelemetry's `dns.question.name`): the name a person
    /// searches for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub asked_as: Vec<Arc<str>>,
    /// The service's report rows (one per backend and port), in report
    /// order. JSON lists them apart, under `rows`.
    #[serde(skip)]
    pub rows: Vec<Row>,
    /// Processes seen for an owner client (a few; none for clients known
    /// by address).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<u32>,
    /// More processes were seen than `pids` lists (it keeps the first 8).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub more_pids: bool,
    pub backends: u64,
    pub backends_used: u64,
    pub connections: u64,
    /// Lookups of the service (its most-asked question: A and AAAA asked
    /// together count once).
    pub lookups: u64,
    /// Lookups that came before the previous answer's TTL ran out.
    pub lookups_within_ttl: u64,
    pub ttl_min_secs: Option<u32>,
    pub ttl_max_secs: Option<u32>,
    /// Distinct address sets the answers in force offered, one after
    /// another (1: the answer never changed).
    pub answer_sets: u64,
    /// Connection attempts made after the whole answer in force expired,
    /// with no new lookup, and how long after at most.
    pub connections_after_expiry: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_secs_after_expiry: Option<f64>,
    /// Addresses connected to after DNS stopped offering them and the last
    /// answer holding them expired.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stale_backends: Vec<StaleBackend>,
    /// Connections credited to this name to addresses another name's
    /// unexpired answer held too (docs/semantics.md section 4).
    #[serde(skip_serializing_if = "is_zero")]
    pub shared_connections: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shared_with: Vec<Arc<str>>,
    /// Set when the service offered both address families and every
    /// connection went to this one: the balance and unused backends are
    /// judged within it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family_used: Option<Family>,
    /// The client answers DNS queries itself (a stub, cache or forwarder):
    /// its lookups serve others, so unused backends are not judged.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub resolver: bool,
    /// Present when the balance could be judged.
    pub balance: Option<Balance>,
    /// The balance test's cells, before any pooling: each backend random
    /// choice could pick, its connections judged and those random choice
    /// would have given it. A fleet's cells are its nodes' summed per
    /// backend (the recording rules in deploy/prometheus).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub balance_cells: Vec<BalanceCell>,
    pub verdicts: Vec<Verdict>,
    /// `--window`: what the verdicts, balance and backends used were
    /// judged over (the counts above stay since the start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<ServiceWindow>,
}

/// A service's counts within the window its verdicts judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceWindow {
    pub connections: u64,
    pub lookups: u64,
    pub lookups_within_ttl: u64,
}

impl Service {
    /// Takes the judgement of `recent`, the same service judged over the
    /// window: its verdicts, its balance and the backends it used. The
    /// counts stay since the start, as monotonic counters need.
    pub fn judge_over(&mut self, recent: Service) {
        self.window = Some(ServiceWindow {
            connections: recent.connections,
            lookups: recent.lookups,
            lookups_within_ttl: recent.lookups_within_ttl,
        });
        self.backends_used = recent.backends_used;
        self.family_used = recent.family_used;
        self.balance = recent.balance;
        self.balance_cells = recent.balance_cells;
        self.verdicts = recent.verdicts;
    }
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StaleBackend {
    pub address: IpAddr,
    pub connections: u64,
    pub max_secs_after_expiry: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Balance {
    /// What the spread was compared with.
    pub expected: Expectation,
    /// Judged against each connection's answer in force, when the
    /// answers changed.
    pub over_answers_in_force: bool,
    pub chi_square: f64,
    /// Backends in the test, after pooling those expected to get less than
    /// one connection.
    pub degrees_of_freedom: u64,
    /// Probability of a spread at least this uneven under `expected`.
    pub p_value: f64,
    pub max_share: f64,
    pub min_share: f64,
    pub coefficient_of_variation: f64,
}

/// The one address family a dual-stack service's client used: its spread
/// and unused backends are judged within it (docs/semantics.md section 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(_) => Self::Ipv4,
            IpAddr::V6(_) => Self::Ipv6,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expectation {
    /// Every backend equally likely.
    Uniform,
    /// Backends of the best SRV priority, in proportion to their weights.
    SrvWeights,
}

/// One check's conclusion, as JSON, the table and metrics show it; all of
/// it is written from a [`Judgement`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub check: Check,
    pub finding: Finding,
    /// False when the finding is worth a person's attention.
    pub ok: bool,
    pub text: String,
    /// False when what it was judged from may be missing something: an
    /// alert should not page on it (the text says why).
    pub complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Incomplete>,
}

/// Why a verdict may be wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Incomplete {
    /// The source lost records (a live trace's full ring buffer): any
    /// lookup, attempt or reply may be among them.
    RecordsLost { records: u64 },
    /// The aggregator's tables refused or evicted entries (their caps).
    TablesFull { entries: u64 },
    /// The trace began this long before the name's first lookup seen,
    /// within its TTL: an earlier answer may have been in force.
    TraceBeganWithinTtl { secs: u64 },
}

impl Verdict {
    /// What it was judged from may be missing something.
    pub fn mark_incomplete(&mut self, why: Incomplete) {
        if self.incomplete.is_none() {
            self.complete = false;
            self.incomplete = Some(why);
            self.text = format!("{}; {}", self.text, super::wording::incomplete(why));
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    UnusedBackends,
    Balance,
    Ttl,
    SrvPriority,
    FailingBackends,
    StaleBackends,
    SharedAddresses,
    AnswerOrder,
}

impl Check {
    /// The check's name in JSON, metrics labels and documentation; written
    /// here once.
    pub const fn name(self) -> &'static str {
        match self {
            Check::UnusedBackends => "unused_backends",
            Check::Balance => "balance",
            Check::Ttl => "ttl",
            Check::SrvPriority => "srv_priority",
            Check::FailingBackends => "failing_backends",
            Check::StaleBackends => "stale_backends",
            Check::SharedAddresses => "shared_addresses",
            Check::AnswerOrder => "answer_order",
        }
    }
}

impl Serialize for Check {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    AllUsed,
    UnusedByChance,
    Unused,
    NoConnections,
    ConsistentWithRandom,
    TooFewToJudge,
    Uneven,
    SingleLookup,
    HonoursTtl,
    TtlUnknown,
    ResolvesBeforeEveryConnection,
    ReresolvesWithinTtl,
    ThroughLocalResolver,
    DoesNotReresolve,
    PriorityHonoured,
    PriorityIgnored,
    AllAnswered,
    Failing,
    NoneStale,
    Stale,
    Shared,
    FirstNotPreferred,
    TakesFirstRotated,
    TakesFirst,
}

/// What a check found, with the numbers that decided it: the structure
/// that [`Verdict`]'s finding, `ok` and text are all written from
/// (`wording`), so that none of them can say something the others do not.
#[derive(Clone, Debug, PartialEq)]
pub enum Judgement {
    /// `unused_backends`: lookups, and no connection at all.
    NoConnections {
        backends: u64,
    },
    /// `unused_backends`: every backend got connections.
    AllUsed {
        backends: u64,
        /// The SRV priority chosen among, when it was one.
        priority: Option<u16>,
        family: Option<Family>,
    },
    /// `unused_backends`: some got none; chance decides whether it matters.
    Unused {
        unused: u64,
        backends: u64,
        priority: Option<u16>,
        family: Option<Family>,
        /// Connections random choice is judged over.
        judged: u64,
        /// Unused backends random choice could have picked.
        unused_choosable: u64,
        /// Fewer connections than backends: some are unused for certain.
        certain: bool,
        /// Chance that random choice leaves at least as many unused.
        chance: f64,
    },
    /// `balance`: too few connections per backend for the test.
    TooFewToJudge {
        connections: u64,
        backends: u64,
        family: Option<Family>,
    },
    /// `balance`: the chi-square test's outcome.
    Spread {
        family: Option<Family>,
        expected: Expectation,
        over_answers_in_force: bool,
        min_share: f64,
        max_share: f64,
        /// Over answers in force: the connections to addresses in force,
        /// and the least and greatest share expected of them.
        in_force: Option<(u64, f64, f64)>,
        /// When not every connection was judged (some went outside the
        /// choice: a lower SRV priority, an address no answer held then):
        /// (judged, of all).
        judged: Option<(u64, u64)>,
        p_value: f64,
    },
    /// `ttl`: connections after the answer expired, with no new lookup.
    DoesNotReresolve {
        late_connections: u64,
        late_max_secs: f64,
        lookups: u64,
        ttl: Option<(u32, u32)>,
    },
    SingleLookup {
        ttl: Option<(u32, u32)>,
    },
    HonoursTtl {
        lookups: u64,
        ttl: Option<(u32, u32)>,
    },
    /// Every lookup came through getaddrinfo (host mode), which carries
    /// no TTL: nothing to judge them against.
    TtlUnknown {
        lookups: u64,
    },
    ResolvesBeforeEveryConnection {
        lookups: u64,
        within_ttl: u64,
        connections: u64,
        ttl: Option<(u32, u32)>,
    },
    ReresolvesWithinTtl {
        lookups: u64,
        within_ttl: u64,
        connections: u64,
        ttl: Option<(u32, u32)>,
    },
    /// Asks before every connection, or within the TTL, but every answer
    /// came from a resolver on its own host: the recommended setup
    /// (getaddrinfo per connect through a local cache).
    ThroughLocalResolver {
        lookups: u64,
        within_ttl: u64,
        connections: u64,
        server: IpAddr,
    },
    /// `stale_backends`: the answers changed, and no connection went stale.
    NoneStale {
        answer_sets: u64,
    },
    Stale {
        backends: Vec<StaleBackend>,
    },
    /// `srv_priority`.
    PriorityHonoured {
        connections: u64,
        best: u16,
        /// Every target shares the best priority.
        one_level: bool,
    },
    PriorityIgnored {
        outside: u64,
        connections: u64,
        best: u16,
    },
    /// `failing_backends`.
    AllAnswered {
        attempts: u64,
    },
    Failing {
        backends: Vec<FailingBackend>,
        /// Attempts answered by the backends that never failed.
        answered_elsewhere: u64,
        /// Not one attempt was answered.
        none_answered: bool,
    },
    /// `answer_order`: where connections went in the order of the latest
    /// answer. `firsts`: how often each backend was listed first, least
    /// and most, over `backends`.
    FirstNotPreferred {
        to_first: u64,
        connections: u64,
        expected: f64,
    },
    TakesFirst {
        to_first: u64,
        connections: u64,
        expected: f64,
        chance: f64,
        /// (backends ever listed first, least and most times, backends).
        firsts: (u64, u64, u64, u64),
        /// The one address listed first in every answer, if one was.
        always_first: Option<IpAddr>,
    },
    /// `shared_addresses`: connections that could have followed another
    /// name's answer; said, not alerted on.
    Shared {
        connections: u64,
        of: u64,
        names: Vec<Arc<str>>,
    },
}

/// A backend (address and port, as its row has them) whose attempts were
/// refused or went unanswered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailingBackend {
    pub address: IpAddr,
    pub port: Option<u16>,
    pub refused: u64,
    pub unanswered: u64,
    pub tried: u64,
}

impl Judgement {
    pub fn check(&self) -> Check {
        match self {
            Self::NoConnections { .. } | Self::AllUsed { .. } | Self::Unused { .. } => {
                Check::UnusedBackends
            }
            Self::TooFewToJudge { .. } | Self::Spread { .. } => Check::Balance,
            Self::DoesNotReresolve { .. }
            | Self::SingleLookup { .. }
            | Self::HonoursTtl { .. }
            | Self::TtlUnknown { .. }
            | Self::ResolvesBeforeEveryConnection { .. }
            | Self::ReresolvesWithinTtl { .. }
            | Self::ThroughLocalResolver { .. } => Check::Ttl,
            Self::NoneStale { .. } | Self::Stale { .. } => Check::StaleBackends,
            Self::PriorityHonoured { .. } | Self::PriorityIgnored { .. } => Check::SrvPriority,
            Self::AllAnswered { .. } | Self::Failing { .. } => Check::FailingBackends,
            Self::Shared { .. } => Check::SharedAddresses,
            Self::FirstNotPreferred { .. } | Self::TakesFirst { .. } => Check::AnswerOrder,
        }
    }

    pub fn finding(&self) -> Finding {
        match self {
            Self::NoConnections { .. } => Finding::NoConnections,
            Self::AllUsed { .. } => Finding::AllUsed,
            Self::Unused { chance, .. } if *chance >= SIGNIFICANCE => Finding::UnusedByChance,
            Self::Unused { .. } => Finding::Unused,
            Self::TooFewToJudge { .. } => Finding::TooFewToJudge,
            Self::Spread { p_value, .. } if *p_value < SIGNIFICANCE => Finding::Uneven,
            Self::Spread { .. } => Finding::ConsistentWithRandom,
            Self::DoesNotReresolve { .. } => Finding::DoesNotReresolve,
            Self::SingleLookup { .. } => Finding::SingleLookup,
            Self::HonoursTtl { .. } => Finding::HonoursTtl,
            Self::TtlUnknown { .. } => Finding::TtlUnknown,
            Self::ResolvesBeforeEveryConnection { .. } => Finding::ResolvesBeforeEveryConnection,
            Self::ReresolvesWithinTtl { .. } => Finding::ReresolvesWithinTtl,
            Self::ThroughLocalResolver { .. } => Finding::ThroughLocalResolver,
            Self::NoneStale { .. } => Finding::NoneStale,
            Self::Stale { .. } => Finding::Stale,
            Self::PriorityHonoured { .. } => Finding::PriorityHonoured,
            Self::PriorityIgnored { .. } => Finding::PriorityIgnored,
            Self::AllAnswered { .. } => Finding::AllAnswered,
            Self::Failing { .. } => Finding::Failing,
            Self::Shared { .. } => Finding::Shared,
            Self::FirstNotPreferred { .. } => Finding::FirstNotPreferred,
            // Taking the first of answers the server rotates spreads as the
            // rotation does (curl, getaddrinfo with equal preferences): it
            // is said, not flagged. Without rotation it is all one backend.
            Self::TakesFirst { firsts, .. } if firsts.0 > 1 => Finding::TakesFirstRotated,
            Self::TakesFirst { .. } => Finding::TakesFirst,
        }
    }

    /// False when the finding is worth a person's attention.
    pub fn ok(&self) -> bool {
        matches!(
            self.finding(),
            Finding::AllUsed
                | Finding::UnusedByChance
                | Finding::TooFewToJudge
                | Finding::ConsistentWithRandom
                | Finding::SingleLookup
                | Finding::HonoursTtl
                | Finding::TtlUnknown
                | Finding::ThroughLocalResolver
                | Finding::NoneStale
                | Finding::PriorityHonoured
                | Finding::AllAnswered
                | Finding::Shared
                | Finding::FirstNotPreferred
                | Finding::TakesFirstRotated
        )
    }
}

impl From<&Judgement> for Verdict {
    fn from(judgement: &Judgement) -> Self {
        Verdict {
            check: judgement.check(),
            finding: judgement.finding(),
            ok: judgement.ok(),
            text: super::wording::text(judgement),
            complete: true,
            incomplete: None,
        }
    }
}
