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

/// The wall clock now.
pub fn now() -> Nanos {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_nanos().min(i64::MAX as u128) as i64
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

    /// The hand-written parser and writer jiff replaced, kept for one commit as the oracle of
    /// `jiff_agrees_with_the_hand_written_code`.
    mod old {
        use super::super::{Nanos, NANOS_PER_MS, NANOS_PER_SEC};
        /// Days since the epoch of a proleptic Gregorian date (Howard Hinnant's algorithm).
        fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
            let y = if m <= 2 { y - 1 } else { y };
            let era = if y >= 0 { y } else { y - 399 } / 400;
            let yoe = y - era * 400;
            let mp = (m as i64 + 9) % 12;
            let doy = (153 * mp + 2) / 5 + d as i64 - 1;
            let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
            era * 146_097 + doe - 719_468
        }

        /// The date of a day number since the epoch.
        fn civil_from_days(z: i64) -> (i64, u32, u32) {
            let z = z + 719_468;
            let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
            let doe = z - era * 146_097;
            let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            let y = yoe + era * 400;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
            let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
            (if m <= 2 { y + 1 } else { y }, m, d)
        }

        fn digits(b: &[u8]) -> Option<u32> {
            let mut v: u32 = 0;
            for &c in b {
                if !c.is_ascii_digit() {
                    return None;
                }
                v = v * 10 + (c - b'0') as u32;
            }
            Some(v)
        }

        /// Parses an RFC 3339 timestamp (`2024-10-18T14:10:04.123456789Z`, `...+02:00`; a space is
        /// accepted for `T`, and 0–9 fraction digits) into nanoseconds.
        pub fn parse_rfc3339(s: &str) -> Option<Nanos> {
            let b = s.as_bytes();
            let head: &[u8; 20] = b.first_chunk()?;
            if head[4] != b'-' || head[7] != b'-' || head[13] != b':' || head[16] != b':' {
                return None;
            }
            if !matches!(head[10], b'T' | b't' | b' ') {
                return None;
            }
            // Two digits at a fixed place; every event's time goes through here.
            let two = |at: usize| {
                let (tens, units) = (head[at].wrapping_sub(b'0'), head[at + 1].wrapping_sub(b'0'));
                (tens < 10 && units < 10).then_some(tens as u32 * 10 + units as u32)
            };
            let year = (two(0)? * 100 + two(2)?) as i64;
            let month = two(5)?;
            let day = two(8)?;
            let hour = two(11)?;
            let min = two(14)?;
            let sec = two(17)?;
            if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
                return None;
            }
            if hour > 23 || min > 59 || sec > 60 {
                return None;
            }
            let mut i = 19;
            let mut frac: i64 = 0;
            if b[i] == b'.' {
                i += 1;
                let start = i;
                while let Some(d) = b.get(i).map(|c| c.wrapping_sub(b'0')).filter(|d| *d < 10) {
                    frac = frac * 10 + d as i64;
                    i += 1;
                    if i - start > 9 {
                        return None;
                    }
                }
                let n = i - start;
                if n == 0 {
                    return None;
                }
                const SCALE: [i64; 10] = [
                    0,
                    100_000_000,
                    10_000_000,
                    1_000_000,
                    100_000,
                    10_000,
                    1_000,
                    100,
                    10,
                    1,
                ];
                frac *= SCALE[n];
            }
            let offset_secs: i64 = match b.get(i)? {
                b'Z' | b'z' if i + 1 == b.len() => 0,
                sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
                    let oh = digits(&b[i + 1..i + 3])? as i64;
                    let om = digits(&b[i + 4..i + 6])? as i64;
                    if oh > 23 || om > 59 {
                        return None;
                    }
                    let o = oh * 3600 + om * 60;
                    if *sign == b'+' {
                        o
                    } else {
                        -o
                    }
                }
                _ => return None,
            };
            let days = days_from_civil(year, month, day);
            let secs = days * 86_400 + hour as i64 * 3600 + min as i64 * 60 + sec.min(59) as i64
                - offset_secs;
            secs.checked_mul(NANOS_PER_SEC)?.checked_add(frac)
        }

        fn days_in_month(y: i64, m: u32) -> u32 {
            match m {
                1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
                4 | 6 | 9 | 11 => 30,
                _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
                _ => 28,
            }
        }

        /// Seconds since the epoch of a civil UTC date and time (the Domo parser, before it applies
        /// the zone's offset). Seconds, not nanoseconds: a year outside 1678–2261, which a damaged
        /// page can hold, has no `Nanos`, and the caller finds that out with a checked multiply.
        pub fn civil_seconds(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
            days_from_civil(y, mo, d) * 86_400 + h as i64 * 3600 + mi as i64 * 60 + s as i64
        }

        /// `YYYY-MM-DDTHH:MM:SS` of an instant, in a fixed array: built in registers and appended in
        /// one copy, as it is for every event written.
        fn date_time(t: Nanos) -> [u8; 19] {
            let secs = t.div_euclid(NANOS_PER_SEC);
            let days = secs.div_euclid(86_400);
            let sod = secs.rem_euclid(86_400) as u32;
            let (y, m, d) = civil_from_days(days);
            let y = y.clamp(0, 9999) as u32;
            let mut a = *b"0000-00-00T00:00:00";
            for (at, v) in [
                (0, y / 100),
                (2, y % 100),
                (5, m),
                (8, d),
                (11, sod / 3600),
                (14, sod / 60 % 60),
                (17, sod % 60),
            ] {
                a[at] = b'0' + (v / 10) as u8;
                a[at + 1] = b'0' + (v % 10) as u8;
            }
            a
        }

        fn push_date_time(out: &mut Vec<u8>, t: Nanos) {
            out.extend_from_slice(&date_time(t));
        }

        /// Appends `2024-10-18T14:10:04.123Z` (milliseconds, truncated): the native event's `time`.
        pub fn push_rfc3339_ms(out: &mut Vec<u8>, t: Nanos) {
            TimeWriter::default().push_rfc3339_ms(out, t)
        }

        /// Writes instants as [`push_rfc3339_ms`] does, for many of them, most on the same day as the
        /// one before (a page's events): the date is worked out once per day, not for every instant.
        #[derive(Default)]
        pub struct TimeWriter {
            /// The day (since the epoch) whose `YYYY-MM-DDT` is `date`, if any yet.
            day: Option<i64>,
            date: [u8; 11],
        }

        impl TimeWriter {
            /// Appends `2024-10-18T14:10:04.123Z` (milliseconds, truncated).
            pub fn push_rfc3339_ms(&mut self, out: &mut Vec<u8>, t: Nanos) {
                let secs = t.div_euclid(NANOS_PER_SEC);
                let day = secs.div_euclid(86_400);
                if self.day != Some(day) {
                    self.date.copy_from_slice(&date_time(t)[..11]);
                    self.day = Some(day);
                }
                let sod = secs.rem_euclid(86_400) as u32;
                let ms = (t.rem_euclid(NANOS_PER_SEC) / NANOS_PER_MS) as u32;
                let mut a = [0u8; 24];
                a[..11].copy_from_slice(&self.date);
                a[11..].copy_from_slice(&[
                    b'0' + (sod / 36_000) as u8,
                    b'0' + (sod / 3600 % 10) as u8,
                    b':',
                    b'0' + (sod / 600 % 6) as u8,
                    b'0' + (sod / 60 % 10) as u8,
                    b':',
                    b'0' + (sod % 60 / 10) as u8,
                    b'0' + (sod % 10) as u8,
                    b'.',
                    b'0' + (ms / 100) as u8,
                    b'0' + (ms / 10 % 10) as u8,
                    b'0' + (ms % 10) as u8,
                    b'Z',
                ]);
                out.extend_from_slice(&a);
            }
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
            push_date_time(&mut s, t);
            let f = t.rem_euclid(NANOS_PER_SEC);
            s.extend_from_slice(format!(".{f:09}Z").as_bytes());
            ascii(s)
        }

        /// `2024-10-18T14:10:04Z` when whole seconds, otherwise milliseconds: for people (state output).
        pub fn human(t: Nanos) -> String {
            if t.rem_euclid(NANOS_PER_SEC) == 0 {
                let mut s = Vec::with_capacity(20);
                push_date_time(&mut s, t);
                s.push(b'Z');
                ascii(s)
            } else {
                rfc3339_ms(t)
            }
        }
    }
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
    use proptest::prelude::prop;
    use proptest::prelude::Strategy;
    use proptest::prop_oneof;
    use proptest::strategy::Just;

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

    /// One writer kept across instants, as events are written: runs on one day, and jumps to
    /// any other, against jiff.
    #[test]
    fn a_writer_kept_across_instants_writes_each_as_jiff_does() {
        let mut rng = fastrand::Rng::with_seed(8);
        let mut w = old::TimeWriter::default();
        let mut t = 0;
        for i in 0..20_000 {
            t = if i % 10 == 0 {
                rng.i64(-9_223_372_035..=9_000_000_000) * NANOS_PER_SEC
            } else {
                t + rng.i64(0..2 * 3600 * NANOS_PER_SEC)
            };
            let mut out = Vec::new();
            w.push_rfc3339_ms(&mut out, t);
            let want = jiff_ms(t);
            assert_eq!(String::from_utf8(out).unwrap(), want, "{t}");
        }
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

    /// Text in and around the forms the vendors send (Domino's data-source audit, Wasabi AiR),
    /// and the ways it can be wrong: the fields' values one past their range, 0–10 fraction
    /// digits, each separator and zone form RFC 3339 and ISO 8601 allow.
    fn near_rfc3339() -> impl Strategy<Value = String> {
        let sep = prop::sample::select(vec!["T", "t", " ", "x", "_"]);
        let zone = prop_oneof![
            Just("Z".to_string()),
            Just("z".to_string()),
            Just(String::new()),
            Just("Zjunk".to_string()),
            Just("UTC".to_string()),
            (
                prop::sample::select(vec!['+', '-', '\u{2212}']),
                0u32..26,
                0u32..62
            )
                .prop_map(|(sign, h, m)| format!("{sign}{h:02}:{m:02}")),
            (prop::sample::select(vec!['+', '-']), 0u32..26, 0u32..62)
                .prop_map(|(sign, h, m)| format!("{sign}{h:02}{m:02}")),
            (prop::sample::select(vec!['+', '-']), 0u32..26)
                .prop_map(|(sign, h)| format!("{sign}{h:02}")),
            Just("+02:00[Europe/Paris]".to_string()),
            Just("Z[UTC]".to_string()),
        ];
        let frac = prop_oneof![
            Just(String::new()),
            (0usize..11).prop_map(|n| format!(".{}", &"1234567890"[..n])),
            (1usize..10).prop_map(|n| format!(",{}", &"987654321"[..n])),
        ];
        (
            (0u32..10_000, 0u32..14, 0u32..33),
            (0u32..26, 0u32..62, 0u32..62),
            sep,
            frac,
            zone,
        )
            .prop_map(|((y, mo, d), (h, mi, sec), sep, frac, zone)| {
                format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{sec:02}{frac}{zone}")
            })
    }

    /// The vendors' own samples (../shared/vendor-apis.md, ../shared/seeds/).
    const VENDOR_SAMPLES: [&str; 6] = [
        "2023-08-23T21:40:21.669Z",
        "2017-10-11T16:49:52.758191Z",
        "2017-10-13T20:54:43.14061Z",
        "2026-10-23T14:08:21.6625996Z",
        "2024-10-18T16:10:04.123+02:00",
        "2024-10-18T09:10:04-05:00",
    ];

    #[test]
    fn jiff_parses_the_vendor_samples_as_the_hand_written_parser_did() {
        for s in VENDOR_SAMPLES {
            assert_eq!(parse_rfc3339(s), old::parse_rfc3339(s), "{s}");
            assert!(parse_rfc3339(s).is_some(), "{s}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 20_000, ..Default::default() })]

        #[test]
        fn jiff_parses_as_the_hand_written_parser_did(s in near_rfc3339()) {
            proptest::prop_assert_eq!(parse_rfc3339(&s), old::parse_rfc3339(&s), "{}", s);
        }

        #[test]
        fn jiff_writes_as_the_hand_written_writer_did(
            secs in -9_223_372_035i64..=9_223_372_035,
            sub in 0i64..NANOS_PER_SEC,
            whole in proptest::prelude::any::<bool>(),
        ) {
            let t = secs * NANOS_PER_SEC + if whole { 0 } else { sub };
            proptest::prop_assert_eq!(rfc3339_ms(t), old::rfc3339_ms(t));
            proptest::prop_assert_eq!(rfc3339_nanos(t), old::rfc3339_nanos(t));
            proptest::prop_assert_eq!(human(t), old::human(t));
        }

        /// Domo's wall-clock time at an offset (`resolve`): jiff's `Offset::to_timestamp` against
        /// the civil seconds it replaced, for any year a page can hold and any offset.
        #[test]
        fn jiff_places_a_wall_clock_at_an_offset_as_civil_seconds_did(
            (y, mo, d) in (0i16..=9999, 1i8..=12, 1i8..=31),
            (h, mi, sec) in (0i8..24, 0i8..60, 0i8..60),
            off in -93_599i32..=93_599,
        ) {
            let Ok(local) = jiff::civil::DateTime::new(y, mo, d, h, mi, sec, 0) else {
                return Ok(());
            };
            let o = jiff::tz::Offset::from_seconds(off).unwrap();
            let new = o
                .to_timestamp(local)
                .ok()
                .and_then(|t| i64::try_from(t.as_nanosecond()).ok());
            let wall = old::civil_seconds(y.into(), mo as u32, d as u32, h as u32, mi as u32, sec as u32);
            let was = wall.checked_sub(i64::from(off)).and_then(|s| s.checked_mul(NANOS_PER_SEC));
            proptest::prop_assert_eq!(new, was);
        }
    }

    /// Domo's zones around their daylight-saving changes: every 7th wall-clock second of the days
    /// of the changes, placed by jiff and by civil seconds at each offset the time can have.
    #[test]
    fn jiff_places_wall_clocks_around_dst_as_civil_seconds_did() {
        for zone in [
            "Europe/Paris",
            "America/Los_Angeles",
            "America/Phoenix",
            "Australia/Lord_Howe",
            "UTC",
        ] {
            let tz = jiff::tz::TimeZone::get(zone).unwrap();
            for day in [
                "2024-03-10",
                "2024-03-31",
                "2024-10-06",
                "2024-10-27",
                "2024-11-03",
                "2024-04-07",
            ] {
                let d: jiff::civil::Date = day.parse().unwrap();
                for s in (0..86_400).step_by(7) {
                    let local = d.to_datetime(
                        jiff::civil::Time::new(
                            (s / 3600) as i8,
                            (s / 60 % 60) as i8,
                            (s % 60) as i8,
                            0,
                        )
                        .unwrap(),
                    );
                    let offsets = match tz.to_ambiguous_timestamp(local).offset() {
                        jiff::tz::AmbiguousOffset::Unambiguous { offset } => vec![offset],
                        jiff::tz::AmbiguousOffset::Fold { before, after }
                        | jiff::tz::AmbiguousOffset::Gap { before, after } => vec![before, after],
                    };
                    for o in offsets {
                        let new =
                            i64::try_from(o.to_timestamp(local).unwrap().as_nanosecond()).ok();
                        let wall = old::civil_seconds(
                            local.year().into(),
                            local.month() as u32,
                            local.day() as u32,
                            local.hour() as u32,
                            local.minute() as u32,
                            local.second() as u32,
                        );
                        let was = (wall - i64::from(o.seconds())).checked_mul(NANOS_PER_SEC);
                        assert_eq!(new, was, "{zone} {local}");
                    }
                }
            }
        }
    }

    #[test]
    fn floors() {
        assert_eq!(floor_to(1_999, 1_000), 1_000);
        assert_eq!(floor_to(-1, 1_000), -1_000);
    }
}
