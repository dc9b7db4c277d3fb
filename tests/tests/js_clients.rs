//! The two most used Node.js Redis clients, ioredis 5 and node-redis 4, against real
//! `strata serve` processes: `tests/js/clients.js` (commands, the default pipeline,
//! transactions with WATCH, Lua through EVALSHA, SCAN streams, pub/sub, databases, binary
//! and large values; their cluster clients on the cluster listener; check-and-set loops
//! from every node; ioredis's cluster client writing through a member's `kill -9`). The
//! same script passes against redis-server (one node). `scripts/test.sh`
//! installs Node.js and the packages (`tests/js/package.json`, exact versions).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use strata_tests::{Server, three_nodes};

/// `node clients.js args…`, not yet started.
fn clients(args: &[String]) -> Command {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js");
    assert!(
        dir.join("node_modules/ioredis").is_dir() && dir.join("node_modules/redis").is_dir(),
        "tests/js's packages are not installed: scripts/test.sh installs them \
         (cd tests/js && npm install --no-package-lock)"
    );
    let mut c = Command::new("node");
    c.arg(dir.join("clients.js")).args(args);
    c
}

/// Runs `clients.js` with `args`; fails the test with what it printed unless it printed
/// `ok` and exited 0.
fn run_clients(args: &[String]) {
    let out = clients(args)
        .output()
        .expect("node (Node.js) is installed: scripts/test.sh installs it");
    check(args, &out);
}

fn check(args: &[String], out: &std::process::Output) {
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && so.trim() == "ok",
        "clients.js {args:?}:\n{so}{se}"
    );
}

#[test]
fn ioredis_and_node_redis_work_against_one_node() {
    let srv = Server::start("");
    run_clients(&["single".into(), srv.port.to_string()]);
}

/// On a cluster: plain clients on each node (a SCAN through one node lists the keys
/// written through another; a check-and-set loop from all three loses nothing) and the
/// cluster clients (`Redis.Cluster`, `createCluster`) on the cluster listener.
#[test]
fn ioredis_and_node_redis_work_against_a_cluster() {
    let (nodes, _dirs) = three_nodes("[server]\ncluster_listen = \"127.0.0.1:0\"\n");
    let join = |ports: Vec<u16>| {
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let plain = join(nodes.iter().map(|n| n.port).collect());
    let cluster = join(nodes.iter().map(|n| n.cluster_port.unwrap()).collect());
    run_clients(&["cluster".into(), plain, cluster]);
}

/// ioredis's cluster client writing through a member's `kill -9`: no acknowledged write is
/// lost, and the errors (redirections to the dead member until failure detection moves its
/// slots; 2 in a 15 s trial, over about 1.1 s) end well before the run does.
#[test]
fn ioredis_cluster_writes_through_a_member_killed() {
    let (mut nodes, _dirs) = three_nodes("[server]\ncluster_listen = \"127.0.0.1:0\"\n");
    let cluster: Vec<String> = nodes
        .iter()
        .map(|n| n.cluster_port.unwrap().to_string())
        .collect();
    let args = vec!["failover".into(), cluster.join(","), "12000".into()];
    let writer = clients(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node (Node.js) is installed: scripts/test.sh installs it");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    nodes[1].kill9();
    let out = writer.wait_with_output().unwrap();
    println!("{}", String::from_utf8_lossy(&out.stderr));
    check(&args, &out);
}
