//! The peer RPC port attacked as an outsider on the same network would: real embedded nodes
//! on loopback, and an attacker speaking raw frames to their RPC port. Every attack must be
//! refused, counted, and leave the cluster serving its members.
//!
//! The first test is the reflection attack that entered the version 1 handshake without the
//! secret (it logged in, read and wrote keys); on that code it fails.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use rustls_pki_types::pem::PemObject;
use strata::Node;
use strata_cluster::handshake::{self, NONCE_LEN};
use strata_cluster::rpc::{self, Frame, Request, Response};
use strata_cluster::{Authenticator, rpc::DEFAULT_MAX_FRAME};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw connection to a node's RPC port.
struct Attacker {
    s: TcpStream,
    buf: BytesMut,
}

impl Attacker {
    async fn connect(node: &Node) -> Self {
        let st = node.cluster_status().unwrap();
        let rpc = st
            .members
            .iter()
            .find(|m| m.state == "self")
            .unwrap()
            .rpc
            .clone();
        Attacker {
            s: TcpStream::connect(&rpc).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, req: Request) {
        self.s
            .write_all(&rpc::to_bytes(&Frame::Request(0, req)))
            .await
            .unwrap();
    }

    /// The next response, or `None` when the node closed the connection (or sent nothing
    /// within 3 s).
    async fn recv(&mut self) -> Option<Response> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if let Ok(Some(Frame::Response(_, r))) = rpc::decode(&mut self.buf, DEFAULT_MAX_FRAME) {
                return Some(r);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.s.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    /// Whether the node closed the connection within `limit`.
    async fn closed_within(&mut self, limit: Duration) -> bool {
        let mut b = [0u8; 64];
        loop {
            match tokio::time::timeout(limit, self.s.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }
}

fn rejected(node: &Node) -> u64 {
    node.cluster_status().unwrap().rejected_connections
}

fn get(key: &[u8]) -> Request {
    Request::Get {
        namespace: "ns".into(),
        key: key.to_vec(),
    }
}

/// What no outsider may ever see: an entry read through the RPC port.
fn is_entry(r: &Option<Response>) -> bool {
    matches!(
        r,
        Some(Response::EntryAt { .. } | Response::Entry(_) | Response::Stored { .. })
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_version_1_reflection_attack_is_refused() {
    let nodes = cluster(2, 2, None).await;
    nodes[0].cache().set("ns", "secret", "v").await.unwrap();
    let me = "n0".to_string();
    let before = rejected(&nodes[0]);
    // Connection A claims the node's own name and asks for a tag over nonce 1.
    let mut a = Attacker::connect(&nodes[0]).await;
    a.send(Request::Hello {
        name: me.clone(),
        generation: 1,
        nonce: 1,
        proof: vec![],
    })
    .await;
    let first = a.recv().await;
    // Version 1 answered with its own tag and a challenge; version 2 signs nothing.
    let challenge = match first {
        Some(Response::Hello { nonce, .. }) => nonce,
        Some(Response::Error(_)) | None => {
            assert!(a.closed_within(Duration::from_secs(3)).await);
            eventually("the refusal is counted", Duration::from_secs(3), || {
                rejected(&nodes[0]) > before
            })
            .await;
            stop(nodes).await;
            return;
        }
        other => panic!("unexpected answer {other:?}"),
    };
    // Connection B has the node tag A's challenge: the reflection.
    let mut b = Attacker::connect(&nodes[0]).await;
    b.send(Request::Hello {
        name: me.clone(),
        generation: 1,
        nonce: challenge,
        proof: vec![],
    })
    .await;
    let Some(Response::Hello { proof, .. }) = b.recv().await else {
        panic!("B was refused")
    };
    a.send(Request::Hello {
        name: me,
        generation: 1,
        nonce: 1,
        proof,
    })
    .await;
    let _ = a.recv().await;
    a.send(get(b"secret")).await;
    let got = a.recv().await;
    panic!("the reflected login was accepted and read {got:?}");
}

/// Logs in as member `caller` to `node` (named `callee`) with `secret`: Welcome or refusal.
async fn login(
    a: &mut Attacker,
    caller: &str,
    callee: &str,
    secret: &[u8],
    nonce: [u8; NONCE_LEN],
) -> (Request, Request, Option<Response>) {
    let auth = Authenticator::new(secret);
    let mut hs = handshake::Caller::new(caller, callee, 1, nonce);
    let login = hs.login();
    a.send(login.clone()).await;
    let Some(challenge) = a.recv().await else {
        return (login, Request::Ping, None);
    };
    let Ok(prove) = hs.on_challenge(&auth, challenge.clone()) else {
        return (login, Request::Ping, Some(challenge));
    };
    a.send(prove.clone()).await;
    let welcome = a.recv().await;
    if let Some(w) = &welcome
        && matches!(w, Response::Welcome { .. })
    {
        hs.on_welcome(&auth, w.clone()).unwrap();
    }
    (login, prove, welcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_2_refuses_reflection_replay_wrong_secrets_and_false_names() {
    let nodes = cluster(2, 2, None).await;
    nodes[0].cache().set("ns", "secret", "v").await.unwrap();
    // `cluster` names its nodes n0, n1, …; the attacks go to n0's RPC port.
    let (me, member) = ("n0", "n1");
    let secret = SECRET.as_bytes();

    // Control: a member holding the secret logs in and is served.
    let mut ok = Attacker::connect(&nodes[0]).await;
    let (login_bytes, prove_bytes, welcome) =
        login(&mut ok, member, me, secret, [7; NONCE_LEN]).await;
    assert!(
        matches!(welcome, Some(Response::Welcome { .. })),
        "{welcome:?}"
    );
    ok.send(get(b"secret")).await;
    assert!(is_entry(&ok.recv().await), "a real member is served");

    // The node counts a refusal when the connection's task ends, just after it wrote the
    // refusal: wait for the count rather than read it once.
    let mut refusals = rejected(&nodes[0]);
    async fn counted(what: &str, node: &Node, refusals: &mut u64) {
        let before = *refusals;
        eventually(
            &format!("{what}: the refusal is counted"),
            Duration::from_secs(3),
            || rejected(node) > before,
        )
        .await;
        *refusals = rejected(node);
    }

    // Reflection: two connections, the second given the first's challenge as its nonce.
    // The node answers each Login with a bare nonce; there is no proof to carry across.
    let mut a = Attacker::connect(&nodes[0]).await;
    a.send(handshake::Caller::new(member, me, 1, [1; NONCE_LEN]).login())
        .await;
    let Some(Response::Challenge { nonce: na }) = a.recv().await else {
        panic!("no challenge")
    };
    let mut b = Attacker::connect(&nodes[0]).await;
    b.send(Request::Login {
        caller: member.into(),
        callee: me.into(),
        generation: 1,
        nonce: na.clone(),
    })
    .await;
    let answer_b = b.recv().await;
    assert!(
        matches!(&answer_b, Some(Response::Challenge { nonce }) if nonce.len() == NONCE_LEN),
        "B gets a bare challenge: {answer_b:?}"
    );
    for guess in [na.clone(), vec![0; 32]] {
        a.send(Request::Prove { proof: guess }).await;
    }
    assert!(
        matches!(a.recv().await, Some(Response::Error(_)) | None),
        "A's guess is refused"
    );
    assert!(a.closed_within(Duration::from_secs(3)).await);
    a = Attacker::connect(&nodes[0]).await;
    a.send(get(b"secret")).await;
    assert!(!is_entry(&a.recv().await), "no request before a login");
    counted("reflection", &nodes[0], &mut refusals).await;
    drop(b);

    // Replay of the member's recorded Login and Prove on a new connection.
    let mut r = Attacker::connect(&nodes[0]).await;
    r.send(login_bytes).await;
    assert!(matches!(r.recv().await, Some(Response::Challenge { .. })));
    r.send(prove_bytes).await;
    let replayed = r.recv().await;
    assert!(
        matches!(replayed, Some(Response::Error(_)) | None),
        "{replayed:?}"
    );
    r.send(get(b"secret")).await;
    assert!(!is_entry(&r.recv().await));
    counted("replay", &nodes[0], &mut refusals).await;

    // Logins the node refuses, each on a connection of its own: the wrong secret; the
    // node's own name, a name that is no member, or another callee, even with the secret.
    let wrong: &[u8] = b"not the cluster secret, 32 bytes";
    let cases: [(&str, &str, &str, &[u8]); 4] = [
        ("wrong secret", member, me, wrong),
        ("own name", me, me, secret),
        ("not a member", "stranger", me, secret),
        ("wrong callee", member, member, secret),
    ];
    for (i, (what, caller, callee, key)) in cases.into_iter().enumerate() {
        let mut a = Attacker::connect(&nodes[0]).await;
        let (_, _, answer) = login(&mut a, caller, callee, key, [i as u8 + 2; NONCE_LEN]).await;
        assert!(
            matches!(answer, Some(Response::Error(_)) | None),
            "{what}: {answer:?}"
        );
        counted(what, &nodes[0], &mut refusals).await;
    }

    // The cluster still works between its members.
    nodes[1].cache().set("ns", "after", "x").await.unwrap();
    assert_eq!(
        nodes[0]
            .cache()
            .get("ns", b"after")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"x"[..])
    );
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_login_frames_are_tiny_and_unauthenticated_connections_are_bounded() {
    let nodes = cluster(2, 2, None).await;
    let before = rejected(&nodes[0]);

    // An oversized first frame (a 16 MiB length): closed at once, nothing reserved for it.
    let mut big = Attacker::connect(&nodes[0]).await;
    big.s
        .write_all(&(16u32 * 1024 * 1024).to_be_bytes())
        .await
        .unwrap();
    big.s.write_all(&[1, 0, 0, 0]).await.unwrap();
    assert!(big.closed_within(Duration::from_millis(500)).await);
    // Just above the handshake bound.
    let mut over = Attacker::connect(&nodes[0]).await;
    let len = (handshake::MAX_HANDSHAKE_FRAME + 1) as u32;
    over.s.write_all(&len.to_be_bytes()).await.unwrap();
    assert!(over.closed_within(Duration::from_millis(500)).await);

    // A truncated frame that never completes: closed by the handshake timeout.
    let mut slow = Attacker::connect(&nodes[0]).await;
    slow.s.write_all(&[0, 0, 0, 40, 1, 0]).await.unwrap();
    let start = Instant::now();
    assert!(slow.closed_within(Duration::from_secs(5)).await);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "the handshake timeout closed it"
    );

    // Many idle connections: at most 64 wait in the handshake, the rest are closed at once,
    // and members keep talking meanwhile.
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(Attacker::connect(&nodes[0]).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut closed_at_once = 0;
    for c in &mut idle {
        if c.closed_within(Duration::from_millis(5)).await {
            closed_at_once += 1;
        }
    }
    assert!(
        closed_at_once >= 200 - 64,
        "connections beyond the cap are closed at once: {closed_at_once} of 200"
    );
    let t = Instant::now();
    for k in 0..20 {
        nodes[1]
            .cache()
            .set("ns", format!("k{k}"), "v")
            .await
            .unwrap();
        assert!(
            nodes[0]
                .cache()
                .get("ns", format!("k{k}").as_bytes())
                .await
                .unwrap()
                .is_some()
        );
    }
    println!(
        "20 cross-node writes and reads under the flood: {:?}",
        t.elapsed()
    );
    // The ones in the handshake are closed by its timeout.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for c in &mut idle {
        assert!(c.closed_within(Duration::from_millis(100)).await);
    }
    eventually("each refusal is counted", Duration::from_secs(3), || {
        rejected(&nodes[0]) >= before + 200
    })
    .await;
    stop(nodes).await;
}

/// Three members talking mutual TLS on their RPC ports: they serve each other; a plaintext
/// caller, a caller without a certificate, and a member's certificate used to log in as
/// another member are all refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_talk_mutual_tls_and_refuse_what_is_not_a_member() {
    let dir = tempfile::tempdir().unwrap();
    let pki = strata::tls::test_certs(dir.path(), &["n0", "n1", "n2"]).unwrap();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..3 {
        let seeds: Vec<String> = nodes.first().map(gossip_addr).into_iter().collect();
        let mut c = config(&format!("n{i}"), &seeds, 2);
        c.cluster.tls = Some(pki.config(i, true));
        c.validate().unwrap();
        nodes.push(Node::start(c).await.unwrap());
    }
    eventually("membership converges", Duration::from_secs(10), || {
        nodes.iter().all(|x| live(x) == 3)
    })
    .await;
    for k in 0..30 {
        nodes[k % 3]
            .cache()
            .set("ns", format!("k{k}"), format!("v{k}"))
            .await
            .unwrap();
    }
    for k in 0..30 {
        for n in &nodes {
            assert_eq!(
                n.cache()
                    .get("ns", format!("k{k}").as_bytes())
                    .await
                    .unwrap(),
                Some(bytes::Bytes::from(format!("v{k}"))),
                "k{k} over TLS"
            );
        }
    }
    let st = nodes[0].cluster_status().unwrap();
    let calls: u64 = st
        .members
        .iter()
        .filter_map(|m| m.rpc_stats.as_ref())
        .map(|r| r.requests - r.errors)
        .sum();
    assert!(calls > 0, "requests crossed the TLS connections");

    let before = rejected(&nodes[0]);
    // Plaintext to a TLS port: the frame is not a TLS ClientHello; refused.
    let mut plain = Attacker::connect(&nodes[0]).await;
    plain
        .send(handshake::Caller::new("n1", "n0", 1, [1; NONCE_LEN]).login())
        .await;
    assert!(plain.recv().await.is_none());
    // TLS without a client certificate.
    let rpc = {
        let st = nodes[0].cluster_status().unwrap();
        st.members
            .iter()
            .find(|m| m.state == "self")
            .unwrap()
            .rpc
            .clone()
    };
    let roots = {
        let mut r = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_file_iter(&pki.ca_file).unwrap() {
            r.add(c.unwrap()).unwrap();
        }
        std::sync::Arc::new(r)
    };
    let no_cert = rustls::ClientConfig::builder_with_provider(strata::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    let tcp = TcpStream::connect(&rpc).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("n0").unwrap();
    let outcome = async {
        let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(no_cert))
            .connect(name.clone(), tcp)
            .await?;
        tls.write_all(&rpc::to_bytes(&Frame::Request(
            0,
            handshake::Caller::new("n1", "n0", 1, [1; NONCE_LEN]).login(),
        )))
        .await?;
        let mut b = [0u8; 64];
        let n = tls.read(&mut b).await?;
        Ok::<usize, std::io::Error>(n)
    }
    .await;
    assert!(
        !matches!(outcome, Ok(n) if n > 0),
        "no answer without a client certificate: {outcome:?}"
    );
    // n2's certificate (valid, from the cluster CA) used to log in as n1, with the secret.
    let stolen = rustls::ClientConfig::builder_with_provider(strata::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            rustls_pki_types::CertificateDer::pem_file_iter(&pki.leaves[2].0)
                .unwrap()
                .map(Result::unwrap)
                .collect(),
            rustls_pki_types::PrivateKeyDer::from_pem_file(&pki.leaves[2].1).unwrap(),
        )
        .unwrap();
    let tcp = TcpStream::connect(&rpc).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(stolen))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(&rpc::to_bytes(&Frame::Request(
        0,
        handshake::Caller::new("n1", "n0", 1, [1; NONCE_LEN]).login(),
    )))
    .await
    .unwrap();
    let mut buf = BytesMut::new();
    let answer = loop {
        if let Ok(Some(Frame::Response(_, r))) = rpc::decode(&mut buf, DEFAULT_MAX_FRAME) {
            break Some(r);
        }
        match tokio::time::timeout(Duration::from_secs(3), tls.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break None,
        }
    };
    assert!(
        matches!(&answer, Some(Response::Error(e)) if e.contains("not valid for")),
        "{answer:?}"
    );
    eventually("the refusals are counted", Duration::from_secs(3), || {
        rejected(&nodes[0]) >= before + 3
    })
    .await;
    stop(nodes).await;
}

/// A flood of connections from an address that is no member's (127.0.0.2) keeps the
/// handshake slots full while a node joins and writes through the others: every write
/// succeeds. (On loopback a member's handshake is too quick for this flood to evict it
/// either way; that connections from a member's address are never the ones closed is pinned
/// by `pending::tests`, and matters on networks with real round trips.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_elsewhere_cannot_keep_members_out() {
    let mut nodes = cluster(2, 2, None).await;
    let rpc: std::net::SocketAddr = {
        let st = nodes[0].cluster_status().unwrap();
        st.members
            .iter()
            .find(|m| m.state == "self")
            .unwrap()
            .rpc
            .parse()
            .unwrap()
    };
    let halt = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = tokio::spawn({
        let halt = halt.clone();
        async move {
            let mut open = std::collections::VecDeque::new();
            let mut opened = 0u64;
            while !halt.load(std::sync::atomic::Ordering::Relaxed) {
                let sock = tokio::net::TcpSocket::new_v4().unwrap();
                if sock.bind("127.0.0.2:0".parse().unwrap()).is_err() {
                    break;
                }
                if let Ok(s) = sock.connect(rpc).await {
                    open.push_back(s);
                    opened += 1;
                }
                if open.len() > 200 {
                    open.pop_front();
                }
            }
            opened
        }
    });
    let start = rejected(&nodes[0]);
    eventually(
        "the flood fills the handshake slots",
        Duration::from_secs(10),
        || rejected(&nodes[0]) > start + 100,
    )
    .await;
    let before = rejected(&nodes[0]);
    // A third node joins during the flood and writes through both others.
    let seed = gossip_addr(&nodes[0]);
    nodes.push(Node::start(config("n2", &[seed], 2)).await.unwrap());
    eventually("n2 joins", Duration::from_secs(10), || {
        nodes.iter().all(|n| live(n) == 3)
    })
    .await;
    let mut failed = 0;
    for k in 0..50 {
        if nodes[2]
            .cache()
            .set("ns", format!("k{k}"), "v")
            .await
            .is_err()
        {
            failed += 1;
        }
    }
    halt.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = flood.await.unwrap();
    let refused = rejected(&nodes[0]) - before;
    println!(
        "flood: {opened} connections from 127.0.0.2, {refused} refused; {failed} of 50 writes failed"
    );
    // The slots were full when n2 started (above); the flood kept evicting while it joined
    // and wrote. (It used to ask for 100 evictions in that window: a join on loopback can
    // take well under a second, and CI saw 1.)
    assert!(refused > 0, "the flood went on while n2 joined");
    assert_eq!(failed, 0, "members got in despite the flood");
    stop(nodes).await;
}
