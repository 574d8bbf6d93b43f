use perdure_core::entity;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
pub struct Counter(i64);

#[entity]
impl Counter {
    pub async fn add(&mut self, n: i64) {
        self.0 += n;
    }
}

fn main() {}
