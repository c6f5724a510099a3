//! Capture time, shared by every layer: capture readers stamp frames with
//! it, the aggregator judges TTLs by it, reports cover a span of it. It
//! lives here, not in the aggregator, so that capture and decoding do not
//! depend on the aggregator for a number.

/// Capture time in nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const fn from_secs_nanos(secs: u64, nanos: u64) -> Self {
        Self(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
    }

    pub const fn from_secs(secs: u64) -> Self {
        Self::from_secs_nanos(secs, 0)
    }

    /// The wall-clock time (the clock is the caller's to read: the
    /// aggregator stays pure).
    pub fn from_system_time(time: std::time::SystemTime) -> Self {
        let since_epoch = time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self(u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX))
    }

    pub fn to_system_time(self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(self.0)
    }

    /// Nanoseconds since `earlier`, zero if the clock went backwards (live
    /// records from several CPUs may arrive slightly out of order).
    pub const fn nanos_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// The time a report covers: from the first packet to the last (replay), or
/// from the start of the trace to the report (trace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Span {
    pub const fn at(ts: Timestamp) -> Self {
        Self { start: ts, end: ts }
    }

    /// Widened to take in `ts`; capture timestamps need not be in order.
    pub fn extend(&mut self, ts: Timestamp) {
        if ts < self.start {
            self.start = ts;
        }
        if ts > self.end {
            self.end = ts;
        }
    }

    pub const fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.end.nanos_since(self.start))
    }
}
