//! Access control of the gRPC service: the role each RPC needs, checked against the key in
//! the `authorization: Bearer <key>` metadata (the Durable Task SDKs send metadata given to
//! their client and worker constructors). A tower layer in front of the service, so that no
//! RPC can be added without a decision here.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;

use crate::access::{ApiKeys, Decision, Role};

/// The role an RPC (its path, `/TaskHubSidecarService/Name`) needs.
pub(crate) fn needed_role(path: &str) -> Role {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name {
        "Hello"
        | "GetInstance"
        | "WaitForInstanceStart"
        | "WaitForInstanceCompletion"
        | "QueryInstances"
        | "ListInstanceIds"
        | "GetOrchestrationHistory"
        | "StreamInstanceHistory"
        | "GetEntity"
        | "QueryEntities" => Role::Reader,
        "PurgeInstances" | "DeleteTaskHub" | "CreateTaskHub" => Role::Admin,
        // Everything else drives instances or entities, or serves as a worker.
        _ => Role::Operator,
    }
}

/// The layer (`tonic::transport::Server::builder().layer(...)`).
#[derive(Clone, Debug)]
pub struct AccessLayer {
    keys: Arc<ApiKeys>,
}

impl AccessLayer {
    /// Checks every call against these keys (none: every call passes).
    pub fn new(keys: Arc<ApiKeys>) -> Self {
        Self { keys }
    }
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = AccessService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessService {
            inner,
            keys: self.keys.clone(),
        }
    }
}

/// The service of [`AccessLayer`].
#[derive(Clone, Debug)]
pub struct AccessService<S> {
    inner: S,
    keys: Arc<ApiKeys>,
}

/// The key in `authorization` metadata (`Bearer <key>`; anything else is taken whole, and
/// matches no key).
fn presented<B>(req: &axum::http::Request<B>) -> Option<&str> {
    let v = req.headers().get("authorization")?.to_str().ok()?.trim();
    Some(match v.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => v,
    })
}

impl<S, B> tower::Service<axum::http::Request<B>> for AccessService<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = axum::http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        if self.keys.is_empty() {
            return Box::pin(self.inner.call(req));
        }
        let needs = needed_role(req.uri().path());
        match self.keys.decide(Some(needs), presented(&req)) {
            Decision::Allow => Box::pin(self.inner.call(req)),
            refused => {
                let status = match refused {
                    Decision::Forbidden { .. } => {
                        tonic::Status::permission_denied(refused.message())
                    }
                    _ => tonic::Status::unauthenticated(format!(
                        "{} (gRPC: `authorization: Bearer <key>` metadata)",
                        if matches!(refused, Decision::Missing) {
                            "this RPC needs an API key"
                        } else {
                            "the API key presented is not one of this node's keys"
                        }
                    )),
                };
                tracing::debug!(path = req.uri().path(), code = ?status.code(), "gRPC call refused by access control");
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpcs_need_the_roles_of_the_issue() {
        let p = |n: &str| format!("/TaskHubSidecarService/{n}");
        assert_eq!(needed_role(&p("GetInstance")), Role::Reader);
        assert_eq!(needed_role(&p("StreamInstanceHistory")), Role::Reader);
        assert_eq!(needed_role(&p("StartInstance")), Role::Operator);
        assert_eq!(needed_role(&p("GetWorkItems")), Role::Operator);
        assert_eq!(needed_role(&p("CompleteOrchestratorTask")), Role::Operator);
        assert_eq!(needed_role(&p("PurgeInstances")), Role::Admin);
        assert_eq!(needed_role(&p("SomethingNew")), Role::Operator);
    }
}
