//! `--events`: one JSON line per observation, as it happens. A reader that
//! goes away ends the stream, not the run: the report still follows on
//! stderr.

use crate::aggregator::{ClientInfo, Observation};
use serde::Serialize;
use std::io::{self, Write};

/// An observation, and for an owner client every known attribute of it,
/// as the JSON report's rows have them.
#[derive(Serialize)]
struct Described<'a> {
    #[serde(flatten)]
    observation: &'a Observation,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_info: Option<ClientInfo<'a>>,
}

pub struct EventSink<W: Write = io::Stdout> {
    out: io::BufWriter<W>,
    closed: bool,
}

impl Default for EventSink {
    fn default() -> Self {
        Self::new(io::stdout())
    }
}

impl<W: Write> EventSink<W> {
    pub fn new(out: W) -> Self {
        Self {
            out: io::BufWriter::new(out),
            closed: false,
        }
    }

    pub fn write(&mut self, observations: impl Iterator<Item = Observation>) {
        for observation in observations {
            if self.closed {
                continue;
            }
            let client = observation.client();
            let described = Described {
                observation: &observation,
                client_info: client.has_info().then(|| client.info()),
            };
            let written = serde_json::to_writer(&mut self.out, &described)
                .map_err(io::Error::from)
                .and_then(|()| self.out.write_all(b"\n"));
            self.closed = written.is_err();
        }
    }

    /// Live events should appear as they happen, not when a buffer fills.
    pub fn flush(&mut self) {
        if !self.closed && self.out.flush().is_err() {
            self.closed = true;
        }
    }
}
