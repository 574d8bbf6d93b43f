//! The text parsers behind the HTTP API's paths and query parameters: instance and entity
//! ids, runtime statuses and continuation tokens (date-times have their own target,
//! `iso8601`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use perdure_core::{EntityId, InstanceId, OrchestrationStatus};
use perdure_node::state::instances::{decode_token, encode_token};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = InstanceId::new(s) {
        assert_eq!(id.as_str(), s);
    }
    if let Ok(e) = EntityId::parse(s) {
        assert_eq!(EntityId::parse(&e.to_string()).ok(), Some(e.clone()));
        assert!(EntityId::new(e.name(), e.key()).is_ok());
    }
    if let Some((name, key)) = s.split_once('\u{0}') {
        let _ = EntityId::new(name, key);
    }
    if let Some(st) = OrchestrationStatus::parse(s) {
        assert_eq!(OrchestrationStatus::parse(st.as_str()), Some(st));
    }
    if let Some(key) = decode_token(s) {
        // A token is accepted only as the node writes it: lower-case hex of the key.
        assert_eq!(encode_token(&key), s.to_ascii_lowercase(), "token {s:?}");
    }
});
