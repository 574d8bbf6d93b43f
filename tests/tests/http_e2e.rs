//! The HTTP API end to end against a spawned `perdure-node dev`: routes, status codes, JSON
//! shapes, paging, bulk purge, and the async HTTP API pattern.

use std::time::Duration;

use futures::StreamExt;
use perdure_tests::NodeProcess;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

struct Api {
    http: Client,
    base: String,
}

impl Api {
    fn new(node: &NodeProcess) -> Self {
        Self {
            http: Client::new(),
            base: node.base(),
        }
    }
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
    async fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }
    async fn post(&self, path: &str, body: Option<&str>) -> Response {
        let req = self.http.post(self.url(path));
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(b.to_string()),
            None => req.header("content-type", "application/octet-stream"),
        };
        req.send().await.unwrap()
    }
    async fn delete(&self, path: &str) -> Response {
        self.http.delete(self.url(path)).send().await.unwrap()
    }
    /// Long-polls (server-side wait) until the instance is finished.
    async fn wait(&self, id: &str) -> Value {
        for _ in 0..20 {
            let r = self
                .get(&format!("/instances/{id}?waitForCompletion=10s"))
                .await;
            if r.status() == StatusCode::OK {
                return r.json().await.unwrap();
            }
            assert_eq!(r.status(), StatusCode::ACCEPTED);
        }
        panic!("instance {id} did not finish");
    }
}

async fn body(r: Response) -> Value {
    let status = r.status();
    let text = r.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_status_events_and_lifecycle() {
    let node = NodeProcess::spawn_dev().unwrap();
    let api = Api::new(&node);

    // Start: 202 + Location + Retry-After + management payload.
    let r = api.post("/orchestrators/HelloSequence", None).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(r.headers()["retry-after"], "10");
    let p = body(r).await;
    let id = p["id"].as_str().unwrap().to_string();
    for key in [
        "statusQueryGetUri",
        "sendEventPostUri",
        "terminatePostUri",
        "rewindPostUri",
        "purgeHistoryDeleteUri",
        "restartPostUri",
        "suspendPostUri",
        "resumePostUri",
    ] {
        assert!(p[key].as_str().unwrap().starts_with(&api.base), "{key}");
    }
    assert_eq!(location, p["statusQueryGetUri"]);

    // The async HTTP API pattern: poll statusQueryGetUri until 200.
    let mut polls = 0;
    let done = loop {
        let r = api.http.get(&location).send().await.unwrap();
        if r.status() == StatusCode::OK {
            break body(r).await;
        }
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert!(r.headers().contains_key("location"));
        polls += 1;
        assert!(polls < 200, "never finished");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(done["runtimeStatus"], "Completed");
    assert_eq!(done["name"], "HelloSequence");
    assert_eq!(done["instanceId"], id.as_str());
    assert_eq!(
        done["output"],
        json!(["Hello Tokyo!", "Hello Seattle!", "Hello London!"])
    );
    assert!(done["createdTime"].as_str().unwrap().ends_with('Z'));
    assert!(done["lastUpdatedTime"].as_str().unwrap().ends_with('Z'));

    // History, with and without outputs.
    let h = body(
        api.get(&format!(
            "/instances/{id}?showHistory=True&showHistoryOutput=True"
        ))
        .await,
    )
    .await;
    let events = h["historyEvents"].as_array().unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["EventType"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"ExecutionStarted") && kinds.contains(&"TaskCompleted"),
        "{kinds:?}"
    );
    assert!(events.iter().any(|e| e["Result"] == "Hello Tokyo!"));
    let h = body(api.get(&format!("/instances/{id}?showHistory=true")).await).await;
    assert!(
        h["historyEvents"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["Result"].is_null())
    );
    let r = api.get(&format!("/instances/{id}/history")).await;
    assert_eq!(r.status(), StatusCode::OK);

    // Human interaction: Approval waits for an event; the Python client double-encodes it.
    let r = api
        .post(
            "/orchestrators/Approval/order%201",
            Some(r#"{"timeoutSeconds": 300}"#),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let s = api.get("/instances/order%201").await;
    assert_eq!(s.status(), StatusCode::ACCEPTED);
    assert_eq!(s.headers()["retry-after"], "5");
    let s = body(s).await;
    assert_eq!(s["instanceId"], "order 1");
    assert_eq!(s["input"], json!({"timeoutSeconds": 300}));
    let s = body(api.get("/instances/order%201?showInput=False").await).await;
    assert_eq!(s["input"], Value::Null);
    let r = api
        .post(
            "/instances/order%201/raiseEvent/Approval",
            Some(r#""true""#),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let s = api.wait("order%201").await;
    assert_eq!(s["output"], "approved");
    // Finished: events and lifecycle answer 410.
    let r = api
        .post("/instances/order%201/raiseEvent/Approval", Some("true"))
        .await;
    assert_eq!(r.status(), StatusCode::GONE);
    for op in ["terminate", "suspend", "resume"] {
        let r = api.post(&format!("/instances/order%201/{op}"), None).await;
        assert_eq!(r.status(), StatusCode::GONE, "{op}");
        body(r).await;
    }

    // Suspend, resume, terminate a live one.
    api.post(
        "/orchestrators/Approval/a2",
        Some(r#"{"timeoutSeconds": 300}"#),
    )
    .await;
    let r = api.post("/instances/a2/suspend?reason=hold", None).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut suspended = false;
    for _ in 0..100 {
        let s = body(api.get("/instances/a2").await).await;
        if s["runtimeStatus"] == "Suspended" {
            suspended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(suspended);
    let r = api.post("/instances/a2/resume?reason=go", None).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = api
        .post("/instances/a2/terminate?reason=enough", None)
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let s = api.wait("a2").await;
    assert_eq!(s["runtimeStatus"], "Terminated");

    // Rewind is for failed instances only.
    let r = api.post("/instances/a2/rewind?reason=x", None).await;
    assert_eq!(r.status(), StatusCode::GONE);

    // Restart: 202 + management payload of the new instance.
    let r = api.post(&format!("/instances/{id}/restart"), None).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let p = body(r).await;
    assert_ne!(p["id"], id.as_str());
    let again = api.wait(p["id"].as_str().unwrap()).await;
    assert_eq!(again["runtimeStatus"], "Completed");
    let r = api
        .post(
            &format!("/instances/{id}/restart?restartWithNewInstanceId=false"),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(body(r).await["id"], id.as_str());

    // Unknown instance: 404 JSON everywhere.
    for r in [
        api.get("/instances/ghost").await,
        api.post("/instances/ghost/terminate", None).await,
        api.post("/instances/ghost/raiseEvent/x", Some("1")).await,
    ] {
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        body(r).await;
    }
    assert!(node.terminate().unwrap(), "clean exit on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_are_json() {
    let node = NodeProcess::spawn_dev().unwrap();
    let api = Api::new(&node);
    let r = api.post("/orchestrators/NoSuchThing", None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let j = body(r).await;
    let msg = j["ExceptionMessage"].as_str().unwrap();
    assert!(
        msg.contains("NoSuchThing") && msg.contains("HelloSequence"),
        "{msg}"
    );

    let r = api
        .post("/orchestrators/HelloSequence/x", Some("{oops"))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(
        body(r).await["Message"]
            .as_str()
            .unwrap()
            .contains("malformed JSON")
    );

    let long = "x".repeat(300);
    let r = api
        .post(&format!("/orchestrators/HelloSequence/{long}"), None)
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    body(r).await;

    let big = format!("\"{}\"", "y".repeat(3 * 1024 * 1024));
    let r = api
        .post("/orchestrators/HelloSequence/big", Some(&big))
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    body(r).await;

    let r = api.get("/instances/?runtimeStatus=Sleeping").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    body(r).await;
    let r = api.get("/nothing/here").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    body(r).await;

    let r = api
        .http
        .get(format!("{}/healthz", node.origin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = api
        .http
        .get(format!("{}/readyz", node.origin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = api
        .http
        .get(format!("{}/metrics", node.origin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("perdure_http_requests_total"), "{text}");
    assert!(text.contains("perdure_episodes_total"), "{text}");
    let f = body(api.get("/functions").await).await;
    assert!(
        f["orchestrations"]
            .as_array()
            .unwrap()
            .contains(&json!("HelloSequence"))
    );
}

/// A failed instance through HTTP: 500 on request, a rewind that completes it, restart and
/// rewind of unknown ids, and a payload the node refuses although HTTP would carry it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_rewind_restart_and_payload_limit() {
    let node = NodeProcess::spawn_dev().unwrap();
    let api = Api::new(&node);
    let input = r#"{"account": "shop", "amount": 30}"#;
    let r = api.post("/orchestrators/Withdraw/w1", Some(input)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let s = api.wait("w1").await;
    assert_eq!(s["runtimeStatus"], "Failed");
    assert!(s["output"].to_string().contains("InsufficientFunds"), "{s}");
    let r = api
        .get("/instances/w1?returnInternalServerErrorOnFailure=true")
        .await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body(r).await["runtimeStatus"], "Failed");
    let r = api
        .get("/instances/w1?returnInternalServerErrorOnFailure=false")
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    // Fund the account, rewind: the failed withdrawal runs again and succeeds.
    api.post("/entities/Account/shop?op=deposit", Some("50"))
        .await;
    eventually("the deposit", || async {
        let r = api.get("/entities/Account/shop").await;
        r.status() == StatusCode::OK && body(r).await == json!(50)
    })
    .await;
    let r = api.post("/instances/w1/rewind?reason=funded", None).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    eventually("the rewound instance to complete", || async {
        body(api.get("/instances/w1").await).await["runtimeStatus"] == "Completed"
    })
    .await;
    let done = body(api.get("/instances/w1").await).await;
    assert_eq!(done["output"], 20);

    // Unknown ids: 404 JSON.
    for r in [
        api.post("/instances/ghost/restart", None).await,
        api.post("/instances/ghost/rewind?reason=x", None).await,
    ] {
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        body(r).await;
    }

    // Over the node's max payload (1 MiB) but under the HTTP body limit (2 MiB): 413 from the
    // node's own check, for an input and for event data alike.
    let big = format!("\"{}\"", "y".repeat(1536 * 1024));
    let r = api
        .post("/orchestrators/HelloSequence/big", Some(&big))
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body(r).await["Message"].as_str().is_some());
    let r = api
        .post(
            "/orchestrators/Approval/small",
            Some(r#"{"timeoutSeconds": 300}"#),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = api
        .post("/instances/small/raiseEvent/Approval", Some(&big))
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    body(r).await;
    assert_eq!(
        api.get("/instances/big").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_signal_read_list_and_delete() {
    let node = NodeProcess::spawn_dev().unwrap();
    let api = Api::new(&node);
    let r = api.post("/entities/Counter/c1?op=add", Some("5")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // Double-encoded, as the Python client sends it: still an i64 for the typed entity.
    let r = api
        .post("/entities/Counter/c1?op=add", Some(r#""2""#))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut state = Value::Null;
    for _ in 0..200 {
        let r = api.get("/entities/Counter/c1").await;
        if r.status() == StatusCode::OK {
            state = body(r).await;
            if state == json!(7) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(state, json!(7));
    let r = api.get("/entities/Counter/nobody").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = api.post("/entities/Counter/c1", None).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let list = body(api.get("/entities/Counter?fetchState=true").await).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["entityId"], json!({"name": "counter", "key": "c1"}));
    assert_eq!(list[0]["state"], json!(7));
    let all = body(api.get("/entities/").await).await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    let all = body(api.get("/entities").await).await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    let by_name = body(api.get("/entities/Counter/").await).await;
    assert_eq!(by_name.as_array().unwrap().len(), 1);
    assert!(
        body(api.get("/entities/Account").await)
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );

    // An unknown entity name: 404 naming the registered ones.
    let r = api.post("/entities/Gauge/g1?op=add", Some("1")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let msg = body(r).await["ExceptionMessage"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(
        msg.contains("gauge") && msg.contains("counter") && msg.contains("account"),
        "{msg}"
    );

    // Deleting an entity's state removes the entity at once: nothing is left to clean.
    api.post("/entities/Counter/gone?op=add", Some("1")).await;
    eventually("Counter gone to hold 1", || async {
        let r = api.get("/entities/Counter/gone").await;
        r.status() == StatusCode::OK && body(r).await == json!(1)
    })
    .await;
    api.post("/entities/Counter/gone?op=delete", None).await;
    eventually("Counter gone to be removed", || async {
        api.get("/entities/Counter/gone?metadata=true")
            .await
            .status()
            == StatusCode::NOT_FOUND
    })
    .await;
    assert_eq!(
        body(api.get("/entities/Counter").await)
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Polls `check` until it holds (a spawned node offers no event to wait on).
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The critical section holding an entity, if any (`metadata=true` shows the lock).
async fn locked_by(api: &Api, entity: &str) -> Option<String> {
    let r = api.get(&format!("/entities/{entity}?metadata=true")).await;
    if r.status() != StatusCode::OK {
        return None;
    }
    body(r).await["lockedBy"].as_str().map(str::to_string)
}

/// Orphaned locks: `t-hold` locks accounts a and b in a critical section and waits there for
/// its `Confirm` event; terminating it ends the instance without unlocking (the node writes
/// the termination without running the orchestration, as Durable Functions does), so both
/// locks are orphaned. Cleaning releases them, and the deposit that waited behind a lock runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleaning_entity_storage_releases_orphaned_locks() {
    let node = NodeProcess::spawn_dev().unwrap();
    let api = Api::new(&node);
    let hold = r#"{"from": "a", "to": "b", "amount": 1, "confirm": true}"#;
    assert_eq!(
        api.post("/orchestrators/Transfer/t-hold", Some(hold))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    eventually("t-hold to lock account b", || async {
        locked_by(&api, "Account/b").await.is_some()
    })
    .await;
    api.post("/instances/t-hold/terminate?reason=gone", None)
        .await;
    assert_eq!(api.wait("t-hold").await["runtimeStatus"], "Terminated");
    assert!(locked_by(&api, "Account/a").await.is_some());

    // A deposit waits behind the lock; cleaning without releasing locks changes nothing.
    api.post("/entities/Account/b?op=deposit", Some("10")).await;
    let r = api
        .post(
            "/maintenance/cleanEntityStorage?releaseOrphanedLocks=false",
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        body(r).await,
        json!({"numberOfEmptyEntitiesRemoved": 0, "numberOfOrphanedLocksRemoved": 0})
    );
    assert!(locked_by(&api, "Account/b").await.is_some());
    assert_eq!(
        api.get("/entities/Account/b").await.status(),
        StatusCode::NOT_FOUND,
        "the deposit ran behind the lock"
    );

    let r = api.delete("/maintenance/cleanEntityStorage").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        body(r).await,
        json!({"numberOfEmptyEntitiesRemoved": 0, "numberOfOrphanedLocksRemoved": 2})
    );
    eventually("the deposit behind the lock to run", || async {
        let r = api.get("/entities/Account/b").await;
        r.status() == StatusCode::OK && body(r).await == json!(10)
    })
    .await;
    assert_eq!(locked_by(&api, "Account/b").await, None);
    // Account a had neither state nor a waiting operation: releasing its lock removed it.
    eventually("account a to be removed", || async {
        api.get("/entities/Account/a?metadata=true").await.status() == StatusCode::NOT_FOUND
    })
    .await;
    let r = api.post("/maintenance/cleanEntityStorage", None).await;
    assert_eq!(
        body(r).await,
        json!({"numberOfEmptyEntitiesRemoved": 0, "numberOfOrphanedLocksRemoved": 0})
    );
}

async fn start_many(api: &Api, prefix: &str, n: usize) {
    futures::stream::iter(0..n)
        .map(|i| {
            let url = api.url(&format!("/orchestrators/HelloSequence/{prefix}{i:04}"));
            let http = api.http.clone();
            async move {
                let r = http
                    .post(url)
                    .header("content-type", "application/octet-stream")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::ACCEPTED);
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

async fn wait_all_completed(api: &Api, prefix: &str, n: u64) {
    for _ in 0..600 {
        let c = body(
            api.get(&format!("/instanceCounts?instanceIdPrefix={prefix}"))
                .await,
        )
        .await;
        if c["Completed"] == json!(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("instances {prefix}* did not all complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_over_250_instances_and_filters() {
    let node = NodeProcess::spawn_dev().unwrap();
    let api = Api::new(&node);
    start_many(&api, "page-", 250).await;
    wait_all_completed(&api, "page-", 250).await;
    api.post(
        "/orchestrators/Approval/other-1",
        Some(r#"{"timeoutSeconds": 300}"#),
    )
    .await;

    // Python's get_status_all: the first page (100) without a token.
    let r = api.get("/instances/").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().contains_key("x-ms-continuation-token"));
    assert_eq!(body(r).await.as_array().unwrap().len(), 100);

    // Follow x-ms-continuation-token both ways.
    let mut ids = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut req = api
            .http
            .get(api.url("/instances?top=40&instanceIdPrefix=page-&runtimeStatus=Completed"));
        if let Some(t) = &token {
            req = req.header("x-ms-continuation-token", t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        token = r
            .headers()
            .get("x-ms-continuation-token")
            .map(|v| v.to_str().unwrap().to_string());
        let page = body(r).await;
        let page = page.as_array().unwrap();
        assert!(page.len() <= 40);
        ids.extend(
            page.iter()
                .map(|s| s["instanceId"].as_str().unwrap().to_string()),
        );
        pages += 1;
        if token.is_none() {
            break;
        }
        assert!(pages < 20);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 250);
    assert!(pages >= 7);

    // A token the node did not hand out for this listing is a 400, not the first page again
    // (which would page a client forever).
    let r = api.get("/instances?top=5&runtimeStatus=Completed").await;
    let status_token = r.headers()["x-ms-continuation-token"]
        .to_str()
        .unwrap()
        .to_string();
    for (path, token) in [
        ("/instances?top=40", "not-a-token"),
        ("/instances/", "abc"),
        ("/instances?instanceIdPrefix=page-", status_token.as_str()),
        ("/entities", "zz"),
        ("/entities/Counter", status_token.as_str()),
    ] {
        let r = api
            .http
            .get(api.url(path))
            .header("x-ms-continuation-token", token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path} with {token}");
        let msg = body(r).await["Message"].as_str().unwrap().to_string();
        assert!(msg.contains("continuation token"), "{msg}");
    }
    let r = api.get("/instances?continuationToken=0g").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // The token handed out still works, and an empty or "null" header means the first page.
    let r = api
        .http
        .get(api.url("/instances?top=5&runtimeStatus=Completed"))
        .header("x-ms-continuation-token", &status_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await.as_array().unwrap().len(), 5);
    let r = api
        .http
        .get(api.url("/instances?top=5"))
        .header("x-ms-continuation-token", "null")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let running = body(api.get("/instances?runtimeStatus=Running,Pending").await).await;
    assert_eq!(running.as_array().unwrap().len(), 1);
    let by_name = body(api.get("/instances?name=Approval").await).await;
    assert_eq!(by_name.as_array().unwrap().len(), 1);
    let future = body(
        api.get("/instances?createdTimeFrom=2999-01-01T00:00:00.000000Z")
            .await,
    )
    .await;
    assert!(future.as_array().unwrap().is_empty());
    let c = body(api.get("/instanceCounts").await).await;
    assert_eq!(c["Completed"], 250);
    assert_eq!(c["Running"], 1);
    let c = body(api.get("/instanceCounts?name=Approval").await).await;
    assert_eq!(
        (c["Completed"].as_u64(), c["Running"].as_u64()),
        (Some(0), Some(1))
    );

    // Purge one.
    let r = api.delete("/instances/page-0000").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await["instancesDeleted"], 1);
    let r = api.delete("/instances/page-0000").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        api.get("/instances/page-0000").await.status(),
        StatusCode::NOT_FOUND
    );

    // Incremental purge by filter (no trailing slash): one batch per request until complete.
    let mut deleted = 0;
    let mut requests = 0;
    loop {
        let r = api
            .delete("/instances?runtimeStatus=Completed&incremental=true")
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let j = body(r).await;
        deleted += j["instancesDeleted"].as_u64().unwrap();
        requests += 1;
        if j["complete"] == true {
            break;
        }
        assert!(requests < 10, "never complete: {j}");
    }
    assert_eq!(deleted, 249);
    assert!(requests >= 3, "249 instances take more than one batch");
    let c = body(api.get("/instanceCounts").await).await;
    assert_eq!(
        (c["Completed"].as_u64(), c["Running"].as_u64()),
        (Some(0), Some(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_purge_of_1000() {
    let node = NodeProcess::spawn_dev().unwrap();
    let api = Api::new(&node);
    start_many(&api, "bulk-", 1000).await;
    wait_all_completed(&api, "bulk-", 1000).await;
    api.post(
        "/orchestrators/Approval/keep-me",
        Some(r#"{"timeoutSeconds": 300}"#),
    )
    .await;
    let r = api
        .delete("/instances/?createdTimeFrom=2000-01-01T00:00:00.000000Z&runtimeStatus=Completed")
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await["instancesDeleted"], 1000);
    let c = body(api.get("/instanceCounts").await).await;
    assert_eq!(c["Completed"], 0);
    assert_eq!(c["Running"], 1);
    // Nothing left: 404 (as Durable Functions answers).
    let r = api.delete("/instances/?runtimeStatus=Completed").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    body(r).await;
}

/// Payloads never reach the logs, even at trace level with `http.log_payloads` on (which adds
/// body sizes only): a sentinel sent as an input, event data, an entity operation input and
/// inside malformed JSON appears nowhere on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_hold_payloads() {
    const SENTINEL: &str = "SENTINEL-7f3a9c";
    let data = tempfile::tempdir().unwrap();
    let args: Vec<std::ffi::OsString> = vec![
        "dev".into(),
        "--http".into(),
        "127.0.0.1:0".into(),
        "--partitions".into(),
        "4".into(),
        "--data-dir".into(),
        data.path().join("store").into(),
    ];
    let node = NodeProcess::spawn_logged(
        &args,
        &[("RUST_LOG", "trace"), ("PERDURE_LOG_PAYLOADS", "true")],
        data,
    )
    .unwrap();
    let api = Api::new(&node);
    let input = format!(r#"{{"timeoutSeconds": 300, "note": "{SENTINEL}"}}"#);
    let r = api
        .post("/orchestrators/Approval/logged", Some(&input))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let event = format!(r#""{SENTINEL}""#);
    let r = api
        .post("/instances/logged/raiseEvent/Note", Some(&event))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = api
        .post("/entities/Counter/logged?op=add", Some(&event))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    api.post("/entities/Counter/logged?op=add", Some("1")).await;
    let r = api
        .post(
            "/orchestrators/Approval/broken",
            Some(&format!(r#"{{"note": {SENTINEL}"#)),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // The entity has run both operations (the first failed on its input) and the event is in
    // the history: everything has been through the runtime before the node stops.
    eventually("the counter", || async {
        let r = api.get("/entities/Counter/logged").await;
        r.status() == StatusCode::OK && body(r).await == json!(1)
    })
    .await;
    eventually("the event in the history", || async {
        let h = body(api.get("/instances/logged?showHistory=true").await).await;
        h["historyEvents"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["EventType"] == "EventRaised"))
    })
    .await;
    let s = body(api.get("/instances/logged").await).await;
    assert_eq!(
        s["input"]["note"], SENTINEL,
        "the payload was stored as sent"
    );

    let (clean, stderr) = node.stop_and_collect_stderr().unwrap();
    assert!(clean);
    assert!(
        stderr.contains("content_length") && stderr.contains("raiseEvent"),
        "request logging was on: {stderr}"
    );
    assert!(
        !stderr.contains(SENTINEL),
        "a payload reached the logs: {}",
        stderr
            .lines()
            .filter(|l| l.contains(SENTINEL))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
