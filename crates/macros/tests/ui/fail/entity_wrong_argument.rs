use perdure_core::{entity, orchestration, OrchestrationContext, TaskError};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
pub struct Counter(i64);

#[entity]
impl Counter {
    pub fn add(&mut self, n: i64) {
        self.0 += n;
    }
}

#[orchestration]
async fn orch(ctx: OrchestrationContext) -> Result<(), TaskError> {
    ctx.entity::<Counter>("c1").add("five").await
}

fn main() {}
