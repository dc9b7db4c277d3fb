//! A fixed-size map from namespace name to per-namespace state, read without any atomic
//! read-modify-write or fence, whose slots are given back when a namespace is reclaimed.
//!
//! Every cache operation looks its namespace up, so the lookup must not serialise the CPU:
//! an `ArcSwap` load or an `RwLock` read both execute a locked instruction, which on x86 is a
//! full barrier and, in a tight loop of lookups, stops the CPU from overlapping one lookup's
//! cache misses with the next (measured: +200 ns per `Cache::get` on 100k keys). Here a
//! lookup hashes the name (FNV-1a) and probes an open-addressed array of slots with plain
//! acquire loads, and the table holds at most `MAX_NAMESPACES` live names, with twice as many
//! slots so probe runs stay short.
//!
//! **Reclamation without freeing.** A slot's state (`V`) is created once and lives as long
//! as the table; a reclaimed namespace's slot is marked vacant and later *reused* for another
//! name, its state reset in place. Nothing is ever freed, so a reference into the table is
//! always to valid memory; what can change under a reader is *whose* state it is. Each slot
//! carries a sequence number (a seqlock: odd while the slot changes hands) and its name in
//! atomic words, so that:
//! - [`NsTable::read`] copies what it needs out of a namespace's state and checks, after
//!   copying, that the slot still belonged to that name throughout (retrying if not): what
//!   reads use, so that a read never returns another namespace's state;
//! - [`NsTable::get`] returns the state with the slot's id and sequence number, for callers
//!   whose effects tolerate a reuse in between (a write into L1 under the namespace's
//!   generation, which a reuse bumps, is dead on arrival) or check with [`NsTable::still`].
//!
//! Vacant slots stay in probe chains (tombstones) and are reused by the next insert that
//! passes them, so a miss may probe more slots once many names have come and gone (at most
//! the table's size, ~2k slots).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering, fence};

use parking_lot::Mutex;

use crate::namespace::{MAX_NAMESPACE_BYTES, MAX_NAMESPACES};

/// Slots in a table: twice the most live names, a power of two.
pub(crate) const SLOTS: usize = (2 * MAX_NAMESPACES).next_power_of_two();

const WORDS: usize = MAX_NAMESPACE_BYTES.div_ceil(8);

const EMPTY: u8 = 0;
const LIVE: u8 = 1;
const VACANT: u8 = 2;

/// One slot: its state (never used, live, or vacant), its name, and the namespace's state.
struct Slot<V> {
    state: AtomicU8,
    /// Odd while the slot changes hands (reclaimed, or taken by a new name).
    seq: AtomicU64,
    len: AtomicU8,
    name: [AtomicU64; WORDS],
    value: OnceLock<V>,
}

impl<V> Default for Slot<V> {
    fn default() -> Self {
        Self {
            state: AtomicU8::new(EMPTY),
            seq: AtomicU64::new(0),
            len: AtomicU8::new(0),
            name: std::array::from_fn(|_| AtomicU64::new(0)),
            value: OnceLock::new(),
        }
    }
}

/// `name` as the slot stores it: little-endian words, zero-padded.
fn words(name: &str) -> [u64; WORDS] {
    let mut out = [0u64; WORDS];
    for (i, chunk) in name.as_bytes().chunks(8).take(WORDS).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        out[i] = u64::from_le_bytes(w);
    }
    out
}

impl<V> Slot<V> {
    /// The slot's sequence number if it is live and holds `name` (`want`), checked as one
    /// consistent reading.
    #[inline]
    fn holds(&self, len: usize, want: &[u64; WORDS]) -> Option<u64> {
        loop {
            let mut seq = self.seq.load(Ordering::Acquire);
            if seq & 1 == 1 {
                // The slot is changing hands (or a reclaim is deciding): it may be the one
                // that holds `name`, so wait for the change rather than skip it (a reader
                // that skipped would miss a live namespace).
                seq = self.settled_seq();
            }
            let matches = self.state.load(Ordering::Acquire) == LIVE
                && usize::from(self.len.load(Ordering::Relaxed)) == len
                && self.name[..len.div_ceil(8)]
                    .iter()
                    .zip(want)
                    .all(|(w, want)| w.load(Ordering::Relaxed) == *want);
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == seq {
                return matches.then_some(seq);
            }
            // Changed while being read: read it again.
        }
    }

    /// The slot's sequence number once no change is in progress (changes are short, made
    /// under the table's create lock).
    #[cold]
    fn settled_seq(&self) -> u64 {
        let mut spins = 0u32;
        loop {
            let seq = self.seq.load(Ordering::Acquire);
            if seq & 1 == 0 {
                return seq;
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// The name the slot holds (for listings), if it is live.
    fn name(&self) -> Option<String> {
        loop {
            let seq = self.settled_seq();
            if self.state.load(Ordering::Acquire) != LIVE {
                return None;
            }
            let len = usize::from(self.len.load(Ordering::Relaxed)).min(MAX_NAMESPACE_BYTES);
            let mut bytes = Vec::with_capacity(WORDS * 8);
            for w in &self.name {
                bytes.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
            }
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == seq {
                bytes.truncate(len);
                return String::from_utf8(bytes).ok();
            }
        }
    }

    /// Writes `name` into the slot; the caller holds the table's create lock and has made
    /// `seq` odd.
    fn set_name(&self, name: &str) {
        let w = words(name);
        for (slot, w) in self.name.iter().zip(w) {
            slot.store(w, Ordering::Relaxed);
        }
        self.len.store(name.len() as u8, Ordering::Relaxed);
    }
}

/// A namespace found in the table: its slot (the id L1 keys carry), the slot's sequence
/// number when it was found, and its state.
pub(crate) struct Found<'a, V> {
    pub(crate) id: usize,
    pub(crate) seq: u64,
    pub(crate) value: &'a V,
}

pub(crate) struct NsTable<V> {
    slots: Box<[Slot<V>]>,
    /// Live names.
    len: AtomicUsize,
    create_lock: Mutex<()>,
}

impl<V> Default for NsTable<V> {
    fn default() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            len: AtomicUsize::new(0),
            create_lock: Mutex::new(()),
        }
    }
}

#[inline]
fn home(name: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h as usize) & (SLOTS - 1)
}

impl<V> NsTable<V> {
    /// The live slot holding `name`, with its sequence number.
    #[inline]
    fn find(&self, name: &str) -> Option<(usize, u64)> {
        if name.len() > MAX_NAMESPACE_BYTES {
            return None;
        }
        let want = words(name);
        let mut i = home(name);
        for _ in 0..SLOTS {
            let slot = &self.slots[i];
            if slot.state.load(Ordering::Acquire) == EMPTY {
                return None;
            }
            if let Some(seq) = slot.holds(name.len(), &want) {
                return Some((i, seq));
            }
            i = (i + 1) & (SLOTS - 1);
        }
        None
    }

    /// `name`'s state, its slot id and the slot's sequence number, if it exists. The slot may
    /// change hands right after (see the module docs): use [`NsTable::read`] to read state
    /// that must belong to `name`, or check [`NsTable::still`] afterwards.
    #[inline]
    pub(crate) fn get(&self, name: &str) -> Option<Found<'_, V>> {
        let (id, seq) = self.find(name)?;
        let value = self.slots[id].value.get()?;
        Some(Found { id, seq, value })
    }

    /// `f` applied to `name`'s state, checked to have read the state of `name` throughout
    /// (retried when the slot changed hands meanwhile). `f` must only read.
    #[inline]
    pub(crate) fn read<R>(&self, name: &str, f: impl Fn(usize, &V) -> R) -> Option<R> {
        loop {
            let (id, seq) = self.find(name)?;
            let slot = &self.slots[id];
            let r = f(id, slot.value.get()?);
            fence(Ordering::Acquire);
            if slot.seq.load(Ordering::Relaxed) == seq {
                return Some(r);
            }
        }
    }

    /// The state in slot `id`, whoever holds it (for passes over every entry by id).
    pub(crate) fn value_at(&self, id: usize) -> Option<&V> {
        self.slots.get(id)?.value.get()
    }

    /// `f` applied to `name`'s state while no slot can change hands (under the create
    /// lock): for rare operations that must act on exactly that namespace (a flush).
    pub(crate) fn with_live<R>(&self, name: &str, f: impl FnOnce(usize, &V) -> R) -> Option<R> {
        let _guard = self.create_lock.lock();
        let (id, _) = self.find(name)?;
        Some(f(id, self.slots[id].value.get()?))
    }

    /// Whether slot `id` still belongs to the name it held at sequence number `seq`.
    #[inline]
    pub(crate) fn still(&self, id: usize, seq: u64) -> bool {
        self.slots[id].seq.load(Ordering::SeqCst) == seq
    }

    /// How many names are live.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Every live name with its slot id and state, in slot order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (String, usize, &V)> {
        self.slots.iter().enumerate().filter_map(|(id, s)| {
            let name = s.name()?;
            Some((name, id, s.value.get()?))
        })
    }

    /// `name`'s state, created if absent: in a slot never used, by `make(live names, slot
    /// id)`; in a vacant slot, by `reuse(state, live names)`, which resets the state in place
    /// for the new name. Both must refuse (return `Err`) once `MAX_NAMESPACES` names are live.
    pub(crate) fn get_or_create<E>(
        &self,
        name: &str,
        make: impl FnOnce(usize, usize) -> Result<V, E>,
        reuse: impl FnOnce(&V, usize) -> Result<(), E>,
    ) -> Result<Found<'_, V>, E> {
        if let Some(f) = self.get(name) {
            return Ok(f);
        }
        let _guard = self.create_lock.lock();
        if let Some(f) = self.get(name) {
            return Ok(f);
        }
        // The first vacant or never-used slot on the name's probe chain.
        let mut i = home(name);
        let mut found = None;
        for _ in 0..SLOTS {
            let state = self.slots[i].state.load(Ordering::Acquire);
            if state != LIVE {
                found = Some(i);
                break;
            }
            i = (i + 1) & (SLOTS - 1);
        }
        let existing = self.len();
        // `make`/`reuse` refuse at MAX_NAMESPACES, and SLOTS is twice that, so a free slot
        // exists and only this thread (holding the lock) changes slots.
        let id = found.expect("namespace table overfilled");
        let slot = &self.slots[id];
        // The change of hands starts before the state is reset: a reader that sees any of it
        // sees the odd sequence number.
        slot.seq.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::Release);
        let made = match slot.value.get() {
            None => make(existing, id).map(|v| {
                let _ = slot.value.set(v);
            }),
            Some(v) => reuse(v, existing),
        };
        if let Err(e) = made {
            slot.seq.fetch_add(1, Ordering::SeqCst);
            return Err(e);
        }
        slot.set_name(name);
        slot.state.store(LIVE, Ordering::Release);
        let seq = slot.seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.len.store(existing + 1, Ordering::Release);
        let value = slot.value.get().expect("set above");
        Ok(Found { id, seq, value })
    }

    /// Gives `name`'s slot back if `may(state)` agrees, called while the slot is marked as
    /// changing hands (readers retry, [`NsTable::still`] is false for earlier finds). Returns
    /// whether it was reclaimed.
    pub(crate) fn reclaim(&self, name: &str, may: impl FnOnce(&V) -> bool) -> bool {
        let _guard = self.create_lock.lock();
        let Some((id, _)) = self.find(name) else {
            return false;
        };
        let slot = &self.slots[id];
        let Some(v) = slot.value.get() else {
            return false;
        };
        slot.seq.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::Release);
        let ok = may(v);
        if ok {
            slot.state.store(VACANT, Ordering::Release);
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
        slot.seq.fetch_add(1, Ordering::SeqCst);
        if ok {
            self.trim_vacant(id);
        }
        ok
    }

    /// Turns the vacant slots of `id`'s cluster (the run of used slots between two
    /// never-used ones) that no live name's probe chain passes back into never-used ones, so
    /// that a miss stops early again once many names have come and gone. A live name's chain
    /// runs from its home slot to its slot; a vacant slot is needed only if a live slot
    /// after it has its home at or before it. The caller holds the create lock.
    fn trim_vacant(&self, id: usize) {
        let at = |off: usize, from: usize| (from + off) & (SLOTS - 1);
        let state = |i: usize| self.slots[i].state.load(Ordering::Acquire);
        // The cluster's first slot.
        let mut first = id;
        for _ in 0..SLOTS {
            let prev = (first + SLOTS - 1) & (SLOTS - 1);
            if state(prev) == EMPTY || prev == id {
                break;
            }
            first = prev;
        }
        let mut len = 0;
        while len < SLOTS && state(at(len, first)) != EMPTY {
            len += 1;
        }
        // From the cluster's end backwards: the smallest home offset of the live slots seen.
        let mut min_home = usize::MAX;
        for off in (0..len).rev() {
            let i = at(off, first);
            match state(i) {
                LIVE => {
                    if let Some(name) = self.slots[i].name() {
                        let h = (home(&name) + SLOTS - first) & (SLOTS - 1);
                        min_home = min_home.min(h);
                    }
                }
                VACANT if min_home > off => {
                    self.slots[i].state.store(EMPTY, Ordering::Release);
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(n: usize, _id: usize) -> Result<usize, usize> {
        if n >= MAX_NAMESPACES { Err(n) } else { Ok(n) }
    }

    fn reuse(_: &usize, n: usize) -> Result<(), usize> {
        if n >= MAX_NAMESPACES { Err(n) } else { Ok(()) }
    }

    #[test]
    fn create_get_and_bound() {
        let t: NsTable<usize> = NsTable::default();
        assert!(t.get("a").is_none());
        let a = t.get_or_create("a", make, reuse).unwrap();
        assert_eq!(*a.value, 0);
        assert_eq!(
            *t.get_or_create("a", |_, _| Err(()), |_, _| Err(()))
                .unwrap()
                .value,
            0,
            "existing entries are reused"
        );
        for i in 1..MAX_NAMESPACES {
            t.get_or_create(&format!("ns{i}"), make, reuse).unwrap();
        }
        assert_eq!(t.len(), MAX_NAMESPACES);
        let over = t.get_or_create("one-more", make, reuse);
        assert_eq!(over.err(), Some(MAX_NAMESPACES));
        for i in 1..MAX_NAMESPACES {
            assert_eq!(*t.get(&format!("ns{i}")).unwrap().value, i, "ns{i} lost");
        }
        assert_eq!(t.entries().count(), MAX_NAMESPACES);
    }

    /// Reclaimed slots are reused, again and again, far past the table's size, and never
    /// lose or confuse a live name.
    #[test]
    fn reclaimed_slots_are_reused_without_confusing_names() {
        let t: NsTable<AtomicU64> = NsTable::default();
        let mk = |n: usize, _| {
            if n >= MAX_NAMESPACES {
                Err(())
            } else {
                Ok(AtomicU64::new(0))
            }
        };
        let re = |v: &AtomicU64, n: usize| {
            v.store(0, Ordering::Relaxed);
            if n >= MAX_NAMESPACES { Err(()) } else { Ok(()) }
        };
        t.get_or_create("kept", mk, re)
            .unwrap()
            .value
            .store(7, Ordering::Relaxed);
        for round in 0..20_000u64 {
            let name = format!("junk{round}");
            let f = t.get_or_create(&name, mk, re).unwrap();
            assert_eq!(
                f.value.load(Ordering::Relaxed),
                0,
                "a reused slot starts reset"
            );
            f.value.store(round + 1, Ordering::Relaxed);
            assert_eq!(
                t.read(&name, |_, v| v.load(Ordering::Relaxed)),
                Some(round + 1)
            );
            assert!(t.still(f.id, f.seq));
            assert!(t.reclaim(&name, |_| true));
            assert!(!t.still(f.id, f.seq), "a reclaimed slot changed hands");
            assert!(t.get(&name).is_none());
        }
        assert_eq!(t.len(), 1);
        // Vacant slots went back to never-used ones (a miss stops early again), but for any
        // right before a live one.
        let vacant = t
            .slots
            .iter()
            .filter(|s| s.state.load(Ordering::Relaxed) == VACANT)
            .count();
        assert!(vacant <= 2, "{vacant} vacant slots left");
        assert_eq!(t.read("kept", |_, v| v.load(Ordering::Relaxed)), Some(7));
        assert!(
            !t.reclaim("kept", |_| false),
            "refused reclaims keep the name"
        );
        assert_eq!(t.read("kept", |_, v| v.load(Ordering::Relaxed)), Some(7));
        let names: Vec<String> = t.entries().map(|(n, _, _)| n).collect();
        assert_eq!(names, vec!["kept".to_owned()]);
        // A name of the full 64 bytes round-trips.
        let long = "x".repeat(MAX_NAMESPACE_BYTES);
        t.get_or_create(&long, mk, re).unwrap();
        assert!(t.get(&long).is_some());
        assert!(t.get(&long[..63]).is_none());
        assert!(t.entries().any(|(n, _, _)| n == long));
    }

    /// Readers racing with reclaim-and-reuse never see another name's state as theirs:
    /// pairs of names that hash to the same slot take it in turns.
    #[test]
    fn a_read_never_returns_another_names_state() {
        let t = std::sync::Arc::new(NsTable::<AtomicU64>::default());
        let mk = |_: usize, _| Ok::<_, ()>(AtomicU64::new(0));
        let re = |v: &AtomicU64, _| {
            v.store(0, Ordering::Relaxed);
            Ok::<_, ()>(())
        };
        // "aK" and a "b…" name with the same home slot.
        let pairs: Vec<(String, String)> = (0..4)
            .map(|k| {
                let a = format!("a{k}");
                let b = (0..)
                    .map(|i| format!("b{i}"))
                    .find(|b| home(b) == home(&a))
                    .unwrap();
                (a, b)
            })
            .collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (t, stop, pairs) = (t.clone(), stop.clone(), pairs.clone());
            std::thread::spawn(move || {
                let mut seen = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for (a, _) in &pairs {
                        // "aK" always holds an odd number (or 0, just created).
                        // A slow read: the slot has time to change hands under it.
                        let slow = |_: usize, v: &AtomicU64| {
                            for _ in 0..300 {
                                std::hint::spin_loop();
                            }
                            v.load(Ordering::Relaxed)
                        };
                        if let Some(v) = t.read(a, slow) {
                            assert!(v == 0 || v % 2 == 1, "{a} read {v}");
                            seen += 1;
                        }
                    }
                }
                seen
            })
        };
        let mut reused = 0;
        for round in 0..20_000u64 {
            let (a, b) = &pairs[(round % 4) as usize];
            let fa = t.get_or_create(a, mk, re).unwrap();
            fa.value.store(2 * round + 1, Ordering::Relaxed);
            for _ in 0..200 {
                std::hint::spin_loop();
            }
            t.reclaim(a, |_| true);
            let fb = t.get_or_create(b, mk, re).unwrap();
            reused += u64::from(fb.id == fa.id);
            fb.value.store(2 * round + 2, Ordering::Relaxed);
            t.reclaim(b, |_| true);
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0, "the reader found the names");
        assert!(
            reused > 10_000,
            "the pairs shared their slot {reused} times"
        );
    }
}
