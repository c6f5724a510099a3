//! The tracer's own network namespace, as the kernel's netns cookie (the
//! value `bpf_get_netns_cookie` gives the programs), so that `--by ip` in
//! host mode can show addresses of the host's namespace bare.
#![expect(
    unsafe_code,
    reason = "getsockopt(SO_NETNS_COOKIE) has no safe wrapper in nix 0.31; one call, on a socket this function owns, into a u64 it owns"
)]

use std::os::fd::AsRawFd as _;
use std::os::unix::net::UnixDatagram;

/// `None` before Linux 5.14, which added SO_NETNS_COOKIE.
pub fn own_cookie() -> Option<u64> {
    // Any socket is in the caller's namespace; an unbound Unix one takes
    // no port and no address.
    let socket = UnixDatagram::unbound().ok()?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: a valid socket fd, and a pointer and length that describe
    // `cookie` exactly; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            std::ptr::addr_of_mut!(cookie).cast(),
            &raw mut len,
        )
    };
    (rc == 0 && len as usize == std::mem::size_of::<u64>()).then_some(cookie)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_namespace_cookie_is_read_and_stable() {
        // Linux 5.14+, as on these machines.
        let first = super::own_cookie().expect("SO_NETNS_COOKIE");
        assert_ne!(first, 0);
        assert_eq!(super::own_cookie(), Some(first));
    }
}
