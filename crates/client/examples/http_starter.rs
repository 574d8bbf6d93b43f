//! An HTTP starter: a service of its own (not a node) that starts orchestrations on Perdure
//! nodes and answers as a Durable Functions HTTP-triggered starter with a `[DurableClient]`
//! binding does.
//!
//! - `POST /api/orchestrators/{name}`: starts `name` with the request body (JSON, or empty for
//!   none) as input; `202 Accepted` with `Location`, `Retry-After` and the management URLs
//!   (`statusQueryGetUri`, `sendEventPostUri`, ...), which point to the node.
//! - `POST /api/orchestrators/{name}?wait=10`: waits up to 10 seconds (fractions allowed) for
//!   the instance: `200` with the output if it completed, the status object if it failed or
//!   was terminated, else the same `202`.
//!
//! Run a node with the sample app, then the starter, then call it:
//!
//! ```sh
//! cargo run --release -p perdure-node -- dev          # HTTP on 127.0.0.1:8080
//! cargo run -p perdure-client --features axum --example http_starter
//! # or: ... --example http_starter -- http://node1:8080,http://node2:8080 127.0.0.1:7071
//!
//! curl -i -X POST http://127.0.0.1:7071/api/orchestrators/HelloSequence
//! curl -i -X POST 'http://127.0.0.1:7071/api/orchestrators/HelloSequence?wait=10'
//! # 200 ["Hello Tokyo!","Hello Seattle!","Hello London!"]
//! curl -i -X POST 'http://127.0.0.1:7071/api/orchestrators/Approval?wait=1' \
//!      -H 'content-type: application/json' -d '{"timeoutSeconds": 300}'
//! # 202 {"id":"...","sendEventPostUri":"http://127.0.0.1:8080/runtime/webhooks/durabletask/instances/.../raiseEvent/{eventName}",...}
//! ```
//!
//! Configuration: the node URLs are the first argument or `PERDURE_URL` (comma-separated;
//! more than one gives failover), default `http://127.0.0.1:8080`; the listen address is the
//! second argument or `STARTER_ADDR`, default `127.0.0.1:7071`. Management URLs point to the
//! first node URL, or to `PERDURE_PUBLIC_URL` when set (the nodes' public origin behind a
//! proxy, the value of their `http.public_url`).

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use perdure_client::StartOptions;
use perdure_client::binding::DurableClientBinding;
use serde::Deserialize;

/// The query of a start.
#[derive(Deserialize)]
struct StartQuery {
    /// Seconds to wait for the instance before answering 202.
    wait: Option<f64>,
}

/// A plain-text 400.
fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

/// `POST /api/orchestrators/{name}[?wait=secs]`.
async fn start(
    client: DurableClientBinding,
    parts: Parts,
    Path(name): Path<String>,
    Query(query): Query<StartQuery>,
    body: Bytes,
) -> Result<Response, Response> {
    let input: serde_json::Value = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| bad_request(format!("body: {e}")))?
    };
    // Checked before the start: a bad `wait` must not leave an instance behind.
    let wait = query
        .wait
        .map(Duration::try_from_secs_f64)
        .transpose()
        .map_err(|e| bad_request(format!("wait: {e}")))?;
    // A client error is a response with the node's status code (404 for an unknown name, ...).
    let id = client
        .schedule_new_orchestration(&name, &input, StartOptions::default())
        .await
        .map_err(IntoResponse::into_response)?;
    match wait {
        None => Ok(client.create_check_status_response(&parts, &id)),
        Some(timeout) => client
            .wait_for_completion_or_create_check_status_response(
                &parts,
                &id,
                timeout,
                timeout.min(Duration::from_secs(1)),
            )
            .await
            .map_err(IntoResponse::into_response),
    }
}

/// The starter's routes over a binding.
pub(crate) fn app(binding: DurableClientBinding) -> Router {
    Router::new()
        .route("/api/orchestrators/{name}", post(start))
        .with_state(binding)
}

fn setting(arg: Option<String>, var: &str, default: &str) -> String {
    arg.or_else(|| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| default.to_string())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let nodes = setting(args.next(), "PERDURE_URL", "http://127.0.0.1:8080");
    let listen = setting(args.next(), "STARTER_ADDR", "127.0.0.1:7071");
    let mut binding = DurableClientBinding::http(nodes.split(',').map(str::trim))?;
    if let Some(public) = std::env::var("PERDURE_PUBLIC_URL")
        .ok()
        .filter(|v| !v.is_empty())
    {
        binding = binding.with_public_origin(public);
    }
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!(
        "HTTP starter on http://{} for {nodes}: POST /api/orchestrators/{{name}}[?wait=secs]",
        listener.local_addr()?
    );
    axum::serve(listener, app(binding))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
