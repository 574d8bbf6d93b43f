//! Durability of the embedded store under SIGKILL.
//!
//! A child process (this test binary, re-run with `--ignored --exact crash_child` and
//! `PERDURE_CRASH_CHILD_DIR` set) commits in a loop from several concurrent writers and
//! prints `ack <writer> <n>` after each acknowledged commit. The parent kills it with
//! SIGKILL at a random moment, reopens the store and checks that every acknowledged commit
//! is present and that no transaction is partly visible. Then it starts the next child on
//! the same directory.
//!
//! Cycles: 20 by default, `PERDURE_CRASH_CYCLES=100` for the long mode; the random seed is
//! printed and can be fixed with `PERDURE_CRASH_SEED`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use perdure_node::store::embedded::EmbeddedStore;
use perdure_node::store::{KeyRange, RangeOptions, Store, StoreError};

const WRITERS: u32 = 4;
/// Keys written by each transaction besides the writer's `last` marker.
const PARTS: u32 = 4;

fn last_key(writer: u32) -> Vec<u8> {
    format!("last/{writer}").into_bytes()
}

fn data_prefix(writer: u32) -> Vec<u8> {
    format!("data/{writer}/").into_bytes()
}

fn data_key(writer: u32, n: u64, part: u32) -> Vec<u8> {
    format!("data/{writer}/{n:010}/{part}").into_bytes()
}

fn value(writer: u32, n: u64, part: u32) -> Vec<u8> {
    // Some bulk, so journal writes span several blocks.
    let mut v = format!("{writer}:{n}:{part}:").into_bytes();
    v.resize(300, b'.');
    v
}

fn decode_n(bytes: Option<Vec<u8>>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// The child: commit forever, acknowledging each commit on stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by store_durability's parent test as a child process"]
async fn crash_child() -> anyhow::Result<()> {
    let dir = std::env::var("PERDURE_CRASH_CHILD_DIR")?;
    let store = std::sync::Arc::new(EmbeddedStore::open(&dir)?);
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = store.begin().await?;
            let mut n = decode_n(tx.get(&last_key(writer)).await?);
            drop(tx);
            loop {
                n += 1;
                let mut tx = store.begin().await?;
                for part in 0..PARTS {
                    tx.set(&data_key(writer, n, part), &value(writer, n, part))?;
                }
                tx.set(&last_key(writer), &n.to_be_bytes())?;
                tx.commit().await?;
                println!("ack {writer} {n}");
            }
            #[allow(unreachable_code)]
            Ok::<(), StoreError>(())
        }));
    }
    println!("ready");
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// A small deterministic generator (xorshift64*), seeded per run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

fn parse_ack(line: &str) -> Option<(u32, u64)> {
    let mut words = line.split_whitespace();
    if words.next()? != "ack" {
        return None;
    }
    let writer = words.next()?.parse().ok()?;
    let n = words.next()?.parse().ok()?;
    words.next().is_none().then_some((writer, n))
}

/// Runs one child until a random moment, kills it, and returns the highest acknowledged
/// commit per writer.
fn run_child_and_kill(dir: &std::path::Path, rng: &mut Rng) -> anyhow::Result<BTreeMap<u32, u64>> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PERDURE_CRASH_CHILD_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("child has no stdout"))?;
    let (lines_tx, lines) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // Wait for the child to be up, then let it run for a random while: sometimes killed
    // right away (during the first commits), sometimes after thousands of commits.
    let mut acked = BTreeMap::new();
    let started = std::time::Instant::now();
    loop {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.trim_end().ends_with("ready") => break,
            Ok(_) if started.elapsed() < Duration::from_secs(60) => continue,
            _ => {
                let _ = child.kill();
                anyhow::bail!("the child did not start within 60 s");
            }
        }
    }
    std::thread::sleep(Duration::from_micros(rng.below(150_000)));
    child.kill()?; // SIGKILL
    child.wait()?;
    drop(reader.join());
    for line in lines.try_iter() {
        if let Some((w, n)) = parse_ack(&line) {
            let e = acked.entry(w).or_insert(0);
            *e = (*e).max(n);
        }
    }
    Ok(acked)
}

/// Reopens the store and checks it against every acknowledged commit so far.
async fn verify(dir: &std::path::Path, acked: &BTreeMap<u32, u64>) -> anyhow::Result<u64> {
    let store = EmbeddedStore::open(dir)?;
    let mut tx = store.begin().await?;
    let mut total = 0;
    for writer in 0..WRITERS {
        let last = decode_n(tx.get(&last_key(writer)).await?);
        let acked_n = acked.get(&writer).copied().unwrap_or(0);
        assert!(
            last >= acked_n,
            "writer {writer}: commit {acked_n} was acknowledged but the store ends at {last}"
        );
        // Every transaction up to `last` is whole; nothing after it is visible.
        let data = tx
            .get_range(
                &KeyRange::prefix(&data_prefix(writer)),
                RangeOptions::default(),
            )
            .await?;
        assert_eq!(
            data.len() as u64,
            last * u64::from(PARTS),
            "writer {writer}: a transaction is partly visible (last = {last})"
        );
        let mut expected = (1..=last).flat_map(|n| (0..PARTS).map(move |p| (n, p)));
        for (key, val) in &data {
            let (n, part) = expected
                .next()
                .ok_or_else(|| anyhow::anyhow!("writer {writer}: extra key"))?;
            assert_eq!(
                key,
                &data_key(writer, n, part),
                "writer {writer}: key order"
            );
            assert_eq!(
                val,
                &value(writer, n, part),
                "writer {writer}: value of {n}/{part}"
            );
        }
        total += last;
    }
    Ok(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_commits_survive_sigkill() -> anyhow::Result<()> {
    let cycles: u32 = std::env::var("PERDURE_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("PERDURE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    eprintln!("store_durability: {cycles} cycles, PERDURE_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir()?;
    let mut acked: BTreeMap<u32, u64> = BTreeMap::new();
    for cycle in 1..=cycles {
        let this = run_child_and_kill(dir.path(), &mut rng)?;
        for (w, n) in this {
            let e = acked.entry(w).or_insert(0);
            *e = (*e).max(n);
        }
        let total = verify(dir.path(), &acked).await?;
        eprintln!(
            "cycle {cycle}/{cycles}: acknowledged {:?}, {total} transactions present",
            acked
        );
    }
    assert!(
        acked.values().sum::<u64>() > 0,
        "no commit was ever acknowledged: the test proved nothing"
    );
    Ok(())
}
