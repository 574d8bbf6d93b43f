//! `perdure-client`'s HTTP transport against stub nodes (a raw HTTP/1.1 server in the test):
//! failover retries only a request that cannot have taken effect (a 503 answer, or any read),
//! never a start the node may have carried out (a 500 answer, or a connection dropped after
//! the request was read), and sequential calls share one keep-alive connection.

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

impl Stub {
    async fn start(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(script);
        let (c, r) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, r.clone(), script.clone()));
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
async fn serve(stream: TcpStream, requests: Arc<Mutex<Vec<String>>>, script: Script) {
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
        let n = {
            let mut r = requests.lock().unwrap();
            r.push(line.trim_end().to_string());
            r.len() - 1
        };
        match script(n) {
            Reply::Drop => return,
            Reply::Answer(status, body) => {
                let head = format!(
                    "HTTP/1.1 {status} Stub\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\n\r\n",
                    body.len()
                );
                let out = stream.get_mut();
                out.write_all(head.as_bytes()).await.unwrap();
                out.write_all(body.as_bytes()).await.unwrap();
                out.flush().await.unwrap();
            }
        }
    }
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
