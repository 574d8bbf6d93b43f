//! # perdure-node
//!
//! The Perdure runtime.

pub mod access;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod node;
pub mod options;
pub mod runtime;
pub mod sample;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
