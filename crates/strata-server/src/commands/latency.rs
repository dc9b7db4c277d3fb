//! `LATENCY LATEST | HISTORY | RESET | HELP`: Redis's latency monitor for the one event
//! Strata measures, `command` (a command that took `latency-monitor-threshold` milliseconds
//! or more to execute; 0, the default, turns the monitor off). Each event keeps its last 160
//! samples, one per second (the slowest of that second), and the slowest ever since it was
//! reset.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;

use super::{ReplyError, Res, Session, eq_ic, help, subcommand_arity};
use crate::state::Shared;

/// Samples kept per event (Redis's `LATENCY_TS_LEN`).
const SAMPLES: usize = 160;

/// One event's history.
#[derive(Debug, Default)]
struct Event {
    /// (Unix seconds, milliseconds), oldest first.
    samples: VecDeque<(u64, u64)>,
    /// The slowest since the event was first seen or reset.
    max_ms: u64,
}

/// The monitor, with its threshold (changeable with `CONFIG SET`).
#[derive(Debug)]
pub struct LatencyMonitor {
    threshold_ms: AtomicU64,
    events: Mutex<BTreeMap<&'static str, Event>>,
}

impl LatencyMonitor {
    /// A monitor recording latencies of `threshold_ms` or more (0: none).
    pub fn new(threshold_ms: u64) -> Self {
        LatencyMonitor {
            threshold_ms: AtomicU64::new(threshold_ms),
            events: Mutex::new(BTreeMap::new()),
        }
    }

    /// `latency-monitor-threshold`.
    pub fn threshold_ms(&self) -> u64 {
        self.threshold_ms.load(Ordering::Relaxed)
    }

    /// `CONFIG SET latency-monitor-threshold`.
    pub fn set_threshold_ms(&self, ms: u64) {
        self.threshold_ms.store(ms, Ordering::Relaxed);
    }

    /// Records that `event` took `took`, if that reaches the threshold: one atomic load
    /// when the monitor is off or the command was quick.
    pub fn record(&self, event: &'static str, took: Duration) {
        let threshold = self.threshold_ms();
        let ms = took.as_millis() as u64;
        if threshold == 0 || ms < threshold {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut events = self.events.lock();
        let e = events.entry(event).or_default();
        e.max_ms = e.max_ms.max(ms);
        match e.samples.back_mut() {
            Some((at, worst)) if *at == now => *worst = (*worst).max(ms),
            _ => {
                e.samples.push_back((now, ms));
                if e.samples.len() > SAMPLES {
                    e.samples.pop_front();
                }
            }
        }
    }
}

/// `LATENCY LATEST | HISTORY event | RESET [event ...] | HELP`.
pub(super) fn latency(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    let sub = &a[1];
    let monitor = &sh.latency;
    if eq_ic(sub, "LATEST") {
        if a.len() != 2 {
            return Err(subcommand_arity("latency", sub));
        }
        let events = monitor.events.lock();
        let latest: Vec<(&str, u64, u64, u64)> = events
            .iter()
            .filter_map(|(name, e)| {
                let (at, ms) = *e.samples.back()?;
                Some((*name, at, ms, e.max_ms))
            })
            .collect();
        drop(events);
        s.reply.array(latest.len());
        for (name, at, ms, max) in latest {
            s.reply.array(4);
            s.reply.bulk(name.as_bytes());
            s.reply.integer(at as i64);
            s.reply.integer(ms as i64);
            s.reply.integer(max as i64);
        }
    } else if eq_ic(sub, "HISTORY") {
        if a.len() != 3 {
            return Err(subcommand_arity("latency", sub));
        }
        let samples: Vec<(u64, u64)> = monitor
            .events
            .lock()
            .iter()
            .find(|(name, _)| name.as_bytes() == a[2].as_ref())
            .map(|(_, e)| e.samples.iter().copied().collect())
            .unwrap_or_default();
        s.reply.array(samples.len());
        for (at, ms) in samples {
            s.reply.array(2);
            s.reply.integer(at as i64);
            s.reply.integer(ms as i64);
        }
    } else if eq_ic(sub, "RESET") {
        let mut events = monitor.events.lock();
        let n = if a.len() == 2 {
            let n = events.len();
            events.clear();
            n
        } else {
            let before = events.len();
            events.retain(|name, _| !a[2..].iter().any(|x| x.as_ref() == name.as_bytes()));
            before - events.len()
        };
        s.reply.integer(n as i64);
    } else if eq_ic(sub, "HELP") {
        if a.len() != 2 {
            return Err(subcommand_arity("latency", sub));
        }
        const HELP: &[&str] = &[
            "LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "HISTORY <event>",
            "    Return time-latency samples for the <event> class.",
            "LATEST",
            "    Return the latest latency samples for all events.",
            "RESET [<event> ...]",
            "    Reset latency data of one or more <event> classes.",
            "    (default: reset all data for all event classes)",
            "HELP",
            "    Prints this help.",
        ];
        help(s, HELP);
    } else {
        return Err(ReplyError::err(format!(
            "unknown subcommand '{}'. Try LATENCY HELP.",
            String::from_utf8_lossy(&sub[..sub.len().min(128)])
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_reach_the_threshold_one_per_second_and_keep_the_worst() {
        let m = LatencyMonitor::new(0);
        m.record("command", Duration::from_secs(1));
        assert!(m.events.lock().is_empty(), "0 turns the monitor off");
        m.set_threshold_ms(5);
        m.record("command", Duration::from_millis(4));
        assert!(m.events.lock().is_empty(), "under the threshold");
        m.record("command", Duration::from_millis(7));
        m.record("command", Duration::from_millis(9));
        m.record("command", Duration::from_millis(6));
        let events = m.events.lock();
        let e = &events["command"];
        assert!(
            e.samples.len() <= 2,
            "one sample per second: {:?}",
            e.samples
        );
        assert_eq!(e.max_ms, 9);
        assert!(e.samples.iter().any(|(_, ms)| *ms == 9));
    }
}
