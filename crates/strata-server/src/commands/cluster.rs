//! Redis Cluster's view of a Strata cluster, for cluster-aware clients: `CLUSTER KEYSLOT`,
//! `SLOTS`, `SHARDS`, `NODES`, `MYID`, `INFO`, `COUNTKEYSINSLOT`, `GETKEYSINSLOT`, the
//! connection commands `READONLY`,
//! `READWRITE` and `ASKING`, and the redirect a connection on `server.cluster_listen` gets
//! for a key whose primary is another member (`-MOVED slot host:port`), or for keys in
//! different slots (`-CROSSSLOT`).
//!
//! Keys are placed by Redis Cluster's 16384 hash slots, and the slots by the ring
//! (`strata_cluster::ring`): every member is the primary of some runs of slots and a replica
//! of others, so to a Redis client every member is a master (`CLUSTER NODES`) and each run
//! of slots lists its primary, then its replicas (`CLUSTER SLOTS`).

use std::net::SocketAddr;

use strata::SlotMap;
use strata_cluster::NodeIdentity;
use strata_cluster::ring::{SLOTS, key_slot};

use super::*;

/// Redis's answer to a cluster command on a server that is not in a cluster.
const DISABLED: &str = "This instance has cluster support disabled";

/// The slot map, or Redis's error when this node is not a cluster member.
fn slot_map(sh: &Shared) -> Res<Arc<SlotMap>> {
    sh.slots
        .as_ref()
        .map(strata::SlotSource::map)
        .ok_or_else(|| ReplyError::err(DISABLED))
}

/// A member's 40-character node id, as Redis Cluster shows them: a SHA1 of its name, so it
/// is the same on every member and across restarts.
pub(super) fn node_id(name: &str) -> String {
    scripting::sha1_hex(format!("strata node {name}").as_bytes())
}

/// Where cluster-aware clients reach a member: its cluster listener, else its RESP one.
fn client_addr(id: &NodeIdentity) -> SocketAddr {
    id.cluster_resp.unwrap_or(id.resp)
}

/// For a connection on the cluster listener: `Ok` when this node serves the command's keys
/// (it is their slot's primary, or a replica of it for a read), else the redirect or refusal Redis Cluster answers. Commands without keys run
/// here.
pub(super) fn check_route(
    sh: &Shared,
    s: &Session<'_>,
    spec: &CommandSpec,
    args: &[Bytes],
) -> Res<()> {
    if !s.cluster_mode {
        return Ok(());
    }
    let named = if spec.id == Cmd::Memory {
        // `MEMORY USAGE key`: a key the table's positions do not name.
        args.get(2)
            .filter(|_| eq_ic(&args[1], "USAGE"))
            .map(|k| vec![&k[..]])
            .unwrap_or_default()
    } else {
        command_keys(spec, args)
    };
    let mut keys = named.into_iter();
    let Some(first) = keys.next() else {
        return Ok(());
    };
    let slot = key_slot(first);
    if keys.any(|k| key_slot(k) != slot) {
        return Err(ReplyError::coded(
            "CROSSSLOT",
            "Keys in request don't hash to the same slot",
        ));
    }
    let map = slot_map(sh)?;
    if !map.quorum {
        // A member without a majority executes no write (it may be on the losing side of a
        // partition), and answers as a Redis Cluster node on the minority side does.
        return Err(ReplyError::coded("CLUSTERDOWN", "The cluster is down"));
    }
    // A read of a slot this node replicates runs here with or without `READONLY`: to a Redis
    // client every member is a master of some slots, so a client that reads from replicas
    // (ioredis's `scaleReads: 'slave'`) sends reads to them without ever sending `READONLY`,
    // and a `MOVED` back to the primary sent it round the same loop until it gave up. A
    // replica's copy is written before the primary answers, so it is as current.
    if serves(&map, !spec.write, slot) {
        return Ok(());
    }
    match map.primary(slot) {
        Some(p) => {
            // `ip:port` as Redis writes it (no brackets around an IPv6 address: clients
            // split at the last colon).
            let a = client_addr(p);
            Err(ReplyError::Line(format!(
                "MOVED {slot} {}:{}",
                a.ip(),
                a.port()
            )))
        }
        None => Err(ReplyError::coded("CLUSTERDOWN", "Hash slot not served")),
    }
}

/// Whether this node answers for `slot` on its cluster listener: as its primary, or as one
/// of its replicas for a read after `READONLY`.
fn serves(map: &SlotMap, replica_read: bool, slot: u16) -> bool {
    map.is_mine(slot) || (replica_read && map.owns(slot))
}

/// For a keyspace listing on the cluster listener (`SCAN`, `KEYS`, `RANDOMKEY`, `DBSIZE`):
/// the test a key must pass to be listed — the keys of the slots this node serves, so that
/// a client that lists every primary sees each key once. `None` on the plain listener (every
/// key this node holds).
pub(super) fn listing_filter(
    sh: &Shared,
    s: &Session<'_>,
) -> Option<impl Fn(&[u8]) -> bool + use<>> {
    if !s.cluster_mode {
        return None;
    }
    let map = sh.slots.as_ref()?.map();
    let replica_read = s.readonly;
    Some(move |key: &[u8]| serves(&map, replica_read, key_slot(key)))
}

/// Every key `args` names: a script's declared keys, else the table's key positions.
pub(super) fn command_keys<'a>(spec: &CommandSpec, args: &'a [Bytes]) -> Vec<&'a [u8]> {
    if matches!(
        spec.id,
        Cmd::Eval | Cmd::Evalsha | Cmd::EvalRo | Cmd::EvalshaRo
    ) {
        let n = args
            .get(2)
            .and_then(|n| parse_int(n))
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0);
        return args.iter().skip(3).take(n).map(|k| &k[..]).collect();
    }
    if spec.first_key <= 0 {
        return Vec::new();
    }
    let len = args.len() as i64;
    let last = if spec.last_key < 0 {
        len + spec.last_key
    } else {
        spec.last_key.min(len - 1)
    };
    let step = spec.step.max(1);
    let mut out = Vec::new();
    let mut i = spec.first_key;
    while i <= last {
        out.push(&args[i as usize][..]);
        i += step;
    }
    out
}

/// `READONLY`, `READWRITE`: whether reads of slots this node replicates run here.
pub(super) fn readonly(sh: &Shared, s: &mut Session<'_>, on: bool) -> Res<()> {
    slot_map(sh)?;
    s.readonly = on;
    s.reply.ok();
    Ok(())
}

/// A slot argument: Redis's errors for a non-number and for one out of range.
fn slot_arg(arg: &[u8], out_of_range: &str) -> Res<u16> {
    let n = parse_int(arg).ok_or(ReplyError::err("value is not an integer or out of range"))?;
    u16::try_from(n)
        .ok()
        .filter(|s| *s < SLOTS)
        .ok_or_else(|| ReplyError::err(out_of_range.to_owned()))
}

/// The keys of `slot` this node holds in the connection's database, at most `max`
/// (`CLUSTER COUNTKEYSINSLOT`, `GETKEYSINSLOT`): a listing of the node's keys.
async fn keys_in_slot(sh: &Shared, s: &Session<'_>, slot: u16, max: usize) -> Res<Vec<Bytes>> {
    list_keys(sh, &s.ns, move |k| key_slot(k) == slot, max).await
}

/// `CLUSTER subcommand ...`.
pub(super) async fn cluster(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    let sub = a[1].to_ascii_uppercase();
    let arity = |n: usize| -> Res<()> {
        if a.len() == n {
            Ok(())
        } else {
            Err(ReplyError::err(format!(
                "wrong number of arguments for 'cluster|{}' command",
                lower(&a[1])
            )))
        }
    };
    if sub == b"HELP" {
        let lines = [
            "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "INFO",
            "    Return information about the cluster.",
            "COUNTKEYSINSLOT <slot>",
            "    Return the number of keys in <slot>.",
            "GETKEYSINSLOT <slot> <count>",
            "    Return key names stored by current node in a slot.",
            "KEYSLOT <key>",
            "    Return the hash slot for <key>.",
            "MYID",
            "    Return the node id.",
            "NODES",
            "    Return cluster configuration seen by node. Output format:",
            "    <id> <ip:port@bus-port> <flags> <master> <pings> <pongs> <epoch> <link> <slot> ...",
            "SHARDS",
            "    Return information about slot range mappings and the nodes associated with them.",
            "SLOTS",
            "    Return information about slots range mappings. Each range is made of:",
            "    start, end, master and replicas IP addresses, ports and ids",
            "HELP",
            "    Print this help.",
        ];
        s.reply.array(lines.len());
        for l in lines {
            s.reply.simple(l);
        }
        return Ok(());
    }
    let map = slot_map(sh)?;
    match &sub[..] {
        b"KEYSLOT" => {
            arity(3)?;
            s.reply.integer(i64::from(key_slot(&a[2])));
        }
        b"COUNTKEYSINSLOT" => {
            arity(3)?;
            let slot = slot_arg(&a[2], "Invalid slot")?;
            let n = count_keys(sh, &s.ns, move |k| key_slot(k) == slot).await?;
            s.reply.integer(n as i64);
        }
        b"GETKEYSINSLOT" => {
            arity(4)?;
            const BAD: &str = "Invalid slot or number of keys";
            let slot = parse_int(&a[2])
                .ok_or(ReplyError::err("value is not an integer or out of range"))?;
            let max = parse_int(&a[3])
                .ok_or(ReplyError::err("value is not an integer or out of range"))?;
            let (Ok(slot), Ok(max)) = (u16::try_from(slot), usize::try_from(max)) else {
                return Err(ReplyError::err(BAD));
            };
            if slot >= SLOTS {
                return Err(ReplyError::err(BAD));
            }
            let keys = keys_in_slot(sh, s, slot, max).await?;
            s.reply.array(keys.len());
            for k in &keys {
                s.reply.bulk(k);
            }
        }
        b"MYID" => {
            arity(2)?;
            s.reply.bulk(node_id(&sh.config.node.name).as_bytes());
        }
        b"SLOTS" => {
            arity(2)?;
            slots(s, &map);
        }
        b"SHARDS" => {
            arity(2)?;
            shards(s, &map);
        }
        b"NODES" => {
            arity(2)?;
            s.reply.verbatim(nodes(sh, &map).as_bytes());
        }
        b"INFO" => {
            arity(2)?;
            let n = map.members.len();
            let served: usize = map
                .ranges
                .iter()
                .filter(|(_, _, o)| !o.is_empty())
                .map(|(f, l, _)| usize::from(l - f) + 1)
                .sum();
            let state = if served == usize::from(SLOTS) && map.quorum {
                "ok"
            } else {
                "fail"
            };
            let text = format!(
                "cluster_state:{state}\r\ncluster_slots_assigned:{served}\r\ncluster_slots_ok:{served}\r\n\
                 cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:{n}\r\n\
                 cluster_size:{n}\r\ncluster_current_epoch:0\r\ncluster_my_epoch:0\r\n\
                 cluster_stats_messages_sent:0\r\ncluster_stats_messages_received:0\r\n\
                 total_cluster_links_buffer_limit_exceeded:0\r\n"
            );
            s.reply.verbatim(text.as_bytes());
        }
        _ => {
            return Err(ReplyError::err(format!(
                "unknown subcommand '{}'. Try CLUSTER HELP.",
                String::from_utf8_lossy(&a[1][..a[1].len().min(128)])
            )));
        }
    }
    Ok(())
}

/// One member as `CLUSTER SLOTS` lists it: address, port, id, metadata (none).
fn slot_node(s: &mut Session<'_>, id: &NodeIdentity) {
    let addr = client_addr(id);
    s.reply.array(4);
    s.reply.bulk(addr.ip().to_string().as_bytes());
    s.reply.integer(i64::from(addr.port()));
    s.reply.bulk(node_id(&id.name).as_bytes());
    s.reply.map(0);
}

/// `CLUSTER SLOTS`: every run of slots with its primary, then its replicas. Some clients
/// (redis-py) take a member's role from its first appearance in the answer, and every run
/// names a replica that is another run's primary, so the answer starts with one slot of
/// each member's first run as primary, listed with that primary alone; the runs follow
/// (each slot is listed once).
fn slots(s: &mut Session<'_>, map: &SlotMap) {
    let served: Vec<(u16, u16, &[usize])> = map
        .ranges
        .iter()
        .filter(|(_, _, o)| !o.is_empty())
        .map(|(f, l, o)| (*f, *l, &o[..]))
        .collect();
    let mut all = Vec::with_capacity(served.len() + map.members.len());
    let mut rest = Vec::with_capacity(served.len());
    let mut seen = vec![false; map.members.len()];
    for (first, last, owners) in served {
        if seen[owners[0]] {
            rest.push((first, last, owners));
            continue;
        }
        seen[owners[0]] = true;
        all.push((first, first, &owners[..1]));
        if first < last {
            rest.push((first + 1, last, owners));
        }
    }
    all.extend(rest);
    s.reply.array(all.len());
    for (first, last, owners) in all {
        s.reply.array(2 + owners.len());
        s.reply.integer(i64::from(first));
        s.reply.integer(i64::from(last));
        for &o in owners {
            slot_node(s, &map.members[o]);
        }
    }
}

/// Each member's slots as primary, by index into `map.members`: its runs, neighbours
/// merged, in slot order. One pass over the runs.
fn primary_runs(map: &SlotMap) -> Vec<Vec<(u16, u16)>> {
    let mut runs: Vec<Vec<(u16, u16)>> = vec![Vec::new(); map.members.len()];
    for (first, last, owners) in &map.ranges {
        let Some(&p) = owners.first() else {
            continue;
        };
        match runs[p].last_mut() {
            Some((_, l)) if *l + 1 == *first => *l = *last,
            _ => runs[p].push((*first, *last)),
        }
    }
    runs
}

/// `CLUSTER SHARDS`: a shard per member, with the slots it is primary of and itself as the
/// shard's master. Its replicas differ from run to run (each run's owners are the ring's),
/// and Redis lists a node in one shard only, so a shard names no replica: `CLUSTER SLOTS`
/// lists each run's replicas.
fn shards(s: &mut Session<'_>, map: &SlotMap) {
    let runs = primary_runs(map);
    s.reply.array(map.members.len());
    for (id, ranges) in map.members.iter().zip(runs) {
        s.reply.map(2);
        s.reply.bulk(b"slots");
        s.reply.array(ranges.len() * 2);
        for (f, l) in ranges {
            s.reply.integer(i64::from(f));
            s.reply.integer(i64::from(l));
        }
        s.reply.bulk(b"nodes");
        s.reply.array(1);
        let addr = client_addr(id);
        let ip = addr.ip().to_string();
        s.reply.map(7);
        s.reply.bulk(b"id");
        s.reply.bulk(node_id(&id.name).as_bytes());
        s.reply.bulk(b"port");
        s.reply.integer(i64::from(addr.port()));
        s.reply.bulk(b"ip");
        s.reply.bulk(ip.as_bytes());
        s.reply.bulk(b"endpoint");
        s.reply.bulk(ip.as_bytes());
        s.reply.bulk(b"role");
        s.reply.bulk(b"master");
        s.reply.bulk(b"replication-offset");
        s.reply.integer(0);
        s.reply.bulk(b"health");
        s.reply.bulk(b"online");
    }
}

/// `CLUSTER NODES`: a line per member, each a master of the slots it is primary of.
fn nodes(sh: &Shared, map: &SlotMap) -> String {
    let now = now_ms();
    let me = &sh.config.node.name;
    let runs = primary_runs(map);
    let mut out = String::new();
    for (id, runs) in map.members.iter().zip(&runs) {
        let addr = client_addr(id);
        let flags = if &id.name == me {
            "myself,master"
        } else {
            "master"
        };
        let _ = write!(
            out,
            "{} {}:{}@{} {flags} - 0 {now} 0 connected",
            node_id(&id.name),
            addr.ip(),
            addr.port(),
            id.rpc.port()
        );
        for &(f, l) in runs {
            write_slots(&mut out, f, l);
        }
        out.push('\n');
    }
    out
}

fn write_slots(out: &mut String, first: u16, last: u16) {
    if first == last {
        let _ = write!(out, " {first}");
    } else {
        let _ = write!(out, " {first}-{last}");
    }
}
