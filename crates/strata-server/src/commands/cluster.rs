//! Redis Cluster's view of a Strata cluster, for cluster-aware clients: `CLUSTER KEYSLOT`,
//! `SLOTS`, `SHARDS`, `NODES`, `MYID`, `INFO`, the connection commands `READONLY`,
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
/// (it is their slot's primary, or a replica of it and the connection sent `READONLY` for a
/// read), else the redirect or refusal Redis Cluster answers. Commands without keys run
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
    let mut keys = command_keys(spec, args).into_iter();
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
    if map.is_mine(slot) || (s.readonly && !spec.write && map.owns(slot)) {
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

/// `CLUSTER subcommand ...`.
pub(super) fn cluster(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
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
            let state = if served == usize::from(SLOTS) {
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

/// `CLUSTER SLOTS`: every run of slots with its primary, then its replicas. A member first
/// appears as the primary of a run (each member's first run as primary is listed before
/// the others), because some clients (redis-py) take a member's role from its first
/// appearance.
fn slots(s: &mut Session<'_>, map: &SlotMap) {
    let served: Vec<&(u16, u16, Vec<usize>)> = map
        .ranges
        .iter()
        .filter(|(_, _, o)| !o.is_empty())
        .collect();
    let mut order: Vec<usize> = Vec::with_capacity(served.len());
    let mut seen = vec![false; map.members.len()];
    for (i, (_, _, owners)) in served.iter().enumerate() {
        if !seen[owners[0]] {
            seen[owners[0]] = true;
            order.push(i);
        }
    }
    let firsts = order.clone();
    order.extend((0..served.len()).filter(|i| !firsts.contains(i)));
    s.reply.array(order.len());
    for i in order {
        let (first, last, owners) = served[i];
        s.reply.array(2 + owners.len());
        s.reply.integer(i64::from(*first));
        s.reply.integer(i64::from(*last));
        for &o in owners {
            slot_node(s, &map.members[o]);
        }
    }
}

/// `CLUSTER SHARDS`: the runs of slots grouped by their owners (primary, then replicas),
/// each group with its slot ranges and its nodes.
fn shards(s: &mut Session<'_>, map: &SlotMap) {
    // (owners, their slot ranges)
    type Shard<'m> = (&'m [usize], Vec<(u16, u16)>);
    let mut groups: Vec<Shard<'_>> = Vec::new();
    for (first, last, owners) in &map.ranges {
        if owners.is_empty() {
            continue;
        }
        match groups.iter_mut().find(|(o, _)| *o == &owners[..]) {
            Some((_, r)) => r.push((*first, *last)),
            None => groups.push((owners, vec![(*first, *last)])),
        }
    }
    s.reply.array(groups.len());
    for (owners, ranges) in groups {
        s.reply.map(2);
        s.reply.bulk(b"slots");
        s.reply.array(ranges.len() * 2);
        for (f, l) in ranges {
            s.reply.integer(i64::from(f));
            s.reply.integer(i64::from(l));
        }
        s.reply.bulk(b"nodes");
        s.reply.array(owners.len());
        for (i, &o) in owners.iter().enumerate() {
            let id = &map.members[o];
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
            s.reply.bulk(if i == 0 { b"master" } else { b"replica" });
            s.reply.bulk(b"replication-offset");
            s.reply.integer(0);
            s.reply.bulk(b"health");
            s.reply.bulk(b"online");
        }
    }
}

/// `CLUSTER NODES`: a line per member, each a master of the slots it is primary of.
fn nodes(sh: &Shared, map: &SlotMap) -> String {
    let now = now_ms();
    let me = &sh.config.node.name;
    let mut out = String::new();
    for (i, id) in map.members.iter().enumerate() {
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
        // Its runs as primary, neighbours merged.
        let mut run: Option<(u16, u16)> = None;
        for (first, last, owners) in &map.ranges {
            if owners.first() != Some(&i) {
                continue;
            }
            run = match run {
                Some((f, l)) if l + 1 == *first => Some((f, *last)),
                Some((f, l)) => {
                    write_slots(&mut out, f, l);
                    Some((*first, *last))
                }
                None => Some((*first, *last)),
            };
        }
        if let Some((f, l)) = run {
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
