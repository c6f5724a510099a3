//! Host mode: the bytes connections to a VIP carried (see the kernel
//! program's `traffic.rs`): the tracepoint at each close, and the
//! iterator over open connections, run at each report.
//!
//! The walk visits every open file on the host, not only connections to
//! a VIP. Socket storage given to each such connection as it is
//! established, walked by an `iter/bpf_sk_storage_map` program, would
//! visit those alone; it was built and this kernel refused it: map
//! iterators fail to load with EPERM (`bpf_map_elem` too, with an empty
//! program), as fentry does. `WALK_EVERY` bounds the cost instead.

use super::{program, program_error, LoaderError};
use aya::programs::{tp_btf::BtfTracePointLinkId, BtfTracePoint, Iter};
use aya::Ebpf;
use connbal_common::record::TRAFFIC_LEN;
use std::io::Read;

pub const CLOSED: &str = "connbal_closed";
const TRACEPOINT: &str = "inet_sock_set_state";
const OPEN: &str = "connbal_open_traffic";
/// Open connections read per walk, at most: a host with more open
/// connections to VIPs than this has the rest counted when they close.
const MAX_OPEN_PER_WALK: usize = 1 << 16;

/// Loads and attaches the close tracepoint, and loads the iterator. The
/// tracepoint's link lives in `ebpf` (see `nat::attach`).
pub fn attach(ebpf: &mut Ebpf) -> Result<BtfTracePointLinkId, LoaderError> {
    let btf = aya::Btf::from_sys_fs().map_err(|e| LoaderError::Btf(e.to_string()))?;
    let tracepoint: &mut BtfTracePoint = program(ebpf, CLOSED)?;
    tracepoint.load(TRACEPOINT, &btf).map_err(program_error)?;
    let link = tracepoint
        .attach()
        .map_err(|e| LoaderError::Load(format!("attaching to the {TRACEPOINT} tracepoint: {e}")))?;
    let iter: &mut Iter = program(ebpf, OPEN)?;
    iter.load("task_file", &btf).map_err(program_error)?;
    Ok(link)
}

/// Walks every task's open files for connections to a VIP: their records
/// (`TrafficRecord`s with `BIT_STILL_OPEN`), back to back, at most
/// `MAX_OPEN_PER_WALK`. Needs no capability: the program was loaded at
/// start, and a link to an iterator and its file are the caller's own.
pub fn walk_open(ebpf: &mut Ebpf) -> Result<Vec<u8>, LoaderError> {
    let walk =
        |e: &dyn std::fmt::Display| LoaderError::Load(format!("walking open connections: {e}"));
    let iter: &mut Iter = program(ebpf, OPEN)?;
    let link = iter.attach().map_err(|e| walk(&e))?;
    let link = iter.take_link(link).map_err(|e| walk(&e))?;
    let file = link.into_file().map_err(|e| walk(&e))?;
    let mut records = Vec::new();
    file.take((MAX_OPEN_PER_WALK * TRAFFIC_LEN) as u64)
        .read_to_end(&mut records)
        .map_err(|e| walk(&e))?;
    Ok(records)
}
