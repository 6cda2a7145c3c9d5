//! The outputs: echo.md (tables), echo.csv (medians), echo_rounds.csv (every round) and the
//! SVG charts.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::hist::RESOLUTION;
use crate::server::{COUNTERS, C_KIND, EXAMPLE_KIND, THREADED_KINDS};
use crate::{Cell, Entry, Measure, PerfRow};

/// The latency target: no message waits longer than this (µs).
const MAX_WAIT_US: f64 = 5000.0;

pub struct Meta {
    pub load: String,
    pub date: String,
    pub machine: String,
    pub command: String,
    pub secs: f64,
    pub rounds: usize,
    pub workers: usize,
    pub wall_secs: f64,
    pub client_threads: usize,
    /// `--threads`, if given.
    pub threads: Option<Vec<usize>>,
    /// The events perf counted (`--perf`).
    pub perf_events: Option<String>,
}

/// The median of each figure over the rounds that succeeded.
pub struct Summary {
    pub ok: usize,
    pub of: usize,
    pub med: Option<Measure>,
    /// The longest round trip of all rounds kept (µs): `med.max_us` is the median round's.
    pub worst_max_us: Option<f64>,
    pub error: Option<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn summarize(e: &Entry) -> Summary {
    let ok: Vec<&Measure> = e.rounds.iter().filter_map(|r| r.as_ref().ok()).collect();
    let error = e.rounds.iter().find_map(|r| r.as_ref().err().cloned());
    let med = (!ok.is_empty()).then(|| {
        let m = |f: fn(&Measure) -> f64| median(ok.iter().map(|x| f(x)).collect());
        Measure {
            msgs: m(|x| x.msgs as f64) as u64,
            secs: m(|x| x.secs),
            msgs_per_s: m(|x| x.msgs_per_s),
            p50_us: m(|x| x.p50_us),
            p99_us: m(|x| x.p99_us),
            p999_us: m(|x| x.p999_us),
            max_us: m(|x| x.max_us),
            cpu_us_per_msg: m(|x| x.cpu_us_per_msg),
            client_us_per_msg: m(|x| x.client_us_per_msg),
            client_cores: m(|x| x.client_cores),
            other_cores: m(|x| x.other_cores),
            rss_kib: m(|x| x.rss_kib as f64) as u64,
            per_msg: ok[0].per_msg.as_ref().map(|first| {
                (0..first.len())
                    .map(|i| median(ok.iter().filter_map(|x| x.per_msg.as_ref().map(|v| v[i])).collect()))
                    .collect()
            }),
        }
    });
    let worst_max_us = ok.iter().map(|x| x.max_us).max_by(f64::total_cmp);
    Summary { ok: ok.len(), of: e.rounds.len(), med, worst_max_us, error }
}

/// The main-matrix summary of `server` on `cell`.
fn find<'a>(entries: &'a [Entry], sums: &'a [Summary], cell: Cell, server: &str) -> Option<&'a Measure> {
    entries
        .iter()
        .zip(sums)
        .find(|(e, _)| e.cell == cell && !e.oversub && e.server.label == server)
        .and_then(|(_, s)| s.med.as_ref())
}

/// The server the headline ratios are about: `cport` (the example), or with `--threads` the
/// first of its thread counts.
fn headline(entries: &[Entry]) -> String {
    entries
        .iter()
        .find(|e| !e.oversub && e.server.kind == EXAMPLE_KIND)
        .map_or_else(|| EXAMPLE_KIND.to_string(), |e| e.server.label.clone())
}

/// The `cport-inline` server `cport-c` compares with: the one with as many threads.
fn inline_twin(entries: &[Entry]) -> Option<String> {
    let c = entries.iter().find(|e| !e.oversub && e.server.kind == C_KIND)?;
    entries
        .iter()
        .find(|e| !e.oversub && e.server.kind == "cport-inline" && e.server.threads == c.server.threads)
        .map(|e| e.server.label.clone())
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("–".into(), |r| format!("{r:.2}x"))
}

fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn fmt_us(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A p99 ratio, marked as a tie when it is inside the histogram's resolution.
fn fmt_p99(r: Option<f64>) -> String {
    match r {
        Some(r) if (r - 1.0).abs() <= RESOLUTION => format!("{r:.2}x (tie)"),
        r => fmt_ratio(r),
    }
}

/// A count per message: three decimals, four below 0.1.
fn fmt_per_msg(x: f64) -> String {
    if x >= 0.1 {
        format!("{x:.3}")
    } else {
        format!("{x:.4}")
    }
}

fn fmt_mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn fmt_size(b: usize) -> String {
    format!("{b} B")
}

/// Cells of the main matrix in order, and the server labels in order.
fn layout(entries: &[Entry]) -> (Vec<Cell>, Vec<String>) {
    let mut cells = Vec::new();
    let mut servers: Vec<String> = Vec::new();
    for e in entries.iter().filter(|e| !e.oversub) {
        if !cells.contains(&e.cell) {
            cells.push(e.cell);
        }
        if !servers.contains(&e.server.label) {
            servers.push(e.server.label.clone());
        }
    }
    (cells, servers)
}

pub fn markdown(meta: &Meta, entries: &[Entry], perf: &[PerfRow]) -> String {
    let sums: Vec<Summary> = entries.iter().map(summarize).collect();
    let (cells, servers) = layout(entries);
    let head = headline(entries);
    let head = head.as_str();
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "# Echo benchmark: cport, tokio, raw epoll, thread per connection\n");
    let _ = writeln!(w, "- date: {}", meta.date);
    let _ = writeln!(w, "- machine: {}", meta.machine);
    let _ = writeln!(w, "- command: `{}`", meta.command);
    let _ = writeln!(
        w,
        "- machine load (shared with other jobs): load average {}; the `other load` column says how many cores \
         other processes kept busy during each window",
        meta.load
    );
    let _ = writeln!(
        w,
        "- method: a fresh server process per measurement; the closed-loop client ({} thread(s), edge-triggered \
         epoll, TCP_NODELAY) runs in the bench process; connect all connections, warm up 0.3 s, measure {:.1} s; {} \
         round(s) interleaved (every server on every cell, then again), the order of the servers within a cell \
         rotated each round; figures are medians over the rounds kept (`rounds` = kept/run; a failed round is \
         reported and fails the command). CPU/msg = server utime+stime (/proc/<pid>/stat) over the window / round \
         trips; RSS = server VmHWM; latency = client round trip (from the send of a message to the last byte of \
         its echo). `client cores` = the client's own CPU over the window: near {} (a core per client thread), the \
         client is the bottleneck and throughput ratios are compressed towards 1. p50, p99 and p99.9 are read off \
         a histogram of {:.0}% resolution (a p99 ratio within it is a tie); `max` is the exact longest round trip \
         of the window (the median over rounds; the Tails section gives the worst round and every round's).",
        meta.client_threads,
        meta.secs,
        meta.rounds,
        meta.client_threads,
        RESOLUTION * 100.0
    );
    let threads = match &meta.threads {
        Some(list) => format!(
            "T threads in next_completion, T = {} (`--threads`: one server per count, labelled `<kind>/<T>t`)",
            list.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
        ),
        None => format!("{} threads in next_completion (one per CPU)", meta.workers),
    };
    let _ = writeln!(
        w,
        "- servers: **cport** = the shipped example `examples/echo_server.rs` (`target/release/examples/echo_server \
         127.0.0.1:0 --threads T`): the default configuration (`Port::new()`: no workers), {threads}, accept_many \
         -> assign -> read 16 KiB -> write the bytes -> read, every I/O through the queue; the headline ratios \
         are `{head}`'s; **cport-inline** = the tuned server of the bench (`server.rs`): no workers either, \
         {threads}, `start_io_inline` (an I/O that finishes at once is handled by the thread that started it) \
         and a spare buffer per connection (no allocation once warm); **cport-workers** = the tuned server with \
         {n} dedicated workers and {n} threads in next_completion; **cport-c** = the C echo server on cport's C \
         API (`examples/c/echo_server.c`, `target/c/echo_server 127.0.0.1:0 {n}`): no workers, {n} threads in \
         cport_next_completion, inline read/write, TCP_NODELAY (compared with cport-inline); **tokio** = \
         multi-thread runtime (default workers), a task per connection, read + write_all; **epoll** = one thread, \
         edge-triggered, libc, fixed buffer per connection (the floor); **threads** = std::net, a thread per \
         connection.",
        n = meta.workers
    );
    let _ = writeln!(w, "- wall time: {:.0} s\n", meta.wall_secs);

    let order = servers.join(" / ");
    let _ = writeln!(w, "## Per cell\n");
    let _ = writeln!(w, "Each multi-value column lists {order}.\n");
    let _ = writeln!(
        w,
        "| conns | size | msgs/s | {head} vs tokio msgs/s | CPU µs/msg | {head} vs epoll CPU | p50 µs | p99 µs | p99.9 µs | max µs | {head} vs tokio p99 | peak RSS MiB | client cores | rounds |"
    );
    let _ = writeln!(w, "|---:|---:|---|---:|---|---:|---|---|---|---|---:|---|---|---|");
    for &cell in &cells {
        let per = |f: &dyn Fn(&Measure) -> String| {
            servers
                .iter()
                .map(|sv| find(entries, &sums, cell, sv).map_or("fail".into(), f))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let get = |sv: &str, f: fn(&Measure) -> f64| find(entries, &sums, cell, sv).map(f);
        let rounds = servers
            .iter()
            .map(|sv| {
                entries
                    .iter()
                    .zip(&sums)
                    .find(|(e, _)| e.cell == cell && !e.oversub && &e.server.label == sv)
                    .map_or("–".into(), |(_, s)| format!("{}/{}", s.ok, s.of))
            })
            .collect::<Vec<_>>()
            .join(" / ");
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell.conns,
            fmt_size(cell.size),
            per(&|m| fmt_rate(m.msgs_per_s)),
            fmt_ratio(ratio(get(head, |m| m.msgs_per_s), get("tokio", |m| m.msgs_per_s))),
            per(&|m| fmt_us(m.cpu_us_per_msg)),
            fmt_ratio(ratio(get(head, |m| m.cpu_us_per_msg), get("epoll", |m| m.cpu_us_per_msg))),
            per(&|m| fmt_us(m.p50_us)),
            per(&|m| fmt_us(m.p99_us)),
            per(&|m| fmt_us(m.p999_us)),
            per(&|m| fmt_us(m.max_us)),
            fmt_p99(ratio(get(head, |m| m.p99_us), get("tokio", |m| m.p99_us))),
            per(&|m| fmt_mib(m.rss_kib)),
            per(&|m| format!("{:.2}", m.client_cores)),
            rounds,
        );
    }

    let _ = writeln!(w, "\n## Every server and cell\n");
    let _ = writeln!(
        w,
        "| conns | size | server | msgs/s | p50 µs | p99 µs | p99.9 µs | max µs | CPU µs/msg | peak RSS MiB | vs tokio msgs/s | vs epoll CPU | client CPU µs/msg | client cores | other load (cores) | rounds kept/run |"
    );
    let _ = writeln!(w, "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (e, sum) in entries.iter().zip(&sums) {
        let tokio = find(entries, &sums, e.cell, "tokio").map(|m| m.msgs_per_s);
        let epoll = find(entries, &sums, e.cell, "epoll").map(|m| m.cpu_us_per_msg);
        match &sum.med {
            Some(m) => {
                let _ = writeln!(
                    w,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {}/{} |",
                    e.cell.conns,
                    fmt_size(e.cell.size),
                    e.server.label,
                    fmt_rate(m.msgs_per_s),
                    fmt_us(m.p50_us),
                    fmt_us(m.p99_us),
                    fmt_us(m.p999_us),
                    fmt_us(m.max_us),
                    fmt_us(m.cpu_us_per_msg),
                    fmt_mib(m.rss_kib),
                    fmt_ratio(ratio(Some(m.msgs_per_s), tokio)),
                    fmt_ratio(ratio(Some(m.cpu_us_per_msg), epoll)),
                    fmt_us(m.client_us_per_msg),
                    m.client_cores,
                    m.other_cores,
                    sum.ok,
                    sum.of
                );
            }
            None => {
                let why = sum.error.clone().unwrap_or_default().replace('|', "/");
                let _ = writeln!(
                    w,
                    "| {} | {} | {} | failed: {why} | | | | | | | | | | | | 0/{} |",
                    e.cell.conns,
                    fmt_size(e.cell.size),
                    e.server.label,
                    sum.of
                );
            }
        }
    }

    tails(w, entries, &sums);

    c_api(w, entries, &sums, &cells, perf);

    let over: Vec<(&Entry, &Summary)> = entries.iter().zip(&sums).filter(|(e, _)| e.oversub).collect();
    if let Some((first, _)) = over.first() {
        let cell = first.cell;
        let _ = writeln!(
            w,
            "\n## Oversubscription: {} connections, {}, cport (the example, no workers) with T threads in \
             next_completion on {} CPUs\n",
            cell.conns,
            fmt_size(cell.size),
            meta.workers
        );
        let _ = writeln!(
            w,
            "| T | msgs/s | p50 µs | p99 µs | p99.9 µs | max µs | CPU µs/msg | vs tokio msgs/s | vs epoll CPU |"
        );
        let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let tokio = find(entries, &sums, cell, "tokio");
        let epoll = find(entries, &sums, cell, "epoll");
        for (e, sum) in &over {
            match &sum.med {
                Some(m) => {
                    let _ = writeln!(
                        w,
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        e.server.threads,
                        fmt_rate(m.msgs_per_s),
                        fmt_us(m.p50_us),
                        fmt_us(m.p99_us),
                        fmt_us(m.p999_us),
                        fmt_us(m.max_us),
                        fmt_us(m.cpu_us_per_msg),
                        fmt_ratio(ratio(Some(m.msgs_per_s), tokio.map(|t| t.msgs_per_s))),
                        fmt_ratio(ratio(Some(m.cpu_us_per_msg), epoll.map(|t| t.cpu_us_per_msg))),
                    );
                }
                None => {
                    let _ = writeln!(w, "| {} | failed | | | | | | | |", e.server.threads);
                }
            }
        }
        for (name, m) in [("tokio", tokio), ("epoll", epoll)] {
            if let Some(m) = m {
                let _ = writeln!(
                    w,
                    "| ({name}) | {} | {} | {} | {} | {} | {} | | |",
                    fmt_rate(m.msgs_per_s),
                    fmt_us(m.p50_us),
                    fmt_us(m.p99_us),
                    fmt_us(m.p999_us),
                    fmt_us(m.max_us),
                    fmt_us(m.cpu_us_per_msg)
                );
            }
        }
    }

    // The cport servers the targets are about: the example and the tuned inline server, at
    // each thread count.
    let targeted: Vec<&String> = servers
        .iter()
        .filter(|sv| {
            entries.iter().any(|e| !e.oversub && &e.server.label == *sv && THREADED_KINDS.contains(&e.server.kind))
        })
        .collect();
    if cells.iter().any(|&c| targeted.iter().any(|sv| find(entries, &sums, c, sv).is_some())) {
        let _ = writeln!(w, "\n## Targets, cport per cell\n");
        let _ = writeln!(
            w,
            "A p99 target counts as met only when cport's p99 is below tokio's by more than the histogram's \
             resolution ({:.0}%); inside it, the two are a tie, which is not a win. `max <= {:.0} ms` is the worst \
             round's longest round trip: no message may wait longer. `client cores` says whether the client, not \
             the servers, set the pace.\n",
            RESOLUTION * 100.0,
            MAX_WAIT_US / 1000.0
        );
        let _ = writeln!(
            w,
            "| conns | size | server | CPU/msg <= 1.10x epoll | msgs/s >= tokio | p99 <= tokio | max <= {:.0} ms (worst round) | client cores (server / tokio) |",
            MAX_WAIT_US / 1000.0
        );
        let _ = writeln!(w, "|---:|---:|---|---|---|---|---|---|");
        for &cell in &cells {
            for &sv in &targeted {
                let Some((_, sum)) =
                    entries.iter().zip(&sums).find(|(e, _)| e.cell == cell && !e.oversub && &e.server.label == sv)
                else {
                    continue;
                };
                let get = |sv: &str, f: fn(&Measure) -> f64| find(entries, &sums, cell, sv).map(f);
                let mark = |r: Option<f64>, ok: fn(f64) -> bool| match r {
                    Some(r) => format!("{} {:.2}x", if ok(r) { "yes" } else { "**no**" }, r),
                    None => "–".into(),
                };
                let p99 = match ratio(get(sv, |m| m.p99_us), get("tokio", |m| m.p99_us)) {
                    Some(r) if (r - 1.0).abs() <= RESOLUTION => format!("tie {r:.2}x (within resolution)"),
                    r => mark(r, |r| r <= 1.0),
                };
                let max = match sum.worst_max_us {
                    Some(us) => format!("{} {} µs", if us <= MAX_WAIT_US { "yes" } else { "**no**" }, fmt_us(us)),
                    None => "–".into(),
                };
                let client = |sv: &str| get(sv, |m| m.client_cores).map_or("–".into(), |c| format!("{c:.2}"));
                let _ = writeln!(
                    w,
                    "| {} | {} | {} | {} | {} | {} | {} | {} / {} |",
                    cell.conns,
                    fmt_size(cell.size),
                    sv,
                    mark(ratio(get(sv, |m| m.cpu_us_per_msg), get("epoll", |m| m.cpu_us_per_msg)), |r| r <= 1.10),
                    mark(ratio(get(sv, |m| m.msgs_per_s), get("tokio", |m| m.msgs_per_s)), |r| r >= 1.0),
                    p99,
                    max,
                    client(sv),
                    client("tokio"),
                );
            }
        }
    }

    let counted: Vec<(&Entry, &Measure)> = entries
        .iter()
        .zip(&sums)
        .filter_map(|(e, s)| s.med.as_ref().filter(|m| m.per_msg.is_some()).map(|m| (e, m)))
        .collect();
    if !counted.is_empty() {
        let _ = writeln!(w, "\n## What a message costs inside cport (`Port::stats`, per message, medians)\n");
        let _ = writeln!(
            w,
            "The tuned servers only (the example and the C server do not report their counters). `events per wait` \
             = events / epoll waits.\n"
        );
        // Every counter per message, in `COUNTERS` order, but `completions` (one per message
        // and I/O, which says little) and `events` (shown per wait, after the waits).
        let shown: Vec<&str> =
            COUNTERS.iter().map(|c| c.name).filter(|n| !matches!(*n, "completions" | "events")).collect();
        let mut header = String::from("| conns | size | server |");
        let mut align = String::from("|---:|---:|---|");
        for name in &shown {
            let _ = write!(header, " {} |", name.replace('_', " "));
            align.push_str("---:|");
            if *name == "epoll_waits" {
                header.push_str(" events per wait |");
                align.push_str("---:|");
            }
        }
        let _ = writeln!(w, "{header}\n{align}");
        for (e, m) in counted {
            let v = m.per_msg.as_ref().expect("filtered");
            let g = |name: &str| COUNTERS.iter().position(|c| c.name == name).map_or(f64::NAN, |i| v[i]);
            let _ = write!(w, "| {} | {} | {} |", e.cell.conns, fmt_size(e.cell.size), e.server.label);
            for name in &shown {
                let x = g(name);
                let _ = write!(w, " {} |", fmt_per_msg(x));
                if *name == "epoll_waits" {
                    let _ = write!(w, " {:.1} |", if x > 0.0 { g("events") / x } else { 0.0 });
                }
            }
            w.push('\n');
        }
    }

    if !perf.is_empty() {
        let _ = writeln!(
            w,
            "\n## Syscalls, context switches, futex and epoll_wait calls per message (perf stat on the server)\n"
        );
        let _ = writeln!(
            w,
            "Extra runs outside the matrix, `perf stat -e {} -p <server pid>` enabled only over the {:.1} s window; \
             tracing syscalls slows the server, so msgs/s here is lower. `epoll_wait` counts epoll_wait, \
             epoll_pwait and epoll_pwait2 together; n/a: the kernel has no such tracepoint.\n",
            meta.perf_events.as_deref().unwrap_or("raw_syscalls:sys_enter,context-switches"),
            meta.secs
        );
        let _ = writeln!(
            w,
            "| server | conns | size | msgs/s (under perf) | syscalls/msg | context switches/msg | futex calls/msg | epoll_wait calls/msg |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for r in perf {
            match &r.result {
                Ok((m, c)) => {
                    let per = |n: u64| n as f64 / m.msgs as f64;
                    let opt = |n: Option<u64>| n.map_or("n/a".into(), |n| fmt_per_msg(per(n)));
                    let _ = writeln!(
                        w,
                        "| {} | {} | {} | {} | {:.2} | {} | {} | {} |",
                        r.server,
                        r.cell.conns,
                        fmt_size(r.cell.size),
                        fmt_rate(m.msgs_per_s),
                        per(c.syscalls),
                        fmt_per_msg(per(c.context_switches)),
                        opt(c.futex),
                        opt(c.epoll_waits),
                    );
                }
                Err(e) => {
                    let _ = writeln!(
                        w,
                        "| {} | {} | {} | failed: {} | | | | |",
                        r.server,
                        r.cell.conns,
                        fmt_size(r.cell.size),
                        e.replace('|', "/")
                    );
                }
            }
        }
    }
    s
}

/// The tails of every server and cell: p50, p99, p99.9 and the maximum round trip (median
/// over rounds), the worst round's maximum and every round's, against the target that no
/// message waits longer than `MAX_WAIT_US`.
fn tails(w: &mut String, entries: &[Entry], sums: &[Summary]) {
    let _ = writeln!(w, "\n## Tails: how long a message waited\n");
    let _ = writeln!(
        w,
        "p50 .. max are medians over the rounds kept; `worst max` is the longest round trip of any round, \
         `max per round` every round's (in round order; `–`: the round failed); the target: no message waits \
         more than {:.0} ms.\n",
        MAX_WAIT_US / 1000.0
    );
    let _ = writeln!(
        w,
        "| conns | size | server | p50 µs | p99 µs | p99.9 µs | max µs | worst max µs | max per round µs | <= {:.0} ms |",
        MAX_WAIT_US / 1000.0
    );
    let _ = writeln!(w, "|---:|---:|---|---:|---:|---:|---:|---:|---|---|");
    for (e, sum) in entries.iter().zip(sums) {
        let Some(m) = &sum.med else {
            let _ = writeln!(
                w,
                "| {} | {} | {} | failed | | | | | | |",
                e.cell.conns,
                fmt_size(e.cell.size),
                e.server.label
            );
            continue;
        };
        let rounds: Vec<String> =
            e.rounds.iter().map(|r| r.as_ref().map_or("–".into(), |x| fmt_us(x.max_us))).collect();
        let worst = sum.worst_max_us.unwrap_or(m.max_us);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            e.cell.conns,
            fmt_size(e.cell.size),
            e.server.label,
            fmt_us(m.p50_us),
            fmt_us(m.p99_us),
            fmt_us(m.p999_us),
            fmt_us(m.max_us),
            fmt_us(worst),
            rounds.join(", "),
            if worst <= MAX_WAIT_US { "yes" } else { "**no**" },
        );
    }
}

/// The C API's cost: `cport-c` (the C echo server) over `cport-inline` (the same configuration
/// in Rust, as many threads) per cell where both ran, with the per-round ratios (the two ran in
/// the same round, minutes apart at most) beside the ratio of the medians. The goal: <= 1.05x
/// CPU per message.
fn c_api(w: &mut String, entries: &[Entry], sums: &[Summary], cells: &[Cell], perf: &[PerfRow]) {
    const GOAL: f64 = 1.05;
    let Some(rust) = inline_twin(entries) else { return };
    let rust = rust.as_str();
    let both: Vec<Cell> = cells
        .iter()
        .copied()
        .filter(|&c| find(entries, sums, c, rust).is_some() && find(entries, sums, c, C_KIND).is_some())
        .collect();
    if both.is_empty() {
        return;
    }
    let rounds_of = |cell: Cell, sv: &str| {
        entries.iter().find(|e| e.cell == cell && !e.oversub && e.server.label == sv).map(|e| &e.rounds)
    };
    let _ = writeln!(w, "\n## C API: cport-c (C echo server) over {rust} (the same server in Rust)\n");
    let _ = writeln!(
        w,
        "`cport-c / {rust} CPU` is the ratio of the medians (the goal: <= {GOAL:.2}x, the C API costing under \
         {:.0}% CPU per message); `per round` are the ratios of the two servers' runs in the same round, and their \
         median.\n",
        (GOAL - 1.0) * 100.0
    );
    let _ = writeln!(
        w,
        "| conns | size | CPU µs/msg {rust} / cport-c | cport-c / {rust} CPU | <= {GOAL:.2}x | per round (median) | msgs/s {rust} / cport-c | cport-c / {rust} msgs/s |"
    );
    let _ = writeln!(w, "|---:|---:|---|---:|---|---|---|---:|");
    for cell in both {
        let (r, c) =
            (find(entries, sums, cell, rust).expect("filtered"), find(entries, sums, cell, C_KIND).expect("filtered"));
        let cpu = ratio(Some(c.cpu_us_per_msg), Some(r.cpu_us_per_msg));
        let per_round: Vec<f64> = match (rounds_of(cell, rust), rounds_of(cell, C_KIND)) {
            (Some(a), Some(b)) => a
                .iter()
                .zip(b)
                .filter_map(|(a, b)| match (a, b) {
                    (Ok(a), Ok(b)) if a.cpu_us_per_msg > 0.0 => Some(b.cpu_us_per_msg / a.cpu_us_per_msg),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let rounds = if per_round.is_empty() {
            "–".to_string()
        } else {
            let list: Vec<String> = per_round.iter().map(|r| format!("{r:.2}")).collect();
            format!("{} ({:.2}x)", list.join(", "), median(per_round.clone()))
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} / {} | {} | {} | {} | {} / {} | {} |",
            cell.conns,
            fmt_size(cell.size),
            fmt_us(r.cpu_us_per_msg),
            fmt_us(c.cpu_us_per_msg),
            fmt_ratio(cpu),
            cpu.map_or("–".into(), |x| if x <= GOAL { "yes".to_string() } else { "**no**".to_string() }),
            rounds,
            fmt_rate(r.msgs_per_s),
            fmt_rate(c.msgs_per_s),
            fmt_ratio(ratio(Some(c.msgs_per_s), Some(r.msgs_per_s))),
        );
    }
    let syscalls = |sv: &str| {
        let p = perf.iter().find(|p| p.server == sv)?;
        let (m, c) = p.result.as_ref().ok()?;
        Some((p.cell, c.syscalls as f64 / m.msgs as f64, c.context_switches as f64 / m.msgs as f64))
    };
    if let (Some((cell, rs, rc)), Some((_, cs, cc))) = (syscalls(rust), syscalls(C_KIND)) {
        let _ = writeln!(
            w,
            "\nperf stat at {} connections, {}: syscalls/msg {rust} {rs:.2}, cport-c {cs:.2} ({}); context \
             switches/msg {rust} {rc:.3}, cport-c {cc:.3}.",
            cell.conns,
            fmt_size(cell.size),
            fmt_ratio(ratio(Some(cs), Some(rs)))
        );
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or(String::new(), |v| format!("{v:.prec$}"))
}

/// One line per server and cell: the medians and the ratios to tokio (msgs/s) and epoll (CPU).
pub fn csv(entries: &[Entry]) -> String {
    let sums: Vec<Summary> = entries.iter().map(summarize).collect();
    let mut s = String::from(
        "conns,size,server,threads,oversub,rounds_ok,rounds,msgs_per_s,p50_us,p99_us,p999_us,max_us,worst_max_us,cpu_us_per_msg,client_us_per_msg,client_cores,other_cores,rss_kib,vs_tokio_msgs,vs_epoll_cpu,vs_tokio_p99,error\n",
    );
    for (e, sum) in entries.iter().zip(&sums) {
        let m = sum.med.as_ref();
        let tokio = find(entries, &sums, e.cell, "tokio");
        let epoll = find(entries, &sums, e.cell, "epoll");
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            e.cell.conns,
            e.cell.size,
            e.server.label,
            e.server.threads,
            e.oversub,
            sum.ok,
            sum.of,
            opt(m.map(|m| m.msgs_per_s), 0),
            opt(m.map(|m| m.p50_us), 2),
            opt(m.map(|m| m.p99_us), 2),
            opt(m.map(|m| m.p999_us), 2),
            opt(m.map(|m| m.max_us), 2),
            opt(sum.worst_max_us, 2),
            opt(m.map(|m| m.cpu_us_per_msg), 3),
            opt(m.map(|m| m.client_us_per_msg), 3),
            opt(m.map(|m| m.client_cores), 2),
            opt(m.map(|m| m.other_cores), 2),
            m.map_or(String::new(), |m| m.rss_kib.to_string()),
            opt(ratio(m.map(|m| m.msgs_per_s), tokio.map(|t| t.msgs_per_s)), 3),
            opt(ratio(m.map(|m| m.cpu_us_per_msg), epoll.map(|t| t.cpu_us_per_msg)), 3),
            opt(ratio(m.map(|m| m.p99_us), tokio.map(|t| t.p99_us)), 3),
            csv_field(if m.is_none() { sum.error.as_deref().unwrap_or("") } else { "" }),
        );
    }
    s
}

/// One line per measurement.
pub fn rounds_csv(entries: &[Entry]) -> String {
    let mut s = String::from(
        "round,conns,size,server,threads,oversub,msgs,secs,msgs_per_s,p50_us,p99_us,p999_us,max_us,cpu_us_per_msg,client_us_per_msg,client_cores,other_cores,rss_kib,error\n",
    );
    for e in entries {
        for (i, r) in e.rounds.iter().enumerate() {
            let head = format!(
                "{},{},{},{},{},{}",
                i + 1,
                e.cell.conns,
                e.cell.size,
                e.server.label,
                e.server.threads,
                e.oversub
            );
            let _ = match r {
                Ok(m) => writeln!(
                    s,
                    "{head},{},{:.3},{:.0},{:.2},{:.2},{:.2},{:.2},{:.3},{:.3},{:.2},{:.2},{},",
                    m.msgs,
                    m.secs,
                    m.msgs_per_s,
                    m.p50_us,
                    m.p99_us,
                    m.p999_us,
                    m.max_us,
                    m.cpu_us_per_msg,
                    m.client_us_per_msg,
                    m.client_cores,
                    m.other_cores,
                    m.rss_kib
                ),
                Err(why) => writeln!(s, "{head},,,,,,,,,,,,,{}", csv_field(why)),
            };
        }
    }
    s
}

/// The colour of server `i` of the chart, `server`.
fn color(server: &str, i: usize) -> RGBColor {
    const OTHERS: [RGBColor; 6] = [
        RGBColor(227, 119, 194),
        RGBColor(255, 187, 120),
        RGBColor(174, 199, 232),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
        RGBColor(0, 0, 0),
    ];
    match server {
        EXAMPLE_KIND => RGBColor(214, 39, 40),
        "cport-inline" => RGBColor(148, 103, 189),
        "cport-workers" => RGBColor(140, 86, 75),
        "tokio" => RGBColor(31, 119, 180),
        "epoll" => RGBColor(44, 160, 44),
        "threads" => RGBColor(127, 127, 127),
        C_KIND => RGBColor(255, 127, 14),
        _ => OTHERS[i % OTHERS.len()],
    }
}

/// Two panels for messages of `size` bytes: messages/s and server CPU µs per message against
/// connections (log x), one line per server.
pub fn svg(path: &Path, entries: &[Entry], size: usize) -> Result<(), String> {
    let sums: Vec<Summary> = entries.iter().map(summarize).collect();
    let (cells, servers) = layout(entries);
    let cells: Vec<Cell> = cells.into_iter().filter(|c| c.size == size).collect();
    let series = |f: fn(&Measure) -> f64| -> Vec<(String, Vec<(f64, f64)>)> {
        servers
            .iter()
            .map(|sv| {
                let pts =
                    cells.iter().filter_map(|&c| find(entries, &sums, c, sv).map(|m| (c.conns as f64, f(m)))).collect();
                (sv.clone(), pts)
            })
            .collect()
    };
    let panels = [
        (format!("messages/s, {size} B messages"), "thousand messages/s", series(|m| m.msgs_per_s / 1000.0)),
        (format!("server CPU per message, {size} B"), "CPU µs per message", series(|m| m.cpu_us_per_msg)),
    ];
    let xs: Vec<f64> = cells.iter().map(|c| c.conns as f64).collect();
    let (xmin, xmax) = xs.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    if xs.is_empty() {
        return Err("no cells of this size".into());
    }
    let (xmin, xmax) = (xmin / 1.6, xmax * 1.6);
    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let areas = root.split_evenly((1, 2));
    for (area, (title, ylabel, lines)) in areas.iter().zip(panels.iter()) {
        let ymax = lines.iter().flat_map(|(_, p)| p.iter().map(|&(_, y)| y)).fold(0.0, f64::max).max(1e-9) * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d((xmin..xmax).log_scale().with_key_points(xs.clone()), 0.0..ymax)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("connections (log scale)")
            .y_desc(*ylabel)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(|x| e(&x))?;
        for (i, (server, pts)) in lines.iter().enumerate() {
            if pts.is_empty() {
                continue;
            }
            let c = color(server, i);
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(|x| e(&x))?
                .label(server.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled()))).map_err(|x| e(&x))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
