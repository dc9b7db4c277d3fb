//! Black-box tests of real `strata` processes (`tests/tests/`), and the helpers they share,
//! written once: start `strata serve` on loopback and stop it (SIGTERM, then SIGKILL) even
//! when a test fails, speak RESP raw, scrape metrics, mount a tmpfs.
//!
//! The binary under test is this package's own `strata-test-node` (`src/bin/`), which is
//! the `strata` command line ([`strata_server::entry::main`]) built for these tests, so
//! cargo builds it fresh for every `cargo test` of this package.
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `strata` binary under test: `$STRATA_BIN` when set, else this package's
/// `strata-test-node`, beside the test executable's directory (`target/<profile>/`).
pub fn strata_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("STRATA_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("strata-test-node");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test -p strata-tests`",
        bin.display()
    );
    bin
}

/// `kill SIG PID` (`-STOP`, `-CONT`, `-TERM`…), asserted to succeed.
fn signal(pid: u32, sig: &str) {
    let pid = pid.to_string();
    assert!(
        Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success(),
        "kill {sig} {pid}"
    );
}

/// A free loopback port (bound, then released: a tiny race, acceptable in tests).
///
/// Chosen below the kernel's ephemeral range (32768–60999 here), where a port the kernel
/// hands out for an outgoing connection could take it between this check and the server's
/// bind, and never twice in one test process; free for TCP and UDP on loopback.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Each test process starts at its own offset, so parallel runs rarely meet.
    let offset = (std::process::id() % 600) * 20;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (20_000 + (offset + n) % 12_000) as u16;
        if n > 24_000 {
            // Everything was tried: fall back to the kernel's choice.
            return TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
}

/// The resident set of process `pid` (`VmRSS` of `/proc/PID/status`), in bytes: for a
/// thread that samples a server while the test drives it.
pub fn rss_of(pid: u32) -> u64 {
    try_rss_of(pid).expect("VmRSS in /proc/PID/status")
}

/// [`rss_of`], or `None` when the process is gone.
fn try_rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// The peak resident set of a process while a test drives it: sampled every 5 ms by a
/// thread of its own until [`PeakRss::stop`].
pub struct PeakRss {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<u64>,
}

impl PeakRss {
    /// Starts sampling process `pid`.
    pub fn start(pid: u32) -> Self {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = std::thread::spawn({
            let done = done.clone();
            move || {
                let mut peak = 0;
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    // The process may be gone (a test that killed it): the peak so far.
                    let Some(rss) = try_rss_of(pid) else { break };
                    peak = peak.max(rss);
                    std::thread::sleep(Duration::from_millis(5));
                }
                peak
            }
        });
        Self { done, sampler }
    }

    /// Stops sampling: the highest resident set seen, in bytes.
    pub fn stop(self) -> u64 {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        self.sampler.join().unwrap()
    }
}

/// A `strata serve` child process.
pub struct Server {
    pub child: Option<Child>,
    /// The address its RESP and admin ports listen on (`127.0.0.1` but in a [`NetLab`]).
    pub host: String,
    pub port: u16,
    pub admin_port: u16,
    /// The cluster-mode RESP port (`server.cluster_listen`), when it has one.
    pub cluster_port: Option<u16>,
    pub dir: PathBuf,
    /// Whether the RESP port speaks TLS (read from the server's log).
    pub tls: bool,
    _tmp: Option<tempfile::TempDir>,
    log: PathBuf,
    /// The `server.admin_token` its config sets, sent by the helpers that read the admin
    /// port ([`cluster_json`]).
    pub admin_token: Option<String>,
}

impl Server {
    /// Starts a server with `extra_toml` appended to a small test config, in a new directory.
    pub fn start(extra_toml: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = Self::start_in(&dir, extra_toml);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server whose data directory is under `dir` (kept across restarts).
    pub fn start_in(dir: &Path, extra_toml: &str) -> Self {
        Self::start_with_env(dir, extra_toml, &[])
    }

    /// Like [`Server::start_in`], with extra environment variables.
    pub fn start_with_env(dir: &Path, extra_toml: &str, env: &[(&str, &str)]) -> Self {
        Self::start_on(dir, extra_toml, env, "127.0.0.1:0")
    }

    /// A server with L1 only (L3 off), in a new directory.
    pub fn start_l1_only(extra_toml: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = Self::start_with_env(&dir, extra_toml, &[("STRATA__L3__ENABLED", "false")]);
        s._tmp = Some(tmp);
        s
    }

    /// A server whose RESP port listens on `resp_listen` (port 0: the kernel picks).
    pub fn start_listening(extra_toml: &str, resp_listen: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = Self::start_on(&dir, extra_toml, &[], resp_listen);
        s._tmp = Some(tmp);
        s
    }

    fn start_on(dir: &Path, extra_toml: &str, env: &[(&str, &str)], resp_listen: &str) -> Self {
        Self::start_via(&[], dir, extra_toml, env, resp_listen, "127.0.0.1")
    }

    /// A server in network namespace `ns` (through `ip netns exec`), its RESP and admin
    /// ports listening on `host` there, its data directory under `dir`.
    pub fn start_in_netns(ns: &str, host: &str, dir: &Path, extra_toml: &str) -> Self {
        Self::start_via(
            &["ip", "netns", "exec", ns],
            dir,
            extra_toml,
            &[],
            &format!("{host}:0"),
            host,
        )
    }

    /// A server started through `wrapper` (a command that execs the rest of its arguments,
    /// such as `prlimit --nofile=300:300 --`), in a new directory.
    pub fn start_wrapped(wrapper: &[&str], extra_toml: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = Self::start_via(wrapper, &dir, extra_toml, &[], "127.0.0.1:0", "127.0.0.1");
        s._tmp = Some(tmp);
        s
    }

    fn start_via(
        wrapper: &[&str],
        dir: &Path,
        extra_toml: &str,
        env: &[(&str, &str)],
        resp_listen: &str,
        host: &str,
    ) -> Self {
        let host = host.to_owned();
        let config = dir.join("strata.toml");
        std::fs::write(&config, node_toml(dir, extra_toml)).unwrap();
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = dir.join(format!("server-{}-{n}.log", std::process::id()));
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(strata_bin());
                c
            }
            None => Command::new(strata_bin()),
        };
        let child = command
            .args(["serve", "--config"])
            .arg(&config)
            // Port 0: the kernel picks free ports and the server logs them (no races between
            // tests that pick ports themselves).
            .args(["--resp-listen", resp_listen, "--admin-listen"])
            .arg(format!("{host}:0"))
            .args(["--log-format", "json"])
            // `STRATA_TEST_LOG` (e.g. `info,strata::cluster::primary=debug`) to see more.
            .env(
                "RUST_LOG",
                std::env::var("STRATA_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start strata serve");
        let mut s = Self {
            child: Some(child),
            host,
            port: 0,
            admin_port: 0,
            cluster_port: None,
            dir: dir.to_path_buf(),
            tls: false,
            _tmp: None,
            log,
            admin_token: extra_toml.lines().find_map(|l| {
                let v = l.trim().strip_prefix("admin_token")?.trim_start();
                Some(v.strip_prefix('=')?.trim().trim_matches('"').to_owned())
            }),
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        // The bound addresses, from the JSON log line `strata serving`.
        while self.port == 0 && Instant::now() < deadline {
            for line in self.log().lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                if v["fields"]["message"] == "strata serving" {
                    let port = |f: &str| {
                        v["fields"][f]
                            .as_str()
                            .and_then(|a| a.rsplit(':').next())
                            .and_then(|p| p.parse().ok())
                            .unwrap()
                    };
                    self.port = port("resp_addr");
                    self.admin_port = port("admin_addr");
                    self.cluster_port = v["fields"]["cluster_addr"]
                        .as_str()
                        .and_then(|a| a.rsplit(':').next())
                        .and_then(|p| p.parse().ok());
                    self.tls = v["fields"]["resp_tls"] == true;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("strata serve exited with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        while Instant::now() < deadline {
            if self.tls {
                // A TLS port answers PING only inside TLS; listening is enough here.
                if TcpStream::connect((self.host.as_str(), self.port)).is_ok() {
                    return;
                }
            } else if let Ok(mut c) = TcpStream::connect((self.host.as_str(), self.port)) {
                c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                if c.write_all(b"PING\r\n").is_ok() {
                    // +PONG, or -NOAUTH when a password is required: either way it serves.
                    let mut buf = [0u8; 7];
                    if c.read_exact(&mut buf).is_ok()
                        && (&buf == b"+PONG\r\n" || buf.starts_with(b"-NOAUTH"))
                    {
                        return;
                    }
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("strata serve exited with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("strata serve did not become ready: {}", self.log());
    }

    /// The server process's resident set (`VmRSS` of `/proc/PID/status`), in bytes.
    pub fn rss(&self) -> u64 {
        rss_of(self.pid())
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("redis://{}:{}/", self.host, self.port)
    }

    /// A redis-rs connection; a reply slower than 30 s fails the test instead of hanging it.
    pub fn redis(&self) -> redis::Connection {
        let c = redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c
    }

    pub fn raw(&self) -> Raw {
        Raw::connect(self.port)
    }

    pub fn admin(&self) -> String {
        format!("{}:{}", self.host, self.admin_port)
    }

    /// Runs redis-cli against this server; returns stdout (panics if redis-cli is missing).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", &self.host, "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect(
                "redis-cli (Debian redis-tools) must be installed: scripts/test.sh installs it",
            );
        assert!(
            out.status.success(),
            "redis-cli {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `kill -9`: no shutdown work at all, as a crash.
    /// Sends `sig` (as `kill` takes it: `-STOP`, `-CONT`, `-TERM`…) to the running server.
    pub fn signal(&self, sig: &str) {
        signal(self.child.as_ref().expect("server running").id(), sig);
    }

    /// Sends `sig` (as `kill` spells it: `-TERM`) to every server in `servers` with one
    /// `kill` call, so that they receive it at the same instant.
    pub fn signal_all(servers: &[&Server], sig: &str) {
        let pids: Vec<String> = servers.iter().map(|s| s.pid().to_string()).collect();
        assert!(
            Command::new("kill")
                .arg(sig)
                .args(&pids)
                .status()
                .unwrap()
                .success(),
            "kill {sig} {pids:?}"
        );
    }

    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("server running");
        child.kill().unwrap();
        let _ = child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("-TERM");
        self.wait_stopped()
    }

    /// Waits up to 30 s for the process to exit (after a signal sent with
    /// [`Server::signal`]) and returns its status; kills it and panics past that.
    pub fn wait_stopped(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not stop within 30 s of its signal");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The RESP encoding of the command `args` (an array of bulk strings), as a client sends it.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    strata_resp::Frame::Array(
        args.iter()
            .map(|a| strata_resp::Frame::Bulk(a.as_ref().to_vec().into()))
            .collect(),
    )
    .to_bytes()
    .to_vec()
}

/// A raw TCP connection speaking bytes, for protocol-level tests.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads one complete RESP frame.
    pub fn frame(&mut self) -> strata_resp::Frame {
        loop {
            if let Some((f, n)) =
                strata_resp::parse_frame(&self.buf, &strata_resp::Limits::default()).unwrap()
            {
                self.buf.drain(..n);
                return f;
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk).unwrap();
            assert!(n > 0, "connection closed while waiting for a frame");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads one complete RESP frame; `None` when the connection ends (or errs) first.
    pub fn try_frame(&mut self) -> Option<strata_resp::Frame> {
        loop {
            if let Some((f, n)) =
                strata_resp::parse_frame(&self.buf, &strata_resp::Limits::default()).ok()?
            {
                self.buf.drain(..n);
                return Some(f);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(n) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// Sends a command as a RESP array and reads the reply.
    pub fn cmd(&mut self, args: &[&[u8]]) -> strata_resp::Frame {
        self.send(&encode_command(args));
        self.frame()
    }

    /// Whether the server closed the connection (EOF) within the read timeout.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0))
    }
}

/// One step of a scripted conversation ([`converse`]): which connection sends what, and how
/// many frames it reads then. An argument `@N` stands for connection N's client id.
pub type Step<'a> = (usize, &'a [&'a [u8]], usize);

/// Runs `steps` over `conns` connections to `port` and returns every frame read, in order,
/// for comparing one server's conversation with another's: the replies to `HELLO` are left
/// out (they name the server), and `CLIENT TRACKINGINFO`'s redirect is given as the
/// connection it names (ids differ between servers). `TRACE_FRAMES=1` prints each frame.
pub fn converse(port: u16, conns: usize, steps: &[Step<'_>]) -> Vec<(usize, strata_resp::Frame)> {
    use strata_resp::Frame;
    let mut raw: Vec<Raw> = (0..conns).map(|_| Raw::connect(port)).collect();
    let ids: Vec<Vec<u8>> = raw
        .iter_mut()
        .map(|c| match c.cmd(&[b"CLIENT", b"ID"]) {
            Frame::Integer(n) => n.to_string().into_bytes(),
            other => panic!("CLIENT ID: {other:?}"),
        })
        .collect();
    let trace = std::env::var_os("TRACE_FRAMES").is_some();
    let mut out = Vec::new();
    for (who, args, frames) in steps {
        let args: Vec<Vec<u8>> = args
            .iter()
            .map(|a| match a.strip_prefix(b"@") {
                Some(n) => ids[usize::from(n[0] - b'0')].clone(),
                None => a.to_vec(),
            })
            .collect();
        let c = &mut raw[*who];
        let cmd = Frame::Array(args.iter().map(|a| Frame::Bulk(a.clone().into())).collect());
        c.send(&cmd.to_bytes());
        for _ in 0..*frames {
            let f = c.frame();
            if trace {
                eprintln!(
                    "{who} {:?} -> {f:?}",
                    String::from_utf8_lossy(&args.join(&b' '))
                );
            }
            if args[0] != b"HELLO" {
                out.push((*who, redirect_as_connection(f, &ids)));
            }
        }
    }
    out
}

/// `CLIENT TRACKINGINFO`'s redirect, as the connection it names.
fn redirect_as_connection(f: strata_resp::Frame, ids: &[Vec<u8>]) -> strata_resp::Frame {
    use strata_resp::Frame;
    let Frame::Map(pairs) = f else {
        return f;
    };
    Frame::Map(
        pairs
            .into_iter()
            .map(|(k, v)| match (&k, &v) {
                (Frame::Bulk(name), Frame::Integer(n)) if &name[..] == b"redirect" => {
                    let conn = ids.iter().position(|id| *id == n.to_string().into_bytes());
                    let v = conn.map_or(v, |c| Frame::Simple(format!("@{c}").into()));
                    (k, v)
                }
                _ => (k, v),
            })
            .collect(),
    )
}

pub fn err_text(f: &strata_resp::Frame) -> String {
    match f {
        strata_resp::Frame::Error(e) => String::from_utf8_lossy(e).into_owned(),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// `method path` on the admin port with extra header lines: (status, body). A `Host` among
/// them replaces the default (the address itself).
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let host = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map_or(addr, |(_, v)| *v);
    let extra: String = headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

/// `GET path` on the admin port: (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http(addr, "GET", path, &[])
}

/// A tmpfs of a given size mounted on a new directory, unmounted on drop: a small or
/// read-only file system for disk-fault tests. Needs root; `None` (with a message) without.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Self { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `mount -o remount,<mode>` (`ro` or `rw`); false if refused (e.g. busy).
    pub fn remount(&self, mode: &str) -> bool {
        Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// `n` bytes that do not compress (xorshift from `seed`).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Runs `f` on `c`, reconnecting and retrying (up to 5 times) when the read was interrupted
/// by a signal (EINTR: the test process's children exit all the time in these tests). Only
/// for idempotent commands.
pub fn retry_eintr<T>(
    s: &Server,
    c: &mut redis::Connection,
    mut f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
) -> T {
    for _ in 0..5 {
        match f(c) {
            Ok(v) => return v,
            Err(e) if e.kind() == redis::ErrorKind::Io && e.to_string().contains("Interrupted") => {
                *c = s.redis();
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("interrupted 5 times in a row");
}

/// A metric's value from `/metrics` (`name` with its labels, as printed), if present.
pub fn metric_value(srv: &Server, name: &str) -> Option<f64> {
    let (_, body) = http_get(&srv.admin(), "/metrics");
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A counter from `/metrics`, 0 while it is absent.
pub fn metric_or_zero(srv: &Server, name: &str) -> f64 {
    metric_value(srv, name).unwrap_or(0.0)
}

/// Every key `SCAN … MATCH pattern COUNT count` returns through `c` in a full pass, sorted,
/// each as often as it came back (a test that wants each once compares with a list
/// without repeats).
pub fn scan_all(c: &mut redis::Connection, pattern: &str, count: usize) -> Vec<String> {
    let (mut cursor, mut seen) = (0u64, Vec::new());
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count)
            .query(c)
            .unwrap();
        seen.extend(page);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    seen.sort();
    seen
}

/// SETs keys `w{i}` to `value` (or DELs them, with `None`) in one pipeline.
pub fn pipeline_set(c: &mut redis::Connection, keys: std::ops::Range<u64>, value: Option<&str>) {
    try_pipeline_set(c, keys, value).unwrap();
}

/// [`pipeline_set`], returning the first error a command of the pipeline answered.
pub fn try_pipeline_set(
    c: &mut redis::Connection,
    keys: std::ops::Range<u64>,
    value: Option<&str>,
) -> redis::RedisResult<()> {
    let mut p = redis::pipe();
    for i in keys {
        match value {
            Some(v) => p.set(format!("w{i}"), v).ignore(),
            None => p.del(format!("w{i}")).ignore(),
        };
    }
    p.query(c)
}

// ----- clusters -----

/// The cluster secret of the test clusters.
pub const SECRET: &str = "cluster test secret, 32 bytes...";

/// Starts a cluster member `name` in `dir`, gossiping on `gossip`, joining through the
/// nodes gossiping on `seeds`, with `extra` appended to its config.
pub fn start_node(dir: &Path, name: &str, gossip: u16, seeds: &[u16], extra: &str) -> Server {
    start_node_with_env(dir, name, gossip, seeds, extra, &[])
}

/// [`start_node`], with extra environment variables (`STRATA__L3__ENABLED=false`: the test
/// config has an `[l3]` table already).
pub fn start_node_with_env(
    dir: &Path,
    name: &str,
    gossip: u16,
    seeds: &[u16],
    extra: &str,
    env: &[(&str, &str)],
) -> Server {
    Server::start_with_env(dir, &member_toml(name, gossip, seeds, extra), env)
}

/// What every test node's config file says (L1 16 MiB; L3 64 MiB in `dir/data`), then
/// `extra`.
fn node_toml(dir: &Path, extra: &str) -> String {
    format!(
        "[l1]\ncapacity_bytes = 16777216\n[l3]\ndata_dir = {:?}\ncapacity_bytes = 67108864\n{extra}\n",
        dir.join("data")
    )
}

/// The config of cluster member `name` (gossip on loopback port `gossip`, a free RPC
/// port, `seeds` the others' gossip ports), then `extra`.
fn member_toml(name: &str, gossip: u16, seeds: &[u16], extra: &str) -> String {
    let seeds: Vec<String> = seeds.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    format!(
        "[node]\nname = \"{name}\"\n[cluster]\nenabled = true\nsecret = \"{SECRET}\"\n\
         gossip_listen = \"127.0.0.1:{gossip}\"\nrpc_listen = \"127.0.0.1:{}\"\n\
         seeds = [{}]\n{extra}\n",
        free_port(),
        seeds.join(", ")
    )
}

/// Network namespaces on a bridge, one per cluster member, so that a test can cut a member
/// off from everyone (its link down) and mend it: real TCP and UDP between processes that
/// each have an address of their own (`10.79.X.i`, the bridge `.254` for the test's
/// clients). Needs root and `ip`; `None` (with a message) without. Everything it made is
/// removed when dropped.
pub struct NetLab {
    /// Prefix of its interface and namespace names (unique per process and lab).
    tag: String,
    /// The first three octets of its addresses.
    subnet: String,
    members: usize,
}

impl NetLab {
    /// A lab of `members` namespaces (numbered from 1). `None` (with a message) when this
    /// process is not root; a failure to set it up as root fails the test (a leftover of a
    /// run killed with SIGKILL, say), after removing what it made.
    pub fn new(members: usize) -> Option<Self> {
        static LABS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        if !root || Command::new("ip").arg("-V").output().is_err() {
            eprintln!("SKIPPED: network namespaces need root and ip (iproute2)");
            return None;
        }
        let n = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        // A /24 no interface of this host has an address in.
        let used = Command::new("ip")
            .args(["-o", "-4", "addr"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let subnet = (0..250)
            .map(|k| format!("10.79.{}", (pid as usize + n as usize + k) % 250))
            .find(|net| !used.contains(&format!(" {net}.")))
            .expect("a free 10.79.X.0/24");
        // The guard first: whatever the setup made is removed if it fails.
        let lab = NetLab {
            tag: format!("sl{}x{n}", pid % 100_000),
            subnet,
            members,
        };
        let bridge = lab.bridge();
        let mut ok = lab.ip(&["link", "add", &bridge, "type", "bridge"])
            && lab.ip(&[
                "addr",
                "add",
                &format!("{}.254/24", lab.subnet),
                "dev",
                &bridge,
            ])
            && lab.ip(&["link", "set", &bridge, "up"]);
        for i in 1..=members {
            let (ns, veth, peer) = (lab.ns(i), lab.veth(i), format!("{}p{i}", lab.tag));
            let inside = |args: &[&str]| {
                let mut all = vec!["netns", "exec", ns.as_str(), "ip"];
                all.extend_from_slice(args);
                lab.ip(&all)
            };
            ok = ok
                && lab.ip(&["netns", "add", &ns])
                && lab.ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer])
                && lab.ip(&["link", "set", &peer, "netns", &ns])
                && inside(&["link", "set", &peer, "name", "eth0"])
                && inside(&["addr", "add", &format!("{}/24", lab.host(i)), "dev", "eth0"])
                && inside(&["link", "set", "eth0", "up"])
                && inside(&["link", "set", "lo", "up"])
                && lab.ip(&["link", "set", &veth, "master", &bridge])
                && lab.ip(&["link", "set", &veth, "up"]);
        }
        assert!(
            ok,
            "setting up the network namespaces {}* failed (a leftover of a killed run? `ip netns list`)",
            lab.tag
        );
        Some(lab)
    }

    fn ip(&self, args: &[&str]) -> bool {
        Self::quietly("ip", args)
    }

    /// Whether `program args` ran and succeeded (its errors not shown).
    fn quietly(program: &str, args: &[&str]) -> bool {
        Command::new(program)
            .args(args)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn bridge(&self) -> String {
        format!("{}b", self.tag)
    }

    /// The root side of member `i`'s link.
    fn veth(&self, i: usize) -> String {
        format!("{}v{i}", self.tag)
    }

    /// Member `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    /// Member `i`'s address.
    pub fn host(&self, i: usize) -> String {
        format!("{}.{i}", self.subnet)
    }

    /// Starts cluster member `n{i}` in its namespace (gossip on port 7946, RPC on 7956 of
    /// its address, every member a seed; no password, the lab's network is the test's
    /// own), data under `dir`, `extra` appended to its config.
    pub fn start_member(&self, i: usize, dir: &Path, extra: &str) -> Server {
        let seeds: Vec<String> = (1..=self.members)
            .map(|j| format!("\"{}:7946\"", self.host(j)))
            .collect();
        let host = self.host(i);
        let toml = format!(
            "[node]\nname = \"n{i}\"\n[server]\nprotected_mode = false\n\
             [cluster]\nenabled = true\nsecret = \"{SECRET}\"\n\
             gossip_listen = \"{host}:7946\"\nrpc_listen = \"{host}:7956\"\n\
             seeds = [{}]\n{extra}\n",
            seeds.join(", ")
        );
        Server::start_in_netns(&self.ns(i), &host, dir, &toml)
    }

    /// Cuts member `i` off from every other member and client (its link down): packets
    /// to and from it are lost, connections stay open.
    pub fn cut(&self, i: usize) {
        assert!(self.ip(&["link", "set", &self.veth(i), "down"]));
    }

    /// Mends member `i`'s link.
    pub fn mend(&self, i: usize) {
        assert!(self.ip(&["link", "set", &self.veth(i), "up"]));
    }

    /// A one-way cut: packets from member `from` to member `to` are lost, those from `to`
    /// to `from` and every client's still arrive. One way for gossip (UDP); a TCP
    /// connection between the two fails both ways (its acknowledgements are lost), so
    /// peer calls either way fail. Made with `tc` on the root side of
    /// `to`'s link (its egress is what reaches `to`): an `htb` class whose queue holds
    /// nothing, and a filter on `from`'s address that sends its packets there (no netem
    /// or iptables needed). Undone by [`NetLab::mend_one_way_cuts`].
    pub fn cut_one_way(&self, from: usize, to: usize) {
        let veth = self.veth(to);
        let tc = |args: &[&str]| Self::quietly("tc", args);
        // Fails (harmlessly) when the root `htb` is there from an earlier cut: `tc` cannot
        // change one in place.
        tc(&[
            "qdisc", "replace", "dev", &veth, "root", "handle", "1:", "htb", "default", "10",
            "r2q", "100000",
        ]);
        let ok = tc(&[
            "class", "replace", "dev", &veth, "parent", "1:", "classid", "1:10", "htb", "rate",
            "10gbit",
        ]) && tc(&[
            "class", "replace", "dev", &veth, "parent", "1:", "classid", "1:20", "htb", "rate",
            "10gbit",
        ]) && tc(&[
            "qdisc", "replace", "dev", &veth, "parent", "1:20", "handle", "20:", "pfifo", "limit",
            "0",
        ]) && tc(&[
            "filter",
            "add",
            "dev",
            &veth,
            "parent",
            "1:",
            "protocol",
            "ip",
            "prio",
            "1",
            "u32",
            "match",
            "ip",
            "src",
            &format!("{}/32", self.host(from)),
            "flowid",
            "1:20",
        ]);
        assert!(
            ok,
            "tc could not cut {from} -> {to} (is `tc` of iproute2 there?)"
        );
    }

    /// Mends every one-way cut ([`NetLab::cut_one_way`]).
    pub fn mend_one_way_cuts(&self) {
        for i in 1..=self.members {
            // Fails harmlessly where no cut was made.
            Self::quietly("tc", &["qdisc", "del", "dev", &self.veth(i), "root"]);
        }
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for i in 1..=self.members {
            self.ip(&["link", "del", &self.veth(i)]);
            self.ip(&["netns", "del", &self.ns(i)]);
        }
        self.ip(&["link", "del", &self.bridge()]);
    }
}

/// A cluster member embedded in a service process (`src/bin/strata-embedded-node.rs`), read
/// through its `Cache` as an embedded user reads: `$STRATA_EMBEDDED_BIN` when set, else
/// this package's binary beside the test executable's directory. Killed when dropped.
pub struct Embedded {
    child: Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    log: PathBuf,
}

impl Embedded {
    /// Starts member `name` (as [`start_node`] configures one) and waits until it runs.
    pub fn start(dir: &Path, name: &str, gossip: u16, seeds: &[u16]) -> Self {
        use std::io::BufRead;
        let bin = match std::env::var_os("STRATA_EMBEDDED_BIN") {
            Some(p) => PathBuf::from(p),
            None => {
                let exe = std::env::current_exe().unwrap();
                exe.parent()
                    .and_then(Path::parent)
                    .unwrap()
                    .join("strata-embedded-node")
            }
        };
        assert!(
            bin.exists(),
            "{} is missing: run the tests with `cargo test -p strata-tests`",
            bin.display()
        );
        let config = dir.join("strata.toml");
        std::fs::write(
            &config,
            node_toml(dir, &member_toml(name, gossip, seeds, "")),
        )
        .unwrap();
        let log = dir.join(format!("embedded-{}.log", std::process::id()));
        let mut child = Command::new(bin)
            .arg(&config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        // Built before the wait, so that a node that does not start is killed on the panic.
        let mut embedded = Embedded {
            child,
            stdin,
            stdout,
            log,
        };
        let mut line = String::new();
        embedded.stdout.read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "the embedded node did not start: {}",
            embedded.log()
        );
        embedded
    }

    /// Its log (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `kill SIG` to the process (`-STOP`, `-CONT`).
    pub fn signal(&self, sig: &str) {
        signal(self.child.id(), sig);
    }

    /// Asks for every key of `namespace` in `keys` without waiting for the answers (they
    /// queue in the pipe while the process is stopped); [`Embedded::answers`] reads them.
    pub fn ask(&mut self, namespace: &str, keys: &[String]) {
        let mut text = String::new();
        for k in keys {
            text.push_str(&format!("get {namespace} {k}\n"));
        }
        self.stdin.write_all(text.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next `n` answers: `Ok(Some(value))`, `Ok(None)` for nil, `Err(text)`.
    pub fn answers(&mut self, n: usize) -> Vec<Result<Option<String>, String>> {
        use std::io::BufRead;
        (0..n)
            .map(|_| {
                let mut line = String::new();
                self.stdout.read_line(&mut line).unwrap();
                let line = line.trim_end_matches('\n');
                if line == "nil" {
                    Ok(None)
                } else if let Some(v) = line.strip_prefix("value ") {
                    Ok(Some(v.to_owned()))
                } else {
                    Err(line.to_owned())
                }
            })
            .collect()
    }

    /// Starts the node reading `PREFIX0`…`PREFIX{n-1}` of `namespace` over and over for
    /// `millis` ms (see the binary's `watch`); [`Embedded::watched`] collects the passes.
    pub fn watch(&mut self, namespace: &str, prefix: &str, n: usize, millis: u64) {
        writeln!(self.stdin, "watch {namespace} {prefix} {n} {millis}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The passes of a [`Embedded::watch`], once it is done: each pass's start (Unix ms)
    /// and answers (one character per key: the value's first byte, `.` nil, `!` an error).
    pub fn watched(&mut self) -> Vec<(u128, String)> {
        use std::io::BufRead;
        let mut passes = Vec::new();
        loop {
            let mut line = String::new();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "the embedded node exited: {}",
                self.log()
            );
            let line = line.trim_end_matches('\n');
            if line == "done" {
                return passes;
            }
            let mut words = line.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("pass"), Some(start), Some(answers)) => {
                    passes.push((start.parse().unwrap(), answers.to_owned()));
                }
                _ => panic!("unexpected line from the embedded node: {line:?}"),
            }
        }
    }

    /// [`Embedded::ask`], then its answers.
    pub fn get(&mut self, namespace: &str, keys: &[String]) -> Vec<Result<Option<String>, String>> {
        self.ask(namespace, keys);
        self.answers(keys.len())
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on the server's admin port, with its `admin_token` when its config sets one:
/// the status code and the body.
pub fn admin_get(srv: &Server, path: &str) -> (u16, String) {
    let bearer = srv.admin_token.as_ref().map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| ("Authorization", b))
        .into_iter()
        .collect();
    http(&srv.admin(), "GET", path, &headers)
}

/// Three `strata serve` nodes (`n1`..`n3`, each with `extra` config) joined into one
/// cluster and converged; the directories live as long as the returned guards.
pub fn three_nodes(extra: &str) -> (Vec<Server>, Vec<tempfile::TempDir>) {
    three_nodes_with_env(extra, &[])
}

/// [`three_nodes`], each with extra environment variables.
pub fn three_nodes_with_env(
    extra: &str,
    env: &[(&str, &str)],
) -> (Vec<Server>, Vec<tempfile::TempDir>) {
    let (nodes, dirs, _) = nodes_joined(3, extra, env);
    (nodes, dirs)
}

/// `n` `strata serve` nodes (`n1`..`nN`, each with `extra` config and `env`) joined into one
/// cluster through `n1` and converged: the servers, their directories (alive as long as
/// the guards) and their gossip ports (the first is the seed another node joins through).
pub fn nodes_joined(
    n: usize,
    extra: &str,
    env: &[(&str, &str)],
) -> (Vec<Server>, Vec<tempfile::TempDir>, Vec<u16>) {
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let g: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
    let nodes: Vec<Server> = (0..n)
        .map(|i| start_node_with_env(dirs[i].path(), &names[i], g[i], &[g[0]], extra, env))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    converge(
        &nodes.iter().collect::<Vec<_>>(),
        &names,
        Duration::from_secs(20),
    );
    (nodes, dirs, g)
}

/// The node's `/cluster` admin JSON.
pub fn cluster_json(srv: &Server) -> serde_json::Value {
    let (code, body) = admin_get(srv, "/cluster");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Names of the members `srv` believes alive (itself included), and its ring version.
pub fn view(srv: &Server) -> (Vec<String>, String) {
    let c = cluster_json(srv);
    let mut names: Vec<String> = c["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["state"] == "self" || m["state"] == "alive")
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    (names, c["ring_version"].as_str().unwrap().to_owned())
}

/// Polls `check` every 5 ms until it holds (how long it took) or `within` passes.
pub fn wait_for(within: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Waits until every server sees exactly `names` and they agree on the ring.
pub fn converge(servers: &[&Server], names: &[&str], within: Duration) -> Duration {
    let want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    wait_for(within, || {
        let views: Vec<_> = servers.iter().map(|s| view(s)).collect();
        views.iter().all(|(n, r)| *n == want && *r == views[0].1)
    })
    .unwrap_or_else(|| {
        let views: Vec<_> = servers.iter().map(|s| view(s)).collect();
        panic!("no convergence on {names:?} within {within:?}: {views:?}")
    })
}
