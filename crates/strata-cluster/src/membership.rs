//! Membership and failure detection: foca (SWIM + suspicion + infection-style dissemination)
//! behind a sans-IO interface with authenticated packets.
//!
//! The caller feeds packets and timer events in and carries the outputs out: packets to
//! send (already sealed with the cluster secret), timers to schedule, member up/down
//! events. Randomness comes from a seeded RNG, and foca reads no clock (time enters only
//! as timer events), so the node binary and the simulator drive exactly this code.

use std::net::SocketAddr;
use std::time::Duration;

use foca::{Foca, Notification, PostcardCodec, Runtime, Timer};

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::auth::Authenticator;
use crate::coherence::ItemHandler;
use crate::identity::NodeIdentity;
use crate::ring::Ring;

/// Broadcast items queued above which a member stops relaying others' invalidations (see
/// `ItemHandler::set_relay`).
pub const RELAY_BACKLOG: usize = 32;

/// How often a node that knows no live member announces itself to its seeds again.
pub const REJOIN_EVERY: Duration = Duration::from_secs(2);

/// A timer the membership asked for; hand it back through [`Membership::handle_timer`] when
/// it fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipTimer {
    /// One of foca's own timers (probes, suspicion, gossip, announcements).
    Foca(Timer<NodeIdentity>),
    /// Time to check whether this node is alone, and if so to announce itself to the seeds
    /// again. foca's periodic announcements go to members it knows; a node whose first
    /// announcements were all lost, or that has forgotten everyone after a long partition,
    /// knows none, and would otherwise stay alone for ever (found by the simulator, seeds 81,
    /// 163 and 198).
    Rejoin,
    /// The window after this node's refutation number `n` in which a `TurnUndead` is
    /// ignored ([`Membership::refute_after_stall`]) is over.
    RefutationOver(u64),
}

/// What the caller must do after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `packet` to the gossip address `to` (UDP).
    Send {
        /// Destination gossip address.
        to: SocketAddr,
        /// The sealed packet.
        packet: Vec<u8>,
    },
    /// Call [`Membership::handle_timer`] with `timer` after `after`.
    Schedule {
        /// The timer.
        timer: MembershipTimer,
        /// When.
        after: Duration,
    },
    /// A member joined, came back, or restarted under a new generation.
    Up(NodeIdentity),
    /// A member's life ended unseen: a newer generation at its address took its place
    /// before it was declared down (a restart faster than failure detection; foca's
    /// `Rename`). Comes just before the new life's [`Output::Up`]. No [`Output::Down`]
    /// follows for it.
    Replaced(NodeIdentity),
    /// A member was declared down.
    Down(NodeIdentity),
    /// A coherence item arrived from another member (for `Coherence::receive`).
    Received(Vec<u8>),
    /// The others declared this node down (a partition, a pause) and it came back under a
    /// new identity: the cluster moved its keys to other owners meanwhile, so what it holds
    /// may be stale beyond what invalidations will tell it (`Coherence::rejoined`).
    Rejoined,
}

/// Counters of the membership state machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MembershipStats {
    /// Packets dropped for a missing or wrong authentication tag.
    pub rejected_packets: u64,
    /// Authenticated packets foca could not use (malformed, from an old generation, …).
    pub invalid_packets: u64,
    /// Times this node was declared down by the others and rejoined as a new generation.
    pub rejoins: u64,
    /// Times this node, alone, announced itself to its seeds again.
    pub seed_announces: u64,
    /// Members this node declared down itself after they stayed suspect, with the same
    /// incarnation, for more than twice foca's suspicion timeout (see
    /// [`Membership::handle_timer`]).
    pub stuck_suspects: u64,
    /// Refutations this node gossiped after it stalled ([`Membership::refute_after_stall`]).
    pub stall_refutations: u64,
    /// Refutations this node gossiped when a member answered again after a silence
    /// ([`Membership::refute_after_silence`]).
    pub silence_refutations: u64,
    /// `TurnUndead` messages ignored because they came while a refutation was under way.
    pub turn_undead_ignored: u64,
    /// `TurnUndead` messages foca would have sent to a member whose suspicion it had
    /// refuted, withheld (`Membership::handle_timer`).
    pub stale_turn_undead_withheld: u64,
}

/// Ways to break the protocol on purpose (feature `fault-switches`, for the simulator's
/// tests that prove its checker can fail).
#[cfg(feature = "fault-switches")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultSwitches {
    /// Build the ring from the other members only, leaving this node out.
    pub ring_without_self: bool,
    /// Never announce to the seeds again when alone (the bug of the regression seeds 81,
    /// 163 and 198).
    pub skip_seed_rejoin: bool,
}

/// When each member last answered this node's lease pings (`Lease`), to tell when a link
/// comes back after a silence: a cut (a partition, a dead link) or a pause of either end.
///
/// During the silence the member may have suspected this node, and a suspicion is lifted
/// only by this node's refutation, which it makes only if it hears of the suspicion. foca
/// sends that news a few times (`max_transmissions`), all of them into the cut when the cut
/// outlasts them: after the heal the suspicion runs out into a `Down` of a live member,
/// which then rejoins under a new identity and, its lease lapsed in the cut, drops what it
/// owns. A partition review saw this after every cut of 1–3 s (a member declared down 3.8 s
/// after the heal), and two owners of the same keys dropping their copies lost up to 2,468
/// of 4,500 acknowledged keys. So an answer that grants the lease and ends a silence longer
/// than [`Silences::SILENCE_MS`] makes this node refute at once
/// ([`Membership::refute_after_silence`]), within foca's suspicion time of any suspicion
/// raised in the cut.
#[derive(Debug, Default, Clone)]
pub struct Silences {
    /// Per member name: when (this node's monotonic ms) its latest answer arrived. Kept when
    /// the member leaves the view: when it is back, its first answer ends the silence.
    last: std::collections::BTreeMap<String, u64>,
    /// When this node last refuted after a silence (monotonic ms; `None`: never).
    refuted_at: Option<u64>,
}

impl Silences {
    /// How long without an answer from a member counts as a silence: three lease pings
    /// (`Lease::PING_EVERY_MS` apart) unanswered and then some — under foca's probe time
    /// (1 s period, 500 ms round trip on a LAN), so a cut that could raise a suspicion ends
    /// one.
    pub const SILENCE_MS: u64 = 700;
    /// Silences that end within this long of a refutation make no other: that refutation
    /// is still being gossiped (each update goes out in several rounds, 200 ms apart), and
    /// each refutation raises foca's 16-bit incarnation, which forces a rejoin when it runs
    /// out (a member healed from all others at once refuted once per member).
    pub const COALESCE_MS: u64 = 300;
    /// Most member names remembered; past it the least recent goes (names come from the
    /// authenticated view, so this bounds a cluster that renamed its members many times).
    pub const MAX_MEMBERS: usize = 1024;

    /// `member` answered a lease ping at `now_ms`, granting the lease or not (a member that
    /// does not count this node live: it holds it down, or has not heard of its new
    /// identity yet). Every answer counts as contact; whether this one makes this node
    /// refute now: it grants the lease, it ends a silence (a previous answer more than
    /// [`Silences::SILENCE_MS`] ago, or none since this member's name was forgotten), and
    /// no refutation was made in the last [`Silences::COALESCE_MS`].
    pub fn answered(&mut self, member: &str, now_ms: u64, granted: bool) -> bool {
        let ended_silence = match self.last.get_mut(member) {
            Some(t) => {
                let previous = std::mem::replace(t, now_ms.max(*t));
                now_ms.saturating_sub(previous) > Self::SILENCE_MS
            }
            None => {
                if self.last.len() >= Self::MAX_MEMBERS
                    && let Some(oldest) = self
                        .last
                        .iter()
                        .min_by_key(|(_, t)| **t)
                        .map(|(n, _)| n.clone())
                {
                    self.last.remove(&oldest);
                }
                self.last.insert(member.to_owned(), now_ms);
                false
            }
        };
        let due = self
            .refuted_at
            .is_none_or(|t| now_ms.saturating_sub(t) >= Self::COALESCE_MS);
        let refute = granted && ended_silence && due;
        if refute {
            self.refuted_at = Some(now_ms);
        }
        refute
    }
}

/// One node's view of the cluster.
pub struct Membership {
    foca: Foca<NodeIdentity, PostcardCodec, StdRng, ItemHandler>,
    inbox: ItemHandler,
    auth: Authenticator,
    seeds: Vec<SocketAddr>,
    stats: MembershipStats,
    /// Members seen suspect at consecutive rejoin checks: (name, generation, incarnation)
    /// -> checks.
    suspects: std::collections::BTreeMap<(String, u64, foca::Incarnation), u32>,
    /// The lives reported up and not yet down or replaced: only these are reported
    /// [`Output::Replaced`] (foca renames a member declared down too).
    live: std::collections::BTreeSet<(String, u64)>,
    /// Checks after which a suspect is declared down here (over twice foca's timeout).
    stuck_after: u32,
    /// This node's incarnation as its latest packet carried it (foca keeps it private):
    /// what a refutation after a stall must raise ([`Membership::refute_after_stall`]).
    incarnation: foca::Incarnation,
    /// While `Some(n)`, the window after refutation `n` in which a `TurnUndead` is ignored.
    refuting: Option<u64>,
    /// Refutations after a stall made (what `refuting` numbers).
    refutations: u64,
    /// In that window, the senders whose last packet was a `TurnUndead` (one was ignored):
    /// a second in a row means the sender holds this node down, and it is obeyed.
    undead_from: std::collections::BTreeSet<String>,
    /// foca's suspicion time: how long that window lasts.
    suspicion: Duration,
    #[cfg(feature = "fault-switches")]
    switches: FaultSwitches,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("identity", self.foca.identity())
            .field("members", &self.foca.num_members())
            .finish_non_exhaustive()
    }
}

struct Collect<'a> {
    out: &'a mut Vec<Output>,
    auth: &'a Authenticator,
    defunct: bool,
    rejoined: bool,
    /// The incarnation the last packet sent carried.
    incarnation: Option<foca::Incarnation>,
    /// A `TurnUndead` to this address is not sent: foca's courtesy message for a suspicion
    /// that ran out after it was refuted ([`Membership::handle_timer`]).
    withhold_turn_undead: Option<std::net::SocketAddr>,
    /// Whether one was withheld.
    withheld: bool,
}

impl<'a> Collect<'a> {
    fn new(out: &'a mut Vec<Output>, auth: &'a Authenticator) -> Self {
        Collect {
            out,
            auth,
            defunct: false,
            rejoined: false,
            incarnation: None,
            withhold_turn_undead: None,
            withheld: false,
        }
    }
}

impl Runtime<NodeIdentity> for Collect<'_> {
    fn notify(&mut self, n: Notification<'_, NodeIdentity>) {
        match n {
            Notification::MemberUp(id) if !id.is_placeholder() => {
                self.out.push(Output::Up(id.clone()));
            }
            Notification::Rename(old, id) if !id.is_placeholder() => {
                if !old.is_placeholder() && old.generation < id.generation {
                    self.out.push(Output::Replaced(old.clone()));
                }
                self.out.push(Output::Up(id.clone()));
            }
            Notification::MemberDown(id) if !id.is_placeholder() => {
                self.out.push(Output::Down(id.clone()));
            }
            // foca renews the identity itself (`Identity::renew` returns one) and reports
            // `Rejoin` instead of `Defunct`; both mean the others declared this node down.
            Notification::Defunct => self.defunct = true,
            Notification::Rejoin(_) => self.rejoined = true,
            _ => {}
        }
    }

    fn send_to(&mut self, to: NodeIdentity, data: &[u8]) {
        use foca::Codec;
        if let Ok(h) = Codec::<NodeIdentity>::decode_header(&mut foca::PostcardCodec, data) {
            if h.message == foca::Message::TurnUndead
                && self.withhold_turn_undead == Some(to.gossip)
            {
                self.withheld = true;
                return;
            }
            self.incarnation = Some(h.src_incarnation);
        }
        self.out.push(Output::Send {
            to: to.gossip,
            packet: self.auth.seal(data),
        });
    }

    fn submit_after(&mut self, timer: Timer<NodeIdentity>, after: Duration) {
        self.out.push(Output::Schedule {
            timer: MembershipTimer::Foca(timer),
            after,
        });
    }
}

/// foca's LAN settings scaled to `cluster_size` (a probe every second, gossip every 200 ms,
/// suspicion time derived from the cluster size), with faster healing: every 5 s a node
/// announces itself to one random member and to two members it believes down (foca's
/// defaults are 30 s and 65 s). After a partition the two sides have declared each other
/// down; these announcements are what brings them back together, so their period bounds
/// how long a healed partition takes to converge (measured by the simulator).
pub fn lan_config(cluster_size: u32) -> foca::Config {
    use std::num::{NonZeroU32, NonZeroUsize};
    let mut c =
        foca::Config::new_lan(NonZeroU32::new(cluster_size.max(1)).unwrap_or(NonZeroU32::MIN));
    c.periodic_announce = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(5),
        num_members: NonZeroUsize::MIN,
    });
    c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(5),
        num_members: NonZeroUsize::MIN.saturating_add(1),
    });
    // foca sends each update and broadcast item at most `max_transmissions` times, 4·log10(n+1)
    // by default: 2 for a 4-node cluster. A gossip round goes to 3 members, picked in member-
    // list order when there are no more than 3, so the last member of every node's list never
    // got an item (found by the simulator: seeds 922, 1963, 2157). At least 6 transmissions
    // cover a whole round and then some.
    c.max_transmissions = c
        .max_transmissions
        .max(std::num::NonZeroU8::new(6).unwrap_or(std::num::NonZeroU8::MIN));
    c
}

impl Membership {
    /// A node that knows only itself; [`Membership::join`] contacts the seeds.
    pub fn new(
        identity: NodeIdentity,
        config: foca::Config,
        rng_seed: u64,
        secret: &[u8],
        seeds: Vec<SocketAddr>,
    ) -> Self {
        let inbox = ItemHandler::default();
        let config_suspicion = config.suspect_to_down_after;
        let stuck_after = (2 * config.suspect_to_down_after.as_millis()
            / REJOIN_EVERY.as_millis().max(1)) as u32
            + 2;
        let foca = Foca::with_custom_broadcast(
            identity,
            config,
            StdRng::seed_from_u64(rng_seed),
            PostcardCodec,
            inbox.clone(),
        );
        Membership {
            foca,
            inbox,
            auth: Authenticator::new(secret),
            seeds,
            stats: MembershipStats::default(),
            suspects: std::collections::BTreeMap::new(),
            live: std::collections::BTreeSet::new(),
            stuck_after,
            incarnation: 0,
            refuting: None,
            refutations: 0,
            undead_from: std::collections::BTreeSet::new(),
            suspicion: config_suspicion,
            #[cfg(feature = "fault-switches")]
            switches: FaultSwitches::default(),
        }
    }

    /// Breaks the protocol on purpose (tests of the simulator's checker only).
    #[cfg(feature = "fault-switches")]
    pub fn set_fault_switches(&mut self, switches: FaultSwitches) {
        self.switches = switches;
    }

    /// This node's identity (its generation changes if the cluster declared it down).
    pub fn identity(&self) -> &NodeIdentity {
        self.foca.identity()
    }

    fn announce_to_seeds(
        foca: &mut Foca<NodeIdentity, PostcardCodec, StdRng, ItemHandler>,
        seeds: &[SocketAddr],
        rt: &mut Collect<'_>,
    ) -> Result<(), foca::Error> {
        let own = foca.identity().gossip;
        for s in seeds.iter().filter(|s| **s != own) {
            foca.announce(NodeIdentity::seed(*s), &mut *rt)?;
        }
        Ok(())
    }

    /// Counters.
    pub fn stats(&self) -> MembershipStats {
        self.stats
    }

    /// How many members this node believes alive, itself included (cheap).
    pub fn num_live(&self) -> usize {
        self.foca.num_members() + 1
    }

    /// The members this node believes alive, itself included, sorted by name.
    pub fn live(&self) -> Vec<NodeIdentity> {
        let mut v: Vec<NodeIdentity> = self
            .foca
            .iter_members()
            .map(|m| m.id().clone())
            .filter(|id| !id.is_placeholder())
            .chain(std::iter::once(self.foca.identity().clone()))
            .collect();
        v.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Every member foca tracks, with its state (alive, suspect or down): for diagnostics.
    pub fn member_states(&self) -> Vec<(NodeIdentity, foca::State)> {
        self.foca
            .iter_membership_state()
            .map(|m| (m.id().clone(), m.state()))
            .collect()
    }

    /// The ring of the live view.
    pub fn ring(&self, vnodes: u16) -> Ring {
        #[cfg(feature = "fault-switches")]
        if self.switches.ring_without_self {
            let own = self.identity().name.clone();
            return Ring::new(
                self.live()
                    .into_iter()
                    .map(|id| id.name)
                    .filter(|n| *n != own),
                vnodes,
            );
        }
        Ring::new(self.live().into_iter().map(|id| id.name), vnodes)
    }

    fn run(
        &mut self,
        f: impl FnOnce(
            &mut Foca<NodeIdentity, PostcardCodec, StdRng, ItemHandler>,
            &mut Collect<'_>,
        ) -> Result<(), foca::Error>,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        let mut c = Collect::new(&mut out, &self.auth);
        if f(&mut self.foca, &mut c).is_err() {
            self.stats.invalid_packets += 1;
        }
        if c.defunct {
            // The others declared this node down (a partition, a long pause): come back as
            // a new generation, which wins over the old one everywhere.
            self.stats.rejoins += 1;
            if let Some(renewed) = foca::Identity::renew(self.foca.identity()) {
                let _ = self.foca.change_identity(renewed, &mut c);
            }
            let _ = Self::announce_to_seeds(&mut self.foca, &self.seeds, &mut c);
            c.out.push(Output::Rejoined);
        } else if c.rejoined {
            // foca already renewed the identity; make sure the cluster hears of the new one
            // (found by the simulator, seed 507: a node renewed by foca went on addressed
            // under its old identity by everyone, whose packets foca then ignored).
            self.stats.rejoins += 1;
            let _ = Self::announce_to_seeds(&mut self.foca, &self.seeds, &mut c);
            c.out.push(Output::Rejoined);
        }
        if c.withheld {
            self.stats.stale_turn_undead_withheld += 1;
        }
        if let Some(i) = c.incarnation {
            self.incarnation = i;
        }
        // A life replaced after it was declared down ended already, reported by its `Down`:
        // only one that was live here is reported replaced.
        let live = &mut self.live;
        out.retain(|o| match o {
            Output::Up(id) => {
                live.insert((id.name.clone(), id.generation));
                true
            }
            Output::Down(id) => {
                live.remove(&(id.name.clone(), id.generation));
                true
            }
            Output::Replaced(id) => live.remove(&(id.name.clone(), id.generation)),
            _ => true,
        });
        out.extend(self.inbox.drain().into_iter().map(Output::Received));
        out
    }

    /// Disseminates a coherence item to the cluster, piggybacked on membership traffic
    /// (foca's custom broadcasts: each member retransmits it a bounded number of times).
    /// Returns false when the item is not new.
    pub fn broadcast(&mut self, item: &[u8]) -> bool {
        self.foca.add_broadcast(item).unwrap_or(false)
    }

    /// Broadcast items (coherence items and heartbeats) still queued for retransmission.
    pub fn broadcast_backlog(&self) -> usize {
        self.foca.custom_broadcast_backlog()
    }

    /// Like [`Membership::broadcast`], and sends a gossip round at once instead of waiting
    /// for the next periodic one (foca's LAN default is every 200 ms): what the node does
    /// for an invalidation, so that it reaches the cluster in one network hop.
    pub fn broadcast_now(&mut self, item: &[u8]) -> Vec<Output> {
        if !self.broadcast(item) {
            return Vec::new();
        }
        self.run(|foca, rt| foca.gossip(rt))
    }

    /// Announces this node to its seeds (and so to the cluster), and starts the rejoin check.
    pub fn join(&mut self) -> Vec<Output> {
        let seeds = self.seeds.clone();
        let mut out = self.run(|foca, rt| Self::announce_to_seeds(foca, &seeds, rt));
        out.push(Output::Schedule {
            timer: MembershipTimer::Rejoin,
            after: REJOIN_EVERY,
        });
        out
    }

    /// A packet arrived on the gossip socket.
    pub fn handle_packet(&mut self, packet: &[u8]) -> Vec<Output> {
        let payload = match self.auth.open(packet) {
            Ok(p) => p.to_vec(),
            Err(_) => {
                self.stats.rejected_packets += 1;
                return Vec::new();
            }
        };
        if self.refuting.is_some()
            && let Some((sender, undead)) = Self::sender(&payload)
        {
            // foca 1.0 sends `TurnUndead` when a suspicion's timer runs out whether or
            // not the suspect refuted it meanwhile (`ChangeSuspectToDown` checks the
            // incarnation before it marks the member down, not before this courtesy
            // message; this build withholds it, `stale_suspicion`, an earlier one sends
            // it): one such message is ignored. A member that holds this node
            // down answers every packet of it with `TurnUndead` and nothing else: the
            // second in a row from one sender is obeyed. (All were ignored for the
            // whole window once, twice foca's suspicion time: a member paused past
            // failure detection went on as its old self for 8 s, its probes of the
            // others unanswered, until it declared them down and its `TurnUndead`
            // made each of them rejoin under a new identity; a review, 2026-12-06.)
            if !undead {
                self.undead_from.remove(&sender);
            } else if self.undead_from.insert(sender) {
                self.stats.turn_undead_ignored += 1;
                return Vec::new();
            }
        }
        self.inbox
            .set_relay(self.foca.custom_broadcast_backlog() < RELAY_BACKLOG);
        self.run(|foca, rt| foca.handle_data(&payload, rt))
    }

    /// A timer scheduled by an earlier [`Output::Schedule`] fired.
    pub fn handle_timer(&mut self, timer: MembershipTimer) -> Vec<Output> {
        match timer {
            MembershipTimer::Foca(t) => {
                let stale = self.stale_suspicion(&t);
                self.run(|foca, rt| {
                    rt.withhold_turn_undead = stale;
                    foca.handle_timer(t, rt)
                })
            }
            MembershipTimer::RefutationOver(n) => {
                if self.refuting == Some(n) {
                    self.refuting = None;
                    self.undead_from.clear();
                }
                Vec::new()
            }
            MembershipTimer::Rejoin => {
                let seeds = self.seeds.clone();
                #[cfg(feature = "fault-switches")]
                let enabled = !self.switches.skip_seed_rejoin;
                #[cfg(not(feature = "fault-switches"))]
                let enabled = true;
                let mut out = if enabled && self.foca.num_members() == 0 {
                    self.stats.seed_announces += 1;
                    self.run(|foca, rt| Self::announce_to_seeds(foca, &seeds, rt))
                } else {
                    Vec::new()
                };
                out.extend(self.declare_stuck_suspects());
                out.push(Output::Schedule {
                    timer: MembershipTimer::Rejoin,
                    after: REJOIN_EVERY,
                });
                out
            }
        }
    }

    /// foca declares a suspect down from a timer that carries its current timer token, and
    /// ignores every timer issued before its token changes (its identity was renewed, or it
    /// was briefly alone). A member suspected just before that stays suspect for good unless
    /// it refutes, and it refutes only if it hears of the suspicion, whose dissemination may
    /// have ended while it was cut off (found by the turmoil test: after a partition healed,
    /// two nodes listed the third as suspect for over 120 s, and the cluster never agreed
    /// again). So a member still suspect with the same incarnation at consecutive checks
    /// spanning more than twice the suspicion timeout is declared down here; it hears of
    /// that (foca tells a member it declares down), renews its identity and rejoins.
    fn declare_stuck_suspects(&mut self) -> Vec<Output> {
        let mut next = std::collections::BTreeMap::new();
        let mut stuck = Vec::new();
        for m in self.foca.iter_membership_state() {
            if m.state() != foca::State::Suspect {
                continue;
            }
            let key = (m.id().name.clone(), m.id().generation, m.incarnation());
            let seen = self.suspects.get(&key).copied().unwrap_or(0) + 1;
            if seen >= self.stuck_after {
                stuck.push(foca::Member::new(
                    m.id().clone(),
                    m.incarnation(),
                    foca::State::Down,
                ));
            } else {
                next.insert(key, seen);
            }
        }
        self.suspects = next;
        if stuck.is_empty() {
            return Vec::new();
        }
        self.stats.stuck_suspects += stuck.len() as u64;
        self.run(|foca, rt| foca.apply_many(stuck.into_iter(), true, rt))
    }

    /// This node stalled (a pause: SIGSTOP, a VM freeze): the others may have begun to
    /// suspect it meanwhile, and a suspicion is lifted only by the suspect's refutation (a
    /// higher incarnation), never by its answering a probe. The update that it is suspect
    /// may never reach it, and the suspicion then runs out into a `Down` while it is alive
    /// and answering — after which it rejoins under a new identity and, its lease lapsed,
    /// drops what it owns (traced in a membership review: a 4 s pause, a member suspecting it
    /// 1 s in and declaring it down 4 s later, 1.4 s after it had resumed). So it refutes at
    /// once: it raises its incarnation as if told it was suspect, and gossips it.
    pub fn refute_after_stall(&mut self) -> Vec<Output> {
        self.stats.stall_refutations += 1;
        self.refute()
    }

    /// A member answered again after a silence (a cut, or a pause of either end; see
    /// [`Silences`]): it may have suspected this node meanwhile without this node hearing
    /// of it, and such a suspicion runs out into a `Down`. So this node refutes at once, as
    /// after a stall of its own, but opens no window: the suspicion's timer, once it runs
    /// out on a refuted suspicion, sends nothing ([`Membership::handle_timer`]), so a
    /// `TurnUndead` after this refutation says that its sender holds this node down, and
    /// is obeyed. (A window here ignored genuine ones: a member the others declared down
    /// went on as its old self, its lease renewed by members that only suspected it; the
    /// simulator's seed 71 lost increments that way, and a review found the windows could
    /// extend each other without end.)
    pub fn refute_after_silence(&mut self) -> Vec<Output> {
        self.stats.silence_refutations += 1;
        self.raise_incarnation()
    }

    /// Raises this node's incarnation as if told it was suspect, and gossips it.
    fn raise_incarnation(&mut self) -> Vec<Output> {
        let me = foca::Member::new(
            self.foca.identity().clone(),
            self.incarnation,
            foca::State::Suspect,
        );
        self.run(|foca, rt| foca.apply_many(std::iter::once(me), true, rt))
    }

    /// Refutes ([`Membership::raise_incarnation`]) and opens the window in which one
    /// `TurnUndead` in a row per sender is ignored (`handle_packet`): members of earlier
    /// builds send one when a suspicion of this node runs out after the refutation.
    fn refute(&mut self) -> Vec<Output> {
        self.refutations += 1;
        let n = self.refutations;
        self.refuting = Some(n);
        self.undead_from.clear();
        let mut out = self.raise_incarnation();
        // Suspicions raised before the refutation run out within foca's suspicion time of
        // it; their timers' `TurnUndead` is ignored until then (`handle_packet`). Twice
        // that, for a suspicion relayed late.
        out.push(Output::Schedule {
            timer: MembershipTimer::RefutationOver(n),
            after: self.suspicion * 2,
        });
        out
    }

    /// The gossip address of the member a suspicion timer is about, when that timer finds
    /// the suspicion refuted (or the member under another identity): foca 1.0 then marks
    /// nothing down, but still sends the member `TurnUndead` "as a courtesy" (its
    /// `ChangeSuspectToDown` checks the incarnation before the `Down`, not before the
    /// message), and the member, refuted and alive, would rejoin under a new identity over
    /// it — without its lease, dropping what it owns. That message is withheld. Every
    /// member withholds its own, so no window on the receiving side is needed for them
    /// (a member of an earlier build still sends them: the window after a stall stays).
    fn stale_suspicion(&self, t: &Timer<NodeIdentity>) -> Option<std::net::SocketAddr> {
        let Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            ..
        } = t
        else {
            return None;
        };
        let genuine = self.foca.iter_membership_state().any(|m| {
            m.id() == member_id
                && m.incarnation() == *incarnation
                && m.state() == foca::State::Suspect
        });
        (!genuine).then_some(member_id.gossip)
    }

    /// The sender's name of an authenticated packet, and whether it is foca's `TurnUndead`
    /// ("you are down").
    fn sender(payload: &[u8]) -> Option<(String, bool)> {
        use foca::Codec;
        Codec::<NodeIdentity>::decode_header(&mut PostcardCodec, payload)
            .ok()
            .map(|h| (h.src.name, h.message == foca::Message::TurnUndead))
    }

    /// Leaves the cluster gracefully (the others mark this node down at once instead of
    /// waiting for the failure detector).
    pub fn leave(mut self) -> Vec<Output> {
        let mut out = Vec::new();
        let mut c = Collect::new(&mut out, &self.auth);
        let _ = self.foca.leave_cluster(&mut c);
        out
    }
}

#[cfg(test)]
mod tests {
    //! Gossip checked against the attacks tried on the RPC handshake: a forged or tampered
    //! packet, a node's own packet reflected back to it, and a recorded packet replayed after
    //! its sender left.
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SECRET: &[u8] = b"a gossip secret of 32 bytes.....";

    fn node(name: &str, port: u16, seeds: Vec<SocketAddr>) -> Membership {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let id = NodeIdentity {
            name: name.into(),
            gossip: addr,
            rpc: addr,
            resp: addr,
            admin: addr,
            cluster_resp: None,
            generation: 1,
        };
        Membership::new(id, lan_config(3), u64::from(port), SECRET, seeds)
    }

    /// The packets in `out` addressed to `to`.
    fn packets_to(out: &[Output], to: &Membership) -> Vec<Vec<u8>> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send { to: t, packet } if *t == to.identity().gossip => {
                    Some(packet.clone())
                }
                _ => None,
            })
            .collect()
    }

    /// Every packet one member sent the other, then every one it got back.
    type Exchanged = (Vec<Vec<u8>>, Vec<Vec<u8>>);

    /// Delivers packets back and forth for a few rounds; returns every packet `a` sent `b`
    /// and every packet `b` sent `a`.
    fn exchange(a: &mut Membership, b: &mut Membership, first: Vec<Output>) -> Exchanged {
        let (mut a_to_b, mut b_to_a) = (Vec::new(), Vec::new());
        let mut to_b = packets_to(&first, b);
        for _ in 0..4 {
            let mut to_a = Vec::new();
            for p in to_b.drain(..) {
                a_to_b.push(p.clone());
                to_a.extend(packets_to(&b.handle_packet(&p), a));
            }
            for p in to_a {
                b_to_a.push(p.clone());
                to_b.extend(packets_to(&a.handle_packet(&p), b));
            }
        }
        (a_to_b, b_to_a)
    }

    /// The state `b` holds member `name` in.
    fn state_of(b: &Membership, name: &str) -> Option<foca::State> {
        b.member_states()
            .into_iter()
            .find(|(id, _)| id.name == name)
            .map(|(_, s)| s)
    }

    /// `b` suspects `a` at `incarnation` (its probes went unanswered), without `a` hearing
    /// of it.
    fn suspect(b: &mut Membership, a: &Membership, incarnation: foca::Incarnation) {
        let m = foca::Member::new(a.identity().clone(), incarnation, foca::State::Suspect);
        let _ = b.run(|foca, rt| foca.apply_many(std::iter::once(m), false, rt));
    }

    /// Members `a` (port 1) and `b` (port 2), `a` joined through `b`; with the packets the
    /// join exchanged ([`exchange`]).
    fn joined_pair() -> (Membership, Membership, Exchanged) {
        let mut b = node("b", 2, vec![]);
        let mut a = node("a", 1, vec![b.identity().gossip]);
        let out = a.join();
        let packets = exchange(&mut a, &mut b, out);
        (a, b, packets)
    }

    #[test]
    fn forged_tampered_and_reflected_packets_change_nothing() {
        let (a, mut b, (sent, replies)) = joined_pair();
        assert_eq!(
            (a.num_live(), b.num_live()),
            (2, 2),
            "each sees itself and the other"
        );
        assert!(!replies.is_empty());

        // Forged with another secret, or tampered with: refused and counted.
        let before = b.stats().rejected_packets;
        let forged = Authenticator::new(b"not the secret").seal(b"anything");
        assert!(b.handle_packet(&forged).is_empty());
        let mut tampered = sent[0].clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(b.handle_packet(&tampered).is_empty());
        assert_eq!(b.stats().rejected_packets, before + 2);

        // b's own packets to a, sent back to b: foca drops data from itself.
        for p in replies {
            let out = b.handle_packet(&p);
            assert!(
                !out.iter()
                    .any(|o| matches!(o, Output::Up(id) if id.name == "b")),
                "b never learns itself as a peer"
            );
        }
        assert_eq!(b.num_live(), 2);
    }

    /// `b`'s membership events while `a2` (a's next life, at a's address) joins it.
    fn events_of_a_restart(b: &mut Membership, a: &Membership) -> Vec<(&'static str, String, u64)> {
        let mut id = a.identity().clone();
        id.generation = 2;
        let mut a2 = Membership::new(id, lan_config(3), 7, SECRET, vec![b.identity().gossip]);
        let mut seen = Vec::new();
        let mut to_b = packets_to(&a2.join(), b);
        for _ in 0..4 {
            let mut to_a = Vec::new();
            for p in to_b.drain(..) {
                let out = b.handle_packet(&p);
                to_a.extend(packets_to(&out, &a2));
                seen.extend(out.into_iter().filter_map(|o| match o {
                    Output::Up(id) => Some(("up", id.name, id.generation)),
                    Output::Down(id) => Some(("down", id.name, id.generation)),
                    Output::Replaced(id) => Some(("replaced", id.name, id.generation)),
                    _ => None,
                }));
            }
            for p in to_a {
                to_b.extend(packets_to(&a2.handle_packet(&p), b));
            }
        }
        seen
    }

    /// A member restarted at its address before anyone declared it down (foca's
    /// `Rename`): its old life is reported as ended (`Replaced`) before the new one is
    /// up, so that a witness counts it (`strata_cluster::warm::count_ended`); one that had
    /// been declared down (reported by its `Down`) is not reported again.
    #[test]
    fn a_member_restarted_before_it_was_declared_down_is_reported_replaced() {
        let (a, mut b, _) = joined_pair();
        assert_eq!(b.num_live(), 2);
        let events = events_of_a_restart(&mut b, &a);
        assert_eq!(
            events,
            [("replaced", "a".to_owned(), 1), ("up", "a".to_owned(), 2)]
        );
        assert_eq!(b.num_live(), 2);

        let (a, mut b, _) = joined_pair();
        let ended = a.identity().clone();
        let bye = a.leave();
        let mut downs = Vec::new();
        for p in packets_to(&bye, &b) {
            downs.extend(b.handle_packet(&p));
        }
        assert!(
            downs
                .iter()
                .any(|o| matches!(o, Output::Down(id) if *id == ended))
        );
        let a = node("a", 1, vec![]);
        let events = events_of_a_restart(&mut b, &a);
        assert!(
            events.iter().all(|(what, _, _)| *what != "replaced"),
            "{events:?}"
        );
        assert!(events.contains(&("up", "a".to_owned(), 2)), "{events:?}");
    }

    #[test]
    fn a_recorded_packet_replayed_after_its_sender_left_does_not_bring_it_back() {
        let (a, mut b, (recorded, _)) = joined_pair();
        assert_eq!(b.num_live(), 2);
        let bye = a.leave();
        for p in packets_to(&bye, &b) {
            b.handle_packet(&p);
        }
        assert_eq!(b.num_live(), 1, "a left");
        for p in &recorded {
            let out = b.handle_packet(p);
            assert!(
                !out.iter()
                    .any(|o| matches!(o, Output::Up(id) if id.name == "a")),
                "a replayed packet does not revive a member that left"
            );
        }
        assert_eq!(b.num_live(), 1);
    }
    /// A member suspected by another while it was paused refutes the suspicion as soon as
    /// it notices its stall, before the suspicion can run out into a `Down`; without the
    /// refutation the suspicion stays, answered probes or not.
    #[test]
    fn a_member_back_from_a_stall_refutes_a_suspicion_it_never_heard_of() {
        let (mut a, mut b, _) = joined_pair();
        assert_eq!(state_of(&b, "a"), Some(foca::State::Alive));
        // b suspects a (its probes went unanswered while a was stopped); a never hears of it.
        suspect(&mut b, &a, 0);
        // The timer b's own failed probe would have set (token 0: b's timers were never
        // reset).
        let suspicion_timers = [foca::Timer::ChangeSuspectToDown {
            member_id: a.identity().clone(),
            incarnation: 0,
            token: 0,
        }];
        assert_eq!(state_of(&b, "a"), Some(foca::State::Suspect));
        // a answers b's traffic: still suspect (SWIM lifts it only on a refutation).
        let out = b.join();
        exchange(&mut a, &mut b, out);
        assert_eq!(state_of(&b, "a"), Some(foca::State::Suspect));
        // a notices its stall and refutes: b sees it alive again.
        let out = a.refute_after_stall();
        assert!(
            !packets_to(&out, &b).is_empty(),
            "the refutation is gossiped to b"
        );
        for p in packets_to(&out, &b) {
            b.handle_packet(&p);
        }
        assert_eq!(state_of(&b, "a"), Some(foca::State::Alive));
        assert_eq!(a.stats().stall_refutations, 1);
        // b's suspicion timer then runs out: foca does not mark a down (it refuted), but
        // sends it `TurnUndead` all the same — withheld by this build
        // (`Membership::stale_suspicion`), sent by an earlier one, as here: a, refuting,
        // does not rejoin over it.
        for t in suspicion_timers {
            let stale = b.run(|foca, rt| foca.handle_timer(t, rt));
            for p in packets_to(&stale, &a) {
                let out = a.handle_packet(&p);
                assert!(
                    !out.contains(&Output::Rejoined),
                    "a rejoined over a stale TurnUndead"
                );
            }
        }
        assert_eq!(state_of(&b, "a"), Some(foca::State::Alive));
        assert_eq!(a.stats().rejoins, 0);
        assert_eq!(a.stats().turn_undead_ignored, 1);
        // A second stall raises the incarnation again: a suspicion of the new one is
        // refuted too.
        suspect(&mut b, &a, a.incarnation);
        assert_eq!(state_of(&b, "a"), Some(foca::State::Suspect));
        let out = a.refute_after_stall();
        for p in packets_to(&out, &b) {
            b.handle_packet(&p);
        }
        assert_eq!(state_of(&b, "a"), Some(foca::State::Alive));
    }

    /// A member declared down while it was paused (not merely suspected) learns it from the
    /// others' replies within a few packets of its refutation window, instead of going on
    /// as its old self for the whole window: its probes unanswered, it declared the others
    /// down and made each of them rejoin (a review, 2026-12-06).
    #[test]
    fn a_member_declared_down_while_paused_rejoins_within_its_refutation_window() {
        let (mut a, mut b, _) = joined_pair();
        let down = foca::Member::new(a.identity().clone(), 0, foca::State::Down);
        let _ = b.run(|foca, rt| foca.apply_many(std::iter::once(down), false, rt));
        assert_eq!(b.num_live(), 1, "b holds a down");
        let old = a.identity().generation;
        let mut out = a.refute_after_stall();
        let mut rounds = 0;
        while a.stats().rejoins == 0 {
            rounds += 1;
            assert!(
                rounds <= 3,
                "a still takes itself for live after {rounds} rounds"
            );
            for p in packets_to(&out, &b) {
                for r in packets_to(&b.handle_packet(&p), &a) {
                    let _ = a.handle_packet(&r);
                }
            }
            out = a.run(|foca, rt| foca.gossip(rt));
        }
        assert_eq!(
            a.stats().turn_undead_ignored,
            1,
            "only the first was ignored"
        );
        assert_ne!(
            a.identity().generation,
            old,
            "a came back under a new identity"
        );
    }

    /// An answer that grants the lease makes the node refute when it ends a silence (more
    /// than `SILENCE_MS` without an answer from that member) and no refutation was made in
    /// the last `COALESCE_MS`; a first answer, answers out of order, and answers that do
    /// not grant do not, but count as contact.
    #[test]
    fn only_a_granting_answer_after_a_silence_makes_the_node_refute() {
        let mut s = Silences::default();
        assert!(
            !s.answered("b", 1_000, true),
            "a first answer ends no silence"
        );
        assert!(!s.answered("b", 1_200, true));
        assert!(!s.answered("b", 1_200 + Silences::SILENCE_MS, true));
        assert!(!s.answered("c", 4_000, true));
        assert!(!s.answered("d", 4_000, true));
        assert!(
            s.answered("b", 5_000, true),
            "b answered 3.1 s after its last answer"
        );
        assert!(
            !s.answered("b", 4_900, true),
            "an answer older than the latest"
        );
        // d's silence ends too, 0.2 s after the refutation: that one covers it.
        assert!(!s.answered("d", 5_200, true));
        // c's ends 0.3 s after: another refutation.
        assert!(s.answered("c", 5_000 + Silences::COALESCE_MS, true));
        // A refusal is contact but no refutation: the member does not count this node live.
        assert!(!s.answered("e", 20_000, true));
        assert!(!s.answered("e", 30_000, false));
        assert!(
            !s.answered("e", 30_200, true),
            "its refusal ended the silence"
        );
        assert!(s.answered("e", 40_000, true));
        // Bounded by the names it remembers: the least recent goes.
        for i in 0..Silences::MAX_MEMBERS as u64 + 10 {
            s.answered(&format!("m{i}"), 50_000 + i, true);
        }
        assert_eq!(s.last.len(), Silences::MAX_MEMBERS);
        assert!(!s.last.contains_key("b") && s.last.contains_key("m1033"));
    }

    /// A member suspected while it was cut off from another refutes when that member
    /// answers again ([`Membership::refute_after_silence`]). The suspicion's timer then
    /// runs out on a refuted suspicion: foca marks nothing down, and the `TurnUndead` it
    /// would send as a courtesy is withheld, so the member does not rejoin. A suspicion
    /// that runs out unrefuted is a `Down`, and its `TurnUndead` is sent and obeyed at
    /// once (no window after a silence).
    #[test]
    fn a_refuted_suspicion_sends_no_turn_undead_and_an_unrefuted_one_is_obeyed() {
        let (mut a, mut b, _) = joined_pair();
        suspect(&mut b, &a, 0);
        assert_eq!(state_of(&b, "a"), Some(foca::State::Suspect));
        let out = a.refute_after_silence();
        for p in packets_to(&out, &b) {
            b.handle_packet(&p);
        }
        assert_eq!(state_of(&b, "a"), Some(foca::State::Alive));
        assert_eq!(a.stats().silence_refutations, 1);
        let timer = |incarnation| {
            MembershipTimer::Foca(foca::Timer::ChangeSuspectToDown {
                member_id: a.identity().clone(),
                incarnation,
                token: 0,
            })
        };
        // b's timer for the refuted suspicion runs out: nothing sent to a.
        let out = b.handle_timer(timer(0));
        assert!(packets_to(&out, &a).is_empty(), "{out:?}");
        assert_eq!(b.stats().stale_turn_undead_withheld, 1);
        assert_eq!(state_of(&b, "a"), Some(foca::State::Alive));
        // A suspicion of a's current incarnation that runs out unrefuted: a is down, told
        // so, and rejoins at once.
        let current = a.incarnation;
        suspect(&mut b, &a, current);
        let out = b.handle_timer(timer(current));
        assert_eq!(b.num_live(), 1, "b holds a down");
        let told = packets_to(&out, &a);
        assert!(!told.is_empty(), "b tells a it is down");
        let rejoined = told
            .iter()
            .any(|p| a.handle_packet(p).contains(&Output::Rejoined));
        assert!(
            rejoined,
            "a ignored the TurnUndead of a member that holds it down"
        );
        assert_eq!(a.stats().turn_undead_ignored, 0);
    }
}
