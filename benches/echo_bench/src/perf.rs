//! `perf stat -e raw_syscalls:sys_enter,context-switches,syscalls:sys_enter_futex,
//! syscalls:sys_enter_epoll_wait,... -p <pid>`, enabled and disabled exactly around the measured
//! window through perf's control FIFO. The syscall and context-switch counts are required; the
//! futex and epoll_wait tracepoints are counted where the kernel has them (probed once) and
//! reported as n/a otherwise.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What perf counted over the window (all threads of the server).
#[derive(Clone, Copy, Debug)]
pub struct Counts {
    pub syscalls: u64,
    pub context_switches: u64,
    /// futex calls; `None` when the tracepoint is not available.
    pub futex: Option<u64>,
    /// epoll_wait calls (with epoll_pwait and epoll_pwait2, whichever the server uses);
    /// `None` when none of their tracepoints is available.
    pub epoll_waits: Option<u64>,
}

/// Counted always: perf fails without them.
const REQUIRED: [&str; 2] = ["raw_syscalls:sys_enter", "context-switches"];
const FUTEX: &str = "syscalls:sys_enter_futex";
/// Summed into `Counts::epoll_waits`: glibc's epoll_wait is the epoll_wait syscall on x86_64,
/// epoll_pwait where the architecture has no epoll_wait (aarch64).
const EPOLL_WAITS: [&str; 3] =
    ["syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_epoll_pwait", "syscalls:sys_enter_epoll_pwait2"];

/// The optional tracepoints this machine's perf can count (probed once, with
/// `perf stat -e <event> true`).
fn optional_events() -> &'static [&'static str] {
    static AVAILABLE: OnceLock<Vec<&'static str>> = OnceLock::new();
    AVAILABLE.get_or_init(|| {
        std::iter::once(FUTEX)
            .chain(EPOLL_WAITS)
            .filter(|ev| {
                Command::new("perf")
                    .args(["stat", "-x,", "-e", ev, "true"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|st| st.success())
            })
            .collect()
    })
}

/// The events `perf stat` counts, comma-separated (its `-e` argument).
pub fn events() -> String {
    REQUIRED.iter().chain(optional_events()).copied().collect::<Vec<_>>().join(",")
}

pub struct Perf {
    child: Child,
    ctl: File,
    ack: File,
    files: [PathBuf; 3],
}

const PATIENCE: Duration = Duration::from_secs(10);

fn mkfifo(p: &Path) -> Result<(), String> {
    let _ = std::fs::remove_file(p);
    let c = CString::new(p.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } < 0 {
        return Err(format!("mkfifo {}: {}", p.display(), std::io::Error::last_os_error()));
    }
    Ok(())
}

fn open_nonblocking(p: &Path, flags: libc::c_int) -> std::io::Result<File> {
    let c = CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

impl Perf {
    /// Starts perf on every thread of `pid`, counting nothing until [`Perf::enable`].
    /// `base` names the FIFOs and the output file (`base-ctl`, `base-ack`, `base.txt`).
    pub fn attach(pid: u32, base: &Path) -> Result<Perf, String> {
        let name = base.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let ctl_path = base.with_file_name(format!("{name}-ctl"));
        let ack_path = base.with_file_name(format!("{name}-ack"));
        let out_path = base.with_file_name(format!("{name}.txt"));
        mkfifo(&ctl_path)?;
        mkfifo(&ack_path)?;
        let control = format!("fifo:{},{}", ctl_path.display(), ack_path.display());
        let child = Command::new("perf")
            .args(["stat", "-x,", "-D", "-1", "--control", &control, "-e", &events(), "-p", &pid.to_string(), "-o"])
            .arg(&out_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawning perf: {e}"))?;
        let mut files = [ctl_path.clone(), ack_path.clone(), out_path];
        let mut child = Some(child);
        let cleanup = |child: &mut Option<Child>, files: &mut [PathBuf; 3]| {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            for f in files.iter() {
                let _ = std::fs::remove_file(f);
            }
        };
        // The write end opens (nonblocking) only once perf has opened the FIFO.
        let give_up = Instant::now() + PATIENCE;
        let ctl = loop {
            match open_nonblocking(&ctl_path, libc::O_WRONLY) {
                Ok(f) => break f,
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < give_up => {
                    if let Some(Ok(Some(st))) = child.as_mut().map(Child::try_wait) {
                        cleanup(&mut child, &mut files);
                        return Err(format!("perf exited at once ({st}): is perf installed and allowed?"));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => {
                    cleanup(&mut child, &mut files);
                    return Err(format!("perf control FIFO: {e}"));
                }
            }
        };
        let ack = match open_nonblocking(&ack_path, libc::O_RDONLY) {
            Ok(f) => f,
            Err(e) => {
                cleanup(&mut child, &mut files);
                return Err(format!("perf ack FIFO: {e}"));
            }
        };
        Ok(Perf { child: child.take().expect("perf is running"), ctl, ack, files })
    }

    /// Sends a control command and waits for perf's "ack".
    fn command(&self, cmd: &str) -> Result<(), String> {
        (&self.ctl).write_all(format!("{cmd}\n").as_bytes()).map_err(|e| format!("perf {cmd}: {e}"))?;
        let give_up = Instant::now() + PATIENCE;
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("ack") {
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("perf did not acknowledge {cmd:?}"));
            }
            let mut pfd = libc::pollfd { fd: self.ack.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd that outlives the call.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(100) as libc::c_int) };
            let mut buf = [0u8; 64];
            match (&self.ack).read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("perf ack: {e}")),
            }
        }
        Ok(())
    }

    pub fn enable(&self) -> Result<(), String> {
        self.command("enable")
    }

    /// Stops counting, stops perf and reads its counts.
    pub fn finish(mut self) -> Result<Counts, String> {
        self.command("disable")?;
        // SAFETY: kill takes integers; the pid is our own live child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let give_up = Instant::now() + PATIENCE;
        while self.child.try_wait().map_err(|e| e.to_string())?.is_none() {
            if Instant::now() > give_up {
                return Err("perf did not stop on SIGINT".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = std::fs::read_to_string(&self.files[2]).map_err(|e| format!("perf output: {e}"))?;
        // `-x,` lines: value,unit,event,... (the value is `<not counted>` or `<not supported>`
        // when perf could not count it).
        let count = |event: &str| -> Option<u64> {
            text.lines()
                .map(|l| l.split(',').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[2] == event)
                .and_then(|f| f[0].parse().ok())
        };
        let find = |event: &str| count(event).ok_or(format!("perf counted no {event}: {}", text.trim()));
        let optional = |event: &str| optional_events().contains(&event).then(|| count(event)).flatten();
        let epoll: Vec<u64> = EPOLL_WAITS.iter().filter_map(|ev| optional(ev)).collect();
        Ok(Counts {
            syscalls: find(REQUIRED[0])?,
            context_switches: find(REQUIRED[1])?,
            futex: optional(FUTEX),
            epoll_waits: (!epoll.is_empty()).then(|| epoll.iter().sum()),
        })
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}
