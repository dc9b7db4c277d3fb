//! `SLOWLOG` against the oracle: the same commands sent to a real redis-server and to a real
//! `strata serve`, through redis-rs, log the same entries (arguments cut and redacted as
//! Redis cuts and redacts them, the client's name and address) and answer the same errors;
//! the two settings behave alike through `CONFIG SET`.
#![allow(clippy::unwrap_used)]

#[path = "../../crates/strata-redis/tests/common/mod.rs"]
mod redis_common;

use redis::{Value, cmd};
use redis_common::RedisServer;
use strata_tests::Server;

/// One entry, without what differs by nature between two servers (id, time, duration).
#[derive(Debug, PartialEq)]
struct Logged {
    args: Vec<String>,
    addr_is_the_client: bool,
    name: String,
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn entries(c: &mut redis::Connection, count: &str, client_port: u16) -> Vec<Logged> {
    let v: Value = cmd("SLOWLOG").arg("GET").arg(count).query(c).unwrap();
    let Value::Array(items) = v else {
        panic!("SLOWLOG GET answered {v:?}")
    };
    items
        .into_iter()
        .map(|e| {
            let Value::Array(f) = e else {
                panic!("an entry is {e:?}")
            };
            assert_eq!(f.len(), 6, "id, time, duration, args, addr, name: {f:?}");
            for n in &f[..3] {
                assert!(matches!(n, Value::Int(x) if *x >= 0), "{f:?}");
            }
            let Value::Array(args) = &f[3] else {
                panic!("arguments are {:?}", f[3])
            };
            Logged {
                args: args.iter().map(text).collect(),
                addr_is_the_client: text(&f[4]) == format!("127.0.0.1:{client_port}"),
                name: text(&f[5]),
            }
        })
        .collect()
}

/// A command from its words.
fn command(args: &[&str]) -> redis::Cmd {
    let mut k = cmd(args[0]);
    for a in &args[1..] {
        k.arg(*a);
    }
    k
}

fn err(r: redis::RedisResult<Value>) -> String {
    match r {
        Err(e) => e.to_string(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

/// What one server logs and answers for the sequence.
#[derive(Debug, PartialEq)]
struct Seen {
    logged: Vec<Logged>,
    errors: Vec<String>,
    config: Vec<String>,
    len_after_max_len: i64,
    len_with_a_high_threshold: i64,
    times_increase: bool,
}

fn sequence(url: &str) -> Seen {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let port: u16 = {
        let v: String = cmd("CLIENT").arg("INFO").query(&mut c).unwrap();
        let addr = v
            .split(' ')
            .find_map(|f| f.strip_prefix("addr="))
            .unwrap()
            .to_owned();
        addr.rsplit(':').next().unwrap().parse().unwrap()
    };
    let ok = |c: &mut redis::Connection, args: &[&str]| {
        let _: Value = command(args).query(c).unwrap();
    };
    ok(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    ok(&mut c, &["CONFIG", "SET", "slowlog-max-len", "128"]);
    ok(&mut c, &["SLOWLOG", "RESET"]);
    ok(&mut c, &["CLIENT", "SETNAME", "tester"]);
    let long = "x".repeat(200);
    ok(&mut c, &["SET", "{s}k", &long]);
    let mut many = vec!["EXISTS".to_owned()];
    many.extend((1..=34).map(|i| format!("{{s}}a{i}")));
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    ok(&mut c, &many);
    // A failed AUTH is logged, its secrets redacted.
    let _ = cmd("AUTH")
        .arg("nobody")
        .arg("secret")
        .query::<Value>(&mut c);
    let _ = cmd("HELLO")
        .arg("2")
        .arg("AUTH")
        .arg("nobody")
        .arg("secret")
        .query::<Value>(&mut c);
    // CONFIG SET requirepass's value is redacted (set to what it was: none).
    ok(&mut c, &["CONFIG", "SET", "requirepass", ""]);
    ok(&mut c, &["GET", "{s}k"]);
    let logged = entries(&mut c, "-1", port);

    let mut errors = Vec::new();
    for args in [
        &["SLOWLOG", "GET", "-2"][..],
        &["SLOWLOG", "GET", "abc"],
        &["SLOWLOG", "GET", "1", "2"],
        &["SLOWLOG", "LEN", "x"],
        &["SLOWLOG", "RESET", "x"],
        &["SLOWLOG", "HELP", "x"],
        &["SLOWLOG", "get", "1", "2"],
        &["SLOWLOG", "NOPE"],
        &["SLOWLOG"],
        &["CONFIG", "SET", "slowlog-max-len", "-1"],
        &["CONFIG", "SET", "slowlog-log-slower-than", "-2"],
        &["CONFIG", "SET", "slowlog-max-len", "abc"],
    ] {
        errors.push(err(command(args).query(&mut c)));
    }
    let help: Vec<String> = cmd("SLOWLOG").arg("HELP").query(&mut c).unwrap();
    errors.push(help.join("\n"));

    ok(&mut c, &["CONFIG", "SET", "slowlog-max-len", "2"]);
    let flat: Vec<String> = cmd("CONFIG")
        .arg("GET")
        .arg("slowlog*")
        .query(&mut c)
        .unwrap();
    // Pairs, in name order (the two servers list them in different orders).
    let mut config: Vec<String> = flat.chunks(2).map(|p| p.join("=")).collect();
    config.sort();
    for _ in 0..5 {
        ok(&mut c, &["PING"]);
    }
    let len_after_max_len: i64 = cmd("SLOWLOG").arg("LEN").query(&mut c).unwrap();
    ok(&mut c, &["CONFIG", "SET", "slowlog-max-len", "128"]);
    ok(
        &mut c,
        &["CONFIG", "SET", "slowlog-log-slower-than", "10000000"],
    );
    ok(&mut c, &["SLOWLOG", "RESET"]);
    ok(&mut c, &["GET", "{s}k"]);
    let len_with_a_high_threshold: i64 = cmd("SLOWLOG").arg("LEN").query(&mut c).unwrap();

    // Ids grow, newest first.
    ok(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    ok(&mut c, &["PING"]);
    let v: Value = cmd("SLOWLOG").arg("GET").arg("2").query(&mut c).unwrap();
    let Value::Array(two) = v else { panic!() };
    let id = |e: &Value| match e {
        Value::Array(f) => match f[0] {
            Value::Int(i) => i,
            _ => panic!(),
        },
        _ => panic!(),
    };
    let times_increase = id(&two[0]) > id(&two[1]);
    Seen {
        logged,
        errors,
        config,
        len_after_max_len,
        len_with_a_high_threshold,
        times_increase,
    }
}

#[test]
fn slowlog_logs_and_answers_as_redis_does() {
    let redis = RedisServer::start();
    let srv = Server::start("");
    let want = sequence(&format!("redis://{}", redis.address()));
    let got = sequence(&srv.url());
    // The oracle first: the test checks what it thinks Redis does.
    assert_eq!(want.logged.len(), 8, "{:#?}", want.logged);
    assert_eq!(
        want.logged[1].args[3], "(redacted)",
        "CONFIG SET requirepass"
    );
    assert_eq!(want.logged[2].args[3], "(redacted)", "HELLO AUTH");
    assert!(want.logged.iter().all(|e| e.addr_is_the_client));
    for (i, (w, g)) in want.logged.iter().zip(&got.logged).enumerate() {
        assert_eq!(w, g, "entry {i}");
    }
    assert_eq!(want.logged.len(), got.logged.len());
    for (w, g) in want.errors.iter().zip(&got.errors) {
        assert_eq!(w, g);
    }
    assert_eq!(want, got);
}

/// What one server's latency monitor shows after a slow command.
#[derive(Debug, PartialEq)]
struct Latency {
    events: Vec<String>,
    sane: bool,
    history_len_positive: bool,
    unknown_history: Value,
    reset_all: i64,
    latest_after_reset: Value,
    reset_named: i64,
    errors: Vec<String>,
    config: Vec<String>,
}

fn latency_sequence(url: &str) -> Latency {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let _: () = cmd("CONFIG")
        .arg("SET")
        .arg("latency-monitor-threshold")
        .arg("1")
        .query(&mut c)
        .unwrap();
    let _: i64 = cmd("LATENCY").arg("RESET").query(&mut c).unwrap();
    // A command slow on both: a Lua loop of a few million steps (tens of milliseconds).
    let n: i64 = cmd("EVAL")
        .arg("local i = 0 while i < 3000000 do i = i + 1 end return i")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 3_000_000);
    let latest: Vec<(String, i64, i64, i64)> = cmd("LATENCY").arg("LATEST").query(&mut c).unwrap();
    let events = latest.iter().map(|e| e.0.clone()).collect();
    let sane = latest
        .iter()
        .all(|(_, at, ms, max)| *at > 1_700_000_000 && *ms >= 1 && max >= ms);
    let history: Vec<(i64, i64)> = cmd("LATENCY")
        .arg("HISTORY")
        .arg("command")
        .query(&mut c)
        .unwrap();
    let unknown_history: Value = cmd("LATENCY")
        .arg("HISTORY")
        .arg("nosuch")
        .query(&mut c)
        .unwrap();
    let reset_all: i64 = cmd("LATENCY").arg("RESET").query(&mut c).unwrap();
    let latest_after_reset: Value = cmd("LATENCY").arg("LATEST").query(&mut c).unwrap();
    let reset_named: i64 = cmd("LATENCY")
        .arg("RESET")
        .arg("command")
        .arg("nosuch")
        .query(&mut c)
        .unwrap();
    let mut errors = Vec::new();
    for args in [
        &["LATENCY", "NOPE"][..],
        &["LATENCY", "HISTORY"],
        &["LATENCY", "LATEST", "x"],
        &["LATENCY"],
        &["CONFIG", "SET", "latency-monitor-threshold", "-1"],
        &["CONFIG", "SET", "latency-monitor-threshold", "x"],
    ] {
        errors.push(err(command(args).query(&mut c)));
    }
    let config: Vec<String> = cmd("CONFIG")
        .arg("GET")
        .arg("latency-monitor-threshold")
        .query(&mut c)
        .unwrap();
    Latency {
        events,
        sane,
        history_len_positive: !history.is_empty(),
        unknown_history,
        reset_all,
        latest_after_reset,
        reset_named,
        errors,
        config,
    }
}

#[test]
fn the_latency_monitor_answers_as_redis_does() {
    let redis = RedisServer::start();
    let srv = Server::start("");
    let want = latency_sequence(&format!("redis://{}", redis.address()));
    let got = latency_sequence(&srv.url());
    assert_eq!(want.events, ["command"], "the oracle: {want:#?}");
    assert!(want.sane && want.history_len_positive, "{want:#?}");
    assert_eq!(want, got);
}
