//! The agent: state, sinks and one poller task per source, until shutdown (or one pass).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SourceConfig};
use crate::health::{Health, SourceHealth};
use crate::metrics;
use crate::pipeline::{PollError, Poller};
use crate::server::{self, Probe};
use crate::sinks::{self, SinkSlot};
use crate::sources::{self, Http};
use crate::state::State;
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
    _file: File,
}

impl StateLock {
    pub fn acquire(state_path: &Path) -> anyhow::Result<StateLock> {
        let mut p: PathBuf = state_path.as_os_str().to_owned().into();
        p.as_mut_os_string().push(".lock");
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .with_context(|| format!("cannot open {}", p.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(StateLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "another auditship is running on {} (lock {} is held)",
                state_path.display(),
                p.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", p.display()))
            }
        }
    }
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
pub async fn open_sinks(
    cfg: &Config,
    state: &State,
    once: bool,
) -> anyhow::Result<Vec<Arc<SinkSlot>>> {
    let mut slots = Vec::new();
    for s in &cfg.sinks {
        let pos = state.sink_position(&s.name).await?;
        let slot = sinks::open(s, pos, &cfg.agent.retry, once).await?;
        if pos.is_none() {
            let opened_at = slot.sink.lock().await.position();
            if let Some(p) = opened_at {
                state.init_sink_position(&s.name, p).await?;
            }
        }
        slots.push(slot);
    }
    Ok(slots)
}

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
    sources: BTreeMap<String, Running>,
}

/// Everything a generation is started from.
struct Shared {
    state: State,
    health: Arc<Health>,
    once: bool,
    cancel: CancellationToken,
}

impl Shared {
    fn start_source(&self, g: &Generation, src: &SourceConfig) -> Running {
        let sinks: Vec<_> = g
            .sinks
            .iter()
            .filter(|s| s.config.takes(&src.name))
            .cloned()
            .collect();
        let cancel = self.cancel.child_token();
        let health = self.health.register(&src.name);
        let poller = Poller::new(
            src.clone(),
            sources::build(src, g.http.clone()),
            self.state.clone(),
            sinks,
            g.config.agent.retry.clone(),
            cancel.clone(),
            health.clone(),
        );
        Running {
            config: src.clone(),
            cancel: cancel.clone(),
            handle: tokio::spawn(source_loop(poller, self.once, cancel, health)),
        }
    }

    async fn start(&self, config: Config) -> anyhow::Result<Generation> {
        let http =
            Http::new(config.agent.request_timeout).context("cannot build the HTTP client")?;
        let sinks = open_sinks(&config, &self.state, self.once).await?;
        let mut g = Generation {
            config,
            http,
            sinks,
            sources: BTreeMap::new(),
        };
        start_missing(self, &mut g);
        Ok(g)
    }
}

/// Stops source tasks and waits for them: each finishes (delivers and commits) the page in
/// flight or leaves it uncommitted, never half-committed.
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
    let _lock = StateLock::acquire(&cfg.agent.state_path)?;
    let state = open_state(&cfg.agent.state_path).await?;
    let health = Arc::new(Health::default());
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
    let shared = Shared {
        state,
        health,
        once,
        cancel: cancel.clone(),
    };
    let mut current = shared.start(cfg.clone()).await?;
    shared.health.mark_started();

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
        }
    }

    let mut ok = true;
    for (_, r) in std::mem::take(&mut current.sources) {
        ok &= r.handle.await.unwrap_or(false);
    }
    Ok(if ok {
        Outcome::Completed
    } else {
        Outcome::Failed
    })
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
    let path = current.config.path.clone();
    let new = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(trigger = why, error = %e, "reload refused: the new configuration is invalid; the running one is kept");
            return Ok(current);
        }
    };
    let old = &current.config;
    if new.agent.state_path != old.agent.state_path || new.agent.listen != old.agent.listen {
        tracing::error!(trigger = why,
            "reload refused: agent.state_path and agent.listen cannot change while running; restart to apply them (the running configuration is kept)");
        return Ok(current);
    }
    // A source that stopped (a permanent error, say a revoked key since renewed) is started
    // again by any reload, even of an unchanged file: SIGHUP is the way to retry it.
    let stopped = current.sources.values().any(|r| r.handle.is_finished());
    if new.agent == old.agent && new.sinks == old.sinks && new.sources == old.sources && !stopped {
        tracing::info!(trigger = why, "configuration unchanged");
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
        } else if everything || keep != Some(&running.config) || running.handle.is_finished() {
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
        // No task holds the old sinks any more: open the new ones at their committed positions.
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
                current.sinks = sinks;
                current.http = http;
            }
            Err(e) => {
                // Refused like any invalid config: the old generation comes back as it was.
                tracing::error!(trigger = why, error = %format!("{e:#}"),
                    "reload refused: the new sinks cannot be opened; the running configuration is kept");
                current.sinks = open_sinks(&current.config, &shared.state, shared.once).await?;
                start_missing(shared, &mut current);
                return Ok(current);
            }
        }
    }
    current.config = new;
    start_missing(shared, &mut current);
    tracing::info!(trigger = why, added = ?added, removed = ?removed, restarted = ?changed,
        sinks_reopened = everything, "configuration reloaded");
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

/// One source's life: poll, wait, poll... Returns whether it ended well.
pub async fn source_loop(
    mut poller: Poller,
    once: bool,
    cancel: CancellationToken,
    health: SourceHealth,
) -> bool {
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
                    duplicates = s.duplicates,
                    cursor = %s.cursor.map(timefmt::human).unwrap_or_default(),
                    lag_s,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "poll complete"
                );
                if once {
                    return true;
                }
            }
            Err(PollError::Cancelled) => {
                tracing::info!(source = %name, "stopped; uncommitted pages will be read again");
                return !once;
            }
            Err(e) if e.is_permanent() => {
                health.stopped(&e);
                metrics::poll_done(&name, false);
                metrics::source_up(&name, false);
                tracing::error!(source = %name, error = %e,
                    "source stopped: the API refused the request; fix the configuration and reload");
                return false;
            }
            Err(e) => {
                health.failed(&e);
                metrics::poll_done(&name, false);
                tracing::warn!(source = %name, error = %e, next_poll_s = interval.as_secs(),
                    "poll failed; nothing after the last commit was skipped, the next poll resumes there");
                if once {
                    return false;
                }
            }
        }
        // What the poll freed goes back to the system before the agent sleeps.
        crate::release_free_memory();
        // Sleep until the next poll, beating so /healthz sees the loop turn.
        let wake = tokio::time::Instant::now() + interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(wake.min(tokio::time::Instant::now() + Duration::from_secs(5))) => {}
                _ = cancel.cancelled() => return true,
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
        assert_eq!(state.sink_position("file").await.unwrap(), Some(12));
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
