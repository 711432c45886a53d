//! Pretty-printed vendor pages, as a vendor or gateway that formats its JSON serves them: the
//! real binary against pretty emulators of all four vendors, delivering to every sink and every
//! HTTP encoding at once. A regression test for records split over lines (`raw` copied with the
//! page's newlines: NDJSON lines torn, `_bulk` answering 400 on every retry, the source stuck):
//! each record is one line or one well-formed item, its `raw` is the vendor's event as the
//! compact API renders it, byte for byte, and its `id` is the one delivered from compact pages.

mod common;
mod http_receiver;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use auditship_sim::{SimConfig, SimHandle, Vendor};
use common::*;
use http_receiver::{Mode, Receiver};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// A native event as delivered, with its `raw` exactly as written.
#[derive(Deserialize)]
struct Native<'a> {
    id: String,
    source: String,
    #[serde(borrow)]
    raw: &'a RawValue,
}

/// A Splunk HEC object.
#[derive(Deserialize)]
struct Hec<'a> {
    #[serde(borrow)]
    event: Native<'a>,
}

/// One delivered record: its source, id and raw text.
type Record = (String, String, String);

fn record(n: Native<'_>) -> Record {
    (n.source, n.id, n.raw.get().to_string())
}

/// Parses one NDJSON line of a native event; a line that is not one whole event fails.
fn line(sink: &str, l: &str) -> (Record, Value) {
    let n: Native = serde_json::from_str(l)
        .unwrap_or_else(|e| panic!("{sink}: a line is not one native event ({e}): {l:?}"));
    (record(n), serde_json::from_str(l).unwrap())
}

/// The records of an NDJSON text, one a line.
fn ndjson(sink: &str, text: &str) -> Vec<(Record, Value)> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{sink}: torn last line"
    );
    text.lines().map(|l| line(sink, l)).collect()
}

/// The records of the bodies an HTTP receiver accepted, read as its encoding lays them out.
fn http_records(sink: &str, mode: &Mode, bodies: &[String]) -> Vec<(Record, Value)> {
    let mut out = Vec::new();
    for body in bodies {
        match mode {
            Mode::Ndjson => out.extend(ndjson(sink, body)),
            Mode::Bulk { .. } => {
                let lines: Vec<&str> = body.lines().collect();
                assert!(lines.len().is_multiple_of(2), "{sink}: {body}");
                for pair in lines.chunks(2) {
                    let action: Value = serde_json::from_str(pair[0]).unwrap();
                    let (rec, doc) = line(sink, pair[1]);
                    assert_eq!(action["create"]["_id"].as_str(), Some(rec.1.as_str()));
                    out.push((rec, doc));
                }
            }
            Mode::JsonArray => {
                // One array on one line: every item is whole and none spans lines.
                assert!(!body.contains('\n'), "{sink}: {body}");
                let items: Vec<Native> = serde_json::from_str(body).unwrap();
                let values: Vec<Value> = serde_json::from_str(body).unwrap();
                out.extend(items.into_iter().map(record).zip(values));
            }
            Mode::SplunkHec { .. } => {
                assert!(!body.contains('\n'), "{sink}: {body}");
                let objs = serde_json::Deserializer::from_str(body).into_iter::<Hec>();
                let values = serde_json::Deserializer::from_str(body).into_iter::<Value>();
                for (o, v) in objs.zip(values) {
                    out.push((record(o.unwrap().event), v.unwrap()["event"].clone()));
                }
            }
        }
    }
    out
}

/// Every source's events, each exactly the truth: as `assert_exactly` has it (content, twins
/// included, no id twice), and `raw` byte for byte the compact API's rendering of the event.
/// Returns each event's raw text by (source, id).
fn check(
    sink: &str,
    got: Vec<(Record, Value)>,
    truth: &BTreeMap<String, Vec<String>>,
) -> BTreeMap<(String, String), String> {
    let values: Vec<Value> = got.iter().map(|(_, v)| v.clone()).collect();
    let mut raws: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for ((source, _, raw), _) in &got {
        assert!(
            !raw.contains('\n'),
            "{sink}: a raw event spans lines: {raw}"
        );
        *raws
            .entry(source)
            .or_default()
            .entry(raw.as_str())
            .or_default() += 1;
    }
    for (source, events) in truth {
        assert_exactly(&values, source, events);
        let mut want: BTreeMap<&str, usize> = BTreeMap::new();
        for e in events {
            *want.entry(e.as_str()).or_default() += 1;
        }
        let mine = raws.remove(source.as_str()).unwrap_or_default();
        if mine != want {
            let odd = mine.keys().find(|r| !want.contains_key(*r));
            panic!(
                "{sink} {source}: raw is not the vendor's event as the compact API renders it, e.g. {odd:?}"
            );
        }
    }
    assert!(raws.is_empty(), "{sink}: events of unknown sources");
    got.into_iter()
        .map(|((source, id, raw), _)| ((source, id), raw))
        .collect()
}

/// `run --once`, with no proxy from the environment (everything is on loopback).
async fn once(config: &Path) -> Output {
    let mut cmd = agent(
        &["run", "--once", "--config", config.to_str().unwrap()],
        &[],
    );
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("run --once did not finish within 300s")
        .expect("running auditship");
    assert!(
        out.status.success(),
        "run --once failed: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every vendor of `sim` as a source (small pages, so that there are many of them).
fn sources(sim: &SimHandle, cfg: &SimConfig) -> String {
    Vendor::ALL
        .iter()
        .map(|v| source_toml(sim, cfg, *v, "page_size = 250\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pretty_pages_leave_as_one_line_records_with_compact_ids_at_every_sink() {
    let compact_cfg = backfill(&Vendor::ALL, 1500, 2, 71);
    let cfg = SimConfig {
        pretty: true,
        ..compact_cfg.clone()
    };
    let sim = sim(cfg.clone()).await;
    let truth: BTreeMap<String, Vec<String>> = Vendor::ALL
        .iter()
        .map(|v| (name(*v), truth(&sim, &cfg, *v)))
        .collect();
    for (source, events) in &truth {
        assert!(events.len() >= 1500, "{source}: {}", events.len());
    }

    let receivers = [
        ("ndjson", Mode::Ndjson, "/ingest", ""),
        ("json_array", Mode::JsonArray, "/ingest", ""),
        (
            "splunk_hec",
            Mode::SplunkHec {
                token: "hec-token-5f3a".into(),
            },
            "/services/collector/event",
            "[sinks.headers]\nAuthorization = \"Splunk hec-token-5f3a\"\n",
        ),
        (
            "elasticsearch_bulk",
            Mode::Bulk { api_key: None },
            "/_bulk",
            "index = \"audit\"\ngzip = true\n",
        ),
    ];
    let mut http = Vec::new();
    let mut sinks = String::from("\n[[sinks]]\nname = \"stdout\"\nkind = \"stdout\"\n");
    for (encoding, mode, path, extra) in receivers {
        let r = Receiver::start(mode.clone()).await;
        sinks.push_str(&format!(
            "\n[[sinks]]\nname = {encoding:?}\nkind = \"http\"\nurl = \"{}{path}\"\n\
             encoding = {encoding:?}\nbatch_max_events = 100\n{extra}",
            r.base()
        ));
        http.push((encoding, mode, r));
    }
    let s = setup("", &sources(&sim, &cfg));
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text.push_str(&sinks);
    std::fs::write(&s.config, text).unwrap();
    let out = once(&s.config).await;

    let mut delivered = vec![
        (
            "stdout",
            check(
                "stdout",
                ndjson("stdout", std::str::from_utf8(&out.stdout).unwrap()),
                &truth,
            ),
        ),
        (
            "file",
            check(
                "file",
                ndjson("file", &std::fs::read_to_string(&s.out).unwrap()),
                &truth,
            ),
        ),
    ];
    for (encoding, mode, r) in &http {
        let d = r.data();
        assert!(d.malformed.is_empty(), "{encoding}: {:?}", d.malformed);
        assert!(
            d.requests.iter().all(|q| q.status == 200),
            "{encoding}: a request was refused"
        );
        if matches!(mode, Mode::Bulk { .. }) {
            assert!(d.requests.iter().all(|q| q.gzip), "a body was not gzipped");
        }
        delivered.push((
            encoding,
            check(encoding, http_records(encoding, mode, &d.bodies), &truth),
        ));
    }

    // The same events from compact pages: the same ids, for the same raw text.
    let plain = common::sim(compact_cfg.clone()).await;
    let c = setup("", &sources(&plain, &compact_cfg));
    once(&c.config).await;
    let compact = check(
        "compact file",
        ndjson("compact file", &std::fs::read_to_string(&c.out).unwrap()),
        &truth,
    );
    for (sink, ids) in &delivered {
        if ids != &compact {
            let odd = ids.iter().find(|(k, v)| compact.get(*k) != Some(*v));
            panic!("{sink}: ids differ from those of compact pages, e.g. {odd:?}");
        }
    }
    for (_, _, mut r) in http {
        r.stop().await;
    }
    sim.shutdown().await;
    plain.shutdown().await;
}
