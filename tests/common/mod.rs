//! Shared helpers of the integration tests: the emulator in-process, the real binary as a child
//! process, and comparisons of what was delivered with the emulator's truth.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use auditship_sim::{SimConfig, SimHandle, Vendor};
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_auditship");

/// The binary the tests run: `AUDITSHIP_TEST_BIN` if set (to see a new test fail against an
/// older build), else the one cargo built.
pub fn bin() -> String {
    std::env::var("AUDITSHIP_TEST_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// Starts the emulator on a free loopback port.
pub async fn sim(cfg: SimConfig) -> SimHandle {
    auditship_sim::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("starting the simulator")
}

/// A backfill-only emulator config: `events` per vendor over `days` days ending a minute ago.
pub fn backfill(vendors: &[Vendor], events: u64, days: i64, seed: u64) -> SimConfig {
    let end = Timestamp::now() - SignedDuration::from_mins(1);
    SimConfig {
        seed,
        start: end - SignedDuration::from_hours(24 * days),
        end,
        events,
        vendors: vendors.to_vec(),
        late_fraction: 0.0,
        twin_fraction: 0.03,
        ..SimConfig::default()
    }
}

/// The `[[sources]]` entry reading `vendor` from the emulator, named after the vendor.
pub fn source_toml(sim: &SimHandle, cfg: &SimConfig, vendor: Vendor, extra: &str) -> String {
    let auth = vendor.source_keys(cfg);
    format!(
        "[[sources]]\nname = {:?}\nkind = {:?}\nurl = {:?}\nstart = {:?}\n{auth}{extra}\n",
        name(vendor),
        vendor.as_str(),
        sim.url(),
        format!("{:.3}", cfg.start),
    )
}

/// The source name used for a vendor in tests.
pub fn name(v: Vendor) -> String {
    v.as_str().replace('_', "-")
}

/// A test directory with a config, a state file and a file sink.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub out: PathBuf,
}

/// Writes a config with fast retries and a file sink `out.ndjson`.
pub fn setup(agent_extra: &str, sources: &str) -> Setup {
    setup_timed(
        "lag = \"1s\"\noverlap = \"10s\"\npoll_interval = \"1s\"\nretry_max_attempts = 20",
        agent_extra,
        sources,
    )
}

/// [`setup`] with `timing` (the `lag`, `overlap`, `poll_interval` and `retry_max_attempts`
/// lines of `[agent]`) given.
pub fn setup_timed(timing: &str, agent_extra: &str, sources: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let config = dir.path().join("auditship.toml");
    let text = format!(
        "[agent]\nstate_path = \"state.db\"\n{timing}\n\
         retry_initial = \"20ms\"\nretry_max_delay = \"200ms\"\n{agent_extra}\n\
         {sources}\n[[sinks]]\nname = \"file\"\nkind = \"file\"\npath = \"out.ndjson\"\nfsync = false\n"
    );
    std::fs::write(&config, text).unwrap();
    Setup { dir, config, out }
}

/// The `[[sources]]` of every vendor of the emulator, under its default name.
pub fn all_sources(sim: &SimHandle, cfg: &SimConfig) -> String {
    Vendor::ALL
        .iter()
        .map(|v| source_toml(sim, cfg, *v, ""))
        .collect()
}

/// The row of `sink` in `auditship state`'s table of sink queues, split on blanks: name,
/// queued, bytes, oldest, limit, delivered.
pub fn sink_queue_row(config: &Path, sink: &str) -> Vec<String> {
    let out = run(&["state", "--config", config.to_str().unwrap()], &[]);
    let table = String::from_utf8_lossy(&out.stdout);
    table
        .lines()
        .find(|l| l.starts_with(&format!("{sink} ")))
        .unwrap_or_else(|| panic!("no row for sink {sink}:\n{table}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The standard error of a finished run, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// How long [`run_once`] lets a run take before the test fails.
pub const ONCE_LIMIT: Duration = Duration::from_secs(180);

/// `run --once --config CONFIG` (the binary as [`agent`] starts it, off the test's threads so
/// the emulators and receivers in the test keep serving), failing the test after [`ONCE_LIMIT`].
pub async fn run_once(config: &Path) -> Output {
    run_once_with(config, &[], ONCE_LIMIT).await
}

/// [`run_once`] with `env` set, failing the test after `limit`.
pub async fn run_once_with(config: &Path, env: &[(&str, &str)], limit: Duration) -> Output {
    let started = Instant::now();
    let out = tokio::time::timeout(
        limit,
        agent(
            &["run", "--once", "--config", config.to_str().unwrap()],
            env,
        )
        .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("run --once took more than {limit:?}"))
    .expect("running auditship");
    eprintln!("run --once: {:?} in {:?}", out.status, started.elapsed());
    out
}

/// The opening of most tests: the emulator of `cfg`, and a [`setup`] reading `vendors` from it
/// (each under its default name) into the file sink.
pub async fn sim_reading(cfg: &SimConfig, vendors: &[Vendor]) -> (SimHandle, Setup) {
    let sim = sim(cfg.clone()).await;
    let sources: String = vendors
        .iter()
        .map(|v| source_toml(&sim, cfg, *v, ""))
        .collect();
    let s = setup("", &sources);
    (sim, s)
}

/// The world of a test: the emulator, what it was started with, a test directory with a config
/// reading its vendors into the file sink `out.ndjson`, and the test's receiver `rx` (a test
/// file adds its own methods in an `impl World<ItsReceiver>`).
pub struct World<R = ()> {
    pub sim: SimHandle,
    pub cfg: SimConfig,
    pub s: Setup,
    pub rx: R,
}

impl World {
    /// The emulator of `cfg`, and a config reading each of its vendors (with `source_extra`
    /// keys, under its default name) into the file sink, followed by `sinks`.
    pub async fn start(cfg: SimConfig, source_extra: &str, sinks: &str) -> World {
        let sim = sim(cfg.clone()).await;
        let sources: String = cfg
            .vendors
            .iter()
            .map(|v| source_toml(&sim, &cfg, *v, source_extra))
            .collect();
        let s = setup("", &sources);
        if !sinks.is_empty() {
            let text = std::fs::read_to_string(&s.config).unwrap();
            std::fs::write(&s.config, format!("{text}\n{sinks}")).unwrap();
        }
        World {
            sim,
            cfg,
            s,
            rx: (),
        }
    }

    /// The same world with the test's receiver.
    pub fn with<R>(self, rx: R) -> World<R> {
        World {
            sim: self.sim,
            cfg: self.cfg,
            s: self.s,
            rx,
        }
    }
}

impl<R> World<R> {
    /// The emulator's truth for each of its vendors, by source name.
    pub fn truths(&self) -> Vec<(String, Vec<String>)> {
        self.cfg
            .vendors
            .iter()
            .map(|v| (name(*v), truth(&self.sim, &self.cfg, *v)))
            .collect()
    }

    /// Stops the emulator.
    pub async fn shutdown(self) {
        self.sim.shutdown().await;
    }
}

/// Runs the binary to completion.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args).env("AUDITSHIP_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running auditship")
}

/// The binary as a tokio command, with no proxy from the environment (receivers are on
/// loopback), killed when dropped.
pub fn agent(args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.args(args)
        .env("AUDITSHIP_LOG", "info")
        .env("NO_PROXY", "127.0.0.1,localhost");
    for k in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.kill_on_drop(true);
    cmd
}

/// Runs `run --once` and asserts it succeeded.
pub fn once_ok(s: &Setup) -> Output {
    let out = run(
        &["run", "--once", "--config", s.config.to_str().unwrap()],
        &[],
    );
    assert!(
        out.status.success(),
        "run --once failed: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Starts the binary in the background.
pub fn spawn(args: &[&str]) -> Child {
    Command::new(bin())
        .args(args)
        .env("AUDITSHIP_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning auditship")
}

/// [`spawn`] with more environment variables (an empty value is left out).
pub fn spawn_with(args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut c = Command::new(bin());
    c.args(args)
        .env("AUDITSHIP_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        if !v.is_empty() {
            c.env(k, v);
        }
    }
    c.spawn().expect("spawning auditship")
}

/// Sends a signal to a child.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

/// Waits for a child to exit, at most `limit`.
pub fn wait_for(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("auditship did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback TCP port nobody listens on (bound, then let go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How many complete lines a file holds now: safe to poll while the agent appends to it (a
/// line being written is not counted; `read_lines` afterwards checks every line whole).
pub fn lines_so_far(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// Every line of an NDJSON file, parsed (a torn last line is a failure).
pub fn read_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// Canonical text of a JSON value: object keys sorted at every depth, so equal values compare
/// equal as strings.
pub fn canon(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<_> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            x => x.clone(),
        }
    }
    sorted(v).to_string()
}

/// Asserts the events delivered for `source` are exactly the truth: the same multiset of raw
/// vendor entries (twins included), and no id twice.
pub fn assert_exactly(delivered: &[Value], source: &str, truth: &[String]) {
    let mine: Vec<&Value> = delivered.iter().filter(|e| e["source"] == source).collect();
    let mut ids = HashSet::new();
    for e in &mine {
        assert!(
            ids.insert(e["id"].as_str().unwrap().to_string()),
            "{source}: id {} delivered twice",
            e["id"]
        );
    }
    let mut got: BTreeMap<String, i64> = BTreeMap::new();
    for e in &mine {
        *got.entry(e["raw"].to_string()).or_default() += 1;
    }
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for t in truth {
        let v: Value = serde_json::from_str(t).unwrap();
        *want.entry(v.to_string()).or_default() += 1;
    }
    let missing: Vec<_> = want
        .iter()
        .filter(|(k, n)| got.get(*k).copied().unwrap_or(0) < **n)
        .take(3)
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|(k, n)| want.get(*k).copied().unwrap_or(0) < **n)
        .take(3)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{source}: delivered {} events, truth {}; missing (e.g.) {missing:?}; extra or doubled (e.g.) {extra:?}",
        mine.len(),
        truth.len()
    );
}

/// The emulator's truth for a vendor over the whole generated span.
pub fn truth(sim: &SimHandle, cfg: &SimConfig, v: Vendor) -> Vec<String> {
    sim.events(v, cfg.start, cfg.end)
}

/// `state --json` parsed.
pub fn state_json(s: &Setup) -> Value {
    let out = run(
        &["state", "--json", "--config", s.config.to_str().unwrap()],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn t(s: &str) -> Timestamp {
    s.parse::<Timestamp>().unwrap()
}

/// Runs `run --once` again and again, each time SIGKILLed after a random delay below
/// `max_delay_ms`, until `want` kills have landed or a run finishes first. Returns the file
/// sink's size after each kill.
pub fn kill_at_random_points(
    s: &Setup,
    rng: &mut fastrand::Rng,
    want: usize,
    max_delay_ms: u64,
) -> Vec<u64> {
    let mut sizes = Vec::new();
    while sizes.len() < want {
        let mut child = spawn(&["run", "--once", "--config", s.config.to_str().unwrap()]);
        std::thread::sleep(Duration::from_millis(rng.u64(20..max_delay_ms)));
        if child.try_wait().unwrap().is_some() {
            break; // the backfill is done: nothing left to interrupt
        }
        signal(&child, "KILL");
        let _ = child.wait();
        sizes.push(std::fs::metadata(&s.out).map(|m| m.len()).unwrap_or(0));
    }
    sizes
}

/// GET `url` (no proxy, 2 s): its status and body; `None` when it could not be read.
pub async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

/// Polls `url` until `want` holds for its answer, at most `limit`.
pub async fn until(url: &str, limit: Duration, want: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let started = Instant::now();
    loop {
        if let Some((s, b)) = get(url).await {
            if want(s, &b) {
                return (s, b);
            }
        }
        assert!(
            started.elapsed() < limit,
            "{url}: condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// The value of the first series of a Prometheus text that starts with `name_and_labels` (0 when
/// there is none).
pub fn metric(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// Waits until `cond` holds, at most `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The emulator with all four vendors (`events` each over three days, `page` the sources'
/// further keys), and a config with the file sink `out.ndjson`: the world of a sink's tests.
pub async fn four_vendors(events: u64, seed: u64, page: &str) -> (SimHandle, SimConfig, Setup) {
    let w = World::start(backfill(&Vendor::ALL, events, 3, seed), page, "").await;
    (w.sim, w.cfg, w.s)
}

/// `check --connect`: its exit code and standard output.
pub fn check_connect(s: &Setup) -> (Option<i32>, String) {
    let out = run(
        &["check", "--connect", "--config", s.config.to_str().unwrap()],
        &[],
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Lost and repeated events of `source` in what the receiver got, against the truth.
pub fn lost_repeated(received: &[serde_json::Value], source: &str, truth: &[String]) -> (i64, i64) {
    let mut want: std::collections::HashMap<String, i64> = Default::default();
    for t in truth {
        let v: serde_json::Value = serde_json::from_str(t).unwrap();
        *want.entry(v.to_string()).or_default() += 1;
    }
    for e in received.iter().filter(|e| e["source"] == source) {
        *want.entry(e["raw"].to_string()).or_default() -= 1;
    }
    let lost = want.values().filter(|n| **n > 0).sum();
    let repeated = -want.values().filter(|n| **n < 0).sum::<i64>();
    (lost, repeated)
}

/// Runs `promtool check metrics` (Prometheus' own linter of the exposition format) on `text`:
/// its exit status and what it reported. A missing promtool fails the test, saying what to
/// install (CI installs it: `tests/install-deps.sh`, Debian's `prometheus` package).
pub fn promtool(text: &str) -> (std::process::ExitStatus, String) {
    use std::io::Write as _;
    let mut child = match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!(
            "cannot run promtool ({e}): NOT TESTED: install it (`bash tests/install-deps.sh`, or \
             apt-get install prometheus), or leave this test out on purpose with \
             `cargo test --test TEST -- --skip NAME`"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, report)
}
