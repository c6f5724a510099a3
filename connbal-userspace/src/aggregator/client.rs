//! Who made a lookup or a connection: the key of every table, row, service
//! and observation, shown by every renderer through one `Display`.
//!
//! From a capture, a client is an address (the original's notion). Live,
//! where the kernel knows the socket, it is the socket's owner, grouped as
//! `--by` says: the app (cgroup and command), the cgroup, or the process.
//! Behind a local stub resolver, NAT or a shared address, only the owner
//! tells apps apart (docs/semantics.md section 7).

use super::event::{Cgroup, Owner, Process};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

/// What makes two lookups or connections the same client (`--by`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientBy {
    /// The address the packets came from: replay, and `--iface` by default.
    #[default]
    Ip,
    /// Cgroup plus command name: the workers of one program in one
    /// container are one client. Host mode's default.
    App,
    /// The cgroup: a container, a pod's container, a systemd unit.
    Cgroup,
    /// One process (thread group) in its cgroup.
    Process,
}

/// Small and cheap for the common case: an address is copied and hashed as
/// the bare address was (replay's hot path keys every table on it); an
/// owner is shared behind an `Arc`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Client(Kind);

/// By hand, so that an address hashes exactly as the bare address did:
/// replay looks up a (client, backend) key for every answer record and
/// connection attempt, and the derived hash of the enum showed in profiles.
impl std::hash::Hash for Client {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match &self.0 {
            Kind::Address(address) => address.hash(state),
            Kind::Owner(owner) => owner.hash(state),
            Kind::NamespacedAddress(netns, address) => (netns, address).hash(state),
        }
    }
}

// Owners sort before addresses; owners by cgroup path, then command, then
// process. Addresses of other network namespaces come last.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Owner(Arc<OwnerKey>),
    Address(IpAddr),
    /// `--by ip` in host mode, for a socket in another network namespace
    /// than the tracer's (by the kernel's netns cookie): 127.0.0.1 of two
    /// containers are two clients.
    NamespacedAddress(u64, IpAddr),
}

#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct OwnerKey {
    cgroup: Cgroup,
    command: Option<[u8; 16]>,
    tgid: Option<u32>,
}

impl Client {
    pub const fn from_address(address: IpAddr) -> Self {
        Self(Kind::Address(address))
    }

    /// The client behind a packet from (or to) `address` on a socket of
    /// `owner`, grouped as `by` says. Without an owner the address is all
    /// there is; with `--by ip`, it is the address in the socket's network
    /// namespace when that is known and not `home_netns` (the tracer's).
    pub fn of(
        by: ClientBy,
        address: IpAddr,
        owner: Option<&Owner>,
        home_netns: Option<u64>,
    ) -> Self {
        if by == ClientBy::Ip {
            let netns = owner
                .and_then(|o| o.process.as_ref())
                .map(|p| p.netns_cookie)
                .filter(|&netns| Some(netns) != home_netns);
            return match netns {
                Some(netns) => Self(Kind::NamespacedAddress(netns, address)),
                None => Self::from_address(address),
            };
        }
        let Some(owner) = owner else {
            return Self::from_address(address);
        };
        let process = owner.process.as_ref();
        let (command, tgid) = match by {
            ClientBy::Ip | ClientBy::Cgroup => (None, None),
            ClientBy::App => (process.map(|p| p.command), None),
            ClientBy::Process => (
                process.map(|p| p.command),
                process.map(|p: &Process| p.tgid),
            ),
        };
        Self(Kind::Owner(Arc::new(OwnerKey {
            cgroup: owner.cgroup.clone(),
            command,
            tgid,
        })))
    }

    fn owner(&self) -> Option<&OwnerKey> {
        match &self.0 {
            Kind::Owner(owner) => Some(owner),
            Kind::Address(_) | Kind::NamespacedAddress(..) => None,
        }
    }

    /// The address, for clients known by address.
    pub const fn address(&self) -> Option<IpAddr> {
        match self.0 {
            Kind::Address(address) | Kind::NamespacedAddress(_, address) => Some(address),
            Kind::Owner(_) => None,
        }
    }

    /// The network namespace (the kernel's cookie) of an address client
    /// from another namespace than the tracer's.
    pub const fn netns_cookie(&self) -> Option<u64> {
        match self.0 {
            Kind::NamespacedAddress(netns, _) => Some(netns),
            Kind::Address(_) | Kind::Owner(_) => None,
        }
    }

    /// Whether the client is an owner (a cgroup, app or process) rather
    /// than an address.
    pub fn is_owner(&self) -> bool {
        matches!(self.0, Kind::Owner(_))
    }

    /// The command name, printable (control bytes escaped).
    pub fn command(&self) -> Option<String> {
        let command = self.owner()?.command?;
        let end = command.iter().position(|&b| b == 0).unwrap_or(16);
        Some(printable(&command[..end]))
    }

    pub fn cgroup_id(&self) -> Option<u64> {
        self.owner().map(|o| o.cgroup.id)
    }

    /// The cgroup's path relative to the cgroup2 mount, printable.
    pub fn cgroup_path(&self) -> Option<String> {
        let path = self.owner()?.cgroup.path.as_deref()?;
        Some(printable(path.as_bytes()))
    }

    fn tgid(&self) -> Option<u32> {
        self.owner()?.tgid
    }

    /// The container and pod that the cgroup path names, when it has a
    /// shape a runtime gives it (resolved when the cgroup was named).
    pub fn workload(&self) -> &Workload {
        static NONE: Workload = Workload {
            container: None,
            pod: None,
            unit: None,
        };
        self.owner().map_or(&NONE, |o| &o.cgroup.workload)
    }

    /// Whether the client is more than a bare address, and so has a
    /// `client_info` object in JSON: an owner, or an address of another
    /// network namespace.
    pub fn has_info(&self) -> bool {
        !matches!(self.0, Kind::Address(_))
    }

    /// Everything known about the client, for JSON (`client_info`).
    pub fn info(&self) -> ClientInfo<'_> {
        ClientInfo(self)
    }
}

/// A client given by its address (`10.0.0.2`, `2001:db8::2`).
impl std::str::FromStr for Client {
    type Err = std::net::AddrParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse().map(Self::from_address)
    }
}

/// What a person recognises: the address; or the command and where it
/// runs (`curl in docker 3f2a1b4c5d6e`, `nginx in /system.slice/nginx.service`),
/// with the process id under `--by process`.
impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let owner = match &self.0 {
            Kind::Address(address) => return fmt::Display::fmt(address, f),
            Kind::NamespacedAddress(netns, address) => {
                return write!(f, "{address} (netns cookie {netns})")
            }
            Kind::Owner(owner) => owner,
        };
        let cgroup = &owner.cgroup;
        if owner.command.is_some() || owner.tgid.is_some() {
            f.write_str(&self.command().unwrap_or_else(|| "?".to_string()))?;
            if let Some(tgid) = owner.tgid {
                write!(f, "[{tgid}]")?;
            }
            f.write_str(" in ")?;
        }
        let workload = self.workload();
        match (&workload.container, &cgroup.path) {
            (Some(container), _) => write!(
                f,
                "{} {}",
                container.shown_runtime(),
                container.shown_name()
            ),
            (None, Some(_)) => f.write_str(&self.cgroup_path().unwrap_or_default()),
            (None, None) => write!(f, "cgroup {}", cgroup.id),
        }
    }
}

/// A JSON string: the address alone for clients known by address (as the
/// original's reports had it), the `Display` form otherwise.
impl Serialize for Client {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Every known attribute of a client, as a JSON object.
pub struct ClientInfo<'a>(&'a Client);

impl Serialize for ClientInfo<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let client = self.0;
        let mut map = s.serialize_map(None)?;
        if let Some(address) = client.address() {
            map.serialize_entry("address", &address)?;
        }
        if let Some(netns) = client.netns_cookie() {
            map.serialize_entry("netns_cookie", &netns)?;
        }
        if let Some(id) = client.cgroup_id() {
            map.serialize_entry("cgroup_id", &id)?;
        }
        if let Some(path) = client.cgroup_path() {
            map.serialize_entry("cgroup", &path)?;
        }
        let workload = client.workload();
        if let Some(container) = &workload.container {
            map.serialize_entry("container_runtime", &container.shown_runtime())?;
            map.serialize_entry("container", &container.id)?;
            if let Some(names) = container.names.get() {
                map.serialize_entry("container_name", &names.name)?;
                for (key, value) in [
                    ("image", &names.image),
                    ("compose_project", &names.compose_project),
                    ("compose_service", &names.compose_service),
                    ("pod_name", &names.pod_name),
                    ("pod_namespace", &names.pod_namespace),
                    ("pod_container", &names.pod_container),
                ] {
                    if let Some(value) = value {
                        map.serialize_entry(key, value)?;
                    }
                }
            }
        }
        if let Some(pod) = &workload.pod {
            map.serialize_entry("pod", pod)?;
        }
        if let Some(unit) = &workload.unit {
            map.serialize_entry("unit", unit)?;
        }
        if let Some(command) = client.command() {
            map.serialize_entry("command", &command)?;
        }
        if let Some(tgid) = client.tgid() {
            map.serialize_entry("tgid", &tgid)?;
        }
        map.end()
    }
}

/// A container, as its runtime named its cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// `docker`, `containerd`, `cri-o`, `podman`; `container` for a 64-hex
    /// leaf whose runtime the path does not say.
    pub runtime: &'static str,
    pub id: String,
    /// What the runtime's API calls it, once asked (trace::runtimes): set
    /// at most once, later than the cgroup is named, and never part of a
    /// client's key.
    pub names: Arc<OnceLock<ContainerNames>>,
}

impl Container {
    pub fn new(runtime: &'static str, id: &str) -> Self {
        Self {
            runtime,
            id: id.to_string(),
            names: Arc::default(),
        }
    }

    /// The 12-character form `docker ps` shows.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }

    /// What a person calls it: its runtime's name for it when known
    /// (`web-1`; a pod's `namespace/pod/container`), else the short id.
    pub fn shown_name(&self) -> &str {
        self.names
            .get()
            .map_or_else(|| self.short_id(), |n| n.shown.as_str())
    }

    /// The runtime: the one whose API named it, else the one the cgroup
    /// path says.
    pub fn shown_runtime(&self) -> &'static str {
        self.names.get().map_or(self.runtime, |n| n.runtime)
    }
}

/// A container's names from its runtime's API: what `docker ps` and
/// `kubectl get pods` show, and the compose and Kubernetes labels a person
/// groups by. Only these labels are kept, so a container with hundreds of
/// labels costs no more than one with none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerNames {
    /// The runtime whose API answered (`docker`, `podman`).
    pub runtime: &'static str,
    /// The name to show: `namespace/pod/container` for a pod's container,
    /// the runtime's container name otherwise.
    pub shown: String,
    /// The runtime's name (`web-1`, `k8s_app_web-5d9c…` for a kubelet's).
    pub name: String,
    pub image: Option<String>,
    /// `com.docker.compose.project` and `.service`.
    pub compose_project: Option<String>,
    pub compose_service: Option<String>,
    /// `io.kubernetes.pod.name`, `.pod.namespace` and `.container.name`,
    /// which kubelet sets on every container it starts.
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_container: Option<String>,
}

/// What a cgroup path says about the workload inside it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    pub container: Option<Container>,
    /// The Kubernetes pod's UID.
    pub pod: Option<String>,
    /// The systemd unit (`nginx.service`, `session-3.scope`).
    pub unit: Option<String>,
}

impl Workload {
    /// Recognises the shapes runtimes give cgroups:
    /// `docker-<id>.scope` and `/docker/<id>` (Docker, systemd and cgroupfs
    /// drivers), `cri-containerd-<id>.scope`, `crio-<id>.scope`,
    /// `libpod-<id>.scope` (Podman), `kubepods…/pod<uid>` (either driver),
    /// and systemd units.
    pub fn of_path(path: &str) -> Self {
        let mut workload = Workload::default();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        for (i, segment) in segments.iter().enumerate() {
            let scope = segment.strip_suffix(".scope").unwrap_or(segment);
            for (prefix, runtime) in [
                ("docker-", "docker"),
                ("cri-containerd-", "containerd"),
                ("crio-", "cri-o"),
                ("libpod-", "podman"),
            ] {
                if let Some(id) = scope.strip_prefix(prefix).filter(|id| is_container_id(id)) {
                    workload.container = Some(Container::new(runtime, id));
                }
            }
            // cgroupfs drivers: /docker/<id>, /kubepods/…/pod<uid>/<id>,
            // and a daemon's --cgroup-parent (`dockerd --cgroup-parent=/ci`
            // puts containers at /ci/<id>): a 64-hex leaf is a container's
            // id whatever the runtime.
            let parent = i.checked_sub(1).map(|p| segments[p]);
            let leaf = i + 1 == segments.len();
            if is_container_id(segment) {
                let runtime = match parent {
                    Some("docker") => Some("docker"),
                    Some(p) if p.starts_with("pod") => Some("container"),
                    _ if leaf && workload.container.is_none() => Some("container"),
                    _ => None,
                };
                if let Some(runtime) = runtime {
                    workload.container = Some(Container::new(runtime, segment));
                }
            }
            if segments[..i].iter().any(|s| s.starts_with("kubepods"))
                || segment.starts_with("kubepods")
            {
                let slice = segment.strip_suffix(".slice").unwrap_or(segment);
                if let Some(at) = slice.rfind("pod") {
                    let uid = &slice[at + 3..];
                    if uid.len() >= 32
                        && uid
                            .bytes()
                            .all(|b| b.is_ascii_hexdigit() || b == b'_' || b == b'-')
                    {
                        workload.pod = Some(uid.replace('_', "-"));
                    }
                }
            }
        }
        if workload.container.is_none() {
            workload.unit = segments
                .last()
                .filter(|s| is_unit(s))
                .map(|s| printable(s.as_bytes()));
        }
        workload
    }
}

#[expect(
    clippy::case_sensitive_file_extension_comparisons,
    reason = "systemd's unit types are case-sensitive: nginx.Service is no unit"
)]
fn is_unit(segment: &str) -> bool {
    segment.ends_with(".service") || segment.ends_with(".scope")
}

fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Command names and cgroup paths are chosen by whoever runs the process:
/// escape everything outside printable ASCII (and `\`), so one report row
/// stays one line and a name cannot drive the terminal.
fn printable(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

/// Processes seen per owner client: a few per client, for the report to
/// name them (`pids`), within MAX_CLIENTS clients.
#[derive(Debug, Default)]
pub struct PidsSeen {
    /// The first few, and whether more were seen.
    pids: super::FastMap<Client, (Vec<u32>, bool)>,
}

/// Process ids kept per client; more are not listed.
pub const MAX_PIDS_PER_CLIENT: usize = 8;
const MAX_CLIENTS: usize = 1 << 16;

impl PidsSeen {
    pub fn forget(&mut self, gone: &dyn Fn(&Client) -> bool) {
        self.pids.retain(|client, _| !gone(client));
    }

    pub fn note(&mut self, client: &Client, tgid: u32) {
        if let Some((pids, more)) = self.pids.get_mut(client) {
            if !pids.contains(&tgid) {
                if pids.len() < MAX_PIDS_PER_CLIENT {
                    pids.push(tgid);
                } else {
                    *more = true;
                }
            }
        } else if self.pids.len() < MAX_CLIENTS {
            self.pids.insert(client.clone(), (vec![tgid], false));
        }
    }

    /// The processes listed for `client`, sorted, and whether it had more.
    pub fn of(&self, client: &Client) -> (Vec<u32>, bool) {
        let (mut pids, more) = self.pids.get(client).cloned().unwrap_or_default();
        pids.sort_unstable();
        (pids, more)
    }
}

/// Clients seen serving DNS: they answer queries (a stub, a cache, a
/// forwarder). Their own lookups are upstream, on behalf of others, so
/// they are not judged on unused backends. Within MAX_CLIENTS.
#[derive(Debug, Default)]
pub struct Resolvers {
    clients: std::collections::HashSet<Client, foldhash::fast::RandomState>,
    /// The address last noted: a capture's responses mostly come from one
    /// server, which then costs a compare, not a hash (profiles).
    pub last: Option<std::net::IpAddr>,
}

impl Resolvers {
    pub fn forget(&mut self, gone: &dyn Fn(&Client) -> bool) {
        self.clients.retain(|client| !gone(client));
    }

    pub fn is_last(&self, address: std::net::IpAddr) -> bool {
        self.last == Some(address)
    }

    pub fn note(&mut self, client: Client) {
        if self.clients.len() < MAX_CLIENTS || self.clients.contains(&client) {
            self.clients.insert(client);
        }
    }

    pub fn contains(&self, client: &Client) -> bool {
        !self.clients.is_empty() && self.clients.contains(client)
    }
}

/// A cgroup with its path, for tests and callers that build owners.
pub fn cgroup(id: u64, path: Option<&str>) -> Cgroup {
    Cgroup::named(id, path.map(Arc::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(path: &str, command: &str, tgid: u32) -> Owner {
        let mut comm = [0u8; 16];
        comm[..command.len()].copy_from_slice(command.as_bytes());
        Owner {
            cgroup: cgroup(77, Some(path)),
            socket: 1,
            process: Some(Process {
                tgid,
                pid: tgid + 1,
                command: comm,
                netns_cookie: 9,
            }),
        }
    }

    #[test]
    fn a_client_by_address_shows_and_serialises_as_its_address() {
        let client = Client::from_address("2001:db8::2".parse().unwrap());
        assert_eq!(client.to_string(), "2001:db8::2");
        assert_eq!(
            serde_json::to_string(&client).unwrap(),
            serde_json::to_string(&client.address()).unwrap()
        );
    }

    #[test]
    fn owners_are_grouped_as_by_says() {
        let address: IpAddr = "10.0.0.2".parse().unwrap();
        let a = owner("/test/app1", "curl", 100);
        let b = owner("/test/app1", "curl", 200);
        let app = |o| Client::of(ClientBy::App, address, Some(o), None);
        assert_eq!(
            app(&a),
            app(&b),
            "two curl processes of one cgroup are one app"
        );
        assert_eq!(app(&a).to_string(), "curl in /test/app1");
        let process = |o| Client::of(ClientBy::Process, address, Some(o), None);
        assert_ne!(process(&a), process(&b));
        assert_eq!(process(&a).to_string(), "curl[100] in /test/app1");
        assert_eq!(
            Client::of(ClientBy::Cgroup, address, Some(&a), None).to_string(),
            "/test/app1"
        );
        assert_eq!(
            Client::of(ClientBy::App, address, None, None).to_string(),
            "10.0.0.2"
        );
    }

    #[test]
    fn by_ip_in_host_mode_tells_network_namespaces_apart() {
        // docs/semantics.md section 7: the same address in two namespaces
        // is two clients; the tracer's own namespace shows bare.
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let a = owner("/test/app1", "curl", 100);
        let home = a.process.map(|p| p.netns_cookie);
        let by_ip = |netns| Client::of(ClientBy::Ip, loopback, Some(&a), netns);
        assert_eq!(by_ip(home), Client::from_address(loopback));
        assert_eq!(by_ip(home).to_string(), "127.0.0.1");
        let elsewhere = by_ip(Some(1));
        assert_ne!(elsewhere, by_ip(home));
        assert_eq!(elsewhere.address(), Some(loopback));
        assert_eq!(
            elsewhere.to_string(),
            format!("127.0.0.1 (netns cookie {})", home.unwrap())
        );
        let info = serde_json::to_value(elsewhere.info()).unwrap();
        assert_eq!(info["netns_cookie"], home.unwrap());
        // Without an owner (replay, --iface), only the address.
        assert_eq!(
            Client::of(ClientBy::Ip, loopback, None, Some(1)),
            Client::from_address(loopback)
        );
    }

    #[test]
    fn runtime_cgroup_shapes_name_containers_and_pods() {
        let id = "3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708";
        let docker = Workload::of_path(&format!("/system.slice/docker-{id}.scope"));
        assert_eq!(docker.container.as_ref().unwrap().runtime, "docker");
        assert_eq!(
            docker.container.as_ref().unwrap().short_id(),
            "3f2a1b4c5d6e"
        );
        assert_eq!(
            Workload::of_path(&format!("/docker/{id}"))
                .container
                .unwrap()
                .runtime,
            "docker"
        );
        let pod = Workload::of_path(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234abcd_5678_9abc_def0_123456789abc.slice/cri-containerd-{id}.scope"
        ));
        assert_eq!(pod.container.unwrap().runtime, "containerd");
        assert_eq!(
            pod.pod.as_deref(),
            Some("1234abcd-5678-9abc-def0-123456789abc")
        );
        let cgroupfs = Workload::of_path(&format!(
            "/kubepods/besteffort/pod1234abcd-5678-9abc-def0-123456789abc/{id}"
        ));
        assert_eq!(cgroupfs.container.unwrap().runtime, "container");
        assert!(cgroupfs.pod.is_some());
        // A daemon's --cgroup-parent: the runtime is not in the path.
        let parented = Workload::of_path(&format!("/ci-runners/{id}"));
        assert_eq!(parented.container.unwrap().runtime, "container");
        assert_eq!(
            Workload::of_path(&format!("/machine.slice/libpod-{id}.scope"))
                .container
                .unwrap()
                .runtime,
            "podman"
        );
        assert_eq!(
            Workload::of_path("/system.slice/nginx.service")
                .unit
                .as_deref(),
            Some("nginx.service")
        );
        assert_eq!(Workload::of_path("/user.slice"), Workload::default());
    }

    #[test]
    fn hostile_commands_and_paths_stay_one_printable_line() {
        let o = owner("/t/a\tb\nc", "x\x1b[31m", 1);
        let shown =
            Client::of(ClientBy::App, "10.0.0.1".parse().unwrap(), Some(&o), None).to_string();
        assert_eq!(shown, "x\\x1b[31m in /t/a\\x09b\\x0ac");
        assert!(shown.bytes().all(|b| (0x20..=0x7e).contains(&b)));
    }

    #[test]
    fn a_client_lists_its_first_processes_and_says_when_there_were_more() {
        let mut seen = PidsSeen::default();
        let client = Client::from_address("10.0.0.2".parse().unwrap());
        for tgid in [30, 10, 20, 10] {
            seen.note(&client, tgid);
        }
        assert_eq!(seen.of(&client), (vec![10, 20, 30], false));
        for tgid in 100..110 {
            seen.note(&client, tgid);
        }
        let (pids, more) = seen.of(&client);
        assert_eq!(pids.len(), MAX_PIDS_PER_CLIENT);
        assert!(more, "the list stops at 8 and says so");
    }
}
