//! `perdure-cluster-peer`: one cluster node for the multi-process transport tests. It runs the
//! sample app on a memory store, the cluster transport, and a static partition table
//! (partition `p` belongs to `owners[p % owners.len()]`), then answers commands on stdin, one
//! line each (see `perdure_tests::cluster_peer`).
//!
//! ```text
//! perdure-cluster-peer --name n1 --listen 127.0.0.1:7101 --owners n1,n2 [--seeds a,b] [--cookie c]
//!     [--tls-dir DIR (node.pem, node.key, ca.pem)]
//! ```

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use perdure_core::InstanceId;
use perdure_core::management::{ManagementApi, StartRequest};
use perdure_node::cluster::transport::{
    ClusterApi, Links, PartitionOwners, ServePeers, StaticOwners, TlsFiles, Transport,
    TransportOptions,
    wire::{PeerReply, PeerRequest},
};
use perdure_node::node::Node;
use perdure_node::options::NodeOptions;
use perdure_node::store::memory::MemoryStore;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

const PARTITIONS: u32 = 8;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,ractor_cluster=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let name = arg(&args, "--name").context("--name")?;
    let listen = arg(&args, "--listen").context("--listen")?.parse()?;
    let owners: Vec<String> = arg(&args, "--owners")
        .context("--owners")?
        .split(',')
        .map(str::to_string)
        .collect();
    let mut opts = TransportOptions::new(name.clone(), listen);
    opts.seeds = arg(&args, "--seeds")
        .map(|s| {
            s.split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    opts.cookie = arg(&args, "--cookie");
    opts.tls = arg(&args, "--tls-dir").map(|d| {
        let d = std::path::PathBuf::from(d);
        TlsFiles {
            cert: d.join("node.pem"),
            key: d.join("node.key"),
            ca: d.join("ca.pem"),
            server_name: None,
        }
    });
    let node = Node::builder()
        .registry(Arc::new(perdure_node::sample::sample_registry()))
        .store(Arc::new(MemoryStore::new()))
        .options(NodeOptions {
            partitions: std::num::NonZeroU32::new(PARTITIONS).context("partitions")?,
            cluster: perdure_node::options::ClusterOptions {
                name: name.clone(),
                ..Default::default()
            },
            ..NodeOptions::default()
        })
        .start()
        .await?;
    let transport = Transport::start(opts).await?;
    let table = {
        let owners = owners.clone();
        Arc::new(StaticOwners::new(name.clone(), PARTITIONS, move |p| {
            owners[p as usize % owners.len()].clone()
        }))
    };
    let table_dyn: Arc<dyn PartitionOwners> = table.clone();
    transport.set_handler(Arc::new(ServePeers::new(
        Arc::new(node.clone()),
        table_dyn.clone(),
        PARTITIONS,
        None,
    )));
    let api = ClusterApi::for_node(node.clone(), Arc::new(transport.clone()), table_dyn);
    let mut out = tokio::io::stdout();
    out.write_all(format!("ready {name}\n").as_bytes()).await?;
    out.flush().await?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match run(&words, &api, &node, &transport, table.as_ref()).await {
            Ok(a) => a,
            Err(e) => format!("error {e:#}"),
        };
        out.write_all(format!("{answer}\n").as_bytes()).await?;
        out.flush().await?;
        if words.first() == Some(&"quit") {
            break;
        }
    }
    transport.stop();
    node.shutdown().await;
    Ok(())
}

fn ms(words: &[&str], i: usize) -> anyhow::Result<Duration> {
    Ok(Duration::from_millis(
        words.get(i).context("missing milliseconds")?.parse()?,
    ))
}

/// An instance id whose partition `owner` holds.
fn id_owned_by(
    api: &ClusterApi,
    table: &StaticOwners,
    owner: &str,
    prefix: &str,
) -> anyhow::Result<InstanceId> {
    for k in 0..1000 {
        let id = format!("{prefix}-{k}");
        if table.owner(api.partition_of(&id)).as_deref() == Some(owner) {
            return Ok(InstanceId::new(id)?);
        }
    }
    bail!("no id of prefix {prefix} lands on {owner}")
}

fn p50_p99(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e6;
    (at(0.5), at(0.99))
}

async fn run(
    words: &[&str],
    api: &ClusterApi,
    node: &perdure_node::node::NodeHandle,
    transport: &Transport,
    table: &StaticOwners,
) -> anyhow::Result<String> {
    let w = |i: usize| words.get(i).copied().context("missing argument");
    Ok(match w(0)? {
        "quit" => "bye".into(),
        "wait-node" => transport
            .wait_for_node(w(1)?, ms(words, 2)?)
            .await
            .to_string(),
        "peers" => format!("{:?}", transport.peers().keys().collect::<Vec<_>>()),
        "ping" => match transport
            .call(w(1)?, &PeerRequest::Ping, Duration::from_secs(5))
            .await
        {
            Ok(r) => format!("{r:?}"),
            Err(e) => format!("link-error {e}"),
        },
        "start-owned-by" => {
            let id = id_owned_by(api, table, w(1)?, w(2)?)?;
            let mut req = StartRequest::new("HelloSequence");
            req.instance_id = Some(id.clone());
            match api.start(req).await {
                Err(e) => format!("start-error {e}"),
                Ok(id) => match api
                    .wait_for_completion(id.clone(), Duration::from_secs(20))
                    .await
                {
                    Ok(Some(s)) => format!(
                        "done {id} {} {}",
                        s.runtime_status,
                        s.output
                            .and_then(|o| o.as_json_str().map(str::to_string))
                            .unwrap_or_default()
                    ),
                    Ok(None) => format!("missing {id}"),
                    Err(e) => format!("wait-error {e}"),
                },
            }
        }
        "local-has" => node
            .get_instance(InstanceId::new(w(1)?)?, false)
            .await?
            .is_some()
            .to_string(),
        "corrupt" => {
            // A version byte this build does not know, then noise.
            let bytes = vec![0xEE, 1, 2, 3, 0xFF, 0xFF, 0xFF, 0xFF];
            match transport
                .call_raw(w(1)?, bytes, Duration::from_secs(5))
                .await
            {
                Ok(b) => match perdure_node::cluster::transport::wire::decode::<PeerReply>(&b) {
                    Ok(PeerReply::Undecodable(m)) => format!("undecodable {m}"),
                    Ok(other) => format!("unexpected {other:?}"),
                    Err(e) => format!("reply-not-decodable {e}"),
                },
                Err(e) => format!("link-error {e}"),
            }
        }
        "corrupt-cast" => match transport.cast_raw(w(1)?, vec![1, 0xFF, 0xFF]) {
            Ok(()) => "sent".into(),
            Err(e) => format!("link-error {e}"),
        },
        "wait-stat" => {
            let which = w(1)?.to_string();
            let at_least: u64 = w(2)?.parse()?;
            let reached = transport
                .wait_for_stat(
                    move |s| match which.as_str() {
                        "refused" => s.refused_sessions.load(Ordering::Relaxed),
                        "dead" => s.dead_sessions.load(Ordering::Relaxed),
                        "undecodable_calls" => s.undecodable_calls.load(Ordering::Relaxed),
                        "undecodable_casts" => s.undecodable_casts.load(Ordering::Relaxed),
                        _ => 0,
                    },
                    at_least,
                    ms(words, 3)?,
                )
                .await;
            reached.to_string()
        }
        "latency" => {
            // get_instance of an instance this node owns vs one `remote` owns, through the
            // same ClusterApi, interleaved.
            let remote = w(1)?;
            let n: usize = w(2)?.parse()?;
            let me = transport.local_node().to_string();
            let local_id = id_owned_by(api, table, &me, "lat-local")?;
            let remote_id = id_owned_by(api, table, remote, "lat-remote")?;
            for id in [&local_id, &remote_id] {
                let mut req = StartRequest::new("HelloSequence");
                req.instance_id = Some(id.clone());
                api.start(req).await?;
                api.wait_for_completion(id.clone(), Duration::from_secs(20))
                    .await?;
            }
            let (mut local, mut fwd, mut ping) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..n + n / 10 {
                let t = Instant::now();
                api.get_instance(local_id.clone(), true)
                    .await?
                    .context("local instance")?;
                let l = t.elapsed();
                let t = Instant::now();
                api.get_instance(remote_id.clone(), true)
                    .await?
                    .context("remote instance")?;
                let f = t.elapsed();
                let t = Instant::now();
                transport
                    .call(remote, &PeerRequest::Ping, Duration::from_secs(5))
                    .await?;
                let p = t.elapsed();
                if i >= n / 10 {
                    local.push(l);
                    fwd.push(f);
                    ping.push(p);
                }
            }
            let (l50, l99) = p50_p99(local);
            let (f50, f99) = p50_p99(fwd);
            let (p50, p99) = p50_p99(ping);
            format!(
                "latency n={n} local_p50_us={l50:.0} local_p99_us={l99:.0} forwarded_p50_us={f50:.0} \
                 forwarded_p99_us={f99:.0} added_p50_us={:.0} ping_p50_us={p50:.0} ping_p99_us={p99:.0}",
                f50 - l50
            )
        }
        other => format!("unknown-command {other}"),
    })
}
