//! Real resolvers on a client's own host, for the tests: systemd-resolved
//! answering apps over Varlink as nss-resolve asks it (Fedora's and Arch's
//! default), and nscd answering glibc over its socket. Neither touches the
//! host: Debian's packages are unpacked, never installed (installing
//! resolved would point the host's /etc/resolv.conf at it, nscd would
//! start caching for the host), and each daemon and its clients run in a
//! lab namespace with their own /run and /etc files mounted over the
//! host's inside their private mount namespace.

use crate::lab::{Lab, SERVER_V4};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where the packages are unpacked, one folder per program and version.
const CACHE: &str = "/var/cache/connbal-test";
/// The user resolved drops to; not on this host, so added to the passwd
/// and group files its namespace sees.
const USER: &str = "systemd-resolve:x:991:991::/:/usr/sbin/nologin";
const GROUP: &str = "systemd-resolve:x:991:";

/// A program unpacked from Debian's packages of the version an installed
/// package has: resolved links the installed systemd's private library,
/// nscd the installed glibc's private symbols.
struct Unpacked {
    /// The folder under `CACHE`.
    name: &'static str,
    /// The installed package whose version it must have.
    installed: &'static str,
    packages: &'static [&'static str],
    /// Files that must be there once unpacked.
    files: &'static [&'static str],
}

const RESOLVED: Unpacked = Unpacked {
    name: "systemd-resolved",
    installed: "systemd",
    packages: &["systemd-resolved", "libnss-resolve"],
    files: &[
        "lib/systemd/systemd-resolved",
        "usr/lib/x86_64-linux-gnu/libnss_resolve.so.2",
    ],
};

const NSCD: Unpacked = Unpacked {
    name: "nscd",
    installed: "libc6",
    packages: &["nscd"],
    files: &["usr/sbin/nscd"],
};

fn installed_version(package: &str) -> Result<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", package])
        .output()
        .with_context(|| format!("dpkg-query {package}"))?;
    let version = String::from_utf8(out.stdout)?.trim().to_string();
    if !out.status.success() || version.is_empty() {
        bail!("{package} is not installed (dpkg-query -W {package})");
    }
    Ok(version)
}

impl Unpacked {
    fn root(&self) -> Option<PathBuf> {
        let version = installed_version(self.installed).ok()?;
        let root = Path::new(CACHE).join(self.name).join(version);
        self.files
            .iter()
            .all(|f| root.join(f).is_file())
            .then_some(root)
    }

    fn unpack(&self) -> Result<PathBuf> {
        if let Some(root) = self.root() {
            return Ok(root);
        }
        let version = installed_version(self.installed)?;
        let root = Path::new(CACHE).join(self.name).join(&version);
        let download = Path::new(CACHE).join(self.name).join("download");
        fs::create_dir_all(&download)?;
        crate::lab::run(
            Command::new("apt-get")
                .current_dir(&download)
                .arg("download")
                .args(self.packages.iter().map(|p| format!("{p}={version}"))),
        )
        .with_context(|| format!("apt-get download {}", self.packages.join(" ")))?;
        for deb in fs::read_dir(&download)? {
            let deb = deb?.path();
            if deb.extension().is_some_and(|e| e == "deb") {
                crate::lab::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))
                    .with_context(|| format!("dpkg-deb -x {}", deb.display()))?;
                fs::remove_file(&deb)?;
            }
        }
        self.root().with_context(|| {
            format!(
                "the unpacked {} lacks {}",
                self.name,
                self.files.join(" or ")
            )
        })
    }
}

/// Whether both are unpacked.
pub fn unpacked() -> bool {
    RESOLVED.root().is_some() && NSCD.root().is_some()
}

/// Downloads and unpacks both (as root; `cargo xtask test` does it).
pub fn unpack() -> Result<()> {
    RESOLVED.unpack()?;
    NSCD.unpack()?;
    Ok(())
}

/// A resolver daemon running in a lab namespace (systemd-resolved
/// forwarding to the lab's authoritative server, or nscd asking the
/// namespace's resolver), and how a client there reaches it. Stopped with
/// the lab.
pub struct HostResolver {
    /// Its folder under /run (`systemd`, `nscd`), and what is mounted there.
    run_at: &'static str,
    run: PathBuf,
    /// Files mounted over those of /etc by the same name.
    etc: PathBuf,
    etc_files: &'static str,
    /// Put on the library path (libnss_resolve), if any.
    lib: Option<PathBuf>,
}

/// Runs `"$@"` with the daemon's folder of /run, its /etc files (resolved:
/// passwd and group naming its user, nsswitch.conf asking it first), and
/// libnss_resolve on the library path. `ip netns exec` has already given
/// it a mount namespace of its own, a slave of the host's: nothing mounted
/// here reaches the host. A tmpfs over /run, so that the folder need not
/// exist on the host.
const WRAP: &str = r#"set -e
mount -t tmpfs connbal-run /run
mkdir "/run/$CONNBAL_RUN_AT"
mount --bind "$CONNBAL_RUN" "/run/$CONNBAL_RUN_AT"
for f in $CONNBAL_ETC_FILES; do mount --bind "$CONNBAL_ETC/$f" "/etc/$f"; done
if [ -n "$CONNBAL_LIB" ]; then export LD_LIBRARY_PATH="$CONNBAL_LIB"; fi
exec "$@""#;

impl HostResolver {
    /// What runs a program as a host with this resolver would, inside `ip
    /// netns exec NS`: the program and its arguments follow.
    pub fn wrapper(&self) -> Vec<String> {
        let var = |name: &str, path: &Path| format!("{name}={}", path.display());
        vec![
            "env".into(),
            format!("CONNBAL_RUN_AT={}", self.run_at),
            var("CONNBAL_RUN", &self.run),
            var("CONNBAL_ETC", &self.etc),
            format!("CONNBAL_ETC_FILES={}", self.etc_files),
            var("CONNBAL_LIB", self.lib.as_deref().unwrap_or(Path::new(""))),
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
    ) -> Result<HostResolver> {
        let root = RESOLVED
            .root()
            .context("systemd-resolved is not unpacked: `cargo xtask test` does it, as root")?;
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
        let resolved = HostResolver {
            run_at: "systemd",
            run,
            etc,
            etc_files: "passwd group nsswitch.conf",
            lib: Some(root.join("usr/lib/x86_64-linux-gnu")),
        };
        let program = [root.join("lib/systemd/systemd-resolved").into_os_string()];
        let socket = resolved.varlink_socket();
        self.start_daemon(("resolved", ns, wrap), &resolved, &program, &socket)?;
        Ok(resolved)
    }

    /// Starts nscd in `ns` (caching hosts only, asking the namespace's
    /// resolver), in whatever `wrap` puts it, and waits for its socket.
    pub fn start_nscd(
        &mut self,
        ns: &str,
        wrap: impl FnOnce(&str) -> Command,
    ) -> Result<HostResolver> {
        let root = NSCD
            .root()
            .context("nscd is not unpacked: `cargo xtask test` does it, as root")?;
        let (run, etc) = (self.dir.join("nscd-run"), self.dir.join("nscd-etc"));
        fs::create_dir_all(&run)?;
        fs::create_dir_all(&etc)?;
        // Hosts only, nothing kept on disk.
        let conf: String = ["passwd", "group", "services", "netgroup"]
            .iter()
            .map(|db| format!("enable-cache {db} no\n"))
            .chain([
                "enable-cache hosts yes\npositive-time-to-live hosts 3600\n".into(),
                "persistent hosts no\nshared hosts yes\n".into(),
            ])
            .collect();
        fs::write(etc.join("nscd.conf"), conf)?;
        fs::write(
            etc.join("nsswitch.conf"),
            "passwd: files\ngroup: files\nhosts: files dns\n",
        )?;
        let nscd = HostResolver {
            run_at: "nscd",
            run,
            etc,
            etc_files: "nsswitch.conf",
            lib: None,
        };
        let program = [
            root.join("usr/sbin/nscd").into_os_string(),
            "--foreground".into(),
            format!("--config-file={}", nscd.etc.join("nscd.conf").display()).into(),
        ];
        let socket = nscd.run.join("socket");
        self.start_daemon(("nscd", ns, wrap), &nscd, &program, &socket)?;
        Ok(nscd)
    }

    /// Runs `program` in `ns` behind `resolver`'s mounts, in whatever
    /// `wrap` puts it, its stderr in DAEMON.log of the lab; waits for
    /// `socket`.
    fn start_daemon(
        &mut self,
        (daemon, ns, wrap): (&str, &str, impl FnOnce(&str) -> Command),
        resolver: &HostResolver,
        program: &[std::ffi::OsString],
        socket: &Path,
    ) -> Result<()> {
        let mut cmd = wrap("ip");
        cmd.args(["netns", "exec", ns])
            .args(resolver.wrapper())
            .args(program)
            .stdout(Stdio::null())
            .stderr(fs::File::create(self.dir.join(format!("{daemon}.log")))?);
        self.spawn(daemon, cmd)?;
        self.wait_for_socket(socket, daemon)
    }

    fn wait_for_socket(&self, socket: &Path, daemon: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if Instant::now() > deadline {
                bail!(
                    "{daemon} made no socket {} in 10 s; its log: {}",
                    socket.display(),
                    fs::read_to_string(self.dir.join(format!("{daemon}.log"))).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}
