//! Host mode, once after the hooks are attached: the BPF iterator that
//! records the owners of sockets opened before the trace (see the kernel
//! program's `open_sockets.rs` for why).

use super::{program, LoaderError};
use aya::programs::Iter;
use aya::Ebpf;

const PROGRAM: &str = "connbal_open_sockets";

/// Walks every task's open files once; returns how many sockets it gave
/// an owner. Run after the links are attached, so a socket that connects
/// meanwhile is named by its hook, which the walk never overwrites.
pub fn record_owners(ebpf: &mut Ebpf) -> Result<u64, LoaderError> {
    let btf = aya::Btf::from_sys_fs().map_err(|e| LoaderError::Btf(e.to_string()))?;
    let iter: &mut Iter = program(ebpf, PROGRAM)?;
    iter.load("task_file", &btf).map_err(super::program_error)?;
    let found = (|| {
        let walk = |e: &dyn std::fmt::Display| {
            LoaderError::Load(format!("starting the open-socket iterator: {e}"))
        };
        let link = iter.attach().map_err(|e| walk(&e))?;
        let link = iter.take_link(link).map_err(|e| walk(&e))?;
        let file = link.into_file().map_err(|e| walk(&e))?;
        // One byte per socket recorded: counted, not kept.
        let mut file = file;
        std::io::copy(&mut file, &mut std::io::sink())
            .map_err(|e| LoaderError::Load(format!("reading the open-socket iterator: {e}")))
    })();
    // Loaded once, for this walk only.
    let _ = iter.unload();
    found
}
