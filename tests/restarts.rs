//! Nothing doubled, nothing lost, as users run the agent: dense backfills, restarts (SIGTERM and
//! SIGKILL) and hot reloads while events keep arriving, late arrivals — under every answer the
//! vendor docs leave open: an inclusive `end`, ties in a new order in every response, pages not
//! sorted by time.

mod common;

use std::time::Duration;

use auditship_sim::{Answers, SimConfig, SimHandle, Vendor};
use common::*;
use jiff::{SignedDuration, Timestamp};

/// The answer variants every test here runs under.
fn variant(name: &str) -> Answers {
    match name {
        "documented" => Answers::default(),
        "inclusive_end" => Answers {
            inclusive_end: true,
            ..Answers::default()
        },
        "shuffled_ties" => Answers {
            shuffle_ties: true,
            ..Answers::default()
        },
        "inclusive_end_shuffled_ties" => Answers {
            inclusive_end: true,
            shuffle_ties: true,
            ..Answers::default()
        },
        "unsorted" => Answers {
            unsorted: true,
            inclusive_end: true,
            ..Answers::default()
        },
        other => panic!("no variant {other}"),
    }
}

/// An agent config as the reproduction has it: poll every second, lag 2 s, overlap 60 s,
/// a file sink, fast retries.
fn config(sim: &SimHandle, cfg: &SimConfig, vendors: &[Vendor], agent_extra: &str) -> Setup {
    let sources: String = vendors
        .iter()
        .map(|v| source_toml(sim, cfg, *v, ""))
        .collect();
    setup_timed(
        "poll_interval = \"1s\"\nlag = \"2s\"\noverlap = \"60s\"\nretry_max_attempts = 30",
        agent_extra,
        &sources,
    )
}

/// A live emulator: `rate` events a second from `back` seconds ago until `ahead` from now.
fn live(
    vendors: &[Vendor],
    rate: u64,
    back: i64,
    ahead: i64,
    seed: u64,
    answers: Answers,
) -> SimConfig {
    let now = Timestamp::now();
    SimConfig {
        seed,
        start: now - SignedDuration::from_secs(back),
        end: now + SignedDuration::from_secs(ahead),
        events: rate * (back + ahead) as u64,
        vendors: vendors.to_vec(),
        twin_fraction: 0.02,
        answers,
        ..SimConfig::default()
    }
}

/// How many lines `source` delivered against how many true entries: the figures a run prints.
fn report(lines: &[serde_json::Value], source: &str, truth: &[String]) -> String {
    let got = lines.iter().filter(|e| e["source"] == source).count();
    format!("{source}: {got} lines for {} true entries", truth.len())
}

/// Waits until the live span, its late arrivals and the lag are over.
async fn until_settled(cfg: &SimConfig) {
    let settled =
        cfg.end + SignedDuration::try_from(cfg.late_max).unwrap() + SignedDuration::from_secs(4);
    while Timestamp::now() < settled {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn dense_backfill(variant_name: &str, seed: u64) {
    // 40,000 entries in 4 hours: about three a second, so most pages end inside a second.
    let vendors = [Vendor::Domo, Vendor::DominoAudit];
    let base = backfill(&vendors, 40_000, 1, seed);
    let cfg = SimConfig {
        start: base.end - SignedDuration::from_hours(4),
        answers: variant(variant_name),
        twin_fraction: 0.02,
        ..base
    };
    let sim = sim(cfg.clone()).await;
    let s = config(&sim, &cfg, &vendors, "");
    let out = once_ok(&s);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let lines = read_lines(&s.out);
    for v in vendors {
        let truth = truth(&sim, &cfg, v);
        eprintln!("{variant_name}: {}", report(&lines, &name(v), &truth));
        assert_exactly(&lines, &name(v), &truth);
    }
    // A second pass adds nothing.
    once_ok(&s);
    assert_eq!(read_lines(&s.out).len(), lines.len(), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dense_backfill_documented() {
    dense_backfill("documented", 101).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dense_backfill_inclusive_end() {
    dense_backfill("inclusive_end", 102).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dense_backfill_shuffled_ties() {
    dense_backfill("inclusive_end_shuffled_ties", 103).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dense_backfill_unsorted() {
    dense_backfill("unsorted", 104).await;
}

/// The daemon under live traffic, stopped with `sig` every few seconds and started again, then a
/// last `--once`: every entry exactly once.
async fn restarts_under_live_traffic(variant_name: &str, sig: &str, vendors: &[Vendor], seed: u64) {
    let mut cfg = live(vendors, 40, 60, 25, seed, variant(variant_name));
    cfg.late_fraction = 0.1;
    cfg.late_max = Duration::from_secs(5);
    // Domo tokens expire every few seconds, some of them mid-window.
    cfg.domo_token_ttl = Duration::from_secs(5);
    let sim = sim(cfg.clone()).await;
    let s = config(&sim, &cfg, vendors, "");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut restarts = 0;
    while Timestamp::now() < cfg.end {
        let mut child = spawn(&["run", "--config", s.config.to_str().unwrap()]);
        tokio::time::sleep(Duration::from_millis(rng.u64(2_000..7_000))).await;
        signal(&child, sig);
        let status = wait_for(&mut child, Duration::from_secs(20));
        let out = child.wait_with_output().unwrap();
        if sig == "TERM" {
            assert!(
                status.success(),
                "{status:?}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        restarts += 1;
    }
    until_settled(&cfg).await;
    once_ok(&s);
    let lines = read_lines(&s.out);
    for v in vendors {
        let truth = truth(&sim, &cfg, *v);
        eprintln!(
            "{variant_name}, {restarts} × SIG{sig}: {}",
            report(&lines, &name(*v), &truth)
        );
        assert_exactly(&lines, &name(*v), &truth);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_restarts_under_live_traffic_documented() {
    restarts_under_live_traffic("documented", "TERM", &[Vendor::Domo], 201).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_restarts_under_live_traffic_inclusive_end() {
    restarts_under_live_traffic("inclusive_end", "TERM", &[Vendor::Domo], 202).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_restarts_under_live_traffic_shuffled_ties() {
    restarts_under_live_traffic("inclusive_end_shuffled_ties", "TERM", &[Vendor::Domo], 203).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restarts_under_live_traffic_all_vendors_shuffled_ties() {
    restarts_under_live_traffic("shuffled_ties", "KILL", &Vendor::ALL, 204).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restarts_under_live_traffic_all_vendors_unsorted() {
    restarts_under_live_traffic("unsorted", "KILL", &Vendor::ALL, 205).await;
}

/// A ConfigMap roll: the config file edited every few seconds under live traffic, no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reloads_under_live_traffic_double_nothing() {
    let cfg = live(
        &[Vendor::Domo],
        40,
        70,
        30,
        301,
        variant("inclusive_end_shuffled_ties"),
    );
    let sim = sim(cfg.clone()).await;
    let s = config(&sim, &cfg, &[Vendor::Domo], "");
    let original = std::fs::read_to_string(&s.config).unwrap();
    let mut child = spawn(&["run", "--config", s.config.to_str().unwrap()]);
    let mut rng = fastrand::Rng::with_seed(301);
    let mut edits = 0;
    while Timestamp::now() < cfg.end {
        tokio::time::sleep(Duration::from_millis(rng.u64(3_000..6_000))).await;
        edits += 1;
        // Each edit changes the source's poll interval: the source is stopped and started anew.
        let interval = if edits % 2 == 1 { "900ms" } else { "1s" };
        let text = original.replace(
            "poll_interval = \"1s\"",
            &format!("poll_interval = \"{interval}\""),
        );
        let tmp = s.config.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &s.config).unwrap();
    }
    until_settled(&cfg).await;
    signal(&child, "TERM");
    let status = wait_for(&mut child, Duration::from_secs(20));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("configuration reloaded"), "{stderr}");
    let lines = read_lines(&s.out);
    let truth = truth(&sim, &cfg, Vendor::Domo);
    eprintln!("{edits} reloads: {}", report(&lines, "domo", &truth));
    assert_exactly(&lines, "domo", &truth);
}

/// A first run from a far `start` (windows grow across the empty years, then one window holds
/// all the data) killed at random points while it reads the dense part, ties shuffled and the
/// end inclusive: every entry exactly once in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_far_start_backfill() {
    let vendors = [Vendor::Domo, Vendor::DominoAudit];
    let base = backfill(&vendors, 30_000, 1, 401);
    let cfg = SimConfig {
        start: base.end - SignedDuration::from_hours(3),
        answers: variant("inclusive_end_shuffled_ties"),
        ..base
    };
    let sim = sim(cfg.clone()).await;
    let from = format!("{:.3}", cfg.start);
    let sources: String = vendors
        .iter()
        .map(|v| {
            source_toml(&sim, &cfg, *v, "page_size = 200\n").replace(
                &format!("start = {from:?}"),
                "start = \"2020-01-01T00:00:00Z\"",
            )
        })
        .collect();
    assert_eq!(sources.matches("2020-01-01").count(), 2, "{sources}");
    let s = setup_timed(
        "poll_interval = \"1s\"\nlag = \"2s\"\noverlap = \"60s\"\nretry_max_attempts = 30",
        "",
        &sources,
    );
    let mut rng = fastrand::Rng::with_seed(401);
    let sizes = kill_at_random_points(&s, &mut rng, 12, 900);
    once_ok(&s);
    let lines = read_lines(&s.out);
    for v in vendors {
        let truth = truth(&sim, &cfg, v);
        eprintln!(
            "far start, {} × SIGKILL: {}",
            sizes.len(),
            report(&lines, &name(v), &truth)
        );
        assert_exactly(&lines, &name(v), &truth);
    }
    assert!(sizes.len() >= 3, "only {} kills landed", sizes.len());
}
