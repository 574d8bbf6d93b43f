//! # perdure-node
//!
//! The Perdure runtime.

pub mod store;
