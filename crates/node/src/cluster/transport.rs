//! Links between nodes over `ractor_cluster`.
//!
//! Each node serves a `ractor_cluster` [`NodeServer`] on `cluster.listen`, dials its seeds and
//! any address the membership side hands to [`Transport::connect`], and hosts a few remotable
//! router actors in the `pg` group `perdure.router.<node name>`. Peers reach a node by its
//! name only; requests, replies and casts are bytes from the one codec (see [`wire`]), so a
//! payload that does not decode is answered with an error instead of killing the session.
//!
//! Everything above this module talks to a [`Links`] trait object, so a deterministic
//! simulation can replace the network later.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use perdure_node::cluster::transport::{Links, Transport, TransportOptions, wire::PeerRequest};
//! let mut opts = TransportOptions::new("n1", "127.0.0.1:7101".parse()?);
//! opts.seeds = vec!["127.0.0.1:7102".into()];
//! let t = Transport::start(opts).await?;
//! let reply = t.call("n2", &PeerRequest::Ping, std::time::Duration::from_secs(1)).await?;
//! # let _ = reply; Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{
    IncomingEncryptionMode, NodeEventSubscription, NodeServer, NodeServerMessage,
};
use tokio::sync::watch;

pub mod forward;
pub mod node_link;
mod router;
mod tls;
pub mod wire;

pub use forward::{
    ClusterApi, ForwardOptions, NudgeTarget, PartitionOwners, PeerWork, ServePeers, StaticOwners,
};
pub use router::{PeerHandler, RouterMsg, TransportStats};

use router::{HandlerSlot, RouterActor, RouterArgs};
use wire::{PeerCast, PeerReply, PeerRequest};

/// The cookie used when none is configured and the node listens on loopback only.
pub const LOOPBACK_COOKIE: &str = "perdure-loopback-only";

/// How a node links to its peers.
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// This node's name (unique among live nodes).
    pub node_name: String,
    /// Where the node server listens.
    pub listen: SocketAddr,
    /// The `host:port` peers dial (defaults to `listen`); its port must be the listen port.
    pub advertise: Option<String>,
    /// `host:port` addresses dialled at start (a hint: peers are also found from the store's
    /// membership records).
    pub seeds: Vec<String>,
    /// The shared secret; required unless `listen` is a loopback address.
    pub cookie: Option<String>,
    /// TLS for the cluster transport.
    pub tls: Option<TlsFiles>,
    /// Router actors on this node.
    pub routers: usize,
    /// How often addresses that are not connected are dialled again.
    pub redial_every: Duration,
}

/// Certificate files for TLS between nodes (every node presents its certificate and checks
/// its peers' against the CA).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain of this node.
    pub cert: PathBuf,
    /// PEM private key of this node.
    pub key: PathBuf,
    /// PEM CA certificate(s) that sign the peers' certificates.
    pub ca: PathBuf,
    /// The name peers' certificates are checked against (default `perdure`).
    pub server_name: Option<String>,
}

impl TransportOptions {
    /// Options with no seeds, no cookie and 4 routers.
    pub fn new(node_name: impl Into<String>, listen: SocketAddr) -> Self {
        Self {
            node_name: node_name.into(),
            listen,
            advertise: None,
            seeds: Vec::new(),
            cookie: None,
            tls: None,
            routers: 4,
            redial_every: Duration::from_secs(2),
        }
    }

    /// Checks the options: a node that listens beyond loopback needs a cookie.
    pub fn validate(&self) -> Result<(), TransportError> {
        if self.cookie.as_deref().is_none_or(str::is_empty) && !self.listen.ip().is_loopback() {
            return Err(TransportError::CookieRequired {
                listen: self.listen,
            });
        }
        if self.node_name.is_empty() || self.node_name.contains('@') {
            return Err(TransportError::BadOption(format!(
                "node name {:?} must be non-empty and without '@'",
                self.node_name
            )));
        }
        if self.routers == 0 {
            return Err(TransportError::BadOption(
                "routers must be at least 1".into(),
            ));
        }
        let adv = self.advertise_addr();
        match adv.rsplit_once(':').map(|(_, p)| p.parse::<u16>()) {
            Some(Ok(p)) if p == self.listen.port() => Ok(()),
            _ => Err(TransportError::BadOption(format!(
                "cluster.advertise {adv:?} must be host:port with the listen port {}",
                self.listen.port()
            ))),
        }
    }

    /// The address peers dial.
    pub fn advertise_addr(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    fn cookie(&self) -> String {
        self.cookie
            .clone()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| LOOPBACK_COOKIE.to_string())
    }
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Listening beyond loopback without a cookie would let anyone on the network in.
    #[error(
        "cluster.listen is {listen}, not a loopback address, and no cluster.cookie is set: \
         set cluster.cookie (PERDURE_CLUSTER_COOKIE) to the same secret on every node"
    )]
    CookieRequired {
        /// The listen address.
        listen: SocketAddr,
    },
    /// A bad option.
    #[error("cluster transport: {0}")]
    BadOption(String),
    /// TLS files could not be read or used.
    #[error("cluster TLS: {0}")]
    Tls(String),
    /// An actor could not be started (for example the port is taken).
    #[error("cluster transport could not start: {0}")]
    Spawn(String),
}

/// Why a message could not reach a peer or its answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No router of that node is known (not connected, or it left).
    #[error("no link to node {0}")]
    NoRoute(String),
    /// The request was sent; no answer came in time. It may or may not have taken effect.
    #[error("node {0} did not answer within {1:?}")]
    Timeout(String, Duration),
    /// The link broke after the request was sent. It may or may not have taken effect.
    #[error("the link to node {0} closed before it answered")]
    Closed(String),
    /// The message could not be encoded.
    #[error("cannot encode the message")]
    Encode(#[source] perdure_core::codec::CodecError),
    /// The answer did not decode.
    #[error("the answer of node {0} did not decode")]
    Decode(String, #[source] perdure_core::codec::CodecError),
}

impl LinkError {
    /// Whether the request may have reached the peer (and so may have taken effect).
    pub fn maybe_delivered(&self) -> bool {
        matches!(self, Self::Timeout(..) | Self::Closed(_) | Self::Decode(..))
    }
}

/// The links between nodes, as the rest of the node sees them (a simulation can implement
/// this without sockets).
pub trait Links: Send + Sync + 'static {
    /// This node's name.
    fn local_node(&self) -> &str;
    /// Sends a request to `node` and waits up to `timeout` for the answer.
    fn call<'a>(
        &'a self,
        node: &'a str,
        request: &'a PeerRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<PeerReply, LinkError>>;
    /// Sends a one-way message to `node`.
    fn cast(&self, node: &str, message: &PeerCast) -> Result<(), LinkError>;
}

/// The `pg` group of a node's routers.
pub fn router_group(node: &str) -> String {
    format!("perdure.router.{node}")
}

struct Inner {
    opts: TransportOptions,
    server: ActorRef<NodeServerMessage>,
    routers: Vec<ActorRef<RouterMsg>>,
    handler: HandlerSlot,
    stats: Arc<TransportStats>,
    next: AtomicUsize,
    /// Ready peers: node name -> the address it advertises.
    peers: watch::Sender<BTreeMap<String, String>>,
    /// Addresses to keep connected (seeds and every `connect`).
    wanted: Mutex<BTreeSet<String>>,
    tls: Option<tls::Tls>,
    stopped: OnceLock<()>,
    /// Ready sessions: session id -> (peer name, the session's actor). A peer may briefly have
    /// two while ractor_cluster settles a simultaneous connect; the liveness probe stops them.
    sessions: Mutex<HashMap<u64, (String, ActorRef<ractor_cluster::NodeSessionMessage>)>>,
    /// Consecutive unanswered pings per peer.
    unanswered: Mutex<HashMap<String, (u32, BTreeSet<u64>)>>,
}

/// Pings in a row a peer may leave unanswered (one per probe round) before its sessions are
/// closed: a link cut without a reset (a network partition, a peer that came back with
/// another address) otherwise stays "connected" until TCP gives up, about 15 minutes, and
/// every call over it times out — while the peer's new connections are refused as duplicates.
const UNANSWERED_PINGS: u32 = 3;
/// How long a peer has to answer a liveness ping (all traffic to a peer shares one stream:
/// a large transfer or a busy runtime may delay it).
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one dial (TCP connect, TLS and the cluster handshake) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// A running transport. Clones share it.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("node", &self.inner.opts.node_name)
            .field("listen", &self.inner.opts.listen)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Starts the node server and the routers, then dials the seeds. Requests from peers are
    /// answered `NotReady` until [`Transport::set_handler`].
    pub async fn start(opts: TransportOptions) -> Result<Self, TransportError> {
        opts.validate()?;
        let tls = opts.tls.as_ref().map(tls::Tls::load).transpose()?;
        let adv = opts.advertise_addr();
        let host = adv
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_default();
        let server = NodeServer::new(
            opts.listen.port(),
            opts.cookie(),
            opts.node_name.clone(),
            host,
            Some(match &tls {
                Some(t) => IncomingEncryptionMode::Tls(t.acceptor.clone()),
                None => IncomingEncryptionMode::Raw,
            }),
            Some(NodeConnectionMode::Isolated),
        )
        .with_listen_addr(opts.listen.ip())
        .with_max_inbound_frame_size(
            u64::try_from(perdure_core::codec::MAX_DECODE_BYTES).unwrap_or(u64::MAX) + 4096,
        );
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| TransportError::Spawn(format!("{} ({e})", opts.listen)))?;
        let handler: HandlerSlot = Arc::new(OnceLock::new());
        let stats = Arc::new(TransportStats::default());
        let mut routers = Vec::with_capacity(opts.routers);
        for _ in 0..opts.routers {
            let (r, _) = Actor::spawn(
                None,
                RouterActor,
                RouterArgs {
                    handler: handler.clone(),
                    stats: stats.clone(),
                },
            )
            .await
            .map_err(|e| TransportError::Spawn(e.to_string()))?;
            routers.push(r);
        }
        ractor::pg::join(
            router_group(&opts.node_name),
            routers.iter().map(|r| r.get_cell()).collect(),
        );
        let (peers, _) = watch::channel(BTreeMap::new());
        let wanted = opts
            .seeds
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect();
        let t = Self {
            inner: Arc::new(Inner {
                opts,
                server,
                routers,
                handler,
                stats,
                next: AtomicUsize::new(0),
                peers,
                wanted: Mutex::new(wanted),
                tls,
                stopped: OnceLock::new(),
                sessions: Mutex::new(HashMap::new()),
                unanswered: Mutex::new(HashMap::new()),
            }),
        };
        t.inner
            .server
            .cast(NodeServerMessage::SubscribeToEvents {
                id: "perdure".into(),
                subscription: Box::new(Events {
                    transport: Arc::downgrade(&t.inner),
                    authenticated: Mutex::new(HashSet::new()),
                }),
            })
            .map_err(|e| TransportError::Spawn(e.to_string()))?;
        tracing::info!(
            node = %t.inner.opts.node_name,
            listen = %t.inner.opts.listen,
            advertise = %t.inner.opts.advertise_addr(),
            tls = t.inner.tls.is_some(),
            "cluster transport listening"
        );
        t.redial().await;
        let weak = Arc::downgrade(&t.inner);
        let every = t.inner.opts.redial_every;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            // A round may outlast the period (a ping waits up to PING_TIMEOUT): no burst after.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.stopped.get().is_some() {
                    return;
                }
                let t = Transport { inner };
                tokio::join!(t.probe(), t.redial());
            }
        });
        Ok(t)
    }

    /// Sets what answers peers' requests (once; later calls are ignored).
    pub fn set_handler(&self, handler: Arc<dyn PeerHandler>) {
        let _ = self.inner.handler.set(handler);
    }

    /// Dials `addr` (`host:port`) now and keeps it connected. Called by the membership side
    /// with the cluster addresses of the nodes it reads from the store.
    pub async fn connect(&self, addr: &str) {
        if addr == self.inner.opts.advertise_addr() {
            return;
        }
        self.inner
            .wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr.to_string());
        if !self.connected_addrs().contains(addr) {
            self.dial(addr).await;
        }
    }

    /// Stops dialling `addr` (a node that left for good).
    pub fn forget(&self, addr: &str) {
        self.inner
            .wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(addr);
    }

    /// The peers with a ready session: name -> advertised address.
    pub fn peers(&self) -> BTreeMap<String, String> {
        self.inner.peers.borrow().clone()
    }

    /// Changes of [`Transport::peers`].
    pub fn watch_peers(&self) -> watch::Receiver<BTreeMap<String, String>> {
        self.inner.peers.subscribe()
    }

    /// Waits until `node`'s routers are reachable, up to `timeout`; whether they are.
    pub async fn wait_for_node(&self, node: &str, timeout: Duration) -> bool {
        let mut rx = self.watch_peers();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.router_of(node).is_some() {
                return true;
            }
            // pg membership arrives with the session's state exchange; a short tick covers a
            // group join that lands just after the ready event.
            let tick = tokio::time::sleep(Duration::from_millis(20));
            tokio::select! {
                _ = rx.changed() => {}
                _ = tick => {}
                _ = tokio::time::sleep_until(deadline) => return self.router_of(node).is_some(),
            }
        }
    }

    /// The transport's counters.
    pub fn stats(&self) -> &TransportStats {
        &self.inner.stats
    }

    /// Waits until `counter` (one of [`Transport::stats`]) reaches `at_least`, up to
    /// `timeout`; whether it did.
    pub async fn wait_for_stat(
        &self,
        counter: impl Fn(&TransportStats) -> u64,
        at_least: u64,
        timeout: Duration,
    ) -> bool {
        let stats = &self.inner.stats;
        tokio::time::timeout(timeout, async {
            loop {
                let changed = stats.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if counter(stats) >= at_least {
                    return;
                }
                changed.await;
            }
        })
        .await
        .is_ok()
    }

    /// The transport's counters in Prometheus text format.
    pub fn render_prometheus(&self) -> String {
        let s = &self.inner.stats;
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "# HELP perdure_cluster_peer_requests_total Requests served for peers (forwarded operations, pings).\n\
             # TYPE perdure_cluster_peer_requests_total counter\n\
             perdure_cluster_peer_requests_total {}\n\
             # HELP perdure_cluster_forwarded_total Attempts to send an operation to the owner of its partition.\n\
             # TYPE perdure_cluster_forwarded_total counter\n\
             perdure_cluster_forwarded_total {}\n\
             # HELP perdure_cluster_undecodable_total Peer messages that did not decode.\n\
             # TYPE perdure_cluster_undecodable_total counter\n\
             perdure_cluster_undecodable_total{{kind=\"call\"}} {}\n\
             perdure_cluster_undecodable_total{{kind=\"cast\"}} {}\n\
             # HELP perdure_cluster_refused_sessions_total Peer sessions closed before authenticating.\n\
             # TYPE perdure_cluster_refused_sessions_total counter\n\
             perdure_cluster_refused_sessions_total {}\n\
             # HELP perdure_cluster_dead_sessions_total Peer sessions closed because the peer stopped answering pings.\n\
             # TYPE perdure_cluster_dead_sessions_total counter\n\
             perdure_cluster_dead_sessions_total {}\n\
             # HELP perdure_cluster_linked_peers Peers with a ready transport session.\n\
             # TYPE perdure_cluster_linked_peers gauge\n\
             perdure_cluster_linked_peers {}\n",
            get(&s.calls_served),
            get(&s.forwarded),
            get(&s.undecodable_calls),
            get(&s.undecodable_casts),
            get(&s.refused_sessions),
            get(&s.dead_sessions),
            self.inner.peers.borrow().len(),
        )
    }

    /// The options it runs with.
    pub fn options(&self) -> &TransportOptions {
        &self.inner.opts
    }

    /// Sends raw bytes as a request (tests of malformed input use this).
    pub async fn call_raw(
        &self,
        node: &str,
        bytes: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, LinkError> {
        let router = self
            .router_of(node)
            .ok_or_else(|| LinkError::NoRoute(node.to_string()))?;
        match router
            .call(|port| RouterMsg::Call(bytes, port), Some(timeout))
            .await
        {
            Ok(CallResult::Success(b)) => Ok(b),
            Ok(CallResult::Timeout) => Err(LinkError::Timeout(node.to_string(), timeout)),
            Ok(CallResult::SenderError) | Err(_) => Err(LinkError::Closed(node.to_string())),
        }
    }

    /// Sends raw bytes as a cast (tests of malformed input use this).
    pub fn cast_raw(&self, node: &str, bytes: Vec<u8>) -> Result<(), LinkError> {
        let router = self
            .router_of(node)
            .ok_or_else(|| LinkError::NoRoute(node.to_string()))?;
        router
            .cast(RouterMsg::Cast(bytes))
            .map_err(|_| LinkError::Closed(node.to_string()))
    }

    /// Stops the routers and the node server.
    pub fn stop(&self) {
        let _ = self.inner.stopped.set(());
        for r in &self.inner.routers {
            r.stop(None);
        }
        self.inner.server.stop(None);
    }

    fn router_of(&self, node: &str) -> Option<ActorRef<RouterMsg>> {
        let members: Vec<ActorCell> = ractor::pg::get_members(&router_group(node));
        if members.is_empty() {
            return None;
        }
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % members.len();
        members.into_iter().nth(i).map(ActorRef::from)
    }

    fn connected_addrs(&self) -> BTreeSet<String> {
        self.inner.peers.borrow().values().cloned().collect()
    }

    /// Pings every ready peer (answer within [`PING_TIMEOUT`]); closes the sessions of a peer
    /// that left [`UNANSWERED_PINGS`] pings in a row unanswered, so that the link is dialled
    /// again (or the peer's own new connection is accepted).
    async fn probe(&self) {
        // The sessions each peer has now: misses count against these, and only these are
        // closed (a session that replaced them meanwhile starts with a clean slate).
        let mut snapshot: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for (id, (peer, _)) in self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            snapshot.entry(peer.clone()).or_default().insert(*id);
        }
        let answers = futures::future::join_all(snapshot.keys().map(|p| async move {
            let r = Links::call(self, p, &PeerRequest::Ping, PING_TIMEOUT).await;
            (p.clone(), !matches!(r, Err(LinkError::Timeout(..))))
        }))
        .await;
        let mut dead: Vec<(String, BTreeSet<u64>)> = Vec::new();
        {
            let mut unanswered = self
                .inner
                .unanswered
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            unanswered.retain(|p, _| snapshot.contains_key(p));
            for (peer, answered) in answers {
                let ids = snapshot.remove(&peer).unwrap_or_default();
                if answered {
                    unanswered.remove(&peer);
                    continue;
                }
                let entry = unanswered.entry(peer.clone()).or_insert((0, ids.clone()));
                if entry.1 != ids {
                    *entry = (0, ids.clone());
                }
                entry.0 += 1;
                if entry.0 >= UNANSWERED_PINGS {
                    unanswered.remove(&peer);
                    dead.push((peer, ids));
                }
            }
        }
        for (peer, ids) in dead {
            let sessions: Vec<ActorRef<ractor_cluster::NodeSessionMessage>> = {
                let map = self
                    .inner
                    .sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                ids.iter()
                    .filter_map(|id| map.get(id).map(|(_, a)| a.clone()))
                    .collect()
            };
            if sessions.is_empty() {
                continue;
            }
            tracing::warn!(
                peer = %peer,
                pings = UNANSWERED_PINGS,
                "cluster peer does not answer: closing its session to dial it again"
            );
            self.inner
                .stats
                .dead_sessions
                .fetch_add(sessions.len() as u64, Ordering::Relaxed);
            self.inner.stats.changed.notify_waiters();
            for s in sessions {
                s.stop(Some("the peer does not answer pings".into()));
            }
        }
    }

    async fn redial(&self) {
        let connected = self.connected_addrs();
        let own = self.inner.opts.advertise_addr();
        let wanted: Vec<String> = self
            .inner
            .wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|a| !connected.contains(*a) && **a != own)
            .cloned()
            .collect();
        // Concurrently, each bounded: a connect to an address that drops packets would
        // otherwise hold every other dial (and the next probe) for minutes.
        futures::future::join_all(wanted.iter().map(|addr| async move {
            if tokio::time::timeout(DIAL_TIMEOUT, self.dial(addr))
                .await
                .is_err()
            {
                tracing::debug!(addr, "cluster dial timed out (will retry)");
            }
        }))
        .await;
    }

    async fn dial(&self, addr: &str) {
        let res = match &self.inner.tls {
            Some(t) => {
                ractor_cluster::client_connect_enc(
                    &self.inner.server,
                    addr,
                    t.connector.clone(),
                    t.server_name.clone(),
                )
                .await
            }
            None => ractor_cluster::client_connect(&self.inner.server, addr).await,
        };
        if let Err(e) = res {
            tracing::debug!(addr, error = %e, "cluster peer not reachable (will retry)");
        }
    }
}

impl Links for Transport {
    fn local_node(&self) -> &str {
        &self.inner.opts.node_name
    }

    fn call<'a>(
        &'a self,
        node: &'a str,
        request: &'a PeerRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<PeerReply, LinkError>> {
        Box::pin(async move {
            let bytes = wire::encode(request).map_err(LinkError::Encode)?;
            if matches!(request, PeerRequest::Forward(_)) {
                self.inner.stats.forwarded.fetch_add(1, Ordering::Relaxed);
            }
            let answer = self.call_raw(node, bytes, timeout).await?;
            wire::decode(&answer).map_err(|e| LinkError::Decode(node.to_string(), e))
        })
    }

    fn cast(&self, node: &str, message: &PeerCast) -> Result<(), LinkError> {
        let bytes = wire::encode(message).map_err(LinkError::Encode)?;
        self.cast_raw(node, bytes)
    }
}

/// Node-session events: keeps the ready-peer table and logs refused sessions.
struct Events {
    transport: std::sync::Weak<Inner>,
    authenticated: Mutex<HashSet<u64>>,
}

fn peer_of(ses: &ractor_cluster::node::NodeServerSessionInformation) -> Option<(String, String)> {
    let p = ses.peer_name.as_ref()?;
    let name = p.name.rsplit_once('@').map_or(p.name.as_str(), |(n, _)| n);
    Some((name.to_string(), p.connection_string.clone()))
}

impl NodeEventSubscription for Events {
    fn node_session_opened(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        tracing::debug!(peer_addr = %ses.peer_addr, incoming = ses.is_server, "cluster session opened");
    }

    fn node_session_authenticated(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        self.authenticated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ses.node_id);
    }

    fn node_session_ready(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        let Some(inner) = self.transport.upgrade() else {
            return;
        };
        if let Some((name, addr)) = peer_of(&ses) {
            inner
                .sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(ses.node_id, (name.clone(), ses.actor.clone()));
            tracing::info!(peer = %name, addr = %addr, "cluster peer connected");
            inner.peers.send_modify(|m| {
                m.insert(name, addr);
            });
        }
    }

    fn node_session_disconnected(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        let Some(inner) = self.transport.upgrade() else {
            return;
        };
        // What other sessions the peer still has (an unauthenticated session was never in
        // the table).
        let others = {
            let mut sessions = inner.sessions.lock().unwrap_or_else(|e| e.into_inner());
            sessions.remove(&ses.node_id);
            peer_of(&ses).map(|(name, _)| (sessions.values().any(|(n, _)| *n == name), name))
        };
        let was_authenticated = self
            .authenticated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ses.node_id);
        if !was_authenticated {
            // ractor_cluster closes one of two sessions when two nodes dial each other at
            // once: not a refusal when the peer is connected through the other session.
            let by_name = others.as_ref().is_some_and(|(connected, _)| *connected);
            let duplicate = by_name || inner.peers.borrow().values().any(|a| *a == ses.peer_addr);
            if duplicate {
                tracing::debug!(peer_addr = %ses.peer_addr, "duplicate cluster session closed");
                return;
            }
            inner.stats.refused_sessions.fetch_add(1, Ordering::Relaxed);
            inner.stats.changed.notify_waiters();
            tracing::warn!(
                peer_addr = %ses.peer_addr,
                peer = ?ses.peer_name.as_ref().map(|p| p.name.clone()),
                "cluster session refused: the peer did not authenticate (wrong cluster.cookie, \
                 or not a Perdure node)"
            );
            return;
        }
        if let Some((false, name)) = others {
            tracing::warn!(peer = %name, "cluster peer disconnected");
            inner.peers.send_modify(|m| {
                m.remove(&name);
            });
        }
    }
}

#[cfg(test)]
mod tests;
