//! Host mode: the cgroup_skb programs and the connect/sendmsg hooks, as
//! cgroup links on one cgroup v2 directory.

use super::{load, program, program_error, Loaded, LoaderError, Options};
use aya::programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr};
use std::fs::File;
use std::path::PathBuf;

/// Host mode: packets at the socket, both ways.
const CGROUP_SKB_PROGRAMS: [(&str, CgroupSkbAttachType); 2] = [
    ("connbal_cgroup_egress", CgroupSkbAttachType::Egress),
    ("connbal_cgroup_ingress", CgroupSkbAttachType::Ingress),
];
/// Host mode: the process behind each socket, at connect and sendmsg.
const SOCK_ADDR_PROGRAMS: [&str; 4] = [
    "connbal_connect4",
    "connbal_connect6",
    "connbal_sendmsg4",
    "connbal_sendmsg6",
];
/// Host mode's floor (`--noop-program`): empty programs on the same hooks.
const EMPTY_CGROUP_SKB_PROGRAMS: [(&str, CgroupSkbAttachType); 2] = [
    ("connbal_empty_skb_egress", CgroupSkbAttachType::Egress),
    ("connbal_empty_skb_ingress", CgroupSkbAttachType::Ingress),
];
const EMPTY_SOCK_ADDR_PROGRAMS: [&str; 4] = [
    "connbal_empty_connect4",
    "connbal_empty_connect6",
    "connbal_empty_sendmsg4",
    "connbal_empty_sendmsg6",
];

/// Host mode: the cgroup_skb programs and the connect/sendmsg hooks on each
/// cgroup v2 directory of `cgroups`, so every socket in their subtrees is seen,
/// in every network namespace, including those of processes started later.
///
/// Attached as links (Linux 5.7+), which the kernel removes when the last
/// fd closes, so nothing survives `kill -9`. A cgroup link always runs
/// beside the cgroup's other programs (systemd's, a CNI's), as
/// BPF_F_ALLOW_MULTI does; the kernel refuses the flag itself on links, so
/// the mode passed is `Single` (no flags).
///
/// `options.owners` should be `Owners::Process`: the hooks exist to name
/// the process (the plan sets it).
pub fn load_and_attach_cgroup(
    cgroups: &[PathBuf],
    options: &Options,
) -> Result<Loaded, LoaderError> {
    let (mut ebpf, counters) = load(options)?;
    let dirs = cgroups
        .iter()
        .map(|cgroup| {
            let shown = cgroup.display().to_string();
            File::open(cgroup)
                .map(|dir| (dir, shown.clone()))
                .map_err(|source| LoaderError::OpenCgroup {
                    path: shown,
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (skb_programs, sock_addr_programs) = if options.noop {
        (EMPTY_CGROUP_SKB_PROGRAMS, EMPTY_SOCK_ADDR_PROGRAMS)
    } else {
        (CGROUP_SKB_PROGRAMS, SOCK_ADDR_PROGRAMS)
    };
    // One program, loaded once, gets a link per cgroup; the links live in
    // the program and go with it.
    for (name, attach_type) in skb_programs {
        let program: &mut CgroupSkb = program(&mut ebpf, name)?;
        program.load().map_err(program_error)?;
        for (dir, shown) in &dirs {
            program
                .attach(dir, attach_type, CgroupAttachMode::Single)
                .map_err(|source| LoaderError::AttachCgroup {
                    program: name,
                    path: shown.clone(),
                    source,
                })?;
        }
    }
    for name in sock_addr_programs {
        let program: &mut CgroupSockAddr = program(&mut ebpf, name)?;
        program.load().map_err(program_error)?;
        for (dir, shown) in &dirs {
            program
                .attach(dir, CgroupAttachMode::Single)
                .map_err(|source| LoaderError::AttachCgroup {
                    program: name,
                    path: shown.clone(),
                    source,
                })?;
        }
    }
    Ok(Loaded {
        ebpf,
        counters,
        mode: None,
        interfaces: Vec::new(),
        _claims: Vec::new(),
    })
}
