//! Replicas sharing their state in PostgreSQL (issue 32), as users run them: the real binary,
//! three or four agents with the same config on one database (Debian's PostgreSQL started by
//! tests/postgres), 40 live sources on the emulator, each with a credential of its own so that
//! the emulator can tell who polled what and when (the agent names its replica in its
//! User-Agent), and an HTTP receiver. What is checked: each source polled by one replica at a
//! time, the union of what the receiver got equal to the truth (repeats only from a replica
//! killed with pages in flight), takeover after a SIGKILL within `lease_ttl` + one poll
//! interval, rebalance when a replica joins or leaves within two poll intervals, and a database
//! restarted under them.

mod common;
mod http_receiver;
mod postgres;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use auditship_sim::{SimConfig, SimHandle, Vendor};

const SOURCES: usize = 40;
/// The leases' ttl and the sources' poll interval of these tests (a tick is a third of the ttl).
const TTL: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_secs(2);

/// Live traffic for Domino's audit trail, read by 40 sources with a key each.
fn live(seed: u64, back: u64, ahead: u64) -> SimConfig {
    let now = jiff::Timestamp::now();
    SimConfig {
        seed,
        start: now - jiff::SignedDuration::from_secs(back as i64),
        end: now + jiff::SignedDuration::from_secs(ahead as i64),
        events: 5 * (back + ahead),
        vendors: vec![Vendor::DominoAudit],
        twin_fraction: 0.02,
        late_fraction: 0.1,
        late_max: Duration::from_secs(3),
        more_api_keys: (0..SOURCES).map(key).collect(),
        ..SimConfig::default()
    }
}

fn key(i: usize) -> String {
    format!("key-{i:02}")
}

fn source(i: usize) -> String {
    format!("s{i:02}")
}

/// The replicas of one test: the same config but for `replica_id`.
struct Cluster {
    dir: tempfile::TempDir,
    text: String,
    agents: BTreeMap<String, Child>,
    started: BTreeMap<String, Instant>,
}

impl Cluster {
    fn new(
        url: &str,
        sim: &SimHandle,
        cfg: &SimConfig,
        receiver: &http_receiver::Receiver,
    ) -> Cluster {
        let mut text = format!(
            "[agent]\nstate_url = {url:?}\nlease_ttl = \"{}s\"\npoll_interval = \"{}s\"\nlag = \"2s\"\n\
             overlap = \"20s\"\nretry_max_attempts = 30\nretry_initial = \"20ms\"\nretry_max_delay = \"300ms\"\n\
             replica_id = \"REPLICA\"\nlisten = \"127.0.0.1:LISTEN\"\n",
            TTL.as_secs(),
            POLL.as_secs()
        );
        for i in 0..SOURCES {
            text.push_str(&format!(
                "\n[[sources]]\nname = {:?}\nkind = \"domino_audit\"\nurl = {:?}\napi_key = {:?}\nstart = {:?}\n",
                source(i),
                sim.url(),
                key(i),
                format!("{:.3}", cfg.start)
            ));
        }
        text.push_str(&format!(
            "\n[[sinks]]\nname = \"collector\"\nkind = \"http\"\nurl = \"{}/ingest\"\n",
            receiver.base()
        ));
        Cluster {
            dir: tempfile::tempdir().unwrap(),
            text,
            agents: BTreeMap::new(),
            started: BTreeMap::new(),
        }
    }

    fn config(&self, id: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{id}.toml"));
        if !path.exists() {
            let port = common::free_port().to_string();
            std::fs::write(
                &path,
                self.text.replace("REPLICA", id).replace("LISTEN", &port),
            )
            .unwrap();
        }
        path
    }

    /// Replica `id`'s `/metrics`.
    async fn metrics(&self, id: &str) -> String {
        let text = std::fs::read_to_string(self.config(id)).unwrap();
        let listen = text
            .lines()
            .find_map(|l| l.strip_prefix("listen = "))
            .unwrap()
            .trim_matches('"')
            .to_string();
        let (status, body) = common::until(
            &format!("http://{listen}/metrics"),
            Duration::from_secs(10),
            |s, _| s == 200,
        )
        .await;
        assert_eq!(status, 200);
        body
    }

    fn start(&mut self, id: &str) {
        let config = self.config(id);
        let child = std::process::Command::new(common::bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("AUDITSHIP_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join(format!("{id}.log")))
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        self.started.insert(id.to_string(), Instant::now());
        self.agents.insert(id.to_string(), child);
    }

    fn signal(&mut self, id: &str, sig: &str) {
        let mut child = self.agents.remove(id).unwrap();
        common::signal(&child, sig);
        let st = common::wait_for(&mut child, Duration::from_secs(30));
        if sig == "TERM" {
            assert!(st.success(), "{id} exited {st:?}:\n{}", self.logs());
        }
    }

    fn alive(&mut self) {
        let mut exited = None;
        for (id, c) in &mut self.agents {
            if let Some(st) = c.try_wait().unwrap() {
                exited = Some(format!("replica {id} exited {st:?}"));
            }
        }
        if let Some(e) = exited {
            panic!("{e}:\n{}", self.logs());
        }
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                all.push_str(&format!("--- {}\n", p.display()));
                for l in tail.into_iter().rev() {
                    all.push_str(l);
                    all.push('\n');
                }
            }
        }
        all
    }

    /// Who holds each source's lease, from `state --json` (the database's view).
    fn holders(&self) -> BTreeMap<String, String> {
        let config = self.config("observer");
        let out = common::run(
            &["state", "--json", "--config", config.to_str().unwrap()],
            &[],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter_map(|s| {
                Some((
                    s["source"].as_str()?.to_string(),
                    s["holder"].as_str()?.to_string(),
                ))
            })
            .collect()
    }

    /// Waits until `ok` holds of the holders; returns how long it took and the holders.
    async fn until(
        &mut self,
        limit: Duration,
        what: &str,
        ok: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> (Duration, BTreeMap<String, String>) {
        let began = Instant::now();
        loop {
            let h = self.holders();
            if ok(&h) {
                return (began.elapsed(), h);
            }
            if began.elapsed() > limit {
                panic!(
                    "{what} not within {limit:?}: {:?}\n{}",
                    shares(&h),
                    self.logs()
                );
            }
            self.alive();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// How many sources each replica holds.
fn shares(h: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for holder in h.values() {
        *m.entry(holder.clone()).or_default() += 1;
    }
    m
}

/// Every source held, by the replicas `ids` only, each at most its fair share of the 41 lease
/// names (40 sources and the sink).
fn spread_over<'a>(ids: &'a [&'a str]) -> impl Fn(&BTreeMap<String, String>) -> bool + 'a {
    move |h| {
        let share = (SOURCES + 1).div_ceil(ids.len());
        let s = shares(h);
        h.len() == SOURCES
            && s.keys().all(|k| ids.contains(&k.as_str()))
            && s.values().all(|n| *n <= share)
    }
}

fn now_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// The replica a request came from, by its User-Agent.
fn replica_of(user_agent: &str) -> String {
    user_agent
        .split("(replica ")
        .nth(1)
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or("?")
        .to_string()
}

/// Per source, its requests in order: (came, answered, replica).
fn requests(sim: &SimHandle) -> BTreeMap<String, Vec<(i64, i64, String)>> {
    let mut by: BTreeMap<String, Vec<(i64, i64, String)>> = BTreeMap::new();
    for r in sim.requests() {
        let Some(i) = r.credential.strip_prefix("key-") else {
            continue;
        };
        let i: usize = i.parse().unwrap();
        by.entry(source(i))
            .or_default()
            .push((r.at_ns, r.done_ns, replica_of(&r.user_agent)));
    }
    for v in by.values_mut() {
        v.sort();
    }
    by
}

/// Fails unless each source was polled by one replica at a time: when the replica asking
/// changes, the new one's first request comes after the old one's last was answered. Returns
/// how many times sources changed hands.
fn one_at_a_time(sim: &SimHandle) -> usize {
    let mut changes = 0;
    for (source, reqs) in requests(sim) {
        for w in reqs.windows(2) {
            let ((_, done, a), (at, _, b)) = (&w[0], &w[1]);
            assert_ne!(a, "?", "{source}: a request without a replica's User-Agent");
            if a != b {
                changes += 1;
                assert!(
                    at >= done,
                    "{source}: {b} asked at {at} while {a}'s request was not answered ({done})"
                );
            }
        }
    }
    changes
}

/// Past the live span, a `--once` of a replica of its own (the others stopped) reads to the
/// end; then the receiver must hold every event of every source. Returns (events, repeats by
/// source).
async fn settle(
    cluster: &Cluster,
    sim: &SimHandle,
    cfg: &SimConfig,
    receiver: &http_receiver::Receiver,
) -> (usize, BTreeMap<String, i64>) {
    let settled = cfg.end
        + jiff::SignedDuration::try_from(cfg.late_max).unwrap()
        + jiff::SignedDuration::from_secs(4);
    while jiff::Timestamp::now() < settled {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let config = cluster.config("final");
    let out = common::run(
        &["run", "--once", "--config", config.to_str().unwrap()],
        &[],
    );
    assert!(
        out.status.success(),
        "run --once failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let received = receiver.data().events.clone();
    let truth = common::truth(sim, cfg, Vendor::DominoAudit);
    let mut repeats = BTreeMap::new();
    let mut events = 0;
    for i in 0..SOURCES {
        let (lost, rep) = common::lost_repeated(&received, &source(i), &truth);
        assert_eq!(
            lost,
            0,
            "{} lost {lost} of {} events",
            source(i),
            truth.len()
        );
        events += truth.len();
        if rep > 0 {
            repeats.insert(source(i), rep);
        }
    }
    (events, repeats)
}

async fn world(
    seed: u64,
    back: u64,
    ahead: u64,
) -> (SimHandle, SimConfig, http_receiver::Receiver) {
    let cfg = live(seed, back, ahead);
    let sim = common::sim(cfg.clone()).await;
    sim.record_requests(true);
    let receiver = http_receiver::Receiver::start(http_receiver::Mode::Ndjson).await;
    (sim, cfg, receiver)
}

fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_forty_live_sources_and_a_sigkilled_one_is_taken_over() {
    let url = postgres::shared().database().await;
    let (sim, cfg, receiver) = world(3301, 20, 40).await;
    let mut c = Cluster::new(&url, &sim, &cfg, &receiver);
    for id in ["r1", "r2", "r3"] {
        c.start(id);
    }
    let (spread, _) = c
        .until(
            Duration::from_secs(30),
            "40 sources over r1, r2, r3",
            spread_over(&["r1", "r2", "r3"]),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    c.alive();
    // Each replica's metrics name it and the leases it holds, as the database says.
    let holders = c.holders();
    for id in ["r1", "r2", "r3"] {
        let m = c.metrics(id).await;
        let (status, report) = common::promtool(&m);
        assert!(
            status.success() && report.trim().is_empty(),
            "promtool check metrics on {id}: {report}"
        );
        assert!(
            m.contains(&format!("auditship_replica_info{{replica=\"{id}\"}} 1")),
            "{id}:\n{m}"
        );
        for (s, h) in &holders {
            let line = format!(
                "auditship_lease_held{{kind=\"source\",name=\"{s}\"}} {}",
                u8::from(h == id)
            );
            assert!(m.contains(&line), "{id} lacks {line}");
        }
    }
    let rss: Vec<u64> = c.agents.values().map(|a| peak_rss_kb(a.id())).collect();

    // SIGKILL of r1: its sources resume on r2 and r3.
    let before = c.holders();
    let r1: BTreeSet<String> = before
        .iter()
        .filter(|(_, h)| *h == "r1")
        .map(|(s, _)| s.clone())
        .collect();
    assert!(!r1.is_empty(), "{before:?}");
    let killed = jiff::Timestamp::now().as_nanosecond() as i64;
    c.signal("r1", "KILL");
    c.until(
        Duration::from_secs(20),
        "r1's sources taken over",
        spread_over(&["r2", "r3"]),
    )
    .await;
    // From the emulator: when each of r1's sources was first asked for by another replica
    // (the lease moves a moment before the new holder's first request).
    let first_after = |polled: &BTreeMap<String, Vec<(i64, i64, String)>>, s: &String| {
        polled.get(s).and_then(|reqs| {
            reqs.iter()
                .find(|(at, _, who)| *at > killed && who != "r1")
                .map(|r| r.0)
        })
    };
    let began = Instant::now();
    let polled = loop {
        let polled = requests(&sim);
        if r1.iter().all(|s| first_after(&polled, s).is_some()) {
            break polled;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "some of r1's sources were not polled after the kill"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut takeover = Duration::ZERO;
    for s in &r1 {
        let first = first_after(&polled, s).unwrap();
        takeover = takeover.max(Duration::from_nanos((first - killed) as u64));
    }
    assert!(
        takeover <= TTL + POLL,
        "r1's sources resumed {takeover:?} after the kill (lease_ttl {TTL:?} + poll {POLL:?})"
    );

    while jiff::Timestamp::now() < cfg.end {
        c.alive();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in ["r2", "r3"] {
        c.signal(id, "TERM");
    }
    let changes = one_at_a_time(&sim);
    let (events, repeats) = settle(&c, &sim, &cfg, &receiver).await;
    // Repeats only from pages r1 had in flight: only of its sources, at most a page or two each.
    for (s, n) in &repeats {
        assert!(r1.contains(s), "{s} repeated {n} events but was not r1's");
    }
    let log = c.logs();
    assert!(!log.contains("panicked"), "{log}");
    eprintln!(
        "FIGURES ha sigkill: 40 sources over 3 replicas in {spread:?}; r1 held {} sources, taken over within {takeover:?} \
         (lease_ttl {TTL:?}, poll {POLL:?}); {changes} changes of hands; events {events}, lost 0, repeats {:?}; peak RSS {:?} kB",
        r1.len(),
        repeats,
        rss
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_joining_and_one_leaving_rebalance_the_leases_within_two_polls() {
    let pg = postgres::shared();
    let url = pg.database().await;
    let (sim, cfg, receiver) = world(3302, 20, 35).await;
    let mut c = Cluster::new(&url, &sim, &cfg, &receiver);
    c.start("r1");
    c.start("r2");
    c.until(
        Duration::from_secs(30),
        "40 sources over r1, r2",
        spread_over(&["r1", "r2"]),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // r3 joins: the others give back their excess and r3 takes its share.
    c.start("r3");
    let (join, after) = c
        .until(
            Duration::from_secs(20),
            "rebalance over r1, r2, r3",
            spread_over(&["r1", "r2", "r3"]),
        )
        .await;
    assert!(
        join <= 2 * POLL + Duration::from_secs(1),
        "rebalance after r3 joined took {join:?} (poll {POLL:?}; the 1 s is its start)"
    );
    let before = shares(&after);
    let settled = now_ns() + Duration::from_secs(1).as_nanos() as i64;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Once settled, each source is polled by its holder alone: a replica that gave a lease
    // back stopped polling the source (it does not go on beside the new holder).
    let until = now_ns();
    for (s, reqs) in requests(&sim) {
        for (at, _, who) in reqs
            .iter()
            .filter(|(at, _, _)| *at > settled && *at < until)
        {
            assert_eq!(
                Some(who),
                after.get(&s),
                "{s} polled at {at} by {who}, not by its holder"
            );
        }
    }

    // r1 leaves (SIGTERM): it gives its leases back, the others take them at their next tick.
    let left = Instant::now();
    c.signal("r1", "TERM");
    let stopped = left.elapsed();
    let (leave, after) = c
        .until(
            Duration::from_secs(20),
            "rebalance over r2, r3",
            spread_over(&["r2", "r3"]),
        )
        .await;
    assert!(
        leave <= 2 * POLL,
        "rebalance after r1 left took {leave:?} (poll {POLL:?})"
    );

    // Load on the database: transactions per source per poll, from its own counters.
    let xacts = pg.xacts(&url).await;
    while jiff::Timestamp::now() < cfg.end {
        c.alive();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let xacts = pg.xacts(&url).await - xacts;
    let span = left.elapsed();
    for id in ["r2", "r3"] {
        c.signal(id, "TERM");
    }
    let changes = one_at_a_time(&sim);
    let (events, repeats) = settle(&c, &sim, &cfg, &receiver).await;
    // Leases handed over cleanly (given back only once the poller stopped): nothing twice.
    assert!(
        repeats.is_empty(),
        "repeats after clean handovers: {repeats:?}"
    );
    let polls = span.as_secs_f64() / POLL.as_secs_f64();
    eprintln!(
        "FIGURES ha rebalance: join {join:?} -> {before:?}; leave {leave:?} (r1 stopped in {stopped:?}) -> {:?}; \
         {changes} changes of hands; database {:.1} transactions per source per poll; events {events}, lost 0, repeats 0",
        shares(&after),
        xacts as f64 / SOURCES as f64 / polls
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_restarted_under_three_replicas_they_wait_and_resume_losing_nothing() {
    let pg = std::sync::Arc::new(postgres::Pg::start());
    let url = pg.database().await;
    let (sim, cfg, receiver) = world(3303, 20, 35).await;
    let mut c = Cluster::new(&url, &sim, &cfg, &receiver);
    for id in ["r1", "r2", "r3"] {
        c.start(id);
    }
    c.until(
        Duration::from_secs(30),
        "40 sources over r1, r2, r3",
        spread_over(&["r1", "r2", "r3"]),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Down longer than the leases' ttl: every replica stops polling at its local deadline.
    pg.down_async(true).await;
    let down = jiff::Timestamp::now().as_nanosecond() as i64;
    tokio::time::sleep(TTL + Duration::from_secs(3)).await;
    c.alive();
    let up = jiff::Timestamp::now().as_nanosecond() as i64;
    // Nobody polled once its leases had run out, though nobody could renew them.
    for (s, reqs) in requests(&sim) {
        let late = reqs
            .iter()
            .filter(|(at, _, _)| {
                *at > down + (TTL + Duration::from_millis(500)).as_nanos() as i64 && *at < up
            })
            .count();
        assert_eq!(
            late, 0,
            "{s} was polled after its lease ran out with the database down"
        );
    }
    pg.up_async().await;
    let (back, _) = c
        .until(
            Duration::from_secs(30),
            "40 sources over r1, r2, r3 again",
            spread_over(&["r1", "r2", "r3"]),
        )
        .await;
    while jiff::Timestamp::now() < cfg.end {
        c.alive();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in ["r1", "r2", "r3"] {
        c.signal(id, "TERM");
    }
    let changes = one_at_a_time(&sim);
    let (events, repeats) = settle(&c, &sim, &cfg, &receiver).await;
    eprintln!(
        "FIGURES ha database restart: down {:?}, sources spread again {back:?} after it came back; {changes} changes of hands; \
         events {events}, lost 0, repeats {repeats:?}",
        TTL + Duration::from_secs(3)
    );
}
