//! The `perdure-node` command line (`dev` and `run`) and the entry points for building your
//! own node binary with your own functions.
//!
//! ```no_run
//! use perdure_core::registry::Registry;
//!
//! fn main() -> std::process::ExitCode {
//!     let mut registry = Registry::new();
//!     perdure_node::sample::register(&mut registry); // or your own functions
//!     perdure_node::cli::main(registry)
//! }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use perdure_core::management::ManagementApi;
use perdure_core::registry::Registry;
use tokio::sync::watch;

use crate::cluster::transport::node_link::{self, TransportNudge};
use crate::cluster::transport::{Transport, TransportError};
use crate::config::{ConfigError, ConfigLayer, NodeConfig};
use crate::http::{BASE_PATH, HttpOptions, router};
use crate::node::{Node, NodeError};
use crate::store::{StoreError, StoreOptions, open_store};

/// The `perdure-node` command line.
#[derive(Debug, Parser)]
#[command(
    name = "perdure-node",
    version,
    about = "A Perdure node: durable orchestrations, activities and entities behind the Durable Functions HTTP API."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One node with the embedded store and the app, for trying things out.
    Dev(DevArgs),
    /// A node configured by a TOML file, PERDURE_* environment variables and flags.
    Run(RunArgs),
    /// Make a new API key and print it with its SHA-256 (for `[auth] keys` in the file).
    Key(KeyArgs),
}

/// Flags of `perdure-node key`.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// The key's role: reader, operator or admin.
    #[arg(long, default_value = "operator")]
    pub role: String,
    /// A name for the key, shown in the node's logs.
    #[arg(long)]
    pub name: Option<String>,
    /// Print the SHA-256 of an existing key, read from standard input (not from the command
    /// line, where `ps` and the shell's history would show it), instead of making one.
    #[arg(long)]
    pub hash: bool,
}

/// Flags that `dev` and `run` share.
#[derive(Debug, Args, Default)]
pub struct SharedArgs {
    /// OTLP/HTTP endpoint to export spans to (`http://collector:4318`).
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// PEM certificate chain: serve HTTP and gRPC over TLS (with `--tls-key`).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Serve every route without API keys, even on an address other than loopback.
    #[arg(long)]
    pub insecure_no_auth: bool,
}

impl SharedArgs {
    /// Sets these flags in a configuration layer.
    fn apply(&self, flags: &mut ConfigLayer) {
        flags.http.tls_cert = self.tls_cert.clone();
        flags.http.tls_key = self.tls_key.clone();
        flags.telemetry.otlp_endpoint = self.otlp_endpoint.clone();
        if self.insecure_no_auth {
            flags.auth.insecure_no_auth = Some(true);
        }
    }
}

/// Flags of `perdure-node dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Data directory of the embedded store.
    #[arg(long, default_value = "./.perdure")]
    pub data_dir: PathBuf,
    /// HTTP address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: String,
    /// Durable Task gRPC address (default 127.0.0.1:4001, the SDKs' default; `off`: not
    /// served). Without this flag or PERDURE_GRPC_LISTEN, a taken default port only warns.
    #[arg(long)]
    pub grpc: Option<String>,
    /// Keep everything in memory (nothing survives a restart).
    #[arg(long)]
    pub memory: bool,
    /// Partitions (when the store is new).
    #[arg(long)]
    pub partitions: Option<u64>,
    /// Log filter (`info`, `perdure_node=debug`).
    #[arg(long)]
    pub log: Option<String>,
    /// Security and telemetry flags.
    #[command(flatten)]
    pub shared: SharedArgs,
}

/// Flags of `perdure-node run`; each overrides the environment and the file.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// TOML configuration file.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Store backend: embedded, postgres, foundationdb or memory.
    #[arg(long)]
    pub store: Option<String>,
    /// Data directory of the embedded store.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL connection string.
    #[arg(long)]
    pub store_url: Option<String>,
    /// HTTP address.
    #[arg(long)]
    pub http: Option<String>,
    /// Durable Task gRPC address (`127.0.0.1:4001`; `off`: not served); unset: not served.
    #[arg(long)]
    pub grpc: Option<String>,
    /// Origin used in management URIs (`https://perdure.example.com`).
    #[arg(long)]
    pub public_url: Option<String>,
    /// Partitions (when the store is new).
    #[arg(long)]
    pub partitions: Option<u64>,
    /// Activities run at once on this node.
    #[arg(long)]
    pub max_concurrent_activities: Option<u64>,
    /// Largest payload in bytes.
    #[arg(long)]
    pub max_payload_bytes: Option<u64>,
    /// Node name.
    #[arg(long)]
    pub node_name: Option<String>,
    /// Log filter.
    #[arg(long)]
    pub log: Option<String>,
    /// Cluster transport address (`host:port`); unset: a single node.
    #[arg(long)]
    pub cluster_listen: Option<String>,
    /// Cluster peers to dial at start, comma-separated `host:port` (a hint).
    #[arg(long)]
    pub cluster_seeds: Option<String>,
    /// Security and telemetry flags.
    #[command(flatten)]
    pub shared: SharedArgs,
}

/// Why a node process stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error("could not open the store: {0}")]
    Store(#[from] StoreError),
    /// The node could not start.
    #[error("could not start the node: {0}")]
    Node(#[from] NodeError),
    /// The cluster transport could not start.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The listeners' certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The gRPC listener failed.
    #[error("gRPC server on {addr}: {source}")]
    Grpc {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: crate::grpc::GrpcError,
    },
    /// The HTTP listener failed.
    #[error("HTTP server on {addr}: {source}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Cli {
    /// The resolved configuration of the command, reading the file and the environment.
    pub fn config(&self) -> Result<(NodeConfig, bool), ConfigError> {
        let env = ConfigLayer::from_env(env_vars())?;
        match &self.command {
            Command::Dev(d) => {
                let mut flags = ConfigLayer::default();
                flags.http.bind = Some(d.http.clone());
                if d.memory {
                    flags.store.backend = Some("memory".into());
                } else {
                    flags.store.backend = Some("embedded".into());
                    flags.store.path = Some(d.data_dir.clone());
                }
                flags.node.partitions = d.partitions;
                flags.log.filter = d.log.clone();
                flags.grpc.listen = d.grpc.clone();
                d.shared.apply(&mut flags);
                let asked_for = d.grpc.is_some() || env.grpc.listen.is_some();
                // `dev` serves the gRPC protocol on the SDKs' default address unless told
                // otherwise.
                let mut dev_defaults = ConfigLayer::default();
                dev_defaults.grpc.listen = Some(crate::grpc::DEV_LISTEN.to_string());
                NodeConfig::resolve(&[
                    ("dev default", dev_defaults),
                    ("environment", env),
                    ("flags", flags),
                ])
                .map(|mut c| {
                    c.grpc_listen_optional = !asked_for;
                    (c, true)
                })
            }
            Command::Run(r) => {
                let file = match &r.config {
                    Some(p) => ConfigLayer::from_file(p)?,
                    None => ConfigLayer::default(),
                };
                let mut flags = ConfigLayer::default();
                flags.store.backend = r.store.clone();
                flags.store.path = r.data_dir.clone();
                flags.store.url = r.store_url.clone();
                flags.http.bind = r.http.clone();
                flags.grpc.listen = r.grpc.clone();
                flags.http.public_url = r.public_url.clone();
                flags.node.partitions = r.partitions;
                flags.node.max_concurrent_activities = r.max_concurrent_activities;
                flags.node.max_payload_bytes = r.max_payload_bytes;
                flags.node.name = r.node_name.clone();
                flags.log.filter = r.log.clone();
                flags.cluster.listen = r.cluster_listen.clone();
                flags.cluster.seeds = r.cluster_seeds.clone().map(crate::config::Seeds::Text);
                r.shared.apply(&mut flags);
                let file_name = r
                    .config
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "file".into());
                NodeConfig::resolve(&[
                    (file_name.as_str(), file),
                    ("environment", env),
                    ("flags", flags),
                ])
                .map(|c| (c, false))
            }
            Command::Key(_) => Err(ConfigError {
                field: "(command)".into(),
                source_name: "flags".into(),
                reason: "`key` runs no node".into(),
            }),
        }
    }
}

/// `perdure-node key`: prints a new key (or the digest of a given one) and how to configure
/// it.
fn make_key(k: &KeyArgs) -> ExitCode {
    let Some(role) = crate::access::Role::parse(&k.role) else {
        eprintln!(
            "perdure-node: --role {:?} is not reader, operator or admin",
            k.role
        );
        return ExitCode::from(2);
    };
    let secret = if k.hash {
        let mut line = String::new();
        if let Err(e) = std::io::stdin().read_line(&mut line) {
            eprintln!("perdure-node: cannot read the key from standard input: {e}");
            return ExitCode::from(2);
        }
        line.trim().to_string()
    } else {
        match crate::access::new_key() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("perdure-node: no randomness for a new key: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    if let Err(e) = crate::access::check_secret(&secret) {
        eprintln!("perdure-node: {e}");
        return ExitCode::from(2);
    }
    let name = k.name.clone().unwrap_or_else(|| role.name().to_string());
    let digest = crate::access::hash_key(&secret);
    if !k.hash {
        println!("key (shown once; give it to the client): {secret}");
    }
    println!("in the node's file:");
    println!("  [auth]");
    println!("  keys = [{{ name = {name:?}, role = \"{role}\", sha256 = \"{digest}\" }}]");
    println!("or in its environment: PERDURE_API_KEYS={role}:sha256:{digest}");
    println!("clients send it as `Authorization: Bearer <key>` (perdure CLI: PERDURE_API_KEY)");
    ExitCode::SUCCESS
}

/// The process's environment variables that are text (`std::env::vars` would panic on the
/// others).
fn env_vars() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

/// Runs the command line with these functions: parses the arguments, loads the configuration,
/// serves until SIGINT or SIGTERM, and returns the process exit code.
pub fn main(registry: Registry) -> ExitCode {
    let cli = Cli::parse();
    if let Command::Key(k) = &cli.command {
        return make_key(k);
    }
    let names: Vec<String> = env_vars().map(|(k, _)| k).collect();
    for warning in crate::config::unknown_env_vars(names.iter().map(String::as_str)) {
        eprintln!("perdure-node: warning: {warning}");
    }
    let (cfg, dev) = match cli.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("perdure-node: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.log_filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Spans go to OTLP when an endpoint is configured (set up before the runtime: the
    // exporter's HTTP client is a blocking one).
    let (telemetry, otel) = match &cfg.otlp_endpoint {
        None => (None, None),
        Some(endpoint) => {
            match crate::telemetry::Telemetry::install(endpoint, &cfg.node.cluster.name) {
                Ok((t, tracer)) => (
                    Some(t),
                    Some(tracing_opentelemetry::layer().with_tracer(tracer)),
                ),
                Err(e) => {
                    eprintln!("perdure-node: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        let fmt = tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr);
        use tracing_subscriber::Layer as _;
        // The log filter is the log's; the exported spans are the runtime's own (info and
        // above), whatever the log shows.
        let spans = tracing_subscriber::filter::Targets::new()
            .with_target("perdure_node", tracing::Level::INFO);
        let _ = tracing_subscriber::registry()
            .with(fmt.with_filter(filter))
            .with(otel.map(|l| l.with_filter(spans)))
            .try_init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("perdure-node: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        // Installed before anything starts (see `shutdown_signal`).
        let shutdown = shutdown_signal();
        serve(Arc::new(registry), cfg, shutdown, move |info| {
            print_banner(&info, dev)
        })
        .await
    });
    drop(rt);
    if let Some(t) = telemetry {
        t.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("perdure-node: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its sources, `: `-separated, so the cause is never hidden.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// How long a starting node waits for a store that is not reachable yet (a PostgreSQL
/// container still starting, for example) before giving up.
const STORE_STARTUP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Opens the store, retrying with backoff while it is unavailable (not on other errors).
async fn open_store_with_retry(
    opts: &StoreOptions,
) -> Result<Arc<dyn crate::store::Store>, StoreError> {
    let deadline = tokio::time::Instant::now() + STORE_STARTUP_PATIENCE;
    let mut backoff = std::time::Duration::from_millis(200);
    loop {
        match open_store(opts).await {
            Err(e) if e.is_retryable() && tokio::time::Instant::now() + backoff < deadline => {
                tracing::warn!(error = %error_chain(&e), "store not reachable yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// Binds the gRPC listener, if the protocol is served. In `dev`, the default address being
/// taken (another node, a sidecar) only warns, so that several dev nodes can run side by
/// side; an address that was asked for must be free.
async fn bind_grpc(cfg: &NodeConfig) -> Result<Option<tokio::net::TcpListener>, ServeError> {
    let Some(addr) = cfg.grpc_listen else {
        return Ok(None);
    };
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => Ok(Some(l)),
        Err(e) if cfg.grpc_listen_optional => {
            tracing::warn!(%addr, error = %e, "gRPC port taken; not serving the gRPC protocol (set --grpc)");
            Ok(None)
        }
        Err(source) => Err(ServeError::Grpc {
            addr,
            source: crate::grpc::GrpcError::Io(source),
        }),
    }
}

/// What a started node reports.
#[derive(Debug, Clone)]
pub struct ServeInfo {
    /// The HTTP address actually bound.
    pub addr: SocketAddr,
    /// The gRPC address actually bound, if served.
    pub grpc_addr: Option<SocketAddr>,
    /// The store.
    pub store: StoreOptions,
    /// Partitions.
    pub partitions: u32,
    /// Registered orchestrations.
    pub orchestrations: Vec<String>,
    /// API keys accepted (0: every route is open).
    pub api_keys: usize,
    /// Whether HTTP and gRPC serve TLS.
    pub tls: bool,
}

fn print_banner(info: &ServeInfo, dev: bool) {
    let scheme = if info.tls { "https" } else { "http" };
    let base = format!("{scheme}://{}{BASE_PATH}", info.addr);
    let store = match &info.store {
        StoreOptions::Memory => "in memory".to_string(),
        StoreOptions::Embedded { path } => format!("embedded at {}", path.display()),
        StoreOptions::Postgres { .. } => "postgres".to_string(),
        StoreOptions::Foundationdb { .. } => "foundationdb".to_string(),
    };
    println!(
        "perdure-node listening on {scheme}://{} (store: {store}, {} partitions)",
        info.addr, info.partitions
    );
    println!("  HTTP API: {base}/");
    println!("  dashboard: {scheme}://{}/dashboard", info.addr);
    if let Some(g) = info.grpc_addr {
        let tls = if info.tls { ", TLS" } else { "" };
        println!("  gRPC:     {g} (Durable Task client RPCs{tls}, docs/grpc.md)");
    }
    println!(
        "  probes:   {scheme}://{0}/healthz  {scheme}://{0}/readyz  {scheme}://{0}/metrics",
        info.addr
    );
    if info.api_keys == 0 {
        println!(
            "  access:   open, no API keys (every route serves whoever reaches it; PERDURE_API_KEYS sets keys)"
        );
    } else {
        println!(
            "  access:   {} API key(s); send one as `Authorization: Bearer <key>`",
            info.api_keys
        );
    }
    if dev {
        println!("  orchestrations: {}", info.orchestrations.join(", "));
        let mut adds = Vec::new();
        if info.api_keys > 0 {
            adds.push("-H 'Authorization: Bearer <key>' (this node has API keys)");
        }
        if info.tls {
            adds.push("--cacert <your CA file> (TLS)");
        }
        if adds.is_empty() {
            println!("Try:");
        } else {
            println!("Try (add {} to each):", adds.join(" and "));
        }
        println!("  curl -i -X POST {base}/orchestrators/HelloSequence");
        println!("  curl -s {base}/instances/<id from the answer>");
        println!(
            "  curl -i -X POST {base}/orchestrators/Approval/order-1 -H 'content-type: application/json' -d '{{\"timeoutSeconds\": 300}}'"
        );
        println!(
            "  curl -i -X POST {base}/instances/order-1/raiseEvent/Approval -H 'content-type: application/json' -d true"
        );
        println!("  curl -s {base}/instances/");
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is called
/// (inside the runtime), not when the future is first polled: a signal that arrives while
/// the node is still starting is kept, instead of killing the process with the default
/// action.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (int, term) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => futures::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(int) => {}
                _ = wait(term) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown requested");
    }
}

/// Beyond `http.max_wait`, how long requests running at a stop may take to finish.
const DRAIN_EXTRA: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves a node: opens the store, starts the runtime, serves the HTTP API on the configured
/// address, calls `on_ready` once listening, and on `shutdown` stops accepting requests, lets
/// running ones finish (server-side waits end early), then stops the runtime.
pub async fn serve(
    registry: Arc<Registry>,
    cfg: NodeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(ServeInfo),
) -> Result<(), ServeError> {
    let orchestrations = registry.orchestration_names();
    if cfg.access.insecure_no_auth && cfg.access.keys.is_empty() {
        tracing::warn!(http = %cfg.http_bind, "serving without API keys (insecure_no_auth): anyone who reaches the node can drive and purge every instance");
    }
    // Certificates are read before anything starts, so that a bad file stops the node at once.
    let (http_tls, grpc_tls) = match &cfg.tls {
        None => (None, None),
        Some(files) => (
            Some(crate::tls::server_config(files, &[b"http/1.1"])?),
            Some(crate::tls::server_config(files, &[b"h2"])?),
        ),
    };
    let store = open_store_with_retry(&cfg.store).await?;
    // Bound before the node starts, so that its heartbeat record carries the real port.
    let listener = tokio::net::TcpListener::bind(cfg.http_bind)
        .await
        .map_err(|source| ServeError::Http {
            addr: cfg.http_bind,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Http {
        addr: cfg.http_bind,
        source,
    })?;
    let grpc_listener = bind_grpc(&cfg).await?;
    let mut node_opts = cfg.node.clone();
    if node_opts.cluster.http_address.is_none() {
        node_opts.cluster.http_address = Some(cfg.http.public_url.clone().unwrap_or_else(|| {
            let scheme = if cfg.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{addr}")
        }));
    }
    let transport = match &cfg.transport {
        None => None,
        Some(t) => {
            node_opts.cluster.cluster_address = Some(t.advertise_addr());
            Some(Transport::start(t.clone()).await?)
        }
    };
    // With gRPC served, the orchestrations and activities the registry lacks go to the SDK
    // workers connected to this node.
    let workers = grpc_listener
        .as_ref()
        .map(|_| crate::grpc::WorkerHub::new());
    let local: Arc<dyn crate::runtime::executor::Executors> =
        Arc::new(crate::runtime::core_executor::CoreExecutor::new(registry));
    // In a cluster, work items no worker here serves go to the workers of peers (set before
    // the node starts, so that recovered episodes route the same way).
    let peer_work = match (&workers, &transport) {
        (Some(hub), Some(t)) => Some(crate::grpc::peers::join_cluster(hub, t)),
        _ => None,
    };
    let exec: Arc<dyn crate::runtime::executor::Executors> = match &workers {
        Some(hub) => Arc::new(crate::grpc::GrpcExecutors::new(local, hub.clone())),
        None => local,
    };
    let mut builder = Node::builder()
        .executors(exec)
        .store(store)
        .options(node_opts);
    if let Some(t) = &transport {
        builder = builder.peer_nudge(Arc::new(TransportNudge::new(t.clone())));
    }
    let node = builder.start().await?;
    // Any node answers for any instance: through the cluster API when linked to peers.
    let api: Arc<dyn ManagementApi> = match &transport {
        Some(t) => Arc::new(node_link::attach(&node, t, peer_work)),
        None => Arc::new(node.clone()),
    };
    let grpc_keys = Arc::new(cfg.access.keys.clone());
    let (down_tx, down_rx) = watch::channel(false);
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let metrics = node.metrics();
    let http_opts = HttpOptions {
        readiness: Some({
            let ready = ready.clone();
            Arc::new(move || ready.load(std::sync::atomic::Ordering::Relaxed))
        }),
        metrics: Some({
            let transport = transport.clone();
            let hub = workers.clone();
            Arc::new(move || {
                let mut text = metrics.render_prometheus();
                if let Some(t) = &transport {
                    text.push_str(&t.render_prometheus());
                }
                if let Some(h) = &hub {
                    text.push_str(&h.render_prometheus());
                }
                text
            })
        }),
        cluster: Some({
            let view = node.cluster();
            Arc::new(move || view.borrow().clone())
        }),
        shutting_down: Some(down_rx.clone()),
        // The keys come from `cfg.access` only, for HTTP as for gRPC.
        keys: grpc_keys.clone(),
        metrics_open: cfg.access.metrics_open,
        tls: cfg.tls.is_some(),
        traces: cfg.node.traces,
        ..cfg.http.clone()
    };
    let app = router(api.clone(), http_opts);
    let grpc_addr = grpc_listener.as_ref().and_then(|l| l.local_addr().ok());
    let grpc_task = grpc_listener.map(|listener| {
        let keys = grpc_keys.clone();
        let mut down = down_rx.clone();
        let grpc_down = down_rx.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = down.wait_for(|d| *d).await;
            };
            crate::grpc::serve_with(
                api,
                listener,
                Some(grpc_down),
                workers,
                keys,
                grpc_tls,
                stop,
            )
            .await
        })
    });
    on_ready(ServeInfo {
        addr,
        grpc_addr,
        store: cfg.store.clone(),
        partitions: node.partitions(),
        orchestrations,
        api_keys: cfg.access.keys.len(),
        tls: cfg.tls.is_some(),
    });
    let signal = async move {
        shutdown.await;
        ready.store(false, std::sync::atomic::Ordering::Relaxed);
        let _ = down_tx.send(true);
    };
    let serving: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>> =
        match http_tls {
            None => Box::pin(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(signal)
                    .await
            }),
            Some(config) => {
                let listener = crate::tls::HttpsListener::new(listener, config)
                    .map_err(|source| ServeError::Http { addr, source })?;
                Box::pin(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(signal)
                        .await
                })
            }
        };
    // Requests running when the stop comes get this long to finish (their server-side waits
    // end at once); a connection that keeps a request open longer (a client that never sends
    // the rest of it) is dropped then, so that a stop always ends.
    let grace = cfg.http.max_wait + DRAIN_EXTRA;
    let stopping = {
        let mut down = down_rx.clone();
        async move {
            let _ = down.wait_for(|d| *d).await;
            tokio::time::sleep(grace).await;
        }
    };
    let served = tokio::select! {
        r = serving => r,
        _ = stopping => {
            tracing::warn!(?grace, "HTTP requests still open after the stop; dropping them");
            Ok(())
        }
    };
    // A failed gRPC server is reported after the node has stopped (its partitions handed
    // off), not instead of stopping it.
    let mut grpc_failed = None;
    if let (Some(mut task), Some(grpc_addr)) = (grpc_task, grpc_addr) {
        match tokio::time::timeout(grace, &mut task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(source))) => {
                tracing::error!(error = %error_chain(&source), "gRPC server failed");
                grpc_failed = Some(ServeError::Grpc {
                    addr: grpc_addr,
                    source,
                });
            }
            Ok(Err(e)) => tracing::error!(error = %e, "gRPC server task failed"),
            Err(_) => {
                tracing::warn!(
                    ?grace,
                    "gRPC calls still open after the stop; dropping them"
                );
                task.abort();
            }
        }
    }
    tracing::info!("HTTP server stopped; stopping the runtime");
    node.shutdown().await;
    if let Some(t) = &transport {
        t.stop();
    }
    tracing::info!("node stopped");
    if let Some(e) = grpc_failed {
        return Err(e);
    }
    served.map_err(|source| ServeError::Http { addr, source })
}
