//! Typed calls from the client: start an orchestration by its handle, and signal or read an
//! entity through the proxy written by `#[entity]`.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use perdure_core::handles::{EntityInterface, EntityTarget, OrchestrationHandle};
use perdure_core::management::ManagementError;
use perdure_core::{EntityId, IdError, InstanceId, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{ClientError, ClientResult, DurableClient, EntityState, StartOptions};

/// A boxed future of the client (what a signal through a typed proxy returns).
pub type ClientFuture<T> = Pin<Box<dyn Future<Output = ClientResult<T>> + Send + 'static>>;

fn bad_id(e: &IdError) -> ClientError {
    ClientError::Management(ManagementError::BadRequest(e.to_string()))
}

impl DurableClient {
    /// Starts an orchestration by its handle (the function written with
    /// `perdure_core::orchestration`): the input type comes from its signature, and only an
    /// orchestration is accepted (an activity handle does not compile).
    pub async fn schedule_new<F: OrchestrationHandle>(
        &self,
        orchestration: impl FnOnce() -> F,
        input: impl Into<F::Input>,
        opts: StartOptions,
    ) -> ClientResult<InstanceId> {
        let _ = orchestration;
        let mut opts = opts;
        if opts.version.is_none() {
            opts.version = F::VERSION.map(str::to_string);
        }
        self.schedule_new_orchestration(F::NAME, &input.into(), opts)
            .await
    }

    /// A typed handle on entity `E` with `key`: `.signal().add(5)` signals an operation,
    /// `.state()` reads the state.
    ///
    /// ```no_run
    /// # use perdure_client::DurableClient;
    /// # use perdure_core::entity;
    /// # #[derive(Default, serde::Serialize, serde::Deserialize)]
    /// # pub struct Counter(i64);
    /// # #[entity]
    /// # impl Counter { pub fn add(&mut self, n: i64) { self.0 += n } }
    /// # async fn demo(client: DurableClient) -> Result<(), perdure_client::ClientError> {
    /// client.entity::<Counter>("c1").signal().add(5).await?;
    /// let counter: Option<Counter> = client.entity::<Counter>("c1").state().await?;
    /// # Ok(()) }
    /// ```
    pub fn entity<E: EntityInterface>(&self, key: impl Into<String>) -> ClientEntity<E> {
        ClientEntity {
            client: self.clone(),
            entity: E::entity_id(key),
            kind: PhantomData,
        }
    }
}

/// An entity of type `E` seen from the client (see [`DurableClient::entity`]).
pub struct ClientEntity<E> {
    client: DurableClient,
    entity: Result<EntityId, IdError>,
    kind: PhantomData<fn() -> E>,
}

impl<E> std::fmt::Debug for ClientEntity<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientEntity")
            .field("entity", &self.entity)
            .finish()
    }
}

impl<E: EntityInterface> ClientEntity<E> {
    /// The entity's id (an error if the key is not a valid entity key).
    pub fn id(&self) -> ClientResult<EntityId> {
        self.entity.clone().map_err(|e| bad_id(&e))
    }

    /// The operations, signalled (one-way): each returns once the node has accepted the
    /// signal.
    pub fn signal(&self) -> E::Proxy<ClientSignal> {
        self.signal_at(None)
    }

    /// The operations, signalled for delivery no earlier than `scheduled_time`.
    pub fn signal_at(&self, scheduled_time: Option<Timestamp>) -> E::Proxy<ClientSignal> {
        E::Proxy::from(ClientSignal {
            client: self.client.clone(),
            entity: self.entity.clone(),
            scheduled_time,
        })
    }

    /// The entity's state (`None` if it has none).
    pub async fn state(&self) -> ClientResult<Option<E>> {
        self.client.get_entity_state(&self.id()?).await
    }

    /// The entity's metadata and raw state.
    pub async fn get(&self) -> ClientResult<Option<EntityState>> {
        self.client.get_entity(&self.id()?).await
    }
}

/// Signals from the client, the target of a typed proxy (see [`ClientEntity::signal`]).
#[derive(Clone)]
pub struct ClientSignal {
    client: DurableClient,
    entity: Result<EntityId, IdError>,
    scheduled_time: Option<Timestamp>,
}

impl std::fmt::Debug for ClientSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSignal")
            .field("entity", &self.entity)
            .field("scheduled_time", &self.scheduled_time)
            .finish()
    }
}

impl EntityTarget for ClientSignal {
    type Call<R: DeserializeOwned + Send + 'static> = ClientFuture<()>;
    type Signal = ClientSignal;

    fn operation<I: Serialize, R: DeserializeOwned + Send + 'static>(
        &self,
        operation: &'static str,
        input: &I,
    ) -> ClientFuture<()> {
        // Encode now, so the future owns nothing borrowed.
        let input = match perdure_core::Payload::json(input) {
            Ok(p) => p,
            Err(e) => return Box::pin(async move { Err(ClientError::Payload(e)) }),
        };
        let client = self.client.clone();
        let entity = self.entity.clone();
        let scheduled_time = self.scheduled_time;
        Box::pin(async move {
            let entity = entity.map_err(|e| bad_id(&e))?;
            client
                .signal_entity_payload(&entity, operation, Some(input), scheduled_time)
                .await
        })
    }

    fn signal(&self) -> ClientSignal {
        self.clone()
    }
}
