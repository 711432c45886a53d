//! The agent: state, sinks and one poller task per source, until shutdown (or one pass).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics;
use crate::pipeline::{PollError, Poller};
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

/// Opens every configured sink at the position the state last committed for it.
pub async fn open_sinks(cfg: &Config, state: &State) -> anyhow::Result<Vec<Arc<SinkSlot>>> {
    let mut slots = Vec::new();
    for s in &cfg.sinks {
        let pos = state.sink_position(&s.name).await?;
        slots.push(sinks::open(s, pos).await?);
    }
    Ok(slots)
}

/// Runs every source until `cancel` fires (or, with `once`, one pass each).
pub async fn run(cfg: &Config, once: bool, cancel: CancellationToken) -> anyhow::Result<Outcome> {
    let _lock = StateLock::acquire(&cfg.agent.state_path)?;
    let state = open_state(&cfg.agent.state_path).await?;
    let slots = open_sinks(cfg, &state).await?;
    let http = Http::new(cfg.agent.request_timeout).context("cannot build the HTTP client")?;
    let tracker = TaskTracker::new();
    let mut handles = Vec::new();
    for src in &cfg.sources {
        let sinks: Vec<_> = slots
            .iter()
            .filter(|s| s.config.takes(&src.name))
            .cloned()
            .collect();
        let poller = Poller::new(
            src.clone(),
            sources::build(src, http.clone()),
            state.clone(),
            sinks,
            cfg.agent.retry.clone(),
            cancel.clone(),
        );
        handles.push(tracker.spawn(source_loop(poller, once, cancel.clone())));
    }
    tracker.close();
    let mut ok = true;
    for h in handles {
        ok &= h.await.unwrap_or(false);
    }
    Ok(if ok {
        Outcome::Completed
    } else {
        Outcome::Failed
    })
}

/// One source's life: poll, wait, poll... Returns whether it ended well.
pub async fn source_loop(mut poller: Poller, once: bool, cancel: CancellationToken) -> bool {
    let name = poller.name().to_string();
    let interval = poller.config().poll_interval;
    metrics::source_up(&name, true);
    loop {
        let started = Instant::now();
        match poller.poll().await {
            Ok(s) => {
                metrics::poll_done(&name, true, s.cursor);
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
                tracing::info!(source = %name, "stopped by shutdown; uncommitted pages will be read again");
                return !once;
            }
            Err(e) if e.is_permanent() => {
                metrics::poll_done(&name, false, None);
                metrics::source_up(&name, false);
                tracing::error!(source = %name, error = %e,
                    "source stopped: the API refused the request; fix the configuration and reload");
                return false;
            }
            Err(e) => {
                metrics::poll_done(&name, false, None);
                tracing::warn!(source = %name, error = %e, next_poll_s = interval.as_secs(),
                    "poll failed; nothing after the last commit was skipped, the next poll resumes there");
                if once {
                    return false;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = cancel.cancelled() => return true,
        }
    }
}
