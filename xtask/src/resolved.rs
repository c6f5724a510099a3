//! A real systemd-resolved for the tests, answering apps over Varlink as
//! nss-resolve asks it (Fedora's and Arch's default), without touching the
//! host: Debian's `systemd-resolved` and `libnss-resolve` packages are
//! unpacked, never installed (installing would point the host's
//! /etc/resolv.conf at it), and the daemon and its clients run in a lab
//! namespace with their own /run, /etc/passwd and /etc/nsswitch.conf
//! mounted over the host's inside their private mount namespace.

use crate::lab::{Lab, SERVER_V4};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where the packages are unpacked, one folder per systemd version.
const CACHE: &str = "/var/cache/connbal-test/systemd-resolved";
/// The user resolved drops to; not on this host, so added to the passwd
/// and group files its namespace sees.
const USER: &str = "systemd-resolve:x:991:991::/:/usr/sbin/nologin";
const GROUP: &str = "systemd-resolve:x:991:";

/// The installed systemd's version: resolved links its private
/// libsystemd-shared, so the packages must be that exact version.
fn systemd_version() -> Result<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "systemd"])
        .output()
        .context("dpkg-query systemd")?;
    let version = String::from_utf8(out.stdout)?.trim().to_string();
    if !out.status.success() || version.is_empty() {
        bail!("systemd is not installed (dpkg-query -W systemd)");
    }
    Ok(version)
}

/// The unpacked packages' root, if there.
pub fn unpacked() -> Option<PathBuf> {
    let root = Path::new(CACHE).join(systemd_version().ok()?);
    let ready = root.join("lib/systemd/systemd-resolved").is_file()
        && root
            .join("usr/lib/x86_64-linux-gnu/libnss_resolve.so.2")
            .is_file();
    ready.then_some(root)
}

/// Downloads and unpacks the packages (as root; `xtask setup-tests`).
pub fn unpack() -> Result<PathBuf> {
    if let Some(root) = unpacked() {
        return Ok(root);
    }
    let version = systemd_version()?;
    let root = Path::new(CACHE).join(&version);
    let download = Path::new(CACHE).join("download");
    fs::create_dir_all(&download)?;
    crate::lab::run(
        Command::new("apt-get")
            .current_dir(&download)
            .arg("download")
            .arg(format!("systemd-resolved={version}"))
            .arg(format!("libnss-resolve={version}")),
    )
    .context("apt-get download systemd-resolved libnss-resolve")?;
    for deb in fs::read_dir(&download)? {
        let deb = deb?.path();
        if deb.extension().is_some_and(|e| e == "deb") {
            crate::lab::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))
                .with_context(|| format!("dpkg-deb -x {}", deb.display()))?;
            fs::remove_file(&deb)?;
        }
    }
    unpacked().context("the unpacked packages lack systemd-resolved or libnss_resolve.so.2")?;
    Ok(root)
}

/// A running systemd-resolved in a lab namespace, forwarding to the lab's
/// authoritative server. Stopped with the lab.
pub struct Resolved {
    /// Its /run/systemd: the Varlink sockets appear here.
    run: PathBuf,
    etc: PathBuf,
    lib: PathBuf,
}

/// Runs `"$@"` with resolved's /run/systemd, the passwd and group that
/// name its user, nsswitch.conf asking it first, and libnss_resolve on
/// the library path. `ip netns exec` has already given it a mount
/// namespace of its own, a slave of the host's: nothing mounted here
/// reaches the host. A tmpfs over /run, so that /run/systemd need not
/// exist on the host.
const WRAP: &str = r#"set -e
mount -t tmpfs connbal-run /run
mkdir /run/systemd
mount --bind "$CONNBAL_RUN" /run/systemd
for f in passwd group nsswitch.conf; do mount --bind "$CONNBAL_ETC/$f" "/etc/$f"; done
export LD_LIBRARY_PATH="$CONNBAL_LIB"
exec "$@""#;

impl Resolved {
    /// What runs a program as an nss-resolve host would, inside `ip netns
    /// exec NS`: the program and its arguments follow.
    pub fn wrapper(&self) -> Vec<String> {
        let var = |name: &str, path: &Path| format!("{name}={}", path.display());
        vec![
            "env".into(),
            var("CONNBAL_RUN", &self.run),
            var("CONNBAL_ETC", &self.etc),
            var("CONNBAL_LIB", &self.lib),
            "sh".into(),
            "-c".into(),
            WRAP.into(),
            "sh".into(),
        ]
    }

    /// The socket nss-resolve asks, as the host sees it.
    pub fn varlink_socket(&self) -> PathBuf {
        self.run.join("resolve/io.systemd.Resolve")
    }

    /// Its monitor's socket, as the host sees it.
    pub fn monitor_socket(&self) -> PathBuf {
        self.run.join("resolve/io.systemd.Resolve.Monitor")
    }
}

impl Lab {
    /// Starts systemd-resolved in `ns`, in whatever `wrap` puts it (a
    /// cgroup), and waits for its Varlink socket.
    pub fn start_resolved(
        &mut self,
        ns: &str,
        wrap: impl FnOnce(&str) -> Command,
    ) -> Result<Resolved> {
        let root = unpacked()
            .context("systemd-resolved is not unpacked: run `cargo xtask setup-tests` as root")?;
        let (run, etc) = (self.dir.join("resolved-run"), self.dir.join("resolved-etc"));
        fs::create_dir_all(run.join("resolved.conf.d"))?;
        fs::create_dir_all(&etc)?;
        fs::write(
            run.join("resolved.conf.d/connbal.conf"),
            format!(
                "[Resolve]\nDNS={SERVER_V4}\nDomains=~.\nDNSStubListener=no\nLLMNR=no\nMulticastDNS=no\nDNSSEC=no\n"
            ),
        )?;
        for (file, line) in [("passwd", USER), ("group", GROUP)] {
            let mut text = fs::read_to_string(Path::new("/etc").join(file))?;
            text.push_str(line);
            text.push('\n');
            fs::write(etc.join(file), text)?;
        }
        fs::write(
            etc.join("nsswitch.conf"),
            "passwd: files\ngroup: files\nhosts: resolve [!UNAVAIL=return] files\n",
        )?;
        let resolved = Resolved {
            run,
            etc,
            lib: root.join("usr/lib/x86_64-linux-gnu"),
        };
        let mut cmd = wrap("ip");
        cmd.args(["netns", "exec", ns])
            .args(resolved.wrapper())
            .arg(root.join("lib/systemd/systemd-resolved"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(self.dir.join("resolved.log"))?);
        self.spawn("systemd-resolved", cmd)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !resolved.varlink_socket().exists() {
            if Instant::now() > deadline {
                bail!(
                    "systemd-resolved made no Varlink socket in 10 s; its log: {}",
                    fs::read_to_string(self.dir.join("resolved.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(resolved)
    }
}
