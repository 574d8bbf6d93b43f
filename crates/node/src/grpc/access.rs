//! Access control of the gRPC service: the role each RPC needs, checked against the key in
//! the `authorization: Bearer <key>` metadata (the Durable Task SDKs send metadata given to
//! their client and worker constructors). A tower layer in front of the service, so that no
//! RPC can be added without a decision here.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;

use crate::access::{ApiKeys, CallerRole, Decision, Role};

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

/// The key in `authorization` metadata (`Bearer <key>`; another scheme is no key).
fn presented<B>(req: &axum::http::Request<B>) -> Option<&str> {
    let v = req.headers().get("authorization")?.to_str().ok()?.trim();
    match v.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Some(token.trim()),
        _ => None,
    }
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

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        if self.keys.is_empty() {
            return Box::pin(self.inner.call(req));
        }
        let needs = needed_role(req.uri().path());
        match self.keys.decide(Some(needs), presented(&req)) {
            Decision::Allow(role) => {
                if let Some(role) = role {
                    req.extensions_mut().insert(CallerRole(role));
                }
                Box::pin(self.inner.call(req))
            }
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
    use tower::{Layer as _, Service, ServiceExt};

    /// Every RPC of the protocol with the role it needs: a new RPC in the `.proto` fails this
    /// test until it is given a role here (and in `needed_role` if not an operator's).
    const ROLES: &[(&str, Role)] = &[
        ("Hello", Role::Reader),
        ("StartInstance", Role::Operator),
        ("GetInstance", Role::Reader),
        ("RewindInstance", Role::Operator),
        ("RestartInstance", Role::Operator),
        ("WaitForInstanceStart", Role::Reader),
        ("WaitForInstanceCompletion", Role::Reader),
        ("RaiseEvent", Role::Operator),
        ("TerminateInstance", Role::Operator),
        ("SuspendInstance", Role::Operator),
        ("ResumeInstance", Role::Operator),
        ("QueryInstances", Role::Reader),
        ("ListInstanceIds", Role::Reader),
        ("PurgeInstances", Role::Admin),
        ("GetWorkItems", Role::Operator),
        ("CompleteActivityTask", Role::Operator),
        ("CompleteOrchestratorTask", Role::Operator),
        ("CompleteEntityTask", Role::Operator),
        ("StreamInstanceHistory", Role::Reader),
        ("CreateTaskHub", Role::Admin),
        ("DeleteTaskHub", Role::Admin),
        ("SignalEntity", Role::Operator),
        ("GetEntity", Role::Reader),
        ("QueryEntities", Role::Reader),
        ("CleanEntityStorage", Role::Operator),
        ("AbandonTaskActivityWorkItem", Role::Operator),
        ("AbandonTaskOrchestratorWorkItem", Role::Operator),
        ("AbandonTaskEntityWorkItem", Role::Operator),
        ("SkipGracefulOrchestrationTerminations", Role::Operator),
    ];

    #[test]
    fn every_rpc_of_the_protocol_has_its_role() {
        let proto = include_str!("../../proto/orchestrator_service.proto");
        let rpcs: Vec<&str> = proto
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .filter_map(|l| l.split('(').next())
            .map(str::trim)
            .collect();
        let listed: Vec<&str> = ROLES.iter().map(|(n, _)| *n).collect();
        assert_eq!(rpcs, listed, "the .proto's RPCs and this table differ");
        for (name, role) in ROLES {
            assert_eq!(
                needed_role(&format!("/TaskHubSidecarService/{name}")),
                *role,
                "{name}"
            );
        }
    }

    fn keys() -> Arc<ApiKeys> {
        use crate::access::KeyEntry;
        Arc::new(ApiKeys::new(vec![
            KeyEntry::from_secret("r", Role::Reader, "reader-key-0123456789").unwrap(),
            KeyEntry::from_secret("o", Role::Operator, "operator-key-0123456789").unwrap(),
        ]))
    }

    /// The layer over a service that answers 200 and reports the caller's role it saw.
    async fn call(
        keys: Arc<ApiKeys>,
        rpc: &str,
        auth: Option<&str>,
    ) -> (Option<tonic::Code>, Option<Option<CallerRole>>) {
        let seen = Arc::new(std::sync::Mutex::new(None));
        let seen2 = seen.clone();
        let inner = tower::service_fn(move |req: axum::http::Request<()>| {
            let seen = seen2.clone();
            async move {
                *seen.lock().unwrap() = Some(req.extensions().get::<CallerRole>().copied());
                Ok::<_, std::convert::Infallible>(axum::http::Response::new(
                    tonic::body::Body::empty(),
                ))
            }
        });
        let mut svc = AccessLayer::new(keys).layer(inner);
        let mut req = axum::http::Request::builder().uri(format!("/TaskHubSidecarService/{rpc}"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = svc
            .ready()
            .await
            .unwrap()
            .call(req.body(()).unwrap())
            .await
            .unwrap();
        let code = tonic::Status::from_header_map(resp.headers()).map(|s| s.code());
        let seen = seen.lock().unwrap().take();
        (code, seen)
    }

    #[tokio::test]
    async fn calls_are_refused_or_passed_with_the_callers_role() {
        // No key: UNAUTHENTICATED, the service is not called (a worker's stream included).
        assert_eq!(
            call(keys(), "GetWorkItems", None).await,
            (Some(tonic::Code::Unauthenticated), None)
        );
        // Another scheme is no key.
        assert_eq!(
            call(
                keys(),
                "GetInstance",
                Some("Basic cmVhZGVyLWtleS0wMTIzNDU2Nzg5")
            )
            .await,
            (Some(tonic::Code::Unauthenticated), None)
        );
        assert_eq!(
            call(keys(), "GetInstance", Some("Bearer unknown-key-0123456789")).await,
            (Some(tonic::Code::Unauthenticated), None)
        );
        assert_eq!(
            call(
                keys(),
                "StartInstance",
                Some("Bearer reader-key-0123456789")
            )
            .await,
            (Some(tonic::Code::PermissionDenied), None)
        );
        assert_eq!(
            call(
                keys(),
                "StartInstance",
                Some("bearer operator-key-0123456789")
            )
            .await,
            (None, Some(Some(CallerRole(Role::Operator))))
        );
        assert_eq!(
            call(
                keys(),
                "PurgeInstances",
                Some("Bearer operator-key-0123456789")
            )
            .await,
            (Some(tonic::Code::PermissionDenied), None)
        );
        // No keys configured: everything passes, no role.
        assert_eq!(
            call(Arc::default(), "PurgeInstances", None).await,
            (None, Some(None))
        );
    }
}
