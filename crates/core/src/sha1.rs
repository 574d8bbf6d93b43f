//! Name-based (version 5) UUIDs and seeds from text, on RustCrypto's SHA-1 (not for
//! security). Until issue 12 core carried its own SHA-1; `recorded` pins values computed with
//! it, so histories recorded before replay the same.

/// The SHA-1 digest of `data` (RustCrypto's `sha1`).
pub(crate) fn sha1(data: &[u8]) -> [u8; 20] {
    use sha1::Digest;
    sha1::Sha1::digest(data).into()
}

/// A name-based UUID (RFC 9562 version 5) of `name` in `namespace`, as lower-case text.
pub(crate) fn uuid_v5(namespace: &[u8; 16], name: &[u8]) -> String {
    let mut input = Vec::with_capacity(16 + name.len());
    input.extend_from_slice(namespace);
    input.extend_from_slice(name);
    let hash = sha1(&input);
    let mut b = [0u8; 16];
    b.copy_from_slice(&hash[..16]);
    b[6] = (b[6] & 0x0F) | 0x50;
    b[8] = (b[8] & 0x3F) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The URL namespace of RFC 9562 (as Durable Functions uses for `NewGuid`).
pub(crate) const URL_NAMESPACE: [u8; 16] = [
    0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8,
];

/// A 64-bit seed derived from text (the first 8 bytes of its SHA-1).
pub(crate) fn seed_from(text: &str) -> u64 {
    let h = sha1(text.as_bytes());
    u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: &[u8]) -> String {
        d.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn known_vectors() {
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(&sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex(&sha1(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
    }

    #[test]
    fn uuid_v5_known_value() {
        // uuid.uuid5(uuid.NAMESPACE_URL, "https://www.python.org")
        assert_eq!(
            uuid_v5(&URL_NAMESPACE, b"https://www.python.org"),
            "30709ed8-a35e-547c-8ef0-c6bf5e229681"
        );
        let u = uuid_v5(&URL_NAMESPACE, b"x");
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "5");
    }
}

#[cfg(test)]
mod recorded {
    use super::*;

    /// Computed by the hand-written SHA-1 core carried before: must never change.
    #[test]
    fn uuids_and_seeds_match_recorded_values() {
        for (name, want) in [
            (
                "inst-1_1704067200123_0",
                "e627f077-24bb-5acb-b021-5feb496d0171",
            ),
            (
                "inst-1_1704067200123_1",
                "1000b45e-8a60-5ce8-8999-36424adba14a",
            ),
            ("", "1b4db7eb-4057-5ddf-91e0-36dec72071f5"),
            ("\u{e9}\u{0}x", "62e33388-7563-52d7-b919-8b4dc2b7339b"),
        ] {
            assert_eq!(uuid_v5(&URL_NAMESPACE, name.as_bytes()), want, "{name:?}");
        }
        for (text, want) in [
            ("inst-1\u{0}exec-1", 5_796_473_054_384_607_040u64),
            ("", 15_724_779_818_122_431_245),
            (
                "a much longer text that spans more than one sixty-four byte block of sha-1 \
                 input, for sure",
                14_576_352_108_985_261_662,
            ),
        ] {
            assert_eq!(seed_from(text), want, "{text:?}");
        }
    }
}
