//! The agent: state, sinks and one poller task per source, until shutdown (or one pass).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::health::{Health, SourceHealth};
use crate::metrics;
use crate::pipeline::{PollError, Poller};
use crate::server::{self, Probe};
use crate::sinks::drain::{drain, DrainCx, Drained};
use crate::sinks::{self, SinkSlot};
use crate::sources::config::SourceConfig;
use crate::sources::pace::Paces;
use crate::sources::{self, Http};
use crate::state::{State, StateError};
use crate::timefmt::{self, NANOS_PER_SEC};

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every source completed (`--once`), or shutdown was requested (daemon).
    Completed,
    /// At least one source could not complete.
    Failed,
}

/// An exclusive lock on `STATE.lock`: two agents on one state file would each truncate the
/// other's file sink and double events. Held for the life of the value.
pub struct StateLock {
    file: File,
    /// The pid the lock file held when it was taken: an agent ran on this state before.
    pub previous: Option<String>,
}

impl StateLock {
    pub fn acquire(state_path: &Path) -> anyhow::Result<StateLock> {
        let mut p: PathBuf = state_path.as_os_str().to_owned().into();
        p.as_mut_os_string().push(".lock");
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        }
        crate::state::private_file(&p).with_context(|| format!("cannot create {}", p.display()))?;
        let mut file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&p)
            .with_context(|| format!("cannot open {}", p.display()))?;
        match file.try_lock() {
            Ok(()) => {
                // The pid of the last agent that made or used the state here, if any. This
                // one's pid goes in only once its state is open ([`StateLock::claim`]).
                use std::io::Read as _;
                let mut before = Vec::new();
                file.read_to_end(&mut before)
                    .with_context(|| format!("cannot read {}", p.display()))?;
                let text = String::from_utf8_lossy(&before);
                let previous = Some(text.trim().to_string()).filter(|p| !p.is_empty());
                // The agent writes its pid here: anything else is another program's file.
                if previous.as_ref().is_some_and(|p| p.parse::<u32>().is_err()) {
                    anyhow::bail!(
                        "{} exists and does not hold an auditship pid: it is not this agent's lock, and the agent would overwrite it; move it away (or choose another agent.state_path)",
                        p.display()
                    );
                }
                Ok(StateLock { file, previous })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&p)
                    .ok()
                    .and_then(|t| t.trim().parse::<u32>().ok())
                    .map(|pid| format!("pid {pid}"))
                    .unwrap_or_else(|| "pid unknown".to_string());
                anyhow::bail!(
                    "another auditship ({holder}) is running on {} (lock {} is held); stop it, or give this one another agent.state_path",
                    state_path.display(),
                    p.display()
                )
            }
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", p.display()))
            }
        }
    }
}

impl StateLock {
    /// Refuses a state file that an agent used before (the lock held its pid) and that is now
    /// missing or empty: opening it would make a new state, and every event would be
    /// delivered again.
    pub fn check_not_vanished(&self, state_path: &Path) -> Result<(), StateError> {
        let Some(pid) = &self.previous else {
            return Ok(());
        };
        let len = std::fs::metadata(state_path).map(|m| m.len()).unwrap_or(0);
        if len == 0 {
            return Err(StateError::Vanished {
                path: state_path.to_path_buf(),
                pid: pid.clone(),
            });
        }
        Ok(())
    }

    /// Records this agent's pid in the lock file, for the message a second agent gives and for
    /// [`StateLock::check_not_vanished`] at the next start. Called only once the state is open:
    /// an agent killed before its state existed (between taking the lock and SQLite's first
    /// write) must not leave a pid that makes every later start refuse a state that never was.
    /// Best effort: the lock, not this text, is what keeps a second agent out.
    pub fn claim(&self) {
        use std::io::{Seek as _, Write as _};
        let mut f = &self.file;
        let _ = f.set_len(0);
        let _ = f.seek(std::io::SeekFrom::Start(0));
        let _ = writeln!(f, "{}", std::process::id());
    }
}

/// What keeps a second agent off the state while this one runs.
pub enum StateGuard {
    /// The SQLite file's lock file.
    File(StateLock),
    /// The state database: shared with the other replicas, each source and sink by its lease
    /// ([`crate::replicas`]).
    Shared,
}

/// Opens the configured state: the SQLite file (`agent.state_path`), kept from every other
/// agent by its lock file while the guard lives; or PostgreSQL (`agent.state_url`), waited for
/// while it cannot be reached and shared with other replicas by leases. `None`: `cancel` fired
/// while waiting.
pub async fn open_configured(
    agent: &crate::config::AgentConfig,
    once: bool,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<(State, StateGuard)>> {
    let Some(url) = &agent.state_url else {
        let lock = StateLock::acquire(&agent.state_path)?;
        lock.check_not_vanished(&agent.state_path)?;
        let state = open_state(&agent.state_path).await?;
        lock.claim();
        return Ok(Some((state, StateGuard::File(lock))));
    };
    // `--once` gives up after the agent's attempts (cron starts it again); the daemon waits.
    let attempts = once.then(|| agent.retry.max_attempts.unwrap_or(8));
    let pg = match crate::state::postgres::Postgres::open_waiting(
        url.clone(),
        &agent.retry,
        cancel,
        attempts,
    )
    .await
    {
        Ok(pg) => pg,
        Err(_) if cancel.is_cancelled() => return Ok(None),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot open the state database {url} ({} attempts); nothing was read: the next run starts where the last commit left off",
                attempts.unwrap_or(1)
            )))
        }
    };
    Ok(Some((State::Postgres(pg), StateGuard::Shared)))
}

/// Opens the state file off the async runtime.
pub async fn open_state(path: &Path) -> anyhow::Result<State> {
    let p = path.to_path_buf();
    Ok(tokio::task::spawn_blocking(move || State::open(&p)).await??)
}

/// Opens every configured sink at the position the state last committed for it. A sink the state
/// has no position for yet (a new state, or a sink new to it) gets its opening position recorded
/// before anything is written: without it, a crash between the sink's first write and the first
/// commit would leave that write in place, and the restart would write the same events again
/// after it.
///
/// Each sink's queue is loaded with what the state holds for it; events queued for a sink that
/// is no longer configured are kept, and said so.
pub async fn open_sinks(
    cfg: &Config,
    state: &State,
    once: bool,
) -> anyhow::Result<Vec<Arc<SinkSlot>>> {
    let totals = state.queue_totals().await?;
    for t in &totals {
        if t.events > 0 && !cfg.sinks.iter().any(|s| s.name == t.sink) {
            tracing::warn!(sink = %t.sink, queued = t.events, bytes = t.bytes,
                "a sink that is no longer configured has events queued; they are kept: add the sink back (same name) to deliver them");
        }
    }
    let mut slots = Vec::new();
    for s in &cfg.sinks {
        let queued = totals.iter().find(|t| t.sink == s.name);
        slots.push(sinks::open(s, state, &cfg.agent.retry, once, queued).await?);
    }
    Ok(slots)
}

/// A sink's task of the running generation.
struct Draining {
    name: String,
    cancel: CancellationToken,
    handle: tokio::task::JoinHandle<Drained>,
}

/// `--once`: how one source's pass ended, for the summary printed at the end of the run.
#[derive(Debug, Clone, Default)]
pub struct PassReport {
    /// Events read from the API in this run.
    pub fetched: u64,
    /// Events newly delivered to the sinks in this run.
    pub delivered: u64,
    /// Events read again by `overlap` and recognised as delivered already (not sent again).
    pub re_read: u64,
    /// Why the pass did not complete.
    pub error: Option<String>,
}

/// `--once`: the reports of the sources' passes, by source name.
type PassReports = Arc<std::sync::Mutex<BTreeMap<String, PassReport>>>;

/// A source task of the running generation.
struct Running {
    config: SourceConfig,
    /// Cancels this source alone (a child of the agent's token).
    cancel: CancellationToken,
    handle: tokio::task::JoinHandle<bool>,
}

/// What the agent runs: the sinks and one task per source.
struct Generation {
    config: Config,
    http: Http,
    sinks: Vec<Arc<SinkSlot>>,
    drains: Vec<Draining>,
    sources: BTreeMap<String, Running>,
}

/// Everything a generation is started from.
struct Shared {
    state: State,
    health: Arc<Health>,
    once: bool,
    cancel: CancellationToken,
    /// Set by a source that met an error the agent cannot go on after (the state file lost).
    fatal: Fatal,
    /// `--once`: how each source's pass ended.
    reports: PassReports,
    /// `--once`: cancelled once every source has ended; a sink's task then ends when its queue
    /// is empty.
    sources_done: Option<CancellationToken>,
    /// One pace per vendor credential, shared by the sources that use it; kept across reloads.
    paces: Arc<Paces>,
    /// Replicas sharing a PostgreSQL state: what this one holds. Sources and sinks' tasks run
    /// only under their lease.
    leases: Option<crate::replicas::LeaseView>,
    /// The leases' time to live (how long `--once` waits for a lease another replica holds).
    lease_ttl: Duration,
    /// The sinks of the running generation (replicas: their queues' counters are set from the
    /// state, which the other replicas fill and drain too).
    sinks_now: Arc<std::sync::Mutex<Vec<Arc<SinkSlot>>>>,
}

/// An error that stops the whole agent: the first one is kept, and the agent's token cancelled.
#[derive(Clone, Default)]
pub struct Fatal {
    cancel: CancellationToken,
    error: Arc<std::sync::Mutex<Option<String>>>,
}

impl Fatal {
    /// Stops the agent that `cancel` belongs to, with `error`.
    pub fn new(cancel: CancellationToken) -> Fatal {
        Fatal {
            cancel,
            error: Default::default(),
        }
    }

    fn raise(&self, error: String) {
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(error);
        self.cancel.cancel();
    }

    /// The error that stopped the agent, if one did.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Shared {
    /// The sinks `/readyz` and `/metrics` report on, with every label set of theirs and their
    /// sources' shown from the start.
    fn publish_sinks(&self, sinks: &[Arc<SinkSlot>]) {
        self.health.set_sinks(
            sinks
                .iter()
                .map(|s| (s.config.name.clone(), s.health.clone())),
        );
        for s in sinks {
            metrics::init_sink(&s.config.name);
        }
        *self.sinks_now.lock().unwrap_or_else(|p| p.into_inner()) = sinks.to_vec();
    }

    fn start_source(&self, g: &Generation, src: &SourceConfig) -> Running {
        let sinks: Vec<_> = g
            .sinks
            .iter()
            .filter(|s| s.config.takes(&src.name))
            .cloned()
            .collect();
        let cancel = self.cancel.child_token();
        let health = self.health.register(&src.name);
        let sink_names: Vec<&str> = sinks.iter().map(|s| s.config.name.as_str()).collect();
        metrics::init_source(&src.name, &sink_names);
        let (state, http, retry, path, once, reports, paces) = (
            self.state.clone(),
            g.http.clone(),
            g.config.agent.retry.clone(),
            g.config.path.clone(),
            self.once,
            self.reports.clone(),
            self.paces.clone(),
        );
        let mut cfg = src.clone();
        let (c, h) = (cancel.clone(), health.clone());
        let (leases, ttl) = (self.leases.clone(), self.lease_ttl);
        let name = src.name.clone();
        let task = move |restart: u64| -> crate::BoxFuture<'static, Ended> {
            if restart > 0 {
                // Secret files are read again, so a rotated secret (a Kubernetes Secret is
                // updated in place) heals a refused source without a reload.
                cfg.settings = fresh_settings(&path, &cfg);
            }
            let (cfg, state, sinks, retry, h2) = (
                cfg.clone(),
                state.clone(),
                sinks.clone(),
                retry.clone(),
                h.clone(),
            );
            let (http, paces) = (http.clone(), paces.clone());
            let make = move |cancel: CancellationToken| {
                let paced = paces.paced(&cfg);
                Poller::new(
                    cfg.clone(),
                    sources::build(&cfg, http.clone().paced(paced.clone())),
                    state.clone(),
                    sinks.clone(),
                    retry.clone(),
                    cancel,
                    h2.clone(),
                )
                .paced(paced)
            };
            let reports = once.then(|| reports.clone());
            match leases.clone() {
                None => Box::pin(source_loop(make(c.clone()), reports, c.clone(), h.clone())),
                Some(view) => Box::pin(leased_source(
                    name.clone(),
                    view,
                    ttl,
                    make,
                    reports,
                    c.clone(),
                    h.clone(),
                )),
            }
        };
        let retry = g.config.agent.retry.clone();
        Running {
            config: src.clone(),
            cancel: cancel.clone(),
            handle: tokio::spawn(supervise(
                src.name.clone(),
                retry,
                once,
                cancel,
                health,
                self.fatal.clone(),
                task,
            )),
        }
    }

    /// Starts the task of each sink.
    fn start_drains(&self, config: &Config, sinks: &[Arc<SinkSlot>]) -> Vec<Draining> {
        sinks
            .iter()
            .map(|slot| {
                let cancel = self.cancel.child_token();
                let cx = DrainCx {
                    state: self.state.clone(),
                    retry: config.agent.retry.clone(),
                    sources_done: self.sources_done.clone(),
                    cancel: cancel.clone(),
                    lease: None,
                };
                let (leases, ttl) = (self.leases.clone(), self.lease_ttl);
                let name = slot.config.name.clone();
                let (slot, fatal, retry) =
                    (slot.clone(), self.fatal.clone(), config.agent.retry.clone());
                let handle = tokio::spawn(async move {
                    // A panic starts the task again (the queue is durable: the batch in flight
                    // is delivered again); the state lost stops the agent.
                    let mut panics = 0;
                    loop {
                        let run = match leases.clone() {
                            None => tokio::spawn(drain(slot.clone(), cx.clone())),
                            Some(view) => {
                                tokio::spawn(leased_drain(view, ttl, slot.clone(), cx.clone()))
                            }
                        };
                        match run.await {
                            Ok(Drained::Fatal(e)) => {
                                fatal.raise(e.clone());
                                return Drained::Fatal(e);
                            }
                            Ok(d) => return d,
                            Err(e) => {
                                panics += 1;
                                tracing::error!(sink = %slot.config.name, error = %e,
                                    "the sink's task panicked; starting it again");
                                tokio::select! {
                                    _ = tokio::time::sleep(restart_delay(&retry, panics, false)) => {}
                                    _ = cx.cancel.cancelled() => return Drained::Stopped,
                                }
                            }
                        }
                    }
                });
                Draining {
                    name,
                    cancel,
                    handle,
                }
            })
            .collect()
    }

    async fn start(&self, config: Config) -> anyhow::Result<Generation> {
        let http =
            Http::new(config.agent.request_timeout).context("cannot build the HTTP client")?;
        let sinks = open_sinks(&config, &self.state, self.once).await?;
        self.publish_sinks(&sinks);
        let drains = self.start_drains(&config, &sinks);
        let mut g = Generation {
            config,
            http,
            sinks,
            drains,
            sources: BTreeMap::new(),
        };
        start_missing(self, &mut g);
        Ok(g)
    }
}

/// Stops sinks' tasks and waits for them: a batch in flight is acknowledged, or left in the
/// queue to be delivered again.
async fn stop_drains(drains: Vec<Draining>) {
    for d in &drains {
        d.cancel.cancel();
    }
    for d in drains {
        let _ = d.handle.await;
    }
}

/// Stops source tasks and waits for them: each commits the page in flight or leaves it
/// uncommitted, never half-committed.
async fn stop(running: Vec<Running>) {
    for r in &running {
        r.cancel.cancel();
    }
    for r in running {
        let _ = r.handle.await;
    }
}

/// Runs every source until `cancel` fires (or, with `once`, one pass each). The daemon reloads
/// its configuration when the file changes or on SIGHUP.
pub async fn run(cfg: &Config, once: bool, cancel: CancellationToken) -> anyhow::Result<Outcome> {
    let Some((state, _guard)) = open_configured(&cfg.agent, once, &cancel).await? else {
        // Stopped while waiting for the state database: nothing was read.
        return Ok(Outcome::Completed);
    };
    let health = Arc::new(Health::default());
    // Every series of the configured sources and sinks from the first scrape on.
    for s in &cfg.sinks {
        metrics::init_sink(&s.name);
    }
    for src in &cfg.sources {
        let fed: Vec<&str> = cfg
            .sinks
            .iter()
            .filter(|s| s.takes(&src.name))
            .map(|s| s.name.as_str())
            .collect();
        metrics::init_source(&src.name, &fed);
    }
    if !once {
        metrics::init_reloads();
    }
    if let Some(addr) = cfg.agent.listen {
        let probe = Probe {
            health: health.clone(),
            state: state.clone(),
            unready_after: cfg.agent.unready_after,
            stale: stale_after(cfg),
        };
        server::serve(addr, probe, cancel.clone())
            .await
            .with_context(|| format!("cannot listen on {addr} (agent.listen)"))?;
    }
    // `--once` beside running replicas would read only the share of the sources its leases
    // gave it, and ship nothing the replicas do not: refused, saying who runs.
    if let (true, State::Postgres(pg)) = (once, &state) {
        let mut live = pg.live_replicas().await?;
        // A previous run of this very replica (a fixed `replica_id`) is not another one.
        live.retain(|id| Some(id) != cfg.agent.replica_id.as_ref());
        if !live.is_empty() {
            anyhow::bail!(
                "replicas are running on the state database ({}): they read every source; stop them before a --once run, or let them read",
                live.join(", ")
            );
        }
    }
    // Replicas sharing a PostgreSQL state: a lease task, which the sources and sinks' tasks
    // wait on.
    let replica = cfg.agent.state_url.as_ref().map(|url| {
        let id = cfg
            .agent
            .replica_id
            .clone()
            .unwrap_or_else(crate::replicas::default_id);
        crate::replicas::Replica::start(url.clone(), id, cfg.agent.lease_ttl, lease_names(cfg))
    });
    let shared = Shared {
        state,
        health,
        once,
        cancel: cancel.clone(),
        fatal: Fatal::new(cancel.clone()),
        reports: PassReports::default(),
        sources_done: once.then(CancellationToken::new),
        paces: Arc::default(),
        leases: replica.as_ref().map(|r| r.view()),
        lease_ttl: cfg.agent.lease_ttl,
        sinks_now: Arc::default(),
    };
    shared.paces.configure(&cfg.sources);
    let mut current = shared.start(cfg.clone()).await?;
    shared.health.mark_started();
    let resync = replica.as_ref().map(|_| {
        tokio::spawn(resync_queues(
            shared.state.clone(),
            shared.sinks_now.clone(),
            cancel.clone(),
        ))
    });

    if !once {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<&'static str>(16);
        let _watcher = match watch(&cfg.path, tx.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(config = %cfg.path.display(), error = %e,
                    "cannot watch the configuration for changes; SIGHUP still reloads");
                None
            }
        };
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot listen for SIGHUP")?;
        let mut text = std::fs::read_to_string(&cfg.path).unwrap_or_default();
        loop {
            let why = tokio::select! {
                _ = cancel.cancelled() => break,
                _ = hup.recv() => "SIGHUP",
                Some(why) = rx.recv() => why,
            };
            // Let a burst of file events settle (editors write in several steps).
            tokio::time::sleep(Duration::from_millis(300)).await;
            while rx.try_recv().is_ok() {}
            let new_text = std::fs::read_to_string(&cfg.path).unwrap_or_default();
            if why != "SIGHUP" && new_text == text {
                continue;
            }
            text = new_text;
            current = reload(&shared, current, why).await?;
            if let Some(r) = &replica {
                r.set_names(lease_names(&current.config));
            }
        }
    }

    let mut ok = true;
    let mut names = Vec::new();
    for (name, r) in std::mem::take(&mut current.sources) {
        ok &= r.handle.await.unwrap_or(false);
        names.push(name);
    }
    // `--once`: the sinks deliver what is queued, then end; the daemon stops them.
    if let Some(done) = &shared.sources_done {
        done.cancel();
    }
    let mut drained = Vec::new();
    for d in std::mem::take(&mut current.drains) {
        let end = d
            .handle
            .await
            .unwrap_or_else(|e| Drained::GaveUp(e.to_string()));
        drained.push((d.name, end));
    }
    // Every task under a lease has stopped: the leases go back to the other replicas now.
    if let Some(r) = replica {
        r.stop().await;
    }
    if let Some(t) = resync {
        t.abort();
    }
    if let Some(e) = shared.fatal.error() {
        anyhow::bail!(e);
    }
    if once {
        let mut reports =
            std::mem::take(&mut *shared.reports.lock().unwrap_or_else(|p| p.into_inner()));
        // A source whose events a sink holds (refused for their content) did not complete.
        for slot in &current.sinks {
            for (source, n) in slot.queue.held() {
                if let Some(r) = reports.get_mut(&source) {
                    ok = false;
                    r.error.get_or_insert_with(|| {
                        format!(
                            "{n} events were refused by sink {} for their content and are kept in its queue (tried again at the next run)",
                            slot.config.name
                        )
                    });
                }
            }
        }
        once_summary(&shared.state, &shared.paces, &names, reports).await;
        ok &= sinks_summary(&current.sinks, &drained);
    }
    Ok(if ok {
        Outcome::Completed
    } else {
        Outcome::Failed
    })
}

/// The lease names of `cfg`'s sources and sinks.
fn lease_names(cfg: &Config) -> Vec<String> {
    crate::replicas::names(
        cfg.sources.iter().map(|s| s.name.as_str()),
        cfg.sinks.iter().map(|s| s.name.as_str()),
    )
}

/// Replicas sharing a PostgreSQL state: every second, each sink's queue counters are set to
/// what the state holds (the other replicas add to and drain the same queues), so that a full
/// queue holds the sources back on every replica and an emptied one lets them go.
async fn resync_queues(
    state: State,
    sinks: Arc<std::sync::Mutex<Vec<Arc<SinkSlot>>>>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = cancel.cancelled() => return,
        }
        let Ok(totals) = state.queue_totals().await else {
            continue;
        };
        let slots = sinks.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for slot in slots {
            slot.queue
                .resync(totals.iter().find(|t| t.sink == slot.config.name));
        }
    }
}

/// Waits for `name`'s lease, beating `health` meanwhile (waiting is not being stuck). With
/// `once`, waits at most `ttl` (a lease another replica holds may not come back in a pass).
async fn wait_lease(
    view: &mut crate::replicas::LeaseView,
    name: &str,
    once: Option<Duration>,
    cancel: &CancellationToken,
    health: Option<&SourceHealth>,
) -> Option<crate::lease::Lease> {
    let beat = async {
        loop {
            if let Some(h) = health {
                h.beat();
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    };
    let limit = async {
        match once {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        l = view.acquired(name, cancel) => l,
        _ = beat => None,
        _ = limit => None,
    }
}

/// Runs `task` (cancelled by `token`) until it ends, or until `lease` is lost: then cancels it
/// and lets it end as it does on shutdown (a page or batch in flight committed or left whole).
async fn until_lost<F: std::future::Future>(
    view: &crate::replicas::LeaseView,
    lease: &crate::lease::Lease,
    token: &CancellationToken,
    task: F,
) -> F::Output {
    tokio::pin!(task);
    let mut v = view.clone();
    tokio::select! {
        e = &mut task => e,
        _ = v.lost(lease) => {
            token.cancel();
            task.await
        }
    }
}

/// A source's task among replicas: it polls only while this replica holds the source's lease.
/// Once the lease is lost (taken over, given back to a replica that joined, or run out because
/// the database could not be reached), the poll in flight stops without committing more and
/// the task waits for the lease again; the replica that holds it goes on from the committed
/// cursor.
async fn leased_source<M>(
    name: String,
    mut view: crate::replicas::LeaseView,
    ttl: Duration,
    make: M,
    reports: Option<PassReports>,
    cancel: CancellationToken,
    health: SourceHealth,
) -> Ended
where
    M: Fn(CancellationToken) -> Poller,
{
    let lease_name = crate::replicas::source_lease(&name);
    loop {
        let waited = reports.as_ref().map(|_| ttl);
        let Some(lease) = wait_lease(&mut view, &lease_name, waited, &cancel, Some(&health)).await
        else {
            if cancel.is_cancelled() {
                return Ended::Cancelled;
            }
            let why = "its lease is held by another replica, which polls it".to_string();
            tracing::warn!(source = %name, "{why}; not polled in this run");
            if let Some(r) = &reports {
                r.lock().unwrap_or_else(|p| p.into_inner()).insert(
                    name.clone(),
                    PassReport {
                        error: Some(why),
                        ..PassReport::default()
                    },
                );
            }
            return Ended::Failed;
        };
        tracing::info!(source = %name, epoch = lease.epoch, "lease acquired: polling from the committed cursor");
        let token = cancel.child_token();
        let poller = make(token.clone()).leased(lease.clone());
        let run = source_loop(poller, reports.clone(), token.clone(), health.clone());
        let ended = until_lost(&view, &lease, &token, run).await;
        if cancel.is_cancelled() || ended != Ended::Cancelled {
            return ended;
        }
        tracing::info!(source = %name, epoch = lease.epoch,
            "lease lost or given back: stopped polling; the replica holding it goes on from the committed cursor");
    }
}

/// A sink's task among replicas: it drains the sink's queue only while this replica holds the
/// sink's lease; each ack names it.
async fn leased_drain(
    mut view: crate::replicas::LeaseView,
    ttl: Duration,
    slot: Arc<SinkSlot>,
    cx: DrainCx,
) -> Drained {
    let lease_name = crate::replicas::sink_lease(&slot.config.name);
    loop {
        // `--once`: the queue is drained by whichever replica holds the lease; this run waits
        // for it until its sources are done, then at most `ttl` more.
        if let Some(done) = &cx.sources_done {
            tokio::select! {
                _ = done.cancelled() => {}
                _ = view.acquired(&lease_name, &cx.cancel) => {}
            }
        }
        let waited = cx.sources_done.as_ref().map(|_| ttl);
        let Some(lease) = wait_lease(&mut view, &lease_name, waited, &cx.cancel, None).await else {
            if cx.cancel.is_cancelled() {
                return Drained::Stopped;
            }
            return Drained::GaveUp(
                "its lease is held by another replica, which delivers its queue".into(),
            );
        };
        tracing::info!(sink = %slot.config.name, epoch = lease.epoch, "lease acquired: delivering the sink's queue");
        let token = cx.cancel.child_token();
        let mut leased = cx.clone();
        leased.cancel = token.clone();
        leased.lease = Some(lease.clone());
        let ended = until_lost(&view, &lease, &token, drain(slot.clone(), leased)).await;
        if cx.cancel.is_cancelled() || ended != Drained::Stopped {
            return ended;
        }
        tracing::info!(sink = %slot.config.name, epoch = lease.epoch,
            "lease lost or given back: stopped delivering; the replica holding it goes on from the queue");
    }
}

/// How long a source loop may go without turning before `/healthz` calls it stuck: longer than
/// any wait the loop makes on purpose.
fn stale_after(cfg: &Config) -> Duration {
    let longest_poll = cfg
        .sources
        .iter()
        .map(|s| s.poll_interval)
        .max()
        .unwrap_or_default();
    longest_poll.max(cfg.agent.retry.max_delay)
        + cfg.agent.request_timeout * 2
        + Duration::from_secs(60)
}

/// Applies a changed configuration file. An invalid one, or one that changes what cannot change
/// live, is refused and the running generation kept. Otherwise sources that were removed or
/// changed are stopped (their pages in flight committed or left to be read again), and new or
/// changed ones started; a change to sinks or `[agent]` restarts every source on new sinks.
async fn reload(shared: &Shared, mut current: Generation, why: &str) -> anyhow::Result<Generation> {
    // Whatever the file says, a failing sink tries again now (a file moved away, a fixed key).
    for slot in &current.sinks {
        slot.queue.retry_now();
    }
    let path = current.config.path.clone();
    let new = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(trigger = why, error = %e, "reload refused: the new configuration is invalid; the running one is kept");
            metrics::reload("refused");
            return Ok(current);
        }
    };
    let old = &current.config;
    if new.agent.state_path != old.agent.state_path
        || new.agent.state_url != old.agent.state_url
        || new.agent.listen != old.agent.listen
    {
        tracing::error!(trigger = why,
            "reload refused: agent.state_path and agent.listen cannot change while running (nor agent.state_url); restart to apply them (the running configuration is kept)");
        metrics::reload("refused");
        return Ok(current);
    }
    // A source that stopped (a permanent error, say a revoked key since renewed) is started
    // again by any reload, even of an unchanged file: SIGHUP retries it now rather than at
    // `retry_max_delay`.
    let is_stopped =
        |name: &str, r: &Running| r.handle.is_finished() || shared.health.is_stopped(name);
    let stopped = current.sources.iter().any(|(n, r)| is_stopped(n, r));
    if new.agent == old.agent && new.sinks == old.sinks && new.sources == old.sources && !stopped {
        tracing::info!(trigger = why, "configuration unchanged");
        metrics::reload("unchanged");
        return Ok(current);
    }
    let everything = new.agent != old.agent || new.sinks != old.sinks;
    let (mut removed, mut changed) = (Vec::new(), Vec::new());
    let mut stopping = Vec::new();
    for name in current.sources.keys().cloned().collect::<Vec<_>>() {
        let keep = new.sources.iter().find(|s| s.name == name);
        let running = &current.sources[&name];
        if keep.is_none() {
            removed.push(name.clone());
        } else if everything || keep != Some(&running.config) || is_stopped(&name, running) {
            changed.push(name.clone());
        } else {
            continue;
        }
        if let Some(r) = current.sources.remove(&name) {
            stopping.push(r);
        }
    }
    stop(stopping).await;
    for name in &removed {
        shared.health.remove(name);
    }
    let added: Vec<String> = new
        .sources
        .iter()
        .filter(|s| !old.sources.iter().any(|o| o.name == s.name))
        .map(|s| s.name.clone())
        .collect();
    if everything {
        // No task holds the old sinks any more: open the new ones at their committed positions
        // (their queues as the state holds them).
        stop_drains(std::mem::take(&mut current.drains)).await;
        current.sinks.clear();
        let opened = async {
            let sinks = open_sinks(&new, &shared.state, shared.once).await?;
            let http =
                Http::new(new.agent.request_timeout).context("cannot build the HTTP client")?;
            anyhow::Ok((sinks, http))
        }
        .await;
        match opened {
            Ok((sinks, http)) => {
                shared.publish_sinks(&sinks);
                current.drains = shared.start_drains(&new, &sinks);
                current.sinks = sinks;
                current.http = http;
            }
            Err(e) => {
                // Refused like any invalid config: the old generation comes back as it was.
                tracing::error!(trigger = why, error = %format!("{e:#}"),
                    "reload refused: the new sinks cannot be opened; the running configuration is kept");
                metrics::reload("refused");
                current.sinks = open_sinks(&current.config, &shared.state, shared.once).await?;
                shared.publish_sinks(&current.sinks);
                current.drains = shared.start_drains(&current.config, &current.sinks);
                start_missing(shared, &mut current);
                return Ok(current);
            }
        }
    }
    current.config = new;
    shared.paces.configure(&current.config.sources);
    start_missing(shared, &mut current);
    tracing::info!(trigger = why, added = ?added, removed = ?removed, restarted = ?changed,
        sinks_reopened = everything, "configuration reloaded");
    metrics::reload("applied");
    Ok(current)
}

/// Starts every source of the generation's config that has no running task.
fn start_missing(shared: &Shared, g: &mut Generation) {
    for src in g.config.sources.clone() {
        if !g.sources.contains_key(&src.name) {
            let r = shared.start_source(g, &src);
            g.sources.insert(src.name.clone(), r);
        }
    }
}

/// Watches the configuration's directory (a Kubernetes ConfigMap changes by swapping a symlink
/// there, not by writing the file) and reports changes that may concern the file.
fn watch(
    path: &Path,
    tx: tokio::sync::mpsc::Sender<&'static str>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = path.file_name().map(|n| n.to_os_string());
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        // Opening and reading the file are events too: the agent's own reads must not count,
        // or each read would schedule the next.
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        let relevant = ev.paths.iter().any(|p| {
            let f = p.file_name();
            f == name.as_deref()
                || f.and_then(|f| f.to_str())
                    .is_some_and(|f| f.starts_with(".."))
        });
        if relevant {
            let _ = tx.try_send("file change");
        }
    })?;
    w.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    Ok(w)
}

/// How one run of a source task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// `--once`: the pass completed.
    Completed,
    /// Shutdown (or a reload) stopped it.
    Cancelled,
    /// `--once`: the pass failed on a transient error.
    Failed,
    /// The API refused the request for good (401/403, another 4xx): the message.
    Refused(String),
    /// The task panicked: the panic's message.
    Panicked(String),
    /// An error no source can go on after (the state file deleted or damaged): the message.
    Fatal(String),
}

/// The vendor settings (credentials among them) of `src` as the configuration file gives them
/// now (secret files read again); the ones it had when the file cannot be read or no longer has
/// the source (a reload will deal with that).
fn fresh_settings(path: &Path, src: &SourceConfig) -> crate::sources::VendorSettings {
    match Config::load(path) {
        Ok(c) => match c.sources.into_iter().find(|s| s.name == src.name) {
            Some(s) => s.settings,
            None => src.settings.clone(),
        },
        Err(e) => {
            tracing::warn!(source = %src.name, error = %e,
                "cannot read the configuration again for fresh secrets; restarting with the ones loaded before");
            src.settings.clone()
        }
    }
}

/// The wait before a source task is started again after its `failures`-th end in a row:
/// `retry_initial` doubling up to `retry_max_delay`, or the cap itself when the API refused us
/// (it will not change its mind soon); either way with jitter, half of it random, so that many
/// sources refused at once do not come back at once.
pub fn restart_delay(retry: &crate::retry::RetryConfig, failures: u32, refused: bool) -> Duration {
    let cap = retry.max_delay.max(retry.initial);
    let step = if refused {
        cap
    } else {
        retry
            .initial
            .saturating_mul(1u32 << failures.min(30))
            .min(cap)
    };
    let half = step / 2;
    half + Duration::from_nanos(fastrand::u64(0..=(step - half).as_nanos() as u64))
}

/// Runs a source task (`task(n)` builds its `n`-th run) and starts it again whenever it ends
/// (a panic, a refusal) while the agent runs, with [`restart_delay`] between runs; other
/// sources never notice. With `once` nothing is restarted: the pass either completed or not.
/// Returns whether the source ended well.
pub async fn supervise<F, Fut>(
    name: String,
    retry: crate::retry::RetryConfig,
    once: bool,
    cancel: CancellationToken,
    health: SourceHealth,
    fatal: Fatal,
    mut task: F,
) -> bool
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Ended> + Send + 'static,
{
    let mut restarts = 0u64;
    let mut failures = 0u32;
    loop {
        let began = Instant::now();
        // A task of its own, so that a panic ends only this run, not the supervisor.
        let ended = match tokio::spawn(task(restarts)).await {
            Ok(e) => e,
            Err(e) if e.is_panic() => {
                let p = e.into_panic();
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_string());
                Ended::Panicked(msg)
            }
            Err(_) => Ended::Cancelled,
        };
        let (reason, error) = match &ended {
            Ended::Completed => return true,
            Ended::Cancelled => return !once,
            Ended::Failed => return false,
            Ended::Fatal(e) => {
                tracing::error!(source = %name, error = %e, "the agent cannot go on; stopping every source");
                fatal.raise(e.clone());
                return false;
            }
            Ended::Refused(e) => ("refused", e.clone()),
            Ended::Panicked(e) => ("panic", e.clone()),
        };
        if reason == "panic" {
            health.failed(&format_args!("the source task panicked: {error}"));
            metrics::source_up(&name, false);
        }
        if once {
            tracing::error!(source = %name, reason, error = %error,
                "source task ended; --once does not restart it");
            return false;
        }
        if cancel.is_cancelled() {
            return true;
        }
        // A run that lasted longer than the longest wait was not part of a crash loop.
        if began.elapsed() > retry.max_delay {
            failures = 0;
        }
        let delay = restart_delay(&retry, failures, reason == "refused");
        failures = failures.saturating_add(1);
        restarts += 1;
        metrics::source_restart(&name, reason);
        health.restarting(restarts);
        tracing::warn!(source = %name, reason, error = %error, restarts,
            delay_ms = delay.as_millis() as u64,
            "source task ended; starting it again (secret files are read again)");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => return true,
        }
    }
}

/// `--once`: one line per source at the end of the run: on stderr for the person who ran it
/// (unless the logs are JSON, which stderr then holds alone), and as a log line with fields.
/// A source without a report ended without a poll result (its task panicked).
async fn once_summary(
    state: &State,
    paces: &Paces,
    names: &[String],
    mut reports: BTreeMap<String, PassReport>,
) {
    let json = crate::json_logs();
    for name in names {
        let r = reports.remove(name).unwrap_or_else(|| PassReport {
            error: Some("the source task ended without a result (see the error above)".into()),
            ..PassReport::default()
        });
        let cursor = match state.source(name).await {
            Ok(row) => row
                .and_then(|r| r.cursor)
                .map(timefmt::human)
                .unwrap_or_else(|| "none".into()),
            Err(e) => format!("unknown ({e})"),
        };
        let (fetched, delivered, re_read) = (r.fetched, r.delivered, r.re_read);
        let (rate_limited, waited) = paces.tally(name);
        let waited_s = (waited.as_secs_f64() * 10.0).round() / 10.0;
        let slowed = slowed_by_a_limit(rate_limited, waited);
        match &r.error {
            None => {
                tracing::info!(source = %name, completed = true, fetched, delivered, re_read,
                    rate_limited, waited_s, cursor = %cursor, "--once: source completed");
                if !json {
                    eprintln!("summary: {name}: completed; fetched={fetched} delivered={delivered} re-read={re_read} (overlap, already delivered); cursor {cursor}{slowed}");
                }
            }
            Some(e) => {
                tracing::warn!(source = %name, completed = false, fetched, delivered, re_read,
                    rate_limited, waited_s, cursor = %cursor, error = %e,
                    "--once: source not completed; the next run resumes from its cursor");
                if !json {
                    eprintln!("summary: {name}: NOT completed; fetched={fetched} delivered={delivered} before it stopped; cursor {cursor} (the next run resumes there){slowed}: {e}");
                }
            }
        }
    }
}

/// What `--once`'s summary adds for a source its credential's pace slowed: the answers 429
/// and the time its requests waited for their turns (the vendor's limit, shared with the other
/// sources of the credential, or `max_requests_per_second`). Nothing for a source that waited
/// less than a second and was never refused.
fn slowed_by_a_limit(rate_limited: u64, waited: Duration) -> String {
    if rate_limited == 0 && waited < Duration::from_secs(1) {
        return String::new();
    }
    format!(
        "; slowed by a rate limit: {rate_limited} requests answered 429, {:.1}s waiting for its credential's turn",
        waited.as_secs_f64()
    )
}

/// `--once`: one line per sink that did not deliver everything queued for it; whether all did.
fn sinks_summary(sinks: &[Arc<SinkSlot>], drained: &[(String, Drained)]) -> bool {
    let json = crate::json_logs();
    let mut ok = true;
    for (name, end) in drained {
        let slot = sinks.iter().find(|s| &s.config.name == name);
        let queued = slot.map_or(0, |s| s.queue.level().events);
        let held: u64 = slot.map_or(0, |s| s.queue.held().iter().map(|(_, n)| n).sum());
        let why = match end {
            Drained::Empty if held == 0 => continue,
            Drained::Empty => {
                format!("{held} events were refused by the receiver for their content")
            }
            Drained::GaveUp(why) => why.clone(),
            Drained::Stopped => "stopped by shutdown".into(),
            Drained::Fatal(e) => e.clone(),
        };
        ok = false;
        tracing::warn!(sink = %name, drained = false, queued, error = %why,
            "--once: sink not drained; its queued events are kept for the next run");
        if !json {
            eprintln!("summary: sink {name}: NOT drained; {queued} events kept in its queue for the next run: {why}");
        }
    }
    ok
}

/// One source's life: poll, wait, poll... Returns how it ended. With `once` (the reports of
/// `--once`), one poll, whose outcome is reported there.
pub async fn source_loop(
    mut poller: Poller,
    once: Option<PassReports>,
    cancel: CancellationToken,
    health: SourceHealth,
) -> Ended {
    let report = |poller: &Poller, error: Option<String>| {
        if let Some(reports) = &once {
            let s = poller.last_poll();
            reports.lock().unwrap_or_else(|p| p.into_inner()).insert(
                poller.name().to_string(),
                PassReport {
                    fetched: s.fetched,
                    delivered: s.delivered,
                    re_read: s.duplicates,
                    error,
                },
            );
        }
    };
    let name = poller.name().to_string();
    let interval = poller.config().poll_interval;
    metrics::source_up(&name, true);
    // The lag gauge shows a source that is far behind from the first scrape on, not only once
    // its first poll completes.
    match poller.starting_point().await {
        Ok(c) => metrics::cursor_at(&name, c),
        Err(e) => tracing::warn!(source = %name, error = %e, "cannot read the stored cursor"),
    }
    loop {
        let started = Instant::now();
        health.beat();
        match poller.poll().await {
            Ok(s) => {
                health.polled();
                metrics::poll_done(&name, true);
                let lag_s = s
                    .cursor
                    .map(|c| (timefmt::now() - c) / NANOS_PER_SEC)
                    .unwrap_or(-1);
                tracing::info!(
                    source = %name,
                    windows = s.windows,
                    pages = s.pages,
                    fetched = s.fetched,
                    delivered = s.delivered,
                    // Not "duplicates": these were read again on purpose (`overlap`) and found
                    // delivered already, so nothing was sent twice.
                    re_read = s.duplicates,
                    cursor = %s.cursor.map(timefmt::human).unwrap_or_default(),
                    lag_s,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "poll complete"
                );
                if once.is_some() {
                    report(&poller, None);
                    return Ended::Completed;
                }
            }
            Err(PollError::Cancelled) => {
                tracing::info!(source = %name, "stopped; uncommitted pages will be read again");
                report(&poller, Some("stopped by shutdown".into()));
                return Ended::Cancelled;
            }
            Err(PollError::State(e)) if e.is_fatal() => {
                health.stopped(&e);
                metrics::poll_done(&name, false);
                metrics::source_up(&name, false);
                report(&poller, Some(e.to_string()));
                return Ended::Fatal(e.to_string());
            }
            Err(e) if e.is_permanent() => {
                health.stopped(&e);
                metrics::poll_done(&name, false);
                metrics::source_up(&name, false);
                let what = if matches!(e, PollError::Sink(_)) {
                    "a sink refused to write"
                } else {
                    "the API refused the request"
                };
                if once.is_some() {
                    tracing::error!(source = %name, error = %e,
                        "source stopped: {what}; fix the configuration or the credential");
                } else {
                    tracing::error!(source = %name, error = %e,
                        "source stopped: {what}; it is tried again at retry_max_delay (secret files read again), or fix the configuration and reload");
                }
                report(&poller, Some(e.to_string()));
                return Ended::Refused(e.to_string());
            }
            Err(e) => {
                health.failed(&e);
                metrics::poll_done(&name, false);
                if once.is_some() {
                    tracing::warn!(source = %name, error = %e,
                        "poll failed; nothing after the last commit was skipped, the next run resumes there");
                    report(&poller, Some(e.to_string()));
                    return Ended::Failed;
                }
                tracing::warn!(source = %name, error = %e, next_poll_s = interval.as_secs(),
                    "poll failed; nothing after the last commit was skipped, the next poll resumes there");
            }
        }
        // What the poll freed goes back to the system before the agent sleeps.
        crate::release_free_memory();
        // Sleep until the next poll, beating so /healthz sees the loop turn.
        let wake = tokio::time::Instant::now() + interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(wake.min(tokio::time::Instant::now() + Duration::from_secs(5))) => {}
                _ = cancel.cancelled() => return Ended::Cancelled,
            }
            health.beat();
            if tokio::time::Instant::now() >= wake {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_sink_write_killed_before_the_first_commit_is_dropped_on_restart() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.ndjson");
        // A file that was there before the agent: kept.
        std::fs::write(&out, "{\"older\":1}\n").unwrap();
        let text = format!(
            "[agent]\nstate_path = {:?}\n[[sources]]\nname = \"air\"\nkind = \"wasabi_air\"\n\
             url = \"http://127.0.0.1:1\"\napi_key = \"k\"\n[[sinks]]\nname = \"file\"\n\
             kind = \"file\"\npath = {:?}\n",
            dir.path().join("state.db"),
            out
        );
        let cfg = Config::parse(&text, &dir.path().join("auditship.toml")).unwrap();
        let state = open_state(&cfg.agent.state_path).await.unwrap();
        let sinks = open_sinks(&cfg, &state, false).await.unwrap();
        // The first page is written; the process dies before its commit (nothing committed yet).
        let ev = crate::event::Event::standalone("air", "wasabi_air", "wasabi_air", 0, "{}");
        sinks[0]
            .sink
            .lock()
            .await
            .deliver(std::slice::from_ref(&ev), &CancellationToken::new())
            .await
            .unwrap();
        assert!(std::fs::metadata(&out).unwrap().len() > 12);
        drop(sinks);
        // The restart drops that page, and only it, so that writing it again does not double it.
        let _sinks = open_sinks(&cfg, &state, false).await.unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "{\"older\":1}\n");
        let pos = state.sink_position("file").await.unwrap().unwrap();
        assert_eq!(pos.position, 12);
        assert!(pos.file.is_some(), "the file it belongs to is recorded");
    }

    /// The panics these tests cause on purpose print nothing: with `RUST_BACKTRACE` set, the
    /// default hook would symbolise a backtrace, loading the test binary's debug information
    /// (a hundred megabytes), which disturbs the RSS measured by tests running beside them.
    fn quiet_test_panics() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let default = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let msg = info
                    .payload()
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| info.payload().downcast_ref::<&str>().copied())
                    .unwrap_or("");
                if !msg.starts_with("on purpose:") {
                    default(info);
                }
            }));
        });
    }

    fn policy() -> crate::retry::RetryConfig {
        crate::retry::RetryConfig {
            initial: Duration::from_millis(10),
            max_delay: Duration::from_millis(80),
            max_attempts: None,
        }
    }

    #[test]
    fn restarts_back_off_doubling_to_the_cap_and_a_refusal_waits_the_cap() {
        let p = policy();
        for _ in 0..200 {
            for (failures, step) in [(0, 10), (1, 20), (2, 40), (3, 80), (4, 80), (40, 80)] {
                let d = restart_delay(&p, failures, false);
                let step = Duration::from_millis(step);
                assert!(d >= step / 2 && d <= step, "{failures}: {d:?}");
            }
            let d = restart_delay(&p, 0, true);
            assert!(d >= Duration::from_millis(40) && d <= Duration::from_millis(80));
        }
    }

    /// A source task that panics is started again with backoff, with the restart counted and
    /// shown; one that completes its pass ends the supervisor.
    #[tokio::test]
    async fn a_panicking_source_task_is_started_again() {
        quiet_test_panics();
        let health = Health::default();
        let h = health.register("p");
        let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = runs.clone();
        let ok = supervise(
            "p".into(),
            policy(),
            false,
            CancellationToken::new(),
            h,
            Fatal::default(),
            move |n| {
                seen.store(n, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n < 3 {
                        panic!("on purpose: run {n} went wrong");
                    }
                    Ended::Completed
                }
            },
        )
        .await;
        assert!(ok);
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(
            metrics::counter(
                "auditship_source_restarts_total",
                &[("source", "p"), ("reason", "panic")]
            ),
            3
        );
        assert_eq!(health.readiness(Duration::from_secs(60))["p"].restarts, 3);
    }

    /// With `--once` nothing is started again: a refusal or a panic fails the pass.
    #[tokio::test]
    async fn once_does_not_restart() {
        quiet_test_panics();
        let health = Health::default();
        for ended in [Ended::Refused("HTTP 401".into()), Ended::Failed] {
            let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let seen = runs.clone();
            let ok = supervise(
                "o".into(),
                policy(),
                true,
                CancellationToken::new(),
                health.register("o"),
                Fatal::default(),
                move |_| {
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let e = ended.clone();
                    async move { e }
                },
            )
            .await;
            assert!(!ok);
            assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        }
        let ok = supervise(
            "o".into(),
            policy(),
            true,
            CancellationToken::new(),
            health.register("o"),
            Fatal::default(),
            |_| async { panic!("on purpose: boom") },
        )
        .await;
        assert!(!ok);
    }

    /// An error nothing can go on after stops the whole agent, with its message.
    #[tokio::test]
    async fn a_fatal_error_cancels_the_agent() {
        let cancel = CancellationToken::new();
        let fatal = Fatal::new(cancel.clone());
        let ok = supervise(
            "f".into(),
            policy(),
            false,
            cancel.child_token(),
            Health::default().register("f"),
            fatal.clone(),
            |_| async { Ended::Fatal("state x.db was deleted".into()) },
        )
        .await;
        assert!(!ok);
        assert!(cancel.is_cancelled());
        assert_eq!(fatal.error().as_deref(), Some("state x.db was deleted"));
    }

    #[test]
    fn the_lock_names_the_holder_and_refuses_a_vanished_state() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let lock = StateLock::acquire(&db).unwrap();
        assert_eq!(lock.previous, None);
        lock.check_not_vanished(&db).unwrap();
        lock.claim();
        let e = StateLock::acquire(&db).err().unwrap().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(lock);
        // Taken again: the pid of the last holder is known, and the state is gone.
        let lock = StateLock::acquire(&db).unwrap();
        assert_eq!(lock.previous, Some(std::process::id().to_string()));
        let e = lock.check_not_vanished(&db).unwrap_err().to_string();
        assert!(
            e.contains("is missing or empty") && e.contains("s.db"),
            "{e}"
        );
        std::fs::write(&db, "x").unwrap();
        lock.check_not_vanished(&db).unwrap();
    }

    /// An agent killed after taking the lock and before its state existed (SQLite had not
    /// written the file yet) left its pid in the lock, and every later start refused the
    /// "vanished" state that never was.
    #[test]
    fn a_kill_before_the_state_exists_does_not_block_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let lock = StateLock::acquire(&db).unwrap();
        lock.check_not_vanished(&db).unwrap();
        std::fs::File::create(&db).unwrap(); // SQLite's empty file, before its first write
        drop(lock); // SIGKILL here
        let lock = StateLock::acquire(&db).unwrap();
        assert_eq!(lock.previous, None);
        lock.check_not_vanished(&db).unwrap();
    }

    #[tokio::test]
    async fn reading_the_config_is_not_a_change_but_writing_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auditship.toml");
        std::fs::write(&path, "# v1\n").unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let _w = watch(&path, tx).unwrap();
        // What the reload loop does after each event: read the file.
        for _ in 0..5 {
            std::fs::read_to_string(&path).unwrap();
        }
        let quiet = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
        assert!(quiet.is_err(), "a read was reported as a change");
        std::fs::write(&path, "# v2\n").unwrap();
        let change = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(change.unwrap(), Some("file change"));
    }
}
