//! Micro-benchmarks of the per-event hot path, one page (1000 events) at a time:
//! page parse, normalise, dedupe key, encode, and the SQLite commit of a page.
//!
//!     cargo bench --bench hot_path

use std::hint::black_box;
use std::sync::Arc;

use auditship::encodings::{Format, Writer};
use auditship::event::{Event, PageText};
use auditship::keys;
use auditship::sources::{self, domino_audit, domo, wasabi_air};
use auditship::state::{Commit, State};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::value::RawValue;

const PAGE: usize = 1000;

fn wasabi_page() -> String {
    let events: Vec<String> = (0..PAGE)
        .map(|i| {
            format!(
                r#"{{"id":"{:032x}","user_id":"59790c0f1ab46239e59188bed540bfc7","action_key":"login","target_kind":"authenticate","target_id":"{:032x}","time":"2024-10-11T16:49:{:02}.{}Z"}}"#,
                i * 7919,
                i,
                i % 60,
                758191 + i
            )
        })
        .collect();
    format!(
        r#"{{"audit_events":[{}],"total":{},"page":0}}"#,
        events.join(","),
        PAGE
    )
}

fn domino_page() -> String {
    let events: Vec<String> = (0..PAGE)
        .map(|i| {
            format!(
                r#"{{"timestamp":{},"actor":{{"id":"u{i}","name":"alice","firstName":"Alice","lastName":"X"}},"action":{{"eventName":"Create Dataset","using":[],"traceId":"t{i}"}},"targets":[{{"entity":{{"entityType":"dataset","id":"d{i}","name":"ds1"}},"fieldChanges":[{{"fieldName":"filePath","before":null,"after":"a.csv","added":[],"removed":[]}}]}}],"affecting":[],"in":{{"entityType":"project","id":"p1","name":"proj"}},"metadata":{{}}}}"#,
                1_729_185_360_064i64 + i as i64
            )
        })
        .collect();
    format!(
        r#"{{"events":[{}],"estimatedMatches":{}}}"#,
        events.join(","),
        PAGE
    )
}

fn domo_page() -> String {
    let events: Vec<String> = (0..PAGE)
        .map(|i| {
            format!(
                r#"{{"actionType":"VIEWED","actorId":0,"actorName":"","additionalComment":"Leonard Euler viewed page Intro.","browserDetails":"Mozilla/5.0 (Macintosh)","device":"desktop","eventText":"Viewed page","ipAddress":"50.207.2.{}","objectId":"{i}","objectName":"Intro to Domo","objectType":"PAGE","time":"2017-12-13 10:{:02}:{:02} PM","userId":"1619916076","userName":"Leonard Euler","userType":"USER"}}"#,
                i % 255,
                i / 60 % 60,
                i % 60
            )
        })
        .collect();
    format!("[{}]", events.join(","))
}

#[derive(serde::Deserialize)]
struct WasabiEnvelope<'a> {
    #[serde(borrow)]
    audit_events: Vec<&'a RawValue>,
}

fn parse_and_normalise(c: &mut Criterion) {
    let src: Arc<str> = Arc::from("bench");
    let mut g = c.benchmark_group("page");
    g.throughput(Throughput::Elements(PAGE as u64));
    let w: PageText = Arc::new(wasabi_page());
    // The envelope split into raw entries alone: a floor for any parse that keeps raw text.
    g.bench_function("wasabi_split_raw", |b| {
        b.iter(|| {
            serde_json::from_str::<WasabiEnvelope>(black_box(&w))
                .unwrap()
                .audit_events
                .len()
        })
    });
    g.bench_function("wasabi_parse_normalise", |b| {
        b.iter(|| wasabi_air::read_page(&src, black_box(&w), PAGE).unwrap())
    });
    let d: PageText = Arc::new(domino_page());
    g.bench_function("domino_read_and_hash", |b| {
        b.iter(|| domino_audit::read_page(&src, black_box(&d), PAGE).unwrap())
    });
    let m: PageText = Arc::new(domo_page());
    g.bench_function("domo_read_and_hash", |b| {
        b.iter(|| {
            domo::read_page(
                &src,
                &jiff::tz::TimeZone::UTC,
                black_box(&m),
                PAGE,
                (0, i64::MAX),
            )
            .unwrap()
        })
    });
    g.finish();
}

/// `json` laid out as `serde_json::to_string_pretty` does (keys sorted), as a vendor or gateway
/// that formats its JSON serves it.
fn pretty(json: &str) -> String {
    serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(json).unwrap()).unwrap()
}

/// A response body to events, as the sources do: the body checked and made the page's text,
/// then read. The body is copied outside the timing.
fn body_reads(c: &mut Criterion) {
    let src: Arc<str> = Arc::from("bench");
    let mut g = c.benchmark_group("page");
    g.throughput(Throughput::Elements(PAGE as u64));
    let domino = domino_page().into_bytes();
    g.bench_function("domino_body_to_text", |b| {
        b.iter_batched(
            || domino.clone(),
            |body| sources::page_text(black_box(body)).unwrap(),
            BatchSize::LargeInput,
        )
    });
    let domino_pretty = pretty(&domino_page()).into_bytes();
    g.bench_function("domino_pretty_body_to_text", |b| {
        b.iter_batched(
            || domino_pretty.clone(),
            |body| sources::page_text(black_box(body)).unwrap(),
            BatchSize::LargeInput,
        )
    });
    for (name, body) in [
        ("domino_body_read_and_hash", domino.clone()),
        ("domino_pretty_body_read_and_hash", domino_pretty.clone()),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || body.clone(),
                |body| {
                    let page = sources::page_text(black_box(body)).unwrap();
                    domino_audit::read_page(&src, &page, PAGE).unwrap()
                },
                BatchSize::LargeInput,
            )
        });
    }
    let wasabi = wasabi_page().into_bytes();
    g.bench_function("wasabi_body_parse_normalise", |b| {
        b.iter_batched(
            || wasabi.clone(),
            |body| {
                let page = sources::page_text(black_box(body)).unwrap();
                wasabi_air::read_page(&src, &page, PAGE).unwrap()
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn events(page: String) -> Vec<Event> {
    domino_audit::read_page(&Arc::from("bench"), &Arc::new(page), PAGE).unwrap()
}

fn keys_and_encoding(c: &mut Criterion) {
    let evs = events(domino_page());
    let mut g = c.benchmark_group("event");
    g.throughput(Throughput::Elements(PAGE as u64));
    g.bench_function("id_key", |b| {
        b.iter(|| {
            evs.iter()
                .map(|e| keys::id_key(black_box(e.action().unwrap_or("x"))))
                .collect::<Vec<_>>()
        })
    });
    g.bench_function("content_key", |b| {
        b.iter(|| {
            let mut occ = keys::Occurrences::default();
            evs.iter()
                .map(|e| {
                    let h = keys::content_hash(black_box(e.raw())).unwrap();
                    keys::hex_bytes(&keys::occurrence_key(&h, occ.next(h)))
                })
                .collect::<Vec<_>>()
        })
    });
    // The hash of each event's canonical encoding: one at a time, and side by side in lanes
    // as the sources do (`auditship::lanes`).
    let encodings: Vec<Vec<u8>> = evs
        .iter()
        .map(|e| {
            let mut scratch = auditship::json::canon::Scratch::default();
            auditship::json::canon::canonical_value(e.raw(), &mut scratch).unwrap();
            scratch.bytes().to_vec()
        })
        .collect();
    g.bench_function("content_hash_one_at_a_time", |b| {
        b.iter(|| {
            encodings
                .iter()
                .map(|e| keys::hash_canonical(black_box(e)))
                .collect::<Vec<_>>()
        })
    });
    let mut batch = auditship::keys::lanes::Batch::default();
    let mut hashes = Vec::with_capacity(PAGE);
    g.bench_function("content_hash_in_lanes", |b| {
        b.iter(|| {
            hashes.clear();
            for chunk in encodings.chunks(64) {
                chunk.iter().for_each(|e| batch.push(black_box(e)));
                batch.finish(&mut hashes);
            }
            hashes.len()
        })
    });
    let mut buf = Vec::with_capacity(1 << 20);
    // The native format, as the stdout and file sinks write it: one record a line.
    let (with_raw, without_raw) = (
        Writer {
            include_raw: true,
            ..Writer::default()
        },
        Writer::default(),
    );
    g.bench_function("encode_ndjson_with_raw", |b| {
        b.iter(|| {
            black_box(&with_raw).lines(black_box(&evs), &mut buf);
            buf.len()
        })
    });
    g.bench_function("encode_ndjson_without_raw", |b| {
        b.iter(|| {
            black_box(&without_raw).lines(black_box(&evs), &mut buf);
            buf.len()
        })
    });
    g.finish();
}

/// A page of events of each vendor.
fn vendor_pages() -> [(&'static str, Vec<Event>); 3] {
    let src: Arc<str> = Arc::from("bench");
    let domo = domo::read_page(
        &src,
        &jiff::tz::TimeZone::UTC,
        &Arc::new(domo_page()),
        PAGE,
        (0, i64::MAX),
    )
    .unwrap();
    let wasabi = wasabi_air::read_page(&src, &Arc::new(wasabi_page()), PAGE)
        .unwrap()
        .0;
    [
        ("domino", events(domino_page())),
        ("domo", domo),
        ("wasabi", wasabi),
    ]
}

/// Each `format` over a page of each vendor, `raw` included, as the file sink writes it:
/// native against the SIEM encodings (µs/event = the time per page / 1000).
fn formats(c: &mut Criterion) {
    let mut g = c.benchmark_group("format");
    g.throughput(Throughput::Elements(PAGE as u64));
    let mut buf = Vec::with_capacity(4 << 20);
    for (vendor, evs) in vendor_pages() {
        for name in Format::NAMES {
            let w = Writer {
                format: Format::by_name(name).unwrap(),
                include_raw: true,
            };
            g.bench_function(format!("{name}_{vendor}"), |b| {
                b.iter(|| {
                    black_box(&w).lines(black_box(&evs), &mut buf);
                    buf.len()
                })
            });
        }
    }
    g.finish();
}

/// A page of each vendor as one Parquet file (zstd, `raw` included), OCSF of the page's class
/// (as Security Lake takes it) and native: the cost per event of an object of Parquet, against
/// the `format` group's JSON lines.
fn parquet(c: &mut Criterion) {
    use auditship::encodings::parquet::{ocsf_class, Parquet};
    let mut g = c.benchmark_group("parquet");
    g.throughput(Throughput::Elements(PAGE as u64));
    for (vendor, evs) in vendor_pages() {
        let class = ocsf_class(&evs[0]);
        assert!(evs.iter().all(|e| ocsf_class(e) == class));
        for (name, p) in [
            (
                "ocsf",
                Parquet::ocsf_class(auditship::sources::SIEM_TABLES, class),
            ),
            ("native", Parquet::native()),
        ] {
            g.bench_function(format!("{name}_{vendor}"), |b| {
                b.iter(|| p.write(black_box(&evs), true).unwrap().len())
            });
        }
    }
    g.finish();
}

fn sqlite_commit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = State::open(&dir.path().join("bench.db")).unwrap();
    let mut g = c.benchmark_group("state");
    g.throughput(Throughput::Elements(PAGE as u64));
    let mut n: u64 = 0;
    let chunk = bytes::Bytes::from(vec![b'x'; PAGE * 450]);
    g.bench_function("lookup_commit_and_deliver_page", |b| {
        b.iter_batched(
            || {
                n += 1;
                let keys = (0..PAGE as u64)
                    .map(|i| {
                        let mut k = [0u8; 16];
                        k[..8].copy_from_slice(&n.to_le_bytes());
                        k[8..].copy_from_slice(&i.to_le_bytes());
                        (k, (n * PAGE as u64 + i) as i64)
                    })
                    .collect::<Vec<_>>();
                (n, keys)
            },
            |(n, keys)| {
                rt.block_on(async {
                    let known = state.known("bench", keys.clone()).await.unwrap();
                    state
                        .commit(Commit {
                            source: "bench".into(),
                            kind: "wasabi_air",
                            delivered: known.len() as u64,
                            keys,
                            // The page's events queued for one file sink (about 450 bytes
                            // each, as Wasabi AiR's), then taken and acknowledged with the
                            // file's position: the state's whole share of a page.
                            queued: vec![auditship::state::Queued {
                                sink: "file".into(),
                                events: PAGE as u32,
                                records: chunk.clone(),
                            }],
                            cursor: Some(n as i64),
                            prune_before: Some(n as i64 * PAGE as i64 - 50_000),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                    let taken = state.take("file", vec![], 1000, 1 << 20).await.unwrap();
                    state
                        .ack(auditship::state::Ack {
                            sink: "file".into(),
                            chunks: taken.iter().map(|c| c.id).collect(),
                            events: PAGE as u64,
                            position: Some(auditship::state::SinkPosition::bare(n)),
                            lease: None,
                        })
                        .await
                        .unwrap();
                })
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    formats,
    parquet,
    parse_and_normalise,
    body_reads,
    keys_and_encoding,
    sqlite_commit
);
criterion_main!(benches);
