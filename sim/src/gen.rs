//! Shared pieces of event generation: seeded randomness, time sampling, late arrivals, twins,
//! identifiers, names and JSON/time rendering helpers.

use fastrand::Rng;
use jiff::Timestamp;

use crate::store::Raw;
use crate::{SimConfig, Vendor};

/// Nanoseconds per millisecond.
pub(crate) const MS: i64 = 1_000_000;
/// Nanoseconds per second.
pub(crate) const SEC: i64 = 1_000_000_000;

/// The generation parameters of one vendor, in nanoseconds.
pub(crate) struct Plan {
    /// Inclusive start of the span.
    pub start: i64,
    /// Exclusive end of the span.
    pub end: i64,
    /// Number of entries to generate (twins included).
    pub events: u64,
    /// Probability that an entry becomes visible late.
    pub late_fraction: f64,
    /// Largest lateness, ns.
    pub late_max: i64,
    /// Probability that an entry gets an identical twin.
    pub twin_fraction: f64,
}

impl Plan {
    /// The plan for `vendor` under `cfg` (zero events when the vendor is not generated).
    pub fn new(cfg: &SimConfig, vendor: Vendor) -> Plan {
        Plan {
            start: to_ns(cfg.start),
            end: to_ns(cfg.end),
            events: if cfg.vendors.contains(&vendor) {
                cfg.events
            } else {
                0
            },
            late_fraction: cfg.late_fraction.clamp(0.0, 1.0),
            late_max: i64::try_from(cfg.late_max.as_nanos()).unwrap_or(i64::MAX / 4),
            twin_fraction: cfg.twin_fraction.clamp(0.0, 1.0),
        }
    }
}

/// A deterministic random generator for one vendor and seed.
pub(crate) fn rng(seed: u64, vendor: Vendor) -> Rng {
    let salt = vendor.emulator().salt;
    // splitmix64 so that neighbouring seeds give unrelated streams
    let mut z = seed ^ (salt << 20);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    Rng::with_seed(z ^ (z >> 31))
}

/// Converts an instant to ns since the epoch, saturating outside ±292 years.
pub(crate) fn to_ns(t: Timestamp) -> i64 {
    i64::try_from(t.as_nanosecond()).unwrap_or(if t.as_second() < 0 {
        i64::MIN / 2
    } else {
        i64::MAX / 2
    })
}

/// The wall clock now, ns since the epoch.
pub(crate) fn now_ns() -> i64 {
    to_ns(Timestamp::now())
}

/// Converts ns since the epoch to an instant.
pub(crate) fn from_ns(ns: i64) -> Timestamp {
    Timestamp::from_nanosecond(i128::from(ns)).expect("an i64 of nanoseconds is a timestamp")
}

/// A uniformly random multiple of `unit` in `[start, end)`, or `None` if there is none.
pub(crate) fn uniform_time(rng: &mut Rng, start: i64, end: i64, unit: i64) -> Option<i64> {
    let first = start.div_euclid(unit) * unit + if start.rem_euclid(unit) == 0 { 0 } else { unit };
    if first >= end {
        return None;
    }
    let slots = (end - first - 1) / unit + 1;
    Some(first + rng.i64(0..slots) * unit)
}

/// Generates `plan.events` entries: times from `time`, content from `make`, each possibly late
/// and (when `twins`) possibly followed by an identical twin at the same time.
pub(crate) fn generate<M: Clone>(
    rng: &mut Rng,
    plan: &Plan,
    twins: bool,
    mut time: impl FnMut(&mut Rng) -> Option<i64>,
    mut make: impl FnMut(&mut Rng, i64, u32) -> (String, M),
) -> Vec<Raw<M>> {
    let n = usize::try_from(plan.events).unwrap_or(usize::MAX);
    let mut out: Vec<Raw<M>> = Vec::with_capacity(n);
    while out.len() < n {
        let Some(t) = time(rng) else { break };
        let seq = out.len() as u32;
        let (json, meta) = make(rng, t, seq);
        let json = json.into_boxed_str();
        let twin = twins && out.len() + 1 < n && rng.f64() < plan.twin_fraction;
        let visible_at = late(rng, plan, t);
        if twin {
            // the twin shares content and time; only its visibility is drawn independently
            let twin_visible_at = late(rng, plan, t);
            out.push(Raw {
                time: t,
                visible_at,
                seq,
                json: json.clone(),
                meta: meta.clone(),
            });
            out.push(Raw {
                time: t,
                visible_at: twin_visible_at,
                seq: seq + 1,
                json,
                meta,
            });
        } else {
            out.push(Raw {
                time: t,
                visible_at,
                seq,
                json,
                meta,
            });
        }
    }
    out
}

/// When an entry at `t` becomes visible: `t`, or for a late one `t + uniform(0, late_max]`.
fn late(rng: &mut Rng, plan: &Plan, t: i64) -> i64 {
    if plan.late_max > 0 && plan.late_fraction > 0.0 && rng.f64() < plan.late_fraction {
        t.saturating_add(1 + rng.i64(0..plan.late_max))
    } else {
        t
    }
}

/// `n` random lowercase hex digits.
pub(crate) fn hex(rng: &mut Rng, n: usize) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    (0..n).map(|_| D[rng.usize(0..16)] as char).collect()
}

/// A MongoDB-style ObjectId (24 hex digits) whose first 8 digits are the seconds of `ns`.
pub(crate) fn object_id(rng: &mut Rng, ns: i64) -> String {
    format!("{:08x}{}", (ns.div_euclid(SEC)) as u32, hex(rng, 16))
}

/// Picks one element.
pub(crate) fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.usize(0..items.len())]
}

/// Picks one of a list of static strings.
pub(crate) fn pick_str(rng: &mut Rng, items: &[&'static str]) -> &'static str {
    items[rng.usize(0..items.len())]
}

/// Picks an index by weight.
pub(crate) fn weighted(rng: &mut Rng, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    let mut x = rng.u32(0..total);
    for (i, &w) in weights.iter().enumerate() {
        if x < w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

/// Appends `s` as a JSON string literal.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                use std::fmt::Write;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `"key":"value",` style pieces: `"key":` followed by the JSON string of `value`.
pub(crate) fn push_field(out: &mut String, key: &str, value: &str) {
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
    push_json_str(out, value);
}

/// `2023-08-23T21:40:21.669Z`: UTC with exactly three fraction digits.
pub(crate) fn iso_ms(ns: i64) -> String {
    format!("{:.3}", from_ns(ns))
}

/// RFC 3339 in UTC with the fraction's trailing zeros trimmed (Go's `RFC3339Nano`).
pub(crate) fn rfc3339_nano(ns: i64) -> String {
    let t = from_ns(ns);
    let mut s = t.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    let frac = ns.rem_euclid(SEC);
    if frac != 0 {
        let digits = format!(".{frac:09}");
        s.push_str(digits.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Given names for generated people.
pub(crate) const FIRST_NAMES: &[&str] = &[
    "Alice", "Bob", "Carol", "David", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory",
    "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter", "Zoë", "José",
    "Aiko", "Björn", "Chloé", "Dmitri", "Elif", "Farah", "Gustavo", "Hana", "Imani", "Jun",
    "Kwame", "Leonard", "Maëlle", "Nikhil", "Oksana", "Priya", "Quentin", "Rosa", "Søren",
];

/// Family names for generated people.
pub(crate) const LAST_NAMES: &[&str] = &[
    "Smith",
    "Jones",
    "Garcia",
    "Müller",
    "Nguyen",
    "Kowalski",
    "O'Brien",
    "Rossi",
    "Tanaka",
    "Okafor",
    "Euler",
    "Gauss",
    "Noether",
    "Lovelace",
    "Hopper",
    "Turing",
    "Ramanujan",
    "Kovalevskaya",
    "Fernández",
    "Ødegaard",
    "Chen",
    "Patel",
    "Dubois",
    "Silva",
    "Haddad",
];

/// Words for project, dataset and page names.
pub(crate) const WORDS: &[&str] = &[
    "churn",
    "fraud",
    "forecast",
    "sales",
    "claims",
    "risk",
    "pricing",
    "retention",
    "supply",
    "demand",
    "genomics",
    "imaging",
    "credit",
    "marketing",
    "ops",
    "finance",
    "telemetry",
    "sensor",
    "inventory",
    "support",
    "quality",
    "revenue",
    "attrition",
    "trial",
    "vision",
];

/// A generated person.
#[derive(Clone)]
pub(crate) struct Person {
    /// Given name.
    pub first: &'static str,
    /// Family name.
    pub last: &'static str,
    /// Login, e.g. `alice.smith3`.
    pub login: String,
}

/// `n` distinct people.
pub(crate) fn people(rng: &mut Rng, n: usize) -> Vec<Person> {
    (0..n)
        .map(|i| {
            let first = *pick(rng, FIRST_NAMES);
            let last = *pick(rng, LAST_NAMES);
            let login = format!("{}.{}{}", ascii_lower(first), ascii_lower(last), i);
            Person { first, last, login }
        })
        .collect()
}

/// Lower-cased ASCII letters of `s`: accents folded, apostrophes dropped.
fn ascii_lower(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'á' | 'à' | 'ä' | 'â' => 'a',
            'é' | 'è' | 'ë' | 'ê' => 'e',
            'í' | 'ï' => 'i',
            'ó' | 'ö' | 'ø' | 'Ø' | 'ô' => 'o',
            'ú' | 'ü' => 'u',
            'ñ' => 'n',
            c => c,
        })
        .filter(|c| c.is_ascii_alphabetic())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// A `word-word` name, optionally with a number.
pub(crate) fn slug(rng: &mut Rng) -> String {
    let a = pick(rng, WORDS);
    let b = pick(rng, WORDS);
    if rng.bool() {
        format!("{a}-{b}")
    } else {
        format!("{a}-{b}-{}", rng.u32(1..100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_nano_trims_trailing_zeros() {
        let base = 1_507_740_592 * SEC;
        assert_eq!(
            rfc3339_nano(base + 758_191_000),
            "2017-10-11T16:49:52.758191Z"
        );
        assert_eq!(
            rfc3339_nano(base + 140_610_000),
            "2017-10-11T16:49:52.14061Z"
        );
        assert_eq!(rfc3339_nano(base + 1), "2017-10-11T16:49:52.000000001Z");
        assert_eq!(rfc3339_nano(base), "2017-10-11T16:49:52Z");
    }

    #[test]
    fn iso_ms_has_three_digits() {
        assert_eq!(iso_ms(1_692_826_821_669 * MS), "2023-08-23T21:40:21.669Z");
        assert_eq!(iso_ms(1_692_826_821_000 * MS), "2023-08-23T21:40:21.000Z");
    }

    #[test]
    fn uniform_time_stays_in_the_span_on_unit_boundaries() {
        let mut r = Rng::with_seed(7);
        for _ in 0..1000 {
            let t = uniform_time(&mut r, 1_500, 4_000, 1_000).unwrap();
            assert!((2_000..4_000).contains(&t) && t % 1_000 == 0, "{t}");
        }
        assert_eq!(uniform_time(&mut r, 1_500, 2_000, 1_000), None);
        assert_eq!(uniform_time(&mut r, -1_000, -999, 1_000), Some(-1_000));
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        let v: String = serde_json::from_str(&s).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1}é");
    }
}
