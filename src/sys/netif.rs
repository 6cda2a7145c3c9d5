//! The host's interface addresses, from `getifaddrs`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ptr;

/// One IPv4 or IPv6 address of one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IfAddr {
    /// The address.
    pub(crate) ip: IpAddr,
    /// The interface is up (`IFF_UP`).
    pub(crate) up: bool,
    /// The interface is a loopback interface (`IFF_LOOPBACK`).
    pub(crate) loopback: bool,
}

/// Frees the list `getifaddrs` returned when dropped.
struct List(*mut libc::ifaddrs);

impl Drop for List {
    fn drop(&mut self) {
        // SAFETY: the pointer came from a successful getifaddrs and is freed only here, once.
        unsafe { libc::freeifaddrs(self.0) };
    }
}

/// Every IPv4 and IPv6 address of every interface, in the order the kernel lists them
/// (entries of other families, such as `AF_PACKET`, and entries without an address are left
/// out).
pub(crate) fn interface_addrs() -> io::Result<Vec<IfAddr>> {
    let mut head: *mut libc::ifaddrs = ptr::null_mut();
    // SAFETY: getifaddrs writes one pointer into `head`, which is live.
    syscall!(getifaddrs(&mut head))?;
    let list = List(head);
    let mut out = Vec::new();
    let mut cur = list.0;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs built; the list lives until `list`
        // drops, after this loop.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if let Some(ip) = ip_of(ifa.ifa_addr) {
            let flags = ifa.ifa_flags;
            out.push(IfAddr {
                ip,
                up: flags & libc::IFF_UP as libc::c_uint != 0,
                loopback: flags & libc::IFF_LOOPBACK as libc::c_uint != 0,
            });
        }
    }
    Ok(out)
}

/// The IP address in a `sockaddr` that getifaddrs handed out; `None` for a null pointer or a
/// family other than `AF_INET`/`AF_INET6`.
fn ip_of(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: a non-null ifa_addr points at a sockaddr that starts with its family.
    let family = unsafe { ptr::addr_of!((*sa).sa_family).read_unaligned() };
    match libc::c_int::from(family) {
        libc::AF_INET => {
            // SAFETY: for AF_INET the kernel gives a whole sockaddr_in; read_unaligned makes no
            // assumption about its alignment.
            let sin = unsafe { sa.cast::<libc::sockaddr_in>().read_unaligned() };
            Some(IpAddr::V4(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes())))
        }
        libc::AF_INET6 => {
            // SAFETY: for AF_INET6 the kernel gives a whole sockaddr_in6; read_unaligned makes
            // no assumption about its alignment.
            let sin6 = unsafe { sa.cast::<libc::sockaddr_in6>().read_unaligned() };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_and_up() {
        let all = interface_addrs().unwrap();
        let lo = all.iter().find(|a| a.ip == IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("127.0.0.1 is listed");
        assert!(lo.up && lo.loopback, "{lo:?}");
    }
}
