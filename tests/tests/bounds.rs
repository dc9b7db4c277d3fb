//! `strata serve` against careless and hostile clients, with its memory measured: RSS from
//! `/proc/PID/status` before and after each case, and a bystander's PING latency while it
//! runs. Each case is bounded in time and stops the server it started.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use strata_resp::Frame;
use strata_tests::*;

const MIB: u64 = 1024 * 1024;

fn set_cmd(key: &str, value: &[u8]) -> Vec<u8> {
    Frame::Array(vec![
        Frame::Bulk("SET".into()),
        Frame::Bulk(key.to_owned().into()),
        Frame::Bulk(value.to_vec().into()),
    ])
    .to_bytes()
    .to_vec()
}

/// Sends `bytes` and reads `replies` simple replies (`+OK`-sized or so) back.
fn pipeline(c: &mut Raw, bytes: &[u8], replies: usize) {
    c.send(bytes);
    for _ in 0..replies {
        let f = c.frame();
        assert!(!matches!(f, Frame::Error(_)), "{f:?}");
    }
}

/// A PING round trip on a fresh connection.
fn ping_latency(port: u16) -> Duration {
    let mut c = Raw::connect(port);
    let t = Instant::now();
    assert_eq!(c.cmd(&[b"PING"]), Frame::Simple("PONG".into()));
    t.elapsed()
}

/// The case: a small value written in the same pipeline as a 1 MiB one used to keep
/// the whole read buffer alive from L1 (RSS 1.5 GB for a 16 MiB L1). L1 now keeps copies
/// and weighs what it holds, so the process stays near its budget.
#[test]
fn l1_memory_is_what_the_configuration_says() {
    // L1 only (L3's RocksDB has budgets of its own, measured in docs/benchmarks.md).
    let s = Server::start_l1_only("");
    let before = s.rss();
    let mut c = s.raw();
    let big = vec![b'x'; MIB as usize];
    for round in 0..100 {
        let mut batch = Vec::new();
        for i in 0..10 {
            batch.extend_from_slice(&set_cmd("big", &big));
            batch.extend_from_slice(&set_cmd(&format!("small:{round}:{i}"), b"v"));
        }
        pipeline(&mut c, &batch, 20);
    }
    c.cmd(&[b"DEL", b"big"]);
    // Small keys up to the capacity: 16 MiB of L1 in ~60-byte entries.
    for round in 0..200 {
        let mut batch = Vec::new();
        for i in 0..500 {
            batch.extend_from_slice(&set_cmd(&format!("fill:{round}:{i}"), b"0123456789abcdef"));
        }
        pipeline(&mut c, &batch, 500);
    }
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    let after = s.rss();
    let grown = after.saturating_sub(before);
    let l1 = 16 * MIB;
    println!(
        "RSS {} MiB -> {} MiB (+{} MiB) for a {} MiB L1",
        before / MIB,
        after / MIB,
        grown / MIB,
        l1 / MIB
    );
    // 1.25x the L1 budget plus 24 MiB of fixed costs (allocator arenas, quick_cache's
    // tables, the runtime).
    assert!(
        grown <= l1 * 5 / 4 + 24 * MIB,
        "RSS grew by {} MiB for a {} MiB L1",
        grown / MIB,
        l1 / MIB
    );
}

#[test]
fn a_reply_over_the_output_limit_closes_that_client_only() {
    let s = Server::start_l1_only("[server]\nclient_output_buffer_limit_bytes = 33554432\n");
    let mut c = s.raw();
    c.cmd(&[b"SET", b"big", &vec![b'x'; MIB as usize]]);
    let before = s.rss();
    // 3000 times the same 1 MiB key in a 27 KB request: a 3 GB reply.
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(std::iter::repeat_n(&b"big"[..], 3000));
    let bystander = std::thread::spawn({
        let port = s.port;
        move || {
            let mut took: Vec<Duration> = (0..20)
                .map(|_| {
                    let t = ping_latency(port);
                    std::thread::sleep(Duration::from_millis(10));
                    t
                })
                .collect();
            took.sort();
            took
        }
    });
    let f = Frame::Array(
        args.iter()
            .map(|a| Frame::Bulk(a.to_vec().into()))
            .collect(),
    );
    c.send(&f.to_bytes());
    assert!(
        c.closed(),
        "the client is disconnected, without a partial reply"
    );
    let took = bystander.join().unwrap();
    let (p95, worst) = (took[took.len() - 2], took[took.len() - 1]);
    let grown = s.rss().saturating_sub(before);
    println!(
        "bystander PING p95 {p95:?}, worst {worst:?}; RSS +{} MiB",
        grown / MIB
    );
    assert!(grown < 96 * MIB, "RSS grew by {} MiB", grown / MIB);
    // A server that built the 3 GB reply would stall every client for seconds. One PING
    // of twenty may meet a scheduling hiccup on a loaded 2-core machine (a CI run saw 67
    // ms once, with the binary's other tests running beside it).
    assert!(p95 < Duration::from_millis(50), "PINGs waited {took:?}");
    assert!(
        worst < Duration::from_millis(500),
        "a PING waited {worst:?}"
    );
    // The server and its data are fine; the refusal is counted.
    let mut d = s.raw();
    assert_eq!(d.cmd(&[b"STRLEN", b"big"]), Frame::Integer(MIB as i64));
    let (_, metrics) = http_get(&s.admin(), "/metrics");
    assert!(
        metrics.contains("strata_server_output_limit_closed_total 1"),
        "{metrics}"
    );
}

/// A pipeline's writes run as one group and reply together, so writes that answer with the
/// old value (`GETSET`, `GETDEL`, `SET … GET`) run one by one, their replies sent as they
/// come: 40 MiB of old values under a 32 MiB output limit are answered whole, as Redis
/// answers them. (Grouped, they passed the limit, the group's replies were cut and the
/// client closed.)
#[test]
fn pipelined_writes_that_return_old_values_are_answered_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(
        tmp.path(),
        "[server]\nclient_output_buffer_limit_bytes = 33554432\n",
        &[
            ("STRATA__L3__ENABLED", "false"),
            ("STRATA__L1__CAPACITY_BYTES", "134217728"),
        ],
    );
    let mut setup = s.raw();
    let value = vec![b'x'; MIB as usize];
    let mut c = s.raw();
    for (command, extra) in [
        (&b"GETSET"[..], Some(&b"y"[..])),
        (b"SET", Some(b"y")),
        (b"GETDEL", None),
    ] {
        for i in 0..40 {
            setup.cmd(&[b"SET", format!("k{i}").as_bytes(), &value]);
        }
        let mut bytes = Vec::new();
        for i in 0..40 {
            let mut args = vec![
                Frame::Bulk(command.to_vec().into()),
                Frame::Bulk(format!("k{i}").into_bytes().into()),
            ];
            if let Some(v) = extra {
                args.push(Frame::Bulk(v.to_vec().into()));
            }
            if command == b"SET" {
                args.push(Frame::Bulk("GET".into()));
            }
            bytes.extend_from_slice(&Frame::Array(args).to_bytes());
        }
        c.send(&bytes);
        for i in 0..40 {
            let f = c.frame();
            assert!(
                matches!(&f, Frame::Bulk(b) if b.len() == MIB as usize),
                "{} k{i}: {f:?}",
                String::from_utf8_lossy(command)
            );
        }
    }
    assert_eq!(c.cmd(&[b"PING"]), Frame::Simple("PONG".into()));
    let (_, metrics) = http_get(&s.admin(), "/metrics");
    assert!(
        metrics.contains("strata_server_output_limit_closed_total 0"),
        "{metrics}"
    );
}

#[test]
fn unfinished_requests_cannot_exhaust_memory() {
    let s = Server::start_l1_only(
        "[server]\nmax_input_bytes_total = 134217728\nmax_request_bytes = 33554432\n",
    );
    let before = s.rss();
    // 40 clients each send 15 MiB of a 16 MiB value and stop: 600 MiB if all were held.
    let header = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$16777216\r\n";
    let chunk = vec![b'x'; MIB as usize];
    let mut conns = Vec::new();
    for _ in 0..40 {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(header);
        for _ in 0..15 {
            if c.write_all(&chunk).is_err() {
                break;
            }
        }
        conns.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let grown = s.rss().saturating_sub(before);
    println!("40 unfinished 16 MiB requests: RSS +{} MiB", grown / MIB);
    assert!(
        grown < 128 * MIB + 64 * MIB,
        "RSS grew by {} MiB past a 128 MiB input budget",
        grown / MIB
    );
    let mut closed = 0;
    for c in &mut conns {
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut b = [0u8; 256];
        if matches!(c.read(&mut b), Ok(n) if n == 0 || b[..n].starts_with(b"-ERR client memory")) {
            closed += 1;
        }
    }
    assert!(
        closed >= 20,
        "clients past the budget are closed: {closed} of 40"
    );
    assert!(ping_latency(s.port) < Duration::from_millis(50));
    drop(conns);
    // Once they are gone, their buffers are gone too.
    std::thread::sleep(Duration::from_millis(500));
    let (_, metrics) = http_get(&s.admin(), "/metrics");
    assert!(
        metrics.contains("strata_server_input_limit_closed_total"),
        "{metrics}"
    );
}

/// Counts the connections the server closed (EOF, a reset, or the budget's error first).
///
/// A connection is open once it has been quiet for 300 ms in a pass over all of them in
/// which none sent anything: a server still working through queued input (a loaded CI
/// machine runs other tests beside this one) keeps its connections undecided. A server
/// that closes a connection with unread input resets it, and the reset can discard the
/// error reply, so a reset counts as closed.
fn closed_by_budget(conns: &mut [TcpStream]) -> usize {
    const MARK: &[u8] = b"-ERR client memory o";
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut undecided: Vec<(usize, Vec<u8>)> = (0..conns.len()).map(|i| (i, Vec::new())).collect();
    let mut closed = 0;
    let mut b = vec![0u8; 1 << 20];
    for c in conns.iter() {
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
    }
    while !undecided.is_empty() && std::time::Instant::now() < deadline {
        let mut heard = false;
        undecided.retain_mut(|(i, tail)| {
            // A reader of what was queued: skip replies until the error or the end.
            loop {
                match conns[*i].read(&mut b) {
                    Ok(0) => {
                        closed += 1;
                        return false;
                    }
                    Ok(n) => {
                        heard = true;
                        tail.extend_from_slice(&b[..n]);
                        if tail.windows(MARK.len()).any(|w| w == MARK) {
                            closed += 1;
                            return false;
                        }
                        tail.drain(..tail.len().saturating_sub(MARK.len()));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                        closed += 1;
                        return false;
                    }
                    Err(_) => return true,
                }
            }
        });
        if !heard {
            break;
        }
    }
    closed
}

/// Per-client bounds multiply: 30 clients that ask for 32 MiB replies and never read them
/// held 30 x 32 MiB (a helper's review made one node hold 1.7 GB this way). Unsent replies
/// now count in the clients' budget (`server.max_input_bytes_total`): past it, the client
/// whose large reply would push it over is closed instead of the node growing.
#[test]
fn replies_nobody_reads_stay_within_the_clients_budget() {
    let s = Server::start_l1_only("[server]\nmax_input_bytes_total = 134217728\n");
    let mut c = Raw::connect(s.port);
    let value = vec![b'v'; 256 * 1024];
    assert_eq!(c.cmd(&[b"SET", b"k", &value]), Frame::Simple("OK".into()));
    let before = s.rss();
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(std::iter::repeat_n(&b"k"[..], 128));
    let request = Frame::Array(
        mget.iter()
            .map(|a| Frame::Bulk(a.to_vec().into()))
            .collect(),
    )
    .to_bytes();
    let mut conns = Vec::new();
    for _ in 0..30 {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.write_all(&request).unwrap();
        conns.push(c);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let grown = s.rss().saturating_sub(before);
    println!(
        "30 clients not reading 32 MiB replies: RSS +{} MiB",
        grown / MIB
    );
    assert!(
        grown < 128 * MIB + 96 * MIB,
        "RSS grew by {} MiB past a 128 MiB clients' budget",
        grown / MIB
    );
    assert!(ping_latency(s.port) < Duration::from_millis(50));
    assert!(metric_or_zero(&s, "strata_server_input_limit_closed_total") >= 10.0);
    let closed = closed_by_budget(&mut conns);
    assert!(
        closed >= 10,
        "clients past the budget are closed: {closed} of 30"
    );
    // A client within the budget still gets its whole reply.
    drop(conns);
    std::thread::sleep(Duration::from_millis(300));
    let mut r = Raw::connect(s.port);
    match r.cmd(&mget) {
        Frame::Array(v) => assert_eq!(v.len(), 128),
        other => panic!("{other:?}"),
    }
}

/// The same for transactions: 30 clients each queueing 16 MiB of SETs in a MULTI held 30 x
/// 16 MiB (the queue is copied out of the read buffer, so the input budget never saw it).
#[test]
fn queued_transactions_stay_within_the_clients_budget() {
    let s = Server::start_l1_only("[server]\nmax_input_bytes_total = 134217728\n");
    let before = s.rss();
    let value = vec![b'q'; MIB as usize];
    let mut conns = Vec::new();
    for i in 0..30 {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut bytes = b"*1\r\n$5\r\nMULTI\r\n".to_vec();
        for j in 0..16 {
            bytes.extend_from_slice(&set_cmd(&format!("t{i}-{j}"), &value));
        }
        let _ = c.write_all(&bytes);
        conns.push(c);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let grown = s.rss().saturating_sub(before);
    println!(
        "30 clients queueing 16 MiB transactions: RSS +{} MiB",
        grown / MIB
    );
    assert!(
        grown < 128 * MIB + 96 * MIB,
        "RSS grew by {} MiB past a 128 MiB clients' budget",
        grown / MIB
    );
    assert!(ping_latency(s.port) < Duration::from_millis(50));
    let closed = closed_by_budget(&mut conns);
    assert!(
        closed >= 10,
        "clients past the budget are closed: {closed} of 30"
    );
    // A transaction within the budget still runs.
    drop(conns);
    std::thread::sleep(Duration::from_millis(300));
    let mut r = Raw::connect(s.port);
    r.cmd(&[b"MULTI"]);
    r.cmd(&[b"SET", b"small", &value]);
    match r.cmd(&[b"EXEC"]) {
        Frame::Array(v) => assert_eq!(v, vec![Frame::Simple("OK".into())]),
        other => panic!("{other:?}"),
    }
}

/// Many small queued commands are charged what they hold: a command's slot in the queue and
/// each argument's own allocation, not only the argument's bytes. Charged 20 bytes a `PING`,
/// 12 clients queueing 1.6 million each grew a node by 1.27 GB against 384 MB counted
/// (review, 2026-12-05).
#[test]
fn queued_small_commands_are_charged_what_they_hold() {
    let s = Server::start_l1_only("[server]\nmax_input_bytes_total = 67108864\n");
    let ping = b"*1\r\n$4\r\nPING\r\n";
    let (mut conns, grown) = peak_growth(&s, || {
        let mut conns = Vec::new();
        for _ in 0..8 {
            let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
            c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut bytes = b"*1\r\n$5\r\nMULTI\r\n".to_vec();
            for _ in 0..500_000 {
                bytes.extend_from_slice(ping);
            }
            let _ = c.write_all(&bytes);
            conns.push(c);
        }
        std::thread::sleep(Duration::from_millis(1500));
        conns
    });
    println!(
        "8 clients queueing 500,000 PINGs each: RSS +{} MiB",
        grown / MIB
    );
    assert!(
        grown < 64 * MIB + 64 * MIB,
        "RSS grew by {} MiB past a 64 MiB clients' budget",
        grown / MIB
    );
    assert!(ping_latency(s.port) < Duration::from_millis(50));
    let closed = closed_by_budget(&mut conns);
    assert!(
        closed >= 1,
        "clients past the budget are closed: {closed} of 8"
    );
}

/// Watched keys and subscriptions are client memory too: 24 clients each watching (or
/// subscribing to) 1,000 names of 8,000 bytes count about 16 MiB apiece against a 128 MiB
/// budget, and those past it are closed.
#[test]
fn watched_keys_and_subscriptions_stay_within_the_clients_budget() {
    let s = Server::start_l1_only("[server]\nmax_input_bytes_total = 134217728\n");
    let mut conns = Vec::new();
    for i in 0..24 {
        let verb: &[u8] = if i % 2 == 0 { b"WATCH" } else { b"SUBSCRIBE" };
        let names: Vec<Vec<u8>> = (0..1000)
            .map(|j| format!("{i}:{j}:{}", "n".repeat(8000)).into_bytes())
            .collect();
        let mut args: Vec<Frame> = vec![Frame::Bulk(verb.to_vec().into())];
        args.extend(names.into_iter().map(|n| Frame::Bulk(n.into())));
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(&Frame::Array(args).to_bytes());
        conns.push(c);
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(ping_latency(s.port) < Duration::from_millis(50));
    let closed = closed_by_budget(&mut conns);
    assert!(
        (8..24).contains(&closed),
        "clients past the budget are closed, the others stay: {closed} of 24"
    );
}

/// The largest holder goes first, as with Redis's `maxmemory-clients`: one client asking for
/// a 127 MiB reply it never reads held a 128 MiB budget, and every other client's 1 MiB GET
/// was closed instead of it (an adversarial review, 2026-12-04). Now the hog is told to
/// close — even while it is blocked writing — and the others are answered.
#[test]
fn the_largest_client_goes_first_when_the_budget_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(
        dir.path(),
        "[server]\nmax_input_bytes_total = 134217728\n",
        &[
            ("STRATA__L3__ENABLED", "false"),
            ("STRATA__L1__CAPACITY_BYTES", "268435456"),
        ],
    );
    let mut c = Raw::connect(s.port);
    let value = vec![b'm'; MIB as usize];
    for i in 0..127 {
        let key = format!("m{i}");
        assert_eq!(
            c.cmd(&[b"SET", key.as_bytes(), &value]),
            Frame::Simple("OK".into())
        );
    }
    let keys: Vec<String> = (0..127).map(|i| format!("m{i}")).collect();
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(keys.iter().map(|k| k.as_bytes()));
    let request = Frame::Array(
        mget.iter()
            .map(|a| Frame::Bulk(a.to_vec().into()))
            .collect(),
    )
    .to_bytes();
    let mut hog = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    hog.write_all(&request).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    for round in 0..3 {
        let mut r = Raw::connect(s.port);
        assert_eq!(
            r.cmd(&[b"GET", b"m0"]),
            Frame::Bulk(value.clone().into()),
            "round {round}: a bystander's 1 MiB GET"
        );
    }
    let mut hogs = [hog];
    assert_eq!(closed_by_budget(&mut hogs), 1, "the hog was closed");
    assert!(metric_or_zero(&s, "strata_server_input_limit_closed_total") >= 1.0);
    drop((hogs, c));
    wait_for(Duration::from_secs(5), || {
        metric_or_zero(&s, "strata_server_client_input_bytes") < (1 << 20) as f64
    })
    .expect("the clients' memory returns to nothing once the clients are gone");
}

/// Queued pub/sub messages are client memory: 30 subscribers that never read, each sent 31
/// messages of 1 MB, grew RSS by 806 MiB while a 128 MiB budget counted 29 MiB (each stayed
/// under its own 32 MiB limit). Queues now count, and a subscriber holding more than 64 KiB
/// when the total is over is closed by the publisher that finds it so.
#[test]
fn queued_messages_of_slow_subscribers_stay_within_the_clients_budget() {
    let s = Server::start_l1_only("[server]\nmax_input_bytes_total = 134217728\n");
    let before = s.rss();
    let mut subs = Vec::new();
    for i in 0..30 {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        let channel = format!("ch{i}");
        c.write_all(
            &Frame::Array(vec![
                Frame::Bulk("SUBSCRIBE".into()),
                Frame::Bulk(channel.into_bytes().into()),
            ])
            .to_bytes(),
        )
        .unwrap();
        subs.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut publisher = Raw::connect(s.port);
    let payload = vec![b'p'; 1_000_000];
    for _ in 0..31 {
        for i in 0..30 {
            let channel = format!("ch{i}");
            publisher.cmd(&[b"PUBLISH", channel.as_bytes(), &payload]);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let grown = s.rss().saturating_sub(before);
    println!(
        "30 subscribers not reading 31 MB each: RSS +{} MiB",
        grown / MIB
    );
    assert!(
        grown < 128 * MIB + 96 * MIB,
        "RSS grew by {} MiB past a 128 MiB clients' budget",
        grown / MIB
    );
    assert!(metric_or_zero(&s, "strata_server_pubsub_limit_closed_total") >= 10.0);
    assert!(ping_latency(s.port) < Duration::from_millis(50));
    drop(subs);
    drop(publisher);
    // Every queue's share came back: the count does not drift.
    wait_for(Duration::from_secs(5), || {
        metric_or_zero(&s, "strata_server_client_input_bytes") < (1 << 20) as f64
    })
    .expect("the clients' memory returns to nothing once the subscribers are gone");
}

/// What the process holds is visible: RSS, L1, the clients' input, RocksDB's memory.
#[test]
fn memory_is_reported_where_operators_look() {
    let s = Server::start("");
    let mut c = s.raw();
    c.cmd(&[b"SET", b"k", &[b'v'; 1000]]);
    let Frame::Bulk(info) = c.cmd(&[b"INFO", b"memory"]) else {
        panic!()
    };
    let info = String::from_utf8_lossy(&info).into_owned();
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {info}"))
    };
    assert!(field("used_memory") > 1000);
    assert!(field("used_memory_rss") > 10 * MIB);
    assert_eq!(field("maxmemory"), 16 * MIB);
    let _ = field("strata_client_input_bytes");
    let (_, metrics) = http_get(&s.admin(), "/metrics");
    for name in [
        "strata_process_resident_bytes",
        "strata_server_client_input_bytes",
        "strata_l3_memory_bytes",
        "strata_l1_resident_bytes",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
}

#[test]
fn values_are_checked_for_size_before_they_are_built() {
    let s = Server::start_l1_only("[limits]\nmax_value_bytes = 1048576\n");
    let before = s.rss();
    let mut c = s.raw();
    // Redis would allocate 512 MiB here; the value limit refuses it first.
    let e = err_text(&c.cmd(&[b"SETRANGE", b"k", b"536870000", b"x"]));
    assert!(e.contains("above the limit of 1048576 bytes"), "{e}");
    assert_eq!(c.cmd(&[b"EXISTS", b"k"]), Frame::Integer(0));
    c.cmd(&[b"SET", b"a", &vec![b'x'; MIB as usize - 10]]);
    let e = err_text(&c.cmd(&[b"APPEND", b"a", &[b'y'; 100]]));
    assert!(e.contains("above the limit of"), "{e}");
    assert_eq!(c.cmd(&[b"STRLEN", b"a"]), Frame::Integer(MIB as i64 - 10));
    // Larger than one L1 shard, with no L3 to hold it: refused, not acknowledged and lost.
    let s2 = Server::start_l1_only("");
    let mut c2 = s2.raw();
    let e = err_text(&c2.cmd(&[b"SET", b"huge", &vec![b'x'; 4 * MIB as usize]]));
    assert!(e.contains("above the limit of"), "{e}");
    assert_eq!(c2.cmd(&[b"GET", b"huge"]), Frame::Null);
    let grown = s.rss().saturating_sub(before);
    assert!(grown < 16 * MIB, "RSS grew by {} MiB", grown / MIB);
}

#[test]
fn clients_cannot_fill_the_namespace_table_and_flushall_always_works() {
    let s = Server::start_l1_only("[server]\nmax_namespaces = 100\n");
    // Every client selects a new namespace first, then they all write: the bound holds at
    // SELECT (checking there and creating at the first write let them race past it).
    let mut conns: Vec<Raw> = (0..150).map(|_| s.raw()).collect();
    let mut refused = 0;
    for (i, c) in conns.iter_mut().enumerate() {
        match c.cmd(&[b"SELECT", format!("junk{i}").as_bytes()]) {
            Frame::Simple(_) => {}
            Frame::Error(e) => {
                let e = String::from_utf8_lossy(&e).into_owned();
                assert!(e.contains("server.max_namespaces (100)"), "{e}");
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    for c in &mut conns {
        let _ = c.cmd(&[b"SET", b"k", b"v"]);
    }
    // 16 databases are open from the start: 84 named ones fit.
    assert_eq!(refused, 150 - 84, "refused at SELECT");
    let mut c = s.raw();
    assert_eq!(c.cmd(&[b"SELECT", b"junk3"]), Frame::Simple("OK".into()));
    assert_eq!(c.cmd(&[b"GET", b"k"]), Frame::Bulk("v".into()));
    assert_eq!(c.cmd(&[b"FLUSHALL"]), Frame::Simple("OK".into()));
    assert_eq!(c.cmd(&[b"GET", b"k"]), Frame::Null);
    for db in [b"0", b"9"] {
        assert_eq!(c.cmd(&[b"SELECT", db]), Frame::Simple("OK".into()));
        assert_eq!(c.cmd(&[b"SET", b"k", b"v"]), Frame::Simple("OK".into()));
    }
}

/// A namespace a client emptied gives its slot back within a sweep: 1,000 namespaces come
/// and go through a budget of 100 (`server.max_namespaces`), a namespace that still holds a
/// key is kept, and the numbered databases stay open.
#[test]
fn emptied_namespaces_give_their_slots_back() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(
        tmp.path(),
        "[server]\nmax_namespaces = 100\n",
        &[("STRATA__L1__SWEEP_INTERVAL_MS", "200")],
    );
    let mut c = s.raw();
    assert_eq!(c.cmd(&[b"SELECT", b"keeper"]), Frame::Simple("OK".into()));
    assert_eq!(c.cmd(&[b"SET", b"k", b"kept"]), Frame::Simple("OK".into()));
    let started = Instant::now();
    let mut refusals = 0;
    for i in 0..1_000 {
        let name = format!("junk{i}");
        // Refused while the budget is spent; an emptied namespace is reclaimed by the next
        // sweep (every second by default, 200 ms here).
        loop {
            match c.cmd(&[b"SELECT", name.as_bytes()]) {
                Frame::Simple(_) => break,
                Frame::Error(e) => {
                    let e = String::from_utf8_lossy(&e).into_owned();
                    assert!(e.contains("server.max_namespaces (100)"), "{e}");
                    refusals += 1;
                    assert!(
                        started.elapsed() < Duration::from_secs(90),
                        "namespaces are not given back: {i} of 1000 after {:?}",
                        started.elapsed()
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(c.cmd(&[b"SET", b"k", b"v"]), Frame::Simple("OK".into()));
        assert_eq!(c.cmd(&[b"GET", b"k"]), Frame::Bulk("v".into()));
        assert_eq!(c.cmd(&[b"DEL", b"k"]), Frame::Integer(1));
    }
    let reclaimed = metric_value(&s, "strata_namespaces_reclaimed_total").unwrap();
    let live = metric_value(&s, "strata_namespaces").unwrap();
    println!(
        "1000 namespaces through a budget of 100 in {:?}: {refusals} refusals, {reclaimed} reclaimed, {live} in the table",
        started.elapsed()
    );
    assert!(reclaimed >= 900.0, "{reclaimed} reclaimed");
    assert!(live <= 100.0, "{live} namespaces in the table");
    assert_eq!(c.cmd(&[b"SELECT", b"keeper"]), Frame::Simple("OK".into()));
    assert_eq!(c.cmd(&[b"GET", b"k"]), Frame::Bulk("kept".into()));
    assert_eq!(c.cmd(&[b"SELECT", b"15"]), Frame::Simple("OK".into()));
    assert_eq!(c.cmd(&[b"DBSIZE"]), Frame::Integer(0));
    assert_eq!(c.cmd(&[b"FLUSHALL"]), Frame::Simple("OK".into()));
}

/// What a command reads or builds is not kept once it is done: a client name is a copy (a
/// slice would pin the whole read buffer), errors do not echo megabytes, and a large reply's
/// buffer is let go once written — and given back to the system: 20 clients that each sent
/// 8 MiB and read 30 MiB leave the node within 16 MiB of where it was (glibc's malloc, left to
/// itself, kept 50–64 MiB of their freed buffers in its arenas; see `entry.rs`).
#[test]
fn nothing_a_client_sent_or_got_is_kept_past_its_command() {
    let s = Server::start_l1_only("[server]\nclient_output_buffer_limit_bytes = 33554432\n");
    let mut setup = s.raw();
    setup.cmd(&[b"SET", b"big", &vec![b'x'; MIB as usize]]);
    let before = s.rss();
    let junk = vec![0xffu8; 8 * MIB as usize];
    let mut conns = Vec::new();
    for _ in 0..20 {
        let mut c = s.raw();
        // An 8 MiB argument and a tiny client name read in the same buffer.
        let mut batch = Frame::Array(vec![
            Frame::Bulk("CLIENT".into()),
            Frame::Bulk("NO-EVICT".into()),
            Frame::Bulk(junk.clone().into()),
        ])
        .to_bytes()
        .to_vec();
        batch.extend_from_slice(
            &Frame::Array(vec![
                Frame::Bulk("CLIENT".into()),
                Frame::Bulk("SETNAME".into()),
                Frame::Bulk("x".into()),
            ])
            .to_bytes(),
        );
        c.send(&batch);
        let first = c.frame();
        assert!(
            !matches!(&first, Frame::Error(m) if m.len() > 4096),
            "no long error"
        );
        assert_eq!(c.frame(), Frame::Simple("OK".into()));
        // An error that would echo 8 MiB (as 24 MB of replacement characters).
        let e = c.cmd(&[b"CONFIG", &junk]);
        assert!(
            matches!(&e, Frame::Error(m) if m.len() <= 4096),
            "short error"
        );
        // A 30 MiB reply, read whole.
        let mut args: Vec<&[u8]> = vec![b"MGET"];
        args.extend(std::iter::repeat_n(&b"big"[..], 30));
        assert!(matches!(c.cmd(&args), Frame::Array(v) if v.len() == 30));
        conns.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    let grown = s.rss().saturating_sub(before);
    println!(
        "20 idle clients after 8 MiB arguments and 30 MiB replies: RSS +{} MiB",
        grown / MIB
    );
    assert!(grown < 64 * MIB, "RSS grew by {} MiB", grown / MIB);
    let list = conns[0].cmd(&[b"CLIENT", b"LIST"]);
    assert!(format!("{list:?}").contains("name=x "), "{list:?}");
    let long = vec![b'n'; 600];
    assert!(err_text(&conns[0].cmd(&[b"CLIENT", b"SETNAME", &long])).contains("512 bytes"));
}

/// Listing a large keyspace (KEYS, DBSIZE, INFO keyspace, SCAN pages) runs off the worker
/// threads: another client's PING is answered promptly meanwhile.
#[test]
fn key_listing_does_not_hold_up_other_clients() {
    // 50k small keys (~240 bytes each in L1) fit the test config's 16 MiB L1.
    let s = Server::start_l1_only("");
    let mut c = s.raw();
    for round in 0..50 {
        let mut batch = Vec::new();
        for i in 0..1000 {
            batch.extend_from_slice(&set_cmd(&format!("key:{round}:{i}"), b"v"));
        }
        pipeline(&mut c, &batch, 1000);
    }
    assert_eq!(c.cmd(&[b"DBSIZE"]), Frame::Integer(50_000));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lister = std::thread::spawn({
        let (port, stop) = (s.port, stop.clone());
        move || {
            let mut c = Raw::connect(port);
            let mut calls = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for cmd in [
                    &[&b"DBSIZE"[..]][..],
                    &[b"KEYS", b"nomatch*"],
                    &[b"SCAN", b"0", b"COUNT", b"10"],
                    &[b"INFO", b"keyspace"],
                ] {
                    let _ = c.cmd(cmd);
                    calls += 1;
                }
            }
            calls
        }
    });
    let start = Instant::now();
    let mut waits: Vec<Duration> = Vec::new();
    let mut bystander = s.raw();
    while start.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        assert_eq!(bystander.cmd(&[b"PING"]), Frame::Simple("PONG".into()));
        waits.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let calls = lister.join().unwrap();
    waits.sort();
    let p99 = waits[waits.len() * 99 / 100];
    let worst = *waits.last().unwrap();
    println!("{calls} listings of 50k keys meanwhile; PING p99 {p99:?}, worst {worst:?}");
    assert!(calls >= 4, "the listings ran");
    // A listing on a worker thread held PINGs up for 158 ms each time; one stall of the
    // shared 2-core machine is not that, so the bound is on the 99th percentile.
    assert!(p99 < Duration::from_millis(50), "PING p99 {p99:?}");
    assert!(
        worst < Duration::from_millis(500),
        "a PING waited {worst:?}"
    );
}

/// DBSIZE and INFO keyspace on a large keyspace read counters kept on write (L1's index and
/// L3's per-namespace counts), not a pass over the keys: each call is fast, and the count is
/// exact through overwrites, deletes, a FLUSHDB of another database and a restart.
#[test]
fn dbsize_on_a_large_keyspace_reads_counters_and_stays_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::start_in(tmp.path(), "");
    let mut c = srv.redis();
    pipeline_set(&mut c, 0..60_000, Some("v"));
    let dbsize = |c: &mut redis::Connection| -> (i64, Duration) {
        let t = Instant::now();
        let n: i64 = redis::cmd("DBSIZE").query(c).unwrap();
        (n, t.elapsed())
    };
    // The slowest of 20 calls, once L3 has counted its keys (its first maintenance tick).
    let settled = |c: &mut redis::Connection, want: i64| -> Duration {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let calls: Vec<(i64, Duration)> = (0..20).map(|_| dbsize(c)).collect();
            assert!(
                calls.iter().all(|(n, _)| *n == want),
                "DBSIZE {calls:?}, want {want}"
            );
            let mut times: Vec<Duration> = calls.iter().map(|(_, t)| *t).collect();
            times.sort();
            if times[10] < Duration::from_millis(5) || Instant::now() > deadline {
                return times[10];
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let median = settled(&mut c, 60_000);
    println!("DBSIZE of 60k keys: median {median:?}");
    // A listing of 60k keys from L1 and L3 takes tens of milliseconds here.
    assert!(
        median < Duration::from_millis(5),
        "DBSIZE median {median:?}"
    );
    let info: String = redis::cmd("INFO").arg("keyspace").query(&mut c).unwrap();
    assert!(info.contains("db0:keys=60000,"), "{info}");

    // Overwrites do not count twice; deletes count down.
    pipeline_set(&mut c, 0..1_000, Some("again"));
    pipeline_set(&mut c, 50_000..55_000, None);
    assert!(settled(&mut c, 55_000) < Duration::from_millis(5));

    // Another database is counted apart, and FLUSHDB empties its count at once.
    let mut other = srv.redis();
    let _: () = redis::cmd("SELECT").arg(1).query(&mut other).unwrap();
    pipeline_set(&mut other, 0..20_000, Some("w"));
    assert_eq!(dbsize(&mut other).0, 20_000);
    let _: () = redis::cmd("FLUSHDB").query(&mut other).unwrap();
    assert_eq!(dbsize(&mut other).0, 0);
    pipeline_set(&mut other, 0..12_000, Some("w"));
    assert_eq!(dbsize(&mut other).0, 12_000);
    assert_eq!(dbsize(&mut c).0, 55_000);

    // After a restart L1 is empty and L3 counts its records again.
    assert!(srv.terminate().success());
    let srv = Server::start_in(tmp.path(), "");
    let mut c = srv.redis();
    let median = settled(&mut c, 55_000);
    assert!(
        median < Duration::from_millis(5),
        "DBSIZE median {median:?} after a restart"
    );
}

/// SCAN cursors are positions, not server state: a scan interrupted by 70,000 other scans,
/// by writes and deletes, and by a restart of the server carries on with its cursor and
/// returns every key that was there throughout exactly once (the table of remembered cursors
/// this replaced held 65,536, so the other client's scans pushed this one's out). Each page
/// costs O(COUNT): the slowest call is measured and bounded.
#[test]
fn scan_cursors_survive_other_scans_writes_and_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::start_in(tmp.path(), "");
    let mut c = srv.redis();
    pipeline_set(&mut c, 0..20_000, Some("v"));
    let mut seen = std::collections::HashMap::<String, u32>::new();
    let mut worst = Duration::ZERO;
    let page = |c: &mut redis::Connection,
                cursor: u64,
                seen: &mut std::collections::HashMap<String, u32>,
                worst: &mut Duration|
     -> u64 {
        let t = Instant::now();
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(100)
            .query(c)
            .unwrap();
        *worst = (*worst).max(t.elapsed());
        for k in keys {
            *seen.entry(k).or_default() += 1;
        }
        next
    };
    let mut cursor = 0;
    while seen.len() < 8_000 {
        cursor = page(&mut c, cursor, &mut seen, &mut worst);
        assert_ne!(cursor, 0, "the scan is not over yet");
    }

    // Another client starts 70,000 scans.
    let mut other = srv.raw();
    let one = Frame::Array(vec![
        Frame::Bulk("SCAN".into()),
        Frame::Bulk("0".into()),
        Frame::Bulk("COUNT".into()),
        Frame::Bulk("1".into()),
    ])
    .to_bytes()
    .to_vec();
    for _ in 0..7 {
        pipeline(&mut other, &one.repeat(10_000), 10_000);
    }
    // Writes and deletes meanwhile: keys added or removed during a scan may or may not be
    // returned; the others must be, once.
    let deleted: Vec<String> = (0..20_000).step_by(10).map(|i| format!("w{i}")).collect();
    let _: i64 = redis::cmd("DEL").arg(&deleted).query(&mut c).unwrap();
    pipeline_set(&mut c, 100_000..102_000, Some("v"));
    // And a restart: L3 keeps the keys, and the cursor still means the same place.
    drop(c);
    srv.terminate();
    drop(srv);
    let srv = Server::start_in(tmp.path(), "");
    let mut c = srv.redis();
    loop {
        cursor = page(&mut c, cursor, &mut seen, &mut worst);
        if cursor == 0 {
            break;
        }
    }
    let deleted: std::collections::HashSet<String> = deleted.into_iter().collect();
    for i in 0..20_000 {
        let k = format!("w{i}");
        if !deleted.contains(&k) {
            assert_eq!(seen.get(&k), Some(&1), "{k} returned once");
        }
    }
    let stray = seen
        .keys()
        .filter(|k| {
            let i: u64 = k.trim_start_matches('w').parse().unwrap();
            !(i < 20_000 || (100_000..102_000).contains(&i))
        })
        .count();
    assert_eq!(stray, 0, "nothing that was never written");
    assert!(seen.values().all(|n| *n == 1), "no key twice");
    println!("slowest SCAN COUNT 100 call: {worst:?}");
    assert!(worst < Duration::from_millis(100), "a page took {worst:?}");
}

/// A server whose open-file limit cannot cover `max_clients` lowers `max_clients` at start
/// (as Redis does) instead of failing to accept, or to open its own files, with EMFILE: 400
/// descriptors, 256 kept for the node, so 144 clients; the next one gets Redis's error and
/// the server goes on serving.
#[test]
fn max_clients_fits_the_open_file_limit() {
    let srv = Server::start_wrapped(&["prlimit", "--nofile=400:400", "--"], "");
    let mut c = srv.redis();
    let max: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxclients")
        .query(&mut c)
        .unwrap();
    assert_eq!(max[1], "144", "{max:?}");
    assert!(
        srv.log().contains("lowered it"),
        "a warning names the cause"
    );
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..200 {
        let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"PING\r\n").unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        if buf[..n].starts_with(b"-ERR max number of clients reached") {
            refused += 1;
        } else {
            assert_eq!(&buf[..n], b"+PONG\r\n");
            held.push(s);
        }
    }
    assert!(
        held.len() <= 144 && held.len() >= 140,
        "{} held",
        held.len()
    );
    assert_eq!(held.len() + refused, 200);
    drop(held);
    // Once the server has seen the closes, new clients are served again.
    let served = || {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", srv.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(b"PING\r\n");
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        buf[..n].starts_with(b"+PONG")
    };
    assert!(wait_for(Duration::from_secs(10), served).is_some());
}

/// `KEYS` with a pattern holds its matches, not the database: a node listed every key of
/// every layer at once and filtered afterwards, so `KEYS nomatch*` over 864k keys grew it
/// by 180 MiB (Redis's `KEYS` allocates only its reply). The listing now reads a page at a
/// time, of about 1 MiB of keys. 300k keys of 60 bytes in L1 and L3: the node grows by
/// less than 40 MiB while a selective `KEYS` runs (it grew by 80 MiB before), and `KEYS *`
/// still lists every key once; 12k keys of 8,000 bytes: less than 80 MiB, L3's caches
/// included (pages of 8,192 keys grew it by 94-134 MiB).
#[test]
fn a_selective_keys_holds_its_matches_not_the_database() {
    let s = Server::start("");
    let short = |i: usize| format!("a-rather-long-key-name-so-that-listings-weigh:{i:012}");
    let pattern = "a-rather-long-key-name-so-that-listings-weigh:00000000012*";
    selective_keys_within_bound(&s, 300_000, short, pattern, 40 * MIB);
    // L3 large enough to keep all 96 MB (the tests' 64 MiB would evict).
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(
        tmp.path(),
        "",
        &[("STRATA__L3__CAPACITY_BYTES", "536870912")],
    );
    let long = |i: usize| format!("{i:012}:{}", "k".repeat(8000));
    // 96 MB of keys, read through L3's memtables and block cache (budgets of their own)
    // on top of the listing's pages: 49-62 MiB measured, 94-134 MiB with pages of 8,192.
    selective_keys_within_bound(&s, 12_000, long, "00000000012*", 80 * MIB);
}

/// Writes `n` keys named by `name` (value `v`), then checks that a `KEYS pattern` matching
/// keys 120..130 answers them while the node grows by less than `bound` bytes, and that
/// `KEYS *` and `DBSIZE` count every key once.
fn selective_keys_within_bound(
    s: &Server,
    n: usize,
    name: impl Fn(usize) -> String,
    pattern: &str,
    bound: u64,
) {
    let mut c = s.raw();
    for round in 0..n / 1000 {
        let mut batch = Vec::new();
        for i in round * 1000..(round + 1) * 1000 {
            batch.extend_from_slice(&set_cmd(&name(i), b"v"));
        }
        pipeline(&mut c, &batch, 1000);
    }
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (found, grown) = peak_growth(s, || c.cmd(&[b"KEYS", pattern.as_bytes()]));
    let took = started.elapsed();
    let Frame::Array(found) = found else {
        panic!("KEYS answered {found:?}")
    };
    let mut found: Vec<Vec<u8>> = found
        .into_iter()
        .map(|f| match f {
            Frame::Bulk(b) => b.to_vec(),
            other => panic!("{other:?}"),
        })
        .collect();
    found.sort();
    let want: Vec<Vec<u8>> = (120..130).map(|i| name(i).into_bytes()).collect();
    assert_eq!(found, want, "KEYS with a pattern matching ten of {n} keys");
    println!(
        "KEYS over {n} keys: {took:?}, at most +{} MiB while it ran",
        grown / MIB
    );
    assert!(
        grown < bound,
        "a KEYS matching ten of {n} keys grew the node by {} MiB",
        grown / MIB
    );
    // Paged, the listing still finds every key once.
    let mut r = s.redis();
    let all: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut r).unwrap();
    let distinct: std::collections::HashSet<&Vec<u8>> = all.iter().collect();
    assert_eq!((all.len(), distinct.len()), (n, n), "KEYS * over {n} keys");
    assert_eq!(c.cmd(&[b"DBSIZE"]), Frame::Integer(n as i64));
    drop(all);
    // SCAN with the largest COUNT reads at most a few MiB of keys a call (COUNT is a hint):
    // still every key once, and no more memory than the KEYS above.
    let (scanned, grown) = peak_growth(s, || scan_all(&mut r, "*", 100_000));
    let distinct: std::collections::HashSet<&String> = scanned.iter().collect();
    assert_eq!(
        (scanned.len(), distinct.len()),
        (n, n),
        "SCAN COUNT 100000 over {n} keys"
    );
    println!(
        "SCAN COUNT 100000 over {n} keys: at most +{} MiB",
        grown / MIB
    );
    assert!(
        grown < bound,
        "SCAN COUNT 100000 over {n} keys grew the node by {} MiB",
        grown / MIB
    );
}

/// Runs `f` while sampling the server's RSS every 5 ms: what `f` returned, and the most the
/// RSS grew over what it was before.
fn peak_growth<T>(s: &Server, f: impl FnOnce() -> T) -> (T, u64) {
    let before = s.rss();
    let peak = PeakRss::start(s.pid());
    let out = f();
    (out, peak.stop().saturating_sub(before))
}

/// Values a script writes are held by the node until the script ends (its writes apply all
/// at once), outside every other bound: one script writing 900 values of 1 MiB grew a node
/// by 716 MiB (the Lua review grew one from 75 MB to 1.09 GB), and eight such scripts
/// at once multiplied it. All running scripts' values now count against one bound
/// (256 MiB); a script whose write would pass it is stopped with `OOM` and applies nothing,
/// and one within it runs as before.
#[test]
fn values_running_scripts_write_stay_within_their_bound() {
    let s = Server::start_l1_only("");
    let script: &[u8] = b"local v = string.rep('x', 1048576)
        for i = 1, #KEYS do redis.call('SET', KEYS[i], v) end
        return #KEYS";
    let eval = |c: &mut Raw, name: &str, n: usize| {
        let keys: Vec<Vec<u8>> = (0..n).map(|i| format!("{name}:{i}").into_bytes()).collect();
        let count = n.to_string();
        let mut args: Vec<&[u8]> = vec![b"EVAL", script, count.as_bytes()];
        args.extend(keys.iter().map(|k| &k[..]));
        c.cmd(&args)
    };
    let mut c = s.raw();
    c.stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // Within the bound: every value written.
    assert_eq!(eval(&mut c, "within", 192), Frame::Integer(192));
    let (reply, grown) = peak_growth(&s, || eval(&mut c, "past", 900));
    println!("a script writing 900 MiB: RSS +{} MiB", grown / MIB);
    let e = err_text(&reply);
    assert!(e.starts_with("OOM the scripts running"), "{e}");
    // Stopped: nothing it wrote was applied.
    for key in ["past:0", "past:200"] {
        assert_eq!(c.cmd(&[b"EXISTS", key.as_bytes()]), Frame::Integer(0));
    }
    assert!(
        grown < 400 * MIB,
        "RSS grew by {} MiB for scripts bounded to 256 MiB",
        grown / MIB
    );
    // The bound was given back: the script within it runs again.
    assert_eq!(eval(&mut c, "again", 192), Frame::Integer(192));
    assert!(ping_latency(s.port) < Duration::from_millis(50));
}

/// Sends one command of `head` followed by `args` without reading its replies.
fn send_cmd(c: &mut impl Write, head: &[&[u8]], args: &[Vec<u8>]) {
    let f = Frame::Array(
        head.iter()
            .map(|a| Frame::Bulk(a.to_vec().into()))
            .chain(args.iter().map(|a| Frame::Bulk(a.clone().into())))
            .collect(),
    );
    c.write_all(&f.to_bytes()).unwrap();
}

/// `CLIENT TRACKING ON BCAST` with 1,000 prefixes of 60 bytes (a client's bound), owned by
/// `owner`.
fn bcast_prefixes(owner: usize) -> Vec<Vec<u8>> {
    (0..1000)
        .flat_map(|i| {
            [
                b"PREFIX".to_vec(),
                format!("p{owner:03}:{i:04}:{}", "x".repeat(48)).into_bytes(),
            ]
        })
        .collect()
}

/// One client's patterns or BCAST prefixes take no other client's room. The node held at
/// most 10,000 distinct patterns and 10,000 BCAST prefixes: one client at its own bound of
/// subscriptions took every pattern, ten clients every prefix, and every other client's new
/// pattern or `BCAST` was refused. Now the node sets no bound of its own (Redis sets none),
/// and what they hold counts in the clients' budget, largest holder first.
#[test]
fn no_client_takes_another_clients_room_for_patterns_or_prefixes() {
    const BUDGET: u64 = 64 * MIB;
    let s = Server::start_l1_only(&format!("[server]\nmax_input_bytes_total = {BUDGET}\n"));
    let before = s.rss();
    let mut hog = Raw::connect(s.port);
    for batch in 0..10 {
        let patterns: Vec<Vec<u8>> = (0..1000)
            .map(|i| format!("hog:{}:*", batch * 1000 + i).into_bytes())
            .collect();
        send_cmd(&mut hog.stream, &[b"PSUBSCRIBE"], &patterns);
        for _ in 0..1000 {
            assert!(matches!(hog.frame(), Frame::Array(_)), "a psubscribe reply");
        }
    }
    let mut sub = Raw::connect(s.port);
    match sub.cmd(&[b"PSUBSCRIBE", b"news:*"]) {
        Frame::Array(v) => assert_eq!(v[2], Frame::Integer(1), "{v:?}"),
        other => panic!("another client's pattern was refused: {other:?}"),
    }
    let mut holders: Vec<Raw> = (0..10)
        .map(|owner| {
            let mut c = s.raw();
            assert!(matches!(c.cmd(&[b"HELLO", b"3"]), Frame::Map(_)));
            send_cmd(
                &mut c.stream,
                &[b"CLIENT", b"TRACKING", b"ON", b"BCAST"],
                &bcast_prefixes(owner),
            );
            assert_eq!(c.frame(), Frame::Simple("OK".into()));
            c
        })
        .collect();
    let mut late = s.raw();
    assert!(matches!(late.cmd(&[b"HELLO", b"3"]), Frame::Map(_)));
    assert_eq!(
        late.cmd(&[b"CLIENT", b"TRACKING", b"ON", b"BCAST", b"PREFIX", b"late:"]),
        Frame::Simple("OK".into()),
        "an eleventh client's BCAST"
    );
    let mut w = s.raw();
    let bystanders_hear = |w: &mut Raw, sub: &mut Raw, late: &mut Raw, n: u32| {
        let key = format!("late:{n}");
        assert_eq!(
            w.cmd(&[b"SET", key.as_bytes(), b"v"]),
            Frame::Simple("OK".into())
        );
        match late.frame() {
            Frame::Push(p) => assert_eq!(
                p[1],
                Frame::Array(vec![Frame::Bulk(key.clone().into_bytes().into())]),
                "{p:?}"
            ),
            other => panic!("{other:?}"),
        }
        let channel = format!("news:{n}");
        assert_eq!(
            w.cmd(&[b"PUBLISH", channel.as_bytes(), b"hi"]),
            Frame::Integer(1)
        );
        match sub.frame() {
            Frame::Array(v) => assert_eq!(v[2], Frame::Bulk(channel.into_bytes().into())),
            other => panic!("{other:?}"),
        }
    };
    bystanders_hear(&mut w, &mut sub, &mut late, 1);
    // A holder hears of writes under its prefixes, matched through the whole trie.
    let key = format!("p007:0123:{}tail", "x".repeat(48));
    assert_eq!(
        w.cmd(&[b"SET", key.as_bytes(), b"v"]),
        Frame::Simple("OK".into())
    );
    assert!(matches!(holders[7].frame(), Frame::Push(_)));
    let within = s.rss().saturating_sub(before);
    // Thirty more at their bound pass the budget: the largest holders go, the small stay.
    let mut more: Vec<TcpStream> = (10..40)
        .map(|owner| {
            let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
            send_cmd(&mut c, &[b"HELLO", b"3"], &[]);
            send_cmd(
                &mut c,
                &[b"CLIENT", b"TRACKING", b"ON", b"BCAST"],
                &bcast_prefixes(owner),
            );
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let held = metric_value(&s, "strata_server_client_input_bytes").unwrap();
    let grown = s.rss().saturating_sub(before);
    let closed = closed_by_budget(&mut more);
    println!(
        "10,000 patterns and 10 × 1,000 prefixes: RSS +{} MiB; 30 more prefix holders: RSS \
         +{} MiB, clients' memory {:.1} MiB, {closed} of the 30 closed",
        within / MIB,
        grown / MIB,
        held / MIB as f64
    );
    assert!(
        held <= (BUDGET + 8 * MIB) as f64,
        "clients hold {held} bytes against a {BUDGET}-byte budget"
    );
    assert!(closed >= 10, "{closed} of 30 closed past the budget");
    assert!(
        grown < BUDGET + 96 * MIB,
        "RSS grew by {} MiB past a 64 MiB clients' budget",
        grown / MIB
    );
    bystanders_hear(&mut w, &mut sub, &mut late, 2);
    assert!(ping_latency(s.port) < Duration::from_millis(50));
}

/// What a client swaps is charged what it holds. The clients' budget recounted a client's
/// subscriptions, BCAST prefixes and watched keys only when their number changed: a
/// transaction that swapped small ones for as many large ones kept the small figure (1,000
/// clients held 5,202 MiB of prefixes charged 67 MB, 40 held 3,481 MiB of channels charged
/// 199 MB). And a compiled pattern held 32 bytes per pattern byte, 13 times its charge: one
/// client's 10,000 patterns of 1 KiB held 350 MiB (review, 2026-12-06).
#[test]
fn what_a_client_swaps_or_compiles_is_charged_what_it_holds() {
    const BUDGET: u64 = 64 * MIB;
    let config = format!("[server]\nmax_input_bytes_total = {BUDGET}\n");
    let check = |what: &str, s: &Server, before: u64, conns: &mut Vec<TcpStream>| {
        std::thread::sleep(Duration::from_millis(500));
        let grown = s.rss().saturating_sub(before);
        let held = metric_value(s, "strata_server_client_input_bytes").unwrap();
        let closed = closed_by_budget(conns);
        println!(
            "{what}: RSS +{} MiB, clients' memory {:.1} MiB, {closed} of {} closed",
            grown / MIB,
            held / MIB as f64,
            conns.len()
        );
        assert!(
            grown < BUDGET + 96 * MIB,
            "{what}: RSS grew by {} MiB past a 64 MiB clients' budget",
            grown / MIB
        );
        assert!(closed > 0, "{what}: no client was closed");
        assert!(ping_latency(s.port) < Duration::from_millis(50));
    };
    let big = |i: usize, j: usize, len: usize| {
        let mut v = format!("{i}:{j}:").into_bytes();
        v.resize(len, b'x');
        v
    };

    // 1. BCAST prefixes: eight of one byte, swapped in a transaction for eight of 8 KiB.
    let s = Server::start_l1_only(&config);
    let before = s.rss();
    let small: Vec<Vec<u8>> = (b'a'..=b'h')
        .flat_map(|b| [b"PREFIX".to_vec(), vec![b]])
        .collect();
    let mut conns: Vec<TcpStream> = (0..40)
        .map(|i| {
            let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
            send_cmd(&mut c, &[b"HELLO", b"3"], &[]);
            send_cmd(&mut c, &[b"CLIENT", b"TRACKING", b"ON", b"BCAST"], &small);
            send_cmd(&mut c, &[b"MULTI"], &[]);
            send_cmd(&mut c, &[b"CLIENT", b"TRACKING", b"OFF"], &[]);
            let large: Vec<Vec<u8>> = (0..8)
                .flat_map(|j| [b"PREFIX".to_vec(), big(i, j, 8192)])
                .collect();
            send_cmd(&mut c, &[b"CLIENT", b"TRACKING", b"ON", b"BCAST"], &large);
            send_cmd(&mut c, &[b"EXEC"], &[]);
            c
        })
        .collect();
    check("40 clients' prefixes swapped", &s, before, &mut conns);
    drop(s);

    // 2. Channels: 1,000 short names swapped in a transaction for 1,000 of 8,000 bytes.
    let s = Server::start_l1_only(&config);
    let before = s.rss();
    let mut conns: Vec<TcpStream> = (0..10)
        .map(|i| {
            let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
            send_cmd(&mut c, &[b"HELLO", b"3"], &[]);
            let short: Vec<Vec<u8>> = (0..1000).map(|j| format!("{j}").into_bytes()).collect();
            send_cmd(&mut c, &[b"SUBSCRIBE"], &short);
            send_cmd(&mut c, &[b"MULTI"], &[]);
            send_cmd(&mut c, &[b"UNSUBSCRIBE"], &short);
            let long: Vec<Vec<u8>> = (0..1000).map(|j| big(i, j, 8000)).collect();
            send_cmd(&mut c, &[b"SUBSCRIBE"], &long);
            send_cmd(&mut c, &[b"EXEC"], &[]);
            c
        })
        .collect();
    check("10 clients' channels swapped", &s, before, &mut conns);
    drop(s);

    // 3. Patterns of 1 KiB, subscribed to plainly.
    let s = Server::start_l1_only(&config);
    let before = s.rss();
    let mut conns: Vec<TcpStream> = (0..2)
        .map(|i| {
            let mut c = Raw::connect(s.port);
            // Each batch's replies are read (they name the patterns: 1 MiB a batch), until
            // the budget closes the client.
            'batches: for batch in 0..10 {
                let patterns: Vec<Vec<u8>> = (0..1000)
                    .map(|j| {
                        let mut p = big(i, batch * 1000 + j, 1023);
                        p.push(b'*');
                        p
                    })
                    .collect();
                send_cmd(&mut c.stream, &[b"PSUBSCRIBE"], &patterns);
                for _ in 0..1000 {
                    match c.try_frame() {
                        Some(Frame::Array(_)) => {}
                        _ => break 'batches,
                    }
                }
            }
            c.stream
        })
        .collect();
    check(
        "2 clients' 10,000 patterns of 1 KiB",
        &s,
        before,
        &mut conns,
    );
}

/// What BCAST clients held is given back when they leave. The prefix trie reused its freed
/// nodes but never shrank: after 224 clients at their prefix bound left, a node kept 768
/// MiB (674 resident) charged to no one, and subscribers then filled the budget on top of
/// it (1,389 MiB of growth against a 1,024 MiB budget; review, 2026-12-06).
#[test]
fn what_bcast_clients_held_is_given_back_when_they_leave() {
    const BUDGET: u64 = 256 * MIB;
    let s = Server::start_l1_only(&format!("[server]\nmax_input_bytes_total = {BUDGET}\n"));
    let before = s.rss();
    let big = |i: usize, j: usize, len: usize| {
        let mut v = format!("{i}:{j}:").into_bytes();
        v.resize(len, b'x');
        v
    };
    // Clients at their bound of prefix bytes (eight of 8 KiB), until the budget closes some.
    let mut holders: Vec<TcpStream> = (0..60)
        .map(|i| {
            let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
            send_cmd(&mut c, &[b"HELLO", b"3"], &[]);
            let large: Vec<Vec<u8>> = (0..8)
                .flat_map(|j| [b"PREFIX".to_vec(), big(i, j, 8192)])
                .collect();
            send_cmd(&mut c, &[b"CLIENT", b"TRACKING", b"ON", b"BCAST"], &large);
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let peak = s.rss().saturating_sub(before);
    let closed = closed_by_budget(&mut holders);
    drop(holders);
    std::thread::sleep(Duration::from_millis(500));
    // Then subscribers fill the budget: channels of 8,000 bytes.
    let mut subs: Vec<TcpStream> = (0..40)
        .map(|i| {
            let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
            send_cmd(&mut c, &[b"HELLO", b"3"], &[]);
            let long: Vec<Vec<u8>> = (0..1000).map(|j| big(i, j, 8000)).collect();
            send_cmd(&mut c, &[b"SUBSCRIBE"], &long);
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let grown = s.rss().saturating_sub(before);
    let closed_subs = closed_by_budget(&mut subs);
    println!(
        "prefix holders: RSS +{} MiB, {closed} of 60 closed; then subscribers: RSS +{} MiB, \
         {closed_subs} of 40 closed",
        peak / MIB,
        grown / MIB
    );
    assert!(
        closed > 0 && closed_subs > 0,
        "the budget was reached both times"
    );
    assert!(
        grown < BUDGET + 96 * MIB,
        "RSS grew by {} MiB against a {} MiB clients' budget",
        grown / MIB,
        BUDGET / MIB
    );
}

/// A key listing's keys count in the clients' budget while it runs (review helper-119: six
/// `KEYS *` over a million keys took a node from 515 MiB to 2 GB that no budget saw, and
/// ran on after their clients had gone): past it the listing stops and answers `OOM`, the
/// client stays connected, and what it held is given back.
#[test]
fn key_listings_count_in_the_clients_budget() {
    let s = Server::start_l1_only(
        "[server]\nmax_input_bytes_total = 4194304\nmax_request_bytes = 1048576\n[limits]\nmax_value_bytes = 65536\n",
    );
    let mut c = s.raw();
    // 30,000 keys of 100 bytes: 4.4 MB listed with their handles, past the 4 MiB budget.
    let pad = "p".repeat(90);
    for round in 0..30 {
        let mut args: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
        for i in 0..1000 {
            args.push(format!("k{round:02}:{i:04}:{pad}").into_bytes());
            args.push(b"v".to_vec());
        }
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        assert_eq!(c.cmd(&args), Frame::Simple("OK".into()));
    }
    assert_eq!(c.cmd(&[b"DBSIZE"]), Frame::Integer(30_000));
    let Frame::Error(e) = c.cmd(&[b"KEYS", b"*"]) else {
        panic!("KEYS * over the budget was answered");
    };
    let e = String::from_utf8_lossy(&e);
    assert!(e.starts_with("OOM ") && e.contains("SCAN"), "{e}");
    // The same client lists what fits, and the budget is whole again.
    let Frame::Array(some) = c.cmd(&[b"KEYS", b"k01:*"]) else {
        panic!("KEYS k01:* refused");
    };
    assert_eq!(some.len(), 1000);
    let Frame::Bulk(info) = c.cmd(&[b"INFO", b"memory"]) else {
        panic!("INFO");
    };
    let info = String::from_utf8_lossy(&info);
    let held: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("strata_client_input_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("strata_client_input_bytes");
    assert!(held < 1024 * 1024, "the clients still hold {held} bytes");
}

/// Small messages queued for subscribers that never read are charged what they hold (review
/// helper-119: charged 64 bytes each beyond their names, they held twice that, and 40
/// subscribers took a node 1 GiB past a 512 MiB budget).
#[test]
fn small_messages_for_slow_subscribers_are_charged_what_they_hold() {
    let s = Server::start_l1_only("[server]\nmax_input_bytes_total = 67108864\n");
    let mut subs = Vec::new();
    for _ in 0..10 {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\nc\r\n")
            .unwrap();
        subs.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut publisher = Raw::connect(s.port);
    let one = b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nc\r\n$1\r\nx\r\n";
    // 6,000,000 messages queued at most (600,000 to each of 10; the first few MB of each
    // go to its socket's buffers): ~800 MB held in queues if nobody closed them.
    let ((), grown) = peak_growth(&s, || {
        for _ in 0..600 {
            pipeline(&mut publisher, &one.repeat(1000), 1000);
        }
        std::thread::sleep(Duration::from_millis(300));
    });
    println!(
        "10 subscribers not reading 600,000 small messages each: RSS +{} MiB",
        grown / MIB
    );
    assert!(
        grown < 64 * MIB + 24 * MIB,
        "RSS grew by {} MiB past a 64 MiB clients' budget",
        grown / MIB
    );
    assert!(metric_or_zero(&s, "strata_server_pubsub_limit_closed_total") >= 1.0);
    drop(subs);
}

/// A long command whose every item is answered from memory lets other clients be answered
/// while it runs. Tokio has one socket poller, held by a worker that went idle; the other
/// idle worker sleeps until two tasks are queued. A request arriving alone (here: its last
/// two bytes sent after a pause, so nothing else is in flight) was then run to its end by
/// the worker holding the poller, and a bystander's `PING` sat unread in the kernel as long
/// (review helper-121: `PSUBSCRIBE` of 10,000 patterns 60-116 ms, `EXISTS` of 300,000 keys
/// 275-296 ms in a debug build). Such commands now give the runtime a turn every 1,024
/// items, a subscriber of 10,000 patterns that leaves is unsubscribed off the workers, and
/// a pattern invalidation walks a large L1 off the workers (review helper-122: 755 ms).
#[test]
fn a_long_command_from_memory_leaves_other_clients_answered() {
    let s = Server::start_l1_only("");
    let mut c = s.raw();
    assert_eq!(c.cmd(&[b"SET", b"k", b"v"]), Frame::Simple("OK".into()));
    let numbered = |word: &str, prefix: &str, suffix: &str, n: usize| {
        let mut args = vec![word.as_bytes().to_vec()];
        args.extend((0..n).map(|i| format!("{prefix}{i}{suffix}").into_bytes()));
        encode_command(&args)
    };
    // 300,000 keys in L1 for a pattern invalidation to walk.
    for chunk in 0..300 {
        let mut mset = vec![b"MSET".to_vec()];
        for i in chunk * 1000..(chunk + 1) * 1000 {
            mset.push(format!("key:{i:06}:{}", "x".repeat(40)).into_bytes());
            mset.push(b"v".to_vec());
        }
        c.send(&encode_command(&mset));
        assert_eq!(c.frame(), Frame::Simple("OK".into()));
    }
    let mut exists = vec![b"EXISTS".to_vec()];
    exists.extend(std::iter::repeat_n(b"k".to_vec(), 300_000));
    let cases: [(&str, Vec<u8>, usize); 5] = [
        ("EXISTS of 300,000 keys", encode_command(&exists), 1),
        (
            "MGET of 100,000 keys",
            {
                exists[0] = b"MGET".to_vec();
                encode_command(&exists[..100_001])
            },
            1,
        ),
        (
            "STRATA.INVALIDATE.PATTERN matching none of 300,000 keys",
            encode_command(&[
                b"STRATA.INVALIDATE.PATTERN".to_vec(),
                b"*[^0-9v]nomatch*".to_vec(),
            ]),
            1,
        ),
        (
            "PSUBSCRIBE of 10,000 patterns",
            numbered("PSUBSCRIBE", "p", "*", 10_000),
            10_000,
        ),
        (
            "SUBSCRIBE of 10,000 channels",
            numbered("SUBSCRIBE", "c", "", 10_000),
            10_000,
        ),
    ];
    for (case, req, replies) in &cases {
        let mut waits = Vec::new();
        let mut tooks = Vec::new();
        let mut leaves = Vec::new();
        for _ in 0..5 {
            let mut long = s.raw();
            long.stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            let mut by = s.raw();
            assert_eq!(by.cmd(&[b"PING"]), Frame::Simple("PONG".into()));
            long.send(&req[..req.len() - 2]);
            std::thread::sleep(Duration::from_millis(300));
            let t = Instant::now();
            long.send(&req[req.len() - 2..]);
            std::thread::sleep(Duration::from_millis(5));
            let tb = Instant::now();
            assert_eq!(by.cmd(&[b"PING"]), Frame::Simple("PONG".into()));
            waits.push(tb.elapsed());
            for _ in 0..*replies {
                assert!(!matches!(long.frame(), Frame::Error(_)), "{case}");
            }
            tooks.push(t.elapsed());
            if *replies > 1 {
                // The subscriber leaves, alone again.
                std::thread::sleep(Duration::from_millis(300));
                drop(long);
                std::thread::sleep(Duration::from_millis(2));
                let tb = Instant::now();
                assert_eq!(by.cmd(&[b"PING"]), Frame::Simple("PONG".into()));
                leaves.push(tb.elapsed());
            }
        }
        waits.sort();
        tooks.sort();
        leaves.sort();
        println!(
            "{case}: took {tooks:?}; a PING meanwhile waited {waits:?}; after it left {leaves:?}"
        );
        let (wait, took) = (waits[2], tooks[2]);
        assert!(
            wait < took / 3,
            "{case}: a bystander's PING waited {wait:?} (median of 5) for a command of {took:?}"
        );
        if let Some(left) = leaves.get(2) {
            assert!(
                *left < took / 4,
                "{case}: a bystander's PING waited {left:?} (median of 5) as the subscriber left"
            );
        }
    }
}
