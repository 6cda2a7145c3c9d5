//! Host addresses and port ranges: `local_addresses`, the `HostDescription` text form and a
//! peer connecting through it, `PortRange` parsing and binding, and `Port::connect_in_range`.

mod util;

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Mutex;
use std::time::Duration;

use cport::net::{local_addresses, HostDescription, PortRange};
use cport::{ErrorKind, Op, Status};
use util::{next, port, serial};

/// The tests that hold and release fixed ports run one at a time, so that one never takes a
/// port another has just released for the code under test.
static PORTS: Mutex<()> = Mutex::new(());

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// `n` consecutive ports in 40000..60000 that this test now holds on 127.0.0.1, each with a
/// socket made by `bind`. The start is derived from the process id and moves on past ports
/// that something else uses.
fn hold<T>(n: u16, bind: impl Fn(SocketAddr) -> io::Result<T>) -> (u16, Vec<T>) {
    const LOW: u32 = 40_000;
    const SPAN: u32 = 20_000;
    let seed = std::process::id().wrapping_mul(7919).wrapping_add(util::unique() as u32 * 1009);
    let mut start = LOW + seed % (SPAN - 100);
    for _ in 0..200 {
        let held: io::Result<Vec<T>> = (0..n).map(|i| bind(SocketAddr::new(LOCALHOST, start as u16 + i))).collect();
        if let Ok(held) = held {
            return (start as u16, held);
        }
        start = LOW + (start - LOW + 1 + u32::from(n)) % (SPAN - 100);
    }
    panic!("found no {n} free consecutive ports in {LOW}..{}", LOW + SPAN);
}

fn hold_tcp(n: u16) -> (u16, Vec<TcpListener>) {
    hold(n, TcpListener::bind)
}

#[test]
fn local_addresses_include_loopback_without_duplicates() {
    let ips = local_addresses().unwrap();
    assert!(ips.contains(&LOCALHOST), "{ips:?}");
    let unique: HashSet<_> = ips.iter().collect();
    assert_eq!(unique.len(), ips.len(), "duplicates in {ips:?}");
    // Non-loopback before loopback, IPv4 before IPv6 within each group.
    let keys: Vec<_> = ips.iter().map(|ip| (ip.is_loopback(), ip.is_ipv6())).collect();
    assert!(keys.windows(2).all(|w| w[0] <= w[1]), "badly ordered: {ips:?}");
    assert!(
        !ips.iter().any(|ip| matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)),
        "a link-local address is listed: {ips:?}"
    );
}

#[test]
fn host_description_round_trips() {
    for text in
        ["127.0.0.1:7000", "192.0.2.2:40000,127.0.0.1:40000,[::1]:40000", "[fd00::2]:1,[::1]:65535", "[fe80::1%2]:7"]
    {
        let d: HostDescription = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(d.to_string(), text);
        assert_eq!(d.to_string().parse::<HostDescription>().unwrap(), d);
    }
    let d: HostDescription = "10.0.0.1:5,[::1]:6".parse().unwrap();
    assert_eq!(d.addrs(), &["10.0.0.1:5".parse::<SocketAddr>().unwrap(), "[::1]:6".parse().unwrap()]);

    let local = HostDescription::local(40_123).unwrap();
    assert!(local.addrs().iter().all(|a| a.port() == 40_123));
    assert!(local.addrs().contains(&SocketAddr::new(LOCALHOST, 40_123)));
    assert_eq!(local.to_string().parse::<HostDescription>().unwrap(), local);
}

#[test]
fn bad_host_descriptions_are_invalid_input() {
    for text in ["", "1.2.3.4", "x:1", "1.2.3.4:99999", "1.2.3.4:80,", "::1:80", "1.2.3.4:0", "1.2.3.4:x"] {
        let e = text.parse::<HostDescription>().expect_err(text);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{text:?}: {e}");
        if !text.is_empty() {
            assert!(e.message().contains(&format!("{text:?}")), "{text:?}: {e}");
        }
    }
    let e = "1.2.3.4:80,x:1".parse::<HostDescription>().unwrap_err();
    assert!(e.message().contains("entry 2 \"x:1\""), "{e}");
    assert!("1.2.3.4:99999".parse::<HostDescription>().unwrap_err().message().contains("out of range"));
    assert_eq!(HostDescription::local(0).unwrap_err().kind(), ErrorKind::InvalidInput);
}

#[test]
fn a_peer_reaches_a_wildcard_listener_through_the_local_description() {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let text = HostDescription::local(port).unwrap().to_string();

    // The peer only has the text.
    let desc: HostDescription = text.parse().unwrap();
    let v4: Vec<SocketAddr> = desc.addrs().iter().copied().filter(SocketAddr::is_ipv4).collect();
    assert!(desc.addrs()[0].is_ipv4(), "IPv4 comes first: {text}");
    assert!(v4.contains(&SocketAddr::new(LOCALHOST, port)), "{text}");
    for addr in v4 {
        let peer = TcpStream::connect_timeout(&addr, util::GUARD).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let (conn, from) = listener.accept().unwrap();
        assert_eq!(from, peer.local_addr().unwrap());
        assert_eq!(conn.local_addr().unwrap(), addr, "the connection arrived at the address described");
    }
}

#[test]
fn port_range_validation_and_text() {
    assert_eq!(PortRange::new(0, 10).unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(PortRange::new(10, 9).unwrap_err().kind(), ErrorKind::InvalidInput);
    let r = PortRange::new(5000, 5009).unwrap();
    assert_eq!((r.first(), r.last(), r.len()), (5000, 5009, 10));
    assert!(r.contains(5000) && r.contains(5009) && !r.contains(4999) && !r.contains(5010));
    assert_eq!(r.to_string(), "5000-5009");
    assert_eq!("5000-5009".parse::<PortRange>().unwrap(), r);
    let one: PortRange = "8080".parse().unwrap();
    assert_eq!((one.first(), one.last(), one.len()), (8080, 8080, 1));
    assert_eq!(one.to_string(), "8080-8080");
    assert_eq!(one.to_string().parse::<PortRange>().unwrap(), one);
    assert_eq!(PortRange::new(1, 65535).unwrap().len(), 65535);
    for bad in ["", "0", "0-5", "9-5", "x", "5-x", "1-70000", "1-2-3", "-5"] {
        let e = bad.parse::<PortRange>().expect_err(bad);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}: {e}");
    }
}

#[test]
fn bind_tcp_skips_a_port_in_use() {
    let _g = serial(&PORTS);
    let (first, mut held) = hold_tcp(3);
    // Keep the first port taken, free the other two.
    held.truncate(1);
    let range = PortRange::new(first, first + 2).unwrap();
    let listener = range.bind_tcp(LOCALHOST).unwrap();
    assert_eq!(listener.local_addr().unwrap(), SocketAddr::new(LOCALHOST, first + 1));
    // It listens.
    let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    assert_eq!(listener.accept().unwrap().1, peer.local_addr().unwrap());
}

#[test]
fn bind_tcp_in_a_full_range_is_addr_in_use() {
    let _g = serial(&PORTS);
    let (first, _held) = hold_tcp(3);
    let range = PortRange::new(first, first + 2).unwrap();
    let e = range.bind_tcp(LOCALHOST).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Os(io::ErrorKind::AddrInUse), "{e}");
    assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE));
    assert!(e.message().contains(&range.to_string()), "{e}");
}

#[test]
fn bind_udp_skips_a_port_in_use_and_reports_a_full_range() {
    let _g = serial(&PORTS);
    let (first, mut held) = hold(3, UdpSocket::bind);
    let range = PortRange::new(first, first + 2).unwrap();
    let e = range.bind_udp(LOCALHOST).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Os(io::ErrorKind::AddrInUse), "{e}");
    assert!(e.message().contains(&range.to_string()), "{e}");
    held.truncate(1);
    let sock = range.bind_udp(LOCALHOST).unwrap();
    assert_eq!(sock.local_addr().unwrap(), SocketAddr::new(LOCALHOST, first + 1));
}

#[test]
fn connect_in_range_binds_the_local_end_inside_the_range() {
    let _g = serial(&PORTS);
    let port = port(1);
    let listener = TcpListener::bind((LOCALHOST, 0)).unwrap();
    let (first, mut held) = hold_tcp(4);
    // The first port stays taken: the connection gets one of the other three.
    held.truncate(1);
    let range = PortRange::new(first, first + 3).unwrap();
    let isb = port.connect_in_range(listener.local_addr().unwrap(), &range, 9).unwrap();
    let (_conn, from) = listener.accept().unwrap();
    assert!(range.contains(from.port()) && from.port() != first, "source {from} outside {range} or on the held port");
    let c = next(&port);
    assert_eq!((c.op(), c.token(), c.status()), (Op::Connect, 9, Status::Ok), "{c:?}: {:?}", c.error());
    port.close(&isb).unwrap();
    assert_eq!(next(&port).op(), Op::Close);
}

#[test]
fn connect_in_a_full_range_is_addr_in_use() {
    let _g = serial(&PORTS);
    let port = port(1);
    let listener = TcpListener::bind((LOCALHOST, 0)).unwrap();
    let (first, _held) = hold_tcp(2);
    let range = PortRange::new(first, first + 1).unwrap();
    let e = port.connect_in_range(listener.local_addr().unwrap(), &range, 9).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Os(io::ErrorKind::AddrInUse), "{e}");
    assert!(e.message().contains(&range.to_string()), "{e}");
    util::assert_quiet(&port, Duration::from_millis(20));
}

#[test]
fn connect_in_range_over_ipv6_loopback() {
    let listener = match TcpListener::bind("[::1]:0") {
        Ok(l) => l,
        // Skipped only where the host really has no ::1 (IPv6 off, or no address on lo); a
        // host that has one and still refuses the bind fails the test.
        Err(e) => {
            let inet6 = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
            let has_loopback = inet6.lines().any(|l| l.starts_with("00000000000000000000000000000001"));
            assert!(!has_loopback, "the host has ::1, but binding it failed: {e}");
            eprintln!("SKIPPED: this host has no IPv6 loopback ({e})");
            return;
        }
    };
    let _g = serial(&PORTS);
    let port = port(1);
    let (first, held) = hold_tcp(3);
    drop(held);
    let range = PortRange::new(first, first + 2).unwrap();
    let _isb = port.connect_in_range(listener.local_addr().unwrap(), &range, 4).unwrap();
    let (_conn, from) = listener.accept().unwrap();
    assert!(from.is_ipv6() && range.contains(from.port()), "{from} not in {range}");
    let c = next(&port);
    assert_eq!((c.op(), c.status()), (Op::Connect, Status::Ok), "{:?}", c.error());
}
