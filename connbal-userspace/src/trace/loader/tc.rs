//! `--iface`: the classifier on each interface, both ways, as a TCX link
//! on Linux 6.6+ (gone with the process, even on SIGKILL) or a filter on a
//! clsact qdisc over netlink (Linux 4.5+; see `netlink` for what keeps
//! those honest).

use super::{
    interface_index, load, netlink, program, program_error, AttachMode, Loaded, LoaderError,
    Object, Options, Programs,
};
use aya::programs::tc::{NlOptions, SchedClassifier, TcAttachOptions, TcAttachType};
use aya::programs::LinkOrder;
use aya::util::KernelVersion;

pub(super) const PROGRAM: &str = "connbal_tc";
/// The empty classifier, for measuring the per-packet floor.
const NOOP_PROGRAM: &str = "connbal_noop";

pub fn load_and_attach(interfaces: &[String], options: &Options) -> Result<Loaded, LoaderError> {
    let interfaces = interfaces
        .iter()
        .map(|name| {
            interface_index(name)
                .map(|index| (name.clone(), index))
                .ok_or_else(|| LoaderError::NoSuchInterface(name.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Declared before `ebpf`, so that on an early return it drops after the
    // filters are detached, as in `Loaded`.
    let mut claims = Vec::new();
    let Object {
        mut ebpf, counters, ..
    } = load(options)?;
    let name = if options.programs == Programs::Empty {
        NOOP_PROGRAM
    } else {
        PROGRAM
    };
    let program: &mut SchedClassifier = program(&mut ebpf, name)?;
    program.load().map_err(program_error)?;
    let mode = match options.attach {
        AttachMode::Auto
            if KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0)) =>
        {
            AttachMode::Tcx
        }
        AttachMode::Auto => AttachMode::Netlink,
        chosen => chosen,
    };
    for (iface, index) in &interfaces {
        // Only netlink filters outlive a killed connbal and need the lock
        // that tells stale ones from live ones. TCX links go with their
        // process, so TCX takes no lock: no file in the root-owned
        // /run/connbal, which a run with capabilities instead of root
        // could not create, and none left behind.
        if mode == AttachMode::Netlink {
            claims.push(netlink::claim_interface(iface, *index)?);
        } else {
            netlink::remove_stale_filters(iface, *index);
        }
        for (attach_type, direction) in [
            (TcAttachType::Ingress, "ingress"),
            (TcAttachType::Egress, "egress"),
        ] {
            let attach_options = match mode {
                AttachMode::Netlink => TcAttachOptions::Netlink(NlOptions::default()),
                _ => TcAttachOptions::TcxOrder(LinkOrder::default()),
            };
            program
                .attach_with_options(iface, attach_type, attach_options)
                .map_err(|source| LoaderError::Attach {
                    iface: iface.clone(),
                    direction,
                    source,
                })?;
        }
    }
    Ok(Loaded {
        open_sockets: None,
        nat: None,
        traffic: None,
        lookups: None,
        ebpf,
        counters,
        mode: Some(mode),
        interfaces,
        _claims: claims,
    })
}
