//! Session affinity behind a VIP, read from the kernel rather than
//! guessed from the spread.
//!
//! kube-proxy's iptables mode writes `sessionAffinity: ClientIP` as an
//! xt_recent list per endpoint, named after the endpoint's chain
//! (`-m recent --name KUBE-SEP-… --rcheck --seconds 10800`), holding the
//! client addresses it sent there. The kernel shows each list as
//! `/proc/net/xt_recent/<name>`, one `src=ADDRESS ttl: …` line per client,
//! for the network namespace of the reader: the node's, for connbal on
//! the host network as the DaemonSet runs it. A level whose every
//! connection went to one backend, and whose client is in such a list,
//! is pinned by design. The lists are read when a report has such a
//! level, never per packet.
//!
//! Not read: kube-proxy's nftables mode keeps affinity in nftables sets
//! (`affinity-…`), which only netlink shows, and IPVS its own persistence
//! table; there the finding stays "one backend", with both causes named.

use crate::aggregator::{VipFinding, VipSpread};
use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::Path;

/// The reader's own network namespace's lists.
pub const LISTS: &str = "/proc/self/net/xt_recent";
/// kube-proxy's endpoint chains, which name its affinity lists.
const KUBE_PROXY_LISTS: &str = "KUBE-SEP-";
/// Lists read per report at most (one per endpoint of every Service with
/// affinity), and bytes per list (xt_recent keeps 200 addresses a list by
/// default, some 100 bytes a line).
const MAX_LISTS: usize = 16_384;
const MAX_LIST_BYTES: u64 = 1 << 20;

/// Marks each level of `spreads` pinned to one backend whose client is in
/// one of kube-proxy's affinity lists under `dir`.
pub fn mark_pinned(spreads: &mut [VipSpread], dir: &Path) {
    let pinned = |s: &VipSpread| {
        s.balance
            .as_ref()
            .is_some_and(|b| b.finding == VipFinding::OneBackend)
    };
    if !spreads.iter().any(pinned) {
        return;
    }
    let lists = clients_in_lists(dir);
    for spread in spreads.iter_mut().filter(|s| pinned(s)) {
        let list = spread.sources.iter().find_map(|a| lists.get(a)).cloned();
        if let Some(list) = list {
            spread.pinned_by(&list);
        }
    }
}

/// Each client address in a kube-proxy affinity list, with the list's
/// name (the first in name order, when in several). None when the lists
/// are not there (no xt_recent in this kernel or namespace) or cannot be
/// read: the finding then names both causes, as without this.
fn clients_in_lists(dir: &Path) -> HashMap<IpAddr, String> {
    let mut clients = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return clients;
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.starts_with(KUBE_PROXY_LISTS))
        .take(MAX_LISTS)
        .collect();
    names.sort_unstable();
    for name in names {
        let mut text = String::new();
        let read = std::fs::File::open(dir.join(&name))
            .and_then(|f| f.take(MAX_LIST_BYTES).read_to_string(&mut text));
        if read.is_err() {
            continue;
        }
        for address in addresses(&text) {
            clients.entry(address).or_insert_with(|| name.clone());
        }
    }
    clients
}

/// The addresses of a list's lines, `src=10.0.0.5 ttl: 64 last_seen: …`
/// (IPv6 as `src=fd00::5`).
fn addresses(list: &str) -> impl Iterator<Item = IpAddr> + '_ {
    list.lines().filter_map(|line| {
        let rest = line.strip_prefix("src=")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines as xt_recent.c's `recent_seq_show` writes them.
    #[test]
    fn a_lists_lines_give_their_client_addresses() {
        let list = "src=198.51.100.10 ttl: 63 last_seen: 4296184019 oldest_pkt: 3 4296183019, 4296183519, 4296184019\n\
                    src=fd00::7 ttl: 64 last_seen: 4296184020 oldest_pkt: 1 4296184020\n\
                    garbage\n";
        let found: Vec<IpAddr> = addresses(list).collect();
        assert_eq!(
            found,
            [
                "198.51.100.10".parse::<IpAddr>().unwrap(),
                "fd00::7".parse().unwrap()
            ]
        );
    }

    /// Only kube-proxy's lists count, and a level is marked only when it
    /// was pinned to one backend.
    #[test]
    fn a_pinned_level_whose_client_is_in_a_kube_proxy_list_is_session_affinity() {
        let dir = std::env::temp_dir().join(format!("connbal-xt-recent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let line = |address: &str| format!("src={address} ttl: 63 last_seen: 1 oldest_pkt: 1 1\n");
        std::fs::write(dir.join("KUBE-SEP-ABCDEF"), line("10.0.0.2")).unwrap();
        std::fs::write(dir.join("SSH-BRUTE"), line("10.0.0.3")).unwrap();
        let level = |connections: usize| {
            let vip = "10.1.0.1:80".parse().unwrap();
            let translated = vec![Some("10.244.1.1:8080"); connections];
            crate::testing::behind_a_vip("web.example", vip, &translated)
                .report()
                .behind_vips
                .remove(0)
        };
        // 10.0.0.2, pinned; 10.0.0.3, pinned, in another list; 10.0.0.2
        // with too few connections to say.
        let mut other = level(9);
        other.sources = vec!["10.0.0.3".parse().unwrap()];
        let mut spreads = vec![level(9), other, level(3)];
        assert_eq!(spreads[0].sources, ["10.0.0.2".parse::<IpAddr>().unwrap()]);
        mark_pinned(&mut spreads, &dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let findings: Vec<(Option<VipFinding>, Option<&str>)> = spreads
            .iter()
            .map(|s| {
                let b = s.balance.as_ref();
                (
                    b.map(|b| b.finding),
                    b.and_then(|b| b.affinity_list.as_deref()),
                )
            })
            .collect();
        assert_eq!(
            findings,
            [
                (Some(VipFinding::SessionAffinity), Some("KUBE-SEP-ABCDEF")),
                (Some(VipFinding::OneBackend), None),
                (None, None),
            ]
        );
    }
}
