//! A load generator for what redis-benchmark cannot send: `MULTI` + three commands + `EXEC`
//! per transaction, on `connections` connections for `seconds`, against any server speaking
//! RESP on 127.0.0.1:`port`. Prints transactions per second. Used by
//! `scripts/bench-scripting.sh`, which runs it against Strata and redis-server side by side.
//!
//! Usage: strata-bench-tx PORT [CONNECTIONS=50] [SECONDS=5]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strata_tests::Raw;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args
        .get(1)
        .and_then(|p| p.parse().ok())
        .expect("usage: strata-bench-tx PORT [CONNECTIONS] [SECONDS]");
    let conns: usize = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(50);
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..conns)
        .map(|t| {
            let (stop, done) = (stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut c = Raw::connect(port);
                let mut n: u64 = t as u64 * 7919;
                while !stop.load(Ordering::Relaxed) {
                    n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let key = format!("tx:{}", (n >> 33) % 100_000);
                    let k = key.len();
                    let req = format!(
                        "*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n${k}\r\n{key}\r\n$3\r\nabc\r\n*2\r\n$4\r\nINCR\r\n$7\r\ntx:ctr0\r\n*2\r\n$3\r\nGET\r\n${k}\r\n{key}\r\n*1\r\n$4\r\nEXEC\r\n"
                    );
                    c.send(req.as_bytes());
                    for _ in 0..4 {
                        c.frame();
                    }
                    match c.frame() {
                        strata_resp::Frame::Array(r) if r.len() == 3 => {}
                        other => panic!("EXEC answered {other:?}"),
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let n = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    println!("{:.0}", n as f64 / elapsed);
}
