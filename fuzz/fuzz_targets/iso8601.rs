//! The date-time parser of query parameters (`createdTimeFrom=...`, `scheduledTime=...`):
//! any text parses to an instant or to nothing, never a panic or an overflow, and what parses
//! formats to a date-time that parses to the same instant.
#![no_main]

use libfuzzer_sys::fuzz_target;
use perdure_core::iso8601;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(t) = iso8601::parse(s) {
        let text = iso8601::format(t);
        assert_eq!(iso8601::parse(&text), Some(t), "{s:?} -> {text:?}");
    }
});
