//! Host mode: the tracepoint that reads where a DNAT sent each new TCP
//! connection (see the kernel program's `nat.rs`).

use super::{program, program_error, LoaderError};
use aya::programs::{tp_btf::BtfTracePointLinkId, BtfTracePoint};
use aya::Ebpf;

pub const PROGRAM: &str = "connbal_nat";
const TRACEPOINT: &str = "net_dev_start_xmit";

/// Loads and attaches it; the link lives in the program, which lives in
/// `ebpf`, and goes with it (or with `Loaded::drop`, by its id).
pub fn attach(ebpf: &mut Ebpf) -> Result<BtfTracePointLinkId, LoaderError> {
    let btf = aya::Btf::from_sys_fs().map_err(|e| LoaderError::Btf(e.to_string()))?;
    let tracepoint: &mut BtfTracePoint = program(ebpf, PROGRAM)?;
    tracepoint.load(TRACEPOINT, &btf).map_err(program_error)?;
    tracepoint
        .attach()
        .map_err(|e| LoaderError::Load(format!("attaching to the {TRACEPOINT} tracepoint: {e}")))
}
