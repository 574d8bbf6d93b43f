//! The remotable router actor: a few per node, registered in a `pg` group named after the
//! node, so a peer reaches them by node name. A router only decodes, dispatches and
//! replies; the work runs on its own task so a long poll never blocks the router.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::wire::{self, PeerCast, PeerReply, PeerRequest};

/// What a node does with the requests and casts its peers send it.
pub trait PeerHandler: Send + Sync + 'static {
    /// Answers a request.
    fn handle(&self, request: PeerRequest) -> BoxFuture<'static, PeerReply>;
    /// Takes a one-way message.
    fn cast(&self, message: PeerCast);
}

/// The message of a router: bytes from the codec, never decoded by ractor itself, so a
/// malformed payload reaches the router and gets an answer.
#[derive(Debug)]
pub enum RouterMsg {
    /// A request; the reply is an encoded [`PeerReply`].
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// A one-way message: an encoded [`PeerCast`].
    Cast(Vec<u8>),
}

const CALL: &str = "call";
const CAST: &str = "cast";

impl ractor::Message for RouterMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        Ok(match self {
            Self::Call(args, reply) => SerializedMessage::Call {
                variant: CALL.into(),
                args,
                reply,
                metadata: None,
            },
            Self::Cast(args) => SerializedMessage::Cast {
                variant: CAST.into(),
                args,
                metadata: None,
            },
        })
    }

    fn deserialize(bytes: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        match bytes {
            SerializedMessage::Call { args, reply, .. } => Ok(Self::Call(args, reply)),
            SerializedMessage::Cast { args, .. } => Ok(Self::Cast(args)),
            SerializedMessage::CallReply(..) => Err(BoxedDowncastErr),
        }
    }
}

/// Counters of the transport (exposed by [`super::Transport::stats`]).
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Requests that did not decode (each got an `Undecodable` reply).
    pub undecodable_calls: AtomicU64,
    /// Casts that did not decode (logged and dropped).
    pub undecodable_casts: AtomicU64,
    /// Requests served for peers.
    pub calls_served: AtomicU64,
    /// Attempts to send an operation to the owner of its partition (requests that reached
    /// a node which does not own their instance or entity; a retry counts again).
    pub forwarded: AtomicU64,
    /// Peer sessions closed before they authenticated (wrong cookie, or not a Perdure node).
    pub refused_sessions: AtomicU64,
    /// Peer sessions closed because the peer stopped answering pings (a dead link).
    pub dead_sessions: AtomicU64,
    /// Woken when a counter changes.
    pub(crate) changed: tokio::sync::Notify,
}

/// Where the router finds its handler: set once the node is up (requests before that are
/// answered `NotReady`).
pub(crate) type HandlerSlot = Arc<OnceLock<Arc<dyn PeerHandler>>>;

pub(crate) struct RouterActor;

pub(crate) struct RouterArgs {
    pub(crate) handler: HandlerSlot,
    pub(crate) stats: Arc<TransportStats>,
}

impl Actor for RouterActor {
    type Msg = RouterMsg;
    type State = RouterArgs;
    type Arguments = RouterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RouterMsg::Call(bytes, reply) => {
                let request = match wire::decode::<PeerRequest>(&bytes) {
                    Ok(r) => r,
                    Err(e) => {
                        state
                            .stats
                            .undecodable_calls
                            .fetch_add(1, Ordering::Relaxed);
                        state.stats.changed.notify_waiters();
                        tracing::warn!(error = %e, len = bytes.len(), "a peer request did not decode; answered with an error");
                        send_reply(reply, &PeerReply::Undecodable(e.to_string()));
                        return Ok(());
                    }
                };
                state.stats.calls_served.fetch_add(1, Ordering::Relaxed);
                match state.handler.get() {
                    None => send_reply(reply, &PeerReply::NotReady),
                    Some(h) => {
                        let fut = h.handle(request);
                        tokio::spawn(async move {
                            let answer = fut.await;
                            send_reply(reply, &answer);
                        });
                    }
                }
            }
            RouterMsg::Cast(bytes) => match wire::decode::<PeerCast>(&bytes) {
                Ok(m) => {
                    if let Some(h) = state.handler.get() {
                        h.cast(m);
                    }
                }
                Err(e) => {
                    state
                        .stats
                        .undecodable_casts
                        .fetch_add(1, Ordering::Relaxed);
                    state.stats.changed.notify_waiters();
                    tracing::warn!(error = %e, len = bytes.len(), "a peer cast did not decode; dropped");
                }
            },
        }
        Ok(())
    }
}

fn send_reply(port: RpcReplyPort<Vec<u8>>, reply: &PeerReply) {
    let bytes = match wire::encode(reply) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "a peer reply could not be encoded");
            match wire::encode(&PeerReply::Undecodable(format!("reply not encodable: {e}"))) {
                Ok(b) => b,
                Err(_) => return,
            }
        }
    };
    // The caller may have timed out meanwhile; nothing to do then.
    let _ = port.send(bytes);
}
