//! `strata import` from a real redis-server holding 100,000 keys into a real `strata serve`:
//! every matched string key arrives with its value and its TTL (±1 s), nothing else does; an
//! import killed midway resumes from its cursor file instead of starting over; a finished
//! one is not repeated; bad input is a clear error.
#![allow(clippy::unwrap_used)]

#[path = "../../crates/strata-redis/tests/common/mod.rs"]
mod redis_common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use redis::{Value, cmd};
use redis_common::RedisServer;
use strata_tests::{Server, strata_bin};

const MATCHED: usize = 60_000;
const OTHERS: usize = 30_000;
const HASHES: usize = 10_000;

/// 60,000 `app:N` strings (a third with a TTL of 1000–2000 s), 30,000 `other:N` strings and
/// 10,000 `app:hN` hashes.
fn populate(c: &mut redis::Connection) {
    for chunk in (0..MATCHED).collect::<Vec<_>>().chunks(5_000) {
        let mut p = redis::pipe();
        for &i in chunk {
            let c = p
                .cmd("SET")
                .arg(format!("app:{i}"))
                .arg(format!("value-{i}"));
            if i % 3 == 0 {
                c.arg("EX").arg(1_000 + i % 1_000);
            }
            p.ignore();
        }
        p.query::<()>(c).unwrap();
    }
    let mut p = redis::pipe();
    for i in 0..OTHERS {
        p.cmd("SET").arg(format!("other:{i}")).arg("x").ignore();
    }
    for i in 0..HASHES {
        p.cmd("HSET")
            .arg(format!("app:h{i}"))
            .arg("f")
            .arg("v")
            .ignore();
    }
    p.query::<()>(c).unwrap();
}

/// A redis-server to import from, its URL, and a connection to it.
fn source() -> (RedisServer, String, redis::Connection) {
    let redis = RedisServer::start();
    let from = format!("redis://{}", redis.address());
    let src = redis::Client::open(from.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    (redis, from, src)
}

fn import(args: &[&str]) -> Output {
    Command::new(strata_bin())
        .arg("import")
        .args(args)
        .output()
        .unwrap()
}

fn connect_ns(srv: &Server, ns: &str) -> redis::Connection {
    let mut c = srv.redis();
    let _: () = cmd("SELECT").arg(ns).query(&mut c).unwrap();
    c
}

fn state(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Every `app:N` of the source is in `ns` with its value and a TTL within 1 s of the
/// source's; no `other:N` and no `app:hN` is.
fn check_copy(src: &mut redis::Connection, dst: &mut redis::Connection) {
    let n: i64 = cmd("DBSIZE").query(dst).unwrap();
    assert_eq!(n, MATCHED as i64, "keys in the target namespace");
    let mut worst = i64::MIN;
    for chunk in (0..MATCHED).collect::<Vec<_>>().chunks(5_000) {
        let mut p = redis::pipe();
        for &i in chunk {
            p.cmd("GET").arg(format!("app:{i}"));
            p.cmd("PTTL").arg(format!("app:{i}"));
        }
        let read = std::time::Instant::now();
        let theirs: Vec<Value> = p.query(src).unwrap();
        let ours: Vec<Value> = p.query(dst).unwrap();
        // The two reads are this far apart at most: the TTLs moved by that much meanwhile.
        let apart = read.elapsed().as_millis() as i64;
        for (j, &i) in chunk.iter().enumerate() {
            assert_eq!(
                ours[2 * j],
                theirs[2 * j],
                "the value of app:{i} (source first)"
            );
            let (Value::Int(t), Value::Int(o)) = (&theirs[2 * j + 1], &ours[2 * j + 1]) else {
                panic!(
                    "PTTL of app:{i}: {:?} {:?}",
                    theirs[2 * j + 1],
                    ours[2 * j + 1]
                )
            };
            if i % 3 == 0 {
                assert!(*t > 0 && *o > 0, "app:{i} keeps a TTL: {t} {o}");
                worst = worst.max((t - o).abs() - apart);
            } else {
                assert_eq!((*t, *o), (-1, -1), "app:{i} has no TTL");
            }
        }
    }
    assert!(
        worst <= 1_000,
        "a TTL moved by {worst} ms more than the reads took"
    );
    let mut p = redis::pipe();
    for i in 0..OTHERS {
        p.cmd("EXISTS").arg(format!("other:{i}"));
    }
    for i in 0..HASHES {
        p.cmd("EXISTS").arg(format!("app:h{i}"));
    }
    let there: Vec<i64> = p.query(dst).unwrap();
    assert_eq!(
        there.iter().sum::<i64>(),
        0,
        "unmatched keys and hashes were copied"
    );
}

#[test]
fn an_import_copies_what_matches_with_its_ttl_and_resumes_after_kill_9() {
    let (_redis, from, mut src) = source();
    populate(&mut src);
    let srv = Server::start("");
    let dir = tempfile::tempdir().unwrap();

    // One go.
    let cursor = dir.path().join("whole.json");
    let (url, cursor_arg) = (srv.url(), cursor.to_str().unwrap());
    let whole = [
        "--from",
        &from,
        "--to",
        &url,
        "--namespace",
        "imported",
        "--match",
        "app:*",
        "--cursor-file",
        cursor_arg,
    ];
    let out = import(&whole);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "imported {MATCHED} keys into \"imported\" (20000 with a TTL)"
        )),
        "{stdout}"
    );
    check_copy(&mut src, &mut connect_ns(&srv, "imported"));
    let s = state(&cursor);
    assert_eq!(s["done"], true);
    // Done means done: running it again copies nothing.
    let again = import(&whole);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already finished"));

    // Killed midway (a slow rate so that it is), then resumed.
    let cursor = dir.path().join("resumed.json");
    let args = [
        "--from",
        &from,
        "--to",
        &srv.url(),
        "--namespace",
        "resumed",
        "--match",
        "app:*",
        "--cursor-file",
        cursor.to_str().unwrap(),
        "--quiet",
    ];
    let mut slow = Command::new(strata_bin())
        .arg("import")
        .args(args)
        .args(["--rate", "10000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(50));
        if cursor.exists() && state(&cursor)["copied"].as_u64().unwrap() >= 10_000 {
            break;
        }
    }
    slow.kill().unwrap();
    slow.wait().unwrap();
    let first = state(&cursor);
    let copied = first["copied"].as_u64().unwrap();
    let scanned = first["scanned"].as_u64().unwrap();
    assert_eq!(first["done"], false, "killed before the end: {first}");
    assert!(copied > 0 && copied < MATCHED as u64, "{first}");
    let partial: i64 = cmd("DBSIZE")
        .query(&mut connect_ns(&srv, "resumed"))
        .unwrap();
    assert!(
        partial >= copied as i64,
        "{partial} keys, {copied} recorded"
    );
    let out = import(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = state(&cursor);
    assert_eq!(last["done"], true);
    // Resumed, not started over: the scans together saw each key about once.
    assert!(
        last["scanned"].as_u64().unwrap() < MATCHED as u64 + scanned / 2,
        "first run {first}, in all {last}"
    );
    check_copy(&mut src, &mut connect_ns(&srv, "resumed"));

    // Bad input: a cursor file of another import, an unreachable source.
    let other = import(&[
        "--from",
        &from,
        "--to",
        &srv.url(),
        "--match",
        "other:*",
        "--cursor-file",
        cursor.to_str().unwrap(),
    ]);
    assert!(!other.status.success());
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("belongs to an import of \"app:*\""),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    let port = strata_tests::free_port();
    let down = import(&[
        "--from",
        &format!("redis://127.0.0.1:{port}"),
        "--to",
        &srv.url(),
    ]);
    assert!(!down.status.success());
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("connecting to the source"),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
}

/// A source behind a password: the password reaches neither the cursor file nor any
/// message; a cursor file is not reused for another namespace.
#[test]
fn credentials_stay_out_of_the_cursor_file_and_messages() {
    let redis = RedisServer::with_password("a-source-secret");
    let from = format!("redis://:a-source-secret@{}", redis.address());
    let mut src = redis::Client::open(from.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = cmd("SET").arg("app:1").arg("v").query(&mut src).unwrap();
    let srv = Server::start("");
    let dir = tempfile::tempdir().unwrap();
    let cursor = dir.path().join("c.json");
    let cursor_arg = cursor.to_str().unwrap();
    let out = import(&[
        "--from",
        &from,
        "--to",
        &srv.url(),
        "--cursor-file",
        cursor_arg,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved = std::fs::read_to_string(&cursor).unwrap();
    assert!(!saved.contains("a-source-secret"), "{saved}");
    assert!(saved.contains(&redis.address()), "{saved}");
    let other = import(&[
        "--from",
        &from,
        "--to",
        &srv.url(),
        "--namespace",
        "elsewhere",
        "--cursor-file",
        cursor_arg,
    ]);
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success());
    assert!(err.contains("belongs to an import"), "{err}");
    assert!(!err.contains("a-source-secret"), "{err}");
    let wrong = import(&[
        "--from",
        &format!("redis://:wrong-secret@{}", redis.address()),
        "--to",
        &srv.url(),
    ]);
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success());
    assert!(!err.contains("wrong-secret"), "{err}");
}

/// Values larger than one round of the import (64 MiB) arrive whole, in several rounds; a
/// value the node refuses (over `limits.max_value_bytes`, 16 MiB here) is named and counted,
/// and the import goes on.
#[test]
fn large_values_go_in_rounds_and_a_refused_one_is_named() {
    let (_redis, from, mut src) = source();
    let big = |i: usize| vec![b'a' + i as u8; 9 << 20];
    for i in 0..8 {
        let _: () = cmd("SET")
            .arg(format!("big:{i}"))
            .arg(big(i))
            .query(&mut src)
            .unwrap();
    }
    let _: () = cmd("SET")
        .arg("big:huge")
        .arg(vec![b'z'; 20 << 20])
        .query(&mut src)
        .unwrap();
    let srv = Server::start("");
    let out = import(&[
        "--from",
        &from,
        "--to",
        &srv.url(),
        "--namespace",
        "big",
        "--match",
        "big:*",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // The refusal is named, the rest arrives, and the exit status says something is missing.
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("imported 8 keys"), "{stdout}");
    assert!(stdout.contains("refused by the node 1"), "{stdout}");
    assert!(stderr.contains("key \"big:huge\" not copied"), "{stderr}");
    let mut dst = connect_ns(&srv, "big");
    for i in 0..8 {
        let v: Vec<u8> = cmd("GET").arg(format!("big:{i}")).query(&mut dst).unwrap();
        assert!(v == big(i), "big:{i} arrived whole");
    }
    let huge: Option<Vec<u8>> = cmd("GET").arg("big:huge").query(&mut dst).unwrap();
    assert!(huge.is_none());
}

/// `strata import --file` and `strata warm`: 20,000 JSON lines (a third with a TTL, some
/// keys and values as base64 bytes) arrive with their TTLs; a malformed line stops the import
/// with its line number and the keys before its batch imported, the cursor file pointing at
/// that batch; after the fix the rerun goes on from there. `warm` leaves the keys the node
/// already holds as they are.
#[test]
fn a_file_of_json_lines_imports_resumes_past_a_fix_and_warms() {
    use base64::Engine as _;
    use redis::Commands as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let srv = Server::start("");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.jsonl");
    let cursor = dir.path().join("cursor.json");
    let line = |i: usize| -> String {
        match i % 10 {
            0 => format!(
                "{{\"key_base64\":\"{}\",\"value_base64\":\"{}\"}}",
                b64(&[&[0u8, 255][..], &(i as u32).to_be_bytes()].concat()),
                b64(&[i as u8, 0, 254])
            ),
            n if n % 3 == 0 => format!(
                "{{\"key\":\"f:{i}\",\"value\":\"v{i}\",\"ttl_ms\":{}}}",
                1_000_000 + i
            ),
            _ => format!("{{\"key\":\"f:{i}\",\"value\":\"v{i}\"}}"),
        }
    };
    let mut lines: Vec<String> = (0..20_000).map(line).collect();
    // With a byte-order mark, as tools on Windows write one.
    lines.insert(
        0,
        "\u{feff}# exported from the seeds' factor tables".to_owned(),
    );
    lines[15_001] = "{\"key\": \"broken\", \"value\": }".to_owned();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let url = format!("redis://127.0.0.1:{}", srv.port);
    let args = [
        "--file",
        file.to_str().unwrap(),
        "--to",
        &url,
        "--namespace",
        "factors",
        "--batch",
        "1000",
        "--cursor-file",
        cursor.to_str().unwrap(),
        "--quiet",
    ];
    let out = import(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 15002"), "the line is named: {err}");
    let mut c = connect_ns(&srv, "factors");
    let saved = state(&cursor);
    assert_eq!(saved["done"], false);
    let n: i64 = cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 15_000, "the batches before it, and nothing of its own");
    // Fixed: the rerun starts at the batch that failed.
    lines[15_001] = line(15_000);
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = import(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("imported"), "{summary}");
    let copied_now = state(&cursor)["copied"].as_u64().unwrap();
    assert_eq!(copied_now, 20_000, "each line once over both runs");
    for i in [1usize, 3, 9_999, 15_001, 15_003, 19_999] {
        let v: Option<String> = c.get(format!("f:{i}")).unwrap();
        assert_eq!(v.as_deref(), Some(format!("v{i}").as_str()), "f:{i}");
        let ttl: i64 = c.pttl(format!("f:{i}")).unwrap();
        if i % 10 % 3 == 0 && i % 10 != 0 {
            let want = (1_000_000 + i) as i64;
            assert!((want - 5_000..=want).contains(&ttl), "f:{i} pttl {ttl}");
        } else {
            assert_eq!(ttl, -1, "f:{i}");
        }
    }
    let key20 = [&[0u8, 255][..], &20u32.to_be_bytes()].concat();
    let bytes: Vec<u8> = c.get(&key20[..]).unwrap();
    assert_eq!(bytes, vec![20u8, 0, 254], "base64 keys and values");

    // warm: existing keys stay, missing ones arrive.
    let _: () = c.set("f:1", "fresher").unwrap();
    let _: i64 = c.del("f:2").unwrap();
    let out = Command::new(strata_bin())
        .args(["warm", "--file", file.to_str().unwrap(), "--to", &url])
        .args(["--namespace", "factors", "--quiet"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("with 1 keys"),
        "only f:2 was missing: {summary}"
    );
    assert_eq!(c.get::<_, String>("f:1").unwrap(), "fresher");
    assert_eq!(c.get::<_, String>("f:2").unwrap(), "v2");
}

/// A cursor file names a file by path and offset: resumed into a file regenerated under
/// the same name, the import skipped the new file's first part and said it had imported
/// everything (review, 2026-12-05: 5,000 of 10,000 keys). The bytes before the cursor are
/// now checked against a hash the cursor keeps. And a pipe imports (`--file /dev/stdin`).
#[test]
fn a_file_changed_before_its_cursor_is_refused_and_a_pipe_imports() {
    let srv = Server::start("");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dump.jsonl");
    let cursor = dir.path().join("cursor.json");
    let write = |prefix: &str, broken_at: Option<usize>| {
        let lines: Vec<String> = (0..4_000)
            .map(|i| match broken_at {
                Some(b) if b == i => "{\"key\": \"broken\", \"value\": }".to_owned(),
                _ => format!("{{\"key\":\"{prefix}:{i:05}\",\"value\":\"v\"}}"),
            })
            .collect();
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    };
    let url = format!("redis://127.0.0.1:{}", srv.port);
    let args = [
        "--file",
        file.to_str().unwrap(),
        "--to",
        &url,
        "--namespace",
        "dump",
        "--batch",
        "500",
        "--cursor-file",
        cursor.to_str().unwrap(),
        "--quiet",
    ];
    write("old", Some(2_000));
    assert!(
        !import(&args).status.success(),
        "stopped at the broken line"
    );
    assert_eq!(state(&cursor)["scanned"], 2_000);
    // Regenerated: other keys, lines of the same length.
    write("new", None);
    let out = import(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "resumed into another file");
    assert!(err.contains("was the file changed"), "{err}");
    // Started over, every key arrives; then the same file again through a pipe.
    std::fs::remove_file(&cursor).unwrap();
    assert!(import(&args).status.success());
    let mut c = connect_ns(&srv, "dump");
    let n: i64 = cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 6_000, "2,000 old keys and 4,000 new ones");
    let _: () = cmd("FLUSHDB").query(&mut c).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cat {} | {} import --file /dev/stdin --to {url} --namespace dump --quiet",
            file.display(),
            strata_bin().display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: i64 = cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 4_000);
}
