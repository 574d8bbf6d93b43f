//! Transport tests that need no sockets: the wire codec of every message, the router's answer
//! to bytes that do not decode, and forwarding through in-process links.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use perdure_core::management::{
    EntityState, IdReusePolicy, InstanceState, ManagementApi, ManagementError, PurgeResult,
    StartRequest,
};
use perdure_core::{EntityId, ExecutionId, InstanceId, OrchestrationStatus, Payload, Timestamp};
use ractor::Actor;
use ractor::rpc::CallResult;

use super::forward::{ClusterApi, ForwardOptions, PartitionOwners, ServePeers, StaticOwners};
use super::router::{PeerHandler, RouterActor, RouterArgs, RouterMsg, TransportStats};
use super::wire::{self, ForwardReply, ForwardRequest, PeerCast, PeerReply, PeerRequest};
use super::{LinkError, Links};

fn iid(s: &str) -> InstanceId {
    InstanceId::new(s).unwrap()
}

fn payload() -> Option<Payload> {
    Some(Payload::json(&serde_json::json!({"a": [1, 2, "x"]})).unwrap())
}

fn every_request() -> Vec<ForwardRequest> {
    let e = EntityId::new("Account", "k1").unwrap();
    let mut start = StartRequest::new("HelloSequence");
    start.instance_id = Some(iid("s1"));
    start.input = payload();
    start.reuse_policy = IdReusePolicy::RejectExisting;
    start.scheduled_start = Some(Timestamp(5));
    use ForwardRequest as R;
    vec![
        R::Start { req: start },
        R::GetInstance {
            id: iid("a"),
            with_payloads: true,
        },
        R::GetHistory { id: iid("a") },
        R::WaitForCompletion {
            id: iid("a"),
            timeout_ms: 1500,
        },
        R::RaiseEvent {
            id: iid("a"),
            name: "Approval".into(),
            data: payload(),
        },
        R::Terminate {
            id: iid("a"),
            reason: Some("why".into()),
            recursive: true,
        },
        R::Suspend {
            id: iid("a"),
            reason: None,
        },
        R::Resume {
            id: iid("a"),
            reason: Some("r".into()),
        },
        R::Rewind {
            id: iid("a"),
            reason: None,
        },
        R::Restart {
            id: iid("a"),
            new_instance_id: true,
        },
        R::PurgeInstance { id: iid("a") },
        R::SignalEntity {
            entity: e.clone(),
            operation: "deposit".into(),
            input: payload(),
            scheduled_time: Some(Timestamp(9)),
        },
        R::GetEntity { entity: e },
    ]
}

fn every_reply() -> Vec<PeerReply> {
    let state = InstanceState {
        instance_id: iid("a"),
        name: "HelloSequence".into(),
        version: Some("1".into()),
        execution_id: ExecutionId("e1".into()),
        runtime_status: OrchestrationStatus::Completed,
        input: payload(),
        output: payload(),
        custom_status: None,
        failure: None,
        created_at: Timestamp(1),
        last_updated_at: Timestamp(2),
        parent_instance_id: None,
    };
    let entity = EntityState {
        id: EntityId::new("Account", "k").unwrap(),
        state: payload(),
        last_modified: Timestamp(3),
        locked_by: Some("lock".into()),
        backlog: 4,
    };
    let f = |r| PeerReply::Forwarded(Box::new(r));
    vec![
        f(ForwardReply::Unit(Ok(()))),
        f(ForwardReply::Unit(Err(ManagementError::NotFound(
            "a".into(),
        )))),
        f(ForwardReply::InstanceId(Ok(iid("b")))),
        f(ForwardReply::InstanceId(Err(
            ManagementError::AlreadyExists {
                instance_id: iid("b"),
                status: OrchestrationStatus::Running,
            },
        ))),
        f(ForwardReply::Instance(Ok(Some(state)))),
        f(ForwardReply::Instance(Ok(None))),
        f(ForwardReply::History(Ok(Some(Vec::new())))),
        f(ForwardReply::Purge(Ok(PurgeResult {
            deleted: 1,
            complete: true,
        }))),
        f(ForwardReply::Entity(Ok(Some(entity)))),
        f(ForwardReply::Entity(Err(ManagementError::Unavailable(
            "x".into(),
        )))),
        PeerReply::NotMine { partition: 7 },
        PeerReply::NotReady,
        PeerReply::Pong,
        PeerReply::Undecodable("bad".into()),
        PeerReply::WorkItemDone {
            kind: 1,
            completion: vec![8, 3],
        },
        PeerReply::NoWorker("none".into()),
        PeerReply::WorkItemFailed("too large".into()),
        PeerReply::WorkItemUnfinished("timed out".into()),
    ]
}

/// Every prefix of `bytes` (and a flipped version byte) fails to decode as `T`, without a
/// panic.
fn assert_bad_bytes_rejected<T: serde::de::DeserializeOwned + std::fmt::Debug>(bytes: &[u8]) {
    for cut in 0..bytes.len() {
        assert!(
            wire::decode::<T>(&bytes[..cut]).is_err(),
            "prefix {cut} of {bytes:?}"
        );
    }
    let mut v = bytes.to_vec();
    v[0] = 0xEE;
    assert!(wire::decode::<T>(&v).is_err());
    let mut trailing = bytes.to_vec();
    trailing.push(0);
    assert!(wire::decode::<T>(&trailing).is_err());
}

#[test]
fn every_request_round_trips_and_rejects_bad_bytes() {
    let mut all: Vec<PeerRequest> = every_request()
        .into_iter()
        .map(PeerRequest::Forward)
        .collect();
    all.push(PeerRequest::Ping);
    all.push(PeerRequest::WorkItem(wire::WorkItemRequest {
        origin: "n1".into(),
        incarnation: 9,
        id: 7,
        kind: 2,
        name: "Counter".into(),
        item: vec![1, 2, 3],
        wait_ms: 60_000,
    }));
    for r in all {
        let bytes = wire::encode(&r).unwrap();
        assert_eq!(wire::decode::<PeerRequest>(&bytes).unwrap(), r);
        assert_bad_bytes_rejected::<PeerRequest>(&bytes);
    }
    let workers = PeerCast::Workers(wire::WorkersSummary {
        node: "n2".into(),
        workers: 2,
        any: false,
        orchestrations: vec!["o".into()],
        activities: vec!["a".into(), "b".into()],
        entities: vec![],
    });
    let withdraw = PeerCast::WithdrawWorkItem {
        origin: "n1".into(),
        incarnation: 9,
        id: 7,
    };
    for cast in [PeerCast::Nudge { partition: 3 }, workers, withdraw] {
        let bytes = wire::encode(&cast).unwrap();
        assert_eq!(wire::decode::<PeerCast>(&bytes).unwrap(), cast);
        assert_bad_bytes_rejected::<PeerCast>(&bytes);
    }
}

#[test]
fn every_reply_round_trips_and_rejects_bad_bytes() {
    for r in every_reply() {
        let bytes = wire::encode(&r).unwrap();
        assert_eq!(wire::decode::<PeerReply>(&bytes).unwrap(), r);
        assert_bad_bytes_rejected::<PeerReply>(&bytes);
    }
}

#[test]
fn garbage_never_panics() {
    // A deterministic spread of byte strings (no randomness in tests that must reproduce).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for len in 0..200usize {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x & 0xFF) as u8
            })
            .collect();
        let _ = wire::decode::<PeerRequest>(&bytes);
        let _ = wire::decode::<PeerReply>(&bytes);
        let _ = wire::decode::<PeerCast>(&bytes);
    }
}

struct Echo {
    casts: Arc<AtomicUsize>,
}

impl PeerHandler for Echo {
    fn handle(&self, _request: PeerRequest) -> BoxFuture<'static, PeerReply> {
        Box::pin(async { PeerReply::Pong })
    }
    fn cast(&self, _message: PeerCast) {
        self.casts.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn router_answers_undecodable_calls_and_keeps_serving() {
    let casts = Arc::new(AtomicUsize::new(0));
    let slot: super::router::HandlerSlot = Arc::new(std::sync::OnceLock::new());
    let stats = Arc::new(TransportStats::default());
    let (router, handle) = Actor::spawn(
        None,
        RouterActor,
        RouterArgs {
            handler: slot.clone(),
            stats: stats.clone(),
        },
    )
    .await
    .unwrap();
    let call = |bytes: Vec<u8>| {
        let router = router.clone();
        async move {
            match router
                .call(|p| RouterMsg::Call(bytes, p), Some(Duration::from_secs(5)))
                .await
                .unwrap()
            {
                CallResult::Success(b) => wire::decode::<PeerReply>(&b).unwrap(),
                other => panic!("no answer: {other:?}"),
            }
        }
    };
    let ping = wire::encode(&PeerRequest::Ping).unwrap();
    // Before the node is up: NotReady, not a hang.
    assert_eq!(call(ping.clone()).await, PeerReply::NotReady);
    let _ = slot.set(Arc::new(Echo {
        casts: casts.clone(),
    }));
    assert!(matches!(
        call(vec![1, 0xFF, 0xFF, 0xFF]).await,
        PeerReply::Undecodable(_)
    ));
    assert!(matches!(call(Vec::new()).await, PeerReply::Undecodable(_)));
    assert_eq!(stats.undecodable_calls.load(Ordering::SeqCst), 2);
    // A bad cast is counted and dropped; a good one reaches the handler.
    router.cast(RouterMsg::Cast(vec![9, 9])).unwrap();
    router
        .cast(RouterMsg::Cast(
            wire::encode(&PeerCast::Nudge { partition: 1 }).unwrap(),
        ))
        .unwrap();
    // Still serving after all that (also orders after the casts above).
    assert_eq!(call(ping).await, PeerReply::Pong);
    assert_eq!(stats.undecodable_casts.load(Ordering::SeqCst), 1);
    assert_eq!(casts.load(Ordering::SeqCst), 1);
    router.stop(None);
    handle.await.unwrap();
}

/// Links inside one process: every message still goes through the codec both ways.
#[derive(Default)]
struct FakeLinks {
    me: String,
    peers: std::sync::Mutex<BTreeMap<String, Arc<dyn PeerHandler>>>,
    calls: AtomicUsize,
    /// Runs the next request, then reports the link closed (the answer was lost).
    lose_next_answer: AtomicBool,
    casts: std::sync::Mutex<Vec<(String, PeerCast)>>,
}

impl Links for FakeLinks {
    fn local_node(&self) -> &str {
        &self.me
    }

    fn call<'a>(
        &'a self,
        node: &'a str,
        request: &'a PeerRequest,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<PeerReply, LinkError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let h = self
                .peers
                .lock()
                .unwrap()
                .get(node)
                .cloned()
                .ok_or_else(|| LinkError::NoRoute(node.to_string()))?;
            let req: PeerRequest = wire::decode(&wire::encode(request).unwrap()).unwrap();
            let reply = h.handle(req).await;
            if self.lose_next_answer.swap(false, Ordering::SeqCst) {
                return Err(LinkError::Closed(node.to_string()));
            }
            Ok(wire::decode(&wire::encode(&reply).unwrap()).unwrap())
        })
    }

    fn cast(&self, node: &str, message: &PeerCast) -> Result<(), LinkError> {
        self.casts
            .lock()
            .unwrap()
            .push((node.to_string(), message.clone()));
        Ok(())
    }
}

const P: u32 = 4;

async fn node() -> crate::node::NodeHandle {
    crate::node::Node::builder()
        .registry(Arc::new(crate::sample::sample_registry()))
        .store(Arc::new(crate::store::memory::MemoryStore::new()))
        .options(crate::options::NodeOptions {
            partitions: std::num::NonZeroU32::new(P).unwrap(),
            ..Default::default()
        })
        .start()
        .await
        .unwrap()
}

/// Node "a" (ingress) and node "b" (owner of every partition): each with its own store, so
/// where an instance lands shows where a request ran.
async fn two_nodes(
    owner_of: impl Fn(u32) -> String + Clone,
) -> (
    ClusterApi,
    crate::node::NodeHandle,
    crate::node::NodeHandle,
    Arc<FakeLinks>,
    Arc<StaticOwners>,
) {
    let (a, b) = (node().await, node().await);
    let owners_a = Arc::new(StaticOwners::new("a", P, owner_of.clone()));
    let owners_b: Arc<dyn PartitionOwners> = Arc::new(StaticOwners::new("b", P, owner_of));
    let links = Arc::new(FakeLinks {
        me: "a".into(),
        ..Default::default()
    });
    links.peers.lock().unwrap().insert(
        "b".into(),
        Arc::new(ServePeers::new(Arc::new(b.clone()), owners_b, P, None)),
    );
    let api = ClusterApi::for_node(a.clone(), links.clone(), owners_a.clone()).with_options(
        ForwardOptions {
            handoff_wait: Duration::from_secs(10),
            call_timeout: Duration::from_secs(5),
        },
    );
    (api, a, b, links, owners_a)
}

#[tokio::test]
async fn a_request_runs_on_the_owner_and_the_reply_comes_back() {
    let (api, a, b, links, _) = two_nodes(|_| "b".to_string()).await;
    let mut req = StartRequest::new("HelloSequence");
    req.instance_id = Some(iid("fwd-1"));
    let id = api.start(req).await.unwrap();
    let done = api
        .wait_for_completion(id.clone(), Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.runtime_status, OrchestrationStatus::Completed);
    let out: Vec<String> = done.output.unwrap().decode().unwrap();
    assert_eq!(out, ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]);
    // It ran on b, not on a.
    assert!(b.get_instance(id.clone(), false).await.unwrap().is_some());
    assert!(a.get_instance(id.clone(), false).await.unwrap().is_none());
    // Errors come back typed.
    assert!(matches!(
        api.raise_event(iid("nope"), "x".into(), None).await,
        Err(ManagementError::NotFound(_))
    ));
    assert!(links.calls.load(Ordering::SeqCst) >= 3);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_local_partition_does_not_touch_the_links() {
    let (api, a, b, links, _) = two_nodes(|_| "a".to_string()).await;
    let id = api.start(StartRequest::new("HelloSequence")).await.unwrap();
    assert!(
        api.wait_for_completion(id.clone(), Duration::from_secs(10))
            .await
            .unwrap()
            .is_some()
    );
    assert!(a.get_instance(id, false).await.unwrap().is_some());
    assert_eq!(links.calls.load(Ordering::SeqCst), 0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn no_owner_waits_bounded_then_503() {
    let (api, a, b, _, owners) = two_nodes(|_| "b".to_string()).await;
    for p in 0..P {
        owners.set(p, None);
    }
    let t0 = tokio::time::Instant::now();
    let err = api.get_instance(iid("x"), false).await.unwrap_err();
    let waited = t0.elapsed();
    assert!(
        matches!(&err, ManagementError::Unavailable(m) if m.contains("no owner") && m.contains("partition")),
        "{err}"
    );
    assert!(
        waited >= Duration::from_secs(9) && waited <= Duration::from_secs(11),
        "{waited:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_request_during_a_handoff_reaches_the_new_owner() {
    // b answers "not mine" (its table says a owns everything) until a's table moves the
    // partition to b... here: a's table has no owner first, then b.
    let (api, a, b, _, owners) = two_nodes(|_| "b".to_string()).await;
    let id = iid("handoff-1");
    let p = api.partition_of(id.as_str());
    owners.set(p, None);
    let o = owners.clone();
    let moved = tokio::spawn(async move {
        // Between two back-off steps (5 ms doubling to 250 ms: asks at 1.815 s and 2.065 s).
        tokio::time::sleep(Duration::from_millis(1_900)).await;
        o.set(p, Some("b".into()));
        tokio::time::Instant::now()
    });
    let mut req = StartRequest::new("HelloSequence");
    req.instance_id = Some(id.clone());
    assert_eq!(api.start(req).await.unwrap(), id);
    let answered = tokio::time::Instant::now();
    assert!(b.get_instance(id, false).await.unwrap().is_some());
    // The ownership change woke the request: it did not wait for its next back-off step.
    let waited = answered - moved.await.unwrap();
    assert!(
        waited < Duration::from_millis(100),
        "answered {waited:?} after the move"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_start_whose_answer_was_lost_takes_effect_once() {
    let (api, a, b, links, _) = two_nodes(|_| "b".to_string()).await;
    links.lose_next_answer.store(true, Ordering::SeqCst);
    // No id given: the ingress chooses it, the retry finds the instance and reports success.
    let id = api.start(StartRequest::new("HelloSequence")).await.unwrap();
    assert_eq!(links.calls.load(Ordering::SeqCst), 2);
    let page = b
        .query_instances(perdure_core::management::InstanceQuery::default())
        .await
        .unwrap();
    assert_eq!(page.instances.len(), 1, "started exactly once");
    assert_eq!(page.instances[0].instance_id, id);
    // An event whose answer was lost is not sent again: the caller hears it may have landed.
    links.lose_next_answer.store(true, Ordering::SeqCst);
    let before = links.calls.load(Ordering::SeqCst);
    let err = api.raise_event(id, "x".into(), None).await.unwrap_err();
    assert!(
        matches!(&err, ManagementError::Internal(m) if m.contains("may or may not")),
        "{err}"
    );
    assert_eq!(links.calls.load(Ordering::SeqCst), before + 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn the_owner_refuses_a_partition_it_does_not_hold() {
    let b = node().await;
    let owners: Arc<dyn PartitionOwners> = Arc::new(StaticOwners::new("b", P, |_| "c".to_string()));
    let serve = ServePeers::new(Arc::new(b.clone()), owners, P, None);
    let reply = serve
        .handle(PeerRequest::Forward(ForwardRequest::GetInstance {
            id: iid("z"),
            with_payloads: false,
        }))
        .await;
    assert!(matches!(reply, PeerReply::NotMine { .. }));
    assert_eq!(serve.handle(PeerRequest::Ping).await, PeerReply::Pong);
    b.shutdown().await;
}

#[tokio::test]
async fn nudges_go_to_the_owner_or_stay_local() {
    struct Count(AtomicUsize);
    impl super::forward::NudgeTarget for Count {
        fn nudge(&self, _partition: u32) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let (api, a, b, links, _) = two_nodes(|p| if p == 0 { "a".into() } else { "b".into() }).await;
    let local = Arc::new(Count(AtomicUsize::new(0)));
    let api = api.with_nudges(local.clone());
    api.nudge(0);
    api.nudge(1);
    assert_eq!(local.0.load(Ordering::SeqCst), 1);
    assert_eq!(
        links.casts.lock().unwrap().as_slice(),
        [("b".to_string(), PeerCast::Nudge { partition: 1 })]
    );
    a.shutdown().await;
    b.shutdown().await;
}
