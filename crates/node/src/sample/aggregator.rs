//! Aggregator: a durable entity that accumulates what it is sent, one operation at a time.

use perdure_core::{EntityContext, entity};
use serde::{Deserialize, Serialize};

/// A counter; its state is the bare number.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Counter(pub i64);

#[entity]
impl Counter {
    /// Adds `n` (wrapping) and returns the new value.
    pub fn add(&mut self, n: i64) -> i64 {
        self.0 = self.0.wrapping_add(n);
        self.0
    }

    /// Sets the value to 0.
    pub fn reset(&mut self) -> i64 {
        self.0 = 0;
        0
    }

    /// The value (0 for a counter that does not exist).
    pub fn get(&self) -> i64 {
        self.0
    }

    /// Removes the counter's state.
    pub fn delete(&mut self, ctx: &mut EntityContext<Self>) -> i64 {
        ctx.delete_state();
        0
    }
}
