//! Routing to owners: with several node URLs of one cluster, the client reads the partition
//! table (`GET /cluster/partitions` on each URL: the node's own name and the owner of every
//! partition) and sends each request about one instance or entity to the node that owns its
//! partition, so that the node does not forward it (a forwarded request costs both nodes a
//! round trip over the cluster transport).
//!
//! Routing only picks which node is tried first: a stale table costs a forwarded request,
//! never a wrong answer; failover keeps its rules (what is retried where). A node the client
//! could not reach (no connection, or a dropped one) is skipped by routing for [`REFRESH`]. Routed
//! requests that come before the first read wait for it (at most 2 s); later reads run in
//! the background when a request finds the table older than [`REFRESH`]. Nodes that are no
//! cluster nodes (404) or refuse the route (401, 403) turn routing off until [`RETRY_OFF`]
//! has passed. A read that no node answers keeps the table read before; an empty table
//! (nodes that just started) is read again after [`REFRESH`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How old a table may get before it is read again.
pub(crate) const REFRESH: Duration = Duration::from_secs(5);
/// How long routing stays off after the nodes said they are no cluster.
pub(crate) const RETRY_OFF: Duration = Duration::from_secs(60);
/// The longest wait for the first table.
const FIRST_READ: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
struct TableWire {
    node: String,
    #[serde(default)]
    partitions: Vec<RowWire>,
}

#[derive(Deserialize)]
struct RowWire {
    partition: u32,
    #[serde(default)]
    owner: Option<String>,
}

/// What the client last read.
#[derive(Debug)]
enum Known {
    /// The index (into the client's nodes) of each partition's owner, if the client has
    /// that node's URL.
    Table(Vec<Option<usize>>),
    /// The nodes are no cluster (or refuse the route): no routing.
    Off,
    /// No node answered: no routing until the next read.
    Unknown,
}

#[derive(Debug)]
struct State {
    known: Option<(Instant, Known)>,
}

/// The owner table of a client's nodes. Cheap to share.
#[derive(Debug, Clone)]
pub(crate) struct Owners {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// The origins (`scheme://host:port`) of the client's nodes, by index.
    origins: Vec<String>,
    timeout: Duration,
    state: RwLock<State>,
    reading: AtomicBool,
    /// Woken when a read ends.
    read: tokio::sync::Notify,
    /// When each node last failed a request in transport.
    down: Mutex<Vec<Option<Instant>>>,
}

impl Owners {
    /// Owners of `origins` (read with `http`, each read bounded by `timeout`).
    pub(crate) fn new(http: reqwest::Client, origins: Vec<String>, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                http,
                timeout,
                state: RwLock::new(State { known: None }),
                reading: AtomicBool::new(false),
                read: tokio::sync::Notify::new(),
                down: Mutex::new(vec![None; origins.len()]),
                origins,
            }),
        }
    }

    /// The index of the node that owns `routing_key`'s partition, as last read; reads the
    /// table first when none was read yet, and starts a background read when it is stale.
    pub(crate) async fn owner_of(&self, routing_key: &str) -> Option<usize> {
        if self.inner.origins.len() < 2 {
            return None;
        }
        let (fresh, answer) = self.lookup(routing_key);
        let answer = answer.filter(|i| !self.is_down(*i));
        match fresh {
            Some(true) => answer,
            Some(false) => {
                let _ = self.read_in_background();
                answer
            }
            None => {
                // Nothing read yet: wait for the first read (bounded; the read itself runs
                // on its own task, so it ends and clears `reading` even when this wait
                // gives up).
                let ended = self.inner.read.notified();
                tokio::pin!(ended);
                ended.as_mut().enable();
                if !self.read_in_background() {
                    return None;
                }
                if tokio::time::timeout(FIRST_READ, ended).await.is_err() {
                    return None;
                }
                self.lookup(routing_key).1.filter(|i| !self.is_down(*i))
            }
        }
    }

    /// (Some(fresh) when something was read, the owner's index).
    fn lookup(&self, routing_key: &str) -> (Option<bool>, Option<usize>) {
        let state = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
        let Some((at, known)) = &state.known else {
            return (None, None);
        };
        let max_age = match known {
            Known::Table(_) | Known::Unknown => REFRESH,
            Known::Off => RETRY_OFF,
        };
        let fresh = at.elapsed() < max_age;
        let owner = match known {
            Known::Off | Known::Unknown => None,
            Known::Table(t) => {
                let n = u32::try_from(t.len()).ok().filter(|n| *n > 0);
                n.and_then(|n| {
                    let p = perdure_core::ids::partition_of(routing_key, n);
                    t.get(usize::try_from(p).ok()?).copied().flatten()
                })
            }
        };
        (Some(fresh), owner)
    }

    /// Starts a read on a task of its own unless one is under way; whether one is.
    fn read_in_background(&self) -> bool {
        if self.inner.reading.swap(true, Ordering::AcqRel) {
            return true;
        }
        // Without a runtime (a caller outside tokio) the table simply stays as it is.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.inner.reading.store(false, Ordering::Release);
            return false;
        };
        let guard = ReadEnds(self.clone());
        rt.spawn(async move {
            guard.0.read_table().await;
            drop(guard);
        });
        true
    }

    /// After a request to `node` failed in transport (no connection, or the connection
    /// dropped): routing skips it for [`REFRESH`], so a dead or failing owner costs one
    /// failed request, not one per request until its lease moves.
    pub(crate) fn unreachable(&self, node: usize) {
        let mut down = self.inner.down.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = down.get_mut(node) {
            *slot = Some(Instant::now());
        }
    }

    /// Whether `node` failed within the last [`REFRESH`].
    fn is_down(&self, node: usize) -> bool {
        let down = self.inner.down.lock().unwrap_or_else(|e| e.into_inner());
        down.get(node)
            .copied()
            .flatten()
            .is_some_and(|at| at.elapsed() < REFRESH)
    }

    /// Reads every node's `/cluster/partitions` (`reading` is set by the caller and cleared
    /// by its [`ReadEnds`]). A read that no node answered keeps the table known before (a
    /// node may be restarting).
    async fn read_table(&self) {
        let known = self.fetch().await;
        tracing::debug!(?known, "cluster owner table read");
        {
            let mut state = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            match (known, &mut state.known) {
                (Some(k), slot) => *slot = Some((now, k)),
                (None, Some((at, _))) => *at = now,
                (None, slot @ None) => *slot = Some((now, Known::Unknown)),
            }
        }
    }

    /// None: no node answered at all (keep what was known).
    async fn fetch(&self) -> Option<Known> {
        let reads = self.inner.origins.iter().map(|origin| async move {
            let resp = self
                .inner
                .http
                .get(format!("{origin}/cluster/partitions"))
                .timeout(self.inner.timeout)
                .send()
                .await
                .ok()?;
            let status = resp.status().as_u16();
            if matches!(status, 401 | 403 | 404) {
                return Some(Err(()));
            }
            if !resp.status().is_success() {
                return None;
            }
            resp.json::<TableWire>().await.ok().map(Ok)
        });
        let answers = futures::future::join_all(reads).await;
        let mut index_of: BTreeMap<String, usize> = BTreeMap::new();
        let mut rows: Option<Vec<RowWire>> = None;
        let mut refused = 0;
        let mut answered = 0;
        for (i, a) in answers.into_iter().enumerate() {
            match a {
                None => {}
                Some(Err(())) => refused += 1,
                Some(Ok(t)) => {
                    answered += 1;
                    index_of.entry(t.node).or_insert(i);
                    if rows.as_ref().is_none_or(Vec::is_empty) {
                        rows = Some(t.partitions);
                    }
                }
            }
        }
        if answered == 0 {
            return (refused > 0).then_some(Known::Off);
        }
        let rows = rows.unwrap_or_default();
        // Placed by each row's partition number; a row out of range leaves its slot unknown.
        let mut table: Vec<Option<usize>> = vec![None; rows.len()];
        for r in rows {
            if let (Some(slot), Some(owner)) = (
                usize::try_from(r.partition)
                    .ok()
                    .and_then(|p| table.get_mut(p)),
                r.owner.and_then(|o| index_of.get(&o).copied()),
            ) {
                *slot = Some(owner);
            }
        }
        // An empty table: the nodes have not read the leases yet (just started).
        Some(if table.is_empty() {
            Known::Unknown
        } else {
            Known::Table(table)
        })
    }
}

/// Ends a read however its task ends (finished, or dropped with its runtime): clears
/// `reading` and wakes the waiters, so that a later request can start the next read.
struct ReadEnds(Owners);

impl Drop for ReadEnds {
    fn drop(&mut self) {
        self.0.inner.reading.store(false, Ordering::Release);
        self.0.inner.read.notify_waiters();
    }
}
