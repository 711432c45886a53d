//! The core promises, end to end: the real binary against the vendor emulators over loopback
//! HTTP, with a real SQLite state file and a real file sink.

mod common;

use std::time::{Duration, Instant};

use auditship_sim::{Fault, SimConfig, Vendor};
use common::*;
use jiff::{SignedDuration, Timestamp};

const CORE: [Vendor; 2] = [Vendor::WasabiAir, Vendor::DominoAudit];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_is_complete_without_duplicates_and_a_second_once_adds_nothing() {
    let cfg = backfill(&CORE, 20_000, 3, 11);
    let sim = sim(cfg.clone()).await;
    let sources: String = CORE
        .iter()
        .map(|v| source_toml(&sim, &cfg, *v, ""))
        .collect();
    let s = setup("", &sources);
    once_ok(&s);
    let lines = read_lines(&s.out);
    for v in CORE {
        let truth = truth(&sim, &cfg, v);
        assert!(
            truth.len() >= 20_000,
            "{} truth {}",
            v.as_str(),
            truth.len()
        );
        assert_exactly(&lines, &name(v), &truth);
    }
    // Native shape: every event has the contract's fields, `time` in RFC 3339 with ms.
    for e in lines.iter().take(100) {
        for k in ["id", "source", "kind", "vendor", "time", "raw"] {
            assert!(e.get(k).is_some(), "missing {k} in {e}");
        }
        assert_eq!(e["time"].as_str().unwrap().len(), 24, "{e}");
    }
    let len = std::fs::metadata(&s.out).unwrap().len();
    let before = state_json(&s);

    once_ok(&s);
    assert_eq!(
        std::fs::metadata(&s.out).unwrap().len(),
        len,
        "second --once wrote events"
    );
    let after = state_json(&s);
    for (b, a) in before
        .as_array()
        .unwrap()
        .iter()
        .zip(after.as_array().unwrap())
    {
        assert_eq!(b["delivered"], a["delivered"], "{a}");
        assert!(a["duplicates"].as_u64() >= b["duplicates"].as_u64());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_arrivals_inside_overlap_are_caught_and_a_rotated_file_is_recreated() {
    let now = Timestamp::now();
    let cfg = SimConfig {
        seed: 5,
        start: now - SignedDuration::from_secs(20),
        end: now + SignedDuration::from_secs(12),
        events: 1500,
        vendors: CORE.to_vec(),
        late_fraction: 0.25,
        late_max: Duration::from_secs(4),
        twin_fraction: 0.03,
        ..SimConfig::default()
    };
    let sim = sim(cfg.clone()).await;
    let sources: String = CORE
        .iter()
        .map(|v| source_toml(&sim, &cfg, *v, ""))
        .collect();
    // lag 1s < late_max 4s < overlap 10s: late events land in windows already read.
    let s = setup("", &sources);
    let mut child = spawn(&["run", "--config", s.config.to_str().unwrap()]);
    // Rotate the file while the agent runs: it must write on into a new file.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let rotated = s.dir.path().join("out.ndjson.1");
    std::fs::rename(&s.out, &rotated).unwrap();
    // Until every event (late ones included) is visible, plus lag and a couple of polls.
    let until = cfg.end + SignedDuration::from_secs(4 + 1 + 3);
    while Timestamp::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    signal(&child, "TERM");
    let status = wait_for(&mut child, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).to_string();
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("rotated or removed"), "{stderr}");
    let mut lines = read_lines(&rotated);
    lines.extend(read_lines(&s.out));
    for v in CORE {
        let truth = truth(&sim, &cfg, v);
        assert!(truth.len() >= 1500);
        assert_exactly(&lines, &name(v), &truth);
    }
    let late = lines.len();
    assert!(late > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_then_restart_is_exactly_once() {
    // Large enough that twelve runs of up to 450 ms each do not finish it (about 81 MB of
    // output; twelve kills had landed by 40-58 MB in three runs).
    let cfg = backfill(&CORE, 60_000, 2, 23);
    let sim = sim(cfg.clone()).await;
    let sources: String = CORE
        .iter()
        .map(|v| source_toml(&sim, &cfg, *v, "page_size = 200\n"))
        .collect();
    let s = setup("", &sources);
    // fsync on, as in production: the state must never run ahead of the file.
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, text.replace("fsync = false", "fsync = true")).unwrap();
    let seed = std::env::var("KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("KILL_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let sizes = kill_at_random_points(&s, &mut rng, 12, 450);
    let kills = sizes.len();
    eprintln!("{kills} kills; file sizes after each: {sizes:?}");
    assert!(
        kills >= 10,
        "only {kills} kills landed before the backfill finished"
    );
    assert!(
        sizes.windows(2).any(|w| w[0] != w[1]),
        "no progress between kills: {sizes:?}"
    );
    once_ok(&s);
    let lines = read_lines(&s.out);
    for v in CORE {
        assert_exactly(&lines, &name(v), &truth(&sim, &cfg, v));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rides_out_a_429_with_retry_after_and_a_burst_of_5xx_and_a_bad_body() {
    let cfg = backfill(&[Vendor::WasabiAir], 3_000, 1, 3);
    let sim = sim(cfg.clone()).await;
    let wasabi = Some("wasabi_air".to_string());
    sim.inject_fault(Fault {
        vendor: wasabi.clone(),
        status: 429,
        retry_after: Some("1".into()),
        body: None,
        count: 1,
    });
    sim.inject_fault(Fault {
        vendor: wasabi.clone(),
        status: 503,
        retry_after: None,
        body: None,
        count: 5,
    });
    sim.inject_fault(Fault {
        vendor: wasabi,
        status: 200,
        retry_after: None,
        body: Some("{\"audit_events\": [ truncated".into()),
        count: 2,
    });
    let s = setup("", &source_toml(&sim, &cfg, Vendor::WasabiAir, ""));
    let started = Instant::now();
    let out = once_ok(&s);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After not honoured"
    );
    assert_eq!(sim.stats().faults_served, 8);
    assert!(stderr.contains("HTTP 429"), "{stderr}");
    assert!(stderr.contains("HTTP 503"), "{stderr}");
    assert!(stderr.contains("unreadable response"), "{stderr}");
    assert_exactly(
        &read_lines(&s.out),
        "wasabi-air",
        &truth(&sim, &cfg, Vendor::WasabiAir),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_stops_the_source_and_nothing_is_skipped() {
    let cfg = backfill(&[Vendor::WasabiAir], 500, 1, 4);
    let sim = sim(cfg.clone()).await;
    let good = source_toml(&sim, &cfg, Vendor::WasabiAir, "");
    let s = setup("", &good.replace(&cfg.api_key, "wrong-key"));
    let out = run(
        &["run", "--once", "--config", s.config.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("HTTP 401") && stderr.contains("source stopped"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-key"), "the key leaked: {stderr}");
    assert_eq!(state_json(&s)[0]["cursor"], serde_json::Value::Null);
    // A log filter that is not one (a bare word would be a target to trace, all else off)
    // must not silence the error: a warning, then info.
    let out = run(
        &["run", "--once", "--config", s.config.to_str().unwrap()],
        &[("AUDITSHIP_LOG", "verbose")],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("AUDITSHIP_LOG") && stderr.contains("logging at info"),
        "{stderr}"
    );
    assert!(stderr.contains("HTTP 401"), "{stderr}");
    // Fixed, the next run delivers everything.
    std::fs::write(
        &s.config,
        std::fs::read_to_string(&s.config)
            .unwrap()
            .replace("wrong-key", &cfg.api_key),
    )
    .unwrap();
    once_ok(&s);
    assert_exactly(
        &read_lines(&s.out),
        "wasabi-air",
        &truth(&sim, &cfg, Vendor::WasabiAir),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_backfill_exits_0_and_a_restart_finishes_exactly_once() {
    let cfg = backfill(&CORE, 20_000, 2, 31);
    let sim = sim(cfg.clone()).await;
    let sources: String = CORE
        .iter()
        .map(|v| source_toml(&sim, &cfg, *v, "page_size = 200\n"))
        .collect();
    let s = setup("", &sources);
    let mut child = spawn(&["run", "--config", s.config.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(600));
    signal(&child, "TERM");
    let began = Instant::now();
    let status = wait_for(&mut child, Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    assert!(began.elapsed() < Duration::from_secs(10));
    let partial = read_lines(&s.out).len();
    once_ok(&s);
    let lines = read_lines(&s.out);
    assert!(
        partial < lines.len(),
        "the backfill finished before SIGTERM: {partial}"
    );
    for v in CORE {
        assert_exactly(&lines, &name(v), &truth(&sim, &cfg, v));
    }
}

#[test]
fn a_bad_config_exits_2_naming_the_key_and_writes_nothing() {
    let base = "[agent]\nstate_path = \"state.db\"\n\
        [[sources]]\nname = \"air\"\nkind = \"wasabi_air\"\nurl = \"http://127.0.0.1:9\"\napi_key = \"k\"\n\
        [[sinks]]\nname = \"out\"\nkind = \"file\"\npath = \"out.ndjson\"\n";
    let cases: &[(&str, &str, &str)] = &[
        ("unknown key", "api_key = \"k\"\n", "api_key = \"k\"\npoll_intervall = \"1s\"\n"),
        ("bad duration", "api_key = \"k\"\n", "api_key = \"k\"\nlag = \"2 fortnights\"\n"),
        ("bad time", "api_key = \"k\"\n", "api_key = \"k\"\nstart = \"last tuesday\"\n"),
        ("start in the future", "api_key = \"k\"\n", "api_key = \"k\"\nstart = \"2130-01-01T00:00:00Z\"\n"),
        ("bad url", "url = \"http://127.0.0.1:9\"", "url = \"not a url\""),
        ("missing secret", "api_key = \"k\"\n", "api_key_file = \"/nonexistent/key\"\n"),
        ("missing env", "api_key = \"k\"\n", "api_key = \"${AUDITSHIP_TEST_NOT_SET}\"\n"),
        ("page size", "api_key = \"k\"\n", "api_key = \"k\"\npage_size = 5000\n"),
        ("no sinks", "[[sinks]]\nname = \"out\"\nkind = \"file\"\npath = \"out.ndjson\"\n", ""),
        ("duplicate names", "[[sinks]]", "[[sources]]\nname = \"air\"\nkind = \"wasabi_air\"\nurl = \"http://x\"\napi_key = \"k\"\n[[sinks]]"),
        ("not toml", "[agent]", "[agent"),
    ];
    let keys = [
        "poll_intervall",
        "sources[0].lag",
        "sources[0].start",
        "sources[0].start: 2130-01-01T00:00:00Z is in the future",
        "sources[0].url",
        "sources[0].api_key_file",
        "sources[0].api_key",
        "sources[0].page_size",
        "sinks",
        "sources[1].name",
        "TOML",
    ];
    for ((what, from, to), key) in cases.iter().zip(keys) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let text = base.replacen(from, to, 1);
        assert_ne!(text, base, "{what}: the case changed nothing");
        std::fs::write(&path, text).unwrap();
        for cmd in [&["run", "--once"][..], &["run"], &["check"], &["state"]] {
            let mut args = cmd.to_vec();
            args.extend(["--config", path.to_str().unwrap()]);
            let out = run(&args, &[]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if cmd == ["state"] && what.starts_with("missing ") {
                // `state` never uses the sources' secrets (issue 19): it runs without them.
                assert_eq!(out.status.code(), Some(0), "{what} / {cmd:?}: {stderr}");
                continue;
            }
            assert_eq!(out.status.code(), Some(2), "{what} / {cmd:?}: {stderr}");
            assert!(
                stderr.contains(key),
                "{what}: {key:?} not named in {stderr}"
            );
            assert!(
                !stderr.contains("panicked") && stderr.lines().count() <= 6,
                "{what}: {stderr}"
            );
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "{what}: files were written: {left:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_any_output_at_trace_level() {
    let api_key = "SEKRET-api-key-4f1a";
    let domo_secret = "SEKRET-domo-secret-9c2b";
    let cfg = SimConfig {
        api_key: api_key.into(),
        domo_client_secret: domo_secret.into(),
        domo_token_ttl: Duration::from_secs(2),
        ..backfill(&Vendor::ALL, 300, 1, 8)
    };
    let sim = sim(cfg.clone()).await;
    let sources: String = Vendor::ALL
        .iter()
        .map(|v| source_toml(&sim, &cfg, *v, ""))
        .collect();
    let s = setup("", &sources);
    sim.inject_fault(Fault {
        vendor: None,
        status: 503,
        retry_after: None,
        body: None,
        count: 3,
    });
    let config = s.config.to_str().unwrap();
    let mut outputs = vec![
        run(
            &["run", "--once", "--config", config],
            &[("AUDITSHIP_LOG", "trace")],
        ),
        run(
            &["run", "--once", "--config", config],
            &[("AUDITSHIP_LOG", "trace"), ("AUDITSHIP_LOG_FORMAT", "json")],
        ),
        run(
            &["state", "--config", config],
            &[("AUDITSHIP_LOG", "trace")],
        ),
        run(
            &["state", "--json", "--config", config],
            &[("AUDITSHIP_LOG", "trace")],
        ),
        run(
            &["check", "--connect", "--config", config],
            &[("AUDITSHIP_LOG", "trace")],
        ),
    ];
    // A wrong secret in an error path.
    std::fs::write(
        &s.config,
        std::fs::read_to_string(&s.config)
            .unwrap()
            .replace(api_key, "SEKRET-wrong-key-77"),
    )
    .unwrap();
    outputs.push(run(
        &["run", "--once", "--config", config],
        &[("AUDITSHIP_LOG", "trace")],
    ));
    outputs.push(run(
        &["check", "--connect", "--config", config],
        &[("AUDITSHIP_LOG", "trace")],
    ));
    let mut bytes = 0;
    for o in &outputs {
        for stream in [&o.stdout, &o.stderr] {
            let text = String::from_utf8_lossy(stream);
            bytes += text.len();
            assert!(
                !text.contains("SEKRET"),
                "a secret leaked:\n{}",
                &text[text.find("SEKRET").unwrap().saturating_sub(300)..]
            );
            // Domo access tokens are secrets too; the emulator's are long random strings that
            // never appear in events, so any bearer value in the logs would be a leak.
            assert!(
                !text.to_lowercase().contains("bearer "),
                "a bearer token leaked"
            );
        }
    }
    assert!(
        bytes > 10_000,
        "trace logging produced too little to be a test: {bytes} bytes"
    );
}

/// Regression: a failed log write used to panic the task that logged (tracing reports its own
/// write errors with eprintln!), so with stderr closed the signal task died and SIGTERM was
/// ignored forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_honoured_when_stderr_is_a_closed_pipe() {
    let cfg = backfill(&[Vendor::WasabiAir], 200, 1, 61);
    let sim = sim(cfg.clone()).await;
    // A source that keeps failing keeps logging.
    let sources =
        source_toml(&sim, &cfg, Vendor::WasabiAir, "").replace(&sim.url(), "http://127.0.0.1:1");
    let s = setup("", &sources);
    let mut child = spawn(&["run", "--config", s.config.to_str().unwrap()]);
    drop(child.stderr.take());
    drop(child.stdout.take());
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, "TERM");
    let status = wait_for(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}

/// A first run from a `start` years before the data costs requests in proportion to the events,
/// not to the span: windows grow while answers are empty. (With fixed one-hour windows this was
/// about 60,000 requests per source.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_run_from_a_far_start_costs_requests_for_its_events_not_its_years() {
    let cfg = backfill(&Vendor::ALL, 5_000, 2, 17);
    let sim = sim(cfg.clone()).await;
    let from = format!("{:.3}", cfg.start);
    let sources: String = Vendor::ALL
        .iter()
        .map(|v| {
            source_toml(&sim, &cfg, *v, "").replace(
                &format!("start = {from:?}"),
                "start = \"2020-01-01T00:00:00Z\"",
            )
        })
        .collect();
    assert_eq!(sources.matches("2020-01-01").count(), 4, "{sources}");
    let s = setup("", &sources);
    once_ok(&s);
    let lines = read_lines(&s.out);
    let stats = sim.stats();
    for v in Vendor::ALL {
        assert_exactly(&lines, &name(v), &truth(&sim, &cfg, v));
        // 5,000 events are five pages; crossing almost seven empty years takes a few dozen
        // requests at most.
        let requests = stats.requests[v.as_str()];
        assert!(requests <= 60, "{}: {requests} requests", v.as_str());
    }
}

/// `check --connect` checks what `run` would do with a file sink: a directory that does not
/// exist yet is fine (run creates it), one that cannot be made is not.
#[test]
fn check_connect_accepts_a_file_sink_whose_directory_run_creates() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let write = |path: &str| {
        std::fs::write(
            &config,
            format!(
                "[agent]\nstate_path = \"state.db\"\n\
                 [[sources]]\nname = \"air\"\nkind = \"wasabi_air\"\nurl = \"http://127.0.0.1:9\"\napi_key = \"k\"\n\
                 [[sinks]]\nname = \"out\"\nkind = \"file\"\npath = {path:?}\n"
            ),
        )
        .unwrap()
    };
    write("logs/audit/out.ndjson");
    let out = run(
        &["check", "--connect", "--config", config.to_str().unwrap()],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The source is unreachable (port 9): only the sink's line matters here.
    assert!(
        stdout.contains("sink out: ok") && stdout.contains("does not exist yet"),
        "{stdout}"
    );
    assert!(
        !dir.path().join("logs").exists(),
        "check created the directory"
    );
    // Under a regular file no directory can be made.
    std::fs::write(dir.path().join("plain"), "x").unwrap();
    write("plain/out.ndjson");
    let out = run(
        &["check", "--connect", "--config", config.to_str().unwrap()],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("sink out: cannot write in"), "{stdout}");
}

/// Domino audit and Domo answer newest first; each page is delivered oldest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_page_is_delivered_oldest_first() {
    let vendors = [Vendor::DominoAudit, Vendor::Domo];
    let cfg = backfill(&vendors, 3_000, 1, 19);
    let sim = sim(cfg.clone()).await;
    let sources: String = vendors
        .iter()
        .map(|v| source_toml(&sim, &cfg, *v, "page_size = 100\n"))
        .collect();
    let s = setup("", &sources);
    once_ok(&s);
    let lines = read_lines(&s.out);
    for v in vendors {
        let times: Vec<Timestamp> = lines
            .iter()
            .filter(|e| e["source"] == name(v).as_str())
            .map(|e| t(e["time"].as_str().unwrap()))
            .collect();
        assert_eq!(times.len(), truth(&sim, &cfg, v).len());
        // Time goes back only where one page ends and the next begins (a window is read newest
        // part first): about once a page, some 30 to 60 pages here.
        let back = times.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(
            back <= times.len() / 20,
            "{}: time went back {back} times in {} events",
            v.as_str(),
            times.len()
        );
    }
}

/// Every command, argument and option says what it is in `--help`, and `state`'s usage shows
/// its required `--config` (clap would list it under `[OPTIONS]`).
#[test]
fn every_argument_in_help_has_a_text_and_state_shows_config_as_required() {
    let mut missing = Vec::new();
    for cmd in [
        &["--help"][..],
        &["run", "--help"],
        &["check", "--help"],
        &["state", "--help"],
        &["state", "reset", "--help"],
        &["demo", "--help"],
        &["simulate", "--help"],
    ] {
        let out = run(cmd, &[]);
        assert!(out.status.success(), "{cmd:?}");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let lines: Vec<&str> = text.lines().collect();
        let mut section = "";
        for (i, line) in lines.iter().enumerate() {
            if !line.starts_with(' ') {
                section = line;
                continue;
            }
            if !matches!(section, "Commands:" | "Arguments:" | "Options:") {
                continue;
            }
            // An entry is `  -c, --config <FILE>  text`, or (clap's long layout) the entry alone
            // on its line and its text on the next, indented further.
            let entry = line.trim_start().trim_end();
            let indent = line.len() - line.trim_start().len();
            if indent > 6
                || !(entry.starts_with('-') || entry.starts_with('<') || section == "Commands:")
            {
                continue;
            }
            let next_is_text = lines.get(i + 1).is_some_and(|n| {
                let t = n.trim_start();
                n.len() - t.len() > indent + 2 && !t.starts_with('-') && !t.starts_with('<')
            });
            if !entry.contains("  ") && !next_is_text {
                missing.push(format!("{cmd:?}: {entry}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "without help text:\n{}",
        missing.join("\n")
    );
    let state = run(&["state", "--help"], &[]);
    let text = String::from_utf8_lossy(&state.stdout);
    assert!(
        text.contains("Usage: auditship state --config <FILE>"),
        "{text}"
    );
}
