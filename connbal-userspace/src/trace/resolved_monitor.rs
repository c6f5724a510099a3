//! systemd-resolved's monitor (`io.systemd.Resolve.Monitor`): every query
//! it answers, with the records and their TTLs, streamed over Varlink
//! (JSON messages, each ended by a NUL byte). A getaddrinfo call answered
//! over nss-resolve carries no TTL; resolved's answer to it does, and the
//! aggregator joins the two by name and time.
//!
//! Subscribing needs root (the socket is resolved's own, mode 0600), so it
//! happens while connbal is still privileged; the connection is kept.

use crate::aggregator::{ResolverAnswer, Timestamp};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where systemd-resolved serves it.
pub const DEFAULT_SOCKET: &str = "/run/systemd/resolve/io.systemd.Resolve.Monitor";
const SUBSCRIBE: &[u8] =
    b"{\"method\":\"io.systemd.Resolve.Monitor.SubscribeQueryResults\",\"more\":true}\0";
/// A message longer than this (resolved's are a few hundred bytes) is
/// skipped, so a peer that never sends the NUL cannot grow the buffer.
const MAX_MESSAGE: usize = 1 << 20;
/// Addresses taken from one answer, at most.
const MAX_ADDRESSES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("connecting to systemd-resolved's monitor {path}: {source}")]
    Connect { path: String, source: io::Error },
    #[error("subscribing to systemd-resolved's monitor {path}: {source}")]
    Subscribe { path: String, source: io::Error },
}

/// A subscription, read without blocking.
#[derive(Debug)]
pub struct Monitor {
    stream: tokio::net::UnixStream,
    buffer: Vec<u8>,
    pub path: PathBuf,
    /// Why the stream ended, once it has.
    pub closed: Option<String>,
    /// Answers read, and messages that were not one (skipped).
    pub answers: u64,
    pub skipped: u64,
}

/// One answer resolved gave, as the aggregator takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub name: String,
    /// The least TTL of its records (a CNAME chain's included).
    pub ttl: u32,
    pub addresses: Vec<IpAddr>,
}

impl Monitor {
    /// Connects and subscribes; call inside the runtime.
    pub fn connect(path: &Path) -> Result<Self, MonitorError> {
        let shown = || path.display().to_string();
        let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|source| {
            MonitorError::Connect {
                path: shown(),
                source,
            }
        })?;
        let subscribe = |stream: &mut std::os::unix::net::UnixStream| {
            stream.write_all(SUBSCRIBE)?;
            stream.set_nonblocking(true)?;
            tokio::net::UnixStream::from_std(stream.try_clone()?)
        };
        let stream = subscribe(&mut stream).map_err(|source| MonitorError::Subscribe {
            path: shown(),
            source,
        })?;
        Ok(Self {
            stream,
            buffer: Vec::new(),
            path: path.to_path_buf(),
            closed: None,
            answers: 0,
            skipped: 0,
        })
    }

    /// Resolves when there is something to read (or the stream ended).
    pub async fn readable(&self) -> io::Result<()> {
        self.stream.readable().await
    }

    /// Reads what has arrived and hands each answer to `each`, stamped
    /// `now`.
    pub fn drain(&mut self, now: Timestamp, mut each: impl FnMut(&ResolverAnswer<'_>)) {
        if self.closed.is_some() {
            return;
        }
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.try_read(&mut chunk) {
                Ok(0) => {
                    self.closed = Some("systemd-resolved closed it".into());
                    break;
                }
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.closed = Some(e.to_string());
                    break;
                }
            }
        }
        let mut start = 0;
        while let Some(end) = self.buffer[start..].iter().position(|&b| b == 0) {
            match parse(&self.buffer[start..start + end]) {
                Some(answer) => {
                    self.answers += 1;
                    each(&ResolverAnswer {
                        ts: now,
                        name: &answer.name,
                        ttl: answer.ttl,
                        addresses: &answer.addresses,
                    });
                }
                None => self.skipped += 1,
            }
            start += end + 1;
        }
        self.buffer.drain(..start);
        if self.buffer.len() > MAX_MESSAGE {
            self.buffer.clear();
            self.skipped += 1;
        }
    }
}

/// A successful query's answer from one monitor message: the question's
/// name, the addresses, and the least TTL of every record (from each
/// record's wire form, `raw`: the JSON form has no TTL). `None` for the
/// first message (`ready`), failed queries, and anything else.
pub fn parse(message: &[u8]) -> Option<Answer> {
    use hickory_proto::rr::{RData, Record};
    use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
    let message: serde_json::Value = serde_json::from_slice(message).ok()?;
    let parameters = message.get("parameters")?;
    if parameters.get("state")?.as_str()? != "success" {
        return None;
    }
    let name = parameters
        .get("question")?
        .as_array()?
        .first()?
        .get("name")?
        .as_str()?
        .to_string();
    let (mut ttl, mut addresses) = (None::<u32>, Vec::new());
    for record in parameters.get("answer")?.as_array()? {
        let raw = record.get("raw")?.as_str()?;
        let raw = data_encoding::BASE64.decode(raw.as_bytes()).ok()?;
        let record = Record::read(&mut BinDecoder::new(&raw)).ok()?;
        ttl = Some(ttl.map_or(record.ttl, |t| t.min(record.ttl)));
        let address = match &record.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            _ => continue,
        };
        if addresses.len() < MAX_ADDRESSES && !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    (!addresses.is_empty()).then_some(Answer {
        name,
        ttl: ttl?,
        addresses,
    })
}

/// Each NUL-ended message of a stream, parsed (tests).
#[cfg(test)]
fn parse_all(stream: &[u8]) -> Vec<Option<Answer>> {
    stream
        .split(|&b| b == 0)
        .filter(|m| !m.is_empty())
        .map(parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As systemd-resolved 252 (Debian 12) sent it, the second answer from
    /// its cache; dnsmasq upstream gave TTL 30.
    const CAPTURED: &str = concat!(
        r#"{"parameters":{"ready":true},"continues":true}"#,
        "\0",
        r#"{"parameters":{"state":"success","question":[{"class":1,"type":1,"name":"web.svc.example"},{"class":1,"type":28,"name":"web.svc.example"}],"answer":[{"rr":{"key":{"class":1,"type":1,"name":"web.svc.example"},"address":[10,0,0,1]},"raw":"A3dlYgNzdmMHZXhhbXBsZQAAAQABAAAAHgAECgAAAQ=="},{"rr":{"key":{"class":1,"type":1,"name":"web.svc.example"},"address":[10,0,0,2]},"raw":"A3dlYgNzdmMHZXhhbXBsZQAAAQABAAAAHgAECgAAAg=="}]},"continues":true}"#,
        "\0",
        r#"{"parameters":{"state":"not-found","question":[{"class":1,"type":1,"name":"nope.example"}]},"continues":true}"#,
        "\0",
    );

    #[test]
    fn a_success_gives_its_name_addresses_and_least_ttl() {
        let parsed = parse_all(CAPTURED.as_bytes());
        assert_eq!(
            parsed,
            [
                None,
                Some(Answer {
                    name: "web.svc.example".into(),
                    ttl: 30,
                    addresses: vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()],
                }),
                None
            ]
        );
    }

    #[test]
    fn damaged_messages_are_skipped_not_misread() {
        for bad in [
            &b"not json"[..],
            br#"{"parameters":{"state":"success","question":[],"answer":[]}}"#,
            br#"{"parameters":{"state":"success","question":[{"name":"a"}],"answer":[{"raw":"!!"}]}}"#,
            br#"{"parameters":{"state":"success","question":[{"name":"a"}],"answer":[{"raw":"AAAB"}]}}"#,
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
