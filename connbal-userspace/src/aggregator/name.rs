//! DNS names: their presentation form, and their keys in tables.
//!
//! Hand-written rather than hickory's `Display` because names are
//! attacker-controlled and end up in TSV rows and terminals: every byte
//! outside printable ASCII (and space, `.` inside a label, `\`) is escaped the
//! RFC 1035 way (`\009`, `\.`), so one report row is always one line.

use hickory_proto::rr::Name;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};

/// A DNS name as a table key: a keyed 64-bit hash of its lower-cased bytes
/// (names compare case-insensitively). Pending queries and SRV targets only
/// need to recognise a name again, and a flood of them should not cost a
/// heap string each; the seed is random per run, so collisions cannot be
/// aimed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NameKey(u64);

impl NameKey {
    #[cfg(test)]
    pub const fn for_test(raw: u64) -> Self {
        Self(raw)
    }
}

/// The hasher behind every [`NameKey`] of one aggregator.
#[derive(Debug, Default)]
pub struct NameKeys {
    hasher: foldhash::fast::RandomState,
}

impl NameKeys {
    // Hashed once or twice per DNS message; inlined, the hasher's state
    // stays in registers (profiles showed the call).
    #[inline]
    pub fn key(&self, name: &str) -> NameKey {
        let mut hasher = self.hasher.build_hasher();
        for byte in name.bytes() {
            hasher.write_u8(byte.to_ascii_lowercase());
        }
        NameKey(hasher.finish())
    }
}

pub fn presentation(name: &Name) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    for label in name {
        for &byte in label {
            match byte {
                b'.' | b'\\' => {
                    out.push('\\');
                    out.push(byte as char);
                }
                0x21..=0x7e => out.push(byte as char),
                _ => {
                    let _ = write!(out, "\\{byte:03}");
                }
            }
        }
        out.push('.');
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Label;

    fn name_of(labels: &[&[u8]]) -> Name {
        Name::from_labels(labels.iter().map(|l| Label::from_raw_bytes(l).unwrap())).unwrap()
    }

    #[test]
    fn keys_ignore_case() {
        let keys = NameKeys::default();
        assert_eq!(keys.key("Web.Example."), keys.key("web.example."));
        assert_ne!(keys.key("web.example."), keys.key("www.example."));
    }

    #[test]
    fn plain_names_get_a_trailing_dot() {
        assert_eq!(
            presentation(&name_of(&[b"web", b"svc", b"example", b"com"])),
            "web.svc.example.com."
        );
        assert_eq!(presentation(&Name::root()), ".");
    }

    #[test]
    fn control_bytes_dots_and_backslashes_are_escaped() {
        let name = name_of(&[b"a\tb\nc", b"d.e\\f", b"\x1b[31mred", b"sp ace"]);
        let shown = presentation(&name);
        assert_eq!(shown, "a\\009b\\010c.d\\.e\\\\f.\\027[31mred.sp\\032ace.");
        assert!(shown.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    }
}
