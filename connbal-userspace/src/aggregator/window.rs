//! `--window`: verdicts over the recent past, counts since the start.
//!
//! An agent runs for weeks, and "uneven since the start" then says nothing
//! about now; yet Prometheus needs its counters monotonic. So the counts
//! stay cumulative, and the verdicts are judged over what the counts
//! gained since a mark taken at most one window ago. Every half window the
//! aggregator marks each service's counts (connections and their outcomes
//! per backend and port, times seen in DNS, lookups, and the timeline's
//! observed and expected connections per address) and keeps the last two
//! marks; a report judges each service over the counts since the older
//! one, which covers between half a window and a whole one. This is how
//! Prometheus' client_golang ages a summary (`MaxAge` in `AgeBuckets`)
//! without keeping every observation. Two marks keep the extra memory at
//! two tables of counts, not of state.
//!
//! Everything a verdict reads that is not a count is taken as it is now:
//! the answers in force, the TTLs seen, the names that share an address.
//! So a window that begins with an answer already in force judges its
//! connections against that answer, as the whole run does.
//!
//! A mark is counts only, keyed by a 64-bit hash of each row's (client,
//! name, backend, port) and each service's (client, name) in sorted
//! vectors of exact length: with the backend table at its cap (2^18 rows)
//! one mark is some 17 MiB, not the 60 of cloned keys in a hash map.
//! Two keys that collide would share a tally; at 2^18 keys the chance of
//! any collision is about 2^-29. The marks are rebuilt from the tables every
//! half window, so a forgotten client leaves them within a window.
//!
//! The aggregator has no clock: marks fall due on the events' own times,
//! and a live trace, whose input can pause, also moves the window with
//! `Aggregator::advance`. A mark that falls due while nothing happened is
//! the same counts as the next one, so a pause of several windows leaves
//! both marks equal to the counts before the next event.

use super::attempts::Outcomes;
use super::backends::Row;
use super::client::Client;
use super::lookups::LookupTally;
use super::name::NameKey;
use super::Timestamp;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;

/// The width of a window, and the marks its verdicts are judged from.
#[derive(Debug)]
pub struct Window {
    width_nanos: u64,
    /// Oldest first, at most two. Two marks that fell due in one pause
    /// hold the same counts, once.
    marks: VecDeque<(Timestamp, Arc<Mark>)>,
    /// When the next mark falls due; `None` before the first event.
    next: Option<Timestamp>,
    keys: Keys,
}

/// A report's window: how wide, and since when its verdicts judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windowed {
    pub width_nanos: u64,
    /// The older mark; `None` before the first event.
    pub since: Option<Timestamp>,
}

/// The hashes that key a mark's tallies: one seed per window, so that
/// a mark and the report reading it agree.
#[derive(Clone, Debug, Default)]
pub struct Keys(foldhash::fast::RandomState);

impl Keys {
    fn row(&self, row: &Row) -> u64 {
        self.row_at(row, row.port)
    }

    /// The key of `row`'s backend at `port` instead.
    fn row_at(&self, row: &Row, port: Option<u16>) -> u64 {
        self.0
            .hash_one((&row.client, &*row.name, row.backend, port))
    }

    fn service(&self, client: &Client, name: NameKey) -> u64 {
        self.0.hash_one((client, name))
    }
}

/// Every count a verdict reads, at one time.
#[derive(Debug, Default)]
pub struct Mark {
    /// Sorted by key.
    rows: Vec<(u64, RowTally)>,
    services: Vec<(u64, LookupTally)>,
    records_lost: u64,
    tables_dropped: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct RowTally {
    conns: u64,
    dns: u64,
    address_dns: u64,
    first_in_answers: u64,
    outcomes: Outcomes,
}

impl Window {
    pub fn new(width: std::time::Duration) -> Self {
        Self {
            width_nanos: u64::try_from(width.as_nanos()).unwrap_or(u64::MAX).max(2),
            marks: VecDeque::new(),
            next: None,
            keys: Keys::default(),
        }
    }

    fn half(&self) -> u64 {
        self.width_nanos / 2
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Whether a mark falls due at `now`, and when on the half-window grid
    /// it was due (the latest such time): the caller takes it with
    /// [`Window::push`]. The first call starts the window with nothing
    /// counted. The older mark, which the next one replaces, goes now, so
    /// that taking a mark holds two at most.
    pub fn due(&mut self, now: Timestamp) -> Option<Timestamp> {
        let Some(next) = self.next else {
            self.marks.push_back((now, Arc::new(Mark::default())));
            self.next = Some(Timestamp(now.0.saturating_add(self.half())));
            return None;
        };
        if now < next {
            return None;
        }
        let steps = (now.0 - next.0) / self.half();
        let due = Timestamp(next.0 + steps * self.half());
        self.next = Some(Timestamp(due.0.saturating_add(self.half())));
        if self.marks.len() > 1 {
            self.marks.pop_front();
        }
        Some(due)
    }

    /// The counts as they were at `at`, a time [`Window::due`] gave. When
    /// the mark before it also fell due in a pause, it held these same
    /// counts.
    pub fn push(&mut self, mark: Mark, at: Timestamp) {
        let mark = Arc::new(mark);
        let previous_due = Timestamp(at.0.saturating_sub(self.half()));
        if self.marks.back().is_some_and(|(t, _)| *t < previous_due) {
            self.marks.clear();
            self.marks.push_back((previous_due, Arc::clone(&mark)));
        }
        self.marks.push_back((at, mark));
        while self.marks.len() > 2 {
            self.marks.pop_front();
        }
    }

    /// The mark a report judges from: the older one.
    pub fn judged_from(&self) -> Option<Judged<'_>> {
        self.marks.front().map(|(_, mark)| Judged {
            mark,
            keys: &self.keys,
        })
    }

    pub fn describe(&self) -> Windowed {
        Windowed {
            width_nanos: self.width_nanos,
            since: self.marks.front().map(|(at, _)| *at),
        }
    }
}

impl Mark {
    /// Room for `rows` rows.
    pub fn with_rows(rows: usize) -> Self {
        Self {
            rows: Vec::with_capacity(rows),
            ..Self::default()
        }
    }

    /// A row's counts, with its outcomes known or not.
    pub fn row(&mut self, keys: &Keys, row: &Row) {
        let tally = RowTally {
            conns: row.conns,
            dns: row.dns,
            address_dns: row.address_dns,
            first_in_answers: row.first_in_answers,
            outcomes: row.outcomes.unwrap_or_default(),
        };
        self.rows.push((keys.row(row), tally));
    }

    pub fn service(&mut self, keys: &Keys, (client, name): &(Client, NameKey), tally: LookupTally) {
        self.services.push((keys.service(client, *name), tally));
    }

    /// Done: what the input had lost and the tables dropped so far.
    pub fn seal(mut self, (records_lost, tables_dropped): (u64, u64)) -> Self {
        self.rows.sort_unstable_by_key(|r| r.0);
        self.services.sort_unstable_by_key(|s| s.0);
        self.services.shrink_to_fit();
        self.records_lost = records_lost;
        self.tables_dropped = tables_dropped;
        self
    }

    fn row_tally(&self, key: u64) -> Option<&RowTally> {
        let i = self.rows.binary_search_by_key(&key, |r| r.0).ok()?;
        Some(&self.rows[i].1)
    }
}

/// A mark, to read a report's counts against.
pub struct Judged<'a> {
    mark: &'a Mark,
    keys: &'a Keys,
}

impl Judged<'_> {
    /// `row` counting from this mark on.
    pub fn row_since(&self, row: &Row) -> Row {
        let exact = self.mark.row_tally(self.keys.row(row));
        // A backend first connected to after the mark had its row without
        // a port then: its times in DNS were counted there.
        let address = exact.or_else(|| self.mark.row_tally(self.keys.row_at(row, None)));
        let (exact, address) = (
            exact.copied().unwrap_or_default(),
            address.copied().unwrap_or_default(),
        );
        Row {
            conns: row.conns.saturating_sub(exact.conns),
            dns: row.dns.saturating_sub(address.dns),
            address_dns: row.address_dns.saturating_sub(address.address_dns),
            first_in_answers: row
                .first_in_answers
                .saturating_sub(address.first_in_answers),
            outcomes: row.outcomes.map(|o| Outcomes {
                answered: o.answered.saturating_sub(exact.outcomes.answered),
                refused: o.refused.saturating_sub(exact.outcomes.refused),
                unanswered: o.unanswered.saturating_sub(exact.outcomes.unanswered),
            }),
            ..row.clone()
        }
    }

    pub fn service(&self, client: &Client, name: NameKey) -> Option<&LookupTally> {
        let key = self.keys.service(client, name);
        let i = self
            .mark
            .services
            .binary_search_by_key(&key, |s| s.0)
            .ok()?;
        Some(&self.mark.services[i].1)
    }

    /// (records lost, table entries dropped) at the mark.
    pub fn losses(&self) -> (u64, u64) {
        (self.mark.records_lost, self.mark.tables_dropped)
    }
}
