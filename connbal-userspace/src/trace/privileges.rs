//! Which capabilities `connbal trace` holds, read from /proc/self/status.

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
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

/// Names of the capabilities needed to load and attach that are missing.
/// CAP_SYS_ADMIN stands in for CAP_BPF on kernels before 5.8 and in general.
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
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_exactly_what_is_missing() {
        assert_eq!(missing_from(0), ["CAP_BPF", "CAP_NET_ADMIN"]);
        assert_eq!(missing_from(1 << CAP_NET_ADMIN), ["CAP_BPF"]);
        assert!(missing_from((1 << CAP_NET_ADMIN) | (1 << CAP_BPF)).is_empty());
        assert!(missing_from((1 << CAP_NET_ADMIN) | (1 << CAP_SYS_ADMIN)).is_empty());
    }
}
