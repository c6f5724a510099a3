//! A live trace's output (`--interval` reports, `--events` lines, the last
//! report) reaches stdout and stderr through a thread of its own. A reader
//! that stops reading fills the pipe, and a write to a full pipe blocks:
//! on the trace's loop that would stop the ring buffer's draining (records
//! lost) and the signal handling with it (SIGTERM ignored). Here the loop
//! only hands bytes over, and never waits: a report the thread has no room
//! for is skipped, events are dropped, both counted; only the last report
//! is waited for, and for a bounded time, after the programs are detached.

use crate::output::OutputError;
use std::cell::{Cell, RefCell};
use std::io::{self, Write};
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// Chunks waiting for the thread, at most. A report is one chunk; events
/// are a chunk per drain of the ring buffer.
const QUEUE: usize = 16;
/// Event bytes held for the thread at most while its queue is full.
const EVENT_BUFFER_MAX: usize = 4 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

struct Chunk {
    stream: Stream,
    bytes: Vec<u8>,
}

/// What the thread did with one chunk.
type Ack = Result<(), (Stream, io::Error)>;

/// The loop's handle on the thread; clones share it (the event stream
/// holds one, the session another).
#[derive(Clone)]
pub(super) struct StdoutWriter {
    shared: Rc<Shared>,
}

struct Shared {
    to_thread: RefCell<Option<SyncSender<Chunk>>>,
    acks: Receiver<Ack>,
    sent: Cell<u64>,
    acked: Cell<u64>,
    /// A stream whose reader went away, or another write error.
    failed: RefCell<Option<(Stream, io::Error)>>,
    reports_skipped: Cell<u64>,
    event_lines_dropped: Cell<u64>,
    /// Events written since the last flush.
    events: RefCell<Vec<u8>>,
}

impl StdoutWriter {
    pub fn start() -> Self {
        let (to_thread, chunks) = mpsc::sync_channel::<Chunk>(QUEUE);
        let (ack, acks) = mpsc::channel::<Ack>();
        // Detached: at exit a thread still blocked on a full pipe goes with
        // the process.
        std::thread::Builder::new()
            .name("connbal-stdout".into())
            .spawn(move || {
                let mut dead = Vec::new();
                for chunk in chunks {
                    let result = if dead.contains(&chunk.stream) {
                        Ok(())
                    } else {
                        let written = match chunk.stream {
                            Stream::Stdout => io::stdout().lock().write_all(&chunk.bytes),
                            Stream::Stderr => io::stderr().lock().write_all(&chunk.bytes),
                        };
                        written.map_err(|e| {
                            dead.push(chunk.stream);
                            (chunk.stream, e)
                        })
                    };
                    if ack.send(result).is_err() {
                        return;
                    }
                }
            })
            .expect("spawning the output thread");
        Self::over(to_thread, acks)
    }

    /// The handle over the thread's two channels.
    fn over(to_thread: SyncSender<Chunk>, acks: Receiver<Ack>) -> Self {
        Self {
            shared: Rc::new(Shared {
                to_thread: RefCell::new(Some(to_thread)),
                acks,
                sent: Cell::new(0),
                acked: Cell::new(0),
                failed: RefCell::new(None),
                reports_skipped: Cell::new(0),
                event_lines_dropped: Cell::new(0),
                events: RefCell::new(Vec::new()),
            }),
        }
    }

    /// Reports skipped because the reader was behind.
    pub fn reports_skipped(&self) -> u64 {
        self.shared.reports_skipped.get()
    }

    /// `--events` lines dropped because the reader was behind.
    pub fn event_lines_dropped(&self) -> u64 {
        self.shared.event_lines_dropped.get()
    }

    /// A report while the trace runs: handed over, or skipped (and counted)
    /// when the thread is still writing earlier ones. Fails when its
    /// stream's reader went away.
    pub fn offer_report(&self, stream: Stream, bytes: Vec<u8>) -> Result<(), OutputError> {
        self.collect_acks();
        self.check(stream)?;
        if !self.try_send(Chunk { stream, bytes }) {
            let skipped = self.shared.reports_skipped.get() + 1;
            self.shared.reports_skipped.set(skipped);
            if skipped == 1 {
                eprintln!(
                    "connbal: warning: {} is not being read fast enough; reports are skipped until it is",
                    stream.name()
                );
            }
        }
        Ok(())
    }

    /// The last report: handed over and written within `wait`, or an error
    /// saying it was not. A reader that went away has all it wanted.
    pub fn finish(
        &self,
        stream: Stream,
        bytes: Vec<u8>,
        wait: Duration,
    ) -> Result<(), OutputError> {
        let deadline = Instant::now() + wait;
        self.flush_events();
        let mut chunk = Some(Chunk { stream, bytes });
        while let Some(next) = chunk.take() {
            self.collect_acks();
            if self.closed(stream) {
                return Ok(());
            }
            let sender = self.shared.to_thread.borrow();
            let Some(sender) = sender.as_ref() else {
                return Ok(());
            };
            match sender.try_send(next) {
                Ok(()) => self.shared.sent.set(self.shared.sent.get() + 1),
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    chunk = Some(back);
                    let _ = self.wait_for_ack(Duration::from_millis(50));
                }
                Err(TrySendError::Full(_)) => return Err(Self::stalled(stream, wait)),
                Err(TrySendError::Disconnected(_)) => return Ok(()),
            }
        }
        // Nothing more will come: the thread ends once it has written all.
        self.shared.to_thread.borrow_mut().take();
        while self.shared.acked.get() < self.shared.sent.get() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.wait_for_ack(left) {
                Ok(()) => {}
                Err(RecvTimeoutError::Timeout) => return Err(Self::stalled(stream, wait)),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        match self.shared.failed.borrow_mut().take() {
            Some((_, e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            Some((stream, source)) => Err(OutputError::Write {
                stream: stream.name(),
                source,
            }),
            None => Ok(()),
        }
    }

    fn stalled(stream: Stream, wait: Duration) -> OutputError {
        OutputError::Stalled {
            stream: stream.name(),
            waited: wait,
        }
    }

    fn try_send(&self, chunk: Chunk) -> bool {
        let sender = self.shared.to_thread.borrow();
        let sent = sender.as_ref().is_some_and(|s| s.try_send(chunk).is_ok());
        if sent {
            self.shared.sent.set(self.shared.sent.get() + 1);
        }
        sent
    }

    fn wait_for_ack(&self, wait: Duration) -> Result<(), RecvTimeoutError> {
        let ack = self.shared.acks.recv_timeout(wait)?;
        self.note(ack);
        Ok(())
    }

    fn collect_acks(&self) {
        while let Ok(ack) = self.shared.acks.try_recv() {
            self.note(ack);
        }
    }

    fn note(&self, ack: Ack) {
        self.shared.acked.set(self.shared.acked.get() + 1);
        if let Err(failure) = ack {
            self.shared.failed.borrow_mut().get_or_insert(failure);
        }
    }

    fn closed(&self, stream: Stream) -> bool {
        self.shared
            .failed
            .borrow()
            .as_ref()
            .is_some_and(|(s, e)| *s == stream && e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// The stream's reader gone: `Closed`; another error on it: `Write`.
    fn check(&self, stream: Stream) -> Result<(), OutputError> {
        let failed = self.shared.failed.borrow();
        match failed.as_ref() {
            Some((s, e)) if *s == stream && e.kind() == io::ErrorKind::BrokenPipe => {
                Err(OutputError::Closed {
                    stream: stream.name(),
                })
            }
            Some((s, e)) if *s == stream => Err(OutputError::Write {
                stream: stream.name(),
                source: io::Error::new(e.kind(), e.to_string()),
            }),
            _ => Ok(()),
        }
    }

    /// The events written since the last flush, handed over; dropped and
    /// counted by line when the thread is behind and they outgrow the
    /// buffer.
    fn flush_events(&self) {
        let bytes = std::mem::take(&mut *self.shared.events.borrow_mut());
        if bytes.is_empty() {
            return;
        }
        #[expect(
            clippy::naive_bytecount,
            reason = "only when events are dropped, over at most a few MB; not worth a crate"
        )]
        let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        let sender = self.shared.to_thread.borrow();
        let Some(sender) = sender.as_ref() else {
            return;
        };
        match sender.try_send(Chunk {
            stream: Stream::Stdout,
            bytes,
        }) {
            Ok(()) => self.shared.sent.set(self.shared.sent.get() + 1),
            Err(TrySendError::Full(chunk)) if chunk.bytes.len() < EVENT_BUFFER_MAX => {
                // Kept for the next flush.
                *self.shared.events.borrow_mut() = chunk.bytes;
            }
            Err(_) => {
                let dropped = self.shared.event_lines_dropped.get() + lines;
                self.shared.event_lines_dropped.set(dropped);
                if dropped == lines {
                    eprintln!(
                        "connbal: warning: stdout is not being read fast enough; events are dropped until it is"
                    );
                }
            }
        }
    }
}

/// `--events` write into the writer; each flush hands them to the thread.
impl Write for StdoutWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed(Stream::Stdout) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.shared.events.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.collect_acks();
        self.flush_events();
        if self.closed(Stream::Stdout) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_skips_reports_instead_of_blocking() {
        // Nothing reads the thread's queue here: a writer whose thread is
        // stuck is one whose queue stays full.
        let (to_thread, _chunks) = mpsc::sync_channel::<Chunk>(1);
        let (_ack, acks) = mpsc::channel::<Ack>();
        let writer = StdoutWriter::over(to_thread, acks);
        for _ in 0..3 {
            writer
                .offer_report(Stream::Stdout, b"{}\n".to_vec())
                .unwrap();
        }
        assert_eq!(writer.reports_skipped(), 2);
        let started = Instant::now();
        let last = writer.finish(Stream::Stdout, b"{}\n".to_vec(), Duration::from_millis(200));
        assert!(matches!(last, Err(OutputError::Stalled { .. })), "{last:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
