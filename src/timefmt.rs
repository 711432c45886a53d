//! Instants as nanoseconds since the Unix epoch, and the few text forms the vendors use.
//!
//! Parsing and printing are jiff's (RFC 3339 with 0–9 fraction digits, `Z` or an offset); what
//! is here is the agent's one representation of an instant (`i64` nanoseconds) and its text forms.

use jiff::fmt::temporal::{DateTimeParser, DateTimePrinter};
use jiff::Timestamp;

/// Nanoseconds since 1970-01-01T00:00:00Z. Covers the years 1677–2262.
pub type Nanos = i64;

pub const NANOS_PER_MS: i64 = 1_000_000;
pub const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Parses an RFC 3339 timestamp (`2024-10-18T14:10:04.123456789Z`, `...+02:00`; a space is
/// accepted for `T`, and 0–9 fraction digits) into nanoseconds: jiff's parser, and `None` for an
/// instant nanoseconds cannot hold.
pub fn parse_rfc3339(s: &str) -> Option<Nanos> {
    static PARSER: DateTimeParser = DateTimeParser::new();
    if !rfc3339_shape(s.as_bytes()) {
        return None;
    }
    let t = PARSER.parse_timestamp(s).ok()?;
    i64::try_from(t.as_nanosecond()).ok()
}

/// Whether the text has RFC 3339's shape, which jiff's parser (ISO 8601 and Temporal's forms)
/// is wider than: `T`, `t` or a space between date and time, a `.` before the fraction, and `Z`
/// or a `±hh:mm` offset under 24 hours with nothing after it. jiff checks the rest.
fn rfc3339_shape(b: &[u8]) -> bool {
    let zone = match b {
        [.., b'Z' | b'z'] => b.len() - 1,
        // jiff allows offsets up to 25:59; RFC 3339's hours are those of a day.
        [.., b'+' | b'-', h1, h2, b':', _, _] if [*h1, *h2] <= *b"23" => b.len() - 6,
        _ => return false,
    };
    zone >= 19
        && matches!(b[10], b'T' | b't' | b' ')
        && (zone == 19 || b[19] == b'.' && b[20..zone].iter().all(u8::is_ascii_digit))
}

/// Appends an instant in UTC with `digits` fraction digits (truncated), as jiff prints it.
fn push(out: &mut Vec<u8>, t: Nanos, digits: Option<u8>) {
    let ts = Timestamp::from_nanosecond(i128::from(t))
        .expect("every i64 of nanoseconds is in jiff's range");
    DateTimePrinter::new()
        .precision(digits)
        .print_timestamp(&ts, out)
        .expect("printing into a Vec does not fail");
}

/// Appends `2024-10-18T14:10:04.123Z` (milliseconds, truncated): the native event's `time`.
pub fn push_rfc3339_ms(out: &mut Vec<u8>, t: Nanos) {
    push(out, t, Some(3))
}

/// The text the push helpers wrote: ASCII digits and punctuation only.
fn ascii(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("timestamps are ASCII")
}

/// `2024-10-18T14:10:04.123Z`.
pub fn rfc3339_ms(t: Nanos) -> String {
    let mut s = Vec::with_capacity(24);
    push_rfc3339_ms(&mut s, t);
    ascii(s)
}

/// `2024-10-18T14:10:04.123456789Z`: all nine fraction digits, for query parameters.
pub fn rfc3339_nanos(t: Nanos) -> String {
    let mut s = Vec::with_capacity(30);
    push(&mut s, t, Some(9));
    ascii(s)
}

/// `2024-10-18T14:10:04Z` when whole seconds, otherwise milliseconds: for people (state output).
pub fn human(t: Nanos) -> String {
    if t.rem_euclid(NANOS_PER_SEC) == 0 {
        let mut s = Vec::with_capacity(20);
        push(&mut s, t, Some(0));
        ascii(s)
    } else {
        rfc3339_ms(t)
    }
}

/// The wall clock now — or, for tests, the clock `AUDITSHIP_TEST_CLOCK` gives
/// ([`test_clock`]).
pub fn now() -> Nanos {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let wall = d.as_nanos().min(i64::MAX as u128) as i64;
    match test_clock() {
        Some((anchor, rate)) => anchor + ((wall - anchor) as f64 * rate) as i64,
        None => wall,
    }
}

/// `AUDITSHIP_TEST_CLOCK=ANCHOR_NS,RATE`: event time runs `RATE` times as fast as the wall
/// clock from `ANCHOR_NS` on (the emulator's `Clock` in tests, so that live traffic passes in
/// a fraction of its span). The timers — polls, retries, timeouts — stay on the real clock.
/// Read once; a value that does not parse is ignored (and said so at start).
pub fn test_clock() -> Option<(Nanos, f64)> {
    static CLOCK: std::sync::OnceLock<Option<(Nanos, f64)>> = std::sync::OnceLock::new();
    *CLOCK.get_or_init(|| {
        let v = std::env::var("AUDITSHIP_TEST_CLOCK").ok()?;
        let (a, r) = v.split_once(',')?;
        let (anchor, rate) = (a.trim().parse().ok()?, r.trim().parse::<f64>().ok()?);
        (rate.is_finite() && rate > 0.0).then_some((anchor, rate))
    })
}

/// Rounds down to a multiple of `unit` nanoseconds.
pub fn floor_to(t: Nanos, unit: i64) -> Nanos {
    t - t.rem_euclid(unit)
}

/// A duration in seconds as the `state` table prints it: its two largest units, without spaces
/// (`5y6mo`, `3d4h`, `19h33m`, `2s`); years of 365 days, months of 30. Negative counts as 0.
pub fn short_duration(secs: i64) -> String {
    const UNITS: [(i64, &str); 6] = [
        (365 * 86_400, "y"),
        (30 * 86_400, "mo"),
        (86_400, "d"),
        (3_600, "h"),
        (60, "m"),
        (1, "s"),
    ];
    let left = secs.max(0);
    let first = UNITS
        .iter()
        .position(|(size, _)| left >= *size)
        .unwrap_or(UNITS.len() - 1);
    let (size, name) = UNITS[first];
    let mut out = format!("{}{name}", left / size);
    if let Some((next, next_name)) = UNITS.get(first + 1) {
        let n = (left % size) / next;
        if n > 0 {
            out.push_str(&format!("{n}{next_name}"));
        }
    }
    out
}

/// Saturating conversion of a duration to nanoseconds.
pub fn dur_nanos(d: std::time::Duration) -> i64 {
    d.as_nanos().min(i64::MAX as u128) as i64
}

#[cfg(test)]
mod tests {

    #[test]
    fn short_durations_take_two_units() {
        use super::short_duration as d;
        let (m, h, day) = (60, 3600, 86_400);
        assert_eq!(d(0), "0s");
        assert_eq!(d(2), "2s");
        assert_eq!(d(-5), "0s");
        assert_eq!(d(19 * h + 33 * m + 54), "19h33m");
        assert_eq!(d(3 * day + 4 * h + 5), "3d4h");
        assert_eq!(d(3 * day + 5), "3d");
        assert_eq!(d(5 * 365 * day + 6 * 30 * day + 19 * h), "5y6mo");
        assert_eq!(d(m + 1), "1m1s");
        assert_eq!(d(40 * day), "1mo10d");
    }

    use super::*;

    #[test]
    fn parses_varying_fraction_digits() {
        let base = parse_rfc3339("2017-10-11T16:49:52Z").unwrap();
        assert_eq!(
            parse_rfc3339("2017-10-11T16:49:52.758191Z").unwrap() - base,
            758_191_000
        );
        assert_eq!(
            parse_rfc3339("2017-10-13T20:54:43.14061Z").unwrap() % NANOS_PER_SEC,
            140_610_000
        );
        assert_eq!(
            parse_rfc3339("2017-10-11T16:49:52.7Z").unwrap() - base,
            700_000_000
        );
        assert_eq!(
            parse_rfc3339("2017-10-11T16:49:52.123456789Z").unwrap() - base,
            123_456_789
        );
        assert_eq!(base, 1_507_740_592 * NANOS_PER_SEC);
    }

    #[test]
    fn parses_offsets_and_rejects_garbage() {
        assert_eq!(
            parse_rfc3339("2024-10-18T16:10:04.123+02:00"),
            parse_rfc3339("2024-10-18T14:10:04.123Z")
        );
        assert_eq!(
            parse_rfc3339("2024-10-18T09:10:04-05:00"),
            parse_rfc3339("2024-10-18T14:10:04Z")
        );
        for bad in [
            "",
            "2024-10-18",
            "2024-13-01T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "2024-10-18T24:00:00Z",
            "2024-10-18T14:10:04.Z",
            "2024-10-18T14:10:04.1234567890Z",
            "2024-10-18T14:10:04",
            "2024-10-18T14:10:04Zjunk",
            "2024-1x-18T14:10:04Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_round_trip_and_agree_with_jiff() {
        for s in [
            "1970-01-01T00:00:00.000Z",
            "2000-02-29T23:59:59.999Z",
            "2024-10-18T14:10:04.123Z",
            "2262-04-11T23:47:16.854Z",
            "1969-12-31T23:59:59.999Z",
        ] {
            let t = parse_rfc3339(s).unwrap();
            assert_eq!(rfc3339_ms(t), s);
            let j: jiff::Timestamp = s.parse().unwrap();
            assert_eq!(j.as_nanosecond(), i128::from(t));
        }
        let t = parse_rfc3339("2017-10-11T16:49:52.758191Z").unwrap();
        assert_eq!(rfc3339_nanos(t), "2017-10-11T16:49:52.758191000Z");
        assert_eq!(parse_rfc3339(&rfc3339_nanos(t - 1)), Some(t - 1));
        assert_eq!(
            human(parse_rfc3339("2024-01-01T00:00:00Z").unwrap()),
            "2024-01-01T00:00:00Z"
        );
    }

    /// RFC 3339 in UTC with milliseconds (truncated), as jiff writes it.
    fn jiff_ms(t: Nanos) -> String {
        format!(
            "{:.3}",
            jiff::Timestamp::from_nanosecond(i128::from(t)).unwrap()
        )
    }

    #[test]
    fn jiff_writes_milliseconds_as_rfc3339_with_z() {
        // The reference the two tests below compare with, pinned to known text.
        assert_eq!(jiff_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(jiff_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(jiff_ms(1_999_999), "1970-01-01T00:00:00.001Z");
    }

    /// The writer and the parser against jiff, over the instants nanoseconds can hold
    /// (1677 to 2262).
    #[test]
    fn formats_and_parses_random_instants_as_jiff_does() {
        let mut rng = fastrand::Rng::with_seed(3);
        let (lo, hi) = (-9_223_372_035i64, 9_223_372_035i64);
        for _ in 0..20_000 {
            let t = rng.i64(lo..=hi) * NANOS_PER_SEC + rng.i64(0..NANOS_PER_SEC);
            let want = jiff_ms(t);
            assert_eq!(rfc3339_ms(t), want);
            assert_eq!(
                parse_rfc3339(&rfc3339_nanos(t)),
                Some(t),
                "{}",
                rfc3339_nanos(t)
            );
            let ms = t - t.rem_euclid(NANOS_PER_MS);
            assert_eq!(parse_rfc3339(&want), Some(ms), "{want}");
        }
    }

    /// Forms jiff's parser accepts and RFC 3339 (and the hand-written parser jiff replaced, by
    /// a proptest comparison in the commit that replaced it) does not.
    #[test]
    fn refuses_what_only_iso_8601_or_temporal_allows() {
        for bad in [
            "2024-10-18T14:10:04+0000",
            "2024-10-18T14:10:04+02",
            "2024-10-18T14:10:04+24:00",
            "2024-10-18T14:10:04-25:00",
            "2024-10-18T14:10:04,5Z",
            "2024-10-18T14:10:04Z[UTC]",
            "2024-10-18T16:10:04+02:00[Europe/Paris]",
            "20241018T141004Z",
        ] {
            assert!(
                bad.parse::<jiff::Timestamp>().is_ok(),
                "jiff alone takes {bad}"
            );
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert_eq!(
            parse_rfc3339("2024-10-18t14:10:04.5z"),
            parse_rfc3339("2024-10-18 14:10:04.500Z")
        );
        assert_eq!(
            parse_rfc3339("2024-10-18T23:59:60Z"),
            parse_rfc3339("2024-10-18T23:59:59Z")
        );
    }

    #[test]
    fn floors() {
        assert_eq!(floor_to(1_999, 1_000), 1_000);
        assert_eq!(floor_to(-1, 1_000), -1_000);
    }
}
