//! DNS names in presentation form.
//!
//! Hand-written rather than hickory's `Display` because names are
//! attacker-controlled and end up in TSV rows and terminals: every byte
//! outside printable ASCII (and space, `.` inside a label, `\`) is escaped the
//! RFC 1035 way (`\009`, `\.`), so one report row is always one line.

use hickory_proto::rr::Name;
use std::fmt::Write as _;

pub fn presentation(name: &Name) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    for label in name.iter() {
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
