//! Which capabilities `connbal trace` holds, read from /proc/self/status.

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set, or `None` if /proc cannot tell.
fn effective() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Names of the capabilities needed to load and attach that are missing:
/// CAP_BPF to load, CAP_NET_ADMIN to attach to interfaces and cgroups,
/// and CAP_PERFMON, without which the verifier refuses the programs'
/// pointer arithmetic on packet and map data ("prohibited for !root").
/// CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON.
pub fn missing() -> Vec<&'static str> {
    let Some(caps) = effective() else {
        return Vec::new();
    };
    missing_from(caps)
}

fn missing_from(caps: u64) -> Vec<&'static str> {
    let has = |cap: u32| caps & (1 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    missing
}

/// The missing capabilities as a phrase: "CAP_BPF, CAP_NET_ADMIN and
/// CAP_PERFMON".
pub fn missing_text() -> String {
    let missing = missing();
    match missing.split_last() {
        None => String::new(),
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// Drops what `connbal trace` no longer needs once it is attached: every
/// capability (in netlink mode all but CAP_NET_ADMIN, which removing its
/// filters on exit needs), optionally switching to `user`, and sets
/// no_new_privs so nothing can be regained, and makes the process not
/// dumpable so no other process of the user can take its handles. Called
/// before the first record is read.
pub fn drop_after_attach(
    user: Option<&nix::unistd::User>,
    keep_net_admin: bool,
) -> Result<(), DropError> {
    let keep: &[caps::Capability] = if keep_net_admin {
        &[caps::Capability::CAP_NET_ADMIN]
    } else {
        &[]
    };
    keep_only(keep, user)
}

/// Drops every capability but `keep` (from every set, the bounding set
/// included), optionally switching to `user`; sets no_new_privs and makes
/// the process not dumpable; then checks that no thread holds more.
pub fn keep_only(
    keep: &[caps::Capability],
    user: Option<&nix::unistd::User>,
) -> Result<(), DropError> {
    use caps::{CapSet, CapsHashSet};
    let keep: CapsHashSet = keep.iter().copied().collect();
    // The bounding set first, while CAP_SETPCAP is still effective; a
    // process given only file capabilities may lack it, and then the
    // bounding set stays (permitted and effective still go below).
    for cap in caps::all() {
        if !keep.contains(&cap) {
            let _ = caps::drop(None, CapSet::Bounding, cap);
        }
    }
    if let Some(user) = user {
        if !keep.is_empty() {
            nix::sys::prctl::set_keepcaps(true)
                .map_err(|e| DropError::Syscall("prctl(PR_SET_KEEPCAPS)", e))?;
        }
        nix::unistd::setgroups(&[user.gid]).map_err(|e| DropError::Syscall("setgroups", e))?;
        nix::unistd::setgid(user.gid).map_err(|e| DropError::Syscall("setgid", e))?;
        nix::unistd::setuid(user.uid).map_err(|e| DropError::Syscall("setuid", e))?;
    }
    for set in [CapSet::Ambient, CapSet::Inheritable] {
        caps::clear(None, set).map_err(DropError::Caps)?;
    }
    caps::set(None, CapSet::Effective, &keep).map_err(DropError::Caps)?;
    caps::set(None, CapSet::Permitted, &keep).map_err(DropError::Caps)?;
    nix::sys::prctl::set_no_new_privs()
        .map_err(|e| DropError::Syscall("prctl(PR_SET_NO_NEW_PRIVS)", e))?;
    // With no capability left, another process of the same user may
    // ptrace-access connbal (its permitted set is a subset of anyone's):
    // /proc/PID/fd and pidfd_getfd would hand it the programs' links and
    // the ring buffer, to detach the first and read host-wide DNS from the
    // second. Not dumpable, only root (CAP_SYS_PTRACE) may.
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| DropError::Syscall("prctl(PR_SET_DUMPABLE)", e))?;
    // capset changes the calling thread only: a thread started before
    // this call would still hold everything. None should exist; check.
    let allowed = keep.iter().fold(0u64, |mask, cap| mask | cap.bitmask());
    if let Some(thread) = thread_holding_more_than(allowed) {
        return Err(DropError::ThreadKept(thread));
    }
    Ok(())
}

/// A thread of this process (`name (tid)`) whose effective or permitted
/// capabilities go beyond `allowed`, if any; threads /proc cannot show
/// (gone meanwhile) pass.
fn thread_holding_more_than(allowed: u64) -> Option<String> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        let holds = ["CapEff:", "CapPrm:"].iter().any(|name| {
            field(name)
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                .is_some_and(|caps| caps & !allowed != 0)
        });
        if holds {
            return Some(format!(
                "{} ({})",
                field("Name:").unwrap_or("?"),
                task.file_name().to_string_lossy()
            ));
        }
    }
    None
}

#[derive(Debug, thiserror::Error)]
pub enum DropError {
    #[error("dropping privileges: {0} failed: {1}")]
    Syscall(&'static str, nix::errno::Errno),
    #[error("dropping capabilities: {0}")]
    Caps(caps::errors::CapsError),
    #[error("dropping capabilities: thread {0} still holds some (capset changes one thread)")]
    ThreadKept(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_exactly_what_is_missing() {
        assert_eq!(missing_from(0), ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"]);
        assert_eq!(missing_from(1 << CAP_NET_ADMIN), ["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(
            missing_from((1 << CAP_NET_ADMIN) | (1 << CAP_BPF)),
            ["CAP_PERFMON"]
        );
        assert!(
            missing_from((1 << CAP_NET_ADMIN) | (1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty()
        );
        assert!(missing_from((1 << CAP_NET_ADMIN) | (1 << CAP_SYS_ADMIN)).is_empty());
    }
}
