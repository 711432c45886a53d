//! Never touch what is not ours: a file sink pointed at (or left with) a file it did not write
//! neither cuts nor writes into it; its own file survives being copied; rotation renames over
//! and deletes only the files it made; the state's lock and an export's `--output` are not
//! taken from anyone. The real binary against the emulators.

mod common;

use std::time::{Duration, Instant};

use auditship_sim::{SimConfig, Vendor};
use common::*;

/// Bytes that are not ours: lines another tool writes, `len` bytes in all.
fn foreign(len: usize) -> Vec<u8> {
    let line = b"2026-12-04T10:00:00Z host app[42]: another tool's line, not auditship's\n";
    line.iter().copied().cycle().take(len).collect()
}

/// Wasabi AiR and Domo backfills; the config reads Wasabi only until [`add_domo`].
async fn two_vendors(seed: u64) -> (auditship_sim::SimHandle, SimConfig, Setup) {
    let cfg = backfill(&[Vendor::WasabiAir, Vendor::Domo], 300, 1, seed);
    let sim = sim(cfg.clone()).await;
    let s = setup("", &source_toml(&sim, &cfg, Vendor::WasabiAir, ""));
    (sim, cfg, s)
}

/// Adds the Domo source (new events to deliver) and sets the file sink's `path`.
fn add_domo(s: &Setup, sim: &auditship_sim::SimHandle, cfg: &SimConfig, path: &str) {
    let text = std::fs::read_to_string(&s.config).unwrap();
    let text = text
        .replace("path = \"out.ndjson\"", &format!("path = {path:?}"))
        .replace(
            "[[sinks]]",
            &format!("{}\n[[sinks]]", source_toml(sim, cfg, Vendor::Domo, "")),
        );
    std::fs::write(&s.config, text).unwrap();
}

fn once(s: &Setup) -> std::process::Output {
    run(
        &["run", "--once", "--config", s.config.to_str().unwrap()],
        &[],
    )
}

fn check(s: &Setup) -> std::process::Output {
    run(&["check", "--config", s.config.to_str().unwrap()], &[])
}

/// The reported failure: `archive` wrote `out.ndjson`, then is pointed at another, larger file
/// another tool writes. The agent cut that file back to the length committed for the old one.
/// Now nothing is written to it or cut from it; the run fails naming the sink, the path and
/// what to do; `check` exits 2 saying the same; and once the file is moved away a new one is
/// started there and the new events arrive exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_pointed_at_another_file_neither_cuts_nor_writes_it() {
    let (sim, cfg, s) = two_vendors(71).await;
    once_ok(&s);
    let ours = std::fs::metadata(&s.out).unwrap().len();
    assert!(ours > 10_000);
    let other = s.dir.path().join("other.log");
    let theirs = foreign(ours as usize * 3);
    std::fs::write(&other, &theirs).unwrap();
    add_domo(&s, &sim, &cfg, "other.log");

    let out = once(&s);
    assert_eq!(
        std::fs::read(&other).unwrap(),
        theirs,
        "another tool's file was changed: {}",
        stderr(&out)
    );
    assert!(!out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    for want in [
        "sink file",
        "other.log",
        "is not this sink's",
        "Move that file away",
    ] {
        assert!(err.contains(want), "{want:?} missing from:\n{err}");
    }
    assert!(!err.contains("truncated an uncommitted tail"), "{err}");

    let c = check(&s);
    let said = format!("{}{}", String::from_utf8_lossy(&c.stdout), stderr(&c));
    assert_eq!(c.status.code(), Some(2), "{said}");
    assert!(
        said.contains("sink file") && said.contains("other.log"),
        "{said}"
    );
    assert_eq!(std::fs::read(&other).unwrap(), theirs);

    // Moved away: the sink starts a new file there, and Domo's events arrive, once.
    std::fs::rename(&other, s.dir.path().join("other.log.theirs")).unwrap();
    assert!(check(&s).status.success());
    once_ok(&s);
    assert_exactly(
        &read_lines(&other),
        &name(Vendor::Domo),
        &truth(&sim, &cfg, Vendor::Domo),
    );
    assert_eq!(
        std::fs::read(s.dir.path().join("other.log.theirs")).unwrap(),
        theirs
    );
}

/// The same when the sink has committed nothing yet (its recorded file is empty): an empty
/// prefix matches any file, so it is no proof of a copy, and the other file is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_committed_nothing_is_not_fooled_by_another_file() {
    let cfg = backfill(&[Vendor::WasabiAir, Vendor::Domo], 300, 1, 80);
    let sim = sim(cfg.clone()).await;
    // A filter nothing matches: the sink's file is made, recorded, and stays empty.
    let s = setup(
        "",
        &source_toml(
            &sim,
            &cfg,
            Vendor::WasabiAir,
            "[sources.filters]\naction_key = \"no-such-action\"\n",
        ),
    );
    once_ok(&s);
    assert_eq!(std::fs::metadata(&s.out).unwrap().len(), 0);
    let other = s.dir.path().join("other.log");
    let theirs = foreign(20_000);
    std::fs::write(&other, &theirs).unwrap();
    add_domo(&s, &sim, &cfg, "other.log");
    let out = once(&s);
    assert_eq!(std::fs::read(&other).unwrap(), theirs, "{}", stderr(&out));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not this sink's"),
        "{}",
        stderr(&out)
    );
    assert_eq!(check(&s).status.code(), Some(2));
}

/// The same with the path unchanged: while the agent was stopped, its file was replaced by a
/// larger one that is not its own (moved over it). Refused the same way, untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_moved_over_the_sinks_own_is_not_cut() {
    let (sim, cfg, s) = two_vendors(72).await;
    once_ok(&s);
    let ours = std::fs::metadata(&s.out).unwrap().len() as usize;
    let theirs = foreign(ours * 2);
    let tmp = s.dir.path().join("theirs.tmp");
    std::fs::write(&tmp, &theirs).unwrap();
    std::fs::rename(&tmp, &s.out).unwrap();
    add_domo(&s, &sim, &cfg, "out.ndjson");
    let out = once(&s);
    assert_eq!(std::fs::read(&s.out).unwrap(), theirs, "{}", stderr(&out));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not this sink's"),
        "{}",
        stderr(&out)
    );
    assert_eq!(check(&s).status.code(), Some(2));
}

/// What a copy keeps: the state and the file restored from a backup, or moved to another disk
/// (new device and inode, the same bytes up to the committed length) are written on, the
/// uncommitted tail of the copy cut as it would be from the original; and an empty file
/// another tool created where the sink's was (logrotate's `create`) is written to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_the_sinks_file_and_an_empty_one_are_written_on() {
    let (sim, cfg, s) = two_vendors(73).await;
    once_ok(&s);
    // A restore: a new directory with copies of the config, the state and the file, the file
    // with an uncommitted tail (a page written when the agent died before its commit).
    let restored = tempfile::tempdir().unwrap();
    for f in ["auditship.toml", "state.db", "state.db-wal", "out.ndjson"] {
        if s.dir.path().join(f).exists() {
            std::fs::copy(s.dir.path().join(f), restored.path().join(f)).unwrap();
        }
    }
    let r = Setup {
        config: restored.path().join("auditship.toml"),
        out: restored.path().join("out.ndjson"),
        dir: restored,
    };
    let committed = std::fs::read(&r.out).unwrap();
    let mut torn = committed.clone();
    torn.extend_from_slice(b"{\"uncommitted\":true}\n{\"half");
    std::fs::write(&r.out, &torn).unwrap();
    add_domo(&r, &sim, &cfg, "out.ndjson");
    once_ok(&r);
    let got = std::fs::read(&r.out).unwrap();
    assert!(got.starts_with(&committed));
    let lines = read_lines(&r.out);
    assert_exactly(
        &lines,
        &name(Vendor::WasabiAir),
        &truth(&sim, &cfg, Vendor::WasabiAir),
    );
    assert_exactly(
        &lines,
        &name(Vendor::Domo),
        &truth(&sim, &cfg, Vendor::Domo),
    );

    // logrotate (`create`): the file renamed away, an empty one in its place.
    std::fs::rename(&s.out, s.dir.path().join("out.ndjson-20261204")).unwrap();
    std::fs::write(&s.out, b"").unwrap();
    add_domo(&s, &sim, &cfg, "out.ndjson");
    once_ok(&s);
    assert_exactly(
        &read_lines(&s.out),
        &name(Vendor::Domo),
        &truth(&sim, &cfg, Vendor::Domo),
    );
}

/// A file the sink starts in place of its own (removed while it ran) is recorded as its own
/// before the first write: a SIGKILL before that page's commit finds it the sink's, cuts the
/// uncommitted page, and the run after it delivers exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_file_started_in_place_of_a_removed_one_is_the_sinks_after_a_crash() {
    let (sim, cfg, s) = two_vendors(74).await;
    once_ok(&s);
    std::fs::rename(&s.out, s.dir.path().join("out.ndjson.1")).unwrap();
    add_domo(&s, &sim, &cfg, "out.ndjson");
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        text.replace("\nkind = \"domo\"", "\nkind = \"domo\"\npage_size = 20"),
    )
    .unwrap();
    let mut rng = fastrand::Rng::with_seed(74);
    kill_at_random_points(&s, &mut rng, 3, 400);
    let out = once(&s);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("is not this sink's"),
        "{}",
        stderr(&out)
    );
    assert_exactly(
        &read_lines(&s.out),
        &name(Vendor::Domo),
        &truth(&sim, &cfg, Vendor::Domo),
    );
}

/// The daemon with a sink whose path holds another tool's file: the sink writes nothing there
/// (its events wait in its queue), `/readyz` is not ready at once naming the sink and the path,
/// the file is untouched; once it is moved away a reload (SIGHUP) tries the sink again and the
/// events arrive, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_holds_a_refused_sinks_events_and_says_why() {
    let cfg = backfill(&[Vendor::WasabiAir], 300, 1, 75);
    let sim = sim(cfg.clone()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = setup(
        &format!("listen = \"127.0.0.1:{port}\"\nunready_after = \"30s\"\n"),
        &source_toml(&sim, &cfg, Vendor::WasabiAir, ""),
    );
    // The state knows the sink's own file; then another tool's file takes the path.
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        text.replace(&format!("listen = \"127.0.0.1:{port}\"\n"), ""),
    )
    .unwrap();
    once_ok(&s);
    std::fs::write(&s.config, &text).unwrap();
    let theirs = foreign(50_000);
    std::fs::remove_file(&s.out).unwrap();
    std::fs::write(&s.out, &theirs).unwrap();
    // New events for the sink: the source is rewound.
    let out = run(
        &[
            "state",
            "reset",
            "wasabi-air",
            "--to",
            &cfg.start.to_string(),
            "--config",
            s.config.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let mut child = spawn(&["run", "--config", s.config.to_str().unwrap()]);
    let url = format!("http://127.0.0.1:{port}/readyz");
    let started = Instant::now();
    let mut last = String::new();
    let body = loop {
        if let Ok(r) = reqwest::get(&url).await {
            let (code, body) = (r.status().as_u16(), r.text().await.unwrap_or_default());
            if code == 503 && body.contains("is not this sink's") {
                break body;
            }
            last = format!("{code} {body}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "/readyz never said why; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    assert!(
        body.contains("out.ndjson") && body.contains("sink file"),
        "{body}"
    );
    assert_eq!(std::fs::read(&s.out).unwrap(), theirs);

    std::fs::rename(&s.out, s.dir.path().join("theirs.log")).unwrap();
    signal(&child, "HUP");
    let want = truth(&sim, &cfg, Vendor::WasabiAir).len();
    let started = Instant::now();
    while lines_so_far(&s.out) < want {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} of {want} events after the file was moved away",
            lines_so_far(&s.out)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    signal(&child, "TERM");
    wait_for(&mut child, Duration::from_secs(20));
    assert_exactly(
        &read_lines(&s.out),
        &name(Vendor::WasabiAir),
        &truth(&sim, &cfg, Vendor::WasabiAir),
    );
    assert_eq!(
        std::fs::read(s.dir.path().join("theirs.log")).unwrap(),
        theirs
    );
}

/// A config rotating `out.ndjson` at `max_bytes`, keeping `keep`.
fn rotating(s: &Setup, max_bytes: u64, keep: u64) {
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text.push_str(&format!(
        "rotate_max_bytes = {max_bytes}\nrotate_keep = {keep}\n"
    ));
    std::fs::write(&s.config, text).unwrap();
}

fn rotated_name(s: &Setup, g: u64) -> std::path::PathBuf {
    s.dir.path().join(format!("out.ndjson.{g}"))
}

/// Rotation renames the file to `PATH.N` and deletes `PATH.N`s beyond `rotate_keep`: only
/// the files it made. A `PATH.0` of someone else's is neither replaced by the first rotation
/// (which fails, saying so, until it is moved away) nor deleted as one beyond `rotate_keep`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_replaces_and_deletes_only_the_files_it_made() {
    let cfg = backfill(&[Vendor::WasabiAir], 600, 1, 76);
    let sim = sim(cfg.clone()).await;
    let s = setup(
        "",
        &source_toml(&sim, &cfg, Vendor::WasabiAir, "page_size = 50\n"),
    );
    rotating(&s, 20_000, 1);
    let theirs = foreign(5_000);
    std::fs::write(rotated_name(&s, 0), &theirs).unwrap();
    let out = once(&s);
    assert_eq!(std::fs::read(rotated_name(&s, 0)).unwrap(), theirs);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("out.ndjson.0 exists and is not this sink's"),
        "{}",
        stderr(&out)
    );

    // Moved away, the rotation goes on; then someone puts a file where a pruned one was.
    std::fs::rename(rotated_name(&s, 0), s.dir.path().join("theirs.0")).unwrap();
    once_ok(&s);
    let generations: Vec<u64> = (0..64).filter(|g| rotated_name(&s, *g).exists()).collect();
    assert!(
        generations.len() == 1 && generations[0] >= 2,
        "kept {generations:?}"
    );
    std::fs::write(rotated_name(&s, 0), &theirs).unwrap();
    let out = once(&s);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(rotated_name(&s, 0)).unwrap(),
        theirs,
        "a PATH.N the sink did not make was deleted"
    );
}

/// The state's lock file holds a pid; one that holds anything else is not the agent's and is
/// neither truncated nor written (today's agent overwrote it with its pid). And a `-wal` file
/// beside a state that does not exist yet is not SQLite's for this agent: refused, kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_states_lock_and_wal_are_taken_from_no_one() {
    let cfg = backfill(&[Vendor::WasabiAir], 50, 1, 77);
    let common::World {
        sim: _sim,
        cfg: _,
        s,
        ..
    } = common::World::start(cfg, "", "").await;
    let lock = s.dir.path().join("state.db.lock");
    std::fs::write(&lock, b"notes of another program\n").unwrap();
    let out = once(&s);
    assert_eq!(
        std::fs::read(&lock).unwrap(),
        b"notes of another program\n",
        "{}",
        stderr(&out)
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("state.db.lock"), "{}", stderr(&out));
    std::fs::remove_file(&lock).unwrap();

    let wal = s.dir.path().join("state.db-wal");
    std::fs::write(&wal, foreign(10_000)).unwrap();
    let out = once(&s);
    assert_eq!(
        std::fs::read(&wal).unwrap(),
        foreign(10_000),
        "{}",
        stderr(&out)
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("state.db-wal"), "{}", stderr(&out));
}

/// `export --output FILE` replaces an existing, non-empty FILE only when told to
/// (`--overwrite`): by default it exits 2 before reading anything, and the file is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_replaces_an_existing_output_only_when_told_to() {
    let cfg = backfill(&[Vendor::WasabiAir], 100, 1, 78);
    let common::World { sim, cfg, s, .. } = common::World::start(cfg, "", "").await;
    let path = s.dir.path().join("report.ndjson");
    let theirs = foreign(3_000);
    std::fs::write(&path, &theirs).unwrap();
    let (from, to) = (cfg.start.to_string(), cfg.end.to_string());
    let args = |more: &[&str]| {
        let mut v = vec![
            "export".to_string(),
            "--config".into(),
            s.config.to_str().unwrap().into(),
            "--source".into(),
            "wasabi-air".into(),
            "--from".into(),
            from.clone(),
            "--to".into(),
            to.clone(),
            "-o".into(),
            path.to_str().unwrap().into(),
        ];
        v.extend(more.iter().map(|m| m.to_string()));
        v
    };
    let a = args(&[]);
    let out = run(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--overwrite"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&path).unwrap(), theirs);
    let a = args(&["--overwrite"]);
    let out = run(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        read_lines(&path).len(),
        truth(&sim, &cfg, Vendor::WasabiAir).len()
    );
}

/// A daemon reading live Wasabi AiR events (50 a second, 30 s of them already there) into
/// the file sink, once it has written 10 kB.
async fn live_daemon(seed: u64) -> (auditship_sim::SimHandle, Setup, std::process::Child) {
    let now = jiff::Timestamp::now();
    let cfg = SimConfig {
        seed,
        start: now - jiff::SignedDuration::from_secs(30),
        end: now + jiff::SignedDuration::from_secs(30),
        events: 3_000,
        vendors: vec![Vendor::WasabiAir],
        ..SimConfig::default()
    };
    let sim = sim(cfg.clone()).await;
    let s = setup("", &source_toml(&sim, &cfg, Vendor::WasabiAir, ""));
    let child = spawn(&["run", "--config", s.config.to_str().unwrap()]);
    let started = Instant::now();
    while std::fs::metadata(&s.out).map(|m| m.len()).unwrap_or(0) < 10_000 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (sim, s, child)
}

/// logrotate's `copytruncate` while the daemon runs: the sink's own file is emptied in place.
/// The sink notices (its file is shorter than it wrote it), records the emptied file as its own
/// before writing again, and writes on from its start: no hole of NULs, and after a SIGKILL the
/// restart still finds the file its own (before, the length it kept in memory no longer matched
/// the file's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_emptied_in_place_is_written_on_and_stays_the_sinks() {
    let (_sim, s, mut child) = live_daemon(79).await;
    // copytruncate: a copy, then the file cut to nothing in place (same inode).
    std::fs::copy(&s.out, s.dir.path().join("out.ndjson.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&s.out)
        .unwrap()
        .set_len(0)
        .unwrap();
    let started = Instant::now();
    while std::fs::metadata(&s.out).map(|m| m.len()).unwrap_or(0) < 2_000 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing written after"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&child, "KILL");
    let _ = child.wait();
    let bytes = std::fs::read(&s.out).unwrap();
    assert!(!bytes.contains(&0), "a hole of NULs in the file");
    let out = run(
        &["run", "--once", "--config", s.config.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("is not this sink's"),
        "{}",
        stderr(&out)
    );
    let lines = read_lines(&s.out);
    assert!(!lines.is_empty());
    let mut ids = std::collections::HashSet::new();
    for l in &lines {
        assert!(ids.insert(l["id"].to_string()), "{} twice", l["id"]);
    }
}

/// While the daemon runs, another program moves its own file over the sink's: the next
/// delivery sees a file that is not the sink's and refuses it; nothing is written into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_moved_over_the_sinks_own_while_it_runs_is_refused() {
    let (_sim, s, mut child) = live_daemon(81).await;
    let theirs = foreign(30_000);
    let tmp = s.dir.path().join("theirs.tmp");
    std::fs::write(&tmp, &theirs).unwrap();
    std::fs::rename(&tmp, &s.out).unwrap();
    // Live events (50 a second) keep coming: several polls try to deliver.
    tokio::time::sleep(Duration::from_secs(4)).await;
    signal(&child, "TERM");
    wait_for(&mut child, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).to_string();
    assert_eq!(std::fs::read(&s.out).unwrap(), theirs, "{stderr}");
    assert!(
        stderr.contains("the sink's file was replaced by one that is not its own")
            && stderr.contains("is not this sink's"),
        "{stderr}"
    );
}
