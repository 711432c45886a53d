//! The state store on a real PostgreSQL (tests/postgres; issue 32, `agent.state_url`): the same
//! operations give the same answers as on SQLite, a page commit is all or nothing, a commit
//! under a lost lease commits nothing, and a database that goes away is waited for.

mod common;
mod http_receiver;
mod postgres;

use std::path::Path;
use std::time::{Duration, Instant};

use auditship::lease::{self, Leases};
use auditship::state::postgres::{PgUrl, Postgres};
use auditship::state::{Ack, Commit, Queued, SinkPosition, State, StateError};

async fn pg_state(url: &str) -> State {
    State::Postgres(
        Postgres::open(PgUrl::parse(url, Path::new("/")).unwrap())
            .await
            .unwrap(),
    )
}

fn page(source: &str, sinks: &[&str], events: u32, tag: u8) -> Commit {
    let records = bytes::Bytes::from(vec![tag; 10 * events as usize]);
    Commit {
        source: source.into(),
        kind: "domo",
        keys: vec![([tag; 16], tag as i64 * 100)],
        delivered: events as u64,
        queued: sinks
            .iter()
            .map(|s| Queued {
                sink: s.to_string(),
                events,
                records: records.clone(),
            })
            .collect(),
        cursor: Some(tag as i64 * 10),
        max_event: Some(tag as i64 * 100),
        ..Default::default()
    }
}

/// One scenario of every operation, whose answers are written down as text: the same on both
/// stores.
async fn scenario(st: &State) -> Vec<String> {
    let mut out = Vec::new();
    let mut say = |s: String| out.push(s);
    st.commit(page("a", &["http", "siem"], 3, 1)).await.unwrap();
    st.commit(page("b", &["siem"], 2, 2)).await.unwrap();
    st.commit(page("a", &["http", "siem"], 4, 3)).await.unwrap();
    // A cursor never moves backwards, nor max_event.
    st.commit(Commit {
        source: "a".into(),
        kind: "domo",
        cursor: Some(5),
        max_event: Some(1),
        duplicates: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    for t in st.queue_totals().await.unwrap() {
        say(format!(
            "totals {} chunks={} events={} bytes={} delivered={} oldest={}",
            t.sink,
            t.chunks,
            t.events,
            t.bytes,
            t.delivered,
            t.oldest.is_some()
        ));
    }
    let all = st.take("siem", vec![], 100, 1 << 20).await.unwrap();
    for c in &all {
        say(format!(
            "chunk {} {} {} {}",
            c.source, c.kind, c.events, c.records[0]
        ));
    }
    say(format!(
        "take 5 events: {}",
        st.take("siem", vec![], 5, 1 << 20).await.unwrap().len()
    ));
    say(format!(
        "take 1 byte: {}",
        st.take("siem", vec![], 1, 1).await.unwrap().len()
    ));
    say(format!(
        "take skipping the first: {}",
        st.take("siem", vec![all[0].id], 100, 1 << 20)
            .await
            .unwrap()
            .len()
    ));
    say(format!(
        "nobody's queue: {}",
        st.take("nobody", vec![], 100, 100).await.unwrap().len()
    ));
    let oldest = st
        .ack(Ack {
            sink: "siem".into(),
            chunks: vec![all[0].id, all[1].id],
            events: 5,
            position: Some(SinkPosition::bare(120)),
            lease: None,
        })
        .await
        .unwrap();
    say(format!("ack leaves one: {}", oldest.is_some()));
    say(format!(
        "position {:?}",
        st.sink_position("siem").await.unwrap()
    ));
    let left = st.take("siem", vec![], 100, 1 << 20).await.unwrap();
    say(format!("left {} tag {}", left.len(), left[0].records[0]));
    let oldest = st
        .ack(Ack {
            sink: "siem".into(),
            chunks: vec![left[0].id],
            events: 4,
            position: None,
            lease: None,
        })
        .await
        .unwrap();
    say(format!("ack empties: {oldest:?}"));
    say(format!(
        "position kept {:?}",
        st.sink_position("siem").await.unwrap()
    ));
    say(format!(
        "known {:?}",
        st.known(
            "a",
            vec![
                ([1; 16], 100),
                ([3; 16], 300),
                ([3; 16], 301),
                ([2; 16], 200)
            ]
        )
        .await
        .unwrap()
    ));
    for r in st.sources().await.unwrap() {
        say(format!(
            "source {} {} cursor={:?} delivered={} duplicates={} keys={} max_event={:?} updated={}",
            r.name,
            r.kind,
            r.cursor,
            r.delivered,
            r.duplicates,
            r.keys,
            r.max_event,
            r.updated.is_some()
        ));
    }
    // A reset rewinds the cursor and forgets the keys from there.
    st.reset("a", "domo", 200).await.unwrap();
    let a = st.source("a").await.unwrap().unwrap();
    say(format!("reset cursor={:?} keys={}", a.cursor, a.keys));
    say(format!(
        "after reset known {:?}",
        st.known("a", vec![([1; 16], 100), ([3; 16], 300)])
            .await
            .unwrap()
    ));
    say(format!("missing {:?}", st.source("zz").await.unwrap()));
    // Pruning deletes whole pages older than the line.
    st.commit(Commit {
        source: "b".into(),
        kind: "domo",
        prune_before: Some(1000),
        ..Default::default()
    })
    .await
    .unwrap();
    say(format!(
        "pruned keys={}",
        st.source("b").await.unwrap().unwrap().keys
    ));
    // Chunk ids are never reused after the queue empties.
    st.commit(page("a", &["siem"], 1, 7)).await.unwrap();
    let next = st.take("siem", vec![], 10, 1 << 20).await.unwrap();
    say(format!("new chunk id is new: {}", next[0].id > left[0].id));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_on_postgresql_as_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = State::open(&dir.path().join("s.db")).unwrap();
    let want = scenario(&sqlite).await;
    let url = postgres::shared().database().await;
    let pg = pg_state(&url).await;
    let got = scenario(&pg).await;
    assert_eq!(got, want);
    // Opened again (another replica, a restart): the same schema, nothing migrated twice.
    let again = pg_state(&url).await;
    assert_eq!(again.sources().await.unwrap(), pg.sources().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_commit_that_fails_leaves_nothing() {
    let url = postgres::shared().database().await;
    let st = pg_state(&url).await;
    st.commit(page("a", &["http", "siem"], 3, 1)).await.unwrap();
    // The last sink's queue refuses the insert.
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.batch_execute(
        "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN
            IF NEW.sink = (SELECT id FROM sink_queues WHERE name = 'siem') THEN
                RAISE EXCEPTION 'disk full';
            END IF; RETURN NEW; END $$ LANGUAGE plpgsql;
         CREATE TRIGGER refuse BEFORE INSERT ON queue FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .await
    .unwrap();
    let before = st.queue_totals().await.unwrap();
    let row = st.source("a").await.unwrap();
    let e = st
        .commit(page("a", &["http", "siem"], 1, 9))
        .await
        .unwrap_err();
    assert!(matches!(e, StateError::Db(_)) && !e.is_fatal(), "{e}");
    assert!(e.to_string().contains("disk full"), "{e}");
    assert_eq!(st.queue_totals().await.unwrap(), before);
    assert_eq!(st.source("a").await.unwrap(), row);
    assert_eq!(
        st.known("a", vec![([9; 16], 900)]).await.unwrap(),
        vec![false]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_under_a_lost_lease_commits_nothing_and_under_a_held_one_commits() {
    let url = postgres::shared().database().await;
    let st = pg_state(&url).await;
    let ttl = Duration::from_millis(800);
    let names = vec!["source:a".to_string()];
    let config: tokio_postgres::Config = url.parse().unwrap();
    let mut a = Leases::new(config.clone(), "a", ttl);
    let mut b = Leases::new(config, "b", ttl);
    a.tick(&names).await.unwrap();
    let held = a.lease("source:a").unwrap();
    st.commit(Commit {
        lease: Some(held.clone()),
        ..page("a", &["http"], 2, 1)
    })
    .await
    .unwrap();
    // a stops renewing; b takes the source over once the lease expired.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let t = b.tick(&names).await.unwrap();
    assert_eq!(t.acquired, names, "{t:?}");
    let before = (
        st.source("a").await.unwrap(),
        st.queue_totals().await.unwrap(),
    );
    let e = st
        .commit(Commit {
            lease: Some(held.clone()),
            ..page("a", &["http"], 5, 2)
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StateError::LeaseLost { name, holder, .. } if name == "source:a" && holder == "a"),
        "{e}"
    );
    assert!(e.to_string().contains("was not committed"), "{e}");
    assert_eq!(
        (
            st.source("a").await.unwrap(),
            st.queue_totals().await.unwrap()
        ),
        before,
        "a commit under a lost lease changed the state"
    );
    assert_eq!(
        st.known("a", vec![([2; 16], 200)]).await.unwrap(),
        vec![false]
    );
    // The new holder commits, and the connection is still usable after the refusal.
    st.commit(Commit {
        lease: Some(b.lease("source:a").unwrap()),
        ..page("a", &["http"], 5, 2)
    })
    .await
    .unwrap();
    let row = st.source("a").await.unwrap().unwrap();
    assert_eq!((row.delivered, row.cursor), (7, Some(20)));
    // A lease row that does not exist at all is lost too.
    let e = st
        .commit(Commit {
            lease: Some(lease::Lease {
                name: "source:nobody".into(),
                holder: "a".into(),
                epoch: 1,
            }),
            ..page("a", &["http"], 1, 3)
        })
        .await
        .unwrap_err();
    assert!(matches!(e, StateError::LeaseLost { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_restarted_a_commit_fails_then_the_next_one_reconnects() {
    let pg = postgres::Pg::start();
    let url = pg.database().await;
    let st = pg_state(&url).await;
    st.commit(page("a", &["http"], 2, 1)).await.unwrap();
    pg.down(true);
    let e = st.commit(page("a", &["http"], 2, 2)).await.unwrap_err();
    assert!(
        matches!(e, StateError::Db(_)) && !e.is_fatal(),
        "a database that went away must be retried, not fatal: {e}"
    );
    pg.up();
    st.commit(page("a", &["http"], 2, 2)).await.unwrap();
    let row = st.source("a").await.unwrap().unwrap();
    assert_eq!((row.delivered, row.cursor), (4, Some(20)));
    assert_eq!(st.queue_totals().await.unwrap()[0].chunks, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_down_at_start_is_waited_for() {
    let pg = postgres::Pg::start();
    let url = pg.database().await;
    pg.down(false);
    let parsed = PgUrl::parse(&url, Path::new("/")).unwrap();
    let retry = auditship::retry::RetryConfig {
        initial: Duration::from_millis(100),
        max_delay: Duration::from_millis(400),
        max_attempts: Some(3),
    };
    // `run --once` (cron starts it again) gives up after the agent's attempts, saying so.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("auditship.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_url = {url:?}\nretry_initial = \"50ms\"\nretry_max_delay = \"100ms\"\nretry_max_attempts = 3\n\
             [[sources]]\nname = \"air\"\nkind = \"wasabi_air\"\nurl = \"http://127.0.0.1:9\"\napi_key = \"k\"\n\
             [[sinks]]\nname = \"collector\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/ingest\"\n"
        ),
    )
    .unwrap();
    let began = Instant::now();
    let out = common::run(
        &["run", "--once", "--config", config.to_str().unwrap()],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot open the state database") && err.contains("(3 attempts)"),
        "{err}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "{:?}",
        began.elapsed()
    );
    // The daemon's opening waits as long as it takes.
    let cancel = tokio_util::sync::CancellationToken::new();
    let opening =
        tokio::spawn(async move { Postgres::open_waiting(parsed, &retry, &cancel, None).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!opening.is_finished(), "gave up on a database that is down");
    let up = Instant::now();
    let pg = std::sync::Arc::new(pg);
    pg.up_async().await;
    let st = State::Postgres(opening.await.unwrap().unwrap());
    eprintln!("opened {:?} after the database came up", up.elapsed());
    st.commit(page("a", &["http"], 1, 1)).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The agent on PostgreSQL (`agent.state_url`), as users run it: the real binary, the emulators
// with live traffic, an HTTP receiver (a file sink is refused beside a shared state).

/// A password in every URL of these tests: the test server trusts loopback, so it is never
/// checked, but it is in the config and must appear in no output.
const PASSWORD: &str = "pw-never-shown-7Q";

fn with_password(url: &str) -> String {
    url.replacen("postgres@", &format!("postgres:{PASSWORD}@"), 1)
}

/// A config on `url` reading the four vendors of `sim` into `receiver`.
fn pg_setup(
    url: &str,
    sim: &auditship_sim::SimHandle,
    cfg: &auditship_sim::SimConfig,
    receiver: &http_receiver::Receiver,
    agent_extra: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("auditship.toml");
    let text = format!(
        "[agent]\nstate_url = {:?}\npoll_interval = \"1s\"\nlag = \"2s\"\noverlap = \"30s\"\n\
         retry_max_attempts = 30\nretry_initial = \"20ms\"\nretry_max_delay = \"300ms\"\n{agent_extra}\n\
         {}\n[[sinks]]\nname = \"collector\"\nkind = \"http\"\nurl = \"{}/ingest\"\n",
        with_password(url),
        common::all_sources(sim, cfg),
        receiver.base()
    );
    std::fs::write(&config, text).unwrap();
    (dir, config)
}

/// The daemon, its log in `dir/agent-N.log`.
fn pg_daemon(dir: &Path, config: &Path, n: usize) -> std::process::Child {
    std::process::Command::new(common::bin())
        .args(["run", "--config", config.to_str().unwrap()])
        .env("AUDITSHIP_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("agent-{n}.log"))).unwrap())
        .spawn()
        .unwrap()
}

/// Every log the daemons of `dir` wrote.
fn logs(dir: &Path) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "log") {
            all.push_str(&std::fs::read_to_string(p).unwrap_or_default());
        }
    }
    all
}

fn live(seed: u64, back: u64, ahead: u64) -> auditship_sim::SimConfig {
    let now = jiff::Timestamp::now();
    auditship_sim::SimConfig {
        seed,
        start: now - jiff::SignedDuration::from_secs(back as i64),
        end: now + jiff::SignedDuration::from_secs(ahead as i64),
        events: 8 * (back + ahead),
        vendors: auditship_sim::Vendor::ALL.to_vec(),
        twin_fraction: 0.02,
        late_fraction: 0.1,
        late_max: Duration::from_secs(3),
        ..auditship_sim::SimConfig::default()
    }
}

/// Waits past the live span (and its late arrivals), then runs `--once` to the end: the
/// receiver must then hold every event of the truth. Returns (events, repeats).
async fn settle_and_count(
    sim: &auditship_sim::SimHandle,
    cfg: &auditship_sim::SimConfig,
    receiver: &http_receiver::Receiver,
    config: &Path,
) -> (usize, i64) {
    let settled = cfg.end
        + jiff::SignedDuration::try_from(cfg.late_max).unwrap()
        + jiff::SignedDuration::from_secs(4);
    while jiff::Timestamp::now() < settled {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = common::run(
        &["run", "--once", "--config", config.to_str().unwrap()],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "run --once failed: {err}");
    assert!(!err.contains(PASSWORD), "the password is in --once's log");
    let received = receiver.data().events.clone();
    let (mut events, mut lost, mut repeats) = (0, 0, 0);
    for v in auditship_sim::Vendor::ALL {
        let truth = common::truth(sim, cfg, v);
        events += truth.len();
        let (l, r) = common::lost_repeated(&received, &common::name(v), &truth);
        lost += l;
        repeats += r;
    }
    assert_eq!(lost, 0, "the receiver lost events ({events} in the truth)");
    (events, repeats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_postgres_loses_nothing_across_sigkills_under_live_traffic() {
    let url = postgres::shared().database().await;
    let cfg = live(3201, 30, 15);
    let sim = common::sim(cfg.clone()).await;
    let receiver = http_receiver::Receiver::start(http_receiver::Mode::Ndjson).await;
    let (dir, config) = pg_setup(&url, &sim, &cfg, &receiver, "replica_id = \"one\"\n");
    let mut rng = fastrand::Rng::with_seed(3201);
    let mut kills = 0;
    while kills < 8 || jiff::Timestamp::now() < cfg.end {
        let mut child = pg_daemon(dir.path(), &config, kills);
        tokio::time::sleep(Duration::from_millis(rng.u64(300..2_000))).await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "the agent exited:\n{}",
            logs(dir.path())
        );
        common::signal(&child, "KILL");
        let _ = child.wait();
        kills += 1;
    }
    let (events, repeats) = settle_and_count(&sim, &cfg, &receiver, &config).await;
    // The state says where each source is, from the database, without the password.
    let out = common::run(&["state", "--config", config.to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for v in auditship_sim::Vendor::ALL {
        assert!(
            text.contains(&common::name(v)),
            "state lacks {v:?}:\n{text}"
        );
    }
    assert!(!text.contains(PASSWORD) && !logs(dir.path()).contains(PASSWORD));
    eprintln!(
        "FIGURES postgres crash loop: events {events}, kills {kills}, lost 0, repeats {repeats} (HTTP, at-least-once)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restarted_under_a_running_agent_is_waited_for_and_nothing_is_lost() {
    let pg = std::sync::Arc::new(postgres::Pg::start());
    let url = pg.database().await;
    let cfg = live(3202, 20, 20);
    let sim = common::sim(cfg.clone()).await;
    let receiver = http_receiver::Receiver::start(http_receiver::Mode::Ndjson).await;
    let port = common::free_port();
    let (dir, config) = pg_setup(
        &url,
        &sim,
        &cfg,
        &receiver,
        &format!("listen = \"127.0.0.1:{port}\"\n"),
    );
    let mut child = pg_daemon(dir.path(), &config, 0);
    let ready = format!("http://127.0.0.1:{port}/readyz");
    common::until(&ready, Duration::from_secs(60), |s, _| s == 200).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.down_async(true).await;
    // Not ready while the database cannot be reached, and saying why.
    let (_, body) = common::until(&ready, Duration::from_secs(20), |s, _| s == 503).await;
    assert!(body.contains("state"), "{body}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the agent exited:\n{}",
        logs(dir.path())
    );
    pg.up_async().await;
    common::until(&ready, Duration::from_secs(60), |s, _| s == 200).await;
    while jiff::Timestamp::now() < cfg.end {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the agent exited:\n{}",
        logs(dir.path())
    );
    common::signal(&child, "TERM");
    let st = common::wait_for(&mut child, Duration::from_secs(30));
    assert!(st.success(), "{st:?}\n{}", logs(dir.path()));
    let (events, repeats) = settle_and_count(&sim, &cfg, &receiver, &config).await;
    assert!(!logs(dir.path()).contains(PASSWORD));
    eprintln!(
        "FIGURES postgres restarted under the agent: events {events}, lost 0, repeats {repeats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_once_run_and_a_reset_are_refused_beside_replicas_and_config_errors_name_the_key() {
    let url = postgres::shared().database().await;
    let cfg = live(3203, 10, 60);
    let sim = common::sim(cfg.clone()).await;
    let receiver = http_receiver::Receiver::start(http_receiver::Mode::Ndjson).await;
    let (dir, config) = pg_setup(&url, &sim, &cfg, &receiver, "replica_id = \"one\"\n");
    let c = config.to_str().unwrap();
    // check --connect reaches the database and names it without the password.
    let out = common::run(&["check", "--connect", "--config", c], &[]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    let shown = url
        .split('?')
        .next()
        .unwrap()
        .replacen("postgres://", "postgresql://", 1);
    assert!(text.contains(&format!("state: {shown}?sslmode=")), "{text}");
    assert!(
        text.contains(": ok (schema ") && !text.contains(PASSWORD),
        "{text}"
    );
    // While a replica runs, a `--once` run is refused (it would read only a share of the
    // sources), and so is a reset; both name the replica, never the password.
    let mut first = pg_daemon(dir.path(), &config, 0);
    let until = Instant::now() + Duration::from_secs(30);
    while !logs(dir.path()).contains("lease acquired") && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&config).unwrap().replacen(
            "replica_id = \"one\"",
            "replica_id = \"two\"",
            1,
        ),
    )
    .unwrap();
    let out = common::run(&["run", "--once", "--config", other.to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("replicas are running on the state database (one)"),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");
    let out = common::run(&["state", "reset", "domo", "--config", c], &[]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("replicas are running on the state database (one)"),
        "{err}"
    );
    // `state` names the holder of each source's and sink's lease.
    let out = common::run(&["state", "--config", c], &[]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    for lease in ["source:domo", "source:wasabi-air", "sink:collector"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(lease) && l.contains(" one ")),
            "{lease}:\n{text}"
        );
    }
    let out = common::run(&["state", "--json", "--config", c], &[]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v.as_array().unwrap().iter().all(|s| s["holder"] == "one"),
        "{v}"
    );
    common::signal(&first, "TERM");
    assert!(common::wait_for(&mut first, Duration::from_secs(30)).success());
    // The schema existed already (check made it): no NOTICE of PostgreSQL's in the log.
    let log = logs(dir.path());
    assert!(!log.contains("already exists, skipping"), "{log}");
    // Stopped: a reset goes through.
    let out = common::run(&["state", "reset", "domo", "--config", c], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Config errors exit 2 naming the key, never quoting the URL.
    let text = std::fs::read_to_string(&config).unwrap();
    let cases: Vec<(String, &str, &str)> = vec![
        (
            text.replacen("[agent]\n", "[agent]\nstate_path = \"s.db\"\n", 1),
            "agent.state_url",
            "not both",
        ),
        (
            format!(
                "{text}\n[[sinks]]\nname = \"archive\"\nkind = \"file\"\npath = \"out.ndjson\"\n"
            ),
            "sinks[1].kind",
            "a file is per machine",
        ),
        (
            text.replacen("postgres://", "mysql://", 1),
            "agent.state_url",
            "",
        ),
        (
            text.replacen("?connect_timeout=5", "?sslmode=sometimes", 1),
            "agent.state_url",
            "sslmode",
        ),
    ];
    for (bad, key, why) in cases {
        std::fs::write(&config, &bad).unwrap();
        let out = common::run(&["check", "--config", c], &[]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{key}: {err}");
        assert!(
            err.contains(key) && err.contains(why),
            "{key} / {why}: {err}"
        );
        assert!(!err.contains(PASSWORD), "{err}");
    }
    // The URL in a file (`state_url_file`), the Kubernetes way.
    let secret = dir.path().join("state-url");
    std::fs::write(&secret, format!("{}\n", with_password(&url))).unwrap();
    let line = text.lines().find(|l| l.starts_with("state_url")).unwrap();
    std::fs::write(
        &config,
        text.replacen(
            line,
            &format!("state_url_file = {:?}", secret.to_str().unwrap()),
            1,
        ),
    )
    .unwrap();
    let out = common::run(&["check", "--connect", "--config", c], &[]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && text.contains(": ok (schema "),
        "{text}"
    );
}

/// `openssl` with `args` in `dir`, which must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (Debian's openssl package)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA `NAME-ca.pem` and, when `leaf`, a server certificate for 127.0.0.1 signed by it.
fn make_ca(dir: &Path, name: &str, leaf: bool) {
    let ca = format!("{name}-ca");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
        ],
    );
    if !leaf {
        return;
    }
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ],
    );
}

/// Connects with `url` as the agent would: whether the session is encrypted, or the error.
async fn session_ssl(url: &str) -> Result<bool, String> {
    let u = PgUrl::parse(url, Path::new("/")).map_err(|e| e.to_string())?;
    let client = u.connect().await.map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_as_libpq_spells_it() {
    let pg = postgres::Pg::start();
    let url = pg.database().await;
    let with = |q: &str| format!("{url}&{q}");
    // No TLS on the server yet: `require` refuses to go on in clear, `prefer` falls back.
    let e = session_ssl(&with("sslmode=require")).await.unwrap_err();
    assert!(!e.is_empty());
    assert_eq!(session_ssl(&with("sslmode=prefer")).await, Ok(false));
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "good", true);
    make_ca(dir.path(), "other", false);
    pg.enable_tls(
        &dir.path().join("server.crt"),
        &dir.path().join("server.key"),
    )
    .await;
    let good = dir.path().join("good-ca.pem");
    let other = dir.path().join("other-ca.pem");
    assert_eq!(session_ssl(&with("sslmode=disable")).await, Ok(false));
    assert_eq!(session_ssl(&with("sslmode=prefer")).await, Ok(true));
    assert_eq!(session_ssl(&with("sslmode=require")).await, Ok(true));
    let full = |ca: &Path| with(&format!("sslmode=verify-full&sslrootcert={}", ca.display()));
    assert_eq!(session_ssl(&full(&good)).await, Ok(true));
    let ca = |ca: &Path| with(&format!("sslmode=verify-ca&sslrootcert={}", ca.display()));
    assert_eq!(session_ssl(&ca(&good)).await, Ok(true));
    // A certificate no trusted CA signed is refused, and says why.
    for url in [full(&other), ca(&other)] {
        let e = session_ssl(&url).await.unwrap_err();
        assert!(e.to_lowercase().contains("certificate"), "{e}");
    }
    // verify-full checks the name: the certificate is for 127.0.0.1, not localhost.
    let by_name = full(&good).replacen("127.0.0.1", "localhost", 1);
    let e = session_ssl(&by_name).await.unwrap_err();
    assert!(
        e.to_lowercase().contains("certificate") || e.to_lowercase().contains("name"),
        "{e}"
    );
    // verify-ca does not.
    let by_name = ca(&good).replacen("127.0.0.1", "localhost", 1);
    assert_eq!(session_ssl(&by_name).await, Ok(true));
}
