//! The HTTP sink end to end: the real binary reads the Wasabi AiR emulator (whose events carry
//! vendor ids) and delivers to a receiver on loopback that parses each encoding as Splunk HEC,
//! Elasticsearch `_bulk` or an NDJSON / JSON-array collector would, with scripted faults.

mod common;
mod http_receiver;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use auditship_sim::{SimConfig, Vendor};
use common::{agent, backfill, canon, free_port, run_once_with, sink_queue_row, stderr, World};
use http_receiver::tls::{Pki, TlsServer};
use http_receiver::{Canned, Mode, Receiver};
use jiff::Timestamp;
use serde_json::Value;

/// How long a `run --once` may take here.
const ONCE: Duration = Duration::from_secs(60);

impl World {
    /// The common world with Wasabi AiR events (no twins) over `days` days ending a minute ago.
    async fn air(events: u64, days: i64, seed: u64) -> World {
        let cfg = SimConfig {
            twin_fraction: 0.0,
            ..backfill(&[Vendor::WasabiAir], events, days, seed)
        };
        World::start(cfg, "", "").await
    }

    /// Writes `auditship.toml`: fast retries, one Wasabi AiR source, and `sinks`.
    fn config(&self, sinks: &str) -> PathBuf {
        self.config_in("", sinks)
    }

    /// Writes `SUB/auditship.toml`, with its own state file.
    fn config_in(&self, sub: &str, sinks: &str) -> PathBuf {
        let dir = self.s.dir.path().join(sub);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("auditship.toml");
        let text = format!(
            "[agent]\nstate_path = \"state.db\"\npoll_interval = \"1s\"\nlag = \"1s\"\noverlap = \"10s\"\n\
             page_size = 1000\nretry_initial = \"50ms\"\nretry_max_delay = \"500ms\"\n\n\
             [[sources]]\nname = \"air\"\nkind = \"wasabi_air\"\nurl = {url:?}\napi_key = {key:?}\n\
             start = {start:?}\n\n{sinks}\n",
            url = self.sim.url(),
            key = self.cfg.api_key,
            start = format!("{:.3}", self.cfg.start),
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `[[sources]]` entries for `n - 1` more tenants of the emulator (`air-1`, `air-2`, …),
    /// each its own source and cursor, to go before a config's sinks.
    fn tenants(&self, n: usize) -> String {
        (1..n)
            .map(|i| {
                format!(
                    "[[sources]]\nname = \"air-{i}\"\nkind = \"wasabi_air\"\nurl = {:?}\napi_key = {:?}\nstart = {:?}\n\n",
                    self.sim.url(),
                    self.cfg.api_key,
                    format!("{:.3}", self.cfg.start)
                )
            })
            .collect()
    }

    /// Every event the emulator serves, as its raw JSON.
    fn truth(&self) -> Vec<Value> {
        self.sim
            .events(Vendor::WasabiAir, self.cfg.start, self.cfg.end)
            .iter()
            .map(|s| serde_json::from_str(s).unwrap())
            .collect()
    }
}

/// Adds `line` to the `[agent]` table of `config`; returns the new text.
fn with_agent_line(config: &Path, line: &str) -> String {
    let text = std::fs::read_to_string(config)
        .unwrap()
        .replace("[agent]\n", &format!("[agent]\n{line}\n"));
    std::fs::write(config, &text).unwrap();
    text
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "run --once failed: {:?}\n{}",
        out.status,
        stderr(out)
    );
}

/// The cursor of source `air`, from `auditship state --json`.
async fn cursor(config: &Path, env: &[(&str, &str)]) -> Option<Timestamp> {
    let out = agent(
        &["state", "--config", config.to_str().unwrap(), "--json"],
        env,
    )
    .output()
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == "air")
        .cloned()
        .unwrap();
    row["cursor"]
        .as_str()
        .map(|c| c.parse::<Timestamp>().unwrap())
}

/// Asserts every truth event arrived (as `raw` of a delivered native event, found at `native`
/// in what the receiver parsed) and nothing else did; returns how many arrived more than once.
fn assert_all_arrived(
    received: &[Value],
    native: impl Fn(&Value) -> &Value,
    truth: &[Value],
) -> usize {
    let want: HashSet<String> = truth.iter().map(canon).collect();
    assert_eq!(want.len(), truth.len(), "the truth holds repeats");
    let mut got: HashMap<String, usize> = HashMap::new();
    for r in received {
        let n = native(r);
        assert_eq!(n["source"], "air", "{n}");
        assert_eq!(
            n["id"], n["raw"]["id"],
            "the native id is the vendor's: {n}"
        );
        *got.entry(canon(&n["raw"])).or_default() += 1;
    }
    let missing: Vec<_> = want.iter().filter(|w| !got.contains_key(*w)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} events missing, e.g. {}",
        missing.len(),
        want.len(),
        missing[0]
    );
    let extra: Vec<_> = got.keys().filter(|g| !want.contains(*g)).collect();
    assert!(
        extra.is_empty(),
        "events that the API does not have: {extra:?}"
    );
    got.values().map(|n| n - 1).sum()
}

fn event_time(raw: &Value) -> Timestamp {
    raw["time"].as_str().unwrap().parse::<Timestamp>().unwrap()
}

/// Splunk HEC through a receiver that is down (connection refused) when the run starts, then
/// answers 503 to every fifth request and, after 30 requests, 503 to everything for 1.5 s:
/// every event arrives, each HEC object is well-formed, and the run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_through_refusals_503s_and_an_outage_loses_nothing() {
    let w = World::air(4000, 2, 41).await;
    let mut recv = Receiver::down(Mode::SplunkHec {
        token: "hec-token-0123456789".into(),
    });
    {
        let mut f = recv.faults();
        f.fail_every = Some(5);
        f.outage = Some((30, Duration::from_millis(1500)));
    }
    let config = w.config(&format!(
        "[[sinks]]\nname = \"splunk\"\nkind = \"http\"\nurl = \"{}/services/collector/event\"\n\
         encoding = \"splunk_hec\"\nindex = \"main\"\nhost = \"test-host\"\nbatch_max_events = 25\n\
         [sinks.headers]\nAuthorization = \"Splunk hec-token-0123456789\"\n",
        recv.base()
    ));
    // `--once` gives up after `retry_max_attempts` (8 by default, a few seconds with these
    // delays): enough of them to ride out the outages.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[agent]\n", "[agent]\nretry_max_attempts = 40\n"),
    )
    .unwrap();
    let run = tokio::spawn({
        let config = config.clone();
        async move { run_once_with(&config, &[], ONCE).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    recv.up().await;
    let out = run.await.unwrap();
    assert_ok(&out);
    let err = stderr(&out);
    assert!(err.contains("retrying delivery"), "{err}");
    assert!(
        !err.contains("hec-token-0123456789"),
        "the token was logged:\n{err}"
    );

    {
        let d = recv.data();
        let truth = w.truth();
        assert!(truth.len() >= 3900, "{}", truth.len());
        let dups = assert_all_arrived(&d.events, |o| &o["event"], &truth);
        let s503 = d.requests.iter().filter(|r| r.status == 503).count();
        assert!(s503 >= 10, "only {s503} requests got a 503");
        assert!(d.malformed.is_empty(), "{:?}", d.malformed);
        assert_eq!(
            d.bad_keys, 0,
            "requests whose Idempotency-Key is not derived from their ids"
        );
        assert!(d.requests.iter().all(|r| r.ids.len() <= 25));
        for o in &d.events {
            assert_eq!(o["host"], "test-host");
            assert_eq!(o["sourcetype"], "auditship");
            assert_eq!(o["index"], "main");
            assert_eq!(o["source"], "air");
            let ms = (o["time"].as_f64().unwrap() * 1000.0).round() as i64;
            assert_eq!(ms, event_time(&o["event"]["raw"]).as_millisecond(), "{o}");
        }
        eprintln!(
            "{} requests, {s503} answered 503, {} events, {dups} repeats",
            d.requests.len(),
            d.events.len()
        );
    }
    recv.stop().await;
}

/// `_bulk` per-item errors: documents that already exist come back 409 and count as delivered;
/// 429/503 items are sent again, alone; no `_id` is created twice. Bodies are gzipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_conflicts_count_as_delivered_and_failed_items_are_resent() {
    let w = World::air(3000, 2, 42).await;
    let recv = Receiver::start(Mode::Bulk { api_key: None }).await;
    let truth = w.truth();
    // Every tenth event is already indexed, as after a crash between delivery and commit.
    let preseeded: Vec<String> = truth
        .iter()
        .step_by(10)
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    {
        let mut d = recv.data();
        for id in &preseeded {
            d.docs.insert(id.clone(), Value::Null);
        }
        recv.faults().item_fault_requests = 6;
    }
    let config = w.config(&format!(
        "[[sinks]]\nname = \"es\"\nkind = \"http\"\nurl = \"{}/_bulk\"\nencoding = \"elasticsearch_bulk\"\n\
         index = \"audit-events\"\ngzip = true\nbatch_max_events = 40\n",
        recv.base()
    ));
    let out = run_once_with(&config, &[], ONCE).await;
    assert_ok(&out);
    assert!(stderr(&out).contains("not indexed"), "{}", stderr(&out));

    let d = recv.data();
    assert!(d.malformed.is_empty(), "{:?}", d.malformed);
    assert_eq!(d.bad_keys, 0);
    assert!(d.requests.iter().all(|r| r.gzip), "a body was not gzipped");
    // The stored documents are exactly the truth (pre-seeded ones were not overwritten).
    let ids: HashSet<&str> = truth.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(d.docs.len(), ids.len());
    assert!(d.docs.keys().all(|k| ids.contains(k.as_str())));
    assert!(
        d.creates.values().all(|&n| n == 1),
        "an _id was created twice"
    );
    assert_eq!(d.creates.len() + preseeded.len(), ids.len());
    assert!(
        d.conflicts >= preseeded.len(),
        "{} conflicts for {} pre-seeded",
        d.conflicts,
        preseeded.len()
    );
    let created: Vec<Value> = d.events.clone();
    let fresh: Vec<Value> = truth
        .iter()
        .filter(|r| !preseeded.iter().any(|p| r["id"] == p.as_str()))
        .cloned()
        .collect();
    assert_eq!(assert_all_arrived(&created, |v| v, &fresh), 0);
    // After a request with item errors, the next one carries exactly the failed items.
    let mut checked = 0;
    for pair in d.requests.windows(2).take(6) {
        let failed: Vec<&String> = pair[0]
            .ids
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 5 == 1 || i % 5 == 3)
            .map(|(_, id)| id)
            .collect();
        if pair[0].status == 200 && !failed.is_empty() && checked < 5 {
            assert_eq!(pair[1].ids.iter().collect::<Vec<_>>(), failed);
            checked += 1;
        }
    }
    assert!(checked >= 3, "{checked}");
}

/// Two sinks at once: NDJSON with gzip and a JSON array cut by bytes; both get everything and
/// every body parses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_gzip_and_json_array_bodies_parse_at_two_sinks() {
    let w = World::air(2500, 1, 43).await;
    let nd = Receiver::start(Mode::Ndjson).await;
    let arr = Receiver::start(Mode::JsonArray).await;
    let config = w.config(&format!(
        "[[sinks]]\nname = \"collector\"\nkind = \"http\"\nurl = \"{}/ingest\"\ngzip = true\n\n\
         [[sinks]]\nname = \"array\"\nkind = \"http\"\nurl = \"{}/ingest\"\nencoding = \"json_array\"\n\
         batch_max_bytes = 20000\ntimeout = \"5s\"\n",
        nd.base(),
        arr.base()
    ));
    let out = run_once_with(&config, &[], ONCE).await;
    assert_ok(&out);
    // The start-up line names each endpoint with its port.
    let log = stderr(&out);
    for r in [&nd, &arr] {
        let endpoint = format!("endpoint={}/ingest", r.base());
        assert!(log.contains(&endpoint), "no {endpoint:?} in:\n{log}");
    }
    let truth = w.truth();
    for (r, gz) in [(&nd, true), (&arr, false)] {
        let d = r.data();
        assert!(d.malformed.is_empty(), "{:?}", d.malformed);
        assert_eq!(d.bad_keys, 0);
        assert!(d.requests.iter().all(|q| q.gzip == gz && q.status == 200));
        assert_eq!(assert_all_arrived(&d.events, |v| v, &truth), 0);
    }
    let a = arr.data();
    assert!(
        a.requests.iter().all(|q| q.bytes <= 20000),
        "a body passed batch_max_bytes"
    );
    assert!(
        a.requests.len() > truth.len() * 300 / 20000,
        "{}",
        a.requests.len()
    );
}

/// A 401 (a revoked API key) stops delivery to that sink with a clear error and exit code 1;
/// what it did not take stays in its queue, the file sink beside it takes everything, no secret
/// is logged even at trace level, and after the key is fixed a rerun delivers the rest, each
/// document once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_skips_nothing_and_a_fixed_key_delivers_everything() {
    let w = World::air(3000, 2, 44).await;
    let recv = Receiver::start(Mode::Bulk {
        api_key: Some("first-key-8d1f2a".into()),
    })
    .await;
    recv.faults().revoke = Some((3, "second-key-77c0e1".into()));
    let config = w.config(&format!(
        "[[sinks]]\nname = \"archive\"\nkind = \"file\"\npath = \"out.ndjson\"\nfsync = false\n\n\
         [[sinks]]\nname = \"siem\"\nkind = \"http\"\nurl = \"{}/_bulk\"\nencoding = \"elasticsearch_bulk\"\n\
         index = \"audit\"\n[sinks.headers]\nAuthorization = \"ApiKey ${{AUDITSHIP_TEST_ES_KEY}}\"\n",
        recv.base()
    ));
    let out = run_once_with(
        &config,
        &[
            ("AUDITSHIP_TEST_ES_KEY", "first-key-8d1f2a"),
            ("AUDITSHIP_LOG", "trace"),
        ],
        ONCE,
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines().any(|l| l.contains("siem") && l.contains("401")),
        "no line names the sink and the 401:\n{}",
        &err[err.len().saturating_sub(3000)..]
    );
    assert!(!err.contains("first-key-8d1f2a"), "the key was logged");
    for l in err
        .lines()
        .filter(|l| l.contains("siem") && (l.contains("ERROR") || l.contains("WARN")))
    {
        eprintln!("{l}");
    }

    let truth = w.truth();
    let received: HashSet<String> = recv.data().docs.keys().cloned().collect();
    assert!(received.len() < truth.len());
    assert!(
        err.contains("summary: sink siem: NOT drained;"),
        "{}",
        &err[err.len().saturating_sub(3000)..]
    );
    // The file sink is not held back by the refused one: it holds every event, once.
    let lines: Vec<Value> = std::fs::read_to_string(w.s.dir.path().join("out.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(assert_all_arrived(&lines, |v| v, &truth), 0);

    let out = run_once_with(
        &config,
        &[("AUDITSHIP_TEST_ES_KEY", "second-key-77c0e1")],
        ONCE,
    )
    .await;
    assert_ok(&out);
    let d = recv.data();
    assert_eq!(assert_all_arrived(&d.events, |v| v, &truth), 0);
    assert!(d.creates.values().all(|&n| n == 1));
    let lines = std::fs::read_to_string(w.s.dir.path().join("out.ndjson")).unwrap();
    let lines: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(assert_all_arrived(&lines, |v| v, &truth), 0);
}

/// A 429 with `Retry-After: 2` is waited out: the retry, with the same Idempotency-Key, comes at
/// least two seconds later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_waited_out() {
    let w = World::air(300, 1, 45).await;
    let recv = Receiver::start(Mode::Ndjson).await;
    recv.faults().canned.push_back(Canned {
        status: 429,
        retry_after: Some("2".into()),
        body: "{\"error\":\"slow down\"}".into(),
    });
    let config = w.config(&format!(
        "[[sinks]]\nname = \"collector\"\nkind = \"http\"\nurl = \"{}/ingest\"\n",
        recv.base()
    ));
    let out = run_once_with(&config, &[], ONCE).await;
    assert_ok(&out);
    let d = recv.data();
    assert_eq!(d.requests[0].status, 429);
    let waited = d.requests[1].at - d.requests[0].at;
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
    assert!(waited < Duration::from_secs(4), "retried after {waited:?}");
    assert_eq!(d.requests[1].idempotency_key, d.requests[0].idempotency_key);
    assert_eq!(assert_all_arrived(&d.events, |v| v, &w.truth()), 0);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

fn sigterm(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM {pid}");
}

/// While the receiver is down the daemon holds one page and retries: its memory stays small
/// and flat however large the backlog (20,000 events). When the receiver comes up everything
/// arrives, and SIGTERM then ends the daemon with exit code 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_outage_keeps_memory_bounded_and_delivery_resumes() {
    let w = World::air(20_000, 2, 46).await;
    let mut recv = Receiver::down(Mode::Ndjson);
    let config = w.config(&format!(
        "[[sinks]]\nname = \"collector\"\nkind = \"http\"\nurl = \"{}/ingest\"\n",
        recv.base()
    ));
    let log = std::fs::File::create(w.s.dir.path().join("agent.log")).unwrap();
    let mut child = agent(&["run", "--config", config.to_str().unwrap()], &[])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut samples = Vec::new();
    for _ in 0..6 {
        samples.push(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    eprintln!("RSS during the outage (KiB): {samples:?}");
    assert!(
        samples.iter().all(|&s| s < 64 * 1024),
        "RSS over 64 MiB: {samples:?}"
    );
    let early = samples[..3].iter().max().unwrap();
    let late = samples[3..].iter().max().unwrap();
    assert!(
        late <= &(early + 4 * 1024),
        "RSS keeps climbing: {samples:?}"
    );
    assert!(recv.data().requests.is_empty());

    recv.up().await;
    let truth = w.truth();
    let started = Instant::now();
    loop {
        let ids: HashSet<String> = recv
            .data()
            .events
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect();
        if ids.len() >= truth.len() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {} of {} events after the receiver came back",
            ids.len(),
            truth.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(assert_all_arrived(&recv.data().events, |v| v, &truth), 0);
    sigterm(pid);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the daemon did not stop within 10s of SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let log = std::fs::read_to_string(w.s.dir.path().join("agent.log")).unwrap();
    assert!(log.contains("retrying delivery"), "{log}");
    recv.stop().await;
}

/// Shutdown cuts a long `Retry-After` short: SIGTERM while the sink waits an hour ends the
/// daemon within seconds, with exit code 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_long_retry_after_exits_promptly() {
    let w = World::air(200, 1, 47).await;
    let recv = Receiver::start(Mode::Ndjson).await;
    recv.faults().canned.push_back(Canned {
        status: 503,
        retry_after: Some("3600".into()),
        body: "maintenance".into(),
    });
    let config = w.config(&format!(
        "[[sinks]]\nname = \"collector\"\nkind = \"http\"\nurl = \"{}/ingest\"\n",
        recv.base()
    ));
    let mut child = agent(&["run", "--config", config.to_str().unwrap()], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while recv.data().requests.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no request arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    sigterm(child.id().unwrap());
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("the daemon did not stop within 5s of SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(stopping.elapsed() < Duration::from_secs(3));
    assert_eq!(
        recv.data().requests.len(),
        1,
        "nothing is sent after shutdown"
    );
    assert!(recv.data().events.is_empty());
}

/// TLS: a receiver that requires a client certificate, with a server certificate from a private
/// CA. With `ca_file` and `client_cert`/`client_key` everything arrives; without `ca_file` the
/// server's certificate is refused (the system roots do not know that CA) and the sink keeps
/// retrying; `insecure_skip_verify = true` delivers but warns at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_private_ca_and_insecure_skip_verify() {
    let w = World::air(300, 1, 48).await;
    let pki = Pki::new();
    pki.write(w.s.dir.path());
    let server = TlsServer::start(&pki).await;
    let truth = w.truth();
    let file = |f: &str| w.s.dir.path().join(f).display().to_string();
    let sink = |extra: &str| {
        format!(
            "[[sinks]]\nname = \"tls\"\nkind = \"http\"\nurl = \"https://127.0.0.1:{}/ingest\"\n\
             client_cert = {:?}\nclient_key = {:?}\n{extra}",
            server.addr.port(),
            file("client.pem"),
            file("client.key"),
        )
    };

    let config = w.config_in(
        "verified",
        &sink(&format!("ca_file = {:?}\n", file("ca.pem"))),
    );
    let out = run_once_with(&config, &[], ONCE).await;
    assert_ok(&out);
    assert!(!stderr(&out).contains("NOT verified"));
    {
        let mut d = server.data.lock().unwrap();
        assert_eq!(assert_all_arrived(&d.events, |v| v, &truth), 0);
        assert_eq!(d.handshake_failures, 0);
        d.events.clear();
    }

    let config = w.config_in("unknown-ca", &sink(""));
    let log = std::fs::File::create(w.s.dir.path().join("unknown-ca.log")).unwrap();
    let mut child = agent(&["run", "--config", config.to_str().unwrap()], &[])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let started = Instant::now();
    while server.data.lock().unwrap().handshake_failures < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no refused handshake"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sigterm(child.id().unwrap());
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("the daemon did not stop within 5s of SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let log = std::fs::read_to_string(w.s.dir.path().join("unknown-ca.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("retrying delivery") && l.to_lowercase().contains("certificate")),
        "{log}"
    );
    assert!(server.data.lock().unwrap().events.is_empty());

    let config = w.config_in("insecure", &sink("insecure_skip_verify = true\n"));
    let out = run_once_with(&config, &[], ONCE).await;
    assert_ok(&out);
    assert!(
        stderr(&out).contains("insecure_skip_verify = true"),
        "{}",
        stderr(&out)
    );
    let d = server.data.lock().unwrap();
    assert_eq!(assert_all_arrived(&d.events, |v| v, &truth), 0);
}

/// `run --once` against an HTTP sink that cannot be reached gives up like a source does
/// (`retry_max_attempts`) instead of hanging a cron job: exit 1, the events read kept in the
/// sink's queue, and a later run that reaches the receiver delivers everything, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_gives_up_on_an_unreachable_sink_and_keeps_its_events_queued() {
    let w = World::air(800, 1, 47).await;
    let closed = free_port();
    let sinks = |url: &str| {
        format!("[[sinks]]\nname = \"collector\"\nkind = \"http\"\nurl = \"{url}/ingest\"\n")
    };
    let config = w.config(&sinks(&format!("http://127.0.0.1:{closed}")));
    let text = with_agent_line(&config, "retry_max_attempts = 3");
    let out = run_once_with(&config, &[], ONCE).await;
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("gave up after 3 attempts"), "{log}");
    assert!(
        log.contains(&format!(
            "summary: sink collector: NOT drained; {} events kept in its queue for the next run",
            w.truth().len()
        )),
        "{log}"
    );
    // `state` shows them waiting in the sink's queue.
    let row = sink_queue_row(&config, "collector");
    assert_eq!(row[1], w.truth().len().to_string(), "{row:?}");
    assert_eq!(row[5], "0", "{row:?}");

    let r = Receiver::start(Mode::Ndjson).await;
    std::fs::write(
        &config,
        text.replace(&format!("http://127.0.0.1:{closed}"), &r.base()),
    )
    .unwrap();
    assert_ok(&run_once_with(&config, &[], ONCE).await);
    assert_eq!(assert_all_arrived(&r.data().events, |v| v, &w.truth()), 0);
}

/// `--once` with many sources and a receiver that is down: the sink's retries run out once (one
/// retry cycle per source, one after the other behind the sink, would make a cron job late by
/// that many). The run exits 1 naming the sink, its events are kept in its queue, and the next
/// run with the receiver up delivers everything, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_tries_a_dead_sink_once_for_all_sources() {
    const SOURCES: usize = 12;
    let w = World::air(400, 1, 53).await;
    let closed = free_port();
    let more = w.tenants(SOURCES);
    let sink = |base: &str| {
        format!("{more}[[sinks]]\nname = \"collector\"\nkind = \"http\"\nurl = \"{base}/ingest\"\n")
    };
    let config = w.config(&sink(&format!("http://127.0.0.1:{closed}")));
    let text = with_agent_line(&config, "retry_max_attempts = 3");
    let out = run_once_with(&config, &[], ONCE).await;
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    let retries = log.matches("retrying delivery").count();
    eprintln!(
        "FIGURES once dead sink: {SOURCES} sources, delivery retries {retries} (one cycle: 2)"
    );
    assert_eq!(
        retries, 2,
        "the dead sink was retried for more than one batch\n{log}"
    );
    assert!(log.contains("gave up after 3 attempts"), "{log}");
    assert!(
        log.contains("summary: sink collector: NOT drained;"),
        "{log}"
    );
    let r = Receiver::start(Mode::Ndjson).await;
    std::fs::write(
        &config,
        text.replace(&format!("http://127.0.0.1:{closed}"), &r.base()),
    )
    .unwrap();
    assert_ok(&run_once_with(&config, &[], ONCE).await);
    let d = r.data();
    assert_eq!(d.events.len(), SOURCES * w.truth().len(), "lost or doubled");
}

/// `--once`, and the receiver refuses one source's documents for their content (a mapping
/// error, 400): that source's pages are held in the queue, not the sink stopped. The other
/// source's pages are all still delivered, though they share batches with the refused ones;
/// only the refused source reports NOT completed. (A refusal taken for the sink failing
/// stopped every source behind it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_a_page_refused_for_its_content_stops_only_its_source() {
    let w = World::air(800, 1, 54).await;
    let recv = Receiver::start(Mode::Bulk { api_key: None }).await;
    recv.faults().refuse_source = Some("air-1".into());
    let sink = format!(
        "{}[[sinks]]\nname = \"es\"\nkind = \"http\"\nurl = \"{}/_bulk\"\n\
         encoding = \"elasticsearch_bulk\"\nindex = \"audit\"\nbatch_max_events = 50\n",
        w.tenants(2),
        recv.base()
    );
    let config = w.config(&sink);
    // Pages of 50: the source that is not refused has many pages to deliver after the first
    // refusal of the other one.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("page_size = 1000", "page_size = 50");
    std::fs::write(&config, text).unwrap();
    let out = run_once_with(&config, &[], ONCE).await;
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("summary: air: completed;"), "{log}");
    assert!(log.contains("summary: air-1: NOT completed;"), "{log}");
    assert!(!log.contains("not tried again in this run"), "{log}");
    let delivered = recv
        .data()
        .events
        .iter()
        .filter(|d| d["source"] == "air")
        .count();
    eprintln!(
        "FIGURES once content refusal: air delivered {delivered} of {}, air-1 refused",
        w.truth().len()
    );
    assert_eq!(delivered, w.truth().len(), "{log}");
}

/// Elasticsearch with the target in the URL (`/{target}/_bulk`, no `index`): actions are
/// `{"create":{"_id":…}}`. Into a data stream, native events (no `@timestamp`) are refused item
/// by item with Elasticsearch's own error; the run fails, the events are held in the sink's
/// queue, and the log line says what is wrong. Into an index named by the URL, everything arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_target_in_the_url_and_a_data_stream_without_timestamp() {
    let w = World::air(300, 1, 48).await;
    let recv = Receiver::start(Mode::Bulk { api_key: None }).await;
    recv.faults().data_streams = vec!["logs-auditship-default".into()];
    let sink = |target: &str| {
        format!(
            "[[sinks]]\nname = \"es\"\nkind = \"http\"\nurl = \"{}/{target}/_bulk\"\n\
             encoding = \"elasticsearch_bulk\"\nbatch_max_events = 50\n",
            recv.base()
        )
    };
    let config = w.config_in("stream", &sink("logs-auditship-default"));
    let out = run_once_with(&config, &[], ONCE).await;
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains(
            "document has no @timestamp: a data stream needs format = \\\"ecs\\\" (format \\\"native\\\" has no @timestamp)"
        ) || log.contains(
            "document has no @timestamp: a data stream needs format = \"ecs\" (format \"native\" has no @timestamp)"
        ),
        "{log}"
    );
    assert!(
        log.contains("data stream timestamp field [@timestamp] is missing"),
        "{log}"
    );
    assert!(
        log.contains("summary: sink es: NOT drained;")
            && log.contains("refused by the receiver for their content"),
        "{log}"
    );
    {
        let d = recv.data();
        assert!(d.docs.is_empty());
        assert!(!d.targets.is_empty());
        assert!(d.targets.iter().all(|t| t == "logs-auditship-default"));
        for body in &d.bodies {
            for action in body.lines().step_by(2) {
                let a: Value = serde_json::from_str(action).unwrap();
                assert_eq!(a["create"].as_object().unwrap().len(), 1, "{action}");
                assert!(a["create"]["_id"].is_string(), "{action}");
            }
        }
    }

    let config = w.config_in("index", &sink("audit-events"));
    assert_ok(&run_once_with(&config, &[], ONCE).await);
    let d = recv.data();
    assert!(d.malformed.is_empty(), "{:?}", d.malformed);
    assert_eq!(assert_all_arrived(&d.events, |v| v, &w.truth()), 0);
    assert!(d
        .targets
        .iter()
        .all(|t| t == "logs-auditship-default" || t == "audit-events"));
}

/// The HEC sink for `hec_ack` tests: batches of 50, acks awaited `ack_timeout` long.
fn hec_ack_sink(recv: &Receiver, ack_timeout: &str) -> String {
    format!(
        "[[sinks]]\nname = \"splunk\"\nkind = \"http\"\nurl = \"{}/services/collector/event\"\n\
         encoding = \"splunk_hec\"\nbatch_max_events = 50\nhec_ack = true\nack_timeout = \"{ack_timeout}\"\n\
         [sinks.headers]\nAuthorization = \"Splunk hec-token-0123456789\"\n",
        recv.base()
    )
}

/// Splunk HEC with indexer acknowledgement, against a receiver that acknowledges each batch
/// only after a delay and never acknowledges two of them: every event ends up in an
/// acknowledged batch (the two are sent again after `ack_timeout`), every request carries the
/// sink's one channel (a UUID), and the run completes with the cursor moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hec_ack_commits_acknowledged_batches_and_resends_withheld_ones() {
    let w = World::air(600, 1, 49).await;
    let recv = Receiver::start(Mode::SplunkHec {
        token: "hec-token-0123456789".into(),
    })
    .await;
    recv.faults().hec_ack = Some(http_receiver::HecAck {
        delay: Duration::from_millis(300),
        withhold: vec![1, 4],
        no_ack_id: false,
    });
    let config = w.config(&hec_ack_sink(&recv, "1s"));
    let out = run_once_with(&config, &[], ONCE).await;
    assert_ok(&out);
    let log = stderr(&out);
    assert!(
        log.contains("batch not acknowledged within ack_timeout; sending it again"),
        "{log}"
    );
    assert!(cursor(&config, &[]).await.is_some());
    let d = recv.data();
    assert!(d.malformed.is_empty(), "{:?}", d.malformed);
    let truth: HashSet<String> = w
        .truth()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let acked: HashSet<String> = d.acked.iter().cloned().collect();
    assert_eq!(acked, truth, "events outside an acknowledged batch");
    eprintln!(
        "FIGURES hec_ack: {} events, {} requests, {} ackIds, {} ack queries, lost 0",
        truth.len(),
        d.requests.len(),
        d.issued,
        d.ack_queries
    );
    // The withheld batches are still pending at the receiver: they were never acknowledged,
    // so their events are acknowledged only because they were sent again.
    let withheld: Vec<&(String, u64)> = d
        .acks
        .keys()
        .filter(|(_, id)| *id == 1 || *id == 4)
        .collect();
    assert_eq!(withheld.len(), 2, "{:?}", d.acks.keys());
    assert!(d.ack_queries > 0);
    let channels: HashSet<&String> = d.acks.keys().map(|(c, _)| c).collect();
    assert_eq!(channels.len(), 1, "{channels:?}");
    let c = channels.into_iter().next().unwrap();
    assert!(
        c.len() == 36 && [8, 13, 18, 23].iter().all(|&i| &c[i..=i] == "-") && &c[14..15] == "4",
        "not a UUID: {c}"
    );
}

/// `hec_ack` with many sources and an indexer slow to acknowledge: a page waits for its
/// acknowledgements without holding the sink, so several sources' batches wait at once (with
/// the sink held through the wait, one page at a time did, and each source queued behind the
/// last one's acknowledgement); every event still ends up in an acknowledged batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hec_ack_waits_without_holding_the_sink() {
    const SOURCES: usize = 8;
    let w = World::air(800, 1, 52).await;
    let recv = Receiver::start(Mode::SplunkHec {
        token: "hec-token-0123456789".into(),
    })
    .await;
    recv.faults().hec_ack = Some(http_receiver::HecAck {
        delay: Duration::from_millis(1500),
        withhold: vec![],
        no_ack_id: false,
    });
    let more = w.tenants(SOURCES);
    let config = w.config(&format!("{more}{}", hec_ack_sink(&recv, "60s")));
    let out = run_once_with(&config, &[], ONCE).await;
    assert_ok(&out);
    let d = recv.data();
    let truth: HashSet<String> = w
        .truth()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    // The tenants read the same entries, so the same ids: each must be in an acknowledged
    // batch once per source.
    let mut acked: HashMap<&str, usize> = HashMap::new();
    for id in &d.acked {
        *acked.entry(id.as_str()).or_default() += 1;
    }
    let short: Vec<&String> = truth
        .iter()
        .filter(|id| acked.get(id.as_str()).copied().unwrap_or(0) < SOURCES)
        .collect();
    assert!(
        short.is_empty(),
        "{} events not acknowledged for every source: {:?}",
        short.len(),
        &short[..short.len().min(5)]
    );
    eprintln!(
        "FIGURES hec_ack sources: {SOURCES} sources × {} events, {} ackIds, {} ack queries, \
         at most {} sources waiting for acknowledgements at once, lost 0",
        truth.len(),
        d.issued,
        d.ack_queries,
        d.most_sources_unacked
    );
    assert!(
        d.most_sources_unacked > 1,
        "only one source's batches ever waited for acknowledgement at a time: the sink was held through the wait"
    );
}

/// `hec_ack` against a token without acknowledgement (no `ackId` in the answer): a clear error,
/// exit 1, the events kept in the queue. And `--once` against an indexer that acknowledges
/// nothing gives up after `retry_max_attempts` sendings instead of hanging, its events kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hec_ack_without_ack_ids_or_acks_fails_clearly_and_commits_nothing() {
    let w = World::air(120, 1, 50).await;
    let recv = Receiver::start(Mode::SplunkHec {
        token: "hec-token-0123456789".into(),
    })
    .await;
    recv.faults().hec_ack = Some(http_receiver::HecAck {
        no_ack_id: true,
        ..Default::default()
    });
    let config = w.config_in("noack", &hec_ack_sink(&recv, "1s"));
    let out = run_once_with(&config, &[], ONCE).await;
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("the HEC answer has no ackId"), "{log}");
    assert!(log.contains("useACK"), "{log}");
    assert!(log.contains("summary: sink splunk: NOT drained;"), "{log}");

    recv.faults().hec_ack = Some(http_receiver::HecAck {
        withhold: (0..10_000).collect(),
        ..Default::default()
    });
    let config = w.config_in("never", &hec_ack_sink(&recv, "200ms"));
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[agent]\n", "[agent]\nretry_max_attempts = 2\n"),
    )
    .unwrap();
    let out = run_once_with(&config, &[], ONCE).await;
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("gave up after 2 attempts: a batch of")
            && log.contains("was not acknowledged"),
        "{log}"
    );
    assert!(log.contains("summary: sink splunk: NOT drained;"), "{log}");
}

/// `check --connect` reaches each HTTP sink without sending an event: Splunk HEC's health
/// endpoint, Elasticsearch's root, HEAD of a collector's URL. Up with good credentials:
/// reachable; a refused key: auth refused; nothing listening: unreachable; exit 1 unless all
/// are reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_reaches_each_http_sink_without_sending() {
    let w = World::air(50, 1, 51).await;
    let hec = Receiver::start(Mode::SplunkHec {
        token: "hec-token-0123456789".into(),
    })
    .await;
    let es = Receiver::start(Mode::Bulk {
        api_key: Some("good-key".into()),
    })
    .await;
    let ndjson = Receiver::start(Mode::Ndjson).await;
    let down = Receiver::down(Mode::Ndjson);
    let sinks = |es_key: &str, collector: &str| {
        format!(
            "[[sinks]]\nname = \"splunk\"\nkind = \"http\"\nurl = \"{hec}/services/collector/event\"\n\
             encoding = \"splunk_hec\"\n[sinks.headers]\nAuthorization = \"Splunk hec-token-0123456789\"\n\n\
             [[sinks]]\nname = \"splunk-old\"\nkind = \"http\"\nurl = \"{hec}/services/collector/event\"\n\
             encoding = \"splunk_hec\"\n[sinks.headers]\nAuthorization = \"Splunk {es_key}-hec\"\n\n\
             [[sinks]]\nname = \"es\"\nkind = \"http\"\nurl = \"{es}/audit/_bulk\"\nencoding = \"elasticsearch_bulk\"\n\
             [sinks.headers]\nAuthorization = \"ApiKey {es_key}\"\n\n\
             [[sinks]]\nname = \"collector\"\nkind = \"http\"\nurl = \"{collector}/ingest\"\n",
            hec = hec.base(),
            es = es.base(),
        )
    };
    let check = |config: PathBuf| async move {
        agent(
            &["check", "--connect", "--config", config.to_str().unwrap()],
            &[],
        )
        .output()
        .await
        .unwrap()
    };
    // `splunk-old` holds a token the receiver does not know, in both configs.
    let out = check(w.config_in("good", &sinks("good-key", &ndjson.base()))).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    for want in [
        "sink splunk-old: auth refused (GET /services/collector/health: HTTP 403",
        "sink splunk: reachable (GET /services/collector/health: HTTP 200",
        "sink es: reachable (GET /: HTTP 200",
        "sink collector: reachable (HEAD /ingest: HTTP 405",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }

    let out = check(w.config_in("bad", &sinks("revoked-key", &down.base()))).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("sink splunk: reachable"), "{text}");
    assert!(
        text.contains("sink es: auth refused (GET /: HTTP 401"),
        "{text}"
    );
    assert!(text.contains("sink collector: unreachable ("), "{text}");
    assert!(
        !text.contains("revoked-key"),
        "a header value was printed: {text}"
    );

    // Only the reachable ones: exit 0.
    let text = std::fs::read_to_string(w.s.dir.path().join("good/auditship.toml")).unwrap();
    let cut = text.find("[[sinks]]\nname = \"splunk-old\"").unwrap();
    let end = text[cut..].find("[[sinks]]\nname = \"es\"").unwrap() + cut;
    let path = w.s.dir.path().join("good/only-good.toml");
    std::fs::write(&path, format!("{}{}", &text[..cut], &text[end..])).unwrap();
    let out = check(path).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(!text.contains("splunk-old"), "{text}");
    for r in [&hec, &es, &ndjson] {
        let d = r.data();
        assert!(
            d.events.is_empty() && d.bodies.is_empty(),
            "an event was sent"
        );
    }
}
