//! The state store on a real PostgreSQL (tests/postgres; issue 32, `agent.state_url`): the same
//! operations give the same answers as on SQLite, a page commit is all or nothing, a commit
//! under a lost lease commits nothing, and a database that goes away is waited for.

mod postgres;

use std::path::Path;
use std::time::{Duration, Instant};

use auditship::lease::{self, Leases};
use auditship::pgstate::{PgUrl, Postgres};
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
    let cancel = tokio_util::sync::CancellationToken::new();
    let opening =
        tokio::spawn(async move { Postgres::open_waiting(parsed, &retry, &cancel).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!opening.is_finished(), "gave up on a database that is down");
    let up = Instant::now();
    let pg = std::sync::Arc::new(pg);
    tokio::task::spawn_blocking({
        let pg = pg.clone();
        move || pg.up()
    })
    .await
    .unwrap();
    let st = State::Postgres(opening.await.unwrap().unwrap());
    eprintln!("opened {:?} after the database came up", up.elapsed());
    st.commit(page("a", &["http"], 1, 1)).await.unwrap();
}
