//! `connbal trace`'s flags resolved once into what to do (ripgrep's
//! `HiArgs` is the model): where to attach, what makes a client, whether
//! responses must come back to their query's socket, and which owner
//! fields the kernel writes. `attach` carries the plan out and decides
//! nothing.

use super::cgroups;
use super::loader;
use super::{TraceError, TraceOptions};
use crate::aggregator::{ClientBy, Config};
use connbal_common::record::Owners;
use nix::unistd::User;
use std::path::PathBuf;

pub(super) struct Plan {
    /// Host mode: the cgroup2 mount and the traced directories under it;
    /// `None` with `--iface`.
    pub host: Option<(PathBuf, Vec<PathBuf>)>,
    /// The aggregator's configuration, `by` and socket matching decided.
    pub config: Config,
    pub loader: loader::Options,
    /// `--user`: who to become after attaching.
    pub user: Option<User>,
}

impl Plan {
    /// Reads what the plan needs from the system (the cgroup2 mount, the
    /// user database) and decides the rest.
    pub fn resolve(options: &TraceOptions) -> Result<Plan, TraceError> {
        // A flag of the other mode is a mistake to say, not to ignore
        // (clap already refuses --cgroup with --iface).
        if options.interfaces.is_empty() && options.attach != loader::AttachMode::Auto {
            return Err(TraceError::WrongMode(
                "--attach chooses how the TC filter attaches to --iface interfaces; host mode attaches cgroup links",
            ));
        }
        // Host mode: every socket under a cgroup, instead of interfaces.
        let host = if options.interfaces.is_empty() {
            let mount = cgroups::find_mount()?;
            let dirs = if options.cgroups.is_empty() {
                vec![mount.clone()]
            } else {
                cgroups::resolve_all(&mount, &options.cgroups)?
            };
            Some((mount, dirs))
        } else {
            None
        };
        let user = match options.user.as_deref() {
            None => None,
            Some(name) => match User::from_name(name) {
                Ok(Some(user)) => Some(user),
                Ok(None) => return Err(TraceError::NoSuchUser(name.to_string())),
                Err(source) => {
                    return Err(TraceError::UserLookup {
                        user: name.to_string(),
                        source,
                    })
                }
            },
        };
        let mut plan = Self::decide(options, host, user);
        if plan.host.is_some() {
            plan.config.home_netns = super::netns::own_cookie();
        }
        Ok(plan)
    }

    /// Everything decided from the flags alone.
    fn decide(
        options: &TraceOptions,
        host: Option<(PathBuf, Vec<PathBuf>)>,
        user: Option<User>,
    ) -> Plan {
        let host_mode = host.is_some();
        let by = options.by.unwrap_or(if host_mode {
            ClientBy::App
        } else {
            ClientBy::Ip
        });
        let config = Config {
            by,
            // At the socket both directions carry it, so a response must
            // come back to the socket its query left from.
            match_sockets: host_mode,
            ..options.config.clone()
        };
        let owners = match (host_mode, by) {
            // The connect hooks and the egress program name the process.
            (true, _) => Owners::Process,
            // With --iface, owners cost helper calls per record: only when
            // a client is more than its address.
            (false, ClientBy::Ip) => Owners::Nothing,
            (false, _) => Owners::Socket,
        };
        let loader = loader::Options {
            all_tcp: config.all_tcp,
            owners,
            debug_log: options.kernel_debug,
            ring_size: options.ring_size,
            attach: options.attach,
            programs: options.programs,
            libc: if host_mode {
                options.libc
            } else {
                loader::LibcProbing::Off
            },
        };
        Plan {
            host,
            config,
            loader,
            user,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::metrics::DEFAULT_MAX_SERIES;

    fn options(interfaces: &[&str], by: Option<ClientBy>) -> TraceOptions {
        TraceOptions {
            interfaces: interfaces.iter().map(ToString::to_string).collect(),
            cgroups: Vec::new(),
            runtime_sockets: crate::trace::RuntimeSockets::Default,
            runtime_states: Vec::new(),
            by,
            duration: None,
            interval: None,
            config: Config::default(),
            format: None,
            ring_size: 1 << 20,
            verbose: false,
            attach: loader::AttachMode::Auto,
            kernel_debug: false,
            user: None,
            programs: loader::Programs::All,
            libc: loader::LibcProbing::AtStart,
            resolved_monitor: crate::trace::ResolvedMonitor::Default,
            metrics: None,
            metrics_max_series: DEFAULT_MAX_SERIES,
        }
    }

    fn host() -> (PathBuf, Vec<PathBuf>) {
        ("/sys/fs/cgroup".into(), vec!["/sys/fs/cgroup/test".into()])
    }

    #[test]
    fn host_mode_groups_by_app_matches_sockets_and_names_processes() {
        let plan = Plan::decide(&options(&[], None), Some(host()), None);
        assert_eq!(plan.config.by, ClientBy::App);
        assert!(plan.config.match_sockets);
        assert_eq!(plan.loader.owners, Owners::Process);
        // --by ip in host mode still needs the process hooks' owners.
        let plan = Plan::decide(&options(&[], Some(ClientBy::Ip)), Some(host()), None);
        assert_eq!(plan.loader.owners, Owners::Process);
    }

    #[test]
    fn interfaces_pay_for_owners_only_when_a_client_is_more_than_its_address() {
        let plan = Plan::decide(&options(&["eth0"], None), None, None);
        assert_eq!(plan.config.by, ClientBy::Ip);
        assert!(!plan.config.match_sockets);
        assert_eq!(plan.loader.owners, Owners::Nothing);
        let plan = Plan::decide(&options(&["eth0"], Some(ClientBy::Cgroup)), None, None);
        assert_eq!(plan.loader.owners, Owners::Socket);
    }
}
