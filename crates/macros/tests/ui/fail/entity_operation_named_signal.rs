use perdure_core::entity;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
pub struct Bell(u32);

#[entity]
impl Bell {
    pub fn signal(&mut self) {
        self.0 += 1;
    }
}

fn main() {}
