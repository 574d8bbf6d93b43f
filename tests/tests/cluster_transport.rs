//! The cluster transport across processes (ractor's `pg` registry is process-wide, so each
//! node is its own `perdure-cluster-peer` process on loopback): forwarding to the owner,
//! cookie refusal, malformed peer messages, and a link that goes silent.

use perdure_tests::cluster_peer::{PeerProcess, write_test_certs};

#[test]
fn forwarding_cookie_refusal_and_corrupt_messages() -> anyhow::Result<()> {
    // n1 and n2 share the partitions (even: n1, odd: n2); n2 dials n1.
    let mut n1 = PeerProcess::spawn("n1", "n1,n2", &[], Some("s3cret"))?;
    let mut n2 = PeerProcess::spawn("n2", "n1,n2", &[&n1.addr], Some("s3cret"))?;
    assert_eq!(n1.cmd("wait-node n2 20000")?, "true");
    assert_eq!(n2.cmd("wait-node n1 20000")?, "true");
    assert_eq!(n1.cmd("ping n2")?, "Pong");

    // A start on n1 for an instance n2 owns runs on n2, and the reply (its output, through a
    // forwarded long poll) comes back to n1.
    let done = n1.cmd("start-owned-by n2 fwd")?;
    let parts: Vec<&str> = done.splitn(4, ' ').collect();
    assert_eq!(
        parts[..3.min(parts.len())],
        ["done", parts[1], "Completed"],
        "{done}"
    );
    assert_eq!(
        parts[3],
        r#"["Hello Tokyo!","Hello Seattle!","Hello London!"]"#
    );
    let id = parts[1];
    assert_eq!(n2.cmd(&format!("local-has {id}"))?, "true");
    assert_eq!(n1.cmd(&format!("local-has {id}"))?, "false");
    // And the other way round, from n2 to n1.
    let back = n2.cmd("start-owned-by n1 back")?;
    assert!(
        back.starts_with("done ") && back.contains(" Completed "),
        "{back}"
    );

    // A request that does not decode gets an error reply, and the session stays up.
    let bad = n1.cmd("corrupt n2")?;
    assert!(bad.starts_with("undecodable "), "{bad}");
    assert!(bad.contains("version"), "{bad}");
    assert_eq!(n2.cmd("wait-stat undecodable_calls 1 5000")?, "true");
    // A cast that does not decode is dropped and counted.
    assert_eq!(n1.cmd("corrupt-cast n2")?, "sent");
    assert_eq!(
        n2.cmd("wait-stat undecodable_casts 1 5000")?,
        "true",
        "{:?}",
        n2.log()
    );
    assert_eq!(n1.cmd("ping n2")?, "Pong");
    let again = n1.cmd("start-owned-by n2 after")?;
    assert!(again.contains(" Completed "), "{again}");

    // A node with the wrong cookie is refused (and n1 logs why); it never sees n1's routers.
    let mut n3 = PeerProcess::spawn("n3", "n1,n2", &[&n1.addr], Some("wrong"))?;
    assert_eq!(n1.cmd("wait-stat refused 1 20000")?, "true");
    assert_eq!(n3.cmd("wait-node n1 1000")?, "false");
    assert!(
        n1.log()
            .iter()
            .any(|l| l.contains("cluster session refused")),
        "{:?}",
        n1.log()
    );
    // n3 cannot forward: its request to n1's partition fails with 503 once the bounded
    // wait is over... n3's handoff wait is 15 s, so ask for a ping instead.
    let ping = n3.cmd("ping n1")?;
    assert!(ping.starts_with("link-error no link to node n1"), "{ping}");
    assert_eq!(n1.cmd("peers")?, r#"["n2"]"#);
    n1.cmd("quit")?;
    n2.cmd("quit")?;
    n3.cmd("quit")?;
    Ok(())
}

#[test]
fn tls_between_nodes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_test_certs(dir.path())?;
    let mut t1 = PeerProcess::spawn_with("t1", "t1,t2", &[], Some("c"), Some(dir.path()))?;
    let mut t2 = PeerProcess::spawn_with("t2", "t1,t2", &[&t1.addr], Some("c"), Some(dir.path()))?;
    assert_eq!(t2.cmd("wait-node t1 20000")?, "true", "{:?}", t2.log());
    let done = t2.cmd("start-owned-by t1 tls")?;
    assert!(
        done.starts_with("done ") && done.contains(" Completed "),
        "{done}"
    );
    // A node without TLS cannot join the TLS node.
    let mut plain = PeerProcess::spawn("t3", "t1,t2", &[&t1.addr], Some("c"))?;
    assert_eq!(plain.cmd("wait-node t1 1500")?, "false");
    t1.cmd("quit")?;
    t2.cmd("quit")?;
    plain.cmd("quit")?;
    Ok(())
}

/// A link that goes silent without a reset (the peer frozen: its kernel still acknowledges
/// the bytes, as across a network partition or after a peer came back under another address)
/// is found by the liveness pings: its session is closed instead of swallowing every call for
/// the ~15 minutes TCP takes to give up, and the link comes back once the peer answers again.
#[test]
fn a_silent_link_is_closed_and_dialled_again() -> anyhow::Result<()> {
    let mut n1 = PeerProcess::spawn("n1", "n1,n2", &[], Some("s3cret"))?;
    let mut n2 = PeerProcess::spawn("n2", "n1,n2", &[&n1.addr], Some("s3cret"))?;
    assert_eq!(n1.cmd("wait-node n2 20000")?, "true");
    assert_eq!(n1.cmd("ping n2")?, "Pong");
    let pid = n2.pid().to_string();
    let signal = |sig: &str| -> anyhow::Result<()> {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()?;
        anyhow::ensure!(status.success(), "kill {sig} {pid}: {status}");
        Ok(())
    };
    signal("-STOP")?;
    // Three unanswered pings, one per redial period (2 s): the session is closed.
    let closed = n1.cmd("wait-stat dead 1 20000");
    signal("-CONT")?;
    assert_eq!(closed?, "true", "{:?}", n1.log());
    assert!(
        n1.log()
            .iter()
            .any(|l| l.contains("cluster peer does not answer")),
        "{:?}",
        n1.log()
    );
    // n2 dials its seed again; the link serves again.
    assert_eq!(n1.cmd("wait-node n2 20000")?, "true", "{:?}", n1.log());
    let mut pong = String::new();
    for _ in 0..50 {
        pong = n1.cmd("ping n2")?;
        if pong == "Pong" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(pong, "Pong", "{:?} {:?}", n1.log(), n2.log());
    n1.cmd("quit")?;
    n2.cmd("quit")?;
    Ok(())
}
