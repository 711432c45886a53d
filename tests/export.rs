//! `auditship export` against the emulators of every vendor: exactly the window's events (the
//! emulator's ground truth, twins included), CSV read back by Python's `csv` module and compared
//! field by field with the native export, `--filter`, the state file untouched, `--output`
//! written only when complete, and the exit codes.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;

use auditship_sim::Vendor;
use common::{backfill, name, run, setup, sim, source_toml, stderr};
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

/// Reads a CSV file with Python's `csv` module (RFC 4180 dialect) and prints its rows as JSON.
const READ_CSV: &str = r#"
import csv, json, sys
with open(sys.argv[1], newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f, strict=True))
json.dump(rows, sys.stdout)
"#;

fn export(config: &Path, args: &[&str]) -> Output {
    let mut all = vec!["export", "--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    run(&all, &[])
}

/// `--source SRC --from FROM --to TO` and `more`.
fn window<'a>(src: &'a str, from: &'a str, to: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--source", src, "--from", from, "--to", to];
    v.extend_from_slice(more);
    v
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// BLAKE3 of every file of the state (the database and any journal beside it), by name.
fn state_files(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("state.db"))
        .map(|e| {
            let meta = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                format!(
                    "{} {:?}",
                    blake3::hash(&std::fs::read(e.path()).unwrap()).to_hex(),
                    meta.modified().unwrap()
                ),
            )
        })
        .collect();
    out.sort();
    out
}

/// A native event's value for a CSV column (`actor.id` → `event["actor"]["id"]`), "" if absent.
fn column(ev: &Value, col: &str) -> String {
    let v = col.split('.').fold(ev, |v, k| &v[k]);
    v.as_str().unwrap_or("").to_string()
}

/// For every vendor: the window's events exactly, in native and in CSV (read back by Python
/// and compared field by field), and the state file byte-identical (and not even touched)
/// after all the exports; `--filter` narrows a Domino audit export to one event type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_is_exactly_the_window_for_every_vendor_and_touches_no_state() {
    let cfg = backfill(&Vendor::ALL, 1500, 2, 61);
    let sim = sim(cfg.clone()).await;
    let sources: String = Vendor::ALL
        .iter()
        .map(|&v| source_toml(&sim, &cfg, v, ""))
        .collect();
    let s = setup("", &sources);
    // A state that exists (a run caught up), so that "untouched" means something.
    common::once_ok(&s);
    let before = state_files(s.dir.path());
    assert!(!before.is_empty());

    // A window inside the generated span, on whole seconds (Domo's resolution).
    let from =
        Timestamp::from_second((cfg.start + SignedDuration::from_hours(7)).as_second()).unwrap();
    let to =
        Timestamp::from_second((cfg.start + SignedDuration::from_hours(31)).as_second()).unwrap();
    let (from_s, to_s) = (from.to_string(), to.to_string());
    for v in Vendor::ALL {
        let src = name(v);
        let out = export(&s.config, &window(&src, &from_s, &to_s, &[]));
        assert!(out.status.success(), "{src}: {}", stderr(&out));
        let native = lines(&out);
        let truth = sim.events(v, from, to);
        assert!(
            truth.len() > 100,
            "{src}: only {} events in the window",
            truth.len()
        );
        common::assert_exactly(&native, &src, &truth);
        eprintln!(
            "FIGURES export {src}: {} events in the window, lost 0, doubled 0",
            truth.len()
        );
        assert_eq!(native.len(), truth.len());
        for e in &native {
            let t: Timestamp = e["time"].as_str().unwrap().parse().unwrap();
            assert!(t >= from && t < to, "{src}: {t} outside the window");
        }
        assert!(
            stderr(&out).contains(&format!("exported {} events of {src}", truth.len())),
            "{}",
            stderr(&out)
        );

        // CSV, to a file, read back by Python's csv module.
        let path = s.dir.path().join(format!("{src}.csv"));
        let out = export(
            &s.config,
            &window(
                &src,
                &from_s,
                &to_s,
                &["--format", "csv", "--output", path.to_str().unwrap()],
            ),
        );
        assert!(out.status.success(), "{src}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "--output also wrote to stdout");
        let py = std::process::Command::new("python3")
            .args(["-c", READ_CSV, path.to_str().unwrap()])
            .output()
            .expect("running python3");
        assert!(
            py.status.success(),
            "{}",
            String::from_utf8_lossy(&py.stderr)
        );
        let rows: Vec<Vec<String>> = serde_json::from_slice(&py.stdout).unwrap();
        let header = &rows[0];
        assert_eq!(
            header.join(","),
            "id,source,time,action,actor.id,actor.name,target.type,target.id,target.name,\
             project.id,project.name,src_ip,user_agent"
        );
        assert_eq!(rows.len() - 1, native.len(), "{src}: CSV rows");
        let by_id: HashMap<&str, &Value> = native
            .iter()
            .map(|e| (e["id"].as_str().unwrap(), e))
            .collect();
        for row in &rows[1..] {
            assert_eq!(row.len(), header.len());
            let ev = by_id
                .get(row[0].as_str())
                .unwrap_or_else(|| panic!("{src}: CSV id {} not in the native export", row[0]));
            for (col, cell) in header.iter().zip(row) {
                assert_eq!(cell, &column(ev, col), "{src}: column {col} of {}", row[0]);
            }
        }
        assert!(
            !std::fs::read_dir(s.dir.path()).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".partial")),
            "a partial output was left behind"
        );
    }

    // --filter: Domino's `event` parameter, as in the source's filters.
    let src = name(Vendor::DominoAudit);
    let all = lines(&export(&s.config, &window(&src, &from_s, &to_s, &[])));
    let mut counts: HashMap<String, usize> = HashMap::new();
    for e in &all {
        *counts
            .entry(e["action"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let (action, n) = counts.iter().max_by_key(|(_, n)| **n).unwrap();
    assert!(*n < all.len());
    let out = export(
        &s.config,
        &window(
            &src,
            &from_s,
            &to_s,
            &["--filter", &format!("event={action}")],
        ),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let filtered = lines(&out);
    let mut want: Vec<&str> = all
        .iter()
        .filter(|e| e["action"] == action.as_str())
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let mut got: Vec<&str> = filtered.iter().map(|e| e["id"].as_str().unwrap()).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);

    assert_eq!(
        state_files(s.dir.path()),
        before,
        "export touched the state"
    );
}

/// Bad arguments exit 2 with a message naming the problem; a vendor that cannot be read exits 1
/// and leaves an existing `--output` file as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_exit_codes_and_an_output_replaced_only_when_complete() {
    let cfg = backfill(&[Vendor::WasabiAir], 200, 1, 62);
    let common::World { sim, cfg, s, .. } = common::World::start(cfg, "", "").await;
    let src = name(Vendor::WasabiAir);
    let (from, to) = (
        (cfg.start + SignedDuration::from_hours(1)).to_string(),
        (cfg.start + SignedDuration::from_hours(5)).to_string(),
    );
    let future = (Timestamp::now() + SignedDuration::from_hours(1)).to_string();
    for (args, want) in [
        (
            window("nope", &from, &to, &[]),
            "--source \"nope\" is not a source",
        ),
        (window(&src, &to, &from, &[]), "is not before --to"),
        (
            window(&src, "yesterday", &to, &[]),
            "--from \"yesterday\" is not an RFC 3339 time",
        ),
        (window(&src, &from, &future, &[]), "is in the future"),
        (
            window(&src, &from, &to, &["--format", "xml"]),
            "--format \"xml\" is not a format; one of native",
        ),
        (
            window(&src, &from, &to, &["--filter", "novalue"]),
            "--filter \"novalue\" is not KEY=VALUE",
        ),
        (
            window(&src, &from, &to, &["--filter", "action_kye=login"]),
            "--filter action_kye: is not a filter of wasabi_air (its API takes user_id, group_id, target_kind, target_id, action_key); did you mean `action_key`?",
        ),
    ] {
        let out = export(&s.config, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty());
    }

    // A good export to a file, then one that fails: the file keeps the good one.
    let path = s.dir.path().join("air.ndjson");
    let p = path.to_str().unwrap();
    let out = export(&s.config, &window(&src, &from, &to, &["-o", p]));
    assert!(out.status.success(), "{}", stderr(&out));
    let good = std::fs::read(&path).unwrap();
    assert_eq!(
        good.iter().filter(|&&b| b == b'\n').count(),
        sim.events(
            Vendor::WasabiAir,
            from.parse().unwrap(),
            to.parse().unwrap()
        )
        .len()
    );
    sim.set_chaos(Some(auditship_sim::Chaos {
        rate: 1.0,
        slow: std::time::Duration::from_millis(10),
        seed: 1,
    }));
    let out = export(
        &s.config,
        &window(&src, &from, &to, &["-o", p, "--overwrite"]),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the window could not be read completely"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        good,
        "a failed export replaced the file"
    );
    assert!(!std::fs::read_dir(s.dir.path()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains(".partial")));
}
