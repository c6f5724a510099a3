//! Host mode: the cgroup_skb programs and the connect hooks, as cgroup
//! links on one cgroup v2 directory.

use super::{load, program, program_error, Loaded, LoaderError, Object, Options, Programs};
use aya::programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr};
use std::fs::File;
use std::path::PathBuf;

/// Host mode: packets at the socket, both ways.
const CGROUP_SKB_PROGRAMS: [(&str, CgroupSkbAttachType); 2] = [
    ("connbal_cgroup_egress", CgroupSkbAttachType::Egress),
    ("connbal_cgroup_ingress", CgroupSkbAttachType::Ingress),
];
/// Host mode: the process behind each socket, at connect. There is no
/// sendmsg hook: the kernel locks the socket around every unconnected UDP
/// send once one is attached anywhere, and the egress program names those
/// sockets from their first DNS datagram instead.
const SOCK_ADDR_PROGRAMS: [&str; 2] = ["connbal_connect4", "connbal_connect6"];
/// Host mode's floor (`--noop-program`): empty programs on the same hooks.
const EMPTY_CGROUP_SKB_PROGRAMS: [(&str, CgroupSkbAttachType); 2] = [
    ("connbal_empty_skb_egress", CgroupSkbAttachType::Egress),
    ("connbal_empty_skb_ingress", CgroupSkbAttachType::Ingress),
];
const EMPTY_SOCK_ADDR_PROGRAMS: [&str; 2] = ["connbal_empty_connect4", "connbal_empty_connect6"];

/// Host mode: the cgroup_skb programs and the connect hooks on each
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
    let Object {
        mut ebpf,
        counters,
        socket_layout,
        conntrack_layout,
    } = load(options)?;
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
    let empty = options.programs == Programs::Empty;
    let (skb_programs, sock_addr_programs) = if empty {
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
    // Sockets opened before now: their owners, once the hooks can no
    // longer miss a new one. Without it, a daemon's long-lived resolver
    // socket belongs to no process; the trace goes on either way.
    // The bytes connections to a VIP carried: without them the level
    // behind a VIP still counts connections.
    let traffic = (options.programs == Programs::All).then(|| {
        socket_layout
            .clone()
            .and_then(|_| super::traffic::attach(&mut ebpf).map_err(|e| described(&e)))
    });
    let open_sockets = (!empty).then(|| {
        socket_layout
            .and_then(|_| super::open_sockets::record_owners(&mut ebpf).map_err(|e| described(&e)))
    });
    // Where a DNAT sent each new connection (a Service's VIP to its pod):
    // host-wide, so without it the report still stands, one level short.
    let nat = (options.programs == Programs::All).then(|| {
        conntrack_layout.and_then(|_| super::nat::attach(&mut ebpf).map_err(|e| described(&e)))
    });
    // Lookups that never become a DNS packet: without them the report
    // still holds every lookup that does.
    let lookups = (options.libc != super::LibcProbing::Off && !empty).then(|| {
        let rescan = options.libc == super::LibcProbing::Rescanning;
        super::lookups::attach(&mut ebpf, &dirs, rescan).map_err(|e| described(&e))
    });
    Ok(Loaded {
        nat,
        traffic,
        lookups,
        open_sockets,
        ebpf,
        counters,
        mode: None,
        interfaces: Vec::new(),
        _claims: Vec::new(),
    })
}

/// An optional program's failure as one line: with the verifier's reason,
/// its log's last line before the statistics.
fn described(error: &LoaderError) -> String {
    let reason = error.verifier_log().and_then(|log| {
        log.lines()
            .rev()
            .find(|line| !line.starts_with("processed ") && !line.is_empty())
    });
    match reason {
        Some(reason) => format!("{error}: {reason}"),
        None => error.to_string(),
    }
}
