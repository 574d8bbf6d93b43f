//! # perdure-macros
//!
//! The attribute macros of Perdure, re-exported by `perdure-core` (depend on that crate, not
//! on this one): `#[orchestration]`, `#[activity]` and `#[entity]`. Each writes a typed
//! handle (`perdure_core::DurableFunction`, `perdure_core::EntityInterface`) so that calls
//! are checked by the compiler, and `#[orchestration]` rejects the non-deterministic calls
//! that Durable Functions' code analyzer flags. See `perdure_core::handles` for examples and
//! `docs/programming-model.md` for the whole model.

mod args;
mod checks;
mod entity;
mod function;

use proc_macro::TokenStream;

/// Turns an `async fn` into an orchestration: a handle type `{Name}Orchestration` (the
/// function's body becomes its `run`) and a function with the original name that returns it,
/// which `ctx.call(name, input)`, `Registry::register(name)` and the client's `schedule_new`
/// take.
///
/// Options: `name = "..."` (default: the function's name), `version = "..."`,
/// `allow_nondeterministic` (turns the determinism checks off for the whole function; a
/// single statement opts out with `#[nondeterministic]`).
#[proc_macro_attribute]
pub fn orchestration(attr: TokenStream, item: TokenStream) -> TokenStream {
    function::expand(function::Kind::Orchestration, attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Turns an `async fn` into an activity: a handle type `{Name}Activity` (the function's body
/// becomes its `run`) and a function with the original name that returns it. The
/// `ActivityContext` parameter is optional.
///
/// Options: `name = "..."` (default: the function's name).
#[proc_macro_attribute]
pub fn activity(attr: TokenStream, item: TokenStream) -> TokenStream {
    function::expand(function::Kind::Activity, attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// On an `impl` block of an entity's state type: each `pub fn` with a `&self` or
/// `&mut self` receiver is an operation (named after the method, matched case-insensitively),
/// and a typed proxy `{Type}Proxy` carries the same methods for calls and signals.
///
/// Options: `name = "..."` (default: the type's name).
#[proc_macro_attribute]
pub fn entity(attr: TokenStream, item: TokenStream) -> TokenStream {
    entity::expand(attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
