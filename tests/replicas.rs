//! Leases of sources between replicas that share a real PostgreSQL (tests/postgres; issue 32):
//! several [`Leases`] holders in this process, each with its own connection, over 40 sources.
//! A shared [`Watch`] records, whenever a replica believes it holds a source, until when
//! (its local deadline): two replicas believing so at the same instant fails the test.

mod postgres;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auditship::lease::{self, check_held, fair_share, LeaseError, Leases};
use tokio_postgres::{Client, Config, NoTls};

const TTL: Duration = Duration::from_millis(1500);
const TICK: Duration = Duration::from_millis(300);

fn sources(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("source:s{i:02}")).collect()
}

async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

async fn setup() -> (String, Client) {
    let url = postgres::shared().database().await;
    let mut client = connect(&url).await;
    lease::migrate(&mut client).await.unwrap();
    (url, client)
}

fn replica(url: &str, id: &str) -> Leases {
    Leases::new(url.parse::<Config>().unwrap(), id, TTL)
}

/// Who believes they hold each source, and until when.
#[derive(Default, Clone)]
struct Watch(Arc<Mutex<HashMap<String, (String, Instant)>>>);

impl Watch {
    /// Records what the replicas hold after a round of ticks; panics if a replica believes it
    /// holds a source while another's belief on it has not run out. What a replica gave back
    /// (or lost) in the round is forgotten first: a release precedes the other's acquire.
    fn record(&self, rs: &[Leases]) {
        let mut m = self.0.lock().unwrap();
        let now = Instant::now();
        for r in rs {
            let held: HashSet<String> = r.held().into_iter().map(|l| l.name).collect();
            m.retain(|name, (who, _)| who != r.id() || held.contains(name));
        }
        for r in rs {
            for l in r.held() {
                let until = r.deadline(&l.name).unwrap();
                if let Some((other, their)) = m.get(&l.name) {
                    assert!(
                        other == r.id() || *their <= now,
                        "{} held by {} and by {other} (until {:?} from now) at once",
                        l.name,
                        r.id(),
                        their.saturating_duration_since(now)
                    );
                }
                m.insert(l.name.clone(), (r.id().to_string(), until));
            }
        }
    }
}

/// The holder of each lease row that has not expired, by the database.
async fn holders(client: &Client) -> HashMap<String, String> {
    client
        .query(
            "SELECT name, holder FROM leases WHERE holder IS NOT NULL AND expires > now()",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn counts(h: &HashMap<String, String>) -> HashMap<String, usize> {
    let mut c = HashMap::new();
    for v in h.values() {
        *c.entry(v.clone()).or_insert(0) += 1;
    }
    c
}

/// Ticks every replica of `rs` (concurrently), records their beliefs, `rounds` times.
async fn run(rs: &mut [Leases], names: &[String], watch: &Watch, rounds: usize) {
    for _ in 0..rounds {
        let ticks = tick_all(rs, names).await;
        for (r, t) in rs.iter().zip(ticks) {
            t.unwrap_or_else(|e| panic!("{}: {e}", r.id()));
        }
        watch.record(rs);
        tokio::time::sleep(TICK).await;
    }
}

async fn tick_all(rs: &mut [Leases], names: &[String]) -> Vec<Result<lease::Tick, LeaseError>> {
    let mut tasks = tokio::task::JoinSet::new();
    let taken: Vec<Leases> = rs
        .iter_mut()
        .map(|r| std::mem::replace(r, Leases::new(Config::new(), "", TTL)))
        .collect();
    for (i, mut r) in taken.into_iter().enumerate() {
        let names = names.to_vec();
        tasks.spawn(async move {
            let t = r.tick(&names).await;
            (i, r, t)
        });
    }
    let mut out: Vec<Option<Result<lease::Tick, LeaseError>>> =
        (0..rs.len()).map(|_| None).collect();
    while let Some(j) = tasks.join_next().await {
        let (i, r, t) = j.unwrap();
        rs[i] = r;
        out[i] = Some(t);
    }
    out.into_iter().map(Option::unwrap).collect()
}

/// Every source held by exactly one replica, and none more than its fair share.
async fn assert_spread(client: &Client, names: &[String], n: usize) -> HashMap<String, usize> {
    let h = holders(client).await;
    assert_eq!(h.len(), names.len(), "every source held: {h:?}");
    let c = counts(&h);
    assert_eq!(c.len(), n, "every replica holds some: {c:?}");
    let share = fair_share(names.len(), n);
    assert!(
        c.values().all(|&k| k <= share),
        "at most {share} each: {c:?}"
    );
    c
}

/// `n` replicas r0.. over 40 sources, ticked until settled: each source held by one, fairly.
async fn settled(url: &str, client: &Client, n: usize) -> (Vec<String>, Watch, Vec<Leases>) {
    let names = sources(40);
    let watch = Watch::default();
    let mut rs: Vec<Leases> = (0..n).map(|i| replica(url, &format!("r{i}"))).collect();
    run(&mut rs, &names, &watch, 5).await;
    assert_spread(client, &names, n).await;
    (names, watch, rs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_and_three_replicas_over_forty_sources_each_source_held_by_one_and_shares_fair() {
    for n in [2usize, 3] {
        let (url, client) = setup().await;
        let names = sources(40);
        let watch = Watch::default();
        let mut rs: Vec<Leases> = (0..n).map(|i| replica(&url, &format!("r{i}"))).collect();
        run(&mut rs, &names, &watch, 6).await;
        let c = assert_spread(&client, &names, n).await;
        eprintln!("{n} replicas, 40 sources: {c:?}");
        // The replicas' own views agree with the database.
        let mut seen = 0;
        for r in &rs {
            seen += r.held().len();
            for l in r.held() {
                assert_eq!(holders(&client).await[&l.name], r.id());
            }
        }
        assert_eq!(seen, 40);
        // What a settled tick costs (heartbeat, renew, count: three statements), measured.
        let started = Instant::now();
        let mut ticks = 0u32;
        for _ in 0..10 {
            for r in rs.iter_mut() {
                let t = r.tick(&names).await.unwrap();
                assert!(t.acquired.is_empty() && t.released.is_empty() && t.lost.is_empty());
                ticks += 1;
            }
        }
        eprintln!(
            "{n} replicas: a settled tick over {} sources took {:?} on average",
            40 / n,
            started.elapsed() / ticks
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_renewing_loses_its_sources_after_the_ttl_and_the_others_take_them_over(
) {
    let (url, client) = setup().await;
    let (names, watch, mut rs) = settled(&url, &client, 3).await;
    // r2 stops renewing (as if SIGKILLed): its rows stay until they expire.
    let dead = rs.pop().unwrap();
    let its: Vec<String> = dead.held().into_iter().map(|l| l.name).collect();
    assert!(!its.is_empty());
    let last_renewal = Instant::now() - TICK; // it renewed at the end of the last round, a tick ago
    let mut taken_at = None;
    let started = Instant::now();
    while started.elapsed() < TTL * 10 {
        run(&mut rs, &names, &watch, 1).await;
        let h = holders(&client).await;
        if its.iter().all(|n| h.get(n).is_some_and(|r| r != "r2")) {
            taken_at = Some(Instant::now());
            break;
        }
        // Not before its rows expired: until then they are still r2's.
        if Instant::now() < last_renewal + TTL - TICK {
            assert!(
                its.iter()
                    .all(|n| h.get(n).map(String::as_str) == Some("r2")),
                "taken over before the ttl: {h:?}"
            );
        }
    }
    let taken_at = taken_at.expect("the others took r2's sources over");
    eprintln!(
        "takeover of {} sources: {:?} after r2's last renewal (ttl {TTL:?}, tick {TICK:?})",
        its.len(),
        taken_at - last_renewal
    );
    assert_spread(&client, &names, 2).await;
    // And the dead replica's own view ran out with its deadline.
    assert!(dead.held().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_its_lease_cannot_commit_under_it_and_the_new_holder_can() {
    let (url, mut client) = setup().await;
    client
        .batch_execute("CREATE TABLE pages (source text, holder text, n int)")
        .await
        .unwrap();
    let names = sources(1);
    let mut a = replica(&url, "a");
    let mut b = replica(&url, "b");
    a.tick(&names).await.unwrap();
    let old = a.lease(&names[0]).expect("a holds the one source");
    // a commits a page under it.
    let r = commit(&mut client, &old, 1).await;
    r.unwrap();
    // a stops renewing; after the ttl b takes the source over.
    tokio::time::sleep(TTL + TICK).await;
    b.tick(&names).await.unwrap();
    let new = b.lease(&names[0]).expect("b took the source over");
    assert!(new.epoch > old.epoch);
    assert!(a.lease(&names[0]).is_none(), "a's own deadline has passed");
    // a's page in flight: refused, and nothing of it committed.
    let r = commit(&mut client, &old, 2).await;
    match r {
        Err(LeaseError::Lost { name, holder, .. }) => {
            assert_eq!((name.as_str(), holder.as_str()), (names[0].as_str(), "a"))
        }
        other => panic!("a committed under a lost lease: {other:?}"),
    }
    // Even had a renewed by now: its epoch is gone.
    a.tick(&names).await.unwrap();
    let r = commit(&mut client, &old, 3).await;
    assert!(matches!(r, Err(LeaseError::Lost { .. })));
    let r = commit(&mut client, &new, 4).await;
    r.unwrap();
    let rows: Vec<(String, i32)> = client
        .query("SELECT holder, n FROM pages ORDER BY n", &[])
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, vec![("a".into(), 1), ("b".into(), 4)]);
}

/// A page committed under `l`: a row written, the lease checked, committed if held.
async fn commit(client: &mut Client, l: &lease::Lease, n: i32) -> Result<(), LeaseError> {
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO pages VALUES ($1, $2, $3)",
        &[&l.name, &l.holder, &n],
    )
    .await?;
    check_held(&tx, l).await?;
    Ok(tx.commit().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_check_passed_holds_the_lease_until_it_ends() {
    let (url, mut client) = setup().await;
    let names = sources(1);
    let mut a = replica(&url, "a");
    let mut b = replica(&url, "b");
    a.tick(&names).await.unwrap();
    let l = a.lease(&names[0]).unwrap();
    let tx = client.transaction().await.unwrap();
    check_held(&tx, &l).await.unwrap();
    // The lease expires while the transaction is open: b cannot take the share-locked row.
    tokio::time::sleep(TTL + TICK).await;
    let t = b.tick(&names).await.unwrap();
    assert!(t.acquired.is_empty(), "{t:?}");
    tx.commit().await.unwrap();
    let t = b.tick(&names).await.unwrap();
    assert_eq!(t.acquired, names);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_joining_takes_its_share_and_the_others_give_back_their_excess() {
    let (url, client) = setup().await;
    let (names, watch, mut rs) = settled(&url, &client, 2).await;
    rs.push(replica(&url, "r2"));
    let joined = Instant::now();
    let mut rounds = 0;
    loop {
        run(&mut rs, &names, &watch, 1).await;
        rounds += 1;
        let h = holders(&client).await;
        let c = counts(&h);
        if h.len() == 40 && c.len() == 3 && c.values().all(|&k| k <= 14) {
            eprintln!(
                "rebalance 2 -> 3 replicas: {rounds} ticks, {:?} (tick {TICK:?}): {c:?}",
                joined.elapsed()
            );
            break;
        }
        assert!(rounds < 20, "no rebalance after {rounds} ticks: {c:?}");
    }
    // A replica leaving cleanly gives its sources back at once.
    let mut gone = rs.pop().unwrap();
    gone.release_all().await.unwrap();
    assert!(gone.held().is_empty());
    watch.record(std::slice::from_ref(&gone));
    run(&mut rs, &names, &watch, 2).await;
    assert_spread(&client, &names, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_restarted_the_replicas_get_errors_then_resume() {
    let pg = postgres::Pg::start();
    let url = pg.database().await;
    {
        let mut c = connect(&url).await;
        lease::migrate(&mut c).await.unwrap();
    }
    let names = sources(40);
    let watch = Watch::default();
    let mut rs: Vec<Leases> = (0..3).map(|i| replica(&url, &format!("r{i}"))).collect();
    run(&mut rs, &names, &watch, 4).await;
    let before: Vec<Vec<String>> = rs
        .iter()
        .map(|r| r.held().into_iter().map(|l| l.name).collect())
        .collect();
    pg.down(true);
    let down = Instant::now();
    for r in rs.iter_mut() {
        let e = r.tick(&names).await.unwrap_err();
        assert!(matches!(e, LeaseError::Db(_)), "{e}");
    }
    // Past the ttl with no database, nobody believes it holds anything.
    tokio::time::sleep(TTL).await;
    assert!(rs.iter().all(|r| r.held().is_empty()));
    pg.up();
    eprintln!("database down for {:?}", down.elapsed());
    run(&mut rs, &names, &watch, 4).await;
    let client = connect(&url).await;
    assert_spread(&client, &names, 3).await;
    let after: Vec<Vec<String>> = rs
        .iter()
        .map(|r| r.held().into_iter().map(|l| l.name).collect())
        .collect();
    eprintln!(
        "same leases after the restart as before: {}",
        before == after
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once_and_a_newer_schema_is_refused() {
    let url = postgres::shared().database().await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let url = url.clone();
        tasks.spawn(async move {
            let mut c = connect(&url).await;
            lease::migrate(&mut c).await.unwrap()
        });
    }
    let mut found = Vec::new();
    while let Some(f) = tasks.join_next().await {
        found.push(f.unwrap());
    }
    found.sort();
    let v = lease::SCHEMA_VERSION;
    assert_eq!(found, vec![0, v, v, v]);
    let mut c = connect(&url).await;
    c.execute("UPDATE auditship_schema SET version = 99", &[])
        .await
        .unwrap();
    match lease::migrate(&mut c).await {
        Err(LeaseError::TooNew { found: 99, known }) => assert_eq!(known, lease::SCHEMA_VERSION),
        other => panic!("{other:?}"),
    }
}
