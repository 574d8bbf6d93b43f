//! W3C trace context (`traceparent`), as stored with an instance: parsing, formatting and the
//! derived span id of an orchestration. No OpenTelemetry types here.

use sha2::{Digest, Sha256};

/// A W3C `traceparent`: the trace, the parent span, whether it is sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace id (not all zero).
    pub trace_id: [u8; 16],
    /// The parent span id (not all zero).
    pub span_id: [u8; 8],
    /// The `sampled` flag.
    pub sampled: bool,
}

fn hex_into(s: &str, out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(())
}

impl TraceParent {
    /// Parses `00-<32 hex>-<16 hex>-<2 hex>` (a later version's header is read by its first
    /// four fields, as the W3C specification asks); `None` for anything invalid, including
    /// all-zero ids and version `ff`.
    ///
    /// ```
    /// use perdure_node::telemetry::TraceParent;
    /// let t = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    /// assert!(t.sampled);
    /// assert_eq!(t.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    /// assert!(TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
    /// ```
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let mut v = [0u8; 1];
        hex_into(version, &mut v)?;
        if v[0] == 0xff || (v[0] == 0 && parts.next().is_some()) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        let mut f = [0u8; 1];
        hex_into(trace, &mut trace_id)?;
        hex_into(span, &mut span_id)?;
        hex_into(flags, &mut f)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: f[0] & 1 == 1,
        })
    }

    /// The same trace with another parent span.
    pub fn with_span(&self, span_id: [u8; 8]) -> Self {
        Self { span_id, ..*self }
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("00-")?;
        for b in self.trace_id {
            write!(f, "{b:02x}")?;
        }
        f.write_str("-")?;
        for b in self.span_id {
            write!(f, "{b:02x}")?;
        }
        write!(f, "-{:02x}", u8::from(self.sampled))
    }
}

/// The span id of an execution's orchestration span: the first 8 bytes of
/// SHA-256(instance id, 0, execution id), never all zero. Every node computes the same one,
/// before and after a restart, so children can name it before it is exported.
pub fn orchestration_span_id(instance_id: &str, execution_id: &str) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(instance_id.as_bytes());
    h.update([0u8]);
    h.update(execution_id.as_bytes());
    let d = h.finalize();
    let mut id = [0u8; 8];
    id.copy_from_slice(&d[..8]);
    if id == [0; 8] {
        id[7] = 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_valid_headers() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let t = TraceParent::parse(ok).unwrap();
        assert!(!t.sampled);
        assert_eq!(t.to_string(), ok);
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902é-01",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad:?}");
        }
        // A later version: its first four fields.
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
    }

    #[test]
    fn orchestration_span_ids_are_stable_and_distinct() {
        let a = orchestration_span_id("order-1", "e1");
        assert_eq!(a, orchestration_span_id("order-1", "e1"));
        assert_ne!(a, orchestration_span_id("order-1", "e2"));
        assert_ne!(a, orchestration_span_id("order-1e", "1"));
    }
}
