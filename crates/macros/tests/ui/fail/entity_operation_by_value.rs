use perdure_core::entity;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
pub struct Counter(i64);

#[entity]
impl Counter {
    pub fn into_value(self) -> i64 {
        self.0
    }
}

fn main() {}
