//! `forward-latency`: the added latency of a request forwarded to the owner of its partition
//! over the cluster transport, versus the same request served by the ingress node itself, on
//! loopback. Two processes (ractor's `pg` registry is process-wide): this one runs node `a`,
//! a child (this binary, scenario `forward-peer`) runs node `b`; partitions alternate between
//! them. Each node has its own memory store, so store time is the same on both paths and
//! the difference is the transport: encode, ractor_cluster framing, TCP, decode, reply.
//!
//! Then the transport's cost under load: `--concurrency C` tasks (default 16) forward
//! `get_instance` to `b` for `--seconds S` (default 10); it prints forwarded requests per
//! second and the CPU both processes spent per forwarded request (user + system time from
//! `/proc`, both sides of the link).
//!
//! `perdure-bench forward-latency [--requests N] [--concurrency C] [--seconds S]`.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use perdure_core::InstanceId;
use perdure_core::management::{ManagementApi, StartRequest};
use perdure_node::cluster::transport::wire::PeerRequest;
use perdure_node::cluster::transport::{
    ClusterApi, Links, PartitionOwners, ServePeers, StaticOwners, Transport, TransportOptions,
};
use perdure_node::node::{Node, NodeHandle};
use perdure_node::options::NodeOptions;
use perdure_node::store::memory::MemoryStore;

use crate::measure::{arg, arg_str};

const PARTITIONS: u32 = 8;

fn owners(me: &str) -> Arc<StaticOwners> {
    Arc::new(StaticOwners::new(me, PARTITIONS, |p| {
        if p % 2 == 0 { "a".into() } else { "b".into() }
    }))
}

async fn start(
    name: &str,
    listen: &str,
    seeds: Vec<String>,
) -> anyhow::Result<(NodeHandle, Transport, Arc<StaticOwners>)> {
    let node = Node::builder()
        .registry(Arc::new(perdure_node::sample::sample_registry()))
        .store(Arc::new(MemoryStore::new()))
        .options(NodeOptions {
            partitions: std::num::NonZeroU32::new(PARTITIONS).context("partitions")?,
            ..NodeOptions::default()
        })
        .start()
        .await?;
    let mut opts = TransportOptions::new(name, listen.parse()?);
    opts.seeds = seeds;
    let t = Transport::start(opts).await?;
    let table = owners(name);
    let dynt: Arc<dyn PartitionOwners> = table.clone();
    t.set_handler(Arc::new(ServePeers::new(
        Arc::new(node.clone()),
        dynt,
        PARTITIONS,
        None,
    )));
    Ok((node, t, table))
}

/// The child: node `b`, until its stdin closes.
pub(crate) fn peer(args: &[String]) -> anyhow::Result<()> {
    let listen = arg_str(args, "--listen", "127.0.0.1:7202");
    tokio::runtime::Runtime::new()?.block_on(async move {
        let (node, t, _) = start("b", &listen, Vec::new()).await?;
        println!("ready");
        // Serve until the parent closes our stdin.
        tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            while std::io::stdin()
                .read_line(&mut s)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        })
        .await?;
        t.stop();
        node.shutdown().await;
        anyhow::Ok(())
    })
}

fn id_on(
    api: &ClusterApi,
    table: &StaticOwners,
    owner: &str,
    prefix: &str,
) -> anyhow::Result<InstanceId> {
    (0..1000)
        .map(|k| format!("{prefix}-{k}"))
        .find(|id| table.owner(api.partition_of(id)).as_deref() == Some(owner))
        .map(InstanceId::new)
        .context("no id lands there")?
        .map_err(Into::into)
}

fn pct(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e6
}

/// CPU seconds (user + system) of a process, from `/proc/PID/stat`.
fn cpu_secs(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name (which may hold spaces) are space-separated.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).context("utime")?.parse::<f64>()? + f.get(12).context("stime")?.parse::<f64>()?;
    // USER_HZ: 100 on every Linux this runs on (`getconf CLK_TCK`).
    Ok(ticks / 100.0)
}

/// `concurrency` tasks forwarding `get_instance(id)` for `seconds`: requests per second and
/// CPU µs per request of both processes.
async fn under_load(
    api: &ClusterApi,
    id: &InstanceId,
    child: u32,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<(f64, f64)> {
    let child = child.to_string();
    let cpu0 = cpu_secs("self")? + cpu_secs(&child)?;
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(seconds);
    let done = std::sync::atomic::AtomicU64::new(0);
    futures::future::try_join_all((0..concurrency).map(|_| async {
        while Instant::now() < end {
            api.get_instance(id.clone(), false)
                .await?
                .context("remote")?;
            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        anyhow::Ok(())
    }))
    .await?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs("self")? + cpu_secs(&child)? - cpu0;
    let n = done.load(std::sync::atomic::Ordering::Relaxed).max(1) as f64;
    Ok((n / wall, cpu / n * 1e6))
}

/// The parent: node `a`, measuring.
pub(crate) fn latency(args: &[String]) -> anyhow::Result<()> {
    let n = usize::try_from(arg(args, "--requests", 20_000))?;
    let concurrency = usize::try_from(arg(args, "--concurrency", 16).max(1))?;
    let seconds = arg(args, "--seconds", 10).max(1);
    let port_a = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let port_b = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr_b = format!("127.0.0.1:{port_b}");
    let mut child = Command::new(std::env::current_exe()?)
        .args(["forward-peer", "--listen", &addr_b])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let child_pid = child.id();
    let mut out = std::io::BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line)?;
    anyhow::ensure!(line.trim() == "ready", "peer said {line:?}");
    let rt = tokio::runtime::Runtime::new()?;
    let res = rt.block_on(async move {
        let (node, t, table) = start("a", &format!("127.0.0.1:{port_a}"), vec![addr_b]).await?;
        anyhow::ensure!(
            t.wait_for_node("b", Duration::from_secs(20)).await,
            "b not reachable"
        );
        let dynt: Arc<dyn PartitionOwners> = table.clone();
        let api = ClusterApi::for_node(node.clone(), Arc::new(t.clone()), dynt);
        let local_id = id_on(&api, &table, "a", "lat-local")?;
        let remote_id = id_on(&api, &table, "b", "lat-remote")?;
        for id in [&local_id, &remote_id] {
            let mut req = StartRequest::new("HelloSequence");
            req.instance_id = Some(id.clone());
            api.start(req).await?;
            api.wait_for_completion(id.clone(), Duration::from_secs(20))
                .await?;
        }
        let (mut local, mut fwd, mut ping) = (Vec::new(), Vec::new(), Vec::new());
        let warm = n / 10;
        for i in 0..n + warm {
            let t0 = Instant::now();
            api.get_instance(local_id.clone(), true)
                .await?
                .context("local")?;
            let l = t0.elapsed();
            let t0 = Instant::now();
            api.get_instance(remote_id.clone(), true)
                .await?
                .context("remote")?;
            let f = t0.elapsed();
            let t0 = Instant::now();
            t.call("b", &PeerRequest::Ping, Duration::from_secs(5))
                .await?;
            let p = t0.elapsed();
            if i >= warm {
                local.push(l);
                fwd.push(f);
                ping.push(p);
            }
        }
        let (l50, l99) = (pct(&mut local, 0.5), pct(&mut local, 0.99));
        let (f50, f99) = (pct(&mut fwd, 0.5), pct(&mut fwd, 0.99));
        let (p50, p99) = (pct(&mut ping, 0.5), pct(&mut ping, 0.99));
        println!("get_instance served locally:   p50 {l50:.0} us, p99 {l99:.0} us");
        println!("get_instance forwarded to b:   p50 {f50:.0} us, p99 {f99:.0} us");
        println!("transport ping round trip:     p50 {p50:.0} us, p99 {p99:.0} us");
        println!("added p50 of forwarding:       {:.0} us", f50 - l50);
        let (per_s, cpu_us) = under_load(&api, &remote_id, child_pid, concurrency, seconds).await?;
        println!(
            "forwarded under load ({concurrency} tasks, {seconds} s): {per_s:.0}/s, \
             {cpu_us:.1} us CPU per request (both processes)"
        );
        crate::measure::emit(serde_json::json!({
            "scenario": "forward-latency", "requests": n,
            "local_p50_us": l50, "local_p99_us": l99,
            "forwarded_p50_us": f50, "forwarded_p99_us": f99,
            "ping_p50_us": p50, "ping_p99_us": p99,
            "added_p50_us": f50 - l50,
            "concurrency": concurrency, "forwarded_per_s": per_s,
            "cpu_us_per_forwarded": cpu_us,
        }));
        t.stop();
        node.shutdown().await;
        anyhow::Ok(())
    });
    drop(child.stdin.take());
    let _ = child.wait();
    res
}
