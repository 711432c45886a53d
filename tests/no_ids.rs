//! The two sources without event ids — Domo's activity log and Domino's data-source audit —
//! end to end against their emulators: content + occurrence keys, identical twins, tokens that
//! expire, wall-clock times across daylight-saving changes, and adaptive windows.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use auditship_sim::{SimConfig, Vendor};
use common::*;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

const NO_IDS: [Vendor; 2] = [Vendor::Domo, Vendor::DominoDatasource];

/// How many raw entries of the truth occur more than once (identical twins).
fn twins(truth: &[String]) -> usize {
    let mut n: HashMap<&str, usize> = HashMap::new();
    for t in truth {
        *n.entry(t.as_str()).or_default() += 1;
    }
    n.values().filter(|c| **c > 1).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_day_backfill_with_identical_twins_is_complete_and_a_second_once_adds_nothing() {
    let cfg = SimConfig {
        twin_fraction: 0.05,
        ..backfill(&NO_IDS, 12_000, 3, 41)
    };
    let sim = sim(cfg.clone()).await;
    let sources: String = NO_IDS
        .iter()
        .map(|v| source_toml(&sim, &cfg, *v, ""))
        .collect();
    let s = setup("", &sources);
    once_ok(&s);
    let lines = read_lines(&s.out);
    for v in NO_IDS {
        let truth = truth(&sim, &cfg, v);
        assert!(
            twins(&truth) > 100,
            "{}: the data set has too few twins to test",
            v.as_str()
        );
        assert_exactly(&lines, &name(v), &truth);
    }
    let len = std::fs::metadata(&s.out).unwrap().len();
    once_ok(&s);
    assert_eq!(
        std::fs::metadata(&s.out).unwrap().len(),
        len,
        "second --once delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domo_token_that_expires_mid_run_is_renewed() {
    let cfg = SimConfig {
        domo_token_ttl: Duration::from_secs(3),
        ..backfill(&[Vendor::Domo], 20_000, 2, 42)
    };
    let sim = sim(cfg.clone()).await;
    let s = setup(
        "",
        &source_toml(&sim, &cfg, Vendor::Domo, "page_size = 100\n"),
    );
    let config = s.config.to_str().unwrap().to_string();
    let runner = std::thread::spawn(move || run(&["run", "--once", "--config", &config], &[]));
    // Revoke every token a few times while the backfill runs (the 401 path), on top of the
    // short lifetime (the renew-before-expiry path).
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        sim.expire_tokens();
    }
    let out = runner.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("renewing the token"),
        "the 401 path was not taken:\n{stderr}"
    );
    assert!(sim.stats().tokens_issued >= 3, "{:?}", sim.stats());
    assert_exactly(
        &read_lines(&s.out),
        "domo",
        &truth(&sim, &cfg, Vendor::Domo),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domo_filters_reach_the_api() {
    let cfg = backfill(&[Vendor::Domo], 3_000, 1, 9);
    let sim = sim(cfg.clone()).await;
    let all = truth(&sim, &cfg, Vendor::Domo);
    let user_of = |raw: &String| {
        let v: Value = serde_json::from_str(raw).unwrap();
        v["userId"].as_str().unwrap().to_string()
    };
    let user = user_of(&all[0]);
    let theirs: Vec<String> = all.iter().filter(|r| user_of(r) == user).cloned().collect();
    assert!(
        theirs.len() < all.len(),
        "the filter must leave something out"
    );
    let s = setup(
        "",
        &source_toml(
            &sim,
            &cfg,
            Vendor::Domo,
            &format!("[sources.filters]\nuser = {user:?}\n"),
        ),
    );
    once_ok(&s);
    assert_exactly(&read_lines(&s.out), "domo", &theirs);
}

/// Checks every delivered Domo event's `time` is the instant the emulator generated it at.
fn assert_true_instants(sim: &auditship_sim::SimHandle, lines: &[Value]) {
    for e in lines {
        let t = t(e["time"].as_str().unwrap());
        let at_that_second = sim.events(Vendor::Domo, t, t + SignedDuration::from_secs(1));
        assert!(
            at_that_second
                .iter()
                .any(|r| serde_json::from_str::<Value>(r).unwrap() == e["raw"]),
            "{} was generated at another instant than {t}",
            e["raw"]["time"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domo_in_america_denver_across_both_dst_changes_yields_the_right_instants() {
    let denver = jiff::tz::TimeZone::get("America/Denver").unwrap();
    // The two most recent changes (the agent reads from the span's start to now, so a span long
    // past would have it poll every window since): the autumn one repeats 01:00–02:00 local;
    // the spring one skips 02:00–03:00.
    let changes: Vec<jiff::Timestamp> = denver
        .preceding(jiff::Timestamp::now() - jiff::SignedDuration::from_hours(48))
        .take(2)
        .map(|c| c.timestamp())
        .collect();
    for change in changes {
        let at = t(&change.to_string());
        let (from, to) = (
            at - SignedDuration::from_hours(14),
            at + SignedDuration::from_hours(10),
        );
        let cfg = SimConfig {
            start: from,
            end: to,
            events: 8_000,
            vendors: vec![Vendor::Domo],
            domo_time_zone: denver.clone(),
            twin_fraction: 0.03,
            ..SimConfig::default()
        };
        let sim = sim(cfg.clone()).await;
        let s = setup(
            "",
            &source_toml(&sim, &cfg, Vendor::Domo, "time_zone = \"America/Denver\"\n"),
        );
        once_ok(&s);
        let lines = read_lines(&s.out);
        let truth = truth(&sim, &cfg, Vendor::Domo);
        assert_exactly(&lines, "domo", &truth);
        assert_true_instants(&sim, &lines);
        // The repeated hour (the autumn change, at 08:00Z) really held events on both sides of
        // the change.
        let hour = SignedDuration::from_hours(1);
        if at.strftime("%H:%M").to_string() == "08:00" {
            let in_repeat = |lo: Timestamp| {
                lines
                    .iter()
                    .filter(|e| (lo..lo + hour).contains(&t(e["time"].as_str().unwrap())))
                    .count()
            };
            assert!(in_repeat(at - hour) > 50);
            assert!(in_repeat(at) > 50);
        } else {
            assert_eq!(
                at.strftime("%H:%M").to_string(),
                "09:00",
                "the spring change"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_data_source_shrinks_its_window_and_loses_nothing() {
    let cfg = backfill(&[Vendor::DominoDatasource], 15_000, 1, 43);
    let sim = sim(cfg.clone()).await;
    // ~52 events per default 5-minute window; a cap of 20 forces halving, again and again.
    let s = setup(
        "",
        &source_toml(
            &sim,
            &cfg,
            Vendor::DominoDatasource,
            "max_response_events = 20\n",
        ),
    );
    once_ok(&s);
    assert_exactly(
        &read_lines(&s.out),
        "domino-datasource",
        &truth(&sim, &cfg, Vendor::DominoDatasource),
    );
    let requests = sim.stats().requests["domino_datasource"];
    assert!(
        requests > 288 * 2,
        "the window did not shrink: {requests} requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_backfill_then_restart_loses_and_doubles_nothing() {
    let cfg = SimConfig {
        twin_fraction: 0.05,
        ..backfill(&NO_IDS, 25_000, 2, 44)
    };
    let sim = sim(cfg.clone()).await;
    let sources: String = NO_IDS
        .iter()
        .map(|v| source_toml(&sim, &cfg, *v, "page_size = 200\n"))
        .collect();
    let s = setup("", &sources);
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, text.replace("fsync = false", "fsync = true")).unwrap();
    let mut rng = fastrand::Rng::new();
    let kills = kill_at_random_points(&s, &mut rng, 8, 400).len();
    assert!(kills >= 5, "only {kills} kills landed");
    once_ok(&s);
    let lines = read_lines(&s.out);
    for v in NO_IDS {
        assert_exactly(&lines, &name(v), &truth(&sim, &cfg, v));
    }
}

/// The last autumn change of America/Denver before two days ago, as an instant: its repeated
/// hour is local 01:00–02:00, from `change − 1h` to `change + 1h` in UTC.
fn last_denver_fold() -> Timestamp {
    let denver = jiff::tz::TimeZone::get("America/Denver").unwrap();
    let fold = denver
        .preceding(jiff::Timestamp::now() - jiff::SignedDuration::from_hours(48))
        .find(|c| c.timestamp().strftime("%m").to_string().as_str() > "06")
        .unwrap();
    t(&fold.timestamp().to_string())
}

/// Domo in America/Denver, `events` entries from two hours before its last autumn change to two
/// hours after (5% twins, and twins an hour apart in the repeated hour).
fn around_denver_fold(events: u64) -> (Timestamp, SimConfig) {
    let at = last_denver_fold();
    let cfg = SimConfig {
        start: at - SignedDuration::from_hours(2),
        end: at + SignedDuration::from_hours(2),
        events,
        vendors: vec![Vendor::Domo],
        domo_time_zone: jiff::tz::TimeZone::get("America/Denver").unwrap(),
        twin_fraction: 0.05,
        ..SimConfig::default()
    };
    (at, cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domo_twins_an_hour_apart_in_a_repeated_hour_get_different_ids() {
    let (_, cfg) = around_denver_fold(6_000);
    let sim = sim(cfg.clone()).await;
    let truth = truth(&sim, &cfg, Vendor::Domo);
    let s = setup(
        "",
        &source_toml(&sim, &cfg, Vendor::Domo, "time_zone = \"America/Denver\"\n"),
    );
    once_ok(&s);
    let lines = read_lines(&s.out);
    // Exactly the truth, and no id twice (an Elasticsearch `create` would refuse the second).
    assert_exactly(&lines, "domo", &truth);
    assert_true_instants(&sim, &lines);
    let hour = SignedDuration::from_hours(1);
    let mut seen: HashMap<String, Vec<Timestamp>> = HashMap::new();
    for e in &lines {
        seen.entry(e["raw"].to_string())
            .or_default()
            .push(t(e["time"].as_str().unwrap()));
    }
    let apart = seen
        .values()
        .filter(|times| {
            times
                .iter()
                .any(|a| times.iter().any(|b| b.duration_since(*a) == hour))
        })
        .count();
    assert!(apart > 5, "only {apart} entries have a twin an hour later");
}

/// An upgrade from a release that keyed Domo entries of a repeated hour by their content alone:
/// their stored keys are the old ones, and a re-read of the overlap must still find them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_delivers_no_entry_of_a_repeated_hour_twice() {
    use auditship::keys;
    let (at, cfg) = around_denver_fold(4_000);
    let sim = sim(cfg.clone()).await;
    // An overlap that reaches back past the change, so the second run re-reads all of it.
    let s = setup(
        "",
        &source_toml(
            &sim,
            &cfg,
            Vendor::Domo,
            "time_zone = \"America/Denver\"\noverlap = \"2000h\"\n",
        ),
    );
    once_ok(&s);
    let lines = read_lines(&s.out);
    assert_exactly(&lines, "domo", &truth(&sim, &cfg, Vendor::Domo));

    // Rewrite the state as the earlier release left it: entries of the repeated hour keyed by
    // occurrence of their content alone.
    let mut rekey: HashMap<([u8; 16], i64), [u8; 16]> = HashMap::new();
    let mut count: HashMap<(String, i64), u32> = HashMap::new();
    let hour = SignedDuration::from_hours(1);
    for e in &lines {
        let time = t(e["time"].as_str().unwrap());
        if !(at - hour..at + hour).contains(&time) {
            continue;
        }
        let ns = time.as_nanosecond() as i64;
        let raw = e["raw"].to_string();
        let n = count.entry((raw.clone(), ns)).or_default();
        let legacy = keys::occurrence_key(&keys::content_hash(&raw).unwrap(), *n);
        *n += 1;
        let id = e["id"].as_str().unwrap();
        let mut key = [0u8; 16];
        for (i, b) in key.iter_mut().enumerate() {
            *b = u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap();
        }
        rekey.insert((key, ns), legacy);
    }
    assert!(
        rekey.len() > 100,
        "{} entries in the repeated hour",
        rekey.len()
    );
    let db = rusqlite::Connection::open(s.dir.path().join("state.db")).unwrap();
    let rows: Vec<(i64, Vec<u8>)> = db
        .prepare("SELECT id, keys FROM key_pages")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut rewritten = 0;
    for (id, blob) in rows {
        let mut records: Vec<[u8; 24]> = blob.chunks(24).map(|c| c.try_into().unwrap()).collect();
        for r in records.iter_mut() {
            let time = i64::from_be_bytes(r[..8].try_into().unwrap());
            let key: [u8; 16] = r[8..].try_into().unwrap();
            if let Some(legacy) = rekey.get(&(key, time)) {
                r[8..].copy_from_slice(legacy);
                rewritten += 1;
            }
        }
        records.sort_unstable();
        let blob: Vec<u8> = records.concat();
        db.execute(
            "UPDATE key_pages SET keys = ?1 WHERE id = ?2",
            rusqlite::params![blob, id],
        )
        .unwrap();
    }
    assert_eq!(rewritten, rekey.len());
    drop(db);

    once_ok(&s);
    let again = read_lines(&s.out);
    assert_eq!(
        again.len(),
        lines.len(),
        "the re-read delivered entries of the repeated hour again"
    );
}

/// Domo in a zone the config does not name (America/Phoenix: UTC-7 all year; no `time_zone`, so
/// UTC): every entry comes 7 h before the range it was asked for. A poll says so once, with the
/// offset and the zone it suggests, not once per entry; `check --connect` fails on it; with the
/// right zone neither says anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domo_zone_mismatch_is_said_once_per_poll_with_its_offset() {
    let cfg = SimConfig {
        domo_time_zone: jiff::tz::TimeZone::get("America/Phoenix").unwrap(),
        ..backfill(&[Vendor::Domo], 3_000, 1, 11)
    };
    let common::World { sim, cfg, s, .. } = common::World::start(cfg, "", "").await;
    let config = s.config.to_str().unwrap();
    let out = run(&["run", "--once", "--config", config], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let said: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("than the ranges asked for"))
        .collect();
    assert_eq!(said.len(), 1, "one line per poll:\n{err}");
    assert!(
        said[0].contains(
            "7h earlier than the ranges asked for: time_zone is probably UTC-7 (it is UTC)"
        ),
        "{}",
        said[0]
    );
    let check = run(&["check", "--connect", "--config", config], &[]);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("source domo: reachable, but")
            && stdout.contains("7h earlier than the ranges asked for: time_zone is probably UTC-7"),
        "{stdout}"
    );

    let right = setup(
        "",
        &source_toml(
            &sim,
            &cfg,
            Vendor::Domo,
            "time_zone = \"America/Phoenix\"\n",
        ),
    );
    let config = right.config.to_str().unwrap();
    let out = run(&["run", "--once", "--config", config], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("asked for"), "{err}");
    let check = run(&["check", "--connect", "--config", config], &[]);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && stdout.contains("source domo: ok"),
        "{stdout}"
    );
}
