//! A bounded load generator for the namespace lab: bulk TCP, DNS queries
//! with multi-answer responses, connection attempts, and new connections
//! at a given rate (`run_rates`), from the client namespace to the server
//! namespace. Every loop stops at a deadline.

use crate::lab::{Lab, CLIENT_V4, SERVER_V4};
use anyhow::Result;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BULK_PORT: u16 = 9000;
/// Nothing listens here: a connection attempt gets SYN, RST.
pub const CLOSED_PORT: u16 = 9001;
pub const DNS_PORT: u16 = 53;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    Bulk,
    Dns,
    /// DNS as `Dns`, each query for a name of its own (`nID.load.test`, up
    /// to 65,536): ever-new services, as on a busy host over hours.
    DnsChurn,
    Syn,
    All,
}

/// What one load run did, as its generators counted it.
#[derive(Debug, Default)]
pub struct Sent {
    pub bulk_bytes: u64,
    pub dns_queries: u64,
    pub connection_attempts: u64,
}

fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<JoinHandle<Result<T>>> {
    let netns = File::open(format!("/var/run/netns/{ns}"))?;
    Ok(std::thread::spawn(move || {
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        f()
    }))
}

/// A DNS response to `query` with four A records, built from its question:
/// 203.0.113.11-14, or for a churn name (`nID.load.test`) four addresses
/// of its own in 10.0.0.0/8, so that every name is a service with
/// backends of its own.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    let question_end = 12 + query.get(12..)?.iter().position(|&b| b == 0)? + 1 + 4;
    let mut r = query.get(..question_end)?.to_vec();
    r[2] = 0x81;
    r[3] = 0x80;
    r[6..8].copy_from_slice(&4u16.to_be_bytes());
    // No authority or additional records: a query's own (dig's EDNS
    // record) is not echoed, so its count must not be either.
    r[8..12].fill(0);
    let churn = query.get(13) == Some(&b'n');
    let [hi, lo] = [r[0], r[1]];
    for last in 11..15u8 {
        let address = if churn {
            [10, hi, lo, last]
        } else {
            [203, 0, 113, last]
        };
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4]);
        r.extend_from_slice(&address);
    }
    Some(r)
}

/// Turns off segmentation offloads on both veth ends, so the classifier
/// sees wire-sized packets as on a real NIC, not 64 KiB GSO batches.
pub fn wire_sized_packets(lab: &Lab) -> Result<()> {
    for (ns, dev) in [
        (&lab.client_ns, &lab.client_if),
        (&lab.server_ns, &lab.server_if),
    ] {
        crate::lab::run(
            lab.command_in(ns, "ethtool")
                .args(["-K", dev, "tso", "off", "gso", "off", "gro", "off"]),
        )?;
    }
    Ok(())
}

pub fn run(lab: &Lab, mix: Mix, duration: Duration) -> Result<Sent> {
    run_paced(lab, mix, duration, None)
}

/// Sleeps as needed so `done` operations take at least `done / rate`
/// seconds since `start`; no pacing without a rate.
fn pace(start: Instant, done: u64, rate: Option<u64>) {
    if let Some(rate) = rate {
        let due = start + Duration::from_secs_f64(done as f64 / rate as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}

/// Like `run`, with each generator held to `rate` operations per second
/// (64 KiB writes, DNS queries, connection attempts), so the machine is
/// not saturated and CPU can be compared between observers.
pub fn run_paced(lab: &Lab, mix: Mix, duration: Duration, rate: Option<u64>) -> Result<Sent> {
    let deadline = Instant::now() + duration;
    let stop_at = move || Instant::now() >= deadline;
    let mut servers = Vec::new();
    let bulk_bytes = Arc::new(AtomicU64::new(0));
    let queries = Arc::new(AtomicU64::new(0));
    let attempts = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();

    if matches!(mix, Mix::Bulk | Mix::All) {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        servers.push(in_netns(&lab.server_ns, move || {
            let listener = TcpListener::bind((SERVER_V4, BULK_PORT))?;
            listener.set_nonblocking(true)?;
            let _ = ready_tx.send(());
            let mut buf = vec![0u8; 1 << 16];
            while !stop_at() {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        conn.set_read_timeout(Some(Duration::from_millis(200)))?;
                        while !stop_at() {
                            match conn.read(&mut buf) {
                                Ok(0) => break,
                                Ok(_) => {}
                                Err(e)
                                    if e.kind() == std::io::ErrorKind::WouldBlock
                                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                                Err(_) => break,
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            Ok(())
        })?);
        ready_rx.recv_timeout(Duration::from_secs(5))?;
        let sent = Arc::clone(&bulk_bytes);
        clients.push(in_netns(&lab.client_ns, move || {
            let mut conn = TcpStream::connect_timeout(
                &SocketAddr::from((SERVER_V4, BULK_PORT)),
                Duration::from_secs(5),
            )?;
            conn.set_write_timeout(Some(Duration::from_millis(200)))?;
            let chunk = vec![0x5au8; 1 << 16];
            let (start, mut writes) = (Instant::now(), 0);
            while !stop_at() {
                if let Ok(n) = conn.write(&chunk) {
                    sent.fetch_add(n as u64, Ordering::Relaxed);
                }
                writes += 1;
                pace(start, writes, rate.map(|r| r / 64));
            }
            Ok(())
        })?);
    }
    if matches!(mix, Mix::Dns | Mix::DnsChurn | Mix::All) {
        let (server, client) = spawn_dns(lab, mix, deadline, rate, Arc::clone(&queries))?;
        servers.push(server);
        clients.push(client);
    }
    if matches!(mix, Mix::Syn | Mix::All) {
        let sent = Arc::clone(&attempts);
        clients.push(in_netns(&lab.client_ns, move || {
            let to = SocketAddr::from((SERVER_V4, CLOSED_PORT));
            let (start, mut done) = (Instant::now(), 0);
            while !stop_at() {
                done += 1;
                pace(start, done, rate.map(|r| r / 4));
                // Refused at once: one SYN, one RST.
                let _ = TcpStream::connect_timeout(&to, Duration::from_millis(200));
                sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })?);
    }
    for handle in clients.into_iter().chain(servers) {
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    }
    Ok(Sent {
        bulk_bytes: bulk_bytes.load(Ordering::Relaxed),
        dns_queries: queries.load(Ordering::Relaxed),
        connection_attempts: attempts.load(Ordering::Relaxed),
    })
}

type Generator = JoinHandle<Result<()>>;

/// The DNS server (four answers a query) and a client sending queries at
/// `rate` a second (or as fast as it can) until `deadline`, counted in
/// `sent`.
fn spawn_dns(
    lab: &Lab,
    mix: Mix,
    deadline: Instant,
    rate: Option<u64>,
    sent: Arc<AtomicU64>,
) -> Result<(Generator, Generator)> {
    let stop_at = move || Instant::now() >= deadline;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = in_netns(&lab.server_ns, move || {
        let socket = UdpSocket::bind((SERVER_V4, DNS_PORT))?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let _ = ready_tx.send(());
        let mut buf = [0u8; 512];
        while !stop_at() {
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                if let Some(r) = answer(&buf[..n]) {
                    let _ = socket.send_to(&r, from);
                }
            }
        }
        Ok(())
    })?;
    ready_rx.recv_timeout(Duration::from_secs(5))?;
    let client = in_netns(&lab.client_ns, move || {
        let socket = UdpSocket::bind((CLIENT_V4, 0))?;
        socket.connect((SERVER_V4, DNS_PORT))?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        // Answers are drained by their own thread, so the sender's
        // rate never depends on how fast they come back.
        let receiver = socket.try_clone()?;
        let drain = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop_at() {
                let _ = receiver.recv(&mut buf);
            }
        });
        let mut id = 0u16;
        let (start, mut done) = (Instant::now(), 0);
        while !stop_at() {
            for _ in 0..32 {
                id = id.wrapping_add(1);
                let query = if mix == Mix::DnsChurn {
                    crate::gen::dns_query(id, &format!("n{id}.load.test"), 1)
                } else {
                    crate::gen::dns_query(id, "web.load.test", 1)
                };
                if socket.send(&query).is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            done += 32;
            pace(start, done, rate);
        }
        let _ = drain.join();
        Ok(())
    })?;
    Ok((server, client))
}

/// Where the connection generator's server accepts.
pub const ACCEPT_PORT: u16 = 9002;

/// Rates for `run_rates`, per second.
#[derive(Clone, Copy, Debug)]
pub struct Rates {
    /// New TCP connections, each accepted and then reset by the client.
    pub connections: u64,
    /// DNS queries, each answered (so twice as many DNS messages).
    pub dns_queries: u64,
}

/// What `run_rates` did, as its generators counted it.
#[derive(Debug, Default)]
pub struct Done {
    pub connections: u64,
    pub dns_queries: u64,
}

/// New connections and DNS queries at `rates` for `duration`: the load an
/// always-on agent meets on a busy node. Each connection is accepted by
/// the server, then closed by the client with a reset (SO_LINGER 0), so
/// neither side keeps a TIME_WAIT entry and the client's ports never run
/// out at ten thousand a second.
pub fn run_rates(lab: &Lab, duration: Duration, rates: Rates) -> Result<Done> {
    let deadline = Instant::now() + duration;
    let stop_at = move || Instant::now() >= deadline;
    let queries = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let acceptor = in_netns(&lab.server_ns, move || {
        let listener = TcpListener::bind((SERVER_V4, ACCEPT_PORT))?;
        listener.set_nonblocking(true)?;
        let _ = ready_tx.send(());
        while !stop_at() {
            match listener.accept() {
                Ok((conn, _)) => drop(conn),
                Err(_) => std::thread::sleep(Duration::from_micros(200)),
            }
        }
        Ok(())
    })?;
    ready_rx.recv_timeout(Duration::from_secs(5))?;
    let (dns_server, dns_client) = spawn_dns(
        lab,
        Mix::Dns,
        deadline,
        Some(rates.dns_queries),
        Arc::clone(&queries),
    )?;
    let made = Arc::clone(&connections);
    let connector = in_netns(&lab.client_ns, move || {
        let to = SocketAddr::from((SERVER_V4, ACCEPT_PORT));
        let reset = nix::sys::socket::sockopt::Linger;
        let linger = nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        let (start, mut done) = (Instant::now(), 0);
        while !stop_at() {
            done += 1;
            pace(start, done, Some(rates.connections));
            if let Ok(conn) = TcpStream::connect_timeout(&to, Duration::from_millis(200)) {
                let _ = nix::sys::socket::setsockopt(&conn, reset, &linger);
                made.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    })?;
    for handle in [connector, dns_client, acceptor, dns_server] {
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    }
    Ok(Done {
        connections: connections.load(Ordering::Relaxed),
        dns_queries: queries.load(Ordering::Relaxed),
    })
}
