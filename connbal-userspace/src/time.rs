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

/// A duration for a person, written one way in every report and verdict:
/// a number, a space, a unit. Milliseconds under a second (a short
/// capture), one decimal under ten seconds, whole seconds under two
/// minutes, then minutes and hours.
pub fn human_duration(duration: std::time::Duration) -> String {
    let secs = duration.as_secs_f64();
    let whole = duration.as_secs();
    if secs < 1.0 {
        format!("{} ms", duration.as_millis())
    } else if secs < 9.95 {
        format!("{secs:.1} s")
    } else if secs < 120.0 {
        format!("{secs:.0} s")
    } else if whole < 7200 {
        format!("{} min {} s", whole / 60, whole % 60)
    } else {
        format!("{} h {} min", whole / 3600, whole % 3600 / 60)
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

#[cfg(test)]
mod tests {
    use super::human_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_one_way_from_milliseconds_to_hours() {
        let text = |secs: f64| human_duration(Duration::from_secs_f64(secs));
        assert_eq!(text(0.0042), "4 ms");
        assert_eq!(text(1.77), "1.8 s");
        assert_eq!(text(9.96), "10 s");
        assert_eq!(text(10.0), "10 s");
        assert_eq!(text(119.4), "119 s");
        assert_eq!(text(125.0), "2 min 5 s");
        assert_eq!(text(7260.0), "2 h 1 min");
    }
}
