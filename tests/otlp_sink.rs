//! `kind = "otlp"` against a receiver that decodes with the official OTLP definitions
//! (tests/otlp/receiver.py: PyPI opentelemetry-proto; protobuf with `ParseFromString`, OTLP/JSON
//! with `json_format.Parse` into the same message type, gzip per Content-Encoding), installed
//! by tests/venv.sh from tests/otlp/requirements.txt. The receiver is started once per test binary; each test has its
//! own scope (the first path segment of the sink's url) and scripts its answers there.
//!
//! The agent is the real binary (`run --once`, or the daemon for /metrics) over the four
//! emulated vendors; every sink is next to the file sink `setup` makes, whose native records are
//! what each log record's body must be.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use auditship_sim::Vendor;
use common::*;
use serde_json::{json, Value};

/// The receiver: its port, and the process (its stdin held, so it ends with this binary).
struct Receiver {
    port: u16,
    _child: std::sync::Mutex<Child>,
}

fn receiver() -> &'static Receiver {
    static R: OnceLock<Receiver> = OnceLock::new();
    R.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let venv = root.join("target/otlp-venv");
        // Quick when the venv is there already.
        let st = Command::new("bash")
            .arg(root.join("tests/venv.sh"))
            .args(["target/otlp-venv", "tests/otlp/requirements.txt"])
            .status()
            .expect("running tests/venv.sh");
        assert!(st.success(), "tests/venv.sh failed: {st}");
        let dir = tempfile::tempdir().unwrap().keep();
        let port_file = dir.join("port");
        let child = Command::new(venv.join("bin/python"))
            .arg(root.join("tests/otlp/receiver.py"))
            .arg(&port_file)
            .stdin(Stdio::piped())
            .spawn()
            .expect("starting the OTLP receiver");
        let started = Instant::now();
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p.trim().parse().unwrap();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "receiver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Receiver {
            port,
            _child: std::sync::Mutex::new(child),
        }
    })
}

impl Receiver {
    fn url(&self, scope: &str) -> String {
        format!("http://127.0.0.1:{}/{scope}/v1/logs", self.port)
    }
    async fn script(&self, scope: &str, steps: Value) {
        let r = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/_script/{scope}", self.port))
            .body(steps.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    /// What the scope received: its log records (decoded) and its requests.
    async fn scope(&self, scope: &str) -> (Vec<Value>, Vec<Value>) {
        let v: Value = reqwest::get(format!("http://127.0.0.1:{}/_scope/{scope}", self.port))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            v["records"].as_array().unwrap().clone(),
            v["requests"].as_array().unwrap().clone(),
        )
    }
}

/// How long a `run --once` may take here.
const ONCE: Duration = Duration::from_secs(120);

/// The common world of the four vendors over two days, with `sinks` beside the file sink.
async fn four(events: u64, seed: u64, sinks: &str) -> World {
    World::start(backfill(&Vendor::ALL, events, 2, seed), "", sinks).await
}

fn otlp_sink(name: &str, scope: &str, extra: &str) -> String {
    format!(
        "[[sinks]]\nname = \"{name}\"\nkind = \"otlp\"\nurl = \"{}\"\n{extra}\n",
        receiver().url(scope)
    )
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Every event arrived once, as the file sink wrote it (`native`: the body is that record), with
/// the attributes, resource, scope, severity and times specified.
fn assert_records(records: &[Value], file: &[Value], w: &World, native: bool, since: u64) {
    assert_eq!(records.len(), file.len(), "log records vs events read");
    let by_id: BTreeMap<&str, &Value> = file
        .iter()
        .map(|e| (e["id"].as_str().unwrap(), e))
        .collect();
    let mut uids = HashSet::new();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    for r in records {
        let a = &r["attributes"];
        let uid = a["log.record.uid"].as_str().expect("log.record.uid");
        assert!(uids.insert(uid.to_string()), "{uid} twice");
        let e = by_id
            .get(uid)
            .unwrap_or_else(|| panic!("{uid}: no such event"));
        if native {
            assert_eq!(&r["body"], *e, "body of {uid}");
        } else {
            assert!(r["body"].is_object(), "{r}");
        }
        assert_eq!(a["auditship.source"], e["source"], "{r}");
        assert_eq!(a["auditship.vendor"], e["vendor"], "{r}");
        assert_eq!(a["auditship.kind"], e["kind"], "{r}");
        assert_eq!(a.get("auditship.action"), e.get("action"), "{r}");
        assert_eq!(
            r["resource"],
            json!({"service.name": "auditship", "service.version": env!("CARGO_PKG_VERSION"),
                   "host.name": host.trim()})
        );
        assert_eq!(
            r["scope"],
            json!({"name": "auditship", "version": env!("CARGO_PKG_VERSION")})
        );
        assert_eq!(r["severity_number"], 9);
        assert_eq!(r["severity_text"], "INFO");
        let t: u64 = r["time_unix_nano"].as_str().unwrap().parse().unwrap();
        let want: jiff::Timestamp = e["time"].as_str().unwrap().parse().unwrap();
        assert_eq!(t / 1_000_000, want.as_millisecond() as u64, "time of {uid}");
        let observed: u64 = r["observed_time_unix_nano"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            observed >= since && observed <= now_ns(),
            "observed time of {uid}"
        );
    }
    if native {
        for (source, truth) in &w.truths() {
            let bodies: Vec<Value> = records.iter().map(|r| r["body"].clone()).collect();
            assert_exactly(&bodies, source, truth);
        }
    }
}

/// Every event of the four emulated vendors arrives exactly once, in protobuf and in OTLP/JSON,
/// plain and gzipped, each body the event's record (native: equal to the file sink's record;
/// ecs too, as a structured map), with the attributes and resource specified. The receiver
/// decodes with the official definitions: a request they refuse is a 400 and fails the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_as_a_log_record_in_protobuf_and_json_plain_and_gzipped() {
    let sinks = [
        otlp_sink("pb", "all-pb", ""),
        otlp_sink(
            "json-gz",
            "all-json-gz",
            "encoding = \"json\"\ncompression = \"gzip\"",
        ),
        otlp_sink(
            "pb-gz",
            "all-pb-gz",
            "compression = \"gzip\"\nbatch_max_events = 7",
        ),
        otlp_sink(
            "json-ecs",
            "all-json-ecs",
            "encoding = \"json\"\nformat = \"ecs\"",
        ),
    ]
    .concat();
    let w = four(300, 71, &sinks).await;
    let since = now_ns();
    let out = run_once_with(&w.s.config, &[], ONCE).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let file = read_lines(&w.s.out);
    let total: usize = w.truths().iter().map(|(_, t)| t.len()).sum();
    assert_eq!(file.len(), total);
    for (scope, encoding, gzip, native) in [
        ("all-pb", "protobuf", false, true),
        ("all-json-gz", "json", true, true),
        ("all-pb-gz", "protobuf", true, true),
        ("all-json-ecs", "json", false, false),
    ] {
        let (records, requests) = receiver().scope(scope).await;
        for q in &requests {
            assert_eq!(q["status"], 200, "{scope}: {q}");
            assert_eq!(q["gzip"], gzip, "{scope}: {q}");
            let ct = if encoding == "json" {
                "application/json"
            } else {
                "application/x-protobuf"
            };
            assert_eq!(q["content_type"], ct, "{scope}");
        }
        assert!(records.iter().all(|r| r["encoding"] == encoding));
        assert_records(&records, &file, &w, native, since);
        if scope == "all-pb-gz" {
            assert!(requests.iter().all(|q| q["records"].as_u64().unwrap() <= 7));
        }
        eprintln!(
            "FIGURES otlp {scope}: {} events in {} requests, lost 0, doubled 0",
            records.len(),
            requests.len()
        );
    }
}

/// 503 with Retry-After, then 429, then 200: the request is sent again (after the delay asked)
/// and every event arrives once. A 400 is not retried: `--once` says the sink was NOT drained,
/// its events stay queued, and the next run delivers them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_retried_as_the_spec_says_and_a_400_holds_the_batch() {
    let r = receiver();
    r.script(
        "retry",
        json!([{"status": 503, "retry_after": "1"}, {"status": 429}]),
    )
    .await;
    let w = four(100, 72, &otlp_sink("otel", "retry", "")).await;
    let since = now_ns();
    let out = run_once_with(&w.s.config, &[], ONCE).await;
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("retrying delivery"), "{log}");
    let (records, requests) = r.scope("retry").await;
    assert_eq!(requests[0]["status"], 503);
    assert_eq!(requests[1]["status"], 429);
    let gap = requests[1]["at"].as_f64().unwrap() - requests[0]["at"].as_f64().unwrap();
    assert!(gap >= 0.95, "Retry-After: 1 not honoured: {gap}s");
    assert_records(&records, &read_lines(&w.s.out), &w, true, since);
    eprintln!(
        "FIGURES otlp retried: {} events, requests {:?}, Retry-After gap {gap:.2}s, lost 0",
        records.len(),
        requests
            .iter()
            .map(|q| q["status"].as_u64().unwrap())
            .collect::<Vec<_>>()
    );

    // Every request refused (the sink's task tries the batch's pages one by one, each once).
    r.script("held", json!(vec![json!({"status": 400}); 1000]))
        .await;
    let w = four(100, 73, &otlp_sink("otel", "held", "")).await;
    let out = run_once_with(&w.s.config, &[], ONCE).await;
    let log = stderr(&out);
    assert!(log.contains("summary: sink otel: NOT drained;"), "{log}");
    assert!(log.contains("HTTP 400"), "{log}");
    assert!(
        !log.contains("retrying delivery"),
        "a 400 was retried: {log}"
    );
    let (records, requests) = r.scope("held").await;
    assert!(records.is_empty());
    assert!(requests.iter().all(|q| q["status"] == 400), "{requests:?}");
    r.script("held", json!([])).await;
    let row = sink_queue_row(&w.s.config, "otel");
    assert_eq!(row[1], read_lines(&w.s.out).len().to_string(), "{row:?}");
    let since = now_ns();
    let out = run_once_with(&w.s.config, &[], ONCE).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (records, _) = r.scope("held").await;
    assert_records(&records, &read_lines(&w.s.out), &w, true, since);
    eprintln!(
        "FIGURES otlp held: {} requests refused with 400, none retried; next run {} events, lost 0",
        requests.len(),
        records.len()
    );
}

/// A 200 whose partial_success says records were rejected: delivered (not sent again), the
/// collector's message logged, the count in `auditship_sink_records_rejected_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_success_is_logged_and_counted() {
    let r = receiver();
    r.script(
        "partial",
        json!([{"status": 200, "rejected": 2, "message": "two records over the size limit"}]),
    )
    .await;
    r.script(
        "partial-json",
        json!([{"status": 200, "rejected": 3, "message": "three dropped"}]),
    )
    .await;
    let sinks = [
        otlp_sink("otel", "partial", ""),
        otlp_sink("otel-json", "partial-json", "encoding = \"json\""),
    ]
    .concat();
    let w = four(100, 74, &sinks).await;
    let port = free_port();
    let text = std::fs::read_to_string(&w.s.config).unwrap().replace(
        "[agent]\n",
        &format!("[agent]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    std::fs::write(&w.s.config, text).unwrap();
    let child = agent(&["run", "--config", w.s.config.to_str().unwrap()], &[])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let body = loop {
        let b = match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
            Ok(resp) => resp.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if b.contains("auditship_sink_records_rejected_total{sink=\"otel\"} 2")
            && b.contains("auditship_sink_records_rejected_total{sink=\"otel-json\"} 3")
        {
            break b;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(body.contains("# TYPE auditship_sink_records_rejected_total counter"));
    let pid = child.id().unwrap().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let log = stderr(&out);
    assert!(log.contains("two records over the size limit"), "{log}");
    assert!(log.contains("three dropped"), "{log}");
    // Delivered, not sent again.
    let (records, requests) = r.scope("partial").await;
    assert_eq!(records.len(), read_lines(&w.s.out).len());
    assert!(requests.iter().all(|q| q["status"] == 200));
}

/// An agent and a source (unreachable: only the sinks matter here).
const AGENT: &str = "[agent]\nstate_path = \"state.db\"\n[[sources]]\nname = \"s\"\n\
    kind = \"wasabi_air\"\nurl = \"http://127.0.0.1:9\"\napi_key = \"k\"\n";

/// `check --connect` POSTs an empty ExportLogsServiceRequest: reachable (the official decoder
/// takes it), auth refused (401), unreachable (nothing listening); a secret header never shows.
/// `format = "cef"` is refused, naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_says_reachable_auth_refused_or_unreachable_and_cef_is_refused() {
    let r = receiver();
    r.script("auth", json!([{"status": 401}])).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("auditship.toml");
    let closed = free_port();
    let header = "[sinks.headers]\nAuthorization = \"Bearer s3cr3t-t0ken-value\"";
    let text = format!(
        "{AGENT}{}{}[[sinks]]\nname = \"down\"\nkind = \"otlp\"\n\
         url = \"http://127.0.0.1:{closed}/v1/logs\"\n",
        otlp_sink("up", "probe", &format!("encoding = \"json\"\n{header}")),
        otlp_sink("auth", "auth", header),
    );
    std::fs::write(&config, text).unwrap();
    let out = agent(
        &["check", "--connect", "--config", config.to_str().unwrap()],
        &[],
    )
    .output()
    .await
    .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(
        said.contains("sink up: reachable (POST /probe/v1/logs: HTTP 200"),
        "{said}"
    );
    assert!(said.contains("sink auth: auth refused"), "{said}");
    assert!(said.contains("sink down: unreachable"), "{said}");
    assert!(!said.contains("s3cr3t"), "{said}");
    let (_, requests) = r.scope("probe").await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["status"], 200, "{requests:?}");
    assert_eq!(requests[0]["records"], 0);

    std::fs::write(
        &config,
        format!("{AGENT}{}", otlp_sink("cef", "cef", "format = \"cef\"")),
    )
    .unwrap();
    let out = agent(&["check", "--config", config.to_str().unwrap()], &[])
        .output()
        .await
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(!out.status.success());
    assert!(
        said.contains("sinks[0].format: cef writes text lines"),
        "{said}"
    );
}
