//! Server commands: `CONFIG`, `COMMAND` (read from the command table), `INFO`.

use super::*;

/// The settings `CONFIG GET` reports, with their current values.
pub(super) fn config_values(sh: &Shared) -> Vec<(&'static str, String)> {
    let c = &sh.config;
    vec![
        ("bind", sh.resp_addr.ip().to_string()),
        ("port", sh.resp_addr.port().to_string()),
        ("databases", c.server.databases.to_string()),
        (
            "maxclients",
            sh.max_clients.load(Ordering::Relaxed).to_string(),
        ),
        (
            "timeout",
            sh.idle_timeout_secs.load(Ordering::Relaxed).to_string(),
        ),
        (
            "requirepass",
            sh.requirepass.read().clone().unwrap_or_default(),
        ),
        (
            "maxmemory",
            if c.l1.enabled { c.l1.capacity_bytes } else { 0 }.to_string(),
        ),
        ("maxmemory-policy", "allkeys-lfu".into()),
        ("proto-max-bulk-len", c.limits.max_value_bytes.to_string()),
        (
            "client-query-buffer-limit",
            c.server.max_request_bytes.to_string(),
        ),
        ("save", String::new()),
        ("appendonly", "no".into()),
        // Read by clients at connect (keyspace-notification listeners, cluster-aware
        // pools): Strata sends no keyspace notifications, and its replicas take no writes.
        ("notify-keyspace-events", String::new()),
        (
            "cluster-enabled",
            if c.cluster.enabled { "yes" } else { "no" }.into(),
        ),
        ("replica-read-only", "yes".into()),
        ("slave-read-only", "yes".into()),
        (
            "slowlog-log-slower-than",
            sh.slowlog.slower_than_us().to_string(),
        ),
        ("slowlog-max-len", sh.slowlog.max_len().to_string()),
        (
            "latency-monitor-threshold",
            sh.latency.threshold_ms().to_string(),
        ),
    ]
}

/// A `CONFIG SET` integer within `min..=max`, with Redis's two refusals.
pub(super) fn config_int(v: &[u8], min: i64, max: i64, name: &str) -> Res<i64> {
    match parse_int(v) {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        Some(_) => Err(ReplyError::err(format!(
            "CONFIG SET failed (possibly related to argument '{name}') - argument must be between {min} and {max} inclusive"
        ))),
        None => Err(ReplyError::err(format!(
            "CONFIG SET failed (possibly related to argument '{name}') - argument couldn't be parsed into an integer"
        ))),
    }
}

pub(super) fn config(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    let sub = &a[1];
    if eq_ic(sub, "GET") && a.len() >= 3 {
        let mut pairs = Vec::new();
        for pat in &a[2..] {
            let glob =
                Glob::new(&lower(pat).into_bytes()).map_err(|e| ReplyError::err(format!("{e}")))?;
            for (k, v) in config_values(sh) {
                if glob.matches(k.as_bytes())
                    && !pairs.iter().any(|(pk, _): &(&str, String)| *pk == k)
                {
                    pairs.push((k, v));
                }
            }
        }
        s.reply.map(pairs.len());
        for (k, v) in pairs {
            s.reply.bulk(k.as_bytes());
            s.reply.bulk(v.as_bytes());
        }
    } else if eq_ic(sub, "SET") && a.len() >= 4 && a.len() % 2 == 0 {
        for pair in a[2..].chunks(2) {
            let (k, v) = (lower(&pair[0]), &pair[1]);
            match k.as_str() {
                // Redis's ranges: an `unsigned int` and an `int` of seconds.
                "maxclients" => {
                    let n = config_int(v, 1, i64::from(u32::MAX), "maxclients")?;
                    sh.max_clients.store(n as u32, Ordering::Relaxed);
                }
                "timeout" => {
                    let n = config_int(v, 0, i64::from(i32::MAX), "timeout")?;
                    sh.idle_timeout_secs.store(n as u64, Ordering::Relaxed);
                }
                "requirepass" => {
                    let p = String::from_utf8(v.to_vec())
                        .map_err(|_| ReplyError::err("requirepass must be UTF-8"))?;
                    let p = (!p.is_empty()).then_some(p);
                    let srv = &sh.config.server;
                    if p.is_none()
                        && srv.protected_mode
                        && srv.users.is_empty()
                        && !strata::config::is_loopback(&srv.resp_listen)
                    {
                        return Err(ReplyError::err(
                            "CONFIG SET failed (possibly related to argument 'requirepass') - protected mode: this node listens beyond loopback and would have no password",
                        ));
                    }
                    sh.acl.write().set_requirepass(p.as_deref());
                    *sh.requirepass.write() = p;
                }
                "slowlog-log-slower-than" => {
                    let n = config_int(v, -1, i64::MAX, "slowlog-log-slower-than")?;
                    sh.slowlog.set_slower_than_us(n);
                }
                "slowlog-max-len" => {
                    let n = config_int(v, 0, i64::MAX, "slowlog-max-len")?;
                    sh.slowlog
                        .set_max_len(usize::try_from(n).unwrap_or(usize::MAX));
                }
                "latency-monitor-threshold" => {
                    let n = config_int(v, 0, i64::MAX, "latency-monitor-threshold")?;
                    sh.latency.set_threshold_ms(n as u64);
                }
                "save" | "appendonly" => {}
                other => {
                    return Err(ReplyError::err(format!(
                        "Unknown option or number of arguments for CONFIG SET - '{other}'"
                    )));
                }
            }
        }
        s.reply.ok();
    } else if eq_ic(sub, "SET") && a.len() >= 4 {
        // A parameter without its value: Redis's answer (checked against redis-server).
        return Err(ReplyError::Syntax);
    } else if eq_ic(sub, "RESETSTAT") && a.len() == 2 {
        s.reply.ok();
    } else if eq_ic(sub, "HELP") && a.len() == 2 {
        // Redis's lines, less `REWRITE` (a node's configuration is its file and environment).
        help(
            s,
            &[
                "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET <pattern>",
                "    Return parameters matching the glob-like <pattern> and their values.",
                "SET <directive> <value>",
                "    Set the configuration <directive> to <value>.",
                "RESETSTAT",
                "    Reset statistics reported by the INFO command.",
                "HELP",
                "    Prints this help.",
            ],
        );
    } else if ["GET", "SET", "RESETSTAT", "HELP"]
        .iter()
        .any(|k| eq_ic(sub, k))
    {
        return Err(subcommand_arity("config", sub));
    } else {
        // Redis's words for a subcommand it does not have (checked against redis-server).
        return Err(ReplyError::err(format!(
            "unknown subcommand '{}'. Try CONFIG HELP.",
            String::from_utf8_lossy(&sub[..sub.len().min(128)])
        )));
    }
    Ok(())
}

/// One command's `COMMAND INFO` entry. What cluster-aware clients route by is as Redis
/// reports it: the `pubsub` flag (redis-py's `RedisCluster` then takes the channel as the
/// key), the shard-channel commands' channel positions, and `MEMORY USAGE`'s key as a
/// subcommand; without them redis-py found no key in `MEMORY USAGE k` or `SPUBLISH ch m`
/// and refused to send them ("No way to dispatch this command to Redis Cluster").
pub(super) fn command_info(s: &mut Session<'_>, c: &CommandSpec) {
    s.reply.array(10);
    s.reply.bulk(c.name.to_ascii_lowercase().as_bytes());
    s.reply.integer(i64::from(c.arity));
    let flags: &[&str] = if c.write {
        &["write"]
    } else if c.group == "pubsub" {
        &["pubsub", "loading", "stale"]
    } else {
        &["readonly", "fast"]
    };
    s.reply.set(flags.len());
    for f in flags {
        s.reply.simple(f);
    }
    // Redis's positions of the shard channels (this node delivers them on every node, so
    // its own routing does not use them).
    let (first, last, step) = match c.id {
        Cmd::Spublish => (1, 1, 1),
        Cmd::Ssubscribe | Cmd::Sunsubscribe => (1, -1, 1),
        _ => (c.first_key, c.last_key, c.step),
    };
    s.reply.integer(first);
    s.reply.integer(last);
    s.reply.integer(step);
    s.reply.set(0);
    s.reply.set(0);
    s.reply.array(0);
    if c.id == Cmd::Memory {
        // `MEMORY USAGE key`: the one subcommand that names a key.
        s.reply.array(1);
        s.reply.array(10);
        s.reply.bulk(b"memory|usage");
        s.reply.integer(-3);
        s.reply.set(1);
        s.reply.simple("readonly");
        s.reply.integer(2);
        s.reply.integer(2);
        s.reply.integer(1);
        s.reply.set(0);
        s.reply.set(0);
        s.reply.array(0);
        s.reply.array(0);
    } else {
        s.reply.array(0);
    }
}

pub(super) fn command(s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    let Some(sub) = a.get(1) else {
        s.reply.array(COMMANDS.len());
        for c in COMMANDS {
            command_info(s, c);
        }
        return Ok(());
    };
    if eq_ic(sub, "COUNT") {
        s.reply.integer(COMMANDS.len() as i64);
    } else if eq_ic(sub, "LIST") {
        s.reply.array(COMMANDS.len());
        for c in COMMANDS {
            s.reply.bulk(c.name.to_ascii_lowercase().as_bytes());
        }
    } else if eq_ic(sub, "INFO") {
        let names = &a[2..];
        if names.is_empty() {
            s.reply.array(COMMANDS.len());
            for c in COMMANDS {
                command_info(s, c);
            }
        } else {
            s.reply.array(names.len());
            for n in names {
                match lookup(n) {
                    Some((_, c)) => command_info(s, c),
                    None => s.reply.null_array(),
                }
            }
        }
    } else if eq_ic(sub, "DOCS") {
        let wanted: Vec<&CommandSpec> = if a.len() > 2 {
            a[2..]
                .iter()
                .filter_map(|n| lookup(n).map(|(_, c)| c))
                .collect()
        } else {
            COMMANDS.iter().collect()
        };
        s.reply.map(wanted.len());
        for c in wanted {
            s.reply.bulk(c.name.to_ascii_lowercase().as_bytes());
            s.reply.map(3);
            s.reply.bulk(b"summary");
            s.reply.bulk(c.summary.as_bytes());
            s.reply.bulk(b"since");
            s.reply.bulk(b"1.0.0");
            s.reply.bulk(b"group");
            s.reply.bulk(c.group.as_bytes());
        }
    } else {
        return Err(ReplyError::err(format!(
            "unknown subcommand or wrong number of arguments for '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(&sub[..sub.len().min(128)])
        )));
    }
    Ok(())
}

pub(super) async fn info(sh: &Shared, s: &mut Session<'_>, sections: &[Bytes]) {
    let want = |name: &str| {
        sections.is_empty()
            || sections.iter().any(|w| {
                eq_ic(w, name) || eq_ic(w, "all") || eq_ic(w, "everything") || eq_ic(w, "default")
            })
    };
    let mut out = String::new();
    let stats = sh.cache.stats();
    if want("server") {
        let up = sh.started.elapsed().as_secs();
        let _ = write!(
            out,
            "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nstrata_version:{}\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{up}\r\nuptime_in_days:{}\r\nnode_name:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::process::id(),
            sh.resp_addr.port(),
            up / 86_400,
            sh.config.node.name,
        );
    }
    if want("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\ntracking_clients:{}\r\n\r\n",
            sh.connection_count(),
            sh.max_clients.load(Ordering::Relaxed),
            sh.tracking.client_count(),
        );
    }
    if want("memory") {
        let (used, max) = stats
            .l1
            .as_ref()
            .map_or((0, 0), |l| (l.resident_bytes, l.capacity_bytes));
        let input = sh.client_memory.total();
        let rss = crate::metrics::process_rss_bytes().unwrap_or(0);
        let (scripts, script_bytes) = {
            let c = sh.scripts.lock();
            (c.len(), c.bytes())
        };
        let _ = write!(
            out,
            "# Memory\r\nused_memory:{used}\r\nused_memory_human:{:.2}M\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{:.2}M\r\nmaxmemory:{max}\r\nmaxmemory_human:{:.2}M\r\nmaxmemory_policy:allkeys-lfu\r\nmem_clients_normal:{input}\r\nnumber_of_cached_scripts:{scripts}\r\nused_memory_scripts_eval:{script_bytes}\r\nstrata_l1_resident_bytes:{used}\r\nstrata_client_input_bytes:{input}\r\nstrata_client_input_budget_bytes:{}\r\nstrata_client_output_limit_bytes:{}\r\n\r\n",
            used as f64 / 1048576.0,
            rss as f64 / 1048576.0,
            max as f64 / 1048576.0,
            sh.config.server.max_input_bytes_total,
            sh.config.server.client_output_buffer_limit_bytes,
        );
    }
    if want("persistence") {
        // L3 writes through on every write: there is no snapshot or append-only file to
        // report, and nothing is ever loading.
        let _ = write!(
            out,
            "# Persistence\r\nloading:0\r\nasync_loading:0\r\nrdb_changes_since_last_save:0\r\nrdb_bgsave_in_progress:0\r\nrdb_last_bgsave_status:ok\r\naof_enabled:0\r\naof_rewrite_in_progress:0\r\nstrata_l3_enabled:{}\r\n\r\n",
            u8::from(sh.config.l3.enabled)
        );
    }
    if want("stats") {
        let m = &sh.metrics;
        let evicted = stats.l1.as_ref().map_or(0, |l| l.evictions);
        let expired = stats.l1.as_ref().map_or(0, |l| l.expirations);
        let evicted_scripts = sh.scripts.lock().evicted();
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\nexpired_keys:{expired}\r\nevicted_keys:{evicted}\r\nevicted_scripts:{evicted_scripts}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\ntracking_total_keys:{}\r\ntracking_total_items:{}\r\ntracking_total_prefixes:{}\r\n\r\n",
            m.connections_total.get(),
            m.total_commands(),
            m.rejected_connections.get(),
            stats.hit_count,
            stats.miss_count,
            sh.tracking.key_count(),
            sh.tracking.item_count(),
            sh.tracking.prefix_count(),
        );
    }
    if want("replication") {
        // Every node is a primary for some keys and a replica for others; to a Redis
        // client each is a master with no replicas of its own.
        let _ = write!(
            out,
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_failover_state:no-failover\r\nmaster_repl_offset:0\r\nrepl_backlog_active:0\r\n\r\n"
        );
    }
    if want("cpu") {
        let (user, sys) = cpu_seconds().unwrap_or((0.0, 0.0));
        let _ = write!(
            out,
            "# CPU\r\nused_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\n\r\n"
        );
    }
    if want("cluster") {
        // A cluster member answers Redis Cluster's commands (CLUSTER SLOTS…) on every
        // listener, and redirects only on `server.cluster_listen`.
        let on = u8::from(sh.slots.is_some());
        let _ = write!(out, "# Cluster\r\ncluster_enabled:{on}\r\n\r\n");
    }
    if want("keyspace") {
        out.push_str("# Keyspace\r\n");
        for i in 0..sh.config.server.databases {
            let ns = format!("db{i}");
            if s.user.as_ref().is_some_and(|u| !u.allows_namespace(&ns)) {
                continue;
            }
            if let Ok(n) = db_size(sh, &ns).await
                && n > 0
            {
                let _ = write!(out, "db{i}:keys={n},expires={n},avg_ttl=0\r\n");
            }
        }
        out.push_str("\r\n");
    }
    // Only when asked for by name (or `all`, `everything`), as in Redis.
    if sections
        .iter()
        .any(|w| eq_ic(w, "commandstats") || eq_ic(w, "all") || eq_ic(w, "everything"))
    {
        out.push_str("# Commandstats\r\n");
        let m = &sh.metrics;
        for (i, spec) in COMMANDS.iter().enumerate() {
            let calls = m.calls[i].get();
            if calls > 0 {
                let _ = write!(
                    out,
                    "cmdstat_{}:calls={calls},rejected_calls=0,failed_calls={}\r\n",
                    spec.name.to_ascii_lowercase(),
                    m.errors[i].get()
                );
            }
        }
        out.push_str("\r\n");
    }
    if want("strata") {
        out.push_str("# Strata\r\n");
        let _ = write!(out, "hit_rate:{:.4}\r\n", stats.hit_rate);
        for l in &stats.layers {
            let name = l.layer.to_string().to_lowercase();
            let _ = write!(
                out,
                "{name}_hits:{}\r\n{name}_misses:{}\r\n{name}_sets:{}\r\n{name}_errors:{}\r\n{name}_latency_p50_us:{:.2}\r\n{name}_latency_p99_us:{:.2}\r\n",
                l.hits, l.misses, l.sets, l.errors, l.latency.p50_us, l.latency.p99_us
            );
        }
        let _ = write!(out, "policy_violations:{}\r\n\r\n", stats.policy_violations);
    }
    // Sections are separated by an empty line; the last line ends with CRLF, as in Redis —
    // and no section at all (`INFO nosuch`) is an empty string, as in Redis.
    let end = out.trim_end_matches("\r\n").len();
    out.truncate(end);
    if !out.is_empty() {
        out.push_str("\r\n");
    }
    s.reply.verbatim(out.as_bytes());
}

/// The process's user and system CPU time in seconds (`/proc/self/stat`).
pub(super) fn cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the name.
    let ticks = 100.0; // USER_HZ on Linux
    let user: f64 = fields.get(11)?.parse().ok()?;
    let sys: f64 = fields.get(12)?.parse().ok()?;
    Some((user / ticks, sys / ticks))
}
