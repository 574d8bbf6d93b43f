//! The registry of orchestrations, activities and entities, by name (and version).
//!
//! Build it once, share it as `Arc<Registry>`. An unknown name is a [`RegistryError`] value,
//! never a panic.
//!
//! ```
//! use perdure_core::registry::Registry;
//! use perdure_core::orchestration::OrchestrationContext;
//! use perdure_core::activity::ActivityContext;
//! use perdure_core::FailureDetails;
//!
//! let mut registry = Registry::new();
//! registry
//!     .add_orchestration("Hello", |ctx: OrchestrationContext, name: String| async move {
//!         let s: String = ctx.call_activity("SayHello", name).await?;
//!         Ok::<_, FailureDetails>(s)
//!     })
//!     .add_activity("SayHello", |_ctx: ActivityContext, name: String| async move {
//!         Ok::<_, String>(format!("Hello {name}!"))
//!     });
//! assert_eq!(registry.orchestration_names(), vec!["Hello".to_string()]);
//! assert!(registry.activity("Nope").is_none());
//! ```

mod functions;

use std::collections::BTreeMap;
use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::FailureDetails;
use crate::activity::ActivityContext;
use crate::entity::{Entity, EntityContext};
use crate::failure::IntoFailureDetails;
use crate::orchestration::OrchestrationContext;

pub use functions::{ActivityFn, EntityFn, OperationFn, OrchestratorFn, execute_activity};

/// An unknown function name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No orchestration with this name (and version) is registered.
    #[error("no orchestration named '{name}'{} is registered", version.as_ref().map(|v| format!(" with version '{v}'")).unwrap_or_default())]
    UnknownOrchestration {
        /// The name asked for.
        name: String,
        /// The version asked for.
        version: Option<String>,
    },
    /// No activity with this name is registered.
    #[error("no activity named '{name}' is registered")]
    UnknownActivity {
        /// The name asked for.
        name: String,
    },
    /// No entity with this name is registered.
    #[error("no entity named '{name}' is registered")]
    UnknownEntity {
        /// The name asked for.
        name: String,
    },
}

impl RegistryError {
    /// As failure details (error types `OrchestrationNotFound`, `ActivityNotFound`,
    /// `EntityNotFound`).
    pub fn to_failure_details(&self) -> FailureDetails {
        let kind = match self {
            Self::UnknownOrchestration { .. } => "OrchestrationNotFound",
            Self::UnknownActivity { .. } => "ActivityNotFound",
            Self::UnknownEntity { .. } => "EntityNotFound",
        };
        FailureDetails::new(kind, self.to_string())
    }
}

/// Orchestrations, activities and entities by name. `Send + Sync`; share as `Arc<Registry>`.
/// Registering a name twice replaces the earlier function.
///
/// ```
/// use perdure_core::registry::{Registry, RegistryError};
/// use perdure_core::{EntityContext, FailureDetails, OrchestrationContext};
///
/// let mut registry = Registry::new();
/// registry
///     .add_orchestration("Greet", |_ctx: OrchestrationContext, name: String| async move {
///         Ok::<_, String>(format!("Hello {name}"))
///     })
///     // A second version of the same orchestration, chosen by the version in ExecutionStarted.
///     .add_orchestration_version("Greet", "2", |_ctx: OrchestrationContext, name: String| {
///         async move { Ok::<_, String>(format!("Hi {name}")) }
///     })
///     .add_activity("Upper", |_ctx, s: String| async move { Ok::<_, String>(s.to_uppercase()) })
///     .add_entity("Counter", |ctx: &mut EntityContext<i64>| -> Result<i64, FailureDetails> {
///         *ctx.state_or_default() += 1;
///         Ok(*ctx.state_or_default())
///     });
/// assert_eq!(registry.orchestration_versions("Greet"), vec![None, Some("2".to_string())]);
/// assert!(registry.orchestration("Greet", Some("2")).is_ok());
/// // An unknown name is an error value, never a panic.
/// let missing = registry.orchestration("Nope", None).err().unwrap();
/// assert_eq!(missing, RegistryError::UnknownOrchestration { name: "Nope".into(), version: None });
/// assert_eq!(missing.to_failure_details().error_type, "OrchestrationNotFound");
/// assert!(registry.try_activity("Nope").is_err());
/// ```
#[derive(Default, Clone)]
pub struct Registry {
    orchestrations: BTreeMap<(String, Option<String>), OrchestratorFn>,
    activities: BTreeMap<String, ActivityFn>,
    entities: BTreeMap<String, EntityFn>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field(
                "orchestrations",
                &self.orchestrations.keys().collect::<Vec<_>>(),
            )
            .field("activities", &self.activities.keys().collect::<Vec<_>>())
            .field("entities", &self.entities.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an unversioned orchestration. Its input decodes from JSON (a missing input
    /// is `null`, so `()` and `Option<T>` work); its error may be `FailureDetails`, `String`,
    /// a `TaskError` or any `std::error::Error + Send + Sync`.
    pub fn add_orchestration<I, O, E, F, Fut>(&mut self, name: impl Into<String>, f: F) -> &mut Self
    where
        F: Fn(OrchestrationContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
        I: DeserializeOwned,
        O: Serialize,
        E: IntoFailureDetails,
    {
        let name = name.into();
        let f = functions::orchestrator_fn(name.clone(), f);
        self.orchestrations.insert((name, None), f);
        self
    }

    /// Registers a version of an orchestration.
    pub fn add_orchestration_version<I, O, E, F, Fut>(
        &mut self,
        name: impl Into<String>,
        version: impl Into<String>,
        f: F,
    ) -> &mut Self
    where
        F: Fn(OrchestrationContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
        I: DeserializeOwned,
        O: Serialize,
        E: IntoFailureDetails,
    {
        let name = name.into();
        let f = functions::orchestrator_fn(name.clone(), f);
        self.orchestrations.insert((name, Some(version.into())), f);
        self
    }

    /// Registers an activity. Activities may do I/O; the node runs them on tokio.
    pub fn add_activity<I, O, E, F, Fut>(&mut self, name: impl Into<String>, f: F) -> &mut Self
    where
        F: Fn(ActivityContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
        I: DeserializeOwned,
        O: Serialize,
        E: IntoFailureDetails,
    {
        let name = name.into();
        let f = functions::activity_fn(name.clone(), f);
        self.activities.insert(name, f);
        self
    }

    /// Registers an entity as a function over `EntityContext<S>`: it dispatches on
    /// `ctx.operation_name()` and returns the operation's result. Entity names are
    /// case-insensitive (stored lower case).
    pub fn add_entity<S, R, E, F>(&mut self, name: impl Into<String>, f: F) -> &mut Self
    where
        S: Serialize + DeserializeOwned + Send + 'static,
        F: Fn(&mut EntityContext<S>) -> Result<R, E> + Send + Sync + 'static,
        R: Serialize,
        E: IntoFailureDetails,
    {
        let name = name.into().to_lowercase();
        self.entities.insert(
            name,
            functions::entity_fn(move |ctx: &mut EntityContext<S>| match f(ctx) {
                Ok(r) => functions::encode_operation_output(&r),
                Err(e) => Err(e.into_failure_details()),
            }),
        );
        self
    }

    /// Registers an entity type implementing [`Entity`].
    pub fn add_entity_type<T: Entity>(&mut self, name: impl Into<String>) -> &mut Self {
        let name = name.into().to_lowercase();
        self.entities.insert(
            name,
            functions::async_entity_fn(std::sync::Arc::new(|ctx: &mut EntityContext<T>| {
                T::dispatch_async(ctx)
            })),
        );
        self
    }

    /// The orchestration with this name and version. Without a version, the unversioned
    /// registration is preferred, else the greatest version (string order).
    pub fn orchestration(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<OrchestratorFn, RegistryError> {
        let key = (name.to_string(), version.map(str::to_string));
        if let Some(f) = self.orchestrations.get(&key) {
            return Ok(f.clone());
        }
        if version.is_none()
            && let Some(((_, _), f)) = self
                .orchestrations
                .range((name.to_string(), None)..)
                .take_while(|((n, _), _)| n == name)
                .last()
        {
            return Ok(f.clone());
        }
        Err(RegistryError::UnknownOrchestration {
            name: name.to_string(),
            version: version.map(str::to_string),
        })
    }

    /// The activity with this name.
    pub fn activity(&self, name: &str) -> Option<ActivityFn> {
        self.activities.get(name).cloned()
    }

    /// The activity with this name, or an error naming it.
    pub fn try_activity(&self, name: &str) -> Result<ActivityFn, RegistryError> {
        self.activity(name)
            .ok_or_else(|| RegistryError::UnknownActivity {
                name: name.to_string(),
            })
    }

    /// The entity with this name (case-insensitive).
    pub fn entity(&self, name: &str) -> Option<EntityFn> {
        self.entities.get(&name.to_lowercase()).cloned()
    }

    /// Registered orchestration names, sorted, without duplicates.
    pub fn orchestration_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.orchestrations.keys().map(|(n, _)| n.clone()).collect();
        names.dedup();
        names
    }

    /// Registered versions of an orchestration (`None` for the unversioned one), sorted.
    pub fn orchestration_versions(&self, name: &str) -> Vec<Option<String>> {
        self.orchestrations
            .keys()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Registered activity names, sorted.
    pub fn activity_names(&self) -> Vec<String> {
        self.activities.keys().cloned().collect()
    }

    /// Registered entity names (lower case), sorted.
    pub fn entity_names(&self) -> Vec<String> {
        self.entities.keys().cloned().collect()
    }
}
