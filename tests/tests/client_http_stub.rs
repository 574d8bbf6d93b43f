//! `perdure-client`'s HTTP transport against stub nodes (a raw HTTP/1.1 server in the test):
//! failover retries only a request that cannot have taken effect (a 503 answer, or any read),
//! never a start the node may have carried out (a 500 answer, or a connection dropped after
//! the request was read), and sequential calls share one keep-alive connection. With the
//! partition table of a cluster, a request about one instance goes to its owner first.
//!
//! Every stub answers the client's `GET /cluster/partitions` itself (404, as a node outside a
//! cluster does, unless it is given a table), outside its script and its request log.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use perdure_client::{ClientError, DurableClient, InstanceId, OrchestrationStatus, StartOptions};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What a stub does with one request.
#[derive(Clone, Copy, Debug)]
enum Reply {
    /// Answers with this status and body, keeping the connection open.
    Answer(u16, &'static str),
    /// Closes the connection without answering (after reading the whole request).
    Drop,
}

/// The replies of a stub, by request number (0-based); the last one repeats.
type Script = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

/// A stub node on a free loopback port.
struct Stub {
    origin: String,
    /// Accepted connections.
    connections: Arc<AtomicUsize>,
    /// Request lines (`POST /runtime/... HTTP/1.1`), in arrival order.
    requests: Arc<Mutex<Vec<String>>>,
}

/// The answer to `GET /cluster/partitions`: None is 404 (no cluster).
type Table = Option<String>;

impl Stub {
    async fn start(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        Self::with_table(None, script).await
    }

    /// A stub of a cluster node whose `/cluster/partitions` answers `table`.
    async fn with_table(
        table: Table,
        script: impl Fn(usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(script);
        let (c, r) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // Head and body go out in two writes: without this, every answer waits for
                // the client's delayed ACK (~40 ms).
                let _ = stream.set_nodelay(true);
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, r.clone(), script.clone(), table.clone()));
            }
        });
        Self {
            origin,
            connections,
            requests,
        }
    }

    /// A stub that replies `first` to its first request and `then` to every later one.
    async fn first_then(first: Reply, then: Reply) -> Self {
        Self::start(move |n| if n == 0 { first } else { then }).await
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Serves one connection: reads each request whole (head and `content-length` body), records
/// its request line and replies as scripted.
async fn serve(stream: TcpStream, requests: Arc<Mutex<Vec<String>>>, script: Script, table: Table) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if stream.read_line(&mut header).await.unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.unwrap();
        if line.starts_with("GET /cluster/partitions ") {
            let (status, body) = match &table {
                Some(t) => (200, t.as_str()),
                None => (404, r#"{"Message": "this server runs no cluster node"}"#),
            };
            answer(stream.get_mut(), status, body).await;
            continue;
        }
        let n = {
            let mut r = requests.lock().unwrap();
            r.push(line.trim_end().to_string());
            r.len() - 1
        };
        match script(n) {
            Reply::Drop => return,
            Reply::Answer(status, body) => answer(stream.get_mut(), status, body).await,
        }
    }
}

async fn answer(out: &mut TcpStream, status: u16, body: &str) {
    let head = format!(
        "HTTP/1.1 {status} Stub\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    out.write_all(head.as_bytes()).await.unwrap();
    out.write_all(body.as_bytes()).await.unwrap();
    out.flush().await.unwrap();
}

const STARTED: &str = r#"{"id": "s1"}"#;
const STATUS: &str = r#"{"name": "HelloSequence", "instanceId": "s1", "runtimeStatus": "Running",
  "input": null, "customStatus": null, "output": null,
  "createdTime": "2026-01-01T00:00:00.000Z", "lastUpdatedTime": "2026-01-01T00:00:01.000Z"}"#;
const UNAVAILABLE: &str = r#"{"Message": "node unavailable"}"#;
const BROKEN: &str = r#"{"Message": "internal error"}"#;

fn client(stubs: &[&Stub]) -> DurableClient {
    DurableClient::http(stubs.iter().map(|s| s.origin.clone())).unwrap()
}

async fn start(client: &DurableClient) -> Result<InstanceId, ClientError> {
    client
        .schedule_new_orchestration("HelloSequence", &(), StartOptions::with_id("s1"))
        .await
}

fn id() -> InstanceId {
    InstanceId::new("s1").unwrap()
}

#[tokio::test]
async fn a_503_answer_moves_the_start_to_the_next_node() {
    let refusing = Stub::start(|_| Reply::Answer(503, UNAVAILABLE)).await;
    let healthy = Stub::start(|_| Reply::Answer(202, STARTED)).await;
    let c = client(&[&refusing, &healthy]);
    assert_eq!(start(&c).await.unwrap(), id());
    assert_eq!(refusing.requests().len(), 1);
    assert_eq!(
        healthy.requests(),
        ["POST /runtime/webhooks/durabletask/orchestrators/HelloSequence/s1 HTTP/1.1"]
    );
}

#[tokio::test]
async fn a_503_answer_is_retried_on_the_same_node() {
    let stub = Stub::first_then(Reply::Answer(503, UNAVAILABLE), Reply::Answer(202, STARTED)).await;
    let c = client(&[&stub]);
    assert_eq!(start(&c).await.unwrap(), id());
    assert_eq!(stub.requests().len(), 2);
}

#[tokio::test]
async fn a_500_answer_to_a_start_is_not_retried() {
    let broken = Stub::start(|_| Reply::Answer(500, BROKEN)).await;
    let healthy = Stub::start(|_| Reply::Answer(202, STARTED)).await;
    let c = client(&[&broken, &healthy]);
    let err = start(&c).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Protocol { status: 500, .. }),
        "{err}"
    );
    assert_eq!(broken.requests().len(), 1);
    assert!(healthy.requests().is_empty());
}

#[tokio::test]
async fn a_start_whose_connection_drops_after_it_was_read_is_not_retried() {
    let dropping = Stub::start(|_| Reply::Drop).await;
    let healthy = Stub::start(|_| Reply::Answer(202, STARTED)).await;
    let c = client(&[&dropping, &healthy]);
    let err = start(&c).await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
    assert_eq!(dropping.requests().len(), 1);
    assert!(healthy.requests().is_empty());
}

#[tokio::test]
async fn a_read_whose_connection_drops_is_retried_on_the_next_node() {
    let dropping = Stub::start(|_| Reply::Drop).await;
    let healthy = Stub::start(|_| Reply::Answer(202, STATUS)).await;
    let c = client(&[&dropping, &healthy]);
    let m = c.get_instance(&id(), true, false).await.unwrap().unwrap();
    assert_eq!(m.runtime_status(), OrchestrationStatus::Running);
    assert_eq!(dropping.requests().len(), 1);
    assert_eq!(healthy.requests().len(), 1);
    assert!(healthy.requests()[0].starts_with("GET /runtime/webhooks/durabletask/instances/s1"));
}

#[tokio::test]
async fn a_read_whose_connection_drops_is_retried_on_the_same_node() {
    let stub = Stub::first_then(Reply::Drop, Reply::Answer(202, STATUS)).await;
    let c = client(&[&stub]);
    let m = c.get_instance(&id(), true, false).await.unwrap().unwrap();
    assert_eq!(m.state.instance_id, id());
    assert_eq!(stub.requests().len(), 2);
    assert_eq!(stub.connections(), 2);
}

#[tokio::test]
async fn sequential_calls_share_one_keep_alive_connection() {
    let stub = Stub::first_then(Reply::Answer(202, STARTED), Reply::Answer(202, STATUS)).await;
    let c = client(&[&stub]);
    start(&c).await.unwrap();
    for _ in 0..5 {
        let m = c.get_instance(&id(), false, false).await.unwrap().unwrap();
        assert_eq!(m.runtime_status(), OrchestrationStatus::Running);
    }
    assert_eq!(stub.requests().len(), 6);
    assert_eq!(stub.connections(), 1);
}

/// The partition table a node named `node` answers: `owners[p]` owns partition p.
fn table(node: &str, owners: &[&str]) -> Table {
    let rows: Vec<String> = owners
        .iter()
        .enumerate()
        .map(|(p, o)| format!(r#"{{"partition": {p}, "owner": "{o}", "epoch": 1}}"#))
        .collect();
    Some(format!(
        r#"{{"node": "{node}", "owned": 0, "partitions": [{}]}}"#,
        rows.join(",")
    ))
}

/// Instance ids, each with the partition (of 4) it lands in.
fn ids_and_partitions() -> Vec<(String, u32)> {
    (0..16)
        .map(|i| {
            let id = format!("r{i}");
            let p = perdure_core::ids::partition_of(&id, 4);
            (id, p)
        })
        .collect()
}

fn status_lines(stub: &Stub) -> Vec<String> {
    stub.requests()
        .into_iter()
        .filter_map(|l| {
            l.strip_prefix("GET /runtime/webhooks/durabletask/instances/")
                .and_then(|rest| rest.split(['?', ' ']).next())
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test]
async fn requests_go_to_the_owner_of_their_partition() {
    let owners = ["n1", "n2", "n1", "n2"];
    let n1 = Stub::with_table(table("n1", &owners), |_| Reply::Answer(200, STATUS)).await;
    let n2 = Stub::with_table(table("n2", &owners), |_| Reply::Answer(200, STATUS)).await;
    let c = client(&[&n1, &n2]);
    let ids = ids_and_partitions();
    assert!(
        ids.iter().any(|(_, p)| p % 2 == 0) && ids.iter().any(|(_, p)| p % 2 == 1),
        "the ids cover both nodes: {ids:?}"
    );
    for (id, _) in &ids {
        let st = c
            .get_instance(&InstanceId::new(id.as_str()).unwrap(), false, false)
            .await
            .unwrap();
        assert!(st.is_some());
    }
    let want = |node: usize| -> Vec<String> {
        ids.iter()
            .filter(|(_, p)| *p as usize % 2 == node)
            .map(|(id, _)| id.clone())
            .collect()
    };
    assert_eq!(status_lines(&n1), want(0));
    assert_eq!(status_lines(&n2), want(1));
}

#[tokio::test]
async fn without_routing_or_a_table_requests_stay_on_the_preferred_node() {
    let owners = ["n1", "n2", "n1", "n2"];
    // Routing off: the table is never read, everything goes to the first node.
    let n1 = Stub::with_table(table("n1", &owners), |_| Reply::Answer(200, STATUS)).await;
    let n2 = Stub::with_table(table("n2", &owners), |_| Reply::Answer(200, STATUS)).await;
    let off = DurableClient::http_with(
        perdure_client::HttpClientOptions::new([n1.origin.clone(), n2.origin.clone()])
            .with_route_to_owner(false),
    )
    .unwrap();
    // No cluster (404 on both): routing turns itself off.
    let s1 = Stub::start(|_| Reply::Answer(200, STATUS)).await;
    let s2 = Stub::start(|_| Reply::Answer(200, STATUS)).await;
    let plain = client(&[&s1, &s2]);
    // A table naming nodes the client has no URL of: no owner known, the preferred node.
    let o1 = Stub::with_table(table("x1", &["y", "y", "y", "y"]), |_| {
        Reply::Answer(200, STATUS)
    })
    .await;
    let o2 = Stub::with_table(table("x2", &["y", "y", "y", "y"]), |_| {
        Reply::Answer(200, STATUS)
    })
    .await;
    let strangers = client(&[&o1, &o2]);
    let ids = ids_and_partitions();
    for c in [&off, &plain, &strangers] {
        for (id, _) in &ids {
            c.get_instance(&InstanceId::new(id.as_str()).unwrap(), false, false)
                .await
                .unwrap();
        }
    }
    let all: Vec<String> = ids.iter().map(|(id, _)| id.clone()).collect();
    for (first, second) in [(&n1, &n2), (&s1, &s2), (&o1, &o2)] {
        assert_eq!(status_lines(first), all);
        assert!(second.requests().is_empty(), "{:?}", second.requests());
    }
}

/// The request lines of `stub` whose path starts with `prefix`, as the path's next segment.
fn lines_after(stub: &Stub, prefix: &str) -> Vec<String> {
    stub.requests()
        .into_iter()
        .filter_map(|l| {
            l.split(' ')
                .nth(1)
                .and_then(|path| path.strip_prefix(prefix))
                .and_then(|rest| rest.split(['?', '/']).next())
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test]
async fn starts_and_entity_requests_go_to_the_owner_too() {
    let owners = ["n1", "n2", "n1", "n2"];
    let want = |keys: &[(String, u32)], node: u32| -> Vec<String> {
        keys.iter()
            .filter(|(_, p)| p % 2 == node)
            .map(|(k, _)| k.clone())
            .collect()
    };

    // Starts with an instance id (POST): routed by the id.
    let n1 = Stub::with_table(table("n1", &owners), |_| Reply::Answer(202, STARTED)).await;
    let n2 = Stub::with_table(table("n2", &owners), |_| Reply::Answer(202, STARTED)).await;
    let c = client(&[&n1, &n2]);
    let ids = ids_and_partitions();
    for (id, _) in &ids {
        c.schedule_new_orchestration("HelloSequence", &(), StartOptions::with_id(id.as_str()))
            .await
            .unwrap();
    }
    let started = "/runtime/webhooks/durabletask/orchestrators/HelloSequence/";
    assert_eq!(lines_after(&n1, started), want(&ids, 0));
    assert_eq!(lines_after(&n2, started), want(&ids, 1));

    // Entity reads: routed by `@name@key`, the entity id nodes place entities by.
    let e1 = Stub::with_table(table("n1", &owners), |_| Reply::Answer(404, BROKEN)).await;
    let e2 = Stub::with_table(table("n2", &owners), |_| Reply::Answer(404, BROKEN)).await;
    let c = client(&[&e1, &e2]);
    let keys: Vec<(String, u32)> = (0..16)
        .map(|i| {
            let key = format!("k{i}");
            let e = perdure_client::EntityId::new("counter", key.as_str()).unwrap();
            let p = perdure_core::ids::partition_of(&e.to_string(), 4);
            (key, p)
        })
        .collect();
    assert!(keys.iter().any(|(_, p)| p % 2 == 0) && keys.iter().any(|(_, p)| p % 2 == 1));
    for (key, _) in &keys {
        let e = perdure_client::EntityId::new("counter", key.as_str()).unwrap();
        assert!(c.get_entity(&e).await.unwrap().is_none());
    }
    let read = "/runtime/webhooks/durabletask/entities/counter/";
    assert_eq!(lines_after(&e1, read), want(&keys, 0));
    assert_eq!(lines_after(&e2, read), want(&keys, 1));
}

#[tokio::test]
async fn an_owner_that_fails_is_skipped_after_one_failed_request() {
    let owners = ["n1", "n2", "n1", "n2"];
    let n1 = Stub::with_table(table("n1", &owners), |_| Reply::Answer(200, STATUS)).await;
    // n2 answers its first request, then drops every connection (its table still reads).
    let n2 = Stub::with_table(table("n2", &owners), |n| {
        if n == 0 {
            Reply::Answer(200, STATUS)
        } else {
            Reply::Drop
        }
    })
    .await;
    let c = client(&[&n1, &n2]);
    let on_n2: Vec<String> = ids_and_partitions()
        .into_iter()
        .filter(|(_, p)| p % 2 == 1)
        .map(|(id, _)| id)
        .collect();
    assert!(on_n2.len() >= 3, "{on_n2:?}");
    // Every read succeeds (a read that failed on n2 is retried on n1) ...
    for id in &on_n2 {
        let st = c
            .get_instance(&InstanceId::new(id.as_str()).unwrap(), false, false)
            .await
            .unwrap();
        assert!(st.is_some());
    }
    // ... and n2 saw its first request and one failed one; the rest went to n1 directly.
    assert_eq!(status_lines(&n2), on_n2[..2].to_vec());
    assert_eq!(status_lines(&n1), on_n2[1..].to_vec());
}
