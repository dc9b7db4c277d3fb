//! Real `redis-server` processes on loopback for the bridge's tests: standalone, a Redis
//! Cluster created with `redis-cli --cluster create`, and Sentinel. Every process is killed
//! (by its pid) when its handle drops, so a failing test leaves nothing running.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A free loopback port (bound, then released; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on loopback")
}

fn require(binary: &str) {
    let found = Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "{binary} not found: run scripts/test.sh (it installs redis-server and redis-tools) or apt-get install redis-server redis-tools"
    );
}

fn redis_cli(port: u16, password: Option<&str>, args: &[&str]) -> Option<String> {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(p) = password {
        cmd.args(["-a", p, "--no-auth-warning"]);
    }
    let out = cmd.args(args).stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// One `redis-server` process.
pub struct RedisServer {
    pub port: u16,
    pub password: Option<String>,
    child: Option<Child>,
    dir: TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    /// A standalone server with no persistence.
    pub fn start() -> Self {
        Self::start_with(None, &[])
    }

    /// A server with `requirepass`.
    pub fn with_password(password: &str) -> Self {
        Self::start_with(Some(password), &[])
    }

    /// A server with an append-only file fsynced on every write, so a `kill -9` and restart
    /// keeps the data (to test what the bridge does with values from before an outage).
    pub fn durable() -> Self {
        Self::start_with(None, &["--appendonly", "yes", "--appendfsync", "always"])
    }

    /// A server with extra arguments, on a free port. A port another process took between
    /// [`free_port`] and the server's bind (the server exits) is replaced by another.
    pub fn start_with(password: Option<&str>, extra: &[&str]) -> Self {
        for _ in 0..5 {
            let mut s = Self::unstarted(free_port(), password, extra);
            if s.try_spawn() {
                return s;
            }
        }
        panic!("redis-server found no free port in 5 tries");
    }

    /// A server on `port`.
    pub fn start_on(port: u16, password: Option<&str>, extra: &[&str]) -> Self {
        let mut s = Self::unstarted(port, password, extra);
        s.spawn();
        s
    }

    fn unstarted(port: u16, password: Option<&str>, extra: &[&str]) -> Self {
        require("redis-server");
        RedisServer {
            port,
            password: password.map(str::to_owned),
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn start_process(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            &self.dir.path().to_string_lossy(),
            "--daemonize",
            "no",
            "--logfile",
            "",
        ]);
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        cmd.args(&self.extra);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
    }

    fn spawn(&mut self) {
        assert!(
            self.try_spawn(),
            "redis-server on port {} did not start (is the port taken?)",
            self.port
        );
    }

    /// Starts the process and waits until the server answering on the port is that process:
    /// a server that could not bind exits, and another test's server on the same port would
    /// otherwise answer in its place (and be killed under this test when that test ends).
    fn try_spawn(&mut self) -> bool {
        self.start_process();
        let pid = self.child.as_ref().expect("spawned").id().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            let info = redis_cli(self.port, self.password.as_deref(), &["INFO", "server"]);
            if let Some(info) = info {
                if info
                    .lines()
                    .any(|l| l.trim() == format!("process_id:{pid}"))
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server with `kill`.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{signal} {pid}");
    }

    /// Starts again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs a command with redis-cli.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        redis_cli(self.port, self.password.as_deref(), args)
    }

    /// A redis-rs client for poking at the server directly.
    pub fn client(&self) -> redis::Client {
        let url = match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        };
        redis::Client::open(url).expect("client")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of `masters` masters and no replicas.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(masters: usize) -> Self {
        require("redis-cli");
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| {
                RedisServer::start_with(
                    None,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                        "--appendonly",
                        "no",
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(RedisServer::address).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = Command::new("redis-cli")
            .args(&args)
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = nodes.iter().all(|n| {
                n.cli(&["CLUSTER", "INFO"])
                    .is_some_and(|i| i.contains("cluster_state:ok"))
            });
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "the cluster never became ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        RedisCluster { nodes }
    }

    pub fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::address).collect()
    }
}

/// A master and one sentinel watching it as `mymaster`.
pub struct RedisSentinel {
    pub master: RedisServer,
    pub port: u16,
    child: Option<Child>,
    _conf: PathBuf,
    _dir: TempDir,
}

impl RedisSentinel {
    pub fn start() -> Self {
        Self::monitoring(RedisServer::start())
    }

    /// A master with one replica, and a sentinel that knows both (so that
    /// [`RedisSentinel::failover`] can promote the replica).
    pub fn with_replica() -> (Self, RedisServer) {
        let master = RedisServer::start();
        let of = master.port.to_string();
        let replica = RedisServer::start_with(None, &["--replicaof", "127.0.0.1", &of]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis_cli(replica.port, None, &["INFO", "replication"])
            .is_some_and(|r| r.contains("master_link_status:up"))
        {
            assert!(Instant::now() < deadline, "the replica did not sync");
            std::thread::sleep(Duration::from_millis(50));
        }
        let sentinel = Self::monitoring(master);
        let port = replica.port.to_string();
        // Known, and its INFO read (a replica the sentinel has not talked to yet is no
        // candidate: `NOGOODSLAVE`).
        while !redis_cli(sentinel.port, None, &["SENTINEL", "replicas", "mymaster"])
            .is_some_and(|r| r.contains(&port) && r.contains("master-link-status\nok"))
        {
            assert!(
                Instant::now() < deadline + Duration::from_secs(10),
                "the sentinel did not find the replica"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        (sentinel, replica)
    }

    /// Has the sentinel promote the replica, and waits until it names `new_master` and the
    /// old master has become a replica (its writes answer `READONLY`). The sentinel turns
    /// the old master into a replica about ten seconds after the promotion, and closes its
    /// clients' connections in the same step; this does it at once, and closes the
    /// connections only when `close_connections` (else as an operator's `REPLICAOF`).
    pub fn failover(
        &self,
        old_master: &RedisServer,
        new_master: &RedisServer,
        close_connections: bool,
    ) {
        // Until the sentinel counts the replica as one to promote (after a failover, the
        // old master's first INFO as a replica: `NOGOODSLAVE` before), or the last one
        // is over (`INPROG`).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reply = redis_cli(self.port, None, &["SENTINEL", "failover", "mymaster"]);
            if reply.as_deref() == Some("OK") {
                break;
            }
            assert!(Instant::now() < deadline, "SENTINEL FAILOVER: {reply:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
        let port = new_master.port.to_string();
        loop {
            // What a client's lookup reads (redis-rs: `SENTINEL MASTERS`): this port, and
            // flags `master` alone — no failover in progress, nothing down.
            let named = redis_cli(self.port, None, &["SENTINEL", "master", "mymaster"])
                .is_some_and(|r| {
                    let lines: Vec<&str> = r.lines().collect();
                    let field = |name: &str| {
                        lines
                            .iter()
                            .position(|l| *l == name)
                            .and_then(|i| lines.get(i + 1).copied())
                    };
                    field("port") == Some(port.as_str()) && field("flags") == Some("master")
                });
            let demoted =
                redis_cli(old_master.port, None, &["ROLE"]).is_some_and(|r| r.starts_with("slave"));
            if named && demoted {
                return;
            }
            if named {
                redis_cli(old_master.port, None, &["REPLICAOF", "127.0.0.1", &port]);
                if close_connections {
                    redis_cli(old_master.port, None, &["CLIENT", "KILL", "TYPE", "normal"]);
                    redis_cli(old_master.port, None, &["CLIENT", "KILL", "TYPE", "pubsub"]);
                }
            }
            assert!(
                Instant::now() < deadline,
                "the failover did not complete (sentinel names {new_master_port}: {named}; the old master is a replica: {demoted})",
                new_master_port = new_master.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn monitoring(master: RedisServer) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {} 1\nsentinel down-after-milliseconds mymaster 2000\nsentinel failover-timeout mymaster 2000\n",
                dir.path().display(),
                master.port
            ),
        )
        .expect("write sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis sentinel");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reply = redis_cli(
                port,
                None,
                &["SENTINEL", "get-master-addr-by-name", "mymaster"],
            );
            if reply.is_some_and(|r| r.lines().nth(1) == Some(master.port.to_string().as_str())) {
                break;
            }
            assert!(Instant::now() < deadline, "sentinel did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        RedisSentinel {
            master,
            port,
            child: Some(child),
            _conf: conf,
            _dir: dir,
        }
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `check` every 5 ms until it holds or `within` passes; returns the time it took.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}
