//! ISO-8601 / RFC 3339 text for [`Timestamp`]s, as the Durable Functions HTTP API writes and
//! reads them (`2024-01-01T00:00:00.000Z`), on `jiff` (without its time zone database and
//! clock features: pure date arithmetic, no clock is read).
//!
//! ```
//! use perdure_core::{iso8601, Timestamp};
//! let t = Timestamp::from_millis(1_704_067_200_123);
//! assert_eq!(iso8601::format(t), "2024-01-01T00:00:00.123Z");
//! assert_eq!(iso8601::parse("2024-01-01T00:00:00.123456Z"), Some(t));
//! assert_eq!(iso8601::parse("2024-01-01T01:00:00.123+01:00"), Some(t));
//! assert_eq!(iso8601::parse("2024-01-01"), Some(Timestamp::from_millis(1_704_067_200_000)));
//! assert_eq!(iso8601::parse("yesterday"), None);
//! ```

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

use crate::Timestamp;

/// Formats a timestamp as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, milliseconds). A time past the
/// last instant `jiff` represents (9999-12-30T22:00:00.999Z) is shown as that instant.
pub fn format(t: Timestamp) -> String {
    let ms = i64::try_from(t.as_millis()).unwrap_or(i64::MAX);
    let ts = jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::MAX);
    ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Digits of a fraction of a second `jiff` takes (nanoseconds); more are cut off.
const MAX_FRACTION_DIGITS: usize = 9;

/// Parses an RFC 3339 date-time (`T` or space separator; fraction of any length, truncated to
/// milliseconds; `Z`, `+hh:mm`, `+hhmm` or `+hh`; no zone means UTC) or a plain date
/// (`YYYY-MM-DD`, midnight UTC). `None` for anything else or a time before 1970. Never
/// panics, whatever the text (it comes from query parameters).
pub fn parse(s: &str) -> Option<Timestamp> {
    let s = cut_fraction(s.trim());
    let ts = if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        ts
    } else if s.len() > 10 {
        // No zone: UTC. (A date-time with a zone that failed above fails here too.)
        TimeZone::UTC
            .to_timestamp(s.parse::<DateTime>().ok()?)
            .ok()?
    } else {
        TimeZone::UTC
            .to_timestamp(
                s.parse::<Date>()
                    .ok()?
                    .to_datetime(jiff::civil::Time::midnight()),
            )
            .ok()?
    };
    u64::try_from(ts.as_millisecond())
        .ok()
        .map(Timestamp::from_millis)
}

/// Cuts the digits of a fraction of a second after the ninth (.NET writes seven, some
/// clients more); the result is truncated to milliseconds anyway.
fn cut_fraction(s: &str) -> std::borrow::Cow<'_, str> {
    let Some(dot) = s.find('.') else {
        return s.into();
    };
    let digits = s[dot + 1..].bytes().take_while(u8::is_ascii_digit).count();
    if digits <= MAX_FRACTION_DIGITS {
        return s.into();
    }
    let keep = dot + 1 + MAX_FRACTION_DIGITS;
    format!("{}{}", &s[..keep], &s[dot + 1 + digits..]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_accepts_client_formats() {
        for ms in [0u64, 951_782_400_000, 1_709_164_800_999, 4_102_444_799_000] {
            let t = Timestamp::from_millis(ms);
            assert_eq!(parse(&format(t)), Some(t), "{}", format(t));
        }
        assert_eq!(
            format(Timestamp::from_millis(951_782_400_000)),
            "2000-02-29T00:00:00.000Z"
        );
        // Python's strftime('%Y-%m-%dT%H:%M:%S.%fZ') and .NET's seven-digit fractions.
        assert!(parse("2024-01-01T00:00:00.000000Z").is_some());
        assert!(parse("2018-02-28T05:18:49.1234567Z").is_some());
        assert_eq!(parse("2018-02-28T05:18:49Z"), parse("2018-02-28 05:18:49"));
        for bad in [
            "",
            "2024-13-01",
            "2024-01-01X",
            "2024-01-01T25:00:00Z",
            "1969-12-31",
            "é",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(
            parse("2024-01-01T01:00:00.123+0100"),
            parse("2024-01-01T00:00:00.123Z")
        );
        assert_eq!(
            parse("2024-01-01T01:00:00+01"),
            parse("2024-01-01T00:00:00Z")
        );
        assert_eq!(
            parse("2024-01-01T00:00:00.123456789012Z"),
            parse("2024-01-01T00:00:00.123Z")
        );
    }

    /// Input from a query parameter: long numeric zone offsets, huge years, long fractions
    /// and odd bytes give `None` or a value, never a panic (before the fix,
    /// `+99999999999999999` overflowed `zh * 3600`: a panic in debug builds).
    #[test]
    fn extreme_input_never_panics() {
        for bad in [
            "2024-01-01T00:00:00+99999999999999999",
            "2024-01-01T00:00:00-9223372036854775807",
            "2024-01-01T00:00:00+9999999999:99",
            "9999999999-01-01",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00.",
            "2024-01-01T\u{0}",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert!(parse(&format!("2024-01-01T00:00:00.{}Z", "9".repeat(10_000))).is_some());
        assert_eq!(
            format(Timestamp::from_millis(u64::MAX)),
            "9999-12-30T22:00:00.999Z"
        );
    }
}
