//! Offsets of kernel structure members, read from the running kernel's
//! BTF (`/sys/kernel/btf/vmlinux`) at start and handed to the kernel
//! program as globals: Rust eBPF has no CO-RE relocations yet, and these
//! layouts change between kernel builds.
//!
//! Written here rather than taken from aya-obj: its BTF parser keeps a
//! struct's members crate-private (aya-obj 0.3), and all that is needed is
//! a walk of the type section to one struct's members, which the BTF
//! format (Documentation/bpf/btf.rst) makes short.

use std::path::Path;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
/// Nested anonymous structs and unions followed at most this deep.
const MAX_NESTING: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: not BTF (or cut short)")]
    Malformed(String),
    #[error("the kernel's BTF has no struct {0}")]
    NoStruct(String),
    #[error("the kernel's struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
}

/// The type section of a BTF blob, indexed by type id.
pub struct Btf {
    data: Vec<u8>,
    strings_at: usize,
    strings_len: usize,
    /// Byte offset of each type (id 1 is the first; id 0 is void).
    offsets: Vec<usize>,
}

/// One struct member: where it is and its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub byte_offset: u32,
    pub type_id: u32,
}

impl Btf {
    pub fn read(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(data).ok_or_else(|| BtfError::Malformed(path.display().to_string()))
    }

    fn parse(data: Vec<u8>) -> Option<Self> {
        let u16_at = |at: usize| Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?));
        let u32_at =
            |at: usize| Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?) as usize);
        if u16_at(0)? != MAGIC {
            return None;
        }
        let header_len = u32_at(4)?;
        let (type_off, type_len) = (u32_at(8)?, u32_at(12)?);
        let (str_off, str_len) = (u32_at(16)?, u32_at(20)?);
        let types_at = header_len + type_off;
        let strings_at = header_len + str_off;
        if data.len() < types_at + type_len || data.len() < strings_at + str_len {
            return None;
        }
        let mut offsets = Vec::new();
        let mut at = types_at;
        while at < types_at + type_len {
            offsets.push(at);
            let info = u32_at(at + 4)?;
            let vlen = info & 0xffff;
            let kind = (info >> 24) & 0x1f;
            let extra = match kind {
                1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
                3 => 12,                      // ARRAY
                4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
                6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
                2 | 7..=12 | 16 | 18 => 0,    // PTR, FWD…FUNC, FLOAT, TYPE_TAG
                _ => return None,
            };
            at += 12 + extra;
        }
        Some(Self {
            data,
            strings_at,
            strings_len: str_len,
            offsets,
        })
    }

    fn u32_at(&self, at: usize) -> u32 {
        self.data
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_le_bytes)
    }

    fn name(&self, name_off: u32) -> &[u8] {
        let start = self.strings_at + name_off as usize;
        let end = self.strings_at + self.strings_len;
        let rest = self.data.get(start..end).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// (kind, vlen, kind_flag, offset of the type's record) of `id`.
    fn kind_of(&self, id: u32) -> Option<(u32, u32, bool, usize)> {
        let at = *self.offsets.get((id as usize).checked_sub(1)?)?;
        let info = self.u32_at(at + 4);
        Some(((info >> 24) & 0x1f, info & 0xffff, info >> 31 == 1, at))
    }

    /// The member `member` of `struct name`, looking inside its anonymous
    /// structs and unions as C does.
    pub fn member(&self, name: &str, member: &str) -> Result<Member, BtfError> {
        let id = self.struct_id(name)?;
        self.find_member(id, member.as_bytes(), 0, 0)
            .ok_or_else(|| BtfError::NoMember {
                strukt: name.to_string(),
                member: member.to_string(),
            })
    }

    fn struct_id(&self, name: &str) -> Result<u32, BtfError> {
        (1..=self.offsets.len() as u32)
            .find(|&id| {
                self.kind_of(id).is_some_and(|(kind, _, _, at)| {
                    kind == KIND_STRUCT && self.name(self.u32_at(at)) == name.as_bytes()
                })
            })
            .ok_or_else(|| BtfError::NoStruct(name.to_string()))
    }

    /// The offset of `struct name`'s record in the type section.
    fn find_struct(&self, name: &str) -> Result<usize, BtfError> {
        let id = self.struct_id(name)?;
        self.kind_of(id)
            .map(|(_, _, _, at)| at)
            .ok_or_else(|| BtfError::NoStruct(name.to_string()))
    }

    fn find_member(&self, id: u32, wanted: &[u8], base_bits: u32, depth: usize) -> Option<Member> {
        let (kind, vlen, bitfields, at) = self.kind_of(id)?;
        if !matches!(kind, KIND_STRUCT | KIND_UNION) || depth > MAX_NESTING {
            return None;
        }
        for i in 0..vlen as usize {
            let m = at + 12 + 12 * i;
            let (name_off, type_id, offset) =
                (self.u32_at(m), self.u32_at(m + 4), self.u32_at(m + 8));
            // With kind_flag, the top byte is a bitfield's size.
            let bits = base_bits
                + if bitfields {
                    offset & 0xff_ffff
                } else {
                    offset
                };
            if name_off == 0 {
                if let Some(found) =
                    self.find_member(self.resolved(type_id), wanted, bits, depth + 1)
                {
                    return Some(found);
                }
            } else if self.name(name_off) == wanted {
                return Some(Member {
                    byte_offset: bits / 8,
                    type_id,
                });
            }
        }
        None
    }

    /// `id` with typedefs and qualifiers (volatile, const, restrict,
    /// type tags) looked through.
    fn resolved(&self, mut id: u32) -> u32 {
        for _ in 0..16 {
            match self.kind_of(id) {
                Some((8..=11 | 18, _, _, at)) => id = self.u32_at(at + 8),
                _ => break,
            }
        }
        id
    }

    /// The size in bytes of `struct name`.
    pub fn size_of(&self, name: &str) -> Result<u32, BtfError> {
        let at = self.find_struct(name)?;
        Ok(self.u32_at(at + 8))
    }

    /// The number of elements of an array type, if `id` is one.
    pub fn array_len(&self, id: u32) -> Option<u32> {
        let (kind, _, _, at) = self.kind_of(self.resolved(id))?;
        (kind == KIND_ARRAY).then(|| self.u32_at(at + 12 + 8))
    }
}

/// Where the thread-group leader's name is, from a task: the offsets of
/// `task_struct.group_leader` and `task_struct.comm`, the latter checked
/// to be the 16 bytes the records carry.
pub fn leader_comm_offsets(btf: &Btf) -> Result<(u32, u32), BtfError> {
    let leader = btf.member("task_struct", "group_leader")?;
    let comm = btf.member("task_struct", "comm")?;
    if btf.array_len(comm.type_id) != Some(16) {
        return Err(BtfError::NoMember {
            strukt: "task_struct".into(),
            member: "comm of 16 bytes".into(),
        });
    }
    Ok((leader.byte_offset, comm.byte_offset))
}

/// Where the iterator over open sockets finds what it records, and where
/// the packet programs find the network namespace of the task sending, as
/// the globals of the same names in the kernel program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketLayout {
    pub socket_sk: u32,
    pub sk_family: u32,
    pub sk_state: u32,
    pub sk_num: u32,
    pub sk_dport: u32,
    pub sk_daddr: u32,
    pub sk_v6_daddr: u32,
    pub sk_net: u32,
    pub sk_protocol: u32,
    pub sk_cgroup: u32,
    pub cgroup_kn: u32,
    pub kn_id: u32,
    pub net_cookie: u32,
    pub task_tgid: u32,
    pub task_pid: u32,
    pub task_nsproxy: u32,
    pub nsproxy_net: u32,
    /// What the traffic programs read besides: a socket's own addresses,
    /// and the bytes a TCP socket carried.
    pub sk_rcv_saddr: u32,
    pub sk_v6_rcv_saddr: u32,
    pub sk_flags: u32,
    pub inet_sport: u32,
    pub tcp_bytes_sent: u32,
    pub tcp_bytes_retrans: u32,
    pub tcp_bytes_received: u32,
}

impl SocketLayout {
    /// The globals to set, by name.
    pub fn globals(&self) -> [(&'static str, u32); 24] {
        [
            ("SOCKET_SK_OFFSET", self.socket_sk),
            ("SK_FAMILY_OFFSET", self.sk_family),
            ("SK_STATE_OFFSET", self.sk_state),
            ("SK_NUM_OFFSET", self.sk_num),
            ("SK_DPORT_OFFSET", self.sk_dport),
            ("SK_DADDR_OFFSET", self.sk_daddr),
            ("SK_V6_DADDR_OFFSET", self.sk_v6_daddr),
            ("SK_NET_OFFSET", self.sk_net),
            ("SK_PROTOCOL_OFFSET", self.sk_protocol),
            ("SK_CGROUP_OFFSET", self.sk_cgroup),
            ("CGROUP_KN_OFFSET", self.cgroup_kn),
            ("KN_ID_OFFSET", self.kn_id),
            ("NET_COOKIE_OFFSET", self.net_cookie),
            ("TASK_TGID_OFFSET", self.task_tgid),
            ("TASK_PID_OFFSET", self.task_pid),
            ("TASK_NSPROXY_OFFSET", self.task_nsproxy),
            ("NSPROXY_NET_OFFSET", self.nsproxy_net),
            ("SK_RCV_SADDR_OFFSET", self.sk_rcv_saddr),
            ("SK_V6_RCV_SADDR_OFFSET", self.sk_v6_rcv_saddr),
            ("SK_FLAGS_OFFSET", self.sk_flags),
            ("INET_SPORT_OFFSET", self.inet_sport),
            ("TCP_BYTES_SENT_OFFSET", self.tcp_bytes_sent),
            ("TCP_BYTES_RETRANS_OFFSET", self.tcp_bytes_retrans),
            ("TCP_BYTES_RECEIVED_OFFSET", self.tcp_bytes_received),
        ]
    }
}

/// `struct sock` begins with its `struct sock_common`, so the common
/// fields' offsets hold for a `struct sock *`.
pub fn socket_layout(btf: &Btf) -> Result<SocketLayout, BtfError> {
    let at = |strukt: &str, member: &str| btf.member(strukt, member).map(|m| m.byte_offset);
    if at("sock", "__sk_common")? != 0 {
        return Err(BtfError::NoMember {
            strukt: "sock".into(),
            member: "__sk_common at offset 0".into(),
        });
    }
    Ok(SocketLayout {
        socket_sk: at("socket", "sk")?,
        sk_family: at("sock_common", "skc_family")?,
        sk_state: at("sock_common", "skc_state")?,
        sk_num: at("sock_common", "skc_num")?,
        sk_dport: at("sock_common", "skc_dport")?,
        sk_daddr: at("sock_common", "skc_daddr")?,
        sk_v6_daddr: at("sock_common", "skc_v6_daddr")?,
        sk_net: at("sock_common", "skc_net")?,
        sk_protocol: at("sock", "sk_protocol")?,
        sk_cgroup: at("sock", "sk_cgrp_data")? + at("sock_cgroup_data", "cgroup")?,
        cgroup_kn: at("cgroup", "kn")?,
        kn_id: at("kernfs_node", "id")?,
        net_cookie: at("net", "net_cookie")?,
        task_tgid: at("task_struct", "tgid")?,
        task_pid: at("task_struct", "pid")?,
        task_nsproxy: at("task_struct", "nsproxy")?,
        nsproxy_net: at("nsproxy", "net_ns")?,
        sk_rcv_saddr: at("sock_common", "skc_rcv_saddr")?,
        sk_v6_rcv_saddr: at("sock_common", "skc_v6_rcv_saddr")?,
        sk_flags: at("sock_common", "skc_flags")?,
        inet_sport: at("inet_sock", "inet_sport")?,
        tcp_bytes_sent: at("tcp_sock", "bytes_sent")?,
        tcp_bytes_retrans: at("tcp_sock", "bytes_retrans")?,
        tcp_bytes_received: at("tcp_sock", "bytes_received")?,
    })
}

/// Where the NAT tracepoint finds a packet's conntrack entry and its two
/// tuples, as the globals of the same names in the kernel program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConntrackLayout {
    pub skb_nfct: u32,
    pub ct_status: u32,
    pub ct_tuplehash: u32,
    pub tuplehash_size: u32,
    pub tuplehash_tuple: u32,
}

impl ConntrackLayout {
    pub fn globals(&self) -> [(&'static str, u32); 5] {
        [
            ("SKB_NFCT_OFFSET", self.skb_nfct),
            ("CT_STATUS_OFFSET", self.ct_status),
            ("CT_TUPLEHASH_OFFSET", self.ct_tuplehash),
            ("TUPLEHASH_SIZE", self.tuplehash_size),
            ("TUPLEHASH_TUPLE_OFFSET", self.tuplehash_tuple),
        ]
    }
}

/// The program reads inside `struct nf_conntrack_tuple` at fixed offsets
/// (its layout has not changed since conntrack began): checked by its
/// size, and by where its halves are.
pub fn conntrack_layout(btf: &Btf) -> Result<ConntrackLayout, BtfError> {
    let at = |strukt: &str, member: &str| btf.member(strukt, member).map(|m| m.byte_offset);
    let unexpected = |what: &str| BtfError::NoMember {
        strukt: "nf_conntrack_tuple".into(),
        member: what.into(),
    };
    if btf.size_of("nf_conntrack_tuple")? != 40 {
        return Err(unexpected("of 40 bytes"));
    }
    if at("nf_conntrack_tuple", "src")? != 0 || at("nf_conntrack_tuple", "dst")? != 20 {
        return Err(unexpected("src at 0 and dst at 20"));
    }
    Ok(ConntrackLayout {
        skb_nfct: at("sk_buff", "_nfct")?,
        ct_status: at("nf_conn", "status")?,
        ct_tuplehash: at("nf_conn", "tuplehash")?,
        tuplehash_size: btf.size_of("nf_conntrack_tuple_hash")?,
        tuplehash_tuple: at("nf_conntrack_tuple_hash", "tuple")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's own BTF, where there is one: the offsets are
    /// where the kernel keeps them (checked against a known layout: comm
    /// lies after group_leader, both inside task_struct's first 4 KiB).
    #[test]
    fn the_running_kernels_task_struct_gives_the_leader_and_its_name() {
        let Ok(btf) = Btf::read(Path::new(VMLINUX)) else {
            eprintln!("skipped: no {VMLINUX}");
            return;
        };
        let (leader, comm) = leader_comm_offsets(&btf).unwrap();
        assert!(
            leader > 0 && comm > leader && comm < 8192,
            "{leader} {comm}"
        );
        assert_eq!(leader % 8, 0);
        // The same offsets bpftool reads, where it is installed.
        if let Some(dump) = bpftool_dump() {
            assert_eq!(
                bits_of(&dump, "task_struct", "group_leader"),
                Some(leader * 8)
            );
            assert_eq!(bits_of(&dump, "task_struct", "comm"), Some(comm * 8));
        }
        // A member inside an anonymous union: sk_buff's `len` sits in
        // plain sight, its `dev` inside a union.
        assert!(btf.member("sk_buff", "dev").is_ok());
        assert!(matches!(
            btf.member("task_struct", "no_such_member"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member("no_such_struct", "x"),
            Err(BtfError::NoStruct(_))
        ));
    }

    /// bpftool's raw dump of the running kernel's BTF, where it is installed.
    fn bpftool_dump() -> Option<String> {
        let out = std::process::Command::new("bpftool")
            .args(["btf", "dump", "file", VMLINUX, "format", "raw"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A direct (named, not inside an anonymous member) member's bit
    /// offset, as bpftool prints it.
    fn bits_of(dump: &str, strukt: &str, member: &str) -> Option<u32> {
        dump.lines()
            .skip_while(|l| !l.contains(&format!("] STRUCT '{strukt}' ")))
            .skip(1)
            .take_while(|l| l.starts_with('\t'))
            .find(|l| l.trim_start().starts_with(&format!("'{member}' ")))
            .and_then(|l| l.split("bits_offset=").nth(1))
            .and_then(|b| b.split_whitespace().next())
            .and_then(|b| b.parse::<u32>().ok())
    }

    /// What the open-socket iterator reads, where the kernel keeps it:
    /// the direct members as bpftool reads them, and sock_common's fields
    /// (inside anonymous unions, which bpftool prints apart) in the
    /// order the kernel declares them.
    #[test]
    fn the_running_kernels_sockets_give_what_the_walk_at_start_reads() {
        let Ok(btf) = Btf::read(Path::new(VMLINUX)) else {
            eprintln!("skipped: no {VMLINUX}");
            return;
        };
        let layout = socket_layout(&btf).unwrap();
        let common = [
            layout.sk_daddr,
            layout.sk_rcv_saddr,
            layout.sk_dport,
            layout.sk_num,
            layout.sk_family,
            layout.sk_state,
            layout.sk_net,
            layout.sk_v6_daddr,
            layout.sk_v6_rcv_saddr,
        ];
        assert!(common.windows(2).all(|w| w[0] < w[1]), "{layout:?}");
        assert_eq!(layout.sk_dport + 2, layout.sk_num, "{layout:?}");
        assert_eq!(layout.sk_daddr + 4, layout.sk_rcv_saddr, "{layout:?}");
        assert_eq!(
            layout.sk_v6_daddr + 16,
            layout.sk_v6_rcv_saddr,
            "{layout:?}"
        );
        assert!(layout.sk_protocol > layout.sk_v6_daddr, "{layout:?}");
        if let Some(dump) = bpftool_dump() {
            for (strukt, member, bytes) in [
                ("socket", "sk", layout.socket_sk),
                ("cgroup", "kn", layout.cgroup_kn),
                ("kernfs_node", "id", layout.kn_id),
                ("net", "net_cookie", layout.net_cookie),
                ("task_struct", "tgid", layout.task_tgid),
                ("task_struct", "pid", layout.task_pid),
                ("task_struct", "nsproxy", layout.task_nsproxy),
                ("nsproxy", "net_ns", layout.nsproxy_net),
                ("sock", "sk_protocol", layout.sk_protocol),
                ("inet_sock", "inet_sport", layout.inet_sport),
                ("tcp_sock", "bytes_sent", layout.tcp_bytes_sent),
                ("tcp_sock", "bytes_retrans", layout.tcp_bytes_retrans),
                ("tcp_sock", "bytes_received", layout.tcp_bytes_received),
            ] {
                assert_eq!(
                    bits_of(&dump, strukt, member),
                    Some(bytes * 8),
                    "{strukt}.{member}"
                );
            }
        }
    }

    /// What the NAT tracepoint reads, where bpftool says the kernel keeps
    /// it.
    #[test]
    fn the_running_kernels_conntrack_gives_what_the_nat_tracepoint_reads() {
        let Ok(btf) = Btf::read(Path::new(VMLINUX)) else {
            eprintln!("skipped: no {VMLINUX}");
            return;
        };
        let Ok(layout) = conntrack_layout(&btf) else {
            eprintln!("skipped: no conntrack in this kernel's BTF");
            return;
        };
        if let Some(dump) = bpftool_dump() {
            for (strukt, member, bytes) in [
                ("sk_buff", "_nfct", layout.skb_nfct),
                ("nf_conn", "status", layout.ct_status),
                ("nf_conn", "tuplehash", layout.ct_tuplehash),
                ("nf_conntrack_tuple_hash", "tuple", layout.tuplehash_tuple),
            ] {
                assert_eq!(
                    bits_of(&dump, strukt, member),
                    Some(bytes * 8),
                    "{strukt}.{member}"
                );
            }
            assert!(dump.contains(&format!(
                "] STRUCT 'nf_conntrack_tuple_hash' size={} ",
                layout.tuplehash_size
            )));
        }
    }

    #[test]
    fn anything_but_btf_is_refused() {
        assert!(Btf::parse(b"not btf at all, not at all".to_vec()).is_none());
        assert!(Btf::parse(vec![
            0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0
        ])
        .is_none());
    }
}
