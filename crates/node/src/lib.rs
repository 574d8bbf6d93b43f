//! # perdure-node
//!
//! The Perdure runtime.

pub mod store;
pub mod state;
pub mod metrics;
pub mod options;
pub mod http;
pub mod config;
pub mod runtime;
pub mod node;
pub mod sample;
pub mod cli;
