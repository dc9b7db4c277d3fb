//! Every command family through a real client library (redis-rs) and through redis-cli,
//! against a real `strata serve` process with L1 and L3.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use redis::{Commands, RedisResult, Value, cmd};
use strata_tests::Server;

fn err(r: RedisResult<Value>) -> String {
    match r {
        Err(e) => e.to_string(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

#[test]
fn strings() {
    // db0 with the seeds' licence rule, which `strata serve` applies only where configured.
    let srv = Server::start("[namespaces.db0]\ndefault_ttl_secs = 3600\nmax_ttl_secs = 86400\n");
    let mut c = srv.redis();
    let _: () = c.set("k", "v").unwrap();
    assert_eq!(c.get::<_, String>("k").unwrap(), "v");
    assert_eq!(c.get::<_, Option<String>>("missing").unwrap(), None);

    // SET options.
    assert_eq!(
        cmd("SET")
            .arg("k")
            .arg("v2")
            .arg("NX")
            .query::<Option<String>>(&mut c)
            .unwrap(),
        None
    );
    assert_eq!(
        cmd("SET")
            .arg("n")
            .arg("1")
            .arg("XX")
            .query::<Option<String>>(&mut c)
            .unwrap(),
        None
    );
    assert_eq!(
        cmd("SET")
            .arg("k")
            .arg("v3")
            .arg("XX")
            .arg("GET")
            .query::<String>(&mut c)
            .unwrap(),
        "v"
    );
    assert_eq!(
        cmd("SET")
            .arg("e")
            .arg("x")
            .arg("EX")
            .arg(100)
            .query::<String>(&mut c)
            .unwrap(),
        "OK"
    );
    let ttl: i64 = c.ttl("e").unwrap();
    assert!((99..=100).contains(&ttl), "{ttl}");
    let _: () = cmd("SET")
        .arg("e")
        .arg("y")
        .arg("KEEPTTL")
        .query(&mut c)
        .unwrap();
    assert!(
        c.ttl::<_, i64>("e").unwrap() >= 99,
        "KEEPTTL keeps the expiry"
    );
    let _: () = cmd("SET")
        .arg("p")
        .arg("x")
        .arg("PX")
        .arg(100_000)
        .query(&mut c)
        .unwrap();
    assert!(c.pttl::<_, i64>("p").unwrap() > 99_000);
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 500;
    let _: () = cmd("SET")
        .arg("at")
        .arg("x")
        .arg("EXAT")
        .arg(at)
        .query(&mut c)
        .unwrap();
    assert_eq!(
        cmd("EXPIRETIME").arg("at").query::<u64>(&mut c).unwrap(),
        at
    );
    let _: () = cmd("SET")
        .arg("past")
        .arg("x")
        .arg("PXAT")
        .arg(1000)
        .query(&mut c)
        .unwrap();
    assert!(
        !c.exists::<_, bool>("past").unwrap(),
        "an expiry in the past deletes the key"
    );
    assert!(
        err(cmd("SET").arg("k").arg("v").arg("EX").arg(0).query(&mut c))
            .contains("invalid expire time in 'set' command")
    );
    assert!(
        err(cmd("SET")
            .arg("k")
            .arg("v")
            .arg("EX")
            .arg("ten")
            .query(&mut c))
        .contains("value is not an integer or out of range")
    );
    assert!(
        err(cmd("SET")
            .arg("k")
            .arg("v")
            .arg("NX")
            .arg("XX")
            .query(&mut c))
        .contains("syntax error")
    );
    assert!(err(cmd("GET").query(&mut c)).contains("wrong number of arguments for 'get' command"));

    // The 24-hour licence rule: a TTL above max_ttl is refused, naming the limit.
    let e = err(cmd("SET")
        .arg("k")
        .arg("v")
        .arg("EX")
        .arg(100_000)
        .query(&mut c));
    assert!(e.contains("max_ttl of 86400 seconds"), "{e}");
    assert_eq!(
        c.get::<_, String>("k").unwrap(),
        "v3",
        "a refused write changes nothing"
    );

    // SETEX, PSETEX, SETNX, GETEX, GETDEL, GETSET.
    let _: () = cmd("SETEX")
        .arg("sx")
        .arg(50)
        .arg("v")
        .query(&mut c)
        .unwrap();
    assert!((49..=50).contains(&c.ttl::<_, i64>("sx").unwrap()));
    let _: () = cmd("PSETEX")
        .arg("psx")
        .arg(50_000)
        .arg("v")
        .query(&mut c)
        .unwrap();
    assert!(c.pttl::<_, i64>("psx").unwrap() > 49_000);
    assert!(
        err(cmd("SETEX").arg("sx").arg(-1).arg("v").query(&mut c))
            .contains("invalid expire time in 'setex' command")
    );
    assert_eq!(
        cmd("SETNX")
            .arg("nx")
            .arg("1")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        cmd("SETNX")
            .arg("nx")
            .arg("2")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert_eq!(
        cmd("GETEX")
            .arg("nx")
            .arg("EX")
            .arg(30)
            .query::<String>(&mut c)
            .unwrap(),
        "1"
    );
    assert!((29..=30).contains(&c.ttl::<_, i64>("nx").unwrap()));
    assert_eq!(
        cmd("GETDEL").arg("nx").query::<String>(&mut c).unwrap(),
        "1"
    );
    assert_eq!(
        cmd("GETDEL")
            .arg("nx")
            .query::<Option<String>>(&mut c)
            .unwrap(),
        None
    );
    assert_eq!(
        cmd("GETSET")
            .arg("gs")
            .arg("a")
            .query::<Option<String>>(&mut c)
            .unwrap(),
        None
    );
    assert_eq!(
        cmd("GETSET")
            .arg("gs")
            .arg("b")
            .query::<String>(&mut c)
            .unwrap(),
        "a"
    );

    // MGET, MSET, MSETNX.
    let _: () = cmd("MSET")
        .arg("m1")
        .arg("a")
        .arg("m2")
        .arg("b")
        .query(&mut c)
        .unwrap();
    let got: Vec<Option<String>> = cmd("MGET")
        .arg("m1")
        .arg("m2")
        .arg("m3")
        .query(&mut c)
        .unwrap();
    assert_eq!(got, vec![Some("a".into()), Some("b".into()), None]);
    assert_eq!(
        cmd("MSETNX")
            .arg("m3")
            .arg("c")
            .arg("m1")
            .arg("z")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert!(
        !c.exists::<_, bool>("m3").unwrap(),
        "MSETNX is all or nothing"
    );
    assert_eq!(
        cmd("MSETNX")
            .arg("m3")
            .arg("c")
            .arg("m4")
            .arg("d")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert!(
        err(cmd("MSET").arg("a").arg("b").arg("c").query(&mut c))
            .contains("wrong number of arguments for 'mset' command")
    );

    // APPEND, STRLEN, GETRANGE, SETRANGE.
    assert_eq!(
        cmd("APPEND")
            .arg("s")
            .arg("Hello")
            .query::<i64>(&mut c)
            .unwrap(),
        5
    );
    assert_eq!(
        cmd("APPEND")
            .arg("s")
            .arg(" World")
            .query::<i64>(&mut c)
            .unwrap(),
        11
    );
    assert_eq!(cmd("STRLEN").arg("s").query::<i64>(&mut c).unwrap(), 11);
    assert_eq!(cmd("STRLEN").arg("nope").query::<i64>(&mut c).unwrap(), 0);
    assert_eq!(
        cmd("GETRANGE")
            .arg("s")
            .arg(0)
            .arg(4)
            .query::<String>(&mut c)
            .unwrap(),
        "Hello"
    );
    assert_eq!(
        cmd("GETRANGE")
            .arg("s")
            .arg(-5)
            .arg(-1)
            .query::<String>(&mut c)
            .unwrap(),
        "World"
    );
    assert_eq!(
        cmd("SETRANGE")
            .arg("s")
            .arg(6)
            .arg("Redis")
            .query::<i64>(&mut c)
            .unwrap(),
        11
    );
    assert_eq!(c.get::<_, String>("s").unwrap(), "Hello Redis");
    assert_eq!(
        cmd("SETRANGE")
            .arg("z")
            .arg(3)
            .arg("x")
            .query::<i64>(&mut c)
            .unwrap(),
        4
    );
    assert_eq!(c.get::<_, Vec<u8>>("z").unwrap(), b"\0\0\0x");
    assert!(
        err(cmd("SETRANGE").arg("z").arg(-1).arg("x").query(&mut c))
            .contains("offset is out of range")
    );

    // Counters.
    assert_eq!(cmd("INCR").arg("ctr").query::<i64>(&mut c).unwrap(), 1);
    assert_eq!(
        cmd("INCRBY")
            .arg("ctr")
            .arg(41)
            .query::<i64>(&mut c)
            .unwrap(),
        42
    );
    assert_eq!(cmd("DECR").arg("ctr").query::<i64>(&mut c).unwrap(), 41);
    assert_eq!(
        cmd("DECRBY")
            .arg("ctr")
            .arg(50)
            .query::<i64>(&mut c)
            .unwrap(),
        -9
    );
    assert!(
        err(cmd("INCR").arg("s").query(&mut c)).contains("value is not an integer or out of range")
    );
    let _: () = c.set("big", i64::MAX).unwrap();
    assert!(
        err(cmd("INCR").arg("big").query(&mut c)).contains("increment or decrement would overflow")
    );
    assert_eq!(
        cmd("INCRBYFLOAT")
            .arg("f")
            .arg("10.5")
            .query::<String>(&mut c)
            .unwrap(),
        "10.5"
    );
    assert_eq!(
        cmd("INCRBYFLOAT")
            .arg("f")
            .arg("0.1")
            .query::<String>(&mut c)
            .unwrap(),
        "10.6"
    );
    assert!(
        err(cmd("INCRBYFLOAT").arg("f").arg("abc").query(&mut c))
            .contains("value is not a valid float")
    );
    // INCR keeps the key's TTL.
    let _: () = cmd("SET")
        .arg("ttlctr")
        .arg(1)
        .arg("EX")
        .arg(40)
        .query(&mut c)
        .unwrap();
    let _: i64 = cmd("INCR").arg("ttlctr").query(&mut c).unwrap();
    assert!((39..=40).contains(&c.ttl::<_, i64>("ttlctr").unwrap()));
}

#[test]
fn concurrent_increments_are_atomic() {
    let srv = Server::start("");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = srv.url();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                for _ in 0..250 {
                    let _: i64 = cmd("INCR").arg("counter").query(&mut c).unwrap();
                    let _: i64 = cmd("APPEND").arg("log").arg("x").query(&mut c).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = srv.redis();
    assert_eq!(
        c.get::<_, i64>("counter").unwrap(),
        1000,
        "no increment lost"
    );
    assert_eq!(
        cmd("STRLEN").arg("log").query::<i64>(&mut c).unwrap(),
        1000,
        "no append lost"
    );
}

#[test]
fn keys_ttls_and_databases() {
    let srv = Server::start(
        "[namespace_defaults]\ndefault_ttl_secs = 3600\nmax_ttl_secs = 86400\n[namespaces.forever]\ndefault_ttl_secs = 60\n",
    );
    let mut c = srv.redis();
    for i in 0..25 {
        let _: () = c.set(format!("user:{i}"), i).unwrap();
    }
    let _: () = c.set("other", 1).unwrap();
    assert_eq!(cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 26);
    let mut keys: Vec<String> = c.keys("user:*").unwrap();
    keys.sort();
    assert_eq!(keys.len(), 25);
    assert_eq!(keys[0], "user:0");

    // SCAN visits every key exactly once, with MATCH and COUNT.
    let mut seen = HashSet::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("user:*")
            .arg("COUNT")
            .arg(7)
            .query(&mut c)
            .unwrap();
        for k in batch {
            assert!(seen.insert(k), "SCAN returned a key twice");
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(seen.len(), 25);
    // A client that keeps the cursor in a JavaScript number (node-redis 4: `Number(cursor)`)
    // sees every key too: cursors stay within 2^53 − 1, which a double holds exactly. (With
    // whole 64-bit hashes as cursors, that client skipped ~4 % of the keys.)
    for i in 0..1_000 {
        let _: () = c.set(format!("sess:{i}"), i).unwrap();
    }
    let mut seen = HashSet::new();
    let mut cursor = 0f64;
    loop {
        let (next, batch): (String, Vec<String>) = cmd("SCAN")
            .arg(format!("{cursor}"))
            .arg("MATCH")
            .arg("sess:*")
            .arg("COUNT")
            .arg(10)
            .query(&mut c)
            .unwrap();
        let exact: u64 = next.parse().unwrap();
        assert!(exact < 1 << 53, "cursor {exact} past 2^53 - 1");
        seen.extend(batch);
        cursor = next.parse::<f64>().unwrap();
        if cursor == 0.0 {
            break;
        }
    }
    assert_eq!(
        seen.len(),
        1_000,
        "every key, through a cursor held as a double"
    );
    let (end, _): (u64, Vec<String>) = cmd("SCAN").arg(u64::MAX).query(&mut c).unwrap();
    assert_eq!(end, 0, "a cursor past every position ends the scan");
    for i in 0..1_000 {
        let _: () = c.del(format!("sess:{i}")).unwrap();
    }
    let iter: Vec<String> = c
        .scan_match("user:1*")
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(iter.len(), 11, "user:1 and user:10..19");
    let (_, none): (u64, Vec<String>) = cmd("SCAN")
        .arg(0)
        .arg("TYPE")
        .arg("hash")
        .query(&mut c)
        .unwrap();
    assert!(none.is_empty(), "every key is a string");
    assert!(err(cmd("SCAN").arg("notanumber").query(&mut c)).contains("invalid cursor"));
    let rk: String = cmd("RANDOMKEY").query(&mut c).unwrap();
    assert!(rk.starts_with("user:") || rk == "other");
    // Picks spread over the keys as Redis's do: two keys of another database, 400 picks,
    // each about 200 (one came back 383 times when the key after a random hash was taken).
    let _: () = cmd("SELECT").arg(7).query(&mut c).unwrap();
    let _: () = c.set("left", "1").unwrap();
    let _: () = c.set("right", "2").unwrap();
    let mut left = 0;
    for _ in 0..400 {
        let k: String = cmd("RANDOMKEY").query(&mut c).unwrap();
        left += usize::from(k == "left");
    }
    assert!(
        (120..=280).contains(&left),
        "{left} of 400 picks were `left`"
    );
    let _: () = cmd("FLUSHDB").query(&mut c).unwrap();
    let _: () = cmd("SELECT").arg(0).query(&mut c).unwrap();

    // DEL, UNLINK, EXISTS, TYPE, TOUCH.
    assert_eq!(
        cmd("EXISTS")
            .arg("user:1")
            .arg("user:1")
            .arg("nope")
            .query::<i64>(&mut c)
            .unwrap(),
        2
    );
    assert_eq!(
        cmd("DEL")
            .arg("user:1")
            .arg("user:2")
            .arg("nope")
            .query::<i64>(&mut c)
            .unwrap(),
        2
    );
    assert_eq!(cmd("UNLINK").arg("user:3").query::<i64>(&mut c).unwrap(), 1);
    assert_eq!(
        cmd("TYPE").arg("user:4").query::<String>(&mut c).unwrap(),
        "string"
    );
    assert_eq!(
        cmd("TYPE").arg("user:1").query::<String>(&mut c).unwrap(),
        "none"
    );
    assert_eq!(
        cmd("TOUCH")
            .arg("user:4")
            .arg("user:1")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );

    // RENAME, RENAMENX.
    let _: () = cmd("SET")
        .arg("src")
        .arg("v")
        .arg("EX")
        .arg(100)
        .query(&mut c)
        .unwrap();
    let _: () = cmd("RENAME").arg("src").arg("dst").query(&mut c).unwrap();
    assert_eq!(c.get::<_, String>("dst").unwrap(), "v");
    assert!(!c.exists::<_, bool>("src").unwrap());
    assert!(c.ttl::<_, i64>("dst").unwrap() > 90, "RENAME keeps the TTL");
    assert!(err(cmd("RENAME").arg("src").arg("x").query(&mut c)).contains("no such key"));
    let _: () = c.set("taken", 1).unwrap();
    assert_eq!(
        cmd("RENAMENX")
            .arg("dst")
            .arg("taken")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert_eq!(
        cmd("RENAMENX")
            .arg("dst")
            .arg("free")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );

    // EXPIRE family and its flags; TTL/PTTL/EXPIRETIME on missing and persistent keys.
    assert_eq!(
        cmd("EXPIRE")
            .arg("user:5")
            .arg(100)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        cmd("EXPIRE")
            .arg("user:5")
            .arg(50)
            .arg("GT")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert_eq!(
        cmd("EXPIRE")
            .arg("user:5")
            .arg(50)
            .arg("LT")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        cmd("EXPIRE")
            .arg("user:5")
            .arg(10)
            .arg("NX")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert_eq!(
        cmd("EXPIRE")
            .arg("user:5")
            .arg(20)
            .arg("XX")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert!((19..=20).contains(&c.ttl::<_, i64>("user:5").unwrap()));
    assert_eq!(
        cmd("PEXPIRE")
            .arg("user:5")
            .arg(30_000)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert!(c.pttl::<_, i64>("user:5").unwrap() > 29_000);
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 60_000;
    assert_eq!(
        cmd("PEXPIREAT")
            .arg("user:5")
            .arg(soon)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        cmd("PEXPIRETIME")
            .arg("user:5")
            .query::<u64>(&mut c)
            .unwrap(),
        soon
    );
    assert_eq!(
        cmd("EXPIREAT")
            .arg("user:5")
            .arg(soon / 1000)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        cmd("EXPIRE")
            .arg("nope")
            .arg(10)
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert_eq!(c.ttl::<_, i64>("nope").unwrap(), -2);
    assert!(
        err(cmd("EXPIRE")
            .arg("user:5")
            .arg(10)
            .arg("NX")
            .arg("XX")
            .query(&mut c))
        .contains("not compatible")
    );
    assert_eq!(
        cmd("EXPIRE")
            .arg("user:6")
            .arg(-1)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert!(
        !c.exists::<_, bool>("user:6").unwrap(),
        "a past expiry deletes the key"
    );
    let e = err(cmd("EXPIRE").arg("user:7").arg(200_000).query(&mut c));
    assert!(e.contains("max_ttl"), "{e}");
    // PERSIST is refused where the namespace has a max_ttl, allowed where it has none.
    let e = err(cmd("PERSIST").arg("user:7").query(&mut c));
    assert!(e.contains("max_ttl of 86400 seconds"), "{e}");

    // SELECT: databases and named namespaces are isolated.
    let _: () = cmd("SELECT").arg(1).query(&mut c).unwrap();
    assert_eq!(c.get::<_, Option<String>>("other").unwrap(), None);
    let _: () = c.set("other", "db1").unwrap();
    assert!(err(cmd("SELECT").arg(16).query(&mut c)).contains("DB index is out of range"));
    let _: () = cmd("SELECT").arg("forever").query(&mut c).unwrap();
    let _: () = c.set("p", "v").unwrap();
    assert_eq!(
        c.ttl::<_, i64>("p").unwrap(),
        60,
        "the namespace's default_ttl"
    );
    let e = err(cmd("PERSIST").arg("p").query(&mut c));
    assert!(e.contains("max_ttl"), "inherits max_ttl: {e}");
    let _: () = cmd("SELECT").arg(0).query(&mut c).unwrap();
    assert_eq!(c.get::<_, String>("other").unwrap(), "1");

    // FLUSHDB empties one database, FLUSHALL all of them.
    let _: () = cmd("FLUSHDB").query(&mut c).unwrap();
    assert_eq!(cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 0);
    let _: () = cmd("SELECT").arg(1).query(&mut c).unwrap();
    assert_eq!(c.get::<_, String>("other").unwrap(), "db1");
    let _: () = cmd("FLUSHALL").query(&mut c).unwrap();
    assert_eq!(c.get::<_, Option<String>>("other").unwrap(), None);
    assert_eq!(
        cmd("RANDOMKEY").query::<Option<String>>(&mut c).unwrap(),
        None
    );
}

#[test]
fn namespace_without_max_ttl_allows_persist() {
    let srv = Server::start("[namespaces.open]\ndefault_ttl_secs = 60\nmax_ttl_secs = 0\n");
    let mut c = srv.redis();
    let _: () = cmd("SELECT").arg("open").query(&mut c).unwrap();
    let _: () = c.set("k", "v").unwrap();
    assert_eq!(cmd("PERSIST").arg("k").query::<i64>(&mut c).unwrap(), 1);
    assert_eq!(c.ttl::<_, i64>("k").unwrap(), -1);
    assert_eq!(cmd("PERSIST").arg("k").query::<i64>(&mut c).unwrap(), 0);
    assert_eq!(cmd("EXPIRETIME").arg("k").query::<i64>(&mut c).unwrap(), -1);
}

#[test]
fn connection_and_server_commands() {
    let srv = Server::start("");
    let mut c = srv.redis();
    assert_eq!(cmd("PING").query::<String>(&mut c).unwrap(), "PONG");
    assert_eq!(cmd("PING").arg("hi").query::<String>(&mut c).unwrap(), "hi");
    assert_eq!(
        cmd("ECHO").arg("x y").query::<String>(&mut c).unwrap(),
        "x y"
    );
    let id: i64 = cmd("CLIENT").arg("ID").query(&mut c).unwrap();
    assert!(id > 0);
    let _: () = cmd("CLIENT")
        .arg("SETNAME")
        .arg("worker-1")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        cmd("CLIENT")
            .arg("GETNAME")
            .query::<String>(&mut c)
            .unwrap(),
        "worker-1"
    );
    let list: String = cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    assert!(
        list.contains(&format!("id={id} ")) && list.contains("name=worker-1"),
        "{list}"
    );
    let info: String = cmd("CLIENT").arg("INFO").query(&mut c).unwrap();
    assert!(info.contains("cmd=client"), "{info}");
    assert!(
        err(cmd("CLIENT").arg("SETNAME").arg("has space").query(&mut c))
            .contains("cannot contain spaces")
    );
    assert!(err(cmd("CLIENT").arg("BOGUS").query(&mut c)).contains("Try CLIENT HELP"));

    let count: i64 = cmd("COMMAND").arg("COUNT").query(&mut c).unwrap();
    assert!(count >= 55, "{count}");
    let info: Vec<Value> = cmd("COMMAND")
        .arg("INFO")
        .arg("get")
        .arg("nosuch")
        .query(&mut c)
        .unwrap();
    assert_eq!(info.len(), 2);
    assert_eq!(info[1], Value::Nil);
    let docs: Value = cmd("COMMAND").arg("DOCS").arg("set").query(&mut c).unwrap();
    assert!(format!("{docs:?}").contains("summary"));
    // What a cluster-aware client routes by, from COMMAND as redis-py's RedisCluster reads
    // it: before, it found no key in these and refused to send them ("No way to dispatch
    // this command to Redis Cluster").
    let script = r#"
import sys, redis
from redis._parsers.commands import CommandsParser
r = redis.Redis(port=int(sys.argv[1]))
p = CommandsParser(r)
for args, want in [
    (("MEMORY", "USAGE", "k"), ["k"]),
    (("SPUBLISH", "ch", "m"), ["ch"]),
    (("PUBLISH", "ch", "m"), ["ch"]),
    (("GET", "k"), ["k"]),
    (("MSET", "a", "1", "b", "2"), ["a", "b"]),
]:
    got = [k.decode() if isinstance(k, bytes) else k for k in (p.get_keys(r, *args) or [])]
    assert got == want, (args, got)
print("ok")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &srv.port.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "redis-py's key finder: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let text: String = cmd("INFO").query(&mut c).unwrap();
    for field in [
        "redis_version:",
        "connected_clients:",
        "used_memory:",
        "keyspace_hits:",
        "l1_hits:",
        "l3_latency_p99_us:",
    ] {
        assert!(text.contains(field), "INFO lacks {field}");
    }
    let only: String = cmd("INFO").arg("strata").query(&mut c).unwrap();
    assert!(only.contains("# Strata") && !only.contains("# Server"));
    // Every line ends with CRLF, the last one too, and sections are apart by one empty
    // line, as in Redis (a line parser joined the last line with the next reply's).
    for reply in [&text, &only] {
        assert!(
            reply.ends_with("\r\n") && !reply.ends_with("\r\n\r\n"),
            "INFO ends with {:?}",
            &reply[reply.len().saturating_sub(40)..]
        );
    }
    assert!(text.contains("\r\n\r\n# Clients\r\n") && !text.contains("\r\n\r\n\r\n"));
    // CONFIG HELP and MEMORY HELP list what there is (they were unknown subcommands, and
    // the error said to try CONFIG HELP).
    let lines: Vec<String> = cmd("CONFIG").arg("HELP").query(&mut c).unwrap();
    assert!(lines[0].starts_with("CONFIG <subcommand>") && lines.contains(&"RESETSTAT".into()));
    let lines: Vec<String> = cmd("MEMORY").arg("help").query(&mut c).unwrap();
    assert!(
        lines.iter().any(|l| l.starts_with("USAGE <key>")),
        "{lines:?}"
    );
    // So do CLIENT, SCRIPT and ACL HELP (their errors said to try the command that failed,
    // review helper-118), each ending as Redis's do.
    for (command, has) in [
        ("CLIENT", "TRACKING (ON|OFF)"),
        ("SCRIPT", "LOAD <script>"),
        ("ACL", "WHOAMI"),
    ] {
        let lines: Vec<String> = cmd(command).arg("HELP").query(&mut c).unwrap();
        assert!(
            lines[0].starts_with(&format!("{command} <subcommand>"))
                && lines.iter().any(|l| l.starts_with(has))
                && lines.ends_with(&["HELP".into(), "    Prints this help.".into()]),
            "{lines:?}"
        );
    }
    // No such section: an empty string, as redis-server answers (it was a lone CRLF).
    let none: String = cmd("INFO").arg("nosuch").query(&mut c).unwrap();
    assert_eq!(none, "");

    let cfg: Vec<String> = cmd("CONFIG")
        .arg("GET")
        .arg("maxclients")
        .query(&mut c)
        .unwrap();
    assert_eq!(cfg, vec!["maxclients".to_string(), "10000".into()]);
    let _: () = cmd("CONFIG")
        .arg("SET")
        .arg("timeout")
        .arg(300)
        .query(&mut c)
        .unwrap();
    let cfg: Vec<String> = cmd("CONFIG").arg("GET").arg("time*").query(&mut c).unwrap();
    assert_eq!(cfg, vec!["timeout".to_string(), "300".into()]);
    assert!(
        err(cmd("CONFIG")
            .arg("SET")
            .arg("no-such")
            .arg("1")
            .query(&mut c))
        .contains("Unknown option")
    );
    let (secs, _micros): (u64, u64) = cmd("TIME").query(&mut c).unwrap();
    assert!(secs > 1_700_000_000);

    // Unknown commands are refused and the connection stays usable.
    let e = err(cmd("LPUSH").arg("l").arg("x").query(&mut c));
    assert!(e.contains("unknown command 'LPUSH'"), "{e}");
    assert_eq!(cmd("PING").query::<String>(&mut c).unwrap(), "PONG");

    // Strata's own commands: tags, patterns, stats.
    let _: () = cmd("STRATA.SET")
        .arg("f:1")
        .arg("a")
        .arg("TAG")
        .arg("ef")
        .query(&mut c)
        .unwrap();
    let _: () = cmd("STRATA.SET")
        .arg("f:2")
        .arg("b")
        .arg("TAG")
        .arg("ef")
        .arg("EX")
        .arg(60)
        .query(&mut c)
        .unwrap();
    let _: () = c.set("g:1", "c").unwrap();
    assert_eq!(
        cmd("STRATA.INVALIDATE.TAG")
            .arg("ef")
            .query::<i64>(&mut c)
            .unwrap(),
        2
    );
    assert!(!c.exists::<_, bool>("f:1").unwrap());
    assert_eq!(
        cmd("STRATA.INVALIDATE.PATTERN")
            .arg("g:*")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert!(!c.exists::<_, bool>("g:1").unwrap());
    let stats: String = cmd("STRATA.STATS").query(&mut c).unwrap();
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert!(v["cache_manager"]["l1_hits"].as_u64().is_some(), "{v}");

    // QUIT closes after +OK.
    assert_eq!(cmd("QUIT").query::<String>(&mut c).unwrap(), "OK");
}

#[test]
fn hello_switches_to_resp3() {
    let srv = Server::start("");
    let mut raw = srv.raw();
    let hello = raw.cmd(&[b"HELLO", b"3"]);
    let strata_resp::Frame::Map(pairs) = hello else {
        panic!("HELLO 3 answers with a RESP3 map, got {hello:?}");
    };
    assert!(
        pairs
            .iter()
            .any(|(k, v)| k.as_bytes().map(|b| &b[..]) == Some(b"proto")
                && *v == strata_resp::Frame::Integer(3))
    );
    assert_eq!(
        raw.cmd(&[b"GET", b"missing"]),
        strata_resp::Frame::Null,
        "RESP3 null"
    );
    let info = raw.cmd(&[b"INFO", b"server"]);
    assert!(
        matches!(info, strata_resp::Frame::Verbatim { .. }),
        "{info:?}"
    );
    assert!(strata_tests::err_text(&raw.cmd(&[b"HELLO", b"4"])).starts_with("NOPROTO"));
    let hello2 = raw.cmd(&[b"HELLO", b"2"]);
    assert!(
        matches!(hello2, strata_resp::Frame::Array(_)),
        "RESP2 map is a flat array"
    );
    assert_eq!(raw.cmd(&[b"GET", b"missing"]), strata_resp::Frame::Null);
    raw.send(b"*2\r\n$3\r\nGET\r\n$7\r\nmissing\r\n");
    // Byte-exact RESP2 null bulk.
    let mut b = [0u8; 5];
    std::io::Read::read_exact(&mut raw.stream, &mut b).unwrap();
    assert_eq!(&b, b"$-1\r\n");
}

#[test]
fn redis_cli_works() {
    let srv = Server::start("");
    assert_eq!(srv.cli(&["ping"]), "PONG\n");
    assert_eq!(srv.cli(&["set", "greeting", "hello world"]), "OK\n");
    assert_eq!(srv.cli(&["get", "greeting"]), "hello world\n");
    assert_eq!(srv.cli(&["incrby", "n", "5"]), "5\n");
    assert_eq!(srv.cli(&["mset", "a", "1", "b", "2"]), "OK\n");
    assert_eq!(srv.cli(&["mget", "a", "b", "c"]), "1\n2\n\n");
    assert_eq!(srv.cli(&["exists", "a", "b", "c"]), "2\n");
    assert_eq!(
        srv.cli(&["ttl", "a"]),
        "-1\n",
        "as in Redis, a key written without a TTL has none"
    );
    assert_eq!(srv.cli(&["dbsize"]), "4\n");
    let mut keys: Vec<String> = srv.cli(&["keys", "*"]).lines().map(String::from).collect();
    keys.sort();
    assert_eq!(keys, ["a", "b", "greeting", "n"]);
    assert!(srv.cli(&["lpush", "x", "y"]).contains("unknown command"));
    assert!(srv.cli(&["info", "server"]).contains("redis_version:"));
    // Several sections at once, as Redis 7 takes them; the sections clients probe exist.
    let two = srv.cli(&["info", "server", "clients"]);
    assert!(two.contains("# Server") && two.contains("# Clients") && !two.contains("# Memory"));
    assert!(srv.cli(&["info", "replication"]).contains("role:master"));
    let usage: i64 = srv
        .cli(&["memory", "usage", "greeting"])
        .trim()
        .parse()
        .unwrap();
    assert!((11..1024).contains(&usage), "MEMORY USAGE {usage}");
    assert_eq!(srv.cli(&["memory", "usage", "nope"]), "\n");
    assert!(srv.cli(&["info", "cpu"]).contains("used_cpu_user:"));
    let all = srv.cli(&["info", "all"]);
    for section in [
        "# Persistence",
        "# Stats",
        "# Replication",
        "# CPU",
        "# Cluster",
        "# Keyspace",
    ] {
        assert!(all.contains(section), "{section} missing from INFO all");
    }
    assert!(srv.cli(&["-n", "3", "set", "k", "db3"]).contains("OK"));
    assert_eq!(srv.cli(&["-n", "3", "get", "k"]), "db3\n");
    assert_eq!(
        srv.cli(&["get", "k"]),
        "\n",
        "database 0 does not see database 3"
    );
    assert_eq!(srv.cli(&["del", "a", "b"]), "2\n");
    // Pipe mode: many commands from stdin, replies counted by redis-cli.
    let mut child = std::process::Command::new("redis-cli")
        .args(["-p", &srv.port.to_string(), "--pipe"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        for i in 0..1000 {
            write!(
                stdin,
                "*3\r\n$3\r\nSET\r\n${}\r\npipe:{i}\r\n$1\r\nx\r\n",
                format!("pipe:{i}").len()
            )
            .unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("errors: 0, replies: 1000"), "{text}");
    assert_eq!(
        srv.cli(&["dbsize"]),
        "1002\n",
        "greeting, n and the 1000 piped keys"
    );
}

/// LCS keeps a table of one cell per pair of bytes: values too large for the bound are
/// refused with an error, not computed.
#[test]
fn lcs_of_large_values_is_bounded() {
    let srv = Server::start("");
    let mut c = srv.redis();
    let big = "ab".repeat(2500);
    let _: () = c.set("x", &big).unwrap();
    let _: () = c.set("y", &big).unwrap();
    let e = err(cmd("LCS").arg("x").arg("y").query(&mut c));
    assert!(e.contains("cells"), "{e}");
    let _: () = c.set("x", "ohmytext").unwrap();
    let _: () = c.set("y", "mynewtext").unwrap();
    assert_eq!(
        cmd("LCS")
            .arg("x")
            .arg("y")
            .query::<String>(&mut c)
            .unwrap(),
        "mytext"
    );
    assert_eq!(
        cmd("LCS")
            .arg("x")
            .arg("y")
            .arg("LEN")
            .query::<i64>(&mut c)
            .unwrap(),
        6
    );
}

/// `strata serve`'s namespaces are Redis's databases (no default TTL, no maximum); the
/// shipped example config keeps the seeds' 24-hour licence rule on `emission_factors`.
#[test]
fn databases_behave_as_redis_and_the_example_config_keeps_the_licence_rule() {
    let example = include_str!("../../config/strata.example.toml");
    let srv = Server::start(example);
    let mut c = srv.redis();
    let _: () = c.set("k", "v").unwrap();
    assert_eq!(c.ttl::<_, i64>("k").unwrap(), -1, "no TTL unless given");
    assert_eq!(c.expire::<_, i64>("k", 200_000).unwrap(), 1, "no maximum");
    assert_eq!(cmd("PERSIST").arg("k").query::<i64>(&mut c).unwrap(), 1);
    let _: () = cmd("SELECT").arg("emission_factors").query(&mut c).unwrap();
    let _: () = c.set("fuel:diesel", "2.68").unwrap();
    assert_eq!(c.ttl::<_, i64>("fuel:diesel").unwrap(), 3600);
    let e = err(cmd("SET")
        .arg("f")
        .arg("v")
        .arg("EX")
        .arg(172_800)
        .query(&mut c));
    assert!(e.contains("max_ttl of 86400 seconds"), "{e}");
    let e = err(cmd("PERSIST").arg("fuel:diesel").query(&mut c));
    assert!(e.contains("max_ttl"), "{e}");
}

/// MOVE and COPY … DB between numbered databases, on one node: the value, its TTL and its
/// absence from the source after a restart (both writes reached L3); refused in a
/// transaction and in a cluster, as docs/protocol.md says.
#[test]
fn move_and_copy_between_databases() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start_in(dir.path(), "");
    let mut c = srv.redis();
    let _: () = c.set_ex("k", "v", 500).unwrap();
    assert_eq!(cmd("MOVE").arg("k").arg(1).query::<i64>(&mut c).unwrap(), 1);
    assert_eq!(
        cmd("MOVE").arg("k").arg(1).query::<i64>(&mut c).unwrap(),
        0,
        "gone"
    );
    assert!(err(cmd("MOVE").arg("k").arg(0).query(&mut c)).contains("same"));
    assert!(err(cmd("MOVE").arg("k").arg(16).query(&mut c)).contains("out of range"));
    let _: () = c.set("k", "here").unwrap();
    let _: () = cmd("SELECT").arg(1).query(&mut c).unwrap();
    assert_eq!(c.get::<_, String>("k").unwrap(), "v");
    let ttl: i64 = c.ttl("k").unwrap();
    assert!((490..=500).contains(&ttl), "the TTL moved with it: {ttl}");
    assert_eq!(
        cmd("MOVE").arg("k").arg(0).query::<i64>(&mut c).unwrap(),
        0,
        "exists there"
    );
    // COPY to another database, with and without REPLACE.
    let copy = |c: &mut redis::Connection, replace: bool| -> i64 {
        let mut q = cmd("COPY");
        q.arg("k").arg("k2").arg("DB").arg(2);
        if replace {
            q.arg("REPLACE");
        }
        q.query(c).unwrap()
    };
    assert_eq!(copy(&mut c, false), 1);
    let _: () = c.set("k", "v2").unwrap();
    assert_eq!(copy(&mut c, false), 0);
    assert_eq!(copy(&mut c, true), 1);
    // Not in a transaction (EXECABORT), where a move across namespaces is not one step.
    let _: () = cmd("MULTI").query(&mut c).unwrap();
    assert!(err(cmd("MOVE").arg("k").arg(3).query(&mut c)).contains("MULTI"));
    assert!(
        err(cmd("EXEC").query(&mut c))
            .to_lowercase()
            .contains("execabort")
    );
    drop(c);
    srv.terminate();
    drop(srv);
    let srv = Server::start_in(dir.path(), "");
    let mut c = srv.redis();
    assert_eq!(c.get::<_, String>("k").unwrap(), "here");
    let _: () = cmd("SELECT").arg(2).query(&mut c).unwrap();
    assert_eq!(c.get::<_, String>("k2").unwrap(), "v2");
    let _: () = cmd("SELECT").arg(1).query(&mut c).unwrap();
    assert_eq!(c.get::<_, String>("k").unwrap(), "v2");
    drop(srv);

    // A one-node cluster refuses both, as Redis Cluster does.
    let cdir = tempfile::tempdir().unwrap();
    let node = strata_tests::start_node(
        cdir.path(),
        "n1",
        strata_tests::free_port(),
        &[],
        "expected_size = 1",
    );
    let mut c = node.redis();
    assert!(err(cmd("MOVE").arg("k").arg(1).query(&mut c)).contains("cluster mode"));
    assert!(
        err(cmd("COPY").arg("k").arg("j").arg("DB").arg(1).query(&mut c)).contains("cluster mode")
    );
}
