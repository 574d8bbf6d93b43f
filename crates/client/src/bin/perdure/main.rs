//! `perdure`: the operator's command line for a Perdure node (or several, for failover).
//! Tables for people by default, `--json` for scripts.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use futures::TryStreamExt;
use perdure_client::{
    DurableClient, EntityId, EntityQuery, HttpClientOptions, InstanceId, InstanceQuery,
    OrchestrationStatus, Payload, PurgeFilter, Timestamp,
};
use perdure_core::iso8601;
use perdure_core::management::{InstanceState, StartRequest};
use serde_json::{Value, json};

mod output;

use output::{event_detail, payload_json, payload_text, print_state, state_json, table};

/// An API key; its `Debug` never shows it.
#[derive(Clone)]
struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for ApiKey {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "perdure",
    version,
    about = "Drive a Perdure node: start, inspect and manage orchestrations and entities."
)]
struct Cli {
    /// Node URL(s), comma-separated for failover.
    #[arg(
        long,
        env = "PERDURE_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// API key for nodes that require one (sent as `Authorization: Bearer`).
    /// Prefer the variable: a flag's value shows in `ps` and in the shell's history.
    #[arg(long, env = "PERDURE_API_KEY", global = true, hide_env_values = true)]
    api_key: Option<ApiKey>,
    /// PEM file of the CA that signed the node's TLS certificate (for `https://` URLs of
    /// a private CA).
    #[arg(long, env = "PERDURE_CA_CERT", global = true)]
    ca_cert: Option<std::path::PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Show the cluster as the (first) node sees it: its members and the partition table.
    Cluster {
        /// Only the members, not the partition table.
        #[arg(long)]
        nodes_only: bool,
    },
    /// Start an orchestration.
    Start {
        /// Orchestration name.
        name: String,
        /// Instance id (generated when omitted).
        #[arg(long)]
        id: Option<String>,
        /// Input, as JSON (a string needs quotes: '"Tokyo"').
        #[arg(long)]
        input: Option<String>,
        /// Orchestration version.
        #[arg(long)]
        version: Option<String>,
        /// Start no earlier than this time (ISO-8601).
        #[arg(long)]
        at: Option<String>,
        /// Wait up to this many seconds for it to finish and print the result.
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Show an instance's status.
    Status {
        /// Instance id.
        id: String,
        /// Hide the input and output.
        #[arg(long)]
        no_payloads: bool,
    },
    /// Show an instance's history.
    History {
        /// Instance id.
        id: String,
    },
    /// List instances.
    List(ListArgs),
    /// Raise an event.
    Raise {
        /// Instance id.
        id: String,
        /// Event name.
        event: String,
        /// Event data, as JSON.
        #[arg(long)]
        data: Option<String>,
    },
    /// Terminate an instance.
    Terminate {
        /// Instance id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
        /// Terminate its sub-orchestrations too.
        #[arg(long)]
        recursive: bool,
    },
    /// Suspend an instance.
    Suspend {
        /// Instance id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a suspended instance.
    Resume {
        /// Instance id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Rewind a failed instance.
    Rewind {
        /// Instance id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Restart an instance with its original input.
    Restart {
        /// Instance id.
        id: String,
        /// Keep the same instance id (default: a new one).
        #[arg(long)]
        same_id: bool,
    },
    /// Purge one finished instance (by id) or every finished instance matching filters.
    Purge(PurgeArgs),
    /// Entities.
    #[command(subcommand)]
    Entity(EntityCmd),
    /// List the registered functions.
    Functions,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Runtime statuses, comma-separated (Running,Completed,...).
    #[arg(long)]
    status: Option<String>,
    /// Instance id prefix.
    #[arg(long)]
    prefix: Option<String>,
    /// Orchestration name.
    #[arg(long)]
    name: Option<String>,
    /// Created at or after (ISO-8601).
    #[arg(long)]
    from: Option<String>,
    /// Created at or before (ISO-8601).
    #[arg(long)]
    to: Option<String>,
    /// At most this many instances (0: all).
    #[arg(long, default_value_t = 100)]
    top: usize,
    /// Counts per status instead of instances.
    #[arg(long)]
    counts: bool,
}

#[derive(Debug, Args)]
struct PurgeArgs {
    /// Instance id (omit to purge by filter).
    id: Option<String>,
    /// Runtime statuses (default: every finished status).
    #[arg(long)]
    status: Option<String>,
    /// Created at or after (ISO-8601).
    #[arg(long)]
    from: Option<String>,
    /// Created at or before (ISO-8601).
    #[arg(long)]
    to: Option<String>,
    /// Needed to purge by filter without any filter.
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Subcommand)]
enum EntityCmd {
    /// Signal an entity operation.
    Signal {
        /// Entity name.
        name: String,
        /// Entity key.
        key: String,
        /// Operation.
        op: String,
        /// Operation input, as JSON.
        #[arg(long)]
        input: Option<String>,
    },
    /// Show an entity's state.
    Get {
        /// Entity name.
        name: String,
        /// Entity key.
        key: String,
    },
    /// List entities.
    List {
        /// Entity name (all when omitted).
        name: Option<String>,
        /// Show states.
        #[arg(long)]
        state: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn json_payload(what: &str, text: Option<&str>) -> anyhow::Result<Option<Payload>> {
    text.map(|t| {
        Payload::from_json_text(t)
            .with_context(|| format!("{what} must be JSON (for a string, quote it: '\"{t}\"')"))
    })
    .transpose()
}

fn time(what: &str, t: Option<&str>) -> anyhow::Result<Option<Timestamp>> {
    t.map(|t| {
        iso8601::parse(t).with_context(|| format!("{what}: {t:?} is not an ISO-8601 date-time"))
    })
    .transpose()
}

fn statuses(s: Option<&str>) -> anyhow::Result<Vec<OrchestrationStatus>> {
    let mut out = Vec::new();
    for part in s
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        out.push(OrchestrationStatus::parse(part).with_context(|| {
            format!(
                "{part:?} is not a runtime status (one of {})",
                OrchestrationStatus::ALL.map(|s| s.as_str()).join(", ")
            )
        })?);
    }
    Ok(out)
}

fn iid(s: &str) -> anyhow::Result<InstanceId> {
    InstanceId::new(s).map_err(|e| anyhow::anyhow!("{e}"))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let urls: Vec<String> = cli
        .url
        .split(',')
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect();
    let ca = match &cli.ca_cert {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("--ca-cert {}", p.display()))?),
        None => None,
    };
    let opts = |urls: Vec<String>| {
        let mut o = HttpClientOptions::new(urls);
        if let Some(k) = &cli.api_key {
            o = o.with_api_key(k.0.clone());
        }
        if let Some(pem) = &ca {
            o = o.with_ca_certificate(pem.clone());
        }
        o
    };
    let client = DurableClient::http_with(opts(urls.clone()))?;
    let as_json = cli.json;
    match cli.command {
        Cmd::Start {
            name,
            id,
            input,
            version,
            at,
            wait,
        } => {
            let mut req = StartRequest::new(name);
            req.instance_id = id.as_deref().map(iid).transpose()?;
            req.input = json_payload("--input", input.as_deref())?;
            req.version = version;
            req.scheduled_start = time("--at", at.as_deref())?;
            let id = client.start(req).await?;
            match wait {
                None if as_json => println!("{}", json!({"id": id.as_str()})),
                None => println!("started {id}"),
                Some(secs) => {
                    let done = client
                        .wait_for_instance_completion(&id, Duration::from_secs(secs))
                        .await?;
                    if as_json {
                        println!("{}", state_json(&done.state));
                    } else {
                        print_state(&done.state);
                    }
                }
            }
        }
        Cmd::Status { id, no_payloads } => {
            let id = iid(&id)?;
            let Some(m) = client.get_instance(&id, !no_payloads, false).await? else {
                bail!("no instance with id {id}");
            };
            if as_json {
                println!("{}", state_json(&m.state));
            } else {
                print_state(&m.state);
            }
        }
        Cmd::History { id } => {
            let id = iid(&id)?;
            let Some(events) = client.get_history(&id).await? else {
                bail!("no instance with id {id}");
            };
            if as_json {
                println!("{}", serde_json::to_string_pretty(&events)?);
            } else {
                let rows: Vec<Vec<String>> = events
                    .iter()
                    .map(|e| {
                        vec![
                            e.event_id.to_string(),
                            iso8601::format(e.timestamp),
                            e.name().to_string(),
                            event_detail(&e.kind),
                        ]
                    })
                    .collect();
                table(&["ID", "TIME", "EVENT", "DETAIL"], &rows);
            }
        }
        Cmd::List(a) => {
            let query = InstanceQuery {
                created_from: time("--from", a.from.as_deref())?,
                created_to: time("--to", a.to.as_deref())?,
                statuses: statuses(a.status.as_deref())?,
                instance_id_prefix: a.prefix,
                name: a.name,
                page_size: if a.top == 0 {
                    100
                } else {
                    a.top.min(1000) as u32
                },
                continuation: None,
                fetch_payloads: false,
            };
            if a.counts {
                let counts = client.count_instances(query).await?;
                if as_json {
                    let m: serde_json::Map<String, Value> = counts
                        .iter()
                        .map(|(k, v)| (k.as_str().to_string(), json!(v)))
                        .collect();
                    println!("{}", Value::Object(m));
                } else {
                    let rows: Vec<Vec<String>> = OrchestrationStatus::ALL
                        .iter()
                        .map(|s| {
                            vec![
                                s.to_string(),
                                counts.get(s).copied().unwrap_or(0).to_string(),
                            ]
                        })
                        .collect();
                    table(&["STATUS", "COUNT"], &rows);
                }
                return Ok(());
            }
            let stream = client.query_instances(query);
            let limit = if a.top == 0 { usize::MAX } else { a.top };
            let items: Vec<InstanceState> = stream.take_while_ok(limit).await?;
            if as_json {
                let v: Vec<Value> = items.iter().map(state_json).collect();
                println!("{}", Value::Array(v));
            } else {
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|s| {
                        vec![
                            s.instance_id.to_string(),
                            s.name.clone(),
                            s.runtime_status.to_string(),
                            iso8601::format(s.created_at),
                            iso8601::format(s.last_updated_at),
                        ]
                    })
                    .collect();
                table(&["INSTANCE", "NAME", "STATUS", "CREATED", "UPDATED"], &rows);
            }
        }
        Cmd::Raise { id, event, data } => {
            let id = iid(&id)?;
            let data = json_payload("--data", data.as_deref())?;
            client.raise_event_payload(&id, &event, data).await?;
            done(as_json, &format!("raised {event} on {id}"));
        }
        Cmd::Terminate {
            id,
            reason,
            recursive,
        } => {
            let id = iid(&id)?;
            client.terminate(&id, reason.as_deref(), recursive).await?;
            done(as_json, &format!("terminating {id}"));
        }
        Cmd::Suspend { id, reason } => {
            let id = iid(&id)?;
            client.suspend(&id, reason.as_deref()).await?;
            done(as_json, &format!("suspending {id}"));
        }
        Cmd::Resume { id, reason } => {
            let id = iid(&id)?;
            client.resume(&id, reason.as_deref()).await?;
            done(as_json, &format!("resuming {id}"));
        }
        Cmd::Rewind { id, reason } => {
            let id = iid(&id)?;
            client.rewind(&id, reason.as_deref()).await?;
            done(as_json, &format!("rewinding {id}"));
        }
        Cmd::Restart { id, same_id } => {
            let id = iid(&id)?;
            let new_id = client.restart(&id, !same_id).await?;
            if as_json {
                println!("{}", json!({"id": new_id.as_str()}));
            } else {
                println!("restarted {id} as {new_id}");
            }
        }
        Cmd::Cluster { nodes_only } => {
            cluster(
                &urls,
                cli.api_key.as_ref().map(|k| k.0.as_str()),
                ca.as_deref(),
                nodes_only,
                as_json,
            )
            .await?
        }
        Cmd::Purge(p) => purge(&client, p, as_json).await?,
        Cmd::Entity(e) => entity(&client, e, as_json).await?,
        Cmd::Functions => {
            let api = perdure_client::HttpTransport::new(opts(urls))?;
            let f = api.registered_functions().await?;
            if as_json {
                println!("{}", serde_json::to_string(&f)?);
            } else {
                let mut rows = Vec::new();
                for (kind, names) in &f {
                    for n in names {
                        rows.push(vec![kind.clone(), n.clone()]);
                    }
                }
                table(&["KIND", "NAME"], &rows);
            }
        }
    }
    Ok(())
}

async fn cluster(
    urls: &[String],
    api_key: Option<&str>,
    ca: Option<&[u8]>,
    nodes_only: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let base = urls
        .first()
        .context("--url names no node")?
        .trim_end_matches('/')
        .to_string();
    let mut http = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if let Some(pem) = ca {
        for cert in reqwest::Certificate::from_pem_bundle(pem).context("--ca-cert")? {
            http = http.add_root_certificate(cert);
        }
    }
    let http = http.build()?;
    let get = |path: &'static str| {
        let url = format!("{base}{path}");
        let http = http.clone();
        async move {
            let mut req = http.get(&url);
            if let Some(k) = api_key {
                req = req.bearer_auth(k);
            }
            let resp = req.send().await.with_context(|| format!("GET {url}"))?;
            if !resp.status().is_success() {
                bail!("GET {url}: {}", resp.status());
            }
            resp.json::<Value>()
                .await
                .with_context(|| format!("GET {url}: not JSON"))
        }
    };
    let nodes = get("/cluster/nodes").await?;
    let parts = if nodes_only {
        Value::Null
    } else {
        get("/cluster/partitions").await?
    };
    if as_json {
        println!("{}", json!({"nodes": nodes, "partitions": parts}));
        return Ok(());
    }
    let when = |v: &Value| {
        v.as_u64()
            .map(|ms| iso8601::format(Timestamp::from_millis(ms)))
            .unwrap_or_else(|| "-".into())
    };
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    println!(
        "seen by {}{}",
        text(&nodes["node"]),
        nodes["notReady"]
            .as_str()
            .map(|r| format!(" (not ready: {r})"))
            .unwrap_or_default()
    );
    let rows: Vec<Vec<String>> = nodes["nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|n| {
            let state = match (n["live"].as_bool(), n["leaving"].as_bool()) {
                (_, Some(true)) => "leaving",
                (Some(true), _) => "live",
                _ => "dead",
            };
            vec![
                text(&n["name"]),
                state.to_string(),
                n["partitions"].to_string(),
                text(&n["httpAddress"]),
                when(&n["lastSeen"]),
            ]
        })
        .collect();
    table(&["NODE", "STATE", "PARTITIONS", "HTTP", "LAST SEEN"], &rows);
    if !nodes_only {
        println!();
        let rows: Vec<Vec<String>> = parts["partitions"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|p| {
                vec![
                    p["partition"].to_string(),
                    text(&p["owner"]),
                    p["epoch"].to_string(),
                    when(&p["since"]),
                    text(&p["desired"]),
                ]
            })
            .collect();
        table(&["PARTITION", "OWNER", "EPOCH", "SINCE", "DESIRED"], &rows);
    }
    Ok(())
}

fn done(as_json: bool, msg: &str) {
    if as_json {
        println!("{}", json!({"ok": true}));
    } else {
        println!("{msg}");
    }
}

async fn purge(client: &DurableClient, p: PurgeArgs, as_json: bool) -> anyhow::Result<()> {
    if let Some(id) = p.id {
        let id = iid(&id)?;
        let n = client.purge_instance(&id).await?;
        if as_json {
            println!("{}", json!({"instancesDeleted": n}));
        } else if n == 0 {
            println!("nothing to purge for {id}");
        } else {
            println!("purged {id}");
        }
        return Ok(());
    }
    let filter = PurgeFilter {
        created_from: time("--from", p.from.as_deref())?,
        created_to: time("--to", p.to.as_deref())?,
        statuses: statuses(p.status.as_deref())?,
    };
    if filter == PurgeFilter::default() && !p.all {
        bail!("give an instance id, a filter (--status, --from, --to) or --all");
    }
    let tty = std::io::stderr().is_terminal();
    let spinner = ['|', '/', '-', '\\'];
    let mut batches = 0usize;
    let total = client
        .purge_instances_with_progress(filter, |n| {
            batches += 1;
            let s = spinner.get(batches % 4).copied().unwrap_or('|');
            if tty {
                eprint!("\r{s} purged {n} instances…");
            } else {
                eprintln!("purged {n} instances so far");
            }
        })
        .await?;
    if tty {
        eprintln!();
    }
    if as_json {
        println!("{}", json!({"instancesDeleted": total}));
    } else {
        println!("purged {total} instances");
    }
    Ok(())
}

async fn entity(client: &DurableClient, e: EntityCmd, as_json: bool) -> anyhow::Result<()> {
    let eid = |n: &str, k: &str| EntityId::new(n, k).map_err(|e| anyhow::anyhow!("{e}"));
    match e {
        EntityCmd::Signal {
            name,
            key,
            op,
            input,
        } => {
            let id = eid(&name, &key)?;
            let input = json_payload("--input", input.as_deref())?;
            client.signal_entity_payload(&id, &op, input, None).await?;
            done(as_json, &format!("signalled {op} to {id}"));
        }
        EntityCmd::Get { name, key } => {
            let id = eid(&name, &key)?;
            let Some(st) = client.get_entity(&id).await? else {
                bail!("no entity {id}");
            };
            if as_json {
                println!(
                    "{}",
                    json!({
                        "entityId": {"name": st.id.name(), "key": st.id.key()},
                        "state": payload_json(st.state.as_ref()),
                        "lastOperationTime": iso8601::format(st.last_modified),
                        "lockedBy": st.locked_by,
                        "backlogQueueSize": st.backlog,
                    })
                );
            } else {
                println!("{:<14} {id}", "entity");
                println!("{:<14} {}", "state", payload_text(st.state.as_ref()));
                println!(
                    "{:<14} {}",
                    "last modified",
                    iso8601::format(st.last_modified)
                );
                if let Some(l) = &st.locked_by {
                    println!("{:<14} {l}", "locked by");
                }
                if st.backlog > 0 {
                    println!("{:<14} {}", "backlog", st.backlog);
                }
            }
        }
        EntityCmd::List { name, state } => {
            let q = EntityQuery {
                name: name.map(|n| n.to_lowercase()),
                fetch_state: state,
                ..EntityQuery::default()
            };
            let items: Vec<_> = client.query_entities(q).try_collect().await?;
            if as_json {
                let v: Vec<Value> = items
                    .iter()
                    .map(|st| {
                        json!({
                            "entityId": {"name": st.id.name(), "key": st.id.key()},
                            "state": payload_json(st.state.as_ref()),
                            "lastOperationTime": iso8601::format(st.last_modified),
                        })
                    })
                    .collect();
                println!("{}", Value::Array(v));
            } else {
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|st| {
                        vec![
                            st.id.name().to_string(),
                            st.id.key().to_string(),
                            iso8601::format(st.last_modified),
                            payload_text(st.state.as_ref()),
                        ]
                    })
                    .collect();
                table(&["NAME", "KEY", "LAST MODIFIED", "STATE"], &rows);
            }
        }
    }
    Ok(())
}

/// Collects at most `n` items of a fallible stream.
trait TakeOk<T> {
    async fn take_while_ok(self, n: usize) -> anyhow::Result<Vec<T>>;
}

impl<T, S> TakeOk<T> for S
where
    S: futures::Stream<Item = Result<T, perdure_client::ClientError>>,
{
    async fn take_while_ok(self, n: usize) -> anyhow::Result<Vec<T>> {
        use futures::StreamExt;
        let items: Vec<Result<T, _>> = self.take(n).collect().await;
        Ok(items.into_iter().collect::<Result<Vec<T>, _>>()?)
    }
}
