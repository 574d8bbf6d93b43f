//! The replayer's JSON history import (`perdure_core::testing`): a history exported from a
//! node or written by hand is replayed against the six application patterns of the golden
//! tests; any history must give a report, never a panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use perdure_core::InstanceId;
use perdure_core::testing::{HistoryReplayer, history_from_json};

#[path = "../../crates/core/tests/common/mod.rs"]
mod common;

fn replayer() -> &'static HistoryReplayer {
    static R: OnceLock<HistoryReplayer> = OnceLock::new();
    R.get_or_init(|| HistoryReplayer::new(Arc::new(common::patterns())))
}

fuzz_target!(|data: &[u8]| {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    let id = InstanceId::new("fuzz").expect("a valid id");
    if let Ok(history) = history_from_json(&id, json) {
        let again = serde_json::to_string(&history).expect("a decoded history encodes");
        let back = history_from_json(&id, &again).expect("a re-encoded history decodes");
        assert_eq!(back, history, "JSON round trip changed the history");
    }
    let _ = replayer().replay_json(json);
});
