//! What a vendor's times say about its clock: entries placed outside the range they were asked
//! for mean a zone (Domo's `time_zone`) or clock mismatch. [`Offset`] gathers, over a poll or a
//! check, how far off they are, so that one line can say it with a figure ("7h earlier") instead
//! of one line per entry.

use crate::timefmt::{Nanos, NANOS_PER_SEC};

const MINUTE: Nanos = 60 * NANOS_PER_SEC;
const HOUR: Nanos = 60 * MINUTE;

/// How much earlier than their true instant a vendor's entries were placed, gathered from
/// answers that held entries outside the range `[lo, hi]` asked for. An entry placed at `s` out of
/// a range `[lo, hi]` was `lo - s` to `hi - s` early; the offset all of them share is in the
/// intersection of those intervals.
#[derive(Debug, Default, Clone)]
pub struct Offset {
    /// Entries outside their range.
    pub outside: u64,
    /// The intersection so far (`lo <= hi` while the entries agree).
    range: Option<(Nanos, Nanos)>,
    /// The largest distance of an entry from its range, for when they do not agree.
    farthest: Nanos,
}

impl Offset {
    /// Takes one answer to `[lo, hi)`. Only an answer that holds an entry outside `[lo, hi]`
    /// (beyond a unit, `unit`, of rounding) says anything; then every entry of it does.
    pub fn answer<I>(&mut self, times: I, lo: Nanos, hi: Nanos, unit: Nanos)
    where
        I: IntoIterator<Item = Nanos>,
        I::IntoIter: Clone,
    {
        let times = times.into_iter();
        let outside = times
            .clone()
            .filter(|&t| t < lo || t > hi.saturating_add(unit))
            .count() as u64;
        if outside == 0 {
            return;
        }
        self.outside += outside;
        for t in times {
            // Times are floored to `unit` by the vendor: the true one may be up to a unit later.
            let (a, b) = (
                lo.saturating_sub(t).saturating_sub(unit),
                hi.saturating_sub(t),
            );
            self.range = Some(match self.range {
                None => (a, b),
                Some((l, h)) => (l.max(a), h.min(b)),
            });
            let d = if t < lo { lo - t } else { t.saturating_sub(hi) };
            self.farthest = self.farthest.max(d);
        }
    }

    /// The offset, in nanoseconds (positive: entries placed earlier than they happened), if any
    /// entry was outside its range: the whole hour, else the quarter of an hour (every zone's
    /// offset is one), that every entry agrees on, closest to the middle; `None` with `exact =
    /// false` when they agree on none.
    pub fn estimate(&self) -> Option<(Nanos, bool)> {
        let (lo, hi) = self.range?;
        if lo <= hi {
            let mid = lo + (hi - lo) / 2;
            for step in [HOUR, 15 * MINUTE] {
                let near = (mid as f64 / step as f64).round() as Nanos * step;
                let candidates = [near, near - step, near + step];
                if let Some(best) = candidates
                    .into_iter()
                    .filter(|c| (lo..=hi).contains(c))
                    .min_by_key(|c| (c - mid).abs())
                {
                    return Some((best, true));
                }
            }
            return Some((mid / MINUTE * MINUTE, true));
        }
        Some((self.farthest, false))
    }

    /// "events are 7h earlier than the ranges asked for", or `None` when all were inside.
    pub fn describe(&self) -> Option<String> {
        let (off, exact) = self.estimate()?;
        let (dir, mag) = if off >= 0 {
            ("earlier", off)
        } else {
            ("later", -off)
        };
        let up_to = if exact { "" } else { "up to " };
        Some(format!(
            "{} events were {up_to}{} {dir} than the ranges asked for",
            self.outside,
            span(mag)
        ))
    }
}

/// `7h`, `5h30m`, `45m`, `90s`.
pub fn span(d: Nanos) -> String {
    let secs = d / NANOS_PER_SEC;
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, 0) => format!("{h}h{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// `UTC-7`, `UTC+5:30`, `UTC`, for an offset from UTC in seconds.
pub fn utc_offset(secs: i64) -> String {
    if secs == 0 {
        return "UTC".into();
    }
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.abs();
    let (h, m) = (a / 3600, a % 3600 / 60);
    if m == 0 {
        format!("UTC{sign}{h}")
    } else {
        format!("UTC{sign}{h}:{m:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Nanos = NANOS_PER_SEC;

    #[test]
    fn entries_seven_hours_early_say_seven_hours() {
        let mut o = Offset::default();
        // Ranges of an hour; entries all over them, printed 7 h early.
        for r in 0..5 {
            let lo = 100 * HOUR + r * HOUR;
            let times: Vec<Nanos> = (0..10).map(|i| lo + i * 6 * MINUTE - 7 * HOUR).collect();
            o.answer(times, lo, lo + HOUR, S);
        }
        assert_eq!(o.outside, 50);
        assert_eq!(o.estimate(), Some((7 * HOUR, true)));
        assert_eq!(
            o.describe().unwrap(),
            "50 events were 7h earlier than the ranges asked for"
        );
    }

    #[test]
    fn later_and_half_hour_zones_and_a_single_entry() {
        let mut o = Offset::default();
        let lo = 1000 * HOUR;
        // One entry, 5h30m late, in the middle of a two-hour range: only the whole hours within
        // [4h30m, 6h30m] late fit; 5h and 6h are both a half hour from the middle.
        o.answer([lo + HOUR + 5 * HOUR + 30 * MINUTE], lo, lo + 2 * HOUR, S);
        let (off, exact) = o.estimate().unwrap();
        assert!(exact && (off == -5 * HOUR || off == -6 * HOUR), "{off}");
        // More entries pin it: at the start and at the end of ranges.
        o.answer([lo + 5 * HOUR + 30 * MINUTE], lo, lo + 2 * HOUR, S);
        o.answer(
            [lo + 2 * HOUR - S + 5 * HOUR + 30 * MINUTE],
            lo,
            lo + 2 * HOUR,
            S,
        );
        assert_eq!(o.estimate(), Some((-(5 * HOUR + 30 * MINUTE), true)));
        assert!(o.describe().unwrap().contains("5h30m later"));
    }

    #[test]
    fn answers_inside_their_range_say_nothing_and_disagreeing_ones_say_up_to() {
        let mut o = Offset::default();
        o.answer([10 * S, 20 * S, 30 * S], 0, 30 * S, S);
        assert_eq!(o.estimate(), None);
        assert_eq!(o.describe(), None);
        // One entry 2h early, another 9h early, from ranges of a minute: no common offset.
        o.answer([100 * HOUR - 2 * HOUR], 100 * HOUR, 100 * HOUR + MINUTE, S);
        o.answer([200 * HOUR - 9 * HOUR], 200 * HOUR, 200 * HOUR + MINUTE, S);
        assert_eq!(o.estimate(), Some((9 * HOUR, false)));
        assert!(o.describe().unwrap().contains("up to 9h earlier"));
    }

    #[test]
    fn spans_and_offsets_read_well() {
        assert_eq!(span(7 * HOUR), "7h");
        assert_eq!(span(5 * HOUR + 30 * MINUTE), "5h30m");
        assert_eq!(span(45 * MINUTE), "45m");
        assert_eq!(span(90 * S), "1m30s");
        assert_eq!(utc_offset(-7 * 3600), "UTC-7");
        assert_eq!(utc_offset(5 * 3600 + 1800), "UTC+5:30");
        assert_eq!(utc_offset(0), "UTC");
    }
}
