//! The processes under test: the mock upstream and the proxy, each started from its release
//! binary, and their memory as the kernel reports it.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Proc {
    pub child: Child,
    pub port: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .map(|d| d.join(name))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// With `--traces`, the proxy exports a span per request (to the mock).
pub static TRACES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Reads lines from a child's stream until one yields a port.
fn port_from(
    stream: impl std::io::Read + Send + 'static,
    find: fn(&str) -> Option<u16>,
) -> Result<u16> {
    let mut lines = BufReader::new(stream).lines();
    loop {
        let Some(line) = lines.next() else {
            bail!("the process exited before it was ready")
        };
        if let Some(p) = find(&line?) {
            std::thread::spawn(move || for _ in lines {});
            return Ok(p);
        }
    }
}

pub fn mock() -> Result<Proc> {
    listening("mock-upstream", &["0", "--no-record"])
}

/// The reference relay (`bench/src/bin/bare-relay.rs`) in front of the mock.
pub fn bare_relay(upstream_port: u16) -> Result<Proc> {
    listening("bare-relay", &[&upstream_port.to_string()])
}

/// Starts one of our release binaries that prints `listening <port>` when ready.
fn listening(name: &str, args: &[&str]) -> Result<Proc> {
    let mut child = Command::new(binary(name))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {name} (build it with --release)"))?;
    let out = child.stdout.take().context("child stdout")?;
    let port = port_from(out, |l| {
        l.strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
    })?;
    Ok(Proc { child, port })
}

/// Starts `agent-budget serve` and returns once it accepts requests, with the time that took.
pub fn proxy(data_dir: &Path, upstream_port: u16) -> Result<(Proc, Duration)> {
    proxy_with(data_dir, upstream_port, &[])
}

/// The admin token the benchmark's proxies run with (its REST calls present it).
pub const ADMIN_TOKEN: &str = "agent-budget-bench-admin-token";

/// `proxy` with more `serve` arguments.
pub fn proxy_with(data_dir: &Path, upstream_port: u16, extra: &[&str]) -> Result<(Proc, Duration)> {
    let started = Instant::now();
    // BENCH_PROXY: another build to compare; BENCH_WRAP: a profiler to run it under.
    let mut words: Vec<String> = std::env::var("BENCH_WRAP")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    words.push(
        std::env::var("BENCH_PROXY")
            .unwrap_or_else(|_| binary("agent-budget").display().to_string()),
    );
    let mut command = Command::new(&words[0]);
    if TRACES.load(std::sync::atomic::Ordering::Relaxed) {
        // Every request's span goes to the mock, which takes OTLP exports and keeps nothing.
        command.env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{upstream_port}"),
        );
    }
    let mut child = command
        .args(&words[1..])
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(data_dir)
        .args(["--upstream", &format!("http://127.0.0.1:{upstream_port}")])
        .args(["--admin-token", ADMIN_TOKEN])
        .args(extra)
        .env("RUST_LOG", "agent_budget=info")
        .stderr(Stdio::piped())
        .spawn()
        .context("start agent-budget (build it with --release)")?;
    let err = child.stderr.take().context("proxy stderr")?;
    let port = port_from(err, |l| {
        l.split("ready port=")
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
    })?;
    Ok((Proc { child, port }, started.elapsed()))
}

/// Resident and peak resident memory of a process, in MiB.
pub fn rss(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

/// Linux reports process CPU times in USER_HZ ticks, fixed at 100 a second for user space.
pub const TICKS_PER_SEC: f64 = 100.0;

/// CPU time `pid` has used so far (user + system, all threads), in ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name, which may itself contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let field = |n: usize| {
        rest.split_whitespace()
            .nth(n)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    field(11) + field(12)
}

/// CPU model, cores, memory and kernel of this machine.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kb| format!("{:.0} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cores} cores, {mem} RAM, Linux {}", kernel.trim())
}
