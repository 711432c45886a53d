//! Property tests (issue 18, proptest): the file sink's truncate-on-start, occurrence numbering,
//! the content hash that keys entries without ids, and the poller's window planning
//! (`pipeline::planner::Planner`, the code the poller runs, driven through random polls).

use std::collections::BTreeMap;

use auditship::encodings::Writer;
use auditship::event::Event;
use auditship::keys::{content_hash, occurrence_key, Occurrences};
use auditship::sinks::file::FileSink;
use auditship::sinks::Sink;
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

/// One step of a file sink's life.
#[derive(Debug, Clone)]
enum Step {
    /// A page of `n` events delivered; committed or not.
    Page { n: usize, commit: bool },
    /// The process dies and starts again at the committed position.
    Crash,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            3 => (1usize..6, any::<bool>()).prop_map(|(n, commit)| Step::Page { n, commit }),
            1 => Just(Step::Crash),
        ],
        1..25,
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever pages were written, committed or not, and wherever the process died, the file
    /// reopened at its committed position holds exactly the committed pages, in order, and a
    /// file that was there before is kept.
    #[test]
    fn the_file_sink_holds_exactly_the_committed_pages(steps in steps(), before in "[a-z]{0,20}") {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("out.ndjson");
            let prefix = if before.is_empty() { String::new() } else { format!("{{\"old\":\"{before}\"}}\n") };
            std::fs::write(&path, &prefix).unwrap();
            let state = auditship::state::State::open(&dir.path().join("state.db")).unwrap();
            // The sink reads its committed position from the state (the opening one until a
            // commit, which records it there as the poller's commit does).
            let open = || FileSink::open("f", path.clone(), false, 0o600, None, Writer::default(), state.clone());
            let mut sink = open().await.unwrap();
            let mut want = prefix.clone();
            let mut pending = String::new();
            let mut seq = 0u64;
            for step in &steps {
                match step {
                    Step::Page { n, commit } => {
                        let events: Vec<Event> = (0..*n)
                            .map(|_| {
                                seq += 1;
                                Event::standalone("s", "wasabi_air", "wasabi_air", seq as i64, &format!("{{\"n\":{seq}}}"))
                            })
                            .collect();
                        sink.deliver(&events, &CancellationToken::new()).await.unwrap();
                        let mut buf = Vec::new();
                        Writer::default().lines(&events, &mut buf);
                        pending.push_str(std::str::from_utf8(&buf).unwrap());
                        if *commit {
                            state.set_sink_position("f", sink.position().unwrap()).await.unwrap();
                            sink.committed();
                            want.push_str(&pending);
                            pending.clear();
                        } else {
                            // A failed commit rolls the delivery back.
                            sink.rollback();
                            pending.clear();
                        }
                    }
                    Step::Crash => {
                        drop(sink);
                        sink = open().await.unwrap();
                        pending.clear();
                    }
                }
            }
            drop(sink);
            let _reopened = open().await.unwrap();
            let got = std::fs::read_to_string(&path).unwrap();
            prop_assert_eq!(got, want);
            Ok(())
        })?;
    }

    /// A page written and then lost to a crash before its commit is dropped at the restart.
    #[test]
    fn an_uncommitted_tail_is_dropped_on_start(committed_pages in 0usize..5, tail in 1usize..6) {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("out.ndjson");
            let state = auditship::state::State::open(&dir.path().join("state.db")).unwrap();
            let open = || FileSink::open("f", path.clone(), false, 0o600, None, Writer::default(), state.clone());
            let mut sink = open().await.unwrap();
            let ev = |i: usize| Event::standalone("s", "domo", "domo", i as i64, &format!("{{\"i\":{i}}}"));
            for i in 0..committed_pages {
                sink.deliver(&[ev(i)], &CancellationToken::new()).await.unwrap();
                state.set_sink_position("f", sink.position().unwrap()).await.unwrap();
                sink.committed();
            }
            let good = std::fs::read_to_string(&path).unwrap_or_default();
            let events: Vec<Event> = (0..tail).map(|i| ev(100 + i)).collect();
            sink.deliver(&events, &CancellationToken::new()).await.unwrap();
            drop(sink);
            let _sink = open().await.unwrap();
            prop_assert_eq!(std::fs::read_to_string(&path).unwrap(), good);
            Ok(())
        })?;
    }

    /// Occurrence numbers are stable under re-query: reading the same entries of a window
    /// again, in another order (ties shuffled, a page unsorted), gives the same keys, one per
    /// entry, twins included; a window with one more twin keeps the keys it had.
    #[test]
    fn occurrence_keys_do_not_depend_on_order(
        entries in prop::collection::vec(0u8..6, 1..40),
        order in any::<u64>(),
        extra in 0u8..6,
    ) {
        let raw = |i: u8| format!("{{\"time\":\"2024-10-18T14:10:04Z\",\"who\":\"u{i}\"}}");
        let keys_of = |seq: &[u8]| {
            let mut occ = Occurrences::default();
            let mut keys = BTreeMap::new();
            for e in seq {
                let h = content_hash(&raw(*e)).unwrap();
                *keys.entry(occurrence_key(&h, occ.next(h))).or_insert(0) += 1;
            }
            keys
        };
        let first = keys_of(&entries);
        prop_assert_eq!(first.len(), entries.len(), "one key per entry, twins included");
        prop_assert!(first.values().all(|n| *n == 1));
        let mut shuffled = entries.clone();
        fastrand::Rng::with_seed(order).shuffle(&mut shuffled);
        prop_assert_eq!(&keys_of(&shuffled), &first);
        // A late twin shows up: every key seen before is still there, and one is new.
        shuffled.push(extra);
        fastrand::Rng::with_seed(order ^ 1).shuffle(&mut shuffled);
        let later = keys_of(&shuffled);
        prop_assert_eq!(later.len(), first.len() + 1);
        prop_assert!(first.keys().all(|k| later.contains_key(k)));
    }

    /// The content hash ignores formatting: whitespace and key order.
    #[test]
    fn the_content_hash_ignores_formatting(
        fields in prop::collection::btree_map("[a-z]{1,6}", prop_oneof![
            any::<i32>().prop_map(serde_json::Value::from),
            "[ -~]{0,12}".prop_map(serde_json::Value::from),
            any::<bool>().prop_map(serde_json::Value::from),
        ], 1..8),
    ) {
        let v = serde_json::Value::Object(fields.clone().into_iter().collect());
        let compact = serde_json::to_string(&v).unwrap();
        let pretty = serde_json::to_string_pretty(&v).unwrap();
        let reversed = format!(
            "{{ {} }}",
            fields
                .iter()
                .rev()
                .map(|(k, v)| format!("{:?} :\n {}", k, v))
                .collect::<Vec<_>>()
                .join(" ,\t")
        );
        let h = content_hash(&compact).unwrap();
        prop_assert_eq!(content_hash(&pretty).unwrap(), h);
        prop_assert_eq!(content_hash(&reversed).unwrap(), h);
    }
}

// ---------------------------------------------------------------------------------------------
// Window planning: the poller's own `Planner`, driven through polls at random clocks.

use auditship::pipeline::planner::{Planner, Window, WindowStats};
use auditship::sources::domo;
use jiff::tz::TimeZone;

const SEC: i64 = 1_000_000_000;

/// What reading one sub-window gave: the stats the planner sizes the next one from, or an
/// answer too large for one go, or a failure that ends the poll.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Read { pages: u64, largest: usize },
    TooLarge,
    Fails,
}

fn outcomes() -> impl Strategy<Value = Vec<Outcome>> {
    prop::collection::vec(
        prop_oneof![
            3 => Just(Outcome::Read { pages: 1, largest: 0 }),
            3 => (0u64..12, 0usize..1200).prop_map(|(pages, largest)| Outcome::Read { pages, largest }),
            1 => Just(Outcome::TooLarge),
            1 => Just(Outcome::Fails),
        ],
        1..40,
    )
}

/// Zones whose clocks go back (a repeated hour, or half-hour at Lord Howe), and UTC.
const ZONES: &[&str] = &[
    "UTC",
    "America/Denver",
    "Europe/Paris",
    "Australia/Lord_Howe",
    "America/Santiago",
];

/// Instants near the autumn changes of those zones in 2026, so that windows meet them.
const NEAR_CHANGES: &[&str] = &[
    "2026-11-01T07:30:00Z", // America/Denver falls back at 08:00Z
    "2026-10-25T00:30:00Z", // Europe/Paris at 01:00Z
    "2026-04-04T14:30:00Z", // Australia/Lord_Howe at 15:00Z (half an hour)
    "2026-04-05T02:30:00Z", // America/Santiago at 03:00Z
];

/// Whether the clocks of `tz` go back anywhere in `[a, b)`: the wall clock moves less than
/// real time between two instants of it (read with jiff directly, not with the code under test).
fn clocks_go_back_within(tz: &TimeZone, a: i64, b: i64) -> bool {
    let civil = |t: i64| {
        let ts = jiff::Timestamp::from_nanosecond(i128::from(t)).unwrap();
        tz.to_datetime(ts)
    };
    // Second by second would be exact but slow: the offset can only change at a transition,
    // and a window ends before or at the first one where it goes back, so compare the ends
    // and every transition inside.
    let mut points = vec![a];
    let from = jiff::Timestamp::from_nanosecond(i128::from(a)).unwrap();
    for t in tz.following(from) {
        let at = i64::try_from(t.timestamp().as_nanosecond()).unwrap();
        if at >= b {
            break;
        }
        points.push(at);
    }
    points.push(b - 1);
    points.windows(2).any(|p| {
        let real = p[1] - p[0];
        let wall = civil(p[1]).duration_since(civil(p[0])).as_nanos() as i64;
        wall < real
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Over random cursors, lags, overlaps, first window sizes, answers (dense windows shrink
    /// the next, empty ones grow it, too-large answers halve it, failures end a poll), Domo
    /// zones whose clocks go back and `now` sequences (a clock stepped back included): each
    /// poll's sub-windows follow one another with no gap, the first no earlier than
    /// `cursor − overlap` (rounded down to the unit) and no later than the cursor, none ends
    /// after `now − lag`, none holds both passes of a repeated hour, each is at least a unit
    /// long and on whole units; the cursor never goes back, and a poll that completes reaches
    /// `now − lag`.
    #[test]
    fn windows_have_no_gap_no_overlap_beyond_overlap_and_stop_at_now_minus_lag(
        unit_ix in 0usize..3,
        zone in 0usize..ZONES.len(),
        near in 0usize..NEAR_CHANGES.len(),
        lag_ms in 0i64..120_000,
        overlap_ms in 0i64..3_600_000,
        window_s in 1i64..86_400,
        page_size in 1usize..1000,
        start_back_s in 0i64..(3 * 86_400),
        configured_start in any::<bool>(),
        nows in prop::collection::vec(-600i64..7_200, 1..12),
        outcomes in outcomes(),
    ) {
        let unit = [1_000_000, SEC, 1_000][unit_ix];
        // Domo (whole seconds) cuts its windows at the zone's changes; the others do not.
        let tz = TimeZone::get(ZONES[zone]).unwrap();
        let domo = unit == SEC;
        let base = NEAR_CHANGES[near].parse::<jiff::Timestamp>().unwrap().as_nanosecond() as i64;
        let first = base - start_back_s * SEC;
        let (lag, overlap) = (lag_ms * 1_000_000, overlap_ms * 1_000_000);
        let start = configured_start.then_some(first);
        let mut plan = Planner::new(unit, overlap, lag, start, window_s * SEC, page_size);
        let mut now = base;
        // The stored cursor (the state keeps the greatest committed).
        let mut cursor: Option<i64> = None;
        let mut next_outcome = outcomes.iter().cycle();
        for step in nows {
            now += step * SEC;
            let mut span = plan.span(cursor, auditship::timefmt::floor_to(first, unit), now);
            let poll_end = span.end;
            prop_assert!(poll_end <= now - lag);
            if let Some(c) = cursor {
                // No gap after the last poll, and no more re-read than `overlap` asks for.
                prop_assert!(span.from <= c, "a gap: the poll begins at {} after the cursor {c}", span.from);
                prop_assert!(span.from > c - overlap - unit, "re-reads {} before the cursor, overlap {overlap}", c - span.from);
                if let Some(s) = start {
                    prop_assert!(span.from >= auditship::timefmt::floor_to(s.min(c), unit));
                }
            }
            let mut last: Option<Window> = None;
            let mut completed = true;
            let mut windows = 0;
            while let Some(w) = plan.next(&span, |a, b| if domo { domo::window_end(&tz, a, b) } else { b }) {
                windows += 1;
                if windows > 5_000 {
                    // Dense answers shrank the windows to a few units: the poll goes on for
                    // long; here it ends as a failure would.
                    completed = false;
                    break;
                }
                prop_assert_eq!(w.start, span.from);
                if let Some(l) = last {
                    prop_assert_eq!(w.start, l.end, "a gap or an overlap between sub-windows");
                }
                prop_assert!(w.end - w.start >= unit && w.end <= poll_end);
                prop_assert!(w.start % unit == 0 && w.end % unit == 0, "{w:?} not on whole units of {unit}");
                prop_assert!(plan.window() >= unit && plan.window() % unit == 0);
                if domo {
                    prop_assert!(!clocks_go_back_within(&tz, w.start, w.end),
                        "{w:?} holds both passes of a repeated hour in {}", ZONES[zone]);
                }
                match *next_outcome.next().unwrap() {
                    Outcome::Read { pages, largest } => {
                        plan.done(&mut span, &w, WindowStats { pages, largest });
                        let before = cursor;
                        cursor = Some(cursor.map_or(w.end, |c| c.max(w.end)));
                        prop_assert!(cursor >= before);
                        last = Some(w);
                    }
                    Outcome::TooLarge => {
                        if !plan.too_large(&w) {
                            completed = false;
                            break;
                        }
                        prop_assert!(plan.window() < w.end - w.start, "halving did not shrink the window");
                    }
                    Outcome::Fails => {
                        completed = false;
                        break;
                    }
                }
            }
            if completed {
                prop_assert!(span.from >= poll_end, "a completed poll stopped at {} before {poll_end}", span.from);
                if let Some(l) = last {
                    prop_assert_eq!(l.end, poll_end);
                }
            }
        }
    }
}
