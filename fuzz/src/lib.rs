//! Helpers shared by the fuzz targets (see docs/fuzzing.md).

use std::fmt::Debug;

use perdure_core::codec;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Decodes `data` as a `T` with the codec; whatever decodes must encode again and decode to
/// the same value. Any panic (in the decoder or here) is a finding.
pub fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) {
    let Ok(value) = codec::decode::<T>(data) else {
        return;
    };
    let again = codec::encode(&value).expect("a decoded record encodes");
    let back: T = codec::decode(&again).expect("a re-encoded record decodes");
    assert_eq!(back, value, "codec round trip changed the record");
}

/// Picks one decoder per input by its first byte: `decoders!(data; A, B, C)` tries
/// `roundtrip::<A>` for a first byte of 0 (mod 3), and so on. Adding a record or message type
/// to a target is adding its name to the list.
#[macro_export]
macro_rules! decoders {
    ($data:expr; $($ty:ty),+ $(,)?) => {{
        let data: &[u8] = $data;
        if let Some((&which, rest)) = data.split_first() {
            let fns: &[fn(&[u8])] = &[$($crate::roundtrip::<$ty>),+];
            fns[usize::from(which) % fns.len()](rest);
        }
    }};
}
