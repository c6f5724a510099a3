//! Developer tooling for connbal, also used by the root-only tests: the
//! network-namespace lab that real traffic runs in.
#![forbid(unsafe_code)]

pub mod bench;
pub mod cgroup;
pub mod ebpf;
pub mod gen;
pub mod lab;
mod layout;
pub mod load;
pub mod overhead;
pub mod record;
pub mod resolved;
pub mod setup;
pub mod snapshots;
