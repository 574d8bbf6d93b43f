//! ISO-8601 / RFC 3339 text for [`Timestamp`]s, as the Durable Functions HTTP API writes and
//! reads them (`2024-01-01T00:00:00.000Z`). Pure date arithmetic: no clock is read.
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

use crate::Timestamp;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Formats a timestamp as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, milliseconds).
pub fn format(t: Timestamp) -> String {
    let ms = t.as_millis();
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX / 2);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60,
        ms % 1000
    )
}

fn num(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses an RFC 3339 date-time (`T` or space separator; fraction of any length, truncated to
/// milliseconds; `Z`, `+hh:mm` or `-hh:mm`; no zone means UTC) or a plain date
/// (`YYYY-MM-DD`, midnight UTC). `None` for anything else or a time before 1970.
pub fn parse(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    let date = s.get(..10)?;
    let mut parts = date.split('-');
    let (y, mo, d) = (
        num(parts.next()?)?,
        num(parts.next()?)?,
        num(parts.next()?)?,
    );
    if parts.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let rest = s.get(10..)?;
    let mut millis: i64 = 0;
    let mut offset_secs: i64 = 0;
    if !rest.is_empty() {
        let rest = rest.strip_prefix(['T', 't', ' '])?;
        let (hms, tail) = rest.split_at(rest.find(['.', 'Z', 'z', '+', '-']).unwrap_or(rest.len()));
        let mut hp = hms.split(':');
        let (h, mi) = (num(hp.next()?)?, num(hp.next()?)?);
        let sec = match hp.next() {
            Some(x) => num(x)?,
            None => 0,
        };
        if hp.next().is_some() || h > 23 || mi > 59 || sec > 60 {
            return None;
        }
        let mut tail = tail;
        if let Some(frac) = tail.strip_prefix('.') {
            let end = frac
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(frac.len());
            let digits = frac.get(..end)?;
            if digits.is_empty() {
                return None;
            }
            let first3: String = digits.chars().chain("000".chars()).take(3).collect();
            millis = num(&first3)?;
            tail = frac.get(end..)?;
        }
        match tail {
            "" | "Z" | "z" => {}
            _ => {
                let sign = match tail.get(..1)? {
                    "+" => 1,
                    "-" => -1,
                    _ => return None,
                };
                let zone = tail.get(1..)?;
                let (zh, zm) = match zone.split_once(':') {
                    Some((a, b)) => (num(a)?, num(b)?),
                    None if zone.len() == 4 => (num(zone.get(..2)?)?, num(zone.get(2..)?)?),
                    None => (num(zone)?, 0),
                };
                offset_secs = sign * (zh * 3600 + zm * 60);
            }
        }
        millis += ((h * 3600 + mi * 60 + sec) - offset_secs) * 1000;
    }
    let total = days.checked_mul(86_400_000)?.checked_add(millis)?;
    u64::try_from(total).ok().map(Timestamp::from_millis)
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
    }
}
