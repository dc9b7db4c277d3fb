//! The connection layer and the process: raw protocol bytes (mini-redis style), auth, max
//! clients, idle timeout, graceful shutdown mid-pipeline, the admin port and the CLI, and a
//! short redis-benchmark run.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use strata_resp::Frame;
use strata_tests::{Raw, Server, err_text, http_get};

fn bulk(s: &str) -> Frame {
    Frame::Bulk(s.as_bytes().to_vec().into())
}

#[test]
fn inline_commands_and_pipelines() {
    let srv = Server::start("");
    let mut raw = srv.raw();
    // Inline, as redis-benchmark's PING_INLINE and telnet users send it.
    raw.send(b"PING\r\nSET  k \"hello world\"\r\nGET k\n");
    assert_eq!(raw.frame(), Frame::simple("PONG"));
    assert_eq!(raw.frame(), Frame::simple("OK"));
    assert_eq!(raw.frame(), bulk("hello world"));
    // 500 pipelined commands in one write, answered in order.
    let mut batch = Vec::new();
    for i in 0..500 {
        batch.extend_from_slice(&Frame::Array(vec![bulk("INCR"), bulk("c")]).to_bytes());
        if i % 100 == 0 {
            batch.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        }
    }
    raw.send(&batch);
    for i in 0..500 {
        assert_eq!(raw.frame(), Frame::Integer(i + 1));
        if i % 100 == 0 {
            assert_eq!(raw.frame(), Frame::simple("PONG"));
        }
    }
    // A request split across many writes, byte by byte.
    for b in b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n" {
        raw.send(&[*b]);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(raw.frame(), bulk("hello world"));
    // Empty lines and empty arrays are skipped, as in Redis.
    raw.send(b"\r\n*0\r\nPING\r\n");
    assert_eq!(raw.frame(), Frame::simple("PONG"));
}

#[test]
fn malformed_input_gets_an_error_and_others_keep_working() {
    let srv = Server::start("[server]\nmax_request_bytes = 20000000\n");
    let mut bystander = srv.raw();
    assert_eq!(bystander.cmd(&[b"SET", b"safe", b"1"]), Frame::simple("OK"));

    let cases: [(&[u8], &str); 6] = [
        (b"*2\r\n$3\r\nGET\r\n:1\r\n", "expected '$', got ':'"),
        (b"*x\r\n", "invalid multibulk length"),
        (b"*1\r\n$-7\r\n", "invalid bulk length"),
        (b"*1\r\n$999999999999\r\n", "invalid bulk length"),
        (b"*1\r\n$3\r\nGETxx\r\n", "not terminated by CRLF"),
        (b"SET \"unterminated\r\n", "unbalanced quotes"),
    ];
    for (bytes, want) in cases {
        let mut c = srv.raw();
        c.send(bytes);
        let e = err_text(&c.frame());
        assert!(e.contains(want), "{bytes:?}: {e}");
        assert!(
            c.closed(),
            "the server closes a connection after a protocol error"
        );
    }
    // A bulk length above max_request_bytes is refused before the bytes arrive.
    let mut c = srv.raw();
    c.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$30000000\r\n");
    assert!(err_text(&c.frame()).contains("invalid bulk length"));
    // An inline line past 64 KiB without a newline.
    let mut c = srv.raw();
    c.send(&vec![b'a'; 70 * 1024]);
    assert!(err_text(&c.frame()).contains("too big inline request"));
    // Random garbage: an error or a close, never a crash.
    let mut c = srv.raw();
    c.send(&[0x00, 0xff, b'$', b'\r', b'*', 0x7f, b'\n', 0x80]);
    let _ = c.frame();
    // A value above limits.max_value_bytes (16 MiB) is refused with a clear error and the
    // connection stays usable.
    let mut c = srv.raw();
    let big = vec![b'v'; 17 * 1024 * 1024];
    let reply = c.cmd(&[b"SET", b"big", &big]);
    assert!(err_text(&reply).contains("above the limit"), "{reply:?}");
    assert_eq!(c.cmd(&[b"EXISTS", b"big"]), Frame::Integer(0));

    assert_eq!(
        bystander.cmd(&[b"GET", b"safe"]),
        bulk("1"),
        "other clients unaffected"
    );
}

#[test]
fn auth_is_required_when_configured() {
    let srv = Server::start("[server]\nrequirepass = \"s3cret\"\n");
    let mut raw = srv.raw();
    assert_eq!(
        err_text(&raw.cmd(&[b"GET", b"k"])),
        "NOAUTH Authentication required."
    );
    assert!(err_text(&raw.cmd(&[b"AUTH", b"wrong"])).starts_with("WRONGPASS"));
    assert_eq!(raw.cmd(&[b"AUTH", b"s3cret"]), Frame::simple("OK"));
    assert_eq!(raw.cmd(&[b"SET", b"k", b"v"]), Frame::simple("OK"));
    assert_eq!(raw.cmd(&[b"RESET"]), Frame::simple("RESET"));
    assert!(
        err_text(&raw.cmd(&[b"GET", b"k"])).starts_with("NOAUTH"),
        "RESET forgets AUTH"
    );
    // HELLO with AUTH authenticates and switches protocol in one step.
    let hello = raw.cmd(&[b"HELLO", b"3", b"AUTH", b"default", b"s3cret"]);
    assert!(matches!(hello, Frame::Map(_)), "{hello:?}");
    assert_eq!(raw.cmd(&[b"GET", b"k"]), bulk("v"));
    // Client libraries: a URL with the password works, one without fails.
    let url = format!("redis://:s3cret@127.0.0.1:{}/", srv.port);
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    assert_eq!(
        redis::cmd("GET").arg("k").query::<String>(&mut c).unwrap(),
        "v"
    );
    let mut anon = srv.redis();
    let e = redis::cmd("GET")
        .arg("k")
        .query::<String>(&mut anon)
        .unwrap_err();
    assert!(e.to_string().contains("Authentication required"), "{e}");
    // Without requirepass, AUTH is an error, as in Redis.
    let open = Server::start("");
    let mut r = open.raw();
    assert!(err_text(&r.cmd(&[b"AUTH", b"x"])).contains("without any password configured"));
}

#[test]
fn max_clients_and_idle_timeout() {
    let srv = Server::start("[server]\nmax_clients = 2\nidle_timeout_secs = 1\n");
    // The readiness probe's connection may take a moment to be released.
    let admitted = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut c = srv.raw();
            match c.cmd(&[b"PING"]) {
                f if f == Frame::simple("PONG") => return c,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                f => panic!("never admitted: {f:?}"),
            }
        }
    };
    let mut a = admitted();
    // `a` has been idle since its PING was answered, at the latest now.
    let a_idle = Instant::now();
    let mut b = admitted();
    let mut c = srv.raw();
    assert_eq!(err_text(&c.frame()), "ERR max number of clients reached");
    assert!(c.closed());
    // The idle timeout closes both; then there is room again.
    assert!(a.closed(), "idle connection closed");
    assert!(
        a_idle.elapsed() >= Duration::from_millis(900),
        "not before the timeout: {:?}",
        a_idle.elapsed()
    );
    assert!(b.closed());
    // The server frees the slot just after closing: `admitted` retries until it has.
    let mut d = admitted();
    assert_eq!(d.cmd(&[b"PING"]), Frame::simple("PONG"));
}

#[test]
fn graceful_shutdown_answers_a_pipeline_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start_in(dir.path(), "");
    let mut raw = srv.raw();
    let mut batch = Vec::new();
    for i in 0..2000 {
        let k = format!("key:{i}");
        batch.extend_from_slice(
            &Frame::Array(vec![bulk("SET"), bulk(&k), bulk("value")]).to_bytes(),
        );
    }
    raw.send(&batch);
    let status = srv.terminate();
    assert!(status.success(), "exit status {status}: {}", srv.log());
    let mut oks = 0;
    let mut rest = Vec::new();
    raw.stream.read_to_end(&mut rest).unwrap();
    let mut pos = 0;
    while let Ok(Some((f, n))) =
        strata_resp::parse_frame(&rest[pos..], &strata_resp::Limits::default())
    {
        assert_eq!(f, Frame::simple("OK"));
        oks += 1;
        pos += n;
    }
    assert_eq!(pos, rest.len(), "nothing but whole replies");
    assert_eq!(oks, 2000, "every request sent before SIGTERM is answered");
    assert!(srv.log().contains("stopped"));
    // L3 was flushed: a new process on the same directory serves the keys.
    let first_log = srv.log();
    let srv2 = Server::start_in(dir.path(), "");
    let mut c = srv2.raw();
    assert_eq!(c.cmd(&[b"GET", b"key:1999"]), bulk("value"));
    assert_eq!(c.cmd(&[b"GET", b"key:0"]), bulk("value"));
    assert_eq!(
        c.cmd(&[b"DBSIZE"]),
        Frame::Integer(2000),
        "first run:\n{first_log}\nsecond run:\n{}",
        srv2.log()
    );
}

#[test]
fn admin_port_and_cli() {
    let srv = Server::start("");
    let mut c = srv.raw();
    for i in 0..10 {
        c.cmd(&[b"SET", format!("k{i}").as_bytes(), b"v"]);
        c.cmd(&[b"GET", format!("k{i}").as_bytes()]);
    }
    c.cmd(&[b"NOSUCHCMD"]);

    let (code, body) = http_get(&srv.admin(), "/metrics");
    assert_eq!(code, 200);
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no sample {name} {label:?}"))
    };
    assert_eq!(
        value("strata_server_commands_total", Some(("command", "get"))),
        10.0
    );
    assert_eq!(
        value("strata_server_commands_total", Some(("command", "unknown"))),
        1.0
    );
    assert_eq!(
        value(
            "strata_server_command_errors_total",
            Some(("command", "unknown"))
        ),
        1.0
    );
    assert_eq!(value("strata_server_connections", None), 1.0);
    assert!(value("strata_cache_hits_total", Some(("layer", "l1"))) >= 10.0);
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric.starts_with("strata_cache_lookup_latency_seconds"))
    );

    let (code, body) = http_get(&srv.admin(), "/health");
    assert_eq!(code, 200);
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["ready"], true);
    assert_eq!(h["layers"][1]["layer"], "l3");
    let (_, body) = http_get(&srv.admin(), "/stats");
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(s["hit_count"].as_u64().unwrap() >= 10);
    assert!(s["cache_manager"]["l1_hits"].as_u64().unwrap() >= 10);

    let strata = strata_tests::strata_bin();
    let out = Command::new(&strata)
        .args(["status", "--admin", &srv.admin()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["ready"], true);
    assert_eq!(status["connections"], 1);
    let out = Command::new(&strata)
        .args(["stats", "--admin", &srv.admin()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("hit_rate"));
    let out = Command::new(&strata)
        .args(["invalidate", "db0", "k1", "--admin", &srv.admin()])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "removed 1\n");
    let out = Command::new(&strata)
        .args([
            "invalidate",
            "db0",
            "--pattern",
            "k*",
            "--admin",
            &srv.admin(),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "removed 9\n");
    assert_eq!(c.cmd(&[b"DBSIZE"]), Frame::Integer(0));
    let out = Command::new(&strata)
        .args(["status", "--admin", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `strata serve` running?"));
}

#[test]
fn config_check() {
    let dir = tempfile::tempdir().unwrap();
    let strata = strata_tests::strata_bin();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[server]\nresp_listen = \"127.0.0.1:7000\"\n").unwrap();
    let out = Command::new(&strata)
        .args(["config", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("resp_listen = 127.0.0.1:7000"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nmax_clients = 0\n").unwrap();
    let out = Command::new(&strata)
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.max_clients"));
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[server]\nmax_client = 5\n").unwrap();
    let out = Command::new(&strata)
        .args(["config", "check"])
        .arg(&typo)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_client"));
}

#[test]
fn redis_benchmark_finishes_without_errors() {
    let srv = Server::start("");
    for pipeline in ["1", "16"] {
        let out = Command::new("redis-benchmark")
            .args(["-p", &srv.port.to_string(), "-n", "3000", "-c", "20", "-r", "1000", "-P", pipeline])
            .args(["-t", "ping,set,get,incr,mset", "--csv"])
            .output()
            .expect("redis-benchmark (Debian redis-tools) must be installed: scripts/test.sh installs it");
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(!text.contains("ERR") && !err.contains("ERR"), "{text}{err}");
        for test in [
            "PING_INLINE",
            "PING_MBULK",
            "SET",
            "GET",
            "INCR",
            "MSET (10 keys)",
        ] {
            assert!(
                text.contains(&format!("\"{test}\"")),
                "{test} missing from {text}"
            );
        }
    }
    let mut c = Raw::connect(srv.port);
    assert!(matches!(c.cmd(&[b"DBSIZE"]), Frame::Integer(n) if n > 0));
}

/// `strata top`: a header and a line per interval, whose commands/s and hit ratio follow the
/// load a client puts on the node meanwhile.
#[test]
fn strata_top_shows_the_load_live() {
    let srv = Server::start("");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = std::thread::spawn({
        let (url, stop) = (srv.url(), stop.clone());
        move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            let _: () = redis::cmd("SET").arg("hot").arg("v").query(&mut c).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _: String = redis::cmd("GET").arg("hot").query(&mut c).unwrap();
            }
        }
    });
    let out = Command::new(strata_tests::strata_bin())
        .args([
            "top",
            "--admin",
            &srv.admin(),
            "--count",
            "3",
            "--interval-ms",
            "300",
        ])
        .output()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three lines: {text}");
    assert!(
        lines[0].contains("cmds/s") && lines[0].contains("hit%"),
        "{text}"
    );
    for l in &lines[1..] {
        let cols: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(cols[0], srv.admin(), "{l}");
        assert_ne!(cols[1], "0", "commands were answered meanwhile: {l}");
        assert_eq!(cols[2], "100.0", "every GET hit L1: {l}");
    }
}

/// What `kill -9` can take from writes acknowledged behind (`l3.write_behind`): at most those
/// younger than `l3.write_behind_ms`, and never a delete — a key deleted before the crash
/// stays deleted, whether its write was on disk or still pending.
#[test]
fn kill_9_takes_only_the_youngest_writes_behind_and_never_a_delete() {
    use redis::Commands;
    let tmp = tempfile::tempdir().unwrap();
    let env = [
        ("STRATA__L3__WRITE_BEHIND", "true"),
        ("STRATA__L3__WRITE_BEHIND_MS", "300"),
    ];
    let mut srv = Server::start_with_env(tmp.path(), "", &env);
    let mut c = srv.redis();
    // w0..w500 are on disk: written longer ago than the window.
    strata_tests::pipeline_set(&mut c, 0..500, Some("v1"));
    std::thread::sleep(Duration::from_millis(1_500));
    // Then, killed at once: overwrites and deletes of stored keys, new keys (w1000..w1500),
    // and deletes of new keys that may not have reached the disk yet.
    strata_tests::pipeline_set(&mut c, 0..250, Some("v2"));
    strata_tests::pipeline_set(&mut c, 250..500, None);
    strata_tests::pipeline_set(&mut c, 1000..1500, Some("n"));
    strata_tests::pipeline_set(&mut c, 1000..1250, None);
    srv.kill9();

    let mut srv = Server::start_with_env(tmp.path(), "", &env);
    let mut c = srv.redis();
    let (mut overwrites, mut news) = (0, 0);
    for i in 0..1500u64 {
        let got: Option<String> = c.get(format!("w{i}")).unwrap();
        match i {
            0..250 => {
                assert!(matches!(got.as_deref(), Some("v1" | "v2")), "w{i}: {got:?}");
                overwrites += usize::from(got.as_deref() == Some("v2"));
            }
            250..1250 => assert_eq!(got, None, "w{i} was deleted before the crash"),
            _ => {
                assert!(matches!(got.as_deref(), None | Some("n")), "w{i}: {got:?}");
                news += usize::from(got.is_some());
            }
        }
    }
    eprintln!(
        "kill -9 right after the writes: {overwrites} of 250 overwrites and {news} of 250 new keys were stored"
    );

    // Writes older than the window are on disk when the process dies.
    strata_tests::pipeline_set(&mut c, 2000..2500, Some("a"));
    std::thread::sleep(Duration::from_millis(1_500));
    srv.kill9();
    let srv = Server::start_with_env(tmp.path(), "", &env);
    let mut c = srv.redis();
    for i in 2000..2500u64 {
        let got: Option<String> = c.get(format!("w{i}")).unwrap();
        assert_eq!(
            got.as_deref(),
            Some("a"),
            "w{i} was acknowledged 1.5 s before the crash"
        );
    }
}
