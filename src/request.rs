//! What a caller asks a stream to do: [`Request`], and [`Op`], the name of an operation.

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::buf::Buf;

/// The operation a request or completion is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// Read `min..=max` bytes into one buffer.
    Read,
    /// Read into several buffers, in order.
    ReadVectored,
    /// Write every byte of one buffer.
    Write,
    /// Write every byte of several buffers, in order.
    WriteVectored,
    /// Accept one connection on a listener.
    Accept,
    /// Connect a new stream (see [`Port::connect`](crate::Port::connect)).
    Connect,
    /// Receive one datagram and its sender.
    RecvFrom,
    /// Send one datagram to an address.
    SendTo,
    /// Close the stream (see [`Port::close`](crate::Port::close)).
    Close,
    /// A user completion from [`Port::post`](crate::Port::post).
    Post,
    /// A timer from [`Port::timer`](crate::Port::timer): `Ok` when it fired, `Cancelled` when
    /// [`Port::cancel_timer`](crate::Port::cancel_timer) or shutdown ended it first.
    Timer,
    /// A signal arrived on a stream of [`Port::signals`](crate::Port::signals); its number is
    /// the completion's [`value`](crate::Completion::value).
    Signal,
}

/// Which half of a full-duplex stream an operation occupies. Each side holds at most one I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Read = 0,
    Write = 1,
}

impl Op {
    /// The side this operation occupies; `None` for operations that occupy no side.
    pub(crate) fn side(self) -> Option<Side> {
        match self {
            Op::Read | Op::ReadVectored | Op::Accept | Op::RecvFrom | Op::Signal => Some(Side::Read),
            Op::Write | Op::WriteVectored | Op::Connect | Op::SendTo => Some(Side::Write),
            Op::Close | Op::Post | Op::Timer => None,
        }
    }

    /// A short lower-case name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::ReadVectored => "vectored read",
            Op::Write => "write",
            Op::WriteVectored => "vectored write",
            Op::Accept => "accept",
            Op::Connect => "connect",
            Op::RecvFrom => "recv_from",
            Op::SendTo => "send_to",
            Op::Close => "close",
            Op::Post => "post",
            Op::Timer => "timer",
            Op::Signal => "signal",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A callback told of partial progress: the bytes transferred so far by the operation.
///
/// It runs on the thread that did the I/O while the stream is locked: keep it short, and do not
/// call the [`Port`](crate::Port) from it (that would deadlock on the same stream). Every
/// progress call of an operation happens before its completion is queued.
pub type Progress = Box<dyn FnMut(usize) + Send + 'static>;

/// One I/O to start on a stream with [`Port::start_io`](crate::Port::start_io). It owns its
/// buffers; the completion gives them back (and so does a refused start, through
/// [`StartError::into_request`](crate::StartError::into_request)).
pub struct Request {
    pub(crate) kind: Kind,
    /// What few requests carry, boxed so that a request (moved into the stream and back
    /// out in its completion or error) stays small.
    pub(crate) extra: Option<Box<Extra>>,
}

/// The rarer parts of a request.
#[derive(Default)]
pub(crate) struct Extra {
    pub(crate) progress: Option<Progress>,
    pub(crate) timeout: Option<Duration>,
    /// Accepts to start after this one, each once the previous one's completion is taken
    /// (`Port::accept_many`).
    pub(crate) more_accepts: usize,
}

/// Where a `Request::connect` goes.
pub(crate) enum ConnectTo {
    Addr(socket2::SockAddr),
    /// `Request::connect_unix` with a path that cannot be one (refused by `validate`).
    BadPath,
}

/// The operation and its buffers.
pub(crate) enum Kind {
    Read {
        buf: Buf,
        min: usize,
        max: usize,
    },
    ReadVectored {
        bufs: Vec<Buf>,
        min: usize,
    },
    Write {
        buf: Buf,
    },
    WriteVectored {
        bufs: Vec<Buf>,
    },
    Accept,
    RecvFrom {
        buf: Buf,
    },
    SendTo {
        buf: Buf,
        addr: SocketAddr,
    },
    /// A connect: `to` until the connect is started (`Request::connect`; `None` from the start
    /// for one that `Port::connect` started itself), then `None` while it is in progress.
    Connect {
        /// Boxed: a socket address is 130 bytes, and every request would carry them.
        to: Option<Box<ConnectTo>>,
    },
    /// Internal: the next signal of a `Port::signals` stream (its number, once read).
    Signal {
        signo: u32,
    },
}

impl Request {
    pub(crate) fn new(kind: Kind) -> Request {
        Request { kind, extra: None }
    }

    pub(crate) fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// The request's own timeout, if it has one.
    pub(crate) fn timeout_after(&self) -> Option<Duration> {
        self.extra.as_ref().and_then(|x| x.timeout)
    }

    /// Read at least `*range.start()` and at most `*range.end()` bytes into `buf[..max]`. The
    /// read completes once `min` bytes arrived, or at end of stream or an error, with whatever
    /// arrived. `max` must be at most `buf.len()` and not zero, and `min <= max`. A `min` of
    /// 0 is a poll: the read completes at once with whatever is there, possibly nothing
    /// (`Status::Ok`, 0 bytes), and never waits.
    ///
    /// ```
    /// use cport::{Port, Request};
    /// use std::io::Write;
    ///
    /// let port = Port::new()?;
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// // At least 4 bytes, at most 6, into the first 6 of a buffer of 16.
    /// port.start_io(&isb, Request::read(vec![0; 16], 4..=6))?;
    /// peer.write_all(b"abcdefgh")?;
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!(c.data(), b"abcdef");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a request does nothing until it is started with `Port::start_io`"]
    pub fn read(buf: Vec<u8>, range: RangeInclusive<usize>) -> Request {
        let (min, max) = range.into_inner();
        Request::new(Kind::Read { buf: buf.into(), min, max })
    }

    /// Read at least `*range.start()` and at most `*range.end()` bytes into the *spare
    /// capacity* of `buf` (`buf.len()..buf.capacity()`), appending them: a buffer reused after
    /// `clear()` is read into as it is, with no zero-filling (tokio's `read_buf`). The
    /// completion's [`data`](crate::Completion::data) and
    /// [`into_data`](crate::Completion::into_data) are the bytes read;
    /// [`take_buffer`](crate::Completion::take_buffer) gives the vector back with them
    /// appended after what it held. `max` must be at most `buf.capacity() - buf.len()` and not
    /// zero, and `min <= max`.
    ///
    /// ```
    /// use cport::{Port, Request};
    /// use std::io::Write;
    ///
    /// let port = Port::new()?;
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// let mut buf = Vec::with_capacity(4096);
    /// for msg in [&b"one"[..], b"three"] {
    ///     peer.write_all(msg)?;
    ///     port.start_io(&isb, Request::read_buf(buf, 1..=4096))?;
    ///     let mut c = port.next_completion(None)?.expect("no timeout");
    ///     assert_eq!(c.data(), msg);
    ///     buf = c.take_buffer().expect("the vector");
    ///     assert_eq!(buf, msg);
    ///     buf.clear(); // the same allocation, read into again without a memset
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a request does nothing until it is started with `Port::start_io`"]
    pub fn read_buf(buf: Vec<u8>, range: RangeInclusive<usize>) -> Request {
        let (min, max) = range.into_inner();
        let start = buf.len();
        Request::new(Kind::Read { buf: Buf::Spare(buf, start), min, max })
    }

    /// Connect the stream (an unconnected stream socket, assigned: one the caller prepared,
    /// bound or with options set, through `socket2::Socket` and
    /// [`driver::TcpStream::from_fd`](crate::driver::TcpStream::from_fd)) to `addr`. It
    /// completes once the connection is up or has failed (a refused connection: `Failed`, its
    /// error kind `Os(ConnectionRefused)`); with [`Request::timeout`], as `TimedOut` once that
    /// passes first. [`Port::connect`](crate::Port::connect) makes and assigns the socket
    /// itself. Whatever the outcome, the stream stays assigned: close or deassign it.
    ///
    /// ```
    /// use cport::{driver, Op, Port, Request, Status};
    /// use socket2::{Domain, Socket, Type};
    /// use std::time::Duration;
    ///
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let port = Port::new()?;
    /// // A socket prepared by the caller: bound to a local address, an option set.
    /// let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    /// sock.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>()?.into())?;
    /// sock.set_keepalive(true)?;
    /// let isb = port.assign(driver::TcpStream::from_fd(sock.into()), 1)?;
    /// port.start_io(&isb, Request::connect(listener.local_addr()?).timeout(Duration::from_secs(5)))?;
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!((c.op(), c.status()), (Op::Connect, Status::Ok));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a request does nothing until it is started with `Port::start_io`"]
    pub fn connect(addr: std::net::SocketAddr) -> Request {
        Request::new(Kind::Connect { to: Some(Box::new(ConnectTo::Addr(addr.into()))) })
    }

    /// [`Request::connect`] to the Unix-domain socket at `path` (an unconnected Unix stream
    /// socket, assigned with [`driver::UnixStream`](crate::driver::UnixStream)). A path that is
    /// empty, too long or holds a NUL byte is refused with `InvalidInput` when the request is
    /// started.
    #[must_use = "a request does nothing until it is started with `Port::start_io`"]
    pub fn connect_unix(path: impl AsRef<std::path::Path>) -> Request {
        // A bad path is kept as such, for `validate` to refuse with the reason.
        let to = crate::sys::socket::unix_path(path.as_ref()).map_or(ConnectTo::BadPath, ConnectTo::Addr);
        Request::new(Kind::Connect { to: Some(Box::new(to)) })
    }

    /// Read whatever is there, at least one byte and at most `buf.len()`.
    ///
    /// ```
    /// use cport::{Port, Request};
    /// use std::io::Write;
    ///
    /// let port = Port::new()?;
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// peer.write_all(b"hi")?;
    /// port.start_io(&isb, Request::read_some(vec![0; 4096]))?;
    /// assert_eq!(port.next_completion(None)?.expect("no timeout").data(), b"hi");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a request does nothing until it is started with `Port::start_io`"]
    pub fn read_some(buf: Vec<u8>) -> Request {
        let max = buf.len();
        Request::read(buf, 1..=max)
    }

    /// Read `buf.len()` bytes exactly (fewer only at end of stream or on error).
    ///
    /// ```
    /// use cport::{Port, Request};
    /// use std::io::Write;
    ///
    /// let port = Port::new()?;
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// port.start_io(&isb, Request::read_exact(vec![0; 4]))?;
    /// peer.write_all(b"ab")?;
    /// peer.write_all(b"cd")?;
    /// assert_eq!(port.next_completion(None)?.expect("no timeout").data(), b"abcd");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a request does nothing until it is started with `Port::start_io`"]
    pub fn read_exact(buf: Vec<u8>) -> Request {
        let n = buf.len();
        Request::read(buf, n..=n)
    }

    /// Read into several buffers in order, completing once at least `min` bytes arrived.
    ///
    /// ```
    /// use cport::{Port, Request};
    /// use std::io::Write;
    ///
    /// let port = Port::new()?;
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// peer.write_all(b"headbody")?;
    /// port.start_io(&isb, Request::read_vectored(vec![vec![0; 4], vec![0; 4]], 8))?;
    /// let mut c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!(c.bytes(), 8);
    /// assert_eq!(c.take_buffers(), [b"head".to_vec(), b"body".to_vec()]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a request does nothing until it is started with `Port::start_io`"]
    pub fn read_vectored(bufs: Vec<Vec<u8>>, min: usize) -> Request {
        Request::new(Kind::ReadVectored { bufs: bufs.into_iter().map(Buf::from).collect(), min })
    }

    /// Write every byte of `buf`; partial sends resume inside the port.
    ///
    /// ```
    /// use cport::{Port, Request, Status};
    /// use std::io::Read;
    ///
    /// let port = Port::new()?;
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// port.start_io(&isb, Request::write(b"hello".to_vec()))?;
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!((c.status(), c.bytes()), (Status::Ok, 5));
    /// let mut got = [0; 5];
    /// peer.read_exact(&mut got)?;
    /// assert_eq!(&got, b"hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a request does nothing until it is started with `Port::start_io`"]
    pub fn write(buf: Vec<u8>) -> Request {
        Request::new(Kind::Write { buf: buf.into() })
    }

    /// Write every byte of every buffer, in order.
    ///
    /// ```
    /// use cport::{Port, Request};
    /// use std::io::Read;
    ///
    /// let port = Port::new()?;
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// port.start_io(&isb, Request::write_vectored(vec![b"head".to_vec(), b"er".to_vec()]))?;
    /// assert_eq!(port.next_completion(None)?.expect("no timeout").bytes(), 6);
    /// let mut got = [0; 6];
    /// peer.read_exact(&mut got)?;
    /// assert_eq!(&got, b"header");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a request does nothing until it is started with `Port::start_io`"]
    pub fn write_vectored(bufs: Vec<Vec<u8>>) -> Request {
        Request::new(Kind::WriteVectored { bufs: bufs.into_iter().map(Buf::from).collect() })
    }

    /// Accept one connection; the completion carries the new stream
    /// ([`Completion::take_accepted`](crate::Completion::take_accepted)).
    ///
    /// ```
    /// use cport::{Op, Port, Request};
    ///
    /// let port = Port::new()?;
    /// let listener = port.listen("127.0.0.1:0".parse()?, 0)?;
    /// port.start_io(&listener, Request::accept())?;
    /// let _client = std::net::TcpStream::connect(listener.local_addr()?)?;
    /// let mut c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!(c.op(), Op::Accept);
    /// let conn = port.assign(c.take_accepted().expect("the connection"), 1)?;
    /// # drop(conn);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a request does nothing until it is started with `Port::start_io`"]
    pub fn accept() -> Request {
        Request::new(Kind::Accept)
    }

    /// Receive one datagram into `buf` (a longer datagram is truncated).
    ///
    /// ```
    /// use cport::{driver, Port, Request};
    /// use std::net::UdpSocket;
    ///
    /// let port = Port::new()?;
    /// let ours = UdpSocket::bind("127.0.0.1:0")?;
    /// let addr = ours.local_addr()?;
    /// let isb = port.assign(driver::UdpSocket::new(ours), 1)?;
    /// port.start_io(&isb, Request::recv_from(vec![0; 1500]))?;
    /// let peer = UdpSocket::bind("127.0.0.1:0")?;
    /// peer.send_to(b"ping", addr)?;
    /// let c = port.next_completion(None)?.expect("no timeout");
    /// assert_eq!((c.data(), c.addr()), (&b"ping"[..], Some(peer.local_addr()?)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a request does nothing until it is started with `Port::start_io`"]
    pub fn recv_from(buf: Vec<u8>) -> Request {
        Request::new(Kind::RecvFrom { buf: buf.into() })
    }

    /// Send `buf` as one datagram to `addr`.
    ///
    /// ```
    /// use cport::{driver, Port, Request};
    /// use std::net::UdpSocket;
    ///
    /// let port = Port::new()?;
    /// let isb = port.assign(driver::UdpSocket::new(UdpSocket::bind("127.0.0.1:0")?), 1)?;
    /// let peer = UdpSocket::bind("127.0.0.1:0")?;
    /// port.start_io(&isb, Request::send_to(b"pong".to_vec(), peer.local_addr()?))?;
    /// assert_eq!(port.next_completion(None)?.expect("no timeout").bytes(), 4);
    /// let mut got = [0; 16];
    /// let (n, from) = peer.recv_from(&mut got)?;
    /// assert_eq!((&got[..n], from), (&b"pong"[..], isb.local_addr()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a request does nothing until it is started with `Port::start_io`"]
    pub fn send_to(buf: Vec<u8>, addr: SocketAddr) -> Request {
        Request::new(Kind::SendTo { buf: buf.into(), addr })
    }

    /// Calls `f` with the bytes transferred so far whenever a read or write made partial
    /// progress without finishing. See [`Progress`] for the rules the callback must keep.
    ///
    /// ```
    /// use cport::{Port, Request};
    /// use std::io::Write;
    ///
    /// let port = Port::new()?;
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// peer.write_all(b"ab")?;
    /// // The read takes the 2 bytes there are at once, and waits for the other 2.
    /// port.start_io(&isb, Request::read_exact(vec![0; 4]).on_progress(move |n| tx.send(n).unwrap()))?;
    /// peer.write_all(b"cd")?;
    /// assert_eq!(port.next_completion(None)?.expect("no timeout").data(), b"abcd");
    /// assert_eq!(rx.try_iter().collect::<Vec<_>>(), [2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a request does nothing until it is started with `Port::start_io`"]
    pub fn on_progress(mut self, f: impl FnMut(usize) + Send + 'static) -> Request {
        self.extra().progress = Some(Box::new(f));
        self
    }

    /// Ends this I/O as [`Status::TimedOut`](crate::Status::TimedOut) if it is still pending
    /// `after` from its start, whatever else the stream does: a timeout of the request itself,
    /// beside the stream's deadline ([`Port::set_timeout`](crate::Port::set_timeout)), which
    /// ends every I/O of the stream once. Whichever comes first (the I/O finishing, a cancel, a
    /// close, the deadline, this timeout) ends it, in exactly one completion. An I/O that
    /// finishes at once never times out.
    ///
    /// ```
    /// use cport::{Port, Request, Status};
    /// use std::time::Duration;
    ///
    /// let port = Port::new()?;
    /// let (ours, _quiet_peer) = std::os::unix::net::UnixStream::pair()?;
    /// let isb = port.assign(cport::driver::UnixStream::new(ours), 1)?;
    /// port.start_io(&isb, Request::read_some(vec![0; 64]).timeout(Duration::from_millis(10)))?;
    /// let c = port.next_completion(None)?.expect("no timeout on the wait");
    /// assert_eq!(c.status(), Status::TimedOut);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "a request does nothing until it is started with `Port::start_io`"]
    pub fn timeout(mut self, after: Duration) -> Request {
        self.extra().timeout = Some(after);
        self
    }

    /// The operation.
    ///
    /// ```
    /// use cport::{Op, Request};
    ///
    /// assert_eq!(Request::read_some(vec![0; 8]).op(), Op::Read);
    /// assert_eq!(Request::accept().op(), Op::Accept);
    /// ```
    pub fn op(&self) -> Op {
        match self.kind {
            Kind::Read { .. } => Op::Read,
            Kind::ReadVectored { .. } => Op::ReadVectored,
            Kind::Write { .. } => Op::Write,
            Kind::WriteVectored { .. } => Op::WriteVectored,
            Kind::Accept => Op::Accept,
            Kind::RecvFrom { .. } => Op::RecvFrom,
            Kind::SendTo { .. } => Op::SendTo,
            Kind::Connect { .. } => Op::Connect,
            Kind::Signal { .. } => Op::Signal,
        }
    }

    /// The single buffer of a read, write, recv_from or send_to.
    ///
    /// ```
    /// let req = cport::Request::write(b"unsent".to_vec());
    /// assert_eq!(req.into_buffer(), Some(b"unsent".to_vec()));
    /// assert_eq!(cport::Request::accept().into_buffer(), None);
    /// ```
    pub fn into_buffer(self) -> Option<Vec<u8>> {
        match self.kind {
            Kind::Read { buf, .. } | Kind::Write { buf } | Kind::RecvFrom { buf } | Kind::SendTo { buf, .. } => {
                buf.into_vec()
            }
            _ => None,
        }
    }

    /// The buffers of a vectored read or write (empty for other operations).
    ///
    /// ```
    /// let req = cport::Request::write_vectored(vec![b"a".to_vec(), b"b".to_vec()]);
    /// assert_eq!(req.into_buffers(), [b"a".to_vec(), b"b".to_vec()]);
    /// ```
    pub fn into_buffers(self) -> Vec<Vec<u8>> {
        match self.kind {
            Kind::ReadVectored { bufs, .. } | Kind::WriteVectored { bufs } => {
                bufs.into_iter().filter_map(Buf::into_vec).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Checks the arguments; the message names what is wrong.
    pub(crate) fn validate(&self) -> Result<(), String> {
        match &self.kind {
            Kind::Read { buf: Buf::Spare(v, start), min, max } => {
                let spare = v.capacity() - start;
                if *max == 0 {
                    Err("read_buf of zero bytes (max is 0)".into())
                } else if min > max {
                    Err(format!("read range is empty: min {min} > max {max}"))
                } else if *max > spare {
                    Err(format!("read_buf max {max} is larger than the buffer's spare capacity ({spare} bytes)"))
                } else {
                    Ok(())
                }
            }
            Kind::Read { buf, min, max } => {
                if *max == 0 {
                    Err("read of zero bytes (max is 0 or the buffer is empty)".into())
                } else if min > max {
                    Err(format!("read range is empty: min {min} > max {max}"))
                } else if *max > buf.len() {
                    Err(format!("read max {max} is larger than the buffer ({} bytes)", buf.len()))
                } else {
                    Ok(())
                }
            }
            Kind::ReadVectored { bufs, min } => {
                let total: usize = bufs.iter().map(|b| b.len()).sum();
                if total == 0 {
                    Err("vectored read into no bytes of buffer".into())
                } else if *min > total {
                    Err(format!("vectored read min {min} is larger than the buffers ({total} bytes)"))
                } else {
                    Ok(())
                }
            }
            Kind::Write { buf } if buf.is_empty() => Err("write of an empty buffer".into()),
            Kind::WriteVectored { bufs } if bufs.iter().all(|b| b.is_empty()) => {
                Err("vectored write of no bytes".into())
            }
            Kind::RecvFrom { buf } if buf.is_empty() => Err("recv_from into an empty buffer".into()),
            Kind::Connect { to: Some(to) } if matches!(**to, ConnectTo::BadPath) => {
                Err("connect_unix: the path is empty, too long or holds a NUL byte".into())
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("op", &self.op())
            .field("timeout", &self.timeout_after())
            .field("progress", &self.extra.as_ref().is_some_and(|x| x.progress.is_some()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::reversed_empty_ranges)] // an empty range is the bad input under test
    fn validate_catches_bad_ranges() {
        assert!(Request::read(vec![0; 4], 5..=4).validate().unwrap_err().contains("min 5 > max 4"));
        assert!(Request::read(vec![0; 4], 1..=8).validate().unwrap_err().contains("larger than the buffer"));
        assert!(Request::read_some(Vec::new()).validate().is_err());
        assert!(Request::write(Vec::new()).validate().is_err());
        assert!(Request::read_vectored(vec![vec![0; 2], vec![0; 2]], 5).validate().is_err());
        assert!(Request::read_vectored(vec![vec![0; 2], vec![0; 2]], 4).validate().is_ok());
        assert!(Request::send_to(Vec::new(), "127.0.0.1:1".parse().unwrap()).validate().is_ok());
        assert!(Request::read(vec![0; 4], 0..=4).validate().is_ok());
    }

    #[test]
    fn sides() {
        assert_eq!(Op::Accept.side(), Some(Side::Read));
        assert_eq!(Op::Connect.side(), Some(Side::Write));
        assert_eq!(Op::Post.side(), None);
    }
}
