//! Instants as nanoseconds since the Unix epoch, and the few text forms the vendors use.
//!
//! Parsing and printing are hand-written: they sit on the per-event hot path, accept exactly what
//! the vendors send (RFC 3339 with 0–9 fraction digits, `Z` or an offset), and need no allocation.

/// Nanoseconds since 1970-01-01T00:00:00Z. Covers the years 1677–2262.
pub type Nanos = i64;

pub const NANOS_PER_MS: i64 = 1_000_000;
pub const NANOS_PER_SEC: i64 = 1_000_000_000;

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
    let secs =
        days * 86_400 + hour as i64 * 3600 + min as i64 * 60 + sec.min(59) as i64 - offset_secs;
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

    /// One writer kept across instants, as events are written: runs on one day, and jumps to
    /// any other, against jiff.
    #[test]
    fn a_writer_kept_across_instants_writes_each_as_jiff_does() {
        let mut rng = fastrand::Rng::with_seed(8);
        let mut w = TimeWriter::default();
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

    #[test]
    fn floors() {
        assert_eq!(floor_to(1_999, 1_000), 1_000);
        assert_eq!(floor_to(-1, 1_000), -1_000);
    }
}
