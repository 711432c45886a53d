//! The file sink's built-in rotation (`rotate_max_bytes`, `rotate_keep`): it rotates at the size,
//! keeps `rotate_keep` rotated files with the sink's `mode`, and keeps the exactly-once promise
//! across a crash at any point of a rotation — the real binary against the emulators.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use auditship_sim::{SimConfig, Vendor};
use common::*;
use serde_json::Value;

/// A config reading Wasabi AiR from `sim` into `out.ndjson`, rotated at `max_bytes` keeping
/// `keep` rotated files, with `extra` sink lines.
fn rotating(
    sim: &auditship_sim::SimHandle,
    cfg: &SimConfig,
    max_bytes: u64,
    keep: u64,
    extra: &str,
) -> Setup {
    let s = setup_timed(
        "lag = \"1s\"\noverlap = \"10s\"\npoll_interval = \"1s\"\nretry_max_attempts = 20",
        "",
        &source_toml(sim, cfg, Vendor::WasabiAir, "page_size = 50\n"),
    );
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text.push_str(&format!(
        "rotate_max_bytes = {max_bytes}\nrotate_keep = {keep}\n{extra}"
    ));
    std::fs::write(&s.config, text).unwrap();
    s
}

/// The rotated files of `out` (`out.N`), oldest first, with their generation.
fn rotated(out: &Path) -> Vec<(u64, PathBuf)> {
    let base = out.file_name().unwrap().to_str().unwrap().to_string();
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_str()?.to_string();
            let g = name.strip_prefix(&format!("{base}."))?.parse().ok()?;
            Some((g, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// Every event in the rotated files and the current one, oldest file first.
fn all_events(out: &Path) -> Vec<Value> {
    let mut events = Vec::new();
    for (_, p) in rotated(out) {
        events.extend(read_lines(&p));
    }
    events.extend(read_lines(out));
    events
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The file rotates once it holds `rotate_max_bytes` (never splitting a page, so each rotated
/// file holds at least that much), every file gets the sink's `mode`, and across all of them
/// every event is there exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotates_at_the_size_with_the_mode_and_loses_or_doubles_nothing() {
    let cfg = backfill(&[Vendor::WasabiAir], 2_000, 1, 901);
    let sim = sim(cfg.clone()).await;
    let max = 40_000;
    let s = rotating(&sim, &cfg, max, 1024, "mode = \"0640\"\n");
    once_ok(&s);
    let files = rotated(&s.out);
    assert!(files.len() >= 5, "{files:?}");
    for (i, (g, p)) in files.iter().enumerate() {
        assert_eq!(*g, i as u64, "generations count up from 0: {files:?}");
        let len = std::fs::metadata(p).unwrap().len();
        assert!(len >= max, "{} holds {len} bytes, under {max}", p.display());
        assert_eq!(mode(p), 0o640, "{}", p.display());
    }
    assert_eq!(mode(&s.out), 0o640);
    assert!(std::fs::metadata(&s.out).unwrap().len() < max + 50_000);
    assert_exactly(
        &all_events(&s.out),
        &name(Vendor::WasabiAir),
        &truth(&sim, &cfg, Vendor::WasabiAir),
    );
}

/// `rotate_keep` rotated files are kept, the newest ones; older ones are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_rotate_keep_files_the_newest() {
    let cfg = backfill(&[Vendor::WasabiAir], 2_000, 1, 902);
    let sim = sim(cfg.clone()).await;
    let s = rotating(&sim, &cfg, 40_000, 2, "");
    once_ok(&s);
    let files = rotated(&s.out);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files[0].0 >= 3, "older generations were deleted: {files:?}");
    assert_eq!(files[1].0, files[0].0 + 1, "{files:?}");
    for (_, p) in &files {
        assert_eq!(mode(p), 0o600, "the default mode: {}", p.display());
    }
}

/// A crash at each point of a rotation — before the rename, after it (no new file yet, the
/// rename undone at the restart), and after the new file is recorded and written but its page
/// not committed (the page cut at the restart) — then a restart: every event exactly once
/// across the current file and the rotated ones, and no file torn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_each_point_of_a_rotation_loses_and_doubles_nothing() {
    let cfg = backfill(&[Vendor::WasabiAir], 1_500, 1, 903);
    let sim = sim(cfg.clone()).await;
    let truth = truth(&sim, &cfg, Vendor::WasabiAir);
    for point in ["before_rename", "after_rename", "after_write"] {
        let s = rotating(&sim, &cfg, 30_000, 1024, "");
        let config = s.config.to_str().unwrap();
        let out = run(
            &["run", "--once", "--config", config],
            &[("AUDITSHIP_TEST_CRASH_AT", point)],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code().is_none()
                && stderr.contains(&format!("AUDITSHIP_TEST_CRASH_AT={point}: aborting")),
            "{point}: the run did not crash there: {:?}\n{stderr}",
            out.status
        );
        let before = rotated(&s.out);
        match point {
            "before_rename" => assert!(before.is_empty(), "{point}: {before:?}"),
            "after_rename" => {
                assert_eq!(before.len(), 1, "{point}: {before:?}");
                assert!(!s.out.exists(), "{point}: no new file yet");
            }
            _ => {
                assert_eq!(before.len(), 1, "{point}: {before:?}");
                assert!(
                    !read_lines(&s.out).is_empty(),
                    "{point}: a page in the new file"
                );
            }
        }
        let out = once_ok(&s);
        let stderr = String::from_utf8_lossy(&out.stderr);
        match point {
            // The rename was not recorded yet: undone.
            "after_rename" => assert!(
                stderr.contains("undid a rotation that was not committed"),
                "{point}: {stderr}"
            ),
            // The new file was recorded before the page went in: its uncommitted page is cut.
            "after_write" => assert!(
                stderr.contains("truncated an uncommitted tail")
                    && !stderr.contains("undid a rotation"),
                "{point}: {stderr}"
            ),
            _ => {}
        }
        assert!(rotated(&s.out).len() >= 3, "{point}: it went on rotating");
        assert_exactly(&all_events(&s.out), &name(Vendor::WasabiAir), &truth);
    }
}

/// SIGKILL at random moments of a live backfill with a small rotation size (so that many kills
/// land near a rotation), at least ten times, then a run to the end: every event exactly once
/// across all the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_while_rotating_loses_and_doubles_nothing() {
    let cfg = SimConfig {
        latency: Duration::from_millis(15),
        ..backfill(&[Vendor::WasabiAir], 12_000, 1, 904)
    };
    let sim = sim(cfg.clone()).await;
    let s = rotating(&sim, &cfg, 20_000, 1024, "");
    let mut rng = fastrand::Rng::with_seed(904);
    let sizes = kill_at_random_points(&s, &mut rng, 12, 900);
    assert!(sizes.len() >= 10, "only {} kills landed", sizes.len());
    once_ok(&s);
    assert!(rotated(&s.out).len() >= 20, "{:?}", rotated(&s.out).len());
    assert_exactly(
        &all_events(&s.out),
        &name(Vendor::WasabiAir),
        &truth(&sim, &cfg, Vendor::WasabiAir),
    );
}
