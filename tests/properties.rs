//! Property tests (issue 18, proptest): the file sink's truncate-on-start, occurrence numbering,
//! and the content hash that keys entries without ids. Window planning lives inside the poller
//! and is held by the crash-loop and backfill tests (`reliability.rs`, `restarts.rs`).

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
            let open = |pos: Option<u64>| FileSink::open("f", path.clone(), false, 0o600, None, Writer::default(), pos);
            let mut sink = open(None).await.unwrap();
            // The position the state holds: the opening one until a commit.
            let mut committed = sink.position();
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
                            committed = sink.position();
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
                        sink = open(committed).await.unwrap();
                        pending.clear();
                    }
                }
            }
            drop(sink);
            let _reopened = open(committed).await.unwrap();
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
            let mut sink = FileSink::open("f", path.clone(), false, 0o600, None, Writer::default(), None).await.unwrap();
            let ev = |i: usize| Event::standalone("s", "domo", "domo", i as i64, &format!("{{\"i\":{i}}}"));
            for i in 0..committed_pages {
                sink.deliver(&[ev(i)], &CancellationToken::new()).await.unwrap();
                sink.committed();
            }
            let pos = sink.position();
            let good = std::fs::read_to_string(&path).unwrap_or_default();
            let events: Vec<Event> = (0..tail).map(|i| ev(100 + i)).collect();
            sink.deliver(&events, &CancellationToken::new()).await.unwrap();
            drop(sink);
            let _sink = FileSink::open("f", path.clone(), false, 0o600, None, Writer::default(), pos).await.unwrap();
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
