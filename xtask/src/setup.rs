//! Installing what the tests and the eBPF build need on a fresh machine.

use anyhow::{Context, Result};
use std::process::Command;

/// Tools the root-only tests run, and the Debian package providing each.
pub const TEST_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("dnsmasq", "dnsmasq-base"),
    ("dig", "bind9-dnsutils"),
    ("curl", "curl"),
    ("tcpdump", "tcpdump"),
    ("editcap", "wireshark-common"),
    ("tshark", "tshark"),
    ("script", "bsdutils"),
    ("bpftool", "bpftool"),
    ("tc", "iproute2"),
    ("setpriv", "util-linux"),
    ("tmux", "tmux"),
    ("python3", "python3"),
    ("nft", "nftables"),
    ("man", "man-db"),
    // `java App.java` compiles the source: the JDK, not just a JRE.
    ("javac", "default-jdk-headless"),
    ("java", "default-jdk-headless"),
    // A real Docker (tests/runtimes_live.rs), its image built from Debian
    // packages, since no registry is reachable.
    ("dockerd", "docker.io"),
    ("docker", "docker.io"),
    ("iptables", "iptables"),
    ("mmdebstrap", "mmdebstrap"),
    ("nsenter", "util-linux"),
    ("pkill", "procps"),
    // podman with the network stack Debian pairs it with (netavark and
    // aardvark-dns live in /usr/lib/podman, so they go with podman).
    ("podman", "podman"),
    ("podman", "netavark"),
    ("podman", "aardvark-dns"),
    // A static musl client, whose resolver sends with `sendto` on an
    // unconnected socket (host_live, runtimes_live).
    ("musl-gcc", "musl-tools"),
    // A Go client with Go's own resolver (host_live).
    ("go", "golang-go"),
    // systemd-resolved is unpacked, not installed (`resolved`), and links
    // the installed systemd's private library.
    ("systemctl", "systemd"),
    ("promtool", "prometheus"),
    ("prometheus", "prometheus"),
];

/// Python modules the tests import, and the Debian package providing each
/// (tests/manifests.rs reads the Kubernetes manifests with PyYAML and
/// validates them against the official client's models of the API).
pub const TEST_PYTHON_MODULES: &[(&str, &str)] = &[
    ("yaml", "python3-yaml"),
    ("kubernetes", "python3-kubernetes"),
];

/// Debian's Python, which the packages above extend: a `python3` earlier
/// on PATH (a pyenv shim) does not see them.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

fn python_has(module: &str) -> bool {
    Command::new(SYSTEM_PYTHON)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|out| out.status.success())
}

pub fn install_test_packages() -> Result<()> {
    let tools: Vec<&str> = TEST_TOOLS.iter().map(|(t, _)| *t).collect();
    let missing = crate::lab::missing_tools(&tools);
    let mut packages: Vec<&str> = TEST_TOOLS
        .iter()
        .filter(|(t, _)| missing.iter().any(|m| m == t))
        .map(|(_, p)| *p)
        .collect();
    packages.extend(
        TEST_PYTHON_MODULES
            .iter()
            .filter(|(module, _)| !python_has(module))
            .map(|(_, p)| *p),
    );
    let resolved = !crate::resolved::unpacked();
    if packages.is_empty() && !resolved {
        return Ok(());
    }
    if !crate::lab::is_root() {
        eprintln!(
            "xtask: not root, so not installing {}{} (needed for the root-only tests, which will skip)",
            packages.join(" "),
            if resolved { " systemd-resolved and nscd (unpacked)" } else { "" }
        );
        return Ok(());
    }
    if !packages.is_empty() {
        eprintln!("xtask: installing {}", packages.join(" "));
        apt_install(&packages)?;
    }
    if resolved {
        crate::resolved::unpack()?;
        eprintln!("xtask: unpacked systemd-resolved and nscd under /var/cache/connbal-test");
    }
    Ok(())
}

pub fn apt_install(packages: &[&str]) -> Result<()> {
    crate::lab::run(Command::new("apt-get").args(["update", "-qq"])).context("apt-get update")?;
    crate::lab::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages),
    )
    .context("apt-get install")?;
    Ok(())
}
