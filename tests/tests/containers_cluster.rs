//! Perdure in containers, started with `testcontainers` from images built here from local
//! artifacts: the store (`perdure-postgres`) and node containers on a private network.
//!
//! Needs a Docker engine: in CI its absence fails the test; elsewhere the test says on stderr
//! that it was skipped.

use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use perdure_tests::BASE;
use perdure_tests::containers::{
    Images, Network, NodeContainer, docker, docker_available, start_node, start_store,
};
use serde_json::{Value, json};

/// The images of this test process and how many of its tests hold them.
static IMAGES: Mutex<Option<(Images, usize)>> = Mutex::new(None);
/// Held while the images are built, so two tests of one process build them once.
static BUILDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn images_slot() -> MutexGuard<'static, Option<(Images, usize)>> {
    IMAGES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The images, held by one test; the last holder removes them when it drops (a panicking
/// test included).
struct SharedImages(Images);

impl Drop for SharedImages {
    fn drop(&mut self) {
        let mut slot = images_slot();
        if let Some((images, users)) = slot.as_mut() {
            *users -= 1;
            if *users == 0 {
                images.remove();
                *slot = None;
            }
        }
    }
}

/// The images of this test process, built by the first test that asks while no other holds
/// them. nextest runs every test in a process of its own, so there each test builds once;
/// `cargo test` runs them on threads of one process and they share one build.
async fn shared_images() -> SharedImages {
    let _building = BUILDING.lock().await;
    if let Some((images, users)) = images_slot().as_mut() {
        *users += 1;
        return SharedImages(images.clone());
    }
    let images = phase("build the images", Duration::from_secs(300), &[], async {
        tokio::task::spawn_blocking(Images::build)
            .await
            .unwrap()
            .unwrap()
    })
    .await;
    *images_slot() = Some((images.clone(), 1));
    SharedImages(images)
}

/// A client that never waits on a dead connection: every request is bounded and no idle
/// connection is reused (a killed container's host port may come back on a new container).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// Runs one phase of a container test under a deadline, saying on stderr when it starts and
/// how long it took; past the deadline it prints the containers' logs and fails (a hang in
/// CI must say where it was).
async fn phase<T>(
    name: &str,
    limit: Duration,
    containers: &[String],
    fut: impl Future<Output = T>,
) -> T {
    eprintln!("[containers] {name} ...");
    let t = Instant::now();
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => {
            eprintln!(
                "[containers] {name}: done in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            v
        }
        Err(_) => {
            for c in containers {
                let out = std::process::Command::new("docker")
                    .args(["logs", "--tail", "200", c])
                    .output();
                if let Ok(out) = out {
                    eprintln!(
                        "--- docker logs {c} ---\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
            panic!("{name}: not done within {limit:?}");
        }
    }
}

fn skip_or_fail(test: &str) -> bool {
    if docker_available() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: no Docker engine answers `docker info`, and CI needs this test"
    );
    eprintln!("\n*** SKIPPED {test}: no Docker engine ***\n");
    true
}

async fn start(http: &reqwest::Client, origin: &str, name: &str, body: &Value) -> String {
    let r = http
        .post(format!("{origin}{BASE}/orchestrators/{name}"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "start {name}");
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// Waits (long poll, bounded) until the instance reaches a terminal status; returns its state.
async fn wait_done(http: &reqwest::Client, origin: &str, id: &str) -> Value {
    for _ in 0..30 {
        let r = http
            .get(format!(
                "{origin}{BASE}/instances/{id}?waitForCompletionTimeout=5s"
            ))
            .send()
            .await;
        if let Ok(r) = r
            && let Ok(v) = r.json::<Value>().await
        {
            let s = v["runtimeStatus"].as_str().unwrap_or("");
            if matches!(s, "Completed" | "Failed" | "Terminated") {
                return v;
            }
        }
    }
    panic!("instance {id} did not finish");
}

async fn wait_ready(http: &reqwest::Client, origin: &str) {
    for _ in 0..120 {
        if let Ok(r) = http.get(format!("{origin}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{origin}/readyz never answered 200");
}

/// One node on the PostgreSQL container: the README walk-through (function chaining, human
/// interaction, an entity), then the node container is killed (SIGKILL) and started again:
/// the finished instance and the entity are still there, and the waiting instance completes
/// after its event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_container_on_the_store_container_survives_sigkill() {
    if skip_or_fail("a_node_container_on_the_store_container_survives_sigkill") {
        return;
    }
    let shared = shared_images().await;
    let images = &shared.0;
    let net = Network::create().unwrap();
    let logs = vec![
        format!("{}-store", net.name),
        format!("{}-node-1", net.name),
    ];
    let (_store, url) = phase(
        "start the store container",
        Duration::from_secs(150),
        &logs,
        start_store(images, &net),
    )
    .await
    .unwrap();
    let node = phase(
        "start the node container",
        Duration::from_secs(150),
        &logs,
        start_node(images, &net, &url, 1, &[]),
    )
    .await
    .unwrap();
    let http = client();
    let o = node.origin.clone();
    phase(
        "first /readyz",
        Duration::from_secs(70),
        &logs,
        wait_ready(&http, &o),
    )
    .await;

    let (hello, done, approval) = phase(
        "walk-through before the kill",
        Duration::from_secs(120),
        &logs,
        async {
            let hello = start(&http, &o, "HelloSequence", &Value::Null).await;
            let done = wait_done(&http, &o, &hello).await;
            assert_eq!(done["runtimeStatus"], "Completed", "{done}");
            assert_eq!(
                done["output"],
                json!(["Hello Tokyo!", "Hello Seattle!", "Hello London!"])
            );
            let approval = start(&http, &o, "Approval", &json!({"timeoutSeconds": 600})).await;
            let r = http
                .post(format!("{o}{BASE}/entities/Counter/tc?op=add"))
                .json(&5)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 202);
            (hello, done, approval)
        },
    )
    .await;

    // SIGKILL, then start the same container again.
    let o = phase(
        "kill and restart the node container",
        Duration::from_secs(60),
        &logs,
        async {
            docker(&["kill", node.container.id()]).unwrap();
            node.container.start().await.unwrap();
            let port = node.container.get_host_port_ipv4(8080).await.unwrap();
            format!("http://127.0.0.1:{port}")
        },
    )
    .await;
    phase(
        "/readyz after the restart",
        Duration::from_secs(70),
        &logs,
        wait_ready(&http, &o),
    )
    .await;

    phase(
        "state after the restart",
        Duration::from_secs(150),
        &logs,
        async {
            let again: Value = http
                .get(format!("{o}{BASE}/instances/{hello}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(again["runtimeStatus"], "Completed", "{again}");
            assert_eq!(again["output"], done["output"]);
            let r = http
                .post(format!(
                    "{o}{BASE}/instances/{approval}/raiseEvent/Approval"
                ))
                .json(&true)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 202);
            let approved = wait_done(&http, &o, &approval).await;
            assert_eq!(approved["output"], "approved", "{approved}");
            // The signal sent before the kill was durable (202 = in the store); it runs after it.
            let mut count = Value::Null;
            for _ in 0..40 {
                count = match http
                    .get(format!("{o}{BASE}/entities/Counter/tc"))
                    .send()
                    .await
                {
                    Ok(r) => r.json().await.unwrap_or(Value::Null),
                    Err(_) => Value::Null,
                };
                if count == 5 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            assert_eq!(count, 5);
        },
    )
    .await;
    drop(node);
}

/// The hello output every `HelloSequence` instance must end with.
fn hello_output() -> Value {
    json!(["Hello Tokyo!", "Hello Seattle!", "Hello London!"])
}

/// Starts `HelloSequence` under the caller's `id` through `origins` in turn until a node takes
/// it. A 503 or a refused connection took no effect (docs/cluster.md, "At most once"): it is
/// sent again. A 500 or a timeout may have taken effect: the instance is looked up first and
/// the start is sent again only if it is not there (a start of a finished id would run it
/// again), and a later 409 says that the earlier attempt took effect.
async fn start_once(http: reqwest::Client, origins: Vec<String>, id: String) {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut unknown = false;
    let mut last = String::new();
    for attempt in 0.. {
        assert!(
            Instant::now() < deadline,
            "start {id}: not accepted within 40 s, last answer: {last}"
        );
        let o = &origins[attempt % origins.len()];
        if unknown
            && let Ok(r) = http.get(format!("{o}{BASE}/instances/{id}")).send().await
            && r.status().as_u16() == 200
        {
            return;
        }
        match http
            .post(format!("{o}{BASE}/orchestrators/HelloSequence/{id}"))
            .json(&Value::Null)
            .send()
            .await
        {
            Ok(r) => match r.status().as_u16() {
                202 => return,
                409 if unknown => return,
                503 => last = format!("503 from {o}: {}", r.text().await.unwrap_or_default()),
                500 => {
                    unknown = true;
                    last = format!("500 from {o}: {}", r.text().await.unwrap_or_default());
                }
                s => panic!(
                    "start {id} through {o}: {s} {}",
                    r.text().await.unwrap_or_default()
                ),
            },
            Err(e) => {
                unknown |= !e.is_connect();
                last = format!("{o}: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What became of one entity signal.
#[derive(Clone, Copy, Debug)]
enum Signalled {
    /// 202: in the store.
    Surely,
    /// A 500 or a timeout: it may or may not have taken effect (it is not sent again).
    Maybe,
}

/// Signals `Counter/key` `add amount` through `origins` in turn, sending it again only when
/// the attempt took no effect (503, refused connection).
async fn signal_once(
    http: reqwest::Client,
    origins: Vec<String>,
    key: String,
    amount: i64,
) -> (i64, Signalled) {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = String::new();
    for attempt in 0.. {
        assert!(
            Instant::now() < deadline,
            "signal {key} += {amount}: not accepted within 40 s, last answer: {last}"
        );
        let o = &origins[attempt % origins.len()];
        match http
            .post(format!("{o}{BASE}/entities/Counter/{key}?op=add"))
            .json(&amount)
            .send()
            .await
        {
            Ok(r) => match r.status().as_u16() {
                202 => return (amount, Signalled::Surely),
                500 => return (amount, Signalled::Maybe),
                503 => last = format!("503 from {o}: {}", r.text().await.unwrap_or_default()),
                s => panic!(
                    "signal {key} through {o}: {s} {}",
                    r.text().await.unwrap_or_default()
                ),
            },
            Err(e) if e.is_connect() => last = format!("{o}: {e}"),
            Err(_) => return (amount, Signalled::Maybe),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    unreachable!()
}

/// The work of one phase: `n` instances `<phase>-<i>` and `n` signals to `Counter/<phase>`
/// with the amounts 1, 2, 4, ... (distinct bits: the final value tells which signals ran),
/// all sent at once through `origins`. Returns the instance ids and the signals' outcomes.
async fn work(
    http: &reqwest::Client,
    origins: &[String],
    phase: &str,
    n: usize,
) -> (Vec<String>, Vec<(i64, Signalled)>) {
    let mut starts = tokio::task::JoinSet::new();
    let mut signals = tokio::task::JoinSet::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("{phase}-{i}");
        ids.push(id.clone());
        // Each request begins at another node.
        let mut from = origins.to_vec();
        from.rotate_left(i % origins.len());
        starts.spawn(start_once(http.clone(), from.clone(), id));
        signals.spawn(signal_once(http.clone(), from, phase.to_string(), 1 << i));
    }
    while let Some(r) = starts.join_next().await {
        r.unwrap();
    }
    let mut outcomes = Vec::new();
    while let Some(r) = signals.join_next().await {
        outcomes.push(r.unwrap());
    }
    (ids, outcomes)
}

/// Reads `origin`'s partition table (null when the node does not answer).
async fn table(http: &reqwest::Client, origin: &str) -> Value {
    match http
        .get(format!("{origin}/cluster/partitions"))
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// The owner of every partition in a partition table (`None` for a partition without one).
fn owners(t: &Value) -> Vec<Option<String>> {
    t["partitions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| p["owner"].as_str().map(str::to_string))
        .collect()
}

/// Polls `origin`'s partition table (bounded by the caller's phase) until `pred` holds.
async fn until_owners(
    http: &reqwest::Client,
    origin: &str,
    pred: impl Fn(&[Option<String>]) -> bool,
) {
    loop {
        let o = owners(&table(http, origin).await);
        if o.len() == 16 && pred(&o) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks through `origin` that `id` completed once: its output, one ExecutionStarted, one
/// ExecutionCompleted and three TaskCompleted in its history.
async fn completed_once(http: &reqwest::Client, origin: &str, id: &str) {
    let done = wait_done(http, origin, id).await;
    assert_eq!(done["runtimeStatus"], "Completed", "{id}: {done}");
    assert_eq!(done["output"], hello_output(), "{id}: {done}");
    let hist: Value = http
        .get(format!("{origin}{BASE}/instances/{id}/history"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let count = |kind: &str| {
        hist.as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|e| e["kind"].as_str() == Some(kind) || e["kind"].get(kind).is_some())
            .count()
    };
    assert_eq!(count("ExecutionStarted"), 1, "{id}: {hist}");
    assert_eq!(count("ExecutionCompleted"), 1, "{id}: {hist}");
    assert_eq!(count("TaskCompleted"), 3, "{id}: {hist}");
}

/// Waits until `Counter/key` holds every surely-sent amount plus a subset of the maybe-sent
/// ones (the amounts are distinct bits, so a signal run twice or lost shows): exact when no
/// signal's outcome was unknown.
async fn counter_settles(
    http: &reqwest::Client,
    origin: &str,
    key: &str,
    outcomes: &[(i64, Signalled)],
) {
    let sure: i64 = outcomes
        .iter()
        .filter(|(_, s)| matches!(s, Signalled::Surely))
        .map(|(a, _)| a)
        .sum();
    let maybe: i64 = outcomes
        .iter()
        .filter(|(_, s)| matches!(s, Signalled::Maybe))
        .map(|(a, _)| a)
        .sum();
    if maybe != 0 {
        eprintln!("[containers] Counter/{key}: outcome unknown for the amounts {maybe:#b}");
    }
    let mut value = Value::Null;
    for _ in 0..150 {
        value = match http
            .get(format!("{origin}{BASE}/entities/Counter/{key}"))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r.json().await.unwrap_or(Value::Null),
            // No signal ran: the entity was never created (only right when every signal's
            // outcome was unknown, which the check below requires of a 0).
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => Value::from(0),
            _ => Value::Null,
        };
        if let Some(v) = value.as_i64()
            && v >= sure
            && (v - sure) & !maybe == 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("Counter/{key} is {value}, expected {sure} (plus a subset of {maybe:#b})");
}

/// Three node containers linked by the cluster transport on the store container. Work starts
/// through every node; one node is killed (SIGKILL) and stays dead; another is cut from the
/// network (from the store and its peers: a partition) while work goes on through the last
/// one, which takes every partition and finishes all the work so far alone; then the cut
/// node is reconnected and takes partitions again. At the end every instance completed once
/// (history) and every entity signal ran once.
///
/// Docker (20.10 here) removes a container's published ports while it is disconnected from
/// its only network (connections to the old host port are refused) and publishes them again
/// on a NEW host port when it is reconnected: the test sends nothing to the cut node while it
/// is cut, and reads its port again after the heal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_containers_survive_a_kill_and_a_partition() {
    if skip_or_fail("three_node_containers_survive_a_kill_and_a_partition") {
        return;
    }
    let shared = shared_images().await;
    let images = &shared.0;
    let net = Network::create().unwrap();
    let name = |i: usize| format!("{}-node-{i}", net.name);
    let mut logs = vec![format!("{}-store", net.name)];
    logs.extend((1..=3).map(name));
    let (_store, url) = phase(
        "start the store container",
        Duration::from_secs(150),
        &logs,
        start_store(images, &net),
    )
    .await
    .unwrap();
    let env = |i: usize| {
        let seeds: Vec<String> = (1..=3)
            .filter(|&j| j != i)
            .map(|j| format!("{}:7000", name(j)))
            .collect();
        vec![
            ("PERDURE_CLUSTER_LISTEN", "0.0.0.0:7000".to_string()),
            ("PERDURE_CLUSTER_ADVERTISE", format!("{}:7000", name(i))),
            ("PERDURE_CLUSTER_SEEDS", seeds.join(",")),
            ("PERDURE_CLUSTER_COOKIE", "perdure-tc-cookie".to_string()),
            ("PERDURE_CLUSTER_LEASE_TTL", "3s".to_string()),
        ]
    };
    let (e1, e2, e3) = (env(1), env(2), env(3));
    let (n1, n2, n3) = phase(
        "start three node containers",
        Duration::from_secs(150),
        &logs,
        async {
            tokio::try_join!(
                start_node(images, &net, &url, 1, &e1),
                start_node(images, &net, &url, 2, &e2),
                start_node(images, &net, &url, 3, &e3),
            )
        },
    )
    .await
    .unwrap();
    let NodeContainer {
        container: c2,
        origin: o2,
        ..
    } = n2;
    let (o1, o3) = (n1.origin.clone(), n3.origin.clone());
    let http = client();
    phase(
        "three nodes ready, each owning partitions",
        Duration::from_secs(70),
        &logs,
        async {
            for o in [&o1, &o2, &o3] {
                wait_ready(&http, o).await;
            }
            until_owners(&http, &o1, |owners| {
                (1..=3).all(|i| owners.iter().any(|o| o.as_deref() == Some(&name(i))))
            })
            .await;
        },
    )
    .await;

    let mut ids = Vec::new();
    let mut signals = Vec::new();
    let all3 = [o1.clone(), o2.clone(), o3.clone()];
    let (i, s) = phase(
        "work through the three nodes",
        Duration::from_secs(60),
        &logs,
        work(&http, &all3, "before", 6),
    )
    .await;
    ids.extend(i);
    signals.push(("before", s));

    // SIGKILL node 3 (it stays dead) and go on at once through the other two: the requests
    // for its partitions wait for their leases to expire (3 s) and a new owner.
    docker(&["kill", n3.container.id()]).unwrap();
    let two = [o1.clone(), o2.clone()];
    let (i, s) = phase(
        "work through two nodes after the kill",
        Duration::from_secs(60),
        &logs,
        work(&http, &two, "killed", 6),
    )
    .await;
    ids.extend(i);
    signals.push(("killed", s));

    // Cut node 2 off (from the store and from node 1) and go on at once through node 1.
    net.disconnect(c2.id()).unwrap();
    let one = [o1.clone()];
    let (i, s) = phase(
        "work through node 1 during the partition",
        Duration::from_secs(60),
        &logs,
        work(&http, &one, "cut", 6),
    )
    .await;
    ids.extend(i);
    signals.push(("cut", s));
    // What reached node 2's partitions through a link to it that no longer answers waited for
    // the client's timeout (30 s): those signals' outcome is unknown. Once node 1 owns every
    // partition, nothing is ambiguous any more.
    phase(
        "node 1 alone owns every partition",
        Duration::from_secs(60),
        &logs,
        until_owners(&http, &o1, |owners| {
            owners.iter().all(|o| o.as_deref() == Some(&name(1)))
        }),
    )
    .await;
    let (i, s) = phase(
        "work through node 1 alone",
        Duration::from_secs(60),
        &logs,
        work(&http, &one, "alone", 6),
    )
    .await;
    ids.extend(i);
    signals.push(("alone", s));
    phase(
        "node 1 alone finishes everything so far",
        Duration::from_secs(90),
        &logs,
        async {
            for id in &ids {
                completed_once(&http, &o1, id).await;
            }
        },
    )
    .await;

    // Heal: node 2 comes back (on a new host port) and takes partitions again.
    net.connect(c2.id()).unwrap();
    let o2 = phase(
        "node 2 back after the heal, owning partitions",
        Duration::from_secs(90),
        &logs,
        async {
            let port = c2.get_host_port_ipv4(8080).await.unwrap();
            let o2 = format!("http://127.0.0.1:{port}");
            wait_ready(&http, &o2).await;
            until_owners(&http, &o1, |owners| {
                owners.iter().all(Option::is_some)
                    && owners.iter().any(|o| o.as_deref() == Some(&name(2)))
            })
            .await;
            o2
        },
    )
    .await;
    let two = [o1.clone(), o2.clone()];
    let (i, s) = phase(
        "work through two nodes after the heal",
        Duration::from_secs(60),
        &logs,
        work(&http, &two, "healed", 6),
    )
    .await;
    ids.extend(i);
    signals.push(("healed", s));

    phase(
        "every instance completed once, every signal ran once",
        Duration::from_secs(120),
        &logs,
        async {
            for (k, id) in ids.iter().enumerate() {
                completed_once(&http, &two[k % 2], id).await;
            }
            for (k, (key, outcomes)) in signals.iter().enumerate() {
                counter_settles(&http, &two[k % 2], key, outcomes).await;
            }
        },
    )
    .await;
    drop((n1, n3, c2));
}
