//! What `/healthz` and `/readyz` answer from: each source's progress, failures and heartbeat.
//!
//! Pollers report into a [`SourceHealth`] at each attempt, commit and completed poll; the server
//! only reads. Readiness is per source: ready while it completes polls or makes progress, not
//! ready once it has been failing for longer than `unready_after`, or was stopped by a permanent
//! error. Liveness asks whether every source's loop still turns.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug)]
struct Inner {
    /// When the loop last did anything (attempt, retry, commit, sleep tick).
    heartbeat: Instant,
    last_success: Option<Instant>,
    /// Set at the first failed attempt, cleared by the next success.
    failing_since: Option<Instant>,
    last_error: Option<String>,
    /// Stopped by a permanent error (the message), until a run started again succeeds.
    stopped: Option<String>,
    /// How many times the source's task was started again after it ended.
    restarts: u64,
}

/// One source's health, shared by its poller (writer) and the server (reader).
#[derive(Debug, Clone)]
pub struct SourceHealth(Arc<Mutex<Inner>>);

impl SourceHealth {
    fn new() -> SourceHealth {
        SourceHealth(Arc::new(Mutex::new(Inner {
            heartbeat: Instant::now(),
            last_success: None,
            failing_since: None,
            last_error: None,
            stopped: None,
            restarts: 0,
        })))
    }

    fn with(&self, f: impl FnOnce(&mut Inner)) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g);
    }

    /// The loop turned.
    pub fn beat(&self) {
        self.with(|i| i.heartbeat = Instant::now());
    }

    /// A request succeeded or a page was committed.
    pub fn progress(&self) {
        self.with(|i| {
            i.heartbeat = Instant::now();
            i.failing_since = None;
            i.stopped = None;
        });
    }

    /// An attempt failed (transiently or not).
    pub fn failed(&self, error: &dyn std::fmt::Display) {
        self.with(|i| {
            let now = Instant::now();
            i.heartbeat = now;
            i.failing_since.get_or_insert(now);
            i.last_error = Some(error.to_string());
        });
    }

    /// A poll completed.
    pub fn polled(&self) {
        self.with(|i| {
            let now = Instant::now();
            i.heartbeat = now;
            i.last_success = Some(now);
            i.failing_since = None;
            i.last_error = None;
            i.stopped = None;
        });
    }

    /// The source's task ended and is started again (the `restarts`-th time).
    pub fn restarting(&self, restarts: u64) {
        self.with(|i| {
            i.heartbeat = Instant::now();
            i.restarts = restarts;
        });
    }

    /// Whether a permanent error stopped the source and no run since has succeeded.
    pub fn is_stopped(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stopped
            .is_some()
    }

    /// A permanent error stopped the source.
    pub fn stopped(&self, error: &dyn std::fmt::Display) {
        self.with(|i| {
            i.heartbeat = Instant::now();
            i.stopped = Some(error.to_string());
        });
    }
}

/// A source's state as `/readyz` reports it.
#[derive(Debug, Serialize, PartialEq)]
pub struct SourceStatus {
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_seconds_ago: Option<u64>,
    /// Times the source's task ended (a panic, a refusal) and was started again.
    #[serde(skip_serializing_if = "is_zero")]
    pub restarts: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One sink's delivery health, shared by its slot (the pollers report each delivery, the sink
/// each retry inside one) and the server (reader).
#[derive(Debug, Clone, Default)]
pub struct SinkHealth(Arc<Mutex<SinkInner>>);

#[derive(Debug, Default)]
struct SinkInner {
    /// Set at the first failed delivery (or retry inside one), cleared by the next success.
    failing_since: Option<Instant>,
    last_error: Option<String>,
    last_success: Option<Instant>,
    /// The last failure was a refusal that waiting cannot cure (a file that is not the sink's):
    /// not ready at once.
    refused: bool,
    /// Since when events have waited in the sink's queue with nothing delivered (reset at each
    /// delivery that leaves some, cleared when the queue is empty).
    waiting_since: Option<Instant>,
}

impl SinkHealth {
    fn with(&self, f: impl FnOnce(&mut SinkInner)) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g);
    }

    /// A delivery completed.
    pub fn delivered(&self) {
        self.with(|i| {
            i.failing_since = None;
            i.last_error = None;
            i.refused = false;
            i.last_success = Some(Instant::now());
        });
    }

    /// A delivery failed, or an attempt inside one that is retried.
    pub fn failed(&self, error: &dyn std::fmt::Display) {
        self.with(|i| {
            i.failing_since.get_or_insert_with(Instant::now);
            i.last_error = Some(error.to_string());
            i.refused = false;
        });
    }

    /// The sink's task found events in its queue (`true`), or delivered and left it empty.
    pub fn queued(&self, waiting: bool) {
        self.with(|i| {
            if waiting {
                i.waiting_since.get_or_insert_with(Instant::now);
            } else {
                i.waiting_since = None;
            }
        });
    }

    /// A delivery left events in the queue: the wait starts again from now.
    pub fn progressed(&self) {
        self.with(|i| i.waiting_since = Some(Instant::now()));
    }

    /// A delivery was refused in a way that waiting does not cure: not ready at once.
    pub fn refused(&self, error: &dyn std::fmt::Display) {
        self.with(|i| {
            i.failing_since.get_or_insert_with(Instant::now);
            i.last_error = Some(error.to_string());
            i.refused = true;
        });
    }
}

/// A sink's state as `/readyz` reports it.
#[derive(Debug, Serialize, PartialEq)]
pub struct SinkStatus {
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_seconds_ago: Option<u64>,
}

/// Health of every running source and sink.
#[derive(Debug, Default)]
pub struct Health {
    sources: Mutex<BTreeMap<String, SourceHealth>>,
    /// The sinks of the running configuration (replaced when a reload reopens them).
    sinks: Mutex<BTreeMap<String, SinkHealth>>,
    /// Whether the sources have been started: until then there is nothing to be ready.
    started: std::sync::atomic::AtomicBool,
}

impl Health {
    /// The agent has started its sources (the probe server runs from before that).
    pub fn mark_started(&self) {
        self.started
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether [`Health::mark_started`] was called.
    pub fn is_started(&self) -> bool {
        self.started.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Registers (or re-registers, after a reload) a source and returns its handle.
    pub fn register(&self, name: &str) -> SourceHealth {
        let h = SourceHealth::new();
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), h.clone());
        h
    }

    /// Whether the source is stopped by a permanent error (see [`SourceHealth::is_stopped`]).
    pub fn is_stopped(&self, name: &str) -> bool {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .is_some_and(|h| h.is_stopped())
    }

    /// The sinks of the running configuration, replacing those of the one before.
    pub fn set_sinks(&self, sinks: impl IntoIterator<Item = (String, SinkHealth)>) {
        *self.sinks.lock().unwrap_or_else(|p| p.into_inner()) = sinks.into_iter().collect();
    }

    /// Readiness of each sink: not ready once it has failed to deliver (refused, unreachable,
    /// retrying) for longer than `unready_after`.
    pub fn sink_readiness(&self, unready_after: Duration) -> BTreeMap<String, SinkStatus> {
        let now = Instant::now();
        let sinks: Vec<(String, SinkHealth)> = self
            .sinks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        sinks
            .into_iter()
            .map(|(name, h)| {
                let i = h.0.lock().unwrap_or_else(|p| p.into_inner());
                let reason = match i.failing_since {
                    Some(_) if i.refused => Some(format!(
                        "refused: {}",
                        i.last_error.as_deref().unwrap_or("unknown error")
                    )),
                    Some(since) if now.duration_since(since) > unready_after => Some(format!(
                        "cannot deliver for {}s: {}",
                        now.duration_since(since).as_secs(),
                        i.last_error.as_deref().unwrap_or("unknown error")
                    )),
                    _ => match i.waiting_since {
                        Some(w) if now.duration_since(w) > unready_after => Some(format!(
                            "nothing delivered for {}s while events wait in its queue",
                            now.duration_since(w).as_secs()
                        )),
                        _ => None,
                    },
                };
                let status = SinkStatus {
                    ready: reason.is_none(),
                    reason,
                    last_success_seconds_ago: i
                        .last_success
                        .map(|t| now.duration_since(t).as_secs()),
                };
                (name, status)
            })
            .collect()
    }

    /// Forgets a source removed by a reload.
    pub fn remove(&self, name: &str) {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    fn snapshot(&self) -> Vec<(String, SourceHealth)> {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Readiness of each source: not ready when stopped, or failing for longer than
    /// `unready_after`.
    pub fn readiness(&self, unready_after: Duration) -> BTreeMap<String, SourceStatus> {
        let now = Instant::now();
        self.snapshot()
            .into_iter()
            .map(|(name, h)| {
                let i = h.0.lock().unwrap_or_else(|p| p.into_inner());
                let last = i.last_success.map(|t| now.duration_since(t).as_secs());
                let reason = if let Some(e) = &i.stopped {
                    Some(format!(
                        "stopped by a permanent error, tried again at retry_max_delay: {e}"
                    ))
                } else {
                    match i.failing_since {
                        Some(since) if now.duration_since(since) > unready_after => Some(format!(
                            "failing for {}s: {}",
                            now.duration_since(since).as_secs(),
                            i.last_error.as_deref().unwrap_or("unknown error")
                        )),
                        _ => None,
                    }
                };
                (
                    name,
                    SourceStatus {
                        ready: reason.is_none(),
                        reason,
                        last_success_seconds_ago: last,
                        restarts: i.restarts,
                    },
                )
            })
            .collect()
    }

    /// Sources whose loop has not turned for longer than `stale` (a stuck task).
    pub fn stuck(&self, stale: Duration) -> Vec<String> {
        let now = Instant::now();
        self.snapshot()
            .into_iter()
            .filter(|(_, h)| {
                let i = h.0.lock().unwrap_or_else(|p| p.into_inner());
                i.stopped.is_none() && now.duration_since(i.heartbeat) > stale
            })
            .map(|(n, _)| n)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_started_until_the_agent_says_so() {
        let health = Health::default();
        assert!(!health.is_started());
        health.register("a");
        assert!(
            !health.is_started(),
            "registering a source is not starting them all"
        );
        health.mark_started();
        assert!(health.is_started());
    }

    #[test]
    fn ready_until_failing_too_long_and_again_after_a_success() {
        let health = Health::default();
        let h = health.register("a");
        assert!(health.readiness(Duration::from_millis(20))["a"].ready);
        h.failed(&"HTTP 503: down");
        assert!(
            health.readiness(Duration::from_millis(20))["a"].ready,
            "a short failure is tolerated"
        );
        std::thread::sleep(Duration::from_millis(40));
        let r = health.readiness(Duration::from_millis(20));
        assert!(!r["a"].ready);
        assert!(
            r["a"].reason.as_deref().unwrap().contains("HTTP 503"),
            "{r:?}"
        );
        h.progress();
        assert!(health.readiness(Duration::from_millis(20))["a"].ready);
        h.stopped(&"HTTP 401");
        assert!(!health.readiness(Duration::from_secs(60))["a"].ready);
    }

    #[test]
    fn a_sink_failing_too_long_is_not_ready_until_it_delivers() {
        let health = Health::default();
        let h = SinkHealth::default();
        health.set_sinks([("siem".to_string(), h.clone())]);
        assert!(health.sink_readiness(Duration::from_millis(20))["siem"].ready);
        h.failed(&"HTTP 401: bad token");
        assert!(health.sink_readiness(Duration::from_millis(20))["siem"].ready);
        std::thread::sleep(Duration::from_millis(40));
        h.failed(&"HTTP 401: still a bad token");
        let r = health.sink_readiness(Duration::from_millis(20));
        assert!(!r["siem"].ready);
        assert!(
            r["siem"]
                .reason
                .as_deref()
                .unwrap()
                .contains("still a bad token"),
            "{r:?}"
        );
        h.delivered();
        let r = health.sink_readiness(Duration::from_millis(20));
        assert!(r["siem"].ready && r["siem"].last_success_seconds_ago == Some(0));
    }

    /// A sink that is slow without failing: not ready once its queue has waited longer than
    /// `unready_after` with nothing delivered; a refusal that waiting cannot cure: at once.
    #[test]
    fn a_sink_with_events_waiting_too_long_or_refused_is_not_ready() {
        let health = Health::default();
        let h = SinkHealth::default();
        health.set_sinks([("siem".to_string(), h.clone())]);
        let after = Duration::from_millis(20);
        h.queued(true);
        assert!(health.sink_readiness(after)["siem"].ready);
        std::thread::sleep(Duration::from_millis(40));
        let r = health.sink_readiness(after);
        assert!(!r["siem"].ready);
        assert!(
            r["siem"]
                .reason
                .as_deref()
                .unwrap()
                .contains("events wait in its queue"),
            "{r:?}"
        );
        h.delivered();
        h.progressed();
        assert!(
            health.sink_readiness(after)["siem"].ready,
            "a delivery resets the wait"
        );
        h.queued(false);
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            health.sink_readiness(after)["siem"].ready,
            "an empty queue is no wait"
        );
        h.refused(&"out.ndjson holds a file that is not this sink's");
        let r = health.sink_readiness(Duration::from_secs(3600));
        assert!(!r["siem"].ready);
        assert!(
            r["siem"]
                .reason
                .as_deref()
                .unwrap()
                .starts_with("refused: "),
            "{r:?}"
        );
        h.delivered();
        assert!(health.sink_readiness(after)["siem"].ready);
    }

    #[test]
    fn a_loop_that_stops_beating_is_stuck() {
        let health = Health::default();
        let h = health.register("a");
        assert!(health.stuck(Duration::from_millis(20)).is_empty());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            health.stuck(Duration::from_millis(20)),
            vec!["a".to_string()]
        );
        h.beat();
        assert!(health.stuck(Duration::from_millis(20)).is_empty());
        health.remove("a");
        assert!(health.readiness(Duration::from_secs(1)).is_empty());
    }
}
