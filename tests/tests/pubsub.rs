//! Pub/sub against real processes: the same conversation with redis-server and with
//! `strata serve` gives the same frames (RESP2 and RESP3); redis-py subscribers on one
//! member of a three-node cluster get, in order, what redis-py and redis-cli publish on
//! another; and a subscriber that stops reading is disconnected at its limit without holding
//! up the publisher or the server's memory.

#![allow(clippy::unwrap_used)]

#[path = "../../crates/strata-redis/tests/common/mod.rs"]
mod redis_common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis_common::RedisServer;
use strata_resp::Frame;
use strata_tests::*;

#[test]
fn pubsub_frames_are_redis_frames() {
    let redis = RedisServer::start();
    let strata = Server::start("");
    let steps: Vec<Step<'_>> = vec![
        (0, &[b"SUBSCRIBE", b"news", b"sport"], 2),
        (0, &[b"PSUBSCRIBE", b"n*", b"x?"], 2),
        // RESP2 subscribed mode: only (un)subscribing, PING, QUIT and RESET.
        (0, &[b"GET", b"k"], 1),
        (0, &[b"PING"], 1),
        (0, &[b"PING", b"hi"], 1),
        (1, &[b"PUBLISH", b"news", b"first"], 1),
        (0, &[b"PING"], 3),
        (1, &[b"PUBLISH", b"xy", b"second"], 1),
        (1, &[b"PUBLISH", b"nobody", b"third"], 1),
        (0, &[b"PING"], 3),
        // (One channel each: Redis lists channels in no particular order.)
        (1, &[b"PUBSUB", b"CHANNELS", b"s*"], 1),
        (1, &[b"PUBSUB", b"CHANNELS", b"n?ws"], 1),
        (1, &[b"PUBSUB", b"NUMSUB", b"news", b"none"], 1),
        (1, &[b"PUBSUB", b"NUMPAT"], 1),
        (1, &[b"PUBSUB", b"NOPE"], 1),
        (1, &[b"PUBSUB", b"NUMPAT", b"extra"], 1),
        (1, &[b"PUBSUB", b"CHANNELS", b"a", b"b"], 1),
        (0, &[b"UNSUBSCRIBE", b"news", b"never"], 2),
        (0, &[b"PUNSUBSCRIBE", b"x?"], 1),
        (0, &[b"UNSUBSCRIBE"], 1),
        (0, &[b"PUNSUBSCRIBE"], 1),
        (0, &[b"UNSUBSCRIBE"], 1),
        (0, &[b"GET", b"k"], 1),
        // RESP3: confirmations and messages are pushes, and other commands still work.
        (2, &[b"HELLO", b"3"], 1),
        (2, &[b"SUBSCRIBE", b"news"], 1),
        (2, &[b"GET", b"k"], 1),
        (1, &[b"PUBLISH", b"news", b"fourth"], 1),
        (2, &[b"PING"], 2),
        (2, &[b"UNSUBSCRIBE"], 1),
        (2, &[b"SUBSCRIBE"], 1),
        (1, &[b"PUBLISH"], 1),
        // Sharded pub/sub: shard channels are their own set, with their own count.
        (0, &[b"SSUBSCRIBE", b"orders", b"stock"], 2),
        (0, &[b"GET", b"k"], 1),
        (0, &[b"SUBSCRIBE", b"news"], 1),
        (1, &[b"SPUBLISH", b"orders", b"o1"], 1),
        (1, &[b"PUBLISH", b"orders", b"not-sharded"], 1),
        (1, &[b"SPUBLISH", b"news", b"not-a-shard-channel"], 1),
        (0, &[b"PING"], 2),
        // (One channel each: Redis lists them in no particular order.)
        (1, &[b"PUBSUB", b"SHARDCHANNELS", b"s*"], 1),
        (1, &[b"PUBSUB", b"SHARDCHANNELS", b"o*"], 1),
        (1, &[b"PUBSUB", b"SHARDNUMSUB", b"orders", b"none"], 1),
        (1, &[b"PUBSUB", b"NUMSUB", b"orders"], 1),
        (1, &[b"PUBSUB", b"SHARDCHANNELS", b"a", b"b"], 1),
        (0, &[b"SUNSUBSCRIBE", b"stock", b"never"], 2),
        (0, &[b"UNSUBSCRIBE"], 1),
        (0, &[b"PING"], 1),
        (0, &[b"SUNSUBSCRIBE"], 1),
        (0, &[b"SUNSUBSCRIBE"], 1),
        (0, &[b"GET", b"k"], 1),
        (2, &[b"SSUBSCRIBE", b"orders"], 1),
        (1, &[b"SPUBLISH", b"orders", b"o2"], 1),
        (2, &[b"PING"], 2),
        (2, &[b"SUNSUBSCRIBE"], 1),
        (1, &[b"SPUBLISH"], 1),
    ];
    let want = converse(redis.port, 3, &steps);
    let got = converse(strata.port, 3, &steps);
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        // Messages published before a PING reach the subscriber before its reply, on both.
        assert_eq!(g, w, "frame {i}: strata {g:?}, redis-server {w:?}");
    }
    assert_eq!(got.len(), want.len());
}

/// redis-py's `pubsub()` on node 1 of a three-node cluster, with a channel and a pattern;
/// 500 messages published through node 3 by redis-py and 5 by redis-cli arrive in order.
const SUBSCRIBER: &str = r#"
import sys, time, redis
port, expect = int(sys.argv[1]), int(sys.argv[2])
r = redis.Redis(port=port)
p = r.pubsub()
p.subscribe("orders")
p.psubscribe("audit.*")
deadline = time.time() + 5
while time.time() < deadline:
    m = p.get_message(timeout=0.2)
    if m and m["type"] == "psubscribe":
        break
print("ready", flush=True)
seen, audit = [], 0
deadline = time.time() + 30
while len(seen) + audit < expect and time.time() < deadline:
    m = p.get_message(timeout=1.0)
    if m is None:
        continue
    if m["type"] == "message":
        seen.append(int(m["data"]))
    elif m["type"] == "pmessage":
        assert m["pattern"] == b"audit.*", m
        audit += 1
assert seen == sorted(seen) and len(seen) == len(set(seen)), "out of order or twice"
print(len(seen), audit, flush=True)
"#;

const PUBLISHER: &str = r#"
import sys, redis
r = redis.Redis(port=int(sys.argv[1]))
for i in range(500):
    r.publish("orders", str(i))
"#;

#[test]
fn redis_py_subscribers_get_in_order_what_another_member_publishes() {
    let (nodes, _dirs) = three_nodes("");
    let mut sub = Command::new("python3")
        .args(["-c", SUBSCRIBER, &nodes[0].port.to_string(), "505"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(sub.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    // Through the subscriber's own node, PUBSUB sees it.
    let mut c = nodes[0].raw();
    assert_eq!(
        c.cmd(&[b"PUBSUB", b"NUMSUB", b"orders"]),
        Frame::Array(vec![Frame::Bulk("orders".into()), Frame::Integer(1)])
    );
    let status = Command::new("python3")
        .args(["-c", PUBLISHER, &nodes[2].port.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for i in 0..5 {
        // A member's PUBLISH counts its own subscribers, as a Redis Cluster node does.
        assert_eq!(
            nodes[2].cli(&["publish", &format!("audit.{i}"), "x"]),
            "0\n"
        );
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let done = sub.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "redis-py subscriber: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(rest.trim(), "500 5", "messages received (orders, audit)");
}

/// A subscriber that never reads is closed once 1 MiB of messages waits for it: the
/// publisher is never held up, another subscriber gets everything, and the server's memory
/// does not grow by what was published.
#[test]
fn a_subscriber_that_stops_reading_is_closed_at_its_limit() {
    let s = Server::start("[server]\npubsub_output_buffer_limit_bytes = 1048576\n");
    let rss = || s.rss();
    let mut stuck = s.raw();
    assert!(matches!(
        stuck.cmd(&[b"SUBSCRIBE", b"firehose"]),
        Frame::Array(_)
    ));
    let mut reader = s.raw();
    assert!(matches!(
        reader.cmd(&[b"SUBSCRIBE", b"firehose"]),
        Frame::Array(_)
    ));
    let before = rss();
    let mut publisher = s.raw();
    let payload = vec![b'p'; 64 * 1024];
    let mut slowest = Duration::ZERO;
    let mut received = 0;
    for _ in 0..300 {
        let t = Instant::now();
        let n = publisher.cmd(&[b"PUBLISH", b"firehose", &payload]);
        slowest = slowest.max(t.elapsed());
        assert!(matches!(n, Frame::Integer(1 | 2)), "{n:?}");
        // The reading subscriber keeps up.
        match reader.frame() {
            Frame::Array(parts) if parts.len() == 3 => received += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(received, 300);
    let grown = rss().saturating_sub(before);
    println!(
        "300 × 64 KiB published: slowest PUBLISH {slowest:?}, RSS +{} MiB",
        grown >> 20
    );
    assert!(
        slowest < Duration::from_secs(1),
        "PUBLISH waited {slowest:?}"
    );
    // 19 MiB were published; the stuck subscriber may hold its 1 MiB and socket buffers.
    assert!(grown < 12 << 20, "RSS grew by {} MiB", grown >> 20);
    assert!(
        wait_for(Duration::from_secs(10), || metric_or_zero(
            &s,
            "strata_server_pubsub_limit_closed_total"
        ) >= 1.0)
        .is_some(),
        "the stuck subscriber was not closed"
    );
    // What the stuck subscriber can still read ends with the connection closing.
    let mut chunk = vec![0u8; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(10);
    let closed = loop {
        match std::io::Read::read(&mut stuck.stream, &mut chunk) {
            Ok(0) => break true,
            Ok(_) if Instant::now() < deadline => {}
            _ => break false,
        }
    };
    assert!(closed, "the stuck subscriber's connection is still open");
    assert_eq!(
        publisher.cmd(&[b"PUBSUB", b"NUMSUB", b"firehose"]),
        Frame::Array(vec![Frame::Bulk("firehose".into()), Frame::Integer(1)])
    );
}

/// A message larger than the limit, to an idle subscriber with an empty queue, closes it
/// too (no flush is in progress to notice); a plain `SET` in RESP2 subscribed mode is
/// refused like any other command; and once the unsubscribe confirmation says 0, no message
/// follows it, however fast messages arrive meanwhile.
#[test]
fn subscribed_mode_edges_hold_under_a_stream_of_messages() {
    let s = Server::start("[server]\npubsub_output_buffer_limit_bytes = 1048576\n");
    let mut idle = s.raw();
    assert!(matches!(idle.cmd(&[b"SUBSCRIBE", b"big"]), Frame::Array(_)));
    let e = idle.cmd(&[b"SET", b"k", b"v"]);
    assert!(err_text(&e).starts_with("ERR Can't execute 'set'"), "{e:?}");
    let mut publisher = s.raw();
    publisher.cmd(&[b"PUBLISH", b"big", &vec![b'x'; 2 << 20]]);
    let closed = wait_for(Duration::from_secs(5), || {
        metric_or_zero(&s, "strata_server_pubsub_limit_closed_total") >= 1.0
    });
    assert!(
        closed.is_some(),
        "an idle subscriber over its limit was not closed"
    );

    // A stream of messages, and an UNSUBSCRIBE in the middle of it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let (port, stop) = (s.port, stop.clone());
        std::thread::spawn(move || {
            let mut p = Raw::connect(port);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                p.cmd(&[b"PUBLISH", b"stream", b"m"]);
            }
        })
    };
    for round in 0..20 {
        let mut sub = s.raw();
        assert!(matches!(
            sub.cmd(&[b"SUBSCRIBE", b"stream"]),
            Frame::Array(_)
        ));
        // Some messages arrive…
        for _ in 0..10 {
            match sub.frame() {
                Frame::Array(p) if p.len() == 3 => {}
                other => panic!("round {round}: {other:?}"),
            }
        }
        sub.send(&Frame::Array(vec![Frame::Bulk("UNSUBSCRIBE".into())]).to_bytes());
        // … then, whatever came before it, the confirmation, and nothing after it.
        loop {
            match sub.frame() {
                Frame::Array(p) if p[0] == Frame::Bulk("unsubscribe".into()) => {
                    assert_eq!(p[2], Frame::Integer(0));
                    break;
                }
                Frame::Array(p) if p[0] == Frame::Bulk("message".into()) => {}
                other => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(
            sub.cmd(&[b"PING"]),
            Frame::Simple("PONG".into()),
            "round {round}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flood.join().unwrap();
}

/// Channels are not namespaced, so a user confined to some namespaces gets none (as a Redis
/// 7 user without `&channel` rules); an unrestricted user subscribes and publishes.
#[test]
fn users_confined_to_namespaces_get_no_channels() {
    let digest = |p: &str| -> String {
        strata_server::acl::digest(p.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let s = Server::start(&format!(
        "[server]\nrequirepass = \"root\"\n\
         [server.users.app]\npassword_sha256 = [\"{}\"]\nnamespaces = [\"app-*\"]\npermission = \"readwrite\"\n",
        digest("app pw")
    ));
    let mut app = s.raw();
    assert_eq!(
        app.cmd(&[b"AUTH", b"app", b"app pw"]),
        Frame::Simple("OK".into())
    );
    for cmd in [
        &[&b"SUBSCRIBE"[..], b"app-news"][..],
        &[b"PSUBSCRIBE", b"*"],
        &[b"PUBLISH", b"app-news", b"x"],
        &[b"PUBSUB", b"CHANNELS"],
    ] {
        let e = app.cmd(cmd);
        assert!(err_text(&e).starts_with("NOPERM"), "{cmd:?}: {e:?}");
    }
    let mut root = s.raw();
    assert_eq!(root.cmd(&[b"AUTH", b"root"]), Frame::Simple("OK".into()));
    assert!(matches!(
        root.cmd(&[b"SUBSCRIBE", b"app-news"]),
        Frame::Array(_)
    ));
}

/// Sharded pub/sub across the cluster: a RESP3 client's `SSUBSCRIBE` on node 1 gets, in
/// order, what `SPUBLISH` sends to its shard channel through node 3 (and nothing published
/// with `PUBLISH` to a channel of the same name).
#[test]
fn shard_channel_messages_reach_subscribers_on_another_member() {
    let (nodes, _dirs) = three_nodes("");
    let mut sub = nodes[0].raw();
    sub.cmd(&[b"HELLO", b"3"]);
    assert!(matches!(
        sub.cmd(&[b"SSUBSCRIBE", b"orders"]),
        Frame::Push(_)
    ));
    let mut publisher = nodes[2].raw();
    for i in 0..100 {
        publisher.cmd(&[b"PUBLISH", b"orders", b"plain"]);
        publisher.cmd(&[b"SPUBLISH", b"orders", format!("{i}").as_bytes()]);
    }
    for i in 0..100 {
        assert_eq!(
            sub.frame(),
            Frame::Push(vec![
                Frame::Bulk("smessage".into()),
                Frame::Bulk("orders".into()),
                Frame::Bulk(format!("{i}").into()),
            ])
        );
    }
    assert_eq!(sub.cmd(&[b"PING"]), Frame::Simple("PONG".into()));
}

/// Each `PUBLISH` matches its channel against every pattern subscribed to, and patterns can
/// be built to be slow (`*aaa…ab` against a long channel of `a`s; Redis spends as long, and
/// stops the whole server meanwhile). A review's 1,000 such patterns made one `PUBLISH` take
/// 17 s, and every other client of the node waited with it: the publisher held the
/// subscription table's lock while it matched, a `SUBSCRIBE` waited for that lock on a
/// runtime thread, and every connection on the two threads stopped. Now a `PUBLISH` matches
/// outside the lock, on a thread the runtime gives up for it: a bystander's `SUBSCRIBE`,
/// `PING` and `SET` answer while it runs.
#[test]
fn a_slow_pattern_match_holds_up_its_publisher_only() {
    let s = Server::start("");
    let pattern = format!("*{}b", "a".repeat(1000));
    let channel = "a".repeat(8192);
    let mut sub = s.raw();
    let mut held = 0usize;
    let mut publisher = s.raw();
    // As many patterns as make one `PUBLISH` take at least 1.5 s on this build and machine.
    let mut want = 8usize;
    let took = loop {
        while held < want {
            let p = format!("{pattern}{held}");
            assert!(matches!(
                sub.cmd(&[b"PSUBSCRIBE", p.as_bytes()]),
                Frame::Array(_)
            ));
            held += 1;
        }
        let t = Instant::now();
        assert_eq!(
            publisher.cmd(&[b"PUBLISH", channel.as_bytes(), b"x"]),
            Frame::Integer(0)
        );
        let took = t.elapsed();
        if took >= Duration::from_millis(1500) || held >= 5000 {
            break took;
        }
        let scale = 2000.0 / took.as_millis().max(1) as f64;
        want = ((held as f64 * scale) as usize).clamp(held + 1, 5000);
    };
    assert!(
        took >= Duration::from_millis(1500),
        "{held} patterns: {took:?}"
    );
    let slow = {
        let (port, channel) = (s.port, channel.clone());
        std::thread::spawn(move || {
            let mut p = Raw::connect(port);
            p.stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            let t = Instant::now();
            let f = p.cmd(&[b"PUBLISH", channel.as_bytes(), b"x"]);
            (f, t.elapsed())
        })
    };
    std::thread::sleep(took / 5);
    let mut worst = Duration::ZERO;
    for i in 0..4 {
        let t = Instant::now();
        let mut by = s.raw();
        assert!(matches!(
            by.cmd(&[b"SUBSCRIBE", format!("news{i}").as_bytes()]),
            Frame::Array(_)
        ));
        let mut other = s.raw();
        assert_eq!(other.cmd(&[b"PING"]), Frame::Simple("PONG".into()));
        assert_eq!(
            other.cmd(&[b"SET", b"bystander", b"1"]),
            Frame::Simple("OK".into())
        );
        worst = worst.max(t.elapsed());
    }
    let (f, slow_took) = slow.join().unwrap();
    assert_eq!(f, Frame::Integer(0));
    assert!(
        worst < took / 3,
        "a bystander waited {worst:?} while a PUBLISH matched {held} patterns for {slow_took:?}"
    );
    // The patterns still match: one more that does gets the message.
    assert!(matches!(sub.cmd(&[b"PSUBSCRIBE", b"a*"]), Frame::Array(_)));
    assert_eq!(
        publisher.cmd(&[b"PUBLISH", channel.as_bytes(), b"y"]),
        Frame::Integer(1)
    );
    match sub.frame() {
        Frame::Array(m) => assert_eq!(m[0], Frame::Bulk("pmessage".into())),
        other => panic!("{other:?}"),
    }
}

/// A client with thousands of subscriptions gives them up in turns (`RESET`) or off the
/// runtime's workers (when it leaves), yet what others see is as if at once: after `RESET`
/// nothing of it is left and it subscribes afresh from zero; once it has left, a `PUBLISH`
/// counts it no more, even while its names are still leaving the table.
#[test]
fn many_subscriptions_end_whole_on_reset_and_on_leaving() {
    let s = Server::start("");
    let channels: Vec<Vec<u8>> = (0..3000).map(|i| format!("c{i}").into_bytes()).collect();
    let patterns: Vec<Vec<u8>> = (0..3000).map(|i| format!("p{i}*").into_bytes()).collect();
    let subscribe = |c: &mut Raw| {
        for (word, names) in [("SUBSCRIBE", &channels), ("PSUBSCRIBE", &patterns)] {
            let mut args: Vec<&[u8]> = vec![word.as_bytes()];
            args.extend(names.iter().map(Vec::as_slice));
            c.send(&encode_command(&args));
            for _ in 0..names.len() {
                assert!(matches!(c.frame(), Frame::Array(_)));
            }
        }
    };
    let mut sub = s.raw();
    let mut other = s.raw();
    subscribe(&mut sub);
    assert_eq!(other.cmd(&[b"PUBLISH", b"c2999", b"x"]), Frame::Integer(1));
    assert!(matches!(sub.frame(), Frame::Array(_)));
    assert_eq!(sub.cmd(&[b"RESET"]), Frame::Simple("RESET".into()));
    assert_eq!(other.cmd(&[b"PUBSUB", b"NUMPAT"]), Frame::Integer(0));
    assert_eq!(
        other.cmd(&[b"PUBSUB", b"NUMSUB", b"c0", b"c2999"]),
        Frame::Array(vec![
            Frame::Bulk("c0".into()),
            Frame::Integer(0),
            Frame::Bulk("c2999".into()),
            Frame::Integer(0),
        ])
    );
    // Subscribed afresh: its count starts from one.
    match sub.cmd(&[b"SUBSCRIBE", b"c0"]) {
        Frame::Array(f) => assert_eq!(f[2], Frame::Integer(1)),
        f => panic!("{f:?}"),
    }
    match sub.cmd(&[b"UNSUBSCRIBE"]) {
        Frame::Array(f) => assert_eq!(f[2], Frame::Integer(0)),
        f => panic!("{f:?}"),
    }
    assert_eq!(sub.cmd(&[b"RESET"]), Frame::Simple("RESET".into()));

    // Leaving: once the node has seen the connection close, a PUBLISH reaches nobody.
    subscribe(&mut sub);
    drop(sub);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let f = other.cmd(&[b"PUBLISH", b"p5xyz", b"x"]);
        if f == Frame::Integer(0) {
            break;
        }
        assert_eq!(f, Frame::Integer(1));
        assert!(
            Instant::now() < deadline,
            "still delivered to a client that left"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // And its names leave the table soon after.
    let deadline = Instant::now() + Duration::from_secs(10);
    while other.cmd(&[b"PUBSUB", b"NUMPAT"]) != Frame::Integer(0) {
        assert!(Instant::now() < deadline, "patterns of a client that left");
        std::thread::sleep(Duration::from_millis(20));
    }
}
