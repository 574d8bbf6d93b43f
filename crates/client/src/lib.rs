//! # perdure-client
//!
//! The Durable Client for Rust services.
#![deny(missing_docs)]

pub use perdure_core::management::ManagementApi;
