//! Operations: `/healthz`, `/readyz`, `/metrics`, hot reload (file edits, a ConfigMap-style
//! symlink swap, SIGHUP), JSON logs — the real binary against the emulators.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use auditship_sim::{Fault, SimConfig, SimHandle, Vendor};
use common::*;
use jiff::{SignedDuration, Timestamp};

/// A live emulator: events from `back` seconds ago until `ahead` seconds from now.
fn live(vendors: &[Vendor], events: u64, back: i64, ahead: i64, seed: u64) -> SimConfig {
    let now = Timestamp::now();
    SimConfig {
        seed,
        start: now - SignedDuration::from_secs(back),
        end: now + SignedDuration::from_secs(ahead),
        events,
        vendors: vendors.to_vec(),
        twin_fraction: 0.02,
        ..SimConfig::default()
    }
}

/// [`live`] on a clock that runs `FAST` times as fast as the wall clock from now on, for the
/// emulator and for the agents started with [`spawn_on`]: `ahead` seconds of live traffic pass
/// in `ahead / FAST` (the agents' timers — polls, retries, reload debouncing — stay real).
fn live_fast(vendors: &[Vendor], events: u64, back: i64, ahead: i64, seed: u64) -> SimConfig {
    SimConfig {
        clock: Some(auditship_sim::Clock::from_now(FAST)),
        ..live(vendors, events, back, ahead, seed)
    }
}

const FAST: f64 = 4.0;

/// The daemon on `cfg`'s clock.
fn spawn_on(cfg: &SimConfig, config: &std::path::Path) -> Child {
    let clock = cfg
        .clock
        .as_ref()
        .map(|c| c.env_value())
        .unwrap_or_default();
    spawn_with(
        &["run", "--config", config.to_str().unwrap()],
        &[("AUDITSHIP_TEST_CLOCK", &clock)],
    )
}

/// Waits until the live span of `cfg` and its lag have passed on its clock, then two polls
/// more (real seconds: the agents' timers do not run fast) to read its last events.
async fn past_the_end(cfg: &SimConfig) {
    while cfg.now() < cfg.end + SignedDuration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
}

/// The daemon's `/metrics` counter of reloads that ended `outcome`.
async fn reloads(port: u16, outcome: &str) -> u64 {
    let (_, body) = until(
        &format!("http://127.0.0.1:{port}/metrics"),
        Duration::from_secs(10),
        |s, _| s == 200,
    )
    .await;
    metric(
        &body,
        &format!("auditship_reloads_total{{outcome=\"{outcome}\"}}"),
    )
}

/// Waits until the daemon on `port` counted a reload that ended `outcome`.
async fn reloaded(port: u16, outcome: &str, before: u64) {
    let started = Instant::now();
    while reloads(port, outcome).await <= before {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no reload {outcome} within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the file at `path` holds more than `n` lines.
async fn more_lines_than(path: &std::path::Path, n: usize, what: &str) {
    wait_until(what, Duration::from_secs(30), || lines_so_far(path) > n).await;
}

fn stop(mut child: Child) -> String {
    signal(&child, "TERM");
    let status = wait_for(&mut child, Duration::from_secs(20));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(status.success(), "{status:?}\n{stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_answer_and_ready_flips_while_the_api_is_down() {
    let cfg = live(&[Vendor::WasabiAir], 2_000, 60, 120, 51);
    let sim = sim(cfg.clone()).await;
    let port = free_port();
    let s = setup(
        &format!("listen = \"127.0.0.1:{port}\"\nunready_after = \"2s\"\n"),
        &source_toml(&sim, &cfg, Vendor::WasabiAir, ""),
    );
    let child = spawn(&["run", "--config", s.config.to_str().unwrap()]);
    let base = format!("http://127.0.0.1:{port}");
    until(
        &format!("{base}/healthz"),
        Duration::from_secs(20),
        |s, _| s == 200,
    )
    .await;
    let (_, body) = until(
        &format!("{base}/readyz"),
        Duration::from_secs(20),
        |s, _| s == 200,
    )
    .await;
    assert!(body.contains("\"wasabi-air\""), "{body}");

    // A metric moves when events flow.
    let delivered = "auditship_events_delivered_total{source=\"wasabi-air\",sink=\"file\"}";
    let (_, first) = until(
        &format!("{base}/metrics"),
        Duration::from_secs(20),
        |_, b| metric(b, delivered) > 0,
    )
    .await;
    for name in [
        "auditship_events_fetched_total{source=\"wasabi-air\"}",
        "auditship_api_requests_total{source=\"wasabi-air\",class=\"2xx\"}",
        "auditship_page_fetch_seconds_count{source=\"wasabi-air\"}",
        "auditship_cursor_lag_seconds{source=\"wasabi-air\"}",
        "auditship_last_poll_success_timestamp_seconds{source=\"wasabi-air\"}",
    ] {
        assert!(first.contains(name), "{name} missing from:\n{first}");
    }
    let n = metric(&first, delivered);
    until(
        &format!("{base}/metrics"),
        Duration::from_secs(20),
        |_, b| metric(b, delivered) > n,
    )
    .await;

    // The API goes down: after unready_after, /readyz says so, with the reason.
    sim.inject_fault(Fault {
        vendor: Some("wasabi_air".into()),
        status: 503,
        retry_after: None,
        body: None,
        count: 40,
    });
    let (_, body) = until(
        &format!("{base}/readyz"),
        Duration::from_secs(30),
        |s, _| s == 503,
    )
    .await;
    assert!(
        body.contains("wasabi-air") && body.contains("HTTP 503"),
        "{body}"
    );
    assert!(body.contains("\"reason\""), "{body}");
    // Liveness is about the loop turning, not the API: still 200.
    assert_eq!(get(&format!("{base}/healthz")).await.unwrap().0, 200);
    let (_, m) = get(&format!("{base}/metrics")).await.unwrap();
    assert!(
        metric(
            &m,
            "auditship_api_requests_total{source=\"wasabi-air\",class=\"5xx\"}"
        ) > 0
    );
    assert!(
        metric(
            &m,
            "auditship_retries_total{component=\"source\",name=\"wasabi-air\"}"
        ) > 0
    );
    // ... and back once it recovers (the queued faults run out).
    until(
        &format!("{base}/readyz"),
        Duration::from_secs(60),
        |s, _| s == 200,
    )
    .await;
    stop(child);
    let truth = sim.events(
        Vendor::WasabiAir,
        cfg.start,
        Timestamp::now() - SignedDuration::from_secs(30),
    );
    let lines = read_lines(&s.out);
    assert!(lines.len() >= truth.len());
    let ids: std::collections::HashSet<_> = lines.iter().map(|l| l["id"].to_string()).collect();
    assert_eq!(ids.len(), lines.len(), "an event was delivered twice");
}

fn config_with(text: &str, sim: &SimHandle, cfg: &SimConfig, vendors: &[Vendor]) -> String {
    let head = &text[..text.find("[[sources]]").unwrap()];
    let sink = &text[text.find("[[sinks]]").unwrap()..];
    let sources: String = vendors
        .iter()
        .map(|v| source_toml(sim, cfg, *v, ""))
        .collect();
    format!("{head}{sources}\n{sink}")
}

/// Writes a file the way editors and ConfigMaps do: a new file renamed over the old one.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_edits_add_and_remove_sources_live_and_a_broken_edit_is_refused() {
    let vendors = [Vendor::WasabiAir, Vendor::DominoAudit];
    let cfg = live_fast(&vendors, 3_000, 60, 40, 52);
    let sim = sim(cfg.clone()).await;
    let port = free_port();
    let s = setup(
        &format!("listen = \"127.0.0.1:{port}\"\n"),
        &source_toml(&sim, &cfg, Vendor::WasabiAir, ""),
    );
    let original = std::fs::read_to_string(&s.config).unwrap();
    let child = spawn_on(&cfg, &s.config);
    more_lines_than(&s.out, 0, "the first source delivered nothing").await;

    // Remove wasabi, add domino: live, no restart.
    replace(
        &s.config,
        &config_with(&original, &sim, &cfg, &[Vendor::DominoAudit]),
    );
    wait_until(
        "the added source delivered nothing",
        Duration::from_secs(30),
        || {
            read_lines(&s.out)
                .iter()
                .any(|e| e["source"] == "domino-audit")
        },
    )
    .await;

    // A broken edit is refused; the running configuration keeps delivering.
    let refused = reloads(port, "refused").await;
    replace(&s.config, "[agent\nthis is not toml");
    reloaded(port, "refused", refused).await;
    let before = lines_so_far(&s.out);
    more_lines_than(&s.out, before, "nothing flowed after a refused reload").await;

    // Both again: wasabi resumes from its cursor.
    replace(&s.config, &config_with(&original, &sim, &cfg, &vendors));
    past_the_end(&cfg).await;
    let stderr = stop(child);
    assert!(stderr.contains("reload refused"), "{stderr}");
    assert!(stderr.contains("configuration reloaded"), "{stderr}");
    assert!(stderr.contains("AUDITSHIP_TEST_CLOCK is set"), "{stderr}");
    let lines = read_lines(&s.out);
    for v in vendors {
        assert_exactly(&lines, &name(v), &truth(&sim, &cfg, v));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_style_symlink_swap_and_sighup_reload() {
    let cfg = live_fast(&[Vendor::WasabiAir, Vendor::DominoAudit], 1_000, 30, 24, 53);
    let sim = sim(cfg.clone()).await;
    let s = setup("", &source_toml(&sim, &cfg, Vendor::WasabiAir, ""));
    // Kubernetes mounts a ConfigMap as DIR/auditship.toml -> ..data/auditship.toml, with
    // ..data -> ..2024_01 swapped atomically on update.
    let dir = s.dir.path();
    let v1 = dir.join("..v1");
    std::fs::create_dir(&v1).unwrap();
    // Relative paths resolve against the directory of the path given, as Kubernetes users
    // would expect of DIR/cm.toml.
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(v1.join("auditship.toml"), &text).unwrap();
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    let link = dir.join("cm.toml");
    std::os::unix::fs::symlink("..data/auditship.toml", &link).unwrap();
    let child = spawn_on(&cfg, &link);
    let out = dir.join("out.ndjson");
    more_lines_than(&out, 0, "nothing delivered before the swap").await;

    let v2 = dir.join("..v2");
    std::fs::create_dir(&v2).unwrap();
    let both: String = [Vendor::WasabiAir, Vendor::DominoAudit]
        .iter()
        .map(|v| source_toml(&sim, &cfg, *v, ""))
        .collect();
    let text2 = format!(
        "{}{both}\n{}",
        &text[..text.find("[[sources]]").unwrap()],
        &text[text.find("[[sinks]]").unwrap()..]
    );
    std::fs::write(v2.join("auditship.toml"), &text2).unwrap();
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    // The swap alone is a change: the added source delivers before any SIGHUP.
    wait_until(
        "the swapped-in source delivered nothing",
        Duration::from_secs(30),
        || {
            read_lines(&out)
                .iter()
                .any(|e| e["source"] == "domino-audit")
        },
    )
    .await;
    signal(&child, "HUP");
    past_the_end(&cfg).await;
    let stderr = stop(child);
    assert!(
        stderr.contains("trigger=\"file change\"") || stderr.contains("trigger=file change"),
        "{stderr}"
    );
    assert!(stderr.contains("SIGHUP"), "{stderr}");
    let lines = read_lines(&dir.join("out.ndjson"));
    for v in [Vendor::WasabiAir, Vendor::DominoAudit] {
        assert_exactly(&lines, &name(v), &truth(&sim, &cfg, v));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cannot_move_the_state_file() {
    let cfg = backfill(&[Vendor::WasabiAir], 100, 1, 54);
    let sim = sim(cfg.clone()).await;
    let port = free_port();
    let s = setup(
        &format!("listen = \"127.0.0.1:{port}\"\n"),
        &source_toml(&sim, &cfg, Vendor::WasabiAir, ""),
    );
    let child = spawn(&["run", "--config", s.config.to_str().unwrap()]);
    more_lines_than(&s.out, 0, "nothing delivered").await;
    let refused = reloads(port, "refused").await;
    let text = std::fs::read_to_string(&s.config).unwrap();
    replace(&s.config, &text.replace("state.db", "other.db"));
    reloaded(port, "refused", refused).await;
    let stderr = stop(child);
    assert!(
        stderr.contains("agent.state_path and agent.listen cannot change"),
        "{stderr}"
    );
    assert!(!s.dir.path().join("other.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_with_fields() {
    let cfg = backfill(&[Vendor::WasabiAir], 500, 1, 55);
    let common::World {
        sim: _sim,
        cfg: _,
        s,
        ..
    } = common::World::start(cfg, "", "").await;
    let out = run(
        &["run", "--once", "--config", s.config.to_str().unwrap()],
        &[("AUDITSHIP_LOG_FORMAT", "json")],
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut summaries = 0;
    for line in stderr.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        if v["message"] == "poll complete" {
            summaries += 1;
            assert_eq!(v["source"], "wasabi-air");
            assert_eq!(v["delivered"], 500);
        }
    }
    assert_eq!(summaries, 1, "{stderr}");
}

/// `run --once` ends with one summary line per source, on stderr and as a log line with fields:
/// a source that completed (with its counts and cursor) and one that could not (its API down),
/// and nothing that speaks of a next poll, which `--once` does not make.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_ends_with_a_summary_per_source_and_no_next_poll() {
    let cfg = backfill(&[Vendor::WasabiAir], 400, 1, 57);
    let sim = sim(cfg.clone()).await;
    let truth = truth(&sim, &cfg, Vendor::WasabiAir).len();
    let sources = format!(
        "{}[[sources]]\nname = \"dead\"\nkind = \"wasabi_air\"\nurl = \"http://127.0.0.1:9\"\napi_key = \"k\"\n",
        source_toml(&sim, &cfg, Vendor::WasabiAir, "")
    );
    let s = setup_timed(
        "lag = \"1s\"\noverlap = \"10s\"\npoll_interval = \"1s\"\nretry_max_attempts = 2",
        "",
        &sources,
    );
    let config = s.config.to_str().unwrap();
    let out = run(&["run", "--once", "--config", config], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("next_poll"), "{stderr}");
    let line = |name: &str| {
        let prefix = format!("summary: {name}: ");
        let found: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&prefix)).collect();
        assert_eq!(found.len(), 1, "one summary line for {name}:\n{stderr}");
        found[0].to_string()
    };
    let air = line("wasabi-air");
    assert!(
        air.contains("completed;")
            && air.contains(&format!("fetched={truth} delivered={truth} "))
            && !air.contains("cursor none"),
        "{air}"
    );
    let dead = line("dead");
    assert!(
        dead.contains("NOT completed")
            && dead.contains("delivered=0")
            && dead.contains("cursor none"),
        "{dead}"
    );

    // The same as log lines with fields; stderr stays one JSON object a line.
    let out = run(
        &["run", "--once", "--config", config],
        &[("AUDITSHIP_LOG_FORMAT", "json")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let mut seen = std::collections::BTreeMap::new();
    for l in stderr.lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"));
        assert!(v.get("next_poll_s").is_none(), "{l}");
        if v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("--once: source"))
        {
            seen.insert(v["source"].as_str().unwrap().to_string(), v.clone());
        }
    }
    let air = &seen["wasabi-air"];
    assert_eq!(air["completed"], true, "{air}");
    assert_eq!(air["delivered"], 0, "all delivered by the first run: {air}");
    assert!(
        air["cursor"].as_str().is_some_and(|c| c.starts_with("20")),
        "{air}"
    );
    let dead = &seen["dead"];
    assert_eq!(dead["completed"], false, "{dead}");
    assert!(
        dead["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{dead}"
    );
    assert_eq!(read_lines(&s.out).len(), truth);
}

/// `simulate` prints ready-to-paste `[[sources]]` blocks (its real port, the credentials its
/// emulators take) and a sink: pasted into a config file as they are, `check --connect` passes
/// and `run --once` reads every vendor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_prints_blocks_that_work_when_pasted() {
    use tokio::io::AsyncBufReadExt;
    let port = free_port();
    let mut sim = agent(
        &[
            "simulate",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--events",
            "300",
            "--span",
            "2h",
        ],
        &[],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = tokio::io::BufReader::new(sim.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            printed.push_str(&l);
            printed.push('\n');
            if l == "kind = \"stdout\"" {
                break;
            }
        }
    });
    read.await.expect("simulate printed its blocks");
    let blocks = &printed[printed.find("[[sources]]").expect(&printed)..];
    for v in Vendor::ALL {
        assert!(
            blocks.contains(&format!("kind = \"{}\"", v.as_str())),
            "{printed}"
        );
    }
    assert!(
        blocks.contains(&format!("url = \"http://127.0.0.1:{port}\"")),
        "{printed}"
    );

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("auditship.toml");
    std::fs::write(
        &config,
        format!("[agent]\nstate_path = \"state.db\"\n\n{blocks}"),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let out = run(&["check", "--connect", "--config", config], &[]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["run", "--once", "--config", config], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for v in Vendor::ALL {
        let n = events.iter().filter(|e| e["source"] == name(v)).count();
        assert!(n > 0, "no events from {}: {stderr}", v.as_str());
    }
    let _ = sim.kill().await;
}

/// Audit data is private whatever the umask (022 here, which alone would give 0644): the events
/// file and the state (database, -wal, -shm, lock) are created 0600, and a file sink's `mode`
/// gives its file exactly that mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_created_private_whatever_the_umask_and_mode_is_applied() {
    use std::os::unix::fs::PermissionsExt;
    let cfg = live(&[Vendor::WasabiAir], 2_000, 3_600, 600, 58);
    let common::World {
        sim: _sim,
        cfg: _,
        s,
        ..
    } = common::World::start(cfg, "", "").await;
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text.push_str("\n[[sinks]]\nname = \"shared\"\nkind = \"file\"\npath = \"group/readable.ndjson\"\nmode = \"0640\"\nfsync = false\n");
    std::fs::write(&s.config, text).unwrap();
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 022; exec {BIN} run --config {}",
            s.config.display()
        ))
        .env("AUDITSHIP_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let dir = s.dir.path();
    let wal = dir.join("state.db-wal");
    let started = Instant::now();
    while !(wal.exists() && dir.join("state.db-shm").exists() && lines_so_far(&s.out) > 100) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the agent did not start delivering"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mode = |name: &str| {
        std::fs::metadata(dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    for f in [
        "out.ndjson",
        "state.db",
        "state.db-wal",
        "state.db-shm",
        "state.db.lock",
    ] {
        assert_eq!(mode(f), 0o600, "{f}: {:o}", mode(f));
    }
    assert_eq!(mode("group/readable.ndjson"), 0o640);
    // A new umask-022 file next to them would be 0644: the test would see a umask that did not apply.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 022; touch {}/probe; stat -c %a {}/probe",
            dir.display(),
            dir.display()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "644");
    let _ = child.start_kill();
    let _ = child.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_restarts_a_source_stopped_by_a_permanent_error() {
    let cfg = backfill(&[Vendor::WasabiAir], 300, 1, 56);
    let sim = sim(cfg.clone()).await;
    // The vendor refuses the first request (a key revoked, then restored on its side).
    sim.inject_fault(Fault {
        vendor: Some("wasabi_air".into()),
        status: 401,
        retry_after: None,
        body: None,
        count: 1,
    });
    let port = free_port();
    let s = setup(
        &format!("listen = \"127.0.0.1:{port}\"\n"),
        &source_toml(&sim, &cfg, Vendor::WasabiAir, ""),
    );
    // The supervisor would start the source again by itself at retry_max_delay: make that
    // far off, so that only SIGHUP can have started it.
    let text = std::fs::read_to_string(&s.config).unwrap();
    assert!(text.contains("retry_max_delay = \"200ms\""));
    std::fs::write(
        &s.config,
        text.replace("retry_max_delay = \"200ms\"", "retry_max_delay = \"10m\""),
    )
    .unwrap();
    let child = spawn(&["run", "--config", s.config.to_str().unwrap()]);
    until(
        &format!("http://127.0.0.1:{port}/metrics"),
        Duration::from_secs(20),
        |_, b| b.contains("auditship_source_up{source=\"wasabi-air\"} 0"),
    )
    .await;
    assert!(
        read_lines(&s.out).is_empty(),
        "the source should have stopped"
    );
    // The file is unchanged: SIGHUP alone starts the stopped source again.
    signal(&child, "HUP");
    let want = truth(&sim, &cfg, Vendor::WasabiAir).len();
    wait_until(
        "the restarted source delivered",
        Duration::from_secs(30),
        || lines_so_far(&s.out) >= want,
    )
    .await;
    let stderr = stop(child);
    assert!(stderr.contains("source stopped"), "{stderr}");
    assert_exactly(
        &read_lines(&s.out),
        "wasabi-air",
        &truth(&sim, &cfg, Vendor::WasabiAir),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_whose_sink_cannot_be_opened_is_refused_and_delivery_goes_on() {
    let cfg = live_fast(&[Vendor::WasabiAir], 1_000, 20, 24, 57);
    let sim = sim(cfg.clone()).await;
    let port = free_port();
    let s = setup(
        &format!("listen = \"127.0.0.1:{port}\"\n"),
        &source_toml(&sim, &cfg, Vendor::WasabiAir, ""),
    );
    let original = std::fs::read_to_string(&s.config).unwrap();
    let child = spawn_on(&cfg, &s.config);
    more_lines_than(&s.out, 0, "nothing delivered").await;
    let refused = reloads(port, "refused").await;
    // A file sink whose directory cannot be created (its parent is a file): valid config, but
    // the sink cannot open. The reload must not take the agent down.
    std::fs::write(s.dir.path().join("blocker"), "").unwrap();
    replace(
        &s.config,
        &original.replace("path = \"out.ndjson\"", "path = \"blocker/out.ndjson\""),
    );
    reloaded(port, "refused", refused).await;
    let before = lines_so_far(&s.out);
    past_the_end(&cfg).await;
    let stderr = stop(child);
    assert!(
        stderr.contains("the new sinks cannot be opened"),
        "{stderr}"
    );
    let lines = read_lines(&s.out);
    assert!(
        lines.len() > before,
        "nothing flowed after the refused reload"
    );
    assert_exactly(&lines, "wasabi-air", &truth(&sim, &cfg, Vendor::WasabiAir));
}

/// A first run that is days behind shows its lag from the first scrape, before any poll has
/// completed, and `state` prints lags short enough for its table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_exported_from_the_first_scrape_and_state_prints_it_short() {
    let cfg = live(&[Vendor::WasabiAir], 500, 30 * 86_400, 0, 56);
    let sim = sim(cfg.clone()).await;
    // The first requests wait out a long Retry-After: the first poll cannot complete for a while.
    sim.inject_fault(Fault {
        vendor: Some("wasabi_air".into()),
        status: 429,
        retry_after: Some("4".into()),
        body: None,
        count: 2,
    });
    let port = free_port();
    let s = setup(
        &format!("listen = \"127.0.0.1:{port}\"\n"),
        &source_toml(&sim, &cfg, Vendor::WasabiAir, ""),
    );
    let child = spawn(&["run", "--config", s.config.to_str().unwrap()]);
    let base = format!("http://127.0.0.1:{port}");
    let lag = "auditship_cursor_lag_seconds{source=\"wasabi-air\"}";
    let (_, body) = until(
        &format!("{base}/metrics"),
        Duration::from_secs(20),
        |_, b| b.contains(lag),
    )
    .await;
    // Seen before any request succeeded, so before any window could complete.
    assert_eq!(
        metric(
            &body,
            "auditship_api_requests_total{source=\"wasabi-air\",class=\"2xx\"}"
        ),
        0,
        "the gauge appeared only once a request succeeded:\n{body}"
    );
    assert!(metric(&body, lag) >= 29 * 86_400, "{body}");
    // Then it catches up, and the gauge follows.
    until(
        &format!("{base}/metrics"),
        Duration::from_secs(30),
        |_, b| b.contains(lag) && metric(b, lag) < 600,
    )
    .await;
    stop(child);

    // A rewind to the future would stop the source without a word: refused.
    let out = run(
        &[
            "state",
            "reset",
            "wasabi-air",
            "--to",
            "2130-01-01T00:00:00Z",
            "--config",
            s.config.to_str().unwrap(),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("in the future"), "{stderr}");

    // `state` prints a lag of years in one short word.
    let out = run(
        &[
            "state",
            "reset",
            "wasabi-air",
            "--to",
            "2021-06-01T00:00:00Z",
            "--config",
            s.config.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["state", "--config", s.config.to_str().unwrap()], &[]);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    let row = table
        .lines()
        .find(|l| l.starts_with("wasabi-air"))
        .unwrap_or_else(|| panic!("{table}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    // SOURCE KIND CURSOR LAG DELIVERED DUPLICATES KEYS REQUESTS 429 WAITED
    assert_eq!(cols.len(), 10, "{table}");
    let lag = cols[3];
    assert!(
        lag.starts_with("5y") && lag.len() <= 6,
        "LAG {lag:?} in:\n{table}"
    );
}

/// A first run from a far `start` crosses the empty years without a commit (and an fsync) per
/// empty window: the state sees a commit per page of events, and few more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_windows_cost_no_commit_of_their_own() {
    let cfg = live(&[Vendor::DominoAudit], 3_000, 2 * 86_400, 0, 57);
    let sim = sim(cfg.clone()).await;
    let port = free_port();
    let from = format!("{:.3}", cfg.start);
    let source = source_toml(&sim, &cfg, Vendor::DominoAudit, "").replace(
        &format!("start = {from:?}"),
        "start = \"2021-01-01T00:00:00Z\"",
    );
    assert!(source.contains("2021-01-01"), "{source}");
    let s = setup(&format!("listen = \"127.0.0.1:{port}\"\n"), &source);
    let child = spawn(&["run", "--config", s.config.to_str().unwrap()]);
    let base = format!("http://127.0.0.1:{port}");
    let polls = "auditship_polls_total{source=\"domino-audit\",outcome=\"ok\"}";
    let (_, body) = until(
        &format!("{base}/metrics"),
        Duration::from_secs(60),
        |_, b| metric(b, polls) >= 1,
    )
    .await;
    stop(child);
    assert_exactly(
        &read_lines(&s.out),
        "domino-audit",
        &truth(&sim, &cfg, Vendor::DominoAudit),
    );
    let commits = metric(
        &body,
        "auditship_state_commits_total{source=\"domino-audit\"}",
    );
    let requests = metric(
        &body,
        "auditship_api_requests_total{source=\"domino-audit\",class=\"2xx\"}",
    );
    eprintln!("{commits} commits for {requests} requests");
    // 3,000 events are three pages of 1,000 (and windows cut finer); almost six years of empty
    // windows before them cost none.
    assert!(commits >= 3, "{commits} commits\n{body}");
    assert!(
        commits <= 20 && commits < requests,
        "{commits} commits for {requests} requests\n{body}"
    );
}

/// A receiver that refuses every batch for good (HTTP 400): each delivery to it is a sink error.
async fn refusing_receiver() -> u16 {
    use axum::http::StatusCode;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|| async { (StatusCode::BAD_REQUEST, "refused") });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// Every metric family with samples (events fetched, delivered and duplicated, requests of
/// every class that happened, retries, sink errors, polls, commits, lag, fetch latency), as a
/// running agent serves them, passes `promtool check metrics`; and the names and labels are
/// the ones README and deploy/ document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_with_every_family_sampled() {
    let cfg = live(
        &[Vendor::WasabiAir, Vendor::DominoAudit],
        2_000,
        60,
        120,
        58,
    );
    let sim = sim(cfg.clone()).await;
    // Two failures before the first page: retries and 5xx requests.
    sim.inject_fault(Fault {
        vendor: Some("wasabi_air".into()),
        status: 503,
        retry_after: None,
        body: None,
        count: 2,
    });
    let refusing = refusing_receiver().await;
    let port = free_port();
    let s = setup(
        &format!("listen = \"127.0.0.1:{port}\"\n"),
        &format!(
            "{}{}",
            source_toml(&sim, &cfg, Vendor::WasabiAir, ""),
            source_toml(&sim, &cfg, Vendor::DominoAudit, "")
        ),
    );
    // wasabi-air goes to the file sink only; domino-audit to a receiver that refuses it.
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        "[[sinks]]\nname = \"file\"\nkind = \"file\"\n",
        &format!(
            "[[sinks]]\nname = \"refusing\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{refusing}/\"\n\
             sources = [\"domino-audit\"]\n\n\
             [[sinks]]\nname = \"file\"\nkind = \"file\"\nsources = [\"wasabi-air\"]\n"
        ),
    );
    std::fs::write(&s.config, text).unwrap();
    let child = spawn(&["run", "--config", s.config.to_str().unwrap()]);
    let base = format!("http://127.0.0.1:{port}");
    let sampled = [
        "auditship_events_fetched_total{source=\"wasabi-air\"}",
        "auditship_events_delivered_total{source=\"wasabi-air\",sink=\"file\"}",
        "auditship_events_duplicate_total{source=\"wasabi-air\"}",
        "auditship_api_requests_total{source=\"wasabi-air\",class=\"2xx\"}",
        "auditship_api_requests_total{source=\"wasabi-air\",class=\"5xx\"}",
        "auditship_retries_total{component=\"source\",name=\"wasabi-air\"}",
        "auditship_sink_errors_total{sink=\"refusing\"}",
        "auditship_polls_total{source=\"wasabi-air\",outcome=\"ok\"}",
        "auditship_polls_total{source=\"domino-audit\",outcome=\"error\"}",
        "auditship_state_commits_total{source=\"wasabi-air\"}",
        "auditship_last_poll_success_timestamp_seconds{source=\"wasabi-air\"}",
        "auditship_source_up{source=\"domino-audit\"}",
        "auditship_cursor_lag_seconds{source=\"domino-audit\"}",
        "auditship_page_fetch_seconds_bucket{source=\"wasabi-air\",le=\"+Inf\"}",
        "auditship_page_fetch_seconds_sum{source=\"wasabi-air\"}",
        "auditship_page_fetch_seconds_count{source=\"domino-audit\"}",
    ];
    let (_, body) = until(
        &format!("{base}/metrics"),
        Duration::from_secs(30),
        |_, b| {
            sampled.iter().all(|m| b.lines().any(|l| l.starts_with(m)))
                && metric(b, sampled[1]) > 0
                && metric(b, sampled[6]) > 0
        },
    )
    .await;
    stop(child);
    // Every documented family has HELP and TYPE once, and samples.
    for (family, kind) in [
        ("auditship_events_fetched_total", "counter"),
        ("auditship_events_delivered_total", "counter"),
        ("auditship_events_duplicate_total", "counter"),
        ("auditship_api_requests_total", "counter"),
        ("auditship_retries_total", "counter"),
        ("auditship_api_rate_limited_total", "counter"),
        ("auditship_credential_wait_seconds_total", "counter"),
        ("auditship_credential_pace_requests_per_second", "gauge"),
        ("auditship_sink_errors_total", "counter"),
        ("auditship_polls_total", "counter"),
        ("auditship_state_commits_total", "counter"),
        ("auditship_last_poll_success_timestamp_seconds", "gauge"),
        ("auditship_source_up", "gauge"),
        ("auditship_events_queued_total", "counter"),
        ("auditship_sink_batches_total", "counter"),
        ("auditship_sink_queue_events", "gauge"),
        ("auditship_sink_queue_bytes", "gauge"),
        ("auditship_sink_queue_limit_bytes", "gauge"),
        ("auditship_sink_queue_full", "gauge"),
        ("auditship_sink_queue_oldest_age_seconds", "gauge"),
        ("auditship_sink_records_rejected_total", "counter"),
        ("auditship_cursor_lag_seconds", "gauge"),
        ("auditship_page_fetch_seconds", "histogram"),
        ("auditship_sink_up", "gauge"),
        ("auditship_sink_last_success_timestamp_seconds", "gauge"),
        ("auditship_reloads_total", "counter"),
        ("auditship_build_info", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        let type_line = format!("# TYPE {family} {kind}");
        assert_eq!(
            body.lines().filter(|l| *l == type_line).count(),
            1,
            "{type_line}\n{body}"
        );
        assert!(
            body.lines()
                .filter(|l| l.starts_with(&format!("# HELP {family} ")))
                .count()
                == 1,
            "HELP of {family}\n{body}"
        );
        assert!(
            body.lines()
                .any(|l| !l.starts_with('#') && l.starts_with(family)),
            "no sample of {family}\n{body}"
        );
    }
    let (status, report) = promtool(&body);
    assert!(
        status.success() && report.trim().is_empty(),
        "promtool check metrics: {status:?}\n{report}\non:\n{body}"
    );
}

/// An HTTP sink whose receiver answers 401 for longer than `unready_after`: `/readyz` is not
/// ready, naming the sink and the refusal, and `auditship_sink_up` is 0 for it (1 for the file
/// sink beside it). Every counter an alert would take `increase()` of is there at 0 from the
/// first scrape, before anything happened to it (a series that appears at 1 shows no increase);
/// a refused reload is counted. (The build before this answered 200 and had no such series.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_refused_for_longer_than_unready_after_is_seen_and_counters_start_at_zero() {
    use axum::http::StatusCode;
    let cfg = live(&[Vendor::WasabiAir], 2_000, 60, 120, 59);
    let sim = sim(cfg.clone()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let siem = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|| async {
        (
            StatusCode::UNAUTHORIZED,
            "{\"text\":\"Invalid token\",\"code\":4}",
        )
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let port = free_port();
    let s = setup(
        &format!("listen = \"127.0.0.1:{port}\"\nunready_after = \"3s\"\n"),
        &source_toml(&sim, &cfg, Vendor::WasabiAir, ""),
    );
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text.push_str(&format!(
        "\n[[sinks]]\nname = \"siem\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{siem}/\"\n"
    ));
    std::fs::write(&s.config, &text).unwrap();
    let child = spawn(&["run", "--config", s.config.to_str().unwrap()]);
    let base = format!("http://127.0.0.1:{port}");
    let (_, first) = until(
        &format!("{base}/metrics"),
        Duration::from_secs(20),
        |s, _| s == 200,
    )
    .await;
    for series in [
        "auditship_sink_errors_total{sink=\"siem\"}",
        "auditship_sink_errors_total{sink=\"file\"}",
        "auditship_retries_total{component=\"sink\",name=\"file\"}",
        "auditship_retries_total{component=\"source\",name=\"wasabi-air\"}",
        "auditship_source_restarts_total{source=\"wasabi-air\",reason=\"refused\"}",
        "auditship_source_restarts_total{source=\"wasabi-air\",reason=\"panic\"}",
        "auditship_api_requests_total{source=\"wasabi-air\",class=\"4xx\"}",
        "auditship_api_requests_total{source=\"wasabi-air\",class=\"5xx\"}",
        "auditship_api_requests_total{source=\"wasabi-air\",class=\"error\"}",
        "auditship_polls_total{source=\"wasabi-air\",outcome=\"error\"}",
        "auditship_events_delivered_total{source=\"wasabi-air\",sink=\"siem\"}",
        "auditship_reloads_total{outcome=\"refused\"}",
        "auditship_reloads_total{outcome=\"applied\"}",
        "auditship_sink_up{sink=\"siem\"}",
        "auditship_sink_batches_total{sink=\"siem\",outcome=\"held\"}",
    ] {
        assert!(
            first.lines().any(|l| l.starts_with(series)),
            "{series} missing from the first scrape:\n{first}"
        );
    }
    assert!(
        first
            .lines()
            .any(|l| l.starts_with("auditship_build_info{version=\"") && l.ends_with("} 1")),
        "{first}"
    );
    let (_, body) = until(
        &format!("{base}/readyz"),
        Duration::from_secs(30),
        |s, b| s == 503 && b.contains("sink siem"),
    )
    .await;
    assert!(
        body.contains("401") && body.contains("Invalid token"),
        "{body}"
    );
    let (_, m) = until(
        &format!("{base}/metrics"),
        Duration::from_secs(10),
        |_, b| b.contains("auditship_sink_up{sink=\"siem\"} 0"),
    )
    .await;
    assert!(m.contains("auditship_sink_up{sink=\"file\"} 1"), "{m}");
    assert!(
        metric(&m, "auditship_sink_errors_total{sink=\"siem\"}") > 0,
        "{m}"
    );
    // The refused sink's deliveries fail and stay queued; the file's go through.
    let batches = |sink: &str, outcome: &str| {
        metric(
            &m,
            &format!("auditship_sink_batches_total{{sink=\"{sink}\",outcome=\"{outcome}\"}}"),
        )
    };
    assert!(batches("siem", "failed") > 0, "{m}");
    assert_eq!(batches("siem", "delivered"), 0, "{m}");
    assert!(batches("file", "delivered") > 0, "{m}");

    // A broken edit of the config is refused, and counted.
    std::fs::write(&s.config, format!("{text}\n[agent.oops\n")).unwrap();
    until(
        &format!("{base}/metrics"),
        Duration::from_secs(10),
        |_, b| metric(b, "auditship_reloads_total{outcome=\"refused\"}") >= 1,
    )
    .await;
    stop(child);
}

/// The check above can fail: promtool refuses what a hand-written exposition could get wrong.
#[test]
fn promtool_refuses_a_broken_exposition() {
    let broken =
        "# HELP auditship_x Things.\n# TYPE auditship_x counter\nauditship_x{source=\"a\"} 1\n";
    let (status, report) = promtool(broken);
    assert!(
        !status.success() && report.contains("_total"),
        "promtool accepted a counter without _total: {status:?} {report}"
    );
}

/// What an operator reads must be true: a misspelt `AUDITSHIP_LOG_FORMAT` is refused (not
/// silently text); in JSON mode a config error is a JSON line; a run ends with a final line;
/// `state` does not call a source that polled and found nothing "never polled"; credentials in
/// an `http://` URL are warned about; `check --connect` fails when the state cannot be written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_facing_messages_tell_the_truth() {
    let now = Timestamp::now();
    let cfg = SimConfig {
        seed: 60,
        start: now - SignedDuration::from_hours(2),
        end: now - SignedDuration::from_hours(1),
        events: 0,
        vendors: vec![Vendor::WasabiAir],
        ..SimConfig::default()
    };
    let sim = sim(cfg.clone()).await;
    let s = setup("", &source_toml(&sim, &cfg, Vendor::WasabiAir, ""));
    let config = s.config.to_str().unwrap();
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    let out = run(
        &["run", "--once", "--config", config],
        &[("AUDITSHIP_LOG_FORMAT", "jsn")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("AUDITSHIP_LOG_FORMAT=\"jsn\" is not a log format: one of text, json"),
        "{}",
        text(&out)
    );

    let broken = s.dir.path().join("broken.toml");
    std::fs::write(&broken, "[agent]\npoll_interval = \"soon\"\n").unwrap();
    let out = run(
        &["run", "--once", "--config", broken.to_str().unwrap()],
        &[("AUDITSHIP_LOG_FORMAT", "json")],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.trim().is_empty());
    for line in stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line in JSON mode ({e}): {line}"));
        if v["level"] == "ERROR" {
            assert!(
                v["error"].as_str().unwrap().contains("agent.poll_interval"),
                "{line}"
            );
        }
    }

    // A source that polled and was refused (a wrong key) has committed nothing: `state` says
    // so, not "never polled"; the run still ends with its final line.
    let good = std::fs::read_to_string(&s.config).unwrap();
    let bad: String = good
        .lines()
        .map(|l| {
            if l.starts_with("api_key = ") {
                "api_key = \"wrong\""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(bad, good);
    std::fs::write(&s.config, &bad).unwrap();
    let out = run(&["run", "--once", "--config", config], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("auditship stopped"), "{}", text(&out));
    let out = run(&["state", "--config", config], &[]);
    assert!(
        text(&out).contains("nothing committed yet"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("never polled"), "{}", text(&out));
    std::fs::write(&s.config, &good).unwrap();

    // A sink URL with credentials over plain http.
    let mut with_http = std::fs::read_to_string(&s.config).unwrap();
    with_http.push_str(
        "\n[[sinks]]\nname = \"collector\"\nkind = \"http\"\nurl = \"http://shipper:pa55word@127.0.0.1:9/in\"\n",
    );
    std::fs::write(&s.config, &with_http).unwrap();
    let out = run(&["check", "--config", config], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out)
            .contains("sink collector: its url carries a user name and password over plain http"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("pa55word"), "{}", text(&out));

    // The state's directory cannot be made (its parent is a file): check --connect says so.
    let blocker = s.dir.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let without_http = with_http
        .split("\n[[sinks]]\nname = \"collector\"")
        .next()
        .unwrap();
    std::fs::write(
        &s.config,
        without_http.replace(
            "state_path = \"state.db\"",
            "state_path = \"not-a-dir/state.db\"",
        ),
    )
    .unwrap();
    let out = run(&["check", "--connect", "--config", config], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("state: cannot write in"),
        "{}",
        text(&out)
    );
}

/// `check` warns when the sinks' queues could outgrow the state's file system: two sinks of
/// 1 TiB each against a test machine's disk; none with the default limits.
#[test]
fn check_warns_when_the_queues_could_fill_the_states_disk() {
    let s = setup(
        "",
        "[[sources]]\nname = \"air\"\nkind = \"wasabi_air\"\nurl = \"http://127.0.0.1:9\"\napi_key = \"k\"\n",
    );
    let check = || run(&["check", "--config", s.config.to_str().unwrap()], &[]);
    let out = check();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("queues may hold"));
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        format!(
            "{text}queue_max_bytes = 1099511627776\n[[sinks]]\nname = \"out\"\nkind = \"stdout\"\nqueue_max_bytes = 1099511627776\n"
        ),
    )
    .unwrap();
    let out = check();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("warning: the sinks' queues may hold up to 2199023255552 bytes together"),
        "{said}"
    );
}
