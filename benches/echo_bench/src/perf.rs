//! `perf stat -e raw_syscalls:sys_enter,context-switches -p <pid>`, enabled and disabled
//! exactly around the measured window through perf's control FIFO.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What perf counted over the window (all threads of the server).
#[derive(Clone, Copy, Debug)]
pub struct Counts {
    pub syscalls: u64,
    pub context_switches: u64,
}

pub struct Perf {
    child: Child,
    ctl: File,
    ack: File,
    files: [PathBuf; 3],
}

const EVENTS: &str = "raw_syscalls:sys_enter,context-switches";
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
            .args(["stat", "-x,", "-D", "-1", "--control", &control, "-e", EVENTS, "-p", &pid.to_string(), "-o"])
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
        let find = |event: &str| -> Result<u64, String> {
            text.lines()
                .map(|l| l.split(',').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[2] == event)
                .and_then(|f| f[0].parse().ok())
                .ok_or(format!("perf counted no {event}: {}", text.trim()))
        };
        Ok(Counts { syscalls: find("raw_syscalls:sys_enter")?, context_switches: find("context-switches")? })
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
