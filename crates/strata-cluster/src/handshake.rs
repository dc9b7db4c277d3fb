//! The peer RPC handshake (version 2), as two small state machines with no I/O: [`Caller`]
//! for the side that dials, [`Callee`] for the side that accepts. The node's TCP code and the
//! fuzz target drive the same code.
//!
//! ```text
//! 1. caller → Login     { caller: C, callee: S, generation, nonce: Nc }   (16 random bytes)
//! 2. callee → Challenge { nonce: Ns }                                     (16 random bytes)
//! 3. caller → Prove     { proof: P(c→s) }
//! 4. callee → Welcome   { proof: P(s→c), generation, latest }
//!
//! P(d) = HMAC-SHA256(secret, "strata peer auth v2" ‖ d ‖ len(C) ‖ C ‖ len(S) ‖ S ‖ Nc ‖ Ns)
//! ```
//!
//! where `d` is one byte naming the direction (1: caller to callee, 2: callee to caller) and
//! `len` is a 4-byte big-endian length. Why this is sound (the full argument, with what an
//! attacker can and cannot do, is in `docs/protocol.md`):
//!
//! - **The callee proves nothing before the caller has.** It answers a `Login` with a nonce
//!   only; the first MAC it computes for the connection is the one it *checks*. A node is
//!   therefore never a signing oracle for an unauthenticated party: the reflection attack on
//!   version 1 (two connections, each asking the node to tag the other's challenge) has
//!   nothing to reflect.
//! - **Each proof binds the direction, both identities and both nonces**, each identity
//!   length-prefixed, so a proof made for one run, one direction or one pair of names
//!   verifies in no other: a caller's proof cannot be replayed as a callee's or vice versa,
//!   and a proof observed on one connection is useless on another (the other side's nonce
//!   differs, with probability 1 − 2⁻¹²⁸).
//! - **Names are checked before any MAC work**: a caller claiming the callee's own name, a
//!   callee name that is not this node's, a name longer than [`MAX_NAME_LEN`], or a nonce of
//!   the wrong length are refused at `Login`. (The node also refuses callers that are not
//!   members of its view.)
//! - Every handshake frame is tiny ([`MAX_HANDSHAKE_FRAME`]); the node enforces it and
//!   bounds the number and lifetime of connections that have not logged in.
//!
//! What it does not do: it authenticates the connection's *opening*, not each frame after
//! it. An attacker on the path (who can read and inject TCP segments) can hijack a connection
//! after the handshake; mutual TLS on the RPC port (`cluster.tls`) is the answer to that.

use crate::auth::{Authenticator, FULL_TAG_LEN};
use crate::rpc::{Request, Response};

/// Bytes of a handshake nonce.
pub const NONCE_LEN: usize = 16;
/// Longest node name a handshake accepts.
pub const MAX_NAME_LEN: usize = 255;
/// Largest frame a connection may send before it has logged in (a `Login` with two
/// maximal names is about 560 bytes).
pub const MAX_HANDSHAKE_FRAME: usize = 1024;

const LABEL: &[u8] = b"strata peer auth v2";

/// A fresh nonce from the thread's CSPRNG (ChaCha, seeded and reseeded from the OS): it
/// must be unpredictable to an outsider.
pub fn fresh_nonce() -> [u8; NONCE_LEN] {
    rand::random()
}

/// Which side a proof comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The caller's proof (step 3).
    CallerToCallee = 1,
    /// The callee's proof (step 4).
    CalleeToCaller = 2,
}

/// Why a handshake failed. Every variant closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// A frame other than the one this step expects.
    #[error("unexpected handshake frame: expected {0}")]
    Unexpected(&'static str),
    /// A version-1 `Hello`: that handshake could be reflected and is no longer accepted.
    #[error("the version 1 handshake is not accepted: upgrade the peer")]
    Legacy,
    /// The caller claims to be the callee.
    #[error("caller claims this node's own name {0:?}")]
    OwnName(String),
    /// The caller addressed another node.
    #[error("caller addressed {wanted:?}, this node is {me:?}")]
    WrongCallee {
        /// The name the caller expected.
        wanted: String,
        /// This node's name.
        me: String,
    },
    /// An empty or overlong name.
    #[error("a node name of {0} bytes (1 to 255 allowed)")]
    BadName(usize),
    /// A nonce of the wrong length.
    #[error("a nonce of {0} bytes ({NONCE_LEN} expected)")]
    BadNonce(usize),
    /// The proof does not verify: the other side does not hold the cluster secret.
    #[error("{0:?} did not prove it holds the cluster secret")]
    BadProof(String),
    /// The other side refused the handshake.
    #[error("refused: {0}")]
    Refused(String),
}

/// The proof of `direction` for a run between `caller` and `callee` with these nonces.
pub fn proof(
    auth: &Authenticator,
    direction: Direction,
    caller: &str,
    callee: &str,
    caller_nonce: &[u8; NONCE_LEN],
    callee_nonce: &[u8; NONCE_LEN],
) -> [u8; FULL_TAG_LEN] {
    auth.mac(&transcript(
        direction,
        caller,
        callee,
        caller_nonce,
        callee_nonce,
    ))
}

/// What a proof is the MAC of: the label, the direction, both names length-prefixed and both
/// nonces (fixed length).
fn transcript(
    direction: Direction,
    caller: &str,
    callee: &str,
    caller_nonce: &[u8; NONCE_LEN],
    callee_nonce: &[u8; NONCE_LEN],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(LABEL.len() + 9 + caller.len() + callee.len() + 2 * NONCE_LEN);
    m.extend_from_slice(LABEL);
    m.push(direction as u8);
    for name in [caller, callee] {
        m.extend_from_slice(&(name.len() as u32).to_be_bytes());
        m.extend_from_slice(name.as_bytes());
    }
    m.extend_from_slice(caller_nonce);
    m.extend_from_slice(callee_nonce);
    m
}

fn check_name(name: &str) -> Result<(), HandshakeError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(HandshakeError::BadName(name.len()));
    }
    Ok(())
}

fn nonce_of(bytes: &[u8]) -> Result<[u8; NONCE_LEN], HandshakeError> {
    bytes
        .try_into()
        .map_err(|_| HandshakeError::BadNonce(bytes.len()))
}

/// The dialing side's handshake.
#[derive(Debug, Clone)]
pub struct Caller {
    me: String,
    peer: String,
    generation: u64,
    nonce: [u8; NONCE_LEN],
    peer_nonce: Option<[u8; NONCE_LEN]>,
}

impl Caller {
    /// A handshake from `me` (at `generation`) to the node named `peer`, with a fresh random
    /// `nonce`.
    pub fn new(me: &str, peer: &str, generation: u64, nonce: [u8; NONCE_LEN]) -> Self {
        Caller {
            me: me.to_owned(),
            peer: peer.to_owned(),
            generation,
            nonce,
            peer_nonce: None,
        }
    }

    /// Step 1: the `Login` to send.
    pub fn login(&self) -> Request {
        Request::Login {
            caller: self.me.clone(),
            callee: self.peer.clone(),
            generation: self.generation,
            nonce: self.nonce.to_vec(),
        }
    }

    /// Step 2 → 3: takes the callee's `Challenge`, returns the `Prove` to send.
    pub fn on_challenge(
        &mut self,
        auth: &Authenticator,
        resp: Response,
    ) -> Result<Request, HandshakeError> {
        let ns = match resp {
            Response::Challenge { nonce } => nonce_of(&nonce)?,
            Response::Error(e) => return Err(HandshakeError::Refused(e)),
            _ => return Err(HandshakeError::Unexpected("Challenge")),
        };
        self.peer_nonce = Some(ns);
        let p = proof(
            auth,
            Direction::CallerToCallee,
            &self.me,
            &self.peer,
            &self.nonce,
            &ns,
        );
        Ok(Request::Prove { proof: p.to_vec() })
    }

    /// Step 4: checks the callee's `Welcome`; returns the callee's coherence generation
    /// and latest sequence number.
    pub fn on_welcome(
        &self,
        auth: &Authenticator,
        resp: Response,
    ) -> Result<(u64, u64), HandshakeError> {
        let ns = self
            .peer_nonce
            .ok_or(HandshakeError::Unexpected("Challenge before Welcome"))?;
        match resp {
            Response::Welcome {
                proof,
                generation,
                latest,
            } => {
                if auth.verify(
                    &transcript(
                        Direction::CalleeToCaller,
                        &self.me,
                        &self.peer,
                        &self.nonce,
                        &ns,
                    ),
                    &proof,
                ) {
                    Ok((generation, latest))
                } else {
                    Err(HandshakeError::BadProof(self.peer.clone()))
                }
            }
            Response::Error(e) => Err(HandshakeError::Refused(e)),
            _ => Err(HandshakeError::Unexpected("Welcome")),
        }
    }
}

/// The accepting side's handshake, between a valid `Login` and the caller's proof.
#[derive(Debug, Clone)]
pub struct Callee {
    me: String,
    caller: String,
    caller_generation: u64,
    caller_nonce: [u8; NONCE_LEN],
    nonce: [u8; NONCE_LEN],
}

impl Callee {
    /// Step 1 → 2: checks the caller's `Login` (names and nonce; no MAC is computed) and
    /// returns the state and the `Challenge` to send, with this side's fresh random `nonce`.
    /// The node checks the caller is a member before it sends the challenge.
    pub fn on_login(
        me: &str,
        req: Request,
        nonce: [u8; NONCE_LEN],
    ) -> Result<(Self, Response), HandshakeError> {
        let (caller, callee, generation, nc) = match req {
            Request::Login {
                caller,
                callee,
                generation,
                nonce,
            } => (caller, callee, generation, nonce),
            Request::Hello { .. } => return Err(HandshakeError::Legacy),
            _ => return Err(HandshakeError::Unexpected("Login")),
        };
        check_name(&caller)?;
        check_name(&callee)?;
        if caller == me {
            return Err(HandshakeError::OwnName(caller));
        }
        if callee != me {
            return Err(HandshakeError::WrongCallee {
                wanted: callee,
                me: me.to_owned(),
            });
        }
        let caller_nonce = nonce_of(&nc)?;
        Ok((
            Callee {
                me: me.to_owned(),
                caller,
                caller_generation: generation,
                caller_nonce,
                nonce,
            },
            Response::Challenge {
                nonce: nonce.to_vec(),
            },
        ))
    }

    /// The name the caller claims (proved only once [`Callee::on_prove`] succeeds).
    pub fn caller(&self) -> &str {
        &self.caller
    }

    /// The generation the caller announced.
    pub fn caller_generation(&self) -> u64 {
        self.caller_generation
    }

    /// Step 3 → 4: checks the caller's proof; on success returns the `Welcome` to send, with
    /// this node's proof and its coherence `generation` and `latest` sequence number.
    pub fn on_prove(
        &self,
        auth: &Authenticator,
        req: Request,
        generation: u64,
        latest: u64,
    ) -> Result<Response, HandshakeError> {
        let Request::Prove { proof: tag } = req else {
            return Err(HandshakeError::Unexpected("Prove"));
        };
        if !auth.verify(
            &transcript(
                Direction::CallerToCallee,
                &self.caller,
                &self.me,
                &self.caller_nonce,
                &self.nonce,
            ),
            &tag,
        ) {
            return Err(HandshakeError::BadProof(self.caller.clone()));
        }
        Ok(Response::Welcome {
            proof: proof(
                auth,
                Direction::CalleeToCaller,
                &self.caller,
                &self.me,
                &self.caller_nonce,
                &self.nonce,
            )
            .to_vec(),
            generation,
            latest,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::new(b"cluster secret")
    }

    /// A whole run between two honest nodes.
    fn run(caller: &str, callee: &str, nc: u8, ns: u8) -> (Request, Response, Request, Response) {
        let a = auth();
        let mut c = Caller::new(caller, callee, 7, [nc; NONCE_LEN]);
        let login = c.login();
        let (s, challenge) = Callee::on_login(callee, login.clone(), [ns; NONCE_LEN]).unwrap();
        let prove = c.on_challenge(&a, challenge.clone()).unwrap();
        let welcome = s.on_prove(&a, prove.clone(), 3, 9).unwrap();
        assert_eq!(c.on_welcome(&a, welcome.clone()).unwrap(), (3, 9));
        (login, challenge, prove, welcome)
    }

    #[test]
    fn honest_nodes_log_in() {
        run("n1", "n2", 1, 2);
    }

    #[test]
    fn the_callee_computes_nothing_before_the_caller_proves() {
        // The challenge carries the callee's nonce and nothing derived from the secret.
        let (_, challenge, _, _) = run("n1", "n2", 1, 2);
        assert_eq!(
            challenge,
            Response::Challenge {
                nonce: vec![2; NONCE_LEN]
            }
        );
    }

    /// The reflection attack on version 1, tried on version 2: the attacker opens two
    /// connections to the same node and tries to make one produce the proof the other asks
    /// for. A callee only ever emits callee-to-caller proofs, and only after checking a
    /// caller's proof, so the attacker never obtains a caller proof to send.
    #[test]
    fn reflection_gets_nothing_to_reflect() {
        let a = auth();
        // Connection A: the attacker claims to be n1 and gets the node's challenge.
        let (s_a, ch_a) = Callee::on_login(
            "n2",
            Caller::new("n1", "n2", 1, [5; NONCE_LEN]).login(),
            [9; NONCE_LEN],
        )
        .unwrap();
        let Response::Challenge { nonce: na } = ch_a else {
            panic!()
        };
        // Connection B: the attacker sends A's challenge as its own nonce, hoping for a tag
        // over it. It gets only B's challenge back: no tag.
        let login_b = Request::Login {
            caller: "n1".into(),
            callee: "n2".into(),
            generation: 1,
            nonce: na.clone(),
        };
        let (s_b, ch_b) = Callee::on_login("n2", login_b, [8; NONCE_LEN]).unwrap();
        assert!(matches!(ch_b, Response::Challenge { .. }));
        // Whatever the attacker sends as a proof without the secret fails on both, and the
        // node's own callee proof for B (were it obtainable) does not verify as a caller
        // proof for A.
        for s in [&s_a, &s_b] {
            for guess in [vec![], vec![0; 32], na.clone()] {
                assert!(matches!(
                    s.on_prove(&a, Request::Prove { proof: guess }, 0, 0),
                    Err(HandshakeError::BadProof(_))
                ));
            }
        }
        let callee_proof_b = proof(
            &a,
            Direction::CalleeToCaller,
            "n1",
            "n2",
            &[9; NONCE_LEN],
            &[8; NONCE_LEN],
        );
        assert!(
            s_a.on_prove(
                &a,
                Request::Prove {
                    proof: callee_proof_b.to_vec()
                },
                0,
                0
            )
            .is_err()
        );
    }

    #[test]
    fn proofs_bind_direction_names_and_both_nonces() {
        let a = auth();
        let (nc, ns) = ([1; NONCE_LEN], [2; NONCE_LEN]);
        let base = proof(&a, Direction::CallerToCallee, "n1", "n2", &nc, &ns);
        let variants = [
            proof(&a, Direction::CalleeToCaller, "n1", "n2", &nc, &ns),
            proof(&a, Direction::CallerToCallee, "n2", "n1", &nc, &ns),
            proof(&a, Direction::CallerToCallee, "n1", "n3", &nc, &ns),
            // Length prefixes: moving a byte from one name to the other changes the proof.
            proof(&a, Direction::CallerToCallee, "n1n", "2", &nc, &ns),
            proof(&a, Direction::CallerToCallee, "n1", "n2", &ns, &nc),
            proof(
                &a,
                Direction::CallerToCallee,
                "n1",
                "n2",
                &nc,
                &[3; NONCE_LEN],
            ),
            proof(
                &Authenticator::new(b"other"),
                Direction::CallerToCallee,
                "n1",
                "n2",
                &nc,
                &ns,
            ),
        ];
        for v in variants {
            assert_ne!(v, base);
        }
    }

    #[test]
    fn a_recorded_run_does_not_replay() {
        let a = auth();
        let (login, _, prove, _) = run("n1", "n2", 1, 2);
        // Replayed on a new connection: the callee's nonce is fresh, the old proof fails.
        let (s, _) = Callee::on_login("n2", login, [3; NONCE_LEN]).unwrap();
        assert!(matches!(
            s.on_prove(&a, prove, 0, 0),
            Err(HandshakeError::BadProof(_))
        ));
    }

    #[test]
    fn a_recorded_welcome_does_not_satisfy_a_new_caller() {
        let a = auth();
        let (_, _, _, welcome) = run("n1", "n2", 1, 2);
        // A fake callee answers a new caller with the old welcome.
        let mut c = Caller::new("n1", "n2", 7, [4; NONCE_LEN]);
        c.on_challenge(
            &a,
            Response::Challenge {
                nonce: vec![2; NONCE_LEN],
            },
        )
        .unwrap();
        assert!(matches!(
            c.on_welcome(&a, welcome),
            Err(HandshakeError::BadProof(_))
        ));
    }

    #[test]
    fn bad_logins_are_refused_before_any_mac() {
        let login = |caller: &str, callee: &str, nonce: Vec<u8>| Request::Login {
            caller: caller.into(),
            callee: callee.into(),
            generation: 1,
            nonce,
        };
        let n = [0u8; NONCE_LEN];
        let ok = vec![0; NONCE_LEN];
        assert!(matches!(
            Callee::on_login("n2", login("n2", "n2", ok.clone()), n),
            Err(HandshakeError::OwnName(_))
        ));
        assert!(matches!(
            Callee::on_login("n2", login("n1", "n3", ok.clone()), n),
            Err(HandshakeError::WrongCallee { .. })
        ));
        assert!(matches!(
            Callee::on_login("n2", login("", "n2", ok.clone()), n),
            Err(HandshakeError::BadName(0))
        ));
        assert!(matches!(
            Callee::on_login("n2", login(&"x".repeat(256), "n2", ok.clone()), n),
            Err(HandshakeError::BadName(256))
        ));
        assert!(matches!(
            Callee::on_login("n2", login("n1", "n2", vec![0; 8]), n),
            Err(HandshakeError::BadNonce(8))
        ));
        assert!(matches!(
            Callee::on_login(
                "n2",
                Request::Hello {
                    name: "n1".into(),
                    generation: 1,
                    nonce: 1,
                    proof: vec![]
                },
                n
            ),
            Err(HandshakeError::Legacy)
        ));
        assert!(matches!(
            Callee::on_login("n2", Request::Ping, n),
            Err(HandshakeError::Unexpected(_))
        ));
    }

    #[test]
    fn a_maximal_login_fits_the_handshake_frame_bound() {
        let name = "x".repeat(MAX_NAME_LEN);
        let login = Caller::new(&name, &name, u64::MAX, [0xff; NONCE_LEN]).login();
        let bytes = crate::rpc::to_bytes(&crate::rpc::Frame::Request(0, login));
        assert!(bytes.len() - 4 <= MAX_HANDSHAKE_FRAME, "{}", bytes.len());
    }
}
