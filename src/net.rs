//! Host addresses and port ranges: what a peer needs to reach this machine, and keeping
//! listeners and connections inside the ports a firewall lets through.
//!
//! **Addresses.** [`local_addresses`] lists the IP addresses of the host's interfaces that are
//! up, IPv4 and IPv6, best first for a peer on another machine: addresses of ordinary
//! interfaces before loopback ones, IPv4 before IPv6. IPv6 link-local addresses (`fe80::/10`)
//! are left out, since connecting to one needs the interface's scope id as well.
//!
//! A [`HostDescription`] is that list paired with a port: every socket address a peer may try,
//! in order, to connect to a listener of this process. Its text form (`Display` and `FromStr`)
//! is the comma-separated list of `ip:port` (`[ip]:port` for IPv6), for example
//! `192.0.2.2:40000,127.0.0.1:40000,[::1]:40000`, short enough to pass to a peer through an
//! environment variable, a file or a process manager.
//!
//! **Port ranges.** A [`PortRange`] is an inclusive range of port numbers, written
//! `first-last` (or a single `port`). [`PortRange::bind_tcp`] and [`PortRange::bind_udp`] bind
//! to the first port of the range that is free; [`Port::connect_in_range`] binds the local end
//! of an outgoing connection to one before connecting. Ports in use are skipped; when all of
//! them are, the error kind is `Os(AddrInUse)` and the message names the range.
//!
//! ```
//! use cport::net::{HostDescription, PortRange};
//! use std::net::{IpAddr, Ipv4Addr};
//!
//! let range: PortRange = "40000-49999".parse()?;
//! let listener = range.bind_tcp(IpAddr::V4(Ipv4Addr::UNSPECIFIED))?;
//! let port = listener.local_addr()?.port();
//! assert!(range.contains(port));
//!
//! let desc = HostDescription::local(port)?;
//! let text = desc.to_string(); // hand this to the peer
//! let back: HostDescription = text.parse()?;
//! assert_eq!(back, desc);
//! assert!(back.addrs().iter().all(|a| a.port() == port));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Port::connect_in_range`]: crate::Port::connect_in_range

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::sys::netif;

/// The IP addresses of the host's interfaces that are up, IPv4 and IPv6, without duplicates.
///
/// Ordered for a peer that tries them in turn: addresses of non-loopback interfaces first,
/// then loopback ones (`127.0.0.0/8`, `::1`, or any address on a loopback interface); within
/// each group IPv4 before IPv6, otherwise in the order the kernel lists the interfaces. IPv6
/// link-local addresses (`fe80::/10`) are left out: connecting to one needs a scope id.
///
/// # Errors
/// `Os` if the kernel's list of interface addresses cannot be read (`getifaddrs` failed, for
/// instance for lack of memory or of file descriptors).
pub fn local_addresses() -> Result<Vec<IpAddr>> {
    let all = netif::interface_addrs().map_err(|e| Error::from_io(&e, "list the interface addresses (getifaddrs)"))?;
    let mut found: Vec<(bool, IpAddr)> = Vec::new();
    for a in all.into_iter().filter(|a| a.up && !is_link_local_v6(a.ip)) {
        let loopback = a.loopback || a.ip.is_loopback();
        match found.iter_mut().find(|(_, ip)| *ip == a.ip) {
            Some(seen) => seen.0 |= loopback,
            None => found.push((loopback, a.ip)),
        }
    }
    // A stable sort: within a group the kernel's order stays.
    found.sort_by_key(|&(loopback, ip)| (loopback, ip.is_ipv6()));
    Ok(found.into_iter().map(|(_, ip)| ip).collect())
}

fn is_link_local_v6(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// What a peer needs to connect to this host on one port: the socket addresses to try, in
/// order.
///
/// The text form (`Display`, parsed back by `FromStr`) is the addresses separated by commas,
/// each `ip:port`, or `[ip]:port` for IPv6 (with `%scope` after the address when it has a
/// scope id): `192.0.2.2:7000,127.0.0.1:7000,[::1]:7000`. Printing and parsing round-trip
/// exactly. The IPv6 flow label is not part of a description and is always 0.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostDescription {
    addrs: Vec<SocketAddr>,
}

impl HostDescription {
    /// The description of this host for a listener on `port`: every address of
    /// [`local_addresses`], in its order, with `port`.
    ///
    /// # Errors
    /// `InvalidInput` for port 0; `Os(AddrNotAvailable)` when no interface that is up has an
    /// address; otherwise as [`local_addresses`].
    pub fn local(port: u16) -> Result<HostDescription> {
        if port == 0 {
            return Err(Error::invalid("host description for port 0: a peer cannot connect to port 0"));
        }
        let ips = local_addresses()?;
        if ips.is_empty() {
            return Err(Error::from_io(
                &io::Error::from_raw_os_error(libc::EADDRNOTAVAIL),
                "host description: no interface that is up has an IP address",
            ));
        }
        Ok(HostDescription { addrs: ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect() })
    }

    /// A description listing `addrs`, in that order. IPv6 flow labels are cleared.
    ///
    /// # Errors
    /// `InvalidInput` when `addrs` is empty or an address has port 0.
    pub fn new(addrs: Vec<SocketAddr>) -> Result<HostDescription> {
        if addrs.is_empty() {
            return Err(Error::invalid("host description: the list of addresses is empty"));
        }
        if let Some(a) = addrs.iter().find(|a| a.port() == 0) {
            return Err(Error::invalid(format!("host description: {a} has port 0, which a peer cannot connect to")));
        }
        let addrs = addrs
            .into_iter()
            .map(|a| match a {
                SocketAddr::V6(mut v6) => {
                    v6.set_flowinfo(0);
                    SocketAddr::V6(v6)
                }
                v4 => v4,
            })
            .collect();
        Ok(HostDescription { addrs })
    }

    /// The addresses, in the order a peer should try them; never empty.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
}

impl fmt::Display for HostDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.addrs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

impl FromStr for HostDescription {
    type Err = Error;

    /// Parses the text form: `ip:port` or `[ipv6]:port` entries separated by commas
    /// (whitespace around an entry is ignored).
    ///
    /// # Errors
    /// `InvalidInput`, naming the entry and what is wrong with it, for an empty text, an empty
    /// entry, a missing or bad port (not a number, above 65535, or 0) or a bad IP address.
    fn from_str(s: &str) -> Result<HostDescription> {
        if s.trim().is_empty() {
            return Err(Error::invalid("host description \"\": no address"));
        }
        let mut addrs = Vec::new();
        for (i, entry) in s.split(',').enumerate() {
            let entry = entry.trim();
            let addr = parse_entry(entry)
                .map_err(|why| Error::invalid(format!("host description {s:?}: entry {} {entry:?}: {why}", i + 1)))?;
            addrs.push(addr);
        }
        Ok(HostDescription { addrs })
    }
}

/// One `ip:port` entry of a host description, or why it is not one.
fn parse_entry(entry: &str) -> std::result::Result<SocketAddr, String> {
    if entry.is_empty() {
        return Err("empty entry".into());
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err("port 0 cannot be connected to".into());
        }
        // The text has no place for a flow label, so it is 0 already.
        return Ok(addr);
    }
    let Some((host, port)) = entry.rsplit_once(':') else {
        return Err("no :port after the address".into());
    };
    parse_port(port)?;
    if host.parse::<Ipv6Addr>().is_ok() {
        return Err(format!("an IPv6 address needs brackets: [{host}]:{port}"));
    }
    Err(format!("{host:?} is not an IP address"))
}

/// A port number in 1..=65535, or why `text` is not one.
fn parse_port(text: &str) -> std::result::Result<u16, String> {
    if text.is_empty() {
        return Err("the port is missing".into());
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {text:?} is not a number"));
    }
    match text.parse::<u16>() {
        Ok(0) => Err("port 0 is not a usable port".into()),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("port {text} is out of range (1-65535)")),
    }
}

/// An inclusive, non-empty range of port numbers, none of them 0: where listeners and the
/// local ends of connections may be bound.
///
/// The text form is `first-last` (`Display` always writes both ends); `FromStr` also takes a
/// single `port`, the range of that one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// The ports `first..=last`.
    ///
    /// # Errors
    /// `InvalidInput` when `first` is 0 (port 0 asks the kernel for any port, which a range
    /// cannot hold) or `first > last`.
    pub fn new(first: u16, last: u16) -> Result<PortRange> {
        if first == 0 {
            return Err(Error::invalid(format!("port range {first}-{last}: ports start at 1, not 0")));
        }
        if first > last {
            return Err(Error::invalid(format!("port range {first}-{last}: the first port is above the last")));
        }
        Ok(PortRange { first, last })
    }

    /// The lowest port of the range.
    pub fn first(&self) -> u16 {
        self.first
    }

    /// The highest port of the range.
    pub fn last(&self) -> u16 {
        self.last
    }

    /// True when `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// The number of ports in the range (at least 1).
    #[allow(clippy::len_without_is_empty, reason = "a port range is never empty")]
    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// A listening TCP socket on `ip` and the first port of the range that is free, set up as
    /// [`std::net::TcpListener::bind`] does (`SO_REUSEADDR`, then `listen`). Ports in use are
    /// skipped.
    ///
    /// # Errors
    /// `Os(AddrInUse)`, with a message naming the range, when every port is in use; `Os` with
    /// the first other error (`ip` is not an address of this host, a port below 1024 without
    /// the privilege, ...) at once.
    pub fn bind_tcp(&self, ip: IpAddr) -> Result<TcpListener> {
        self.bind_first(ip, "TCP listener", crate::sys::socket::listen_tcp)
    }

    /// A UDP socket bound to `ip` and the first port of the range that is free, as
    /// [`std::net::UdpSocket::bind`] makes it. Ports in use are skipped.
    ///
    /// # Errors
    /// As [`PortRange::bind_tcp`].
    pub fn bind_udp(&self, ip: IpAddr) -> Result<UdpSocket> {
        self.bind_first(ip, "UDP socket", UdpSocket::bind)
    }

    fn bind_first<T>(&self, ip: IpAddr, what: &str, bind: impl Fn(SocketAddr) -> io::Result<T>) -> Result<T> {
        for port in self.first..=self.last {
            let addr = SocketAddr::new(ip, port);
            match bind(addr) {
                Ok(s) => return Ok(s),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(Error::from_io(&e, format!("bind a {what} to {addr}"))),
            }
        }
        Err(Error::from_io(
            &io::Error::from_raw_os_error(libc::EADDRINUSE),
            format!("bind a {what} on {ip}: every port of {self} is in use"),
        ))
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for PortRange {
    type Err = Error;

    /// Parses `first-last` or a single `port` (whitespace around the numbers is ignored).
    ///
    /// # Errors
    /// `InvalidInput`, naming the text and what is wrong with it: a missing or bad number
    /// (not a number, above 65535, or 0), or a first port above the last.
    fn from_str(s: &str) -> Result<PortRange> {
        let bad = |why: String| Error::invalid(format!("port range {s:?}: {why}"));
        let (a, b) = match s.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (s.trim(), s.trim()),
        };
        let first = parse_port(a).map_err(bad)?;
        let last = parse_port(b).map_err(bad)?;
        if first > last {
            return Err(bad(format!("the first port {first} is above the last {last}")));
        }
        PortRange::new(first, last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn link_local_is_recognised() {
        assert!(is_link_local_v6("fe80::1".parse().unwrap()));
        assert!(is_link_local_v6("febf::1".parse().unwrap()));
        assert!(!is_link_local_v6("fec0::1".parse().unwrap()));
        assert!(!is_link_local_v6("::1".parse().unwrap()));
        assert!(!is_link_local_v6("169.254.0.1".parse().unwrap()));
    }

    #[test]
    fn entry_errors_say_what_is_wrong() {
        assert_eq!(parse_entry("1.2.3.4").unwrap_err(), "no :port after the address");
        assert!(parse_entry("1.2.3.4:99999").unwrap_err().contains("out of range"));
        assert!(parse_entry("1.2.3.4:x").unwrap_err().contains("not a number"));
        assert!(parse_entry("1.2.3.4:").unwrap_err().contains("missing"));
        assert!(parse_entry("::1:80").unwrap_err().contains("brackets"));
        assert!(parse_entry("x:1").unwrap_err().contains("not an IP address"));
        assert!(parse_entry("1.2.3.4:0").unwrap_err().contains("port 0"));
    }

    #[test]
    fn new_clears_flow_labels_and_refuses_empty() {
        let a = SocketAddr::V6(std::net::SocketAddrV6::new(Ipv6Addr::LOCALHOST, 9, 77, 0));
        let d = HostDescription::new(vec![a]).unwrap();
        assert_eq!(d.to_string().parse::<HostDescription>().unwrap(), d);
        assert_eq!(HostDescription::new(vec![]).unwrap_err().kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn range_text() {
        assert_eq!("7-9".parse::<PortRange>().unwrap(), PortRange::new(7, 9).unwrap());
        assert_eq!(" 7 ".parse::<PortRange>().unwrap(), PortRange::new(7, 7).unwrap());
        for bad in ["", "-", "0-5", "9-5", "a-5", "5-70000", "5-", "1-2-3"] {
            assert_eq!(bad.parse::<PortRange>().unwrap_err().kind(), ErrorKind::InvalidInput, "{bad:?}");
        }
    }
}
