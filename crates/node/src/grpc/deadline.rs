//! The call's deadline, from the `grpc-timeout` request header.

use std::time::Duration;

use tonic::metadata::MetadataMap;

/// The time a server-side wait may take, if the client set a deadline (`grpc-timeout: 30S`,
/// at most eight digits and one of the units `H M S m u n`); a malformed header counts as
/// none. A little less than the deadline (a twentieth, at most 200 ms), so that the wait
/// ends with Perdure's own `DEADLINE_EXCEEDED` and its message before the server's timeout
/// layer cancels the call.
pub(crate) fn timeout(md: &MetadataMap) -> Option<Duration> {
    let t = parse(md.get("grpc-timeout")?.to_str().ok()?)?;
    Some(t.saturating_sub((t / 20).min(Duration::from_millis(200))))
}

fn parse(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_units_and_refuses_junk() {
        assert_eq!(parse("30S"), Some(Duration::from_secs(30)));
        assert_eq!(parse("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("S"), None);
        assert_eq!(parse("12x"), None);
        assert_eq!(parse("123456789S"), None);
        assert_eq!(parse("-1S"), None);
    }
}
