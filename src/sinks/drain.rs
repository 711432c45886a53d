//! A sink's task: it takes batches from the sink's queue in order, delivers them, and records
//! its progress (the chunks delivered leave the queue in the commit that records the sink's
//! position). One task per sink: a sink that is down or slow holds back only itself; its
//! sources go on reading into its queue until the queue is full (`queue_max_bytes`).
//!
//! Failures are retried with the agent's backoff, the batch kept in the queue: a receiver that
//! refuses a batch for its content blocks this sink (and says so in the log, the metrics and
//! `/readyz`) rather than lose the batch. In `--once`, the first failure (the sink has retried
//! inside already) gives the sink up for the run: its events stay queued for the next run.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{SinkError, SinkSlot};
use crate::event::{queued, Event};
use crate::metrics;
use crate::retry::RetryConfig;
use crate::sources::config::SourceKind;
use crate::state::{Ack, Chunk, State};

/// How a sink's task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drained {
    /// `--once`: every source ended and the queue is empty.
    Empty,
    /// `--once`: the sink failed; its queue keeps what it holds for the next run.
    GaveUp(String),
    /// Shutdown (or the sink was replaced by a reload).
    Stopped,
    /// The state cannot be written: the agent stops.
    Fatal(String),
}

/// What a sink's task needs besides its slot.
#[derive(Clone)]
pub struct DrainCx {
    pub state: State,
    pub retry: RetryConfig,
    /// `--once`: cancelled once every source has ended, after which an empty queue ends the task.
    pub sources_done: Option<CancellationToken>,
    pub cancel: CancellationToken,
    /// The sink's lease this task drains under (replicas sharing a PostgreSQL state): each ack
    /// names it. Other replicas' pollers fill the queue too, unseen by [`super::SinkQueue::more`],
    /// so the task then also looks at the queue every [`LOOK_EVERY`].
    pub lease: Option<crate::lease::Lease>,
}

/// How often a sink's task drained under a lease looks at its queue with nothing woken it.
pub const LOOK_EVERY: Duration = Duration::from_millis(500);

/// Most events and bytes of queued chunks one delivery takes: the destination's (an HTTP
/// sink's batch, so that a delivery is one request; otherwise a thousand events or a MiB). A
/// chunk (a page) larger than that goes alone, whole.
fn take_limits(slot: &SinkSlot) -> (u64, u64) {
    slot.config.settings.configured().take_limits(&slot.config)
}

/// The delay before the `failures`th attempt again: the agent's backoff, doubling to its cap.
fn backoff(retry: &RetryConfig, failures: u32) -> Duration {
    let doubled = retry
        .initial
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(retry.max_delay)
}

enum Failed {
    /// Try the batch again after the backoff.
    Retry,
    /// End the task.
    End(Drained),
}

/// Runs a sink's task until shutdown, or in `--once` until its queue is drained or it fails.
pub async fn drain(slot: Arc<SinkSlot>, cx: DrainCx) -> Drained {
    let name = slot.config.name.clone();
    let (max_events, max_bytes) = take_limits(&slot);
    let mut failures = 0u32;
    let mut sources: HashMap<String, Arc<str>> = HashMap::new();
    // Chunks refused for their content, kept in the queue and not tried again by this task.
    let mut held = BTreeSet::new();
    loop {
        if cx.cancel.is_cancelled() {
            return Drained::Stopped;
        }
        // Looked at before the queue: a page committed before the sources ended is seen.
        let ended = cx.sources_done.as_ref().is_some_and(|t| t.is_cancelled());
        // A batch smaller than the sink's waits for more, up to `batch_max_age` after its
        // oldest page was queued: many sources' small pages share one request.
        if !ended {
            if let Some(wait) = batch_wait(&slot, max_events, max_bytes) {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cx.cancel.cancelled() => return Drained::Stopped,
                    _ = ended_or_never(&cx.sources_done) => {}
                }
            }
        }
        let skip = held.iter().copied().collect();
        let taken = cx.state.take(&name, skip, max_events, max_bytes).await;
        let outcome = match taken {
            Ok(chunks) if chunks.is_empty() => {
                if ended {
                    return Drained::Empty;
                }
                let look = async {
                    match cx.lease {
                        Some(_) => tokio::time::sleep(LOOK_EVERY).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = slot.queue.more() => {}
                    _ = look => {}
                    _ = cx.cancel.cancelled() => return Drained::Stopped,
                    _ = ended_or_never(&cx.sources_done) => {}
                }
                continue;
            }
            Ok(chunks) => {
                slot.health.queued(true);
                deliver(&slot, &cx, chunks, &mut sources, &mut held).await
            }
            Err(e) if e.is_fatal() => Err(Failed::End(Drained::Fatal(e.to_string()))),
            Err(e) => {
                tracing::warn!(sink = %name, error = %e, "cannot read the sink's queue; trying again");
                Err(Failed::Retry)
            }
        };
        match outcome {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(sink = %name, failures, "sink delivers again");
                }
                failures = 0;
            }
            Err(Failed::End(d)) => return d,
            Err(Failed::Retry) => {
                failures += 1;
                tokio::select! {
                    _ = tokio::time::sleep(backoff(&cx.retry, failures)) => {}
                    _ = slot.queue.retry_wanted() => {
                        tracing::info!(sink = %name, "trying the sink again now (reload)");
                    }
                    _ = cx.cancel.cancelled() => return Drained::Stopped,
                }
            }
        }
    }
}

/// How long the next batch should wait for more events, if at all: while the queue holds less
/// than a batch and its oldest page was queued less than `batch_max_age` ago.
fn batch_wait(slot: &SinkSlot, max_events: u64, max_bytes: u64) -> Option<Duration> {
    let age = slot.config.batch_max_age;
    if age.is_zero() {
        return None;
    }
    let level = slot.queue.level();
    let oldest = level.oldest?;
    if level.events >= max_events || level.bytes >= max_bytes {
        return None;
    }
    let waited = Duration::from_nanos((crate::timefmt::now() - oldest).max(0) as u64);
    age.checked_sub(waited).filter(|d| !d.is_zero())
}

async fn ended_or_never(t: &Option<CancellationToken>) {
    match t {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

/// A chunk read back.
struct Part {
    id: i64,
    source: Arc<str>,
    bytes: u64,
    events: Vec<Event>,
}

/// Delivers one batch of chunks and acknowledges it in the state. A batch the receiver refuses
/// for its content (not for credentials or its URL) is sent again a chunk at a time: a chunk
/// refused on its own is held (kept in the queue, not tried again by this task, reported), so
/// that one source's bad page does not stop the sink for the others.
async fn deliver(
    slot: &SinkSlot,
    cx: &DrainCx,
    chunks: Vec<Chunk>,
    sources: &mut HashMap<String, Arc<str>>,
    held: &mut BTreeSet<i64>,
) -> Result<(), Failed> {
    let name = slot.config.name.as_str();
    let mut parts = Vec::with_capacity(chunks.len());
    for c in chunks {
        let source = sources
            .entry(c.source.clone())
            .or_insert_with(|| Arc::from(c.source.as_str()))
            .clone();
        let read = match SourceKind::parse(&c.kind) {
            Some(kind) => queued::decode(
                &c.records,
                &source,
                kind.as_str(),
                kind.vendor().vendor(),
                kind.vendor().siem(),
            ),
            None => Err(format!(
                "the source's kind {:?} is not one this release reads",
                c.kind
            )),
        };
        match read {
            Ok(events) => parts.push(Part {
                id: c.id,
                source,
                bytes: c.records.len() as u64,
                events,
            }),
            Err(e) => {
                // Kept, never skipped, never sent half.
                hold(
                    slot,
                    held,
                    c.id,
                    &source,
                    c.events as u64,
                    &format!("it cannot be read: {e}"),
                );
            }
        }
    }
    if parts.is_empty() {
        return Ok(());
    }
    match send(slot, cx, &parts).await? {
        None => Ok(()),
        Some(SinkError::Rejected { status, .. }) if !sink_wide(status) && parts.len() > 1 => {
            tracing::warn!(sink = %name, chunks = parts.len(),
                "the receiver refused a batch for its content; sending its pages one at a time to find the refused ones");
            for p in parts.chunks(1) {
                match send(slot, cx, p).await? {
                    None => {}
                    Some(e @ SinkError::Rejected { status, .. }) if !sink_wide(status) => {
                        hold_part(slot, held, &p[0], &e);
                    }
                    Some(e) => return Err(failed(slot, cx, e)),
                }
            }
            Ok(())
        }
        Some(e @ SinkError::Rejected { status, .. }) if !sink_wide(status) => {
            hold_part(slot, held, &parts[0], &e);
            Ok(())
        }
        Some(e) => Err(failed(slot, cx, e)),
    }
}

/// Whether a refusal with this status is the receiver's about every batch, not one batch's
/// content: credentials (401, 403, 407) or the URL (404, 405).
fn sink_wide(status: u16) -> bool {
    matches!(status, 401 | 403 | 404 | 405 | 407)
}

/// Holds a chunk the receiver refused for its content (or that cannot be read): it stays in
/// the queue, is not tried again by this task (a restart or reload tries it again), and is
/// reported.
fn hold(slot: &SinkSlot, held: &mut BTreeSet<i64>, id: i64, source: &str, events: u64, why: &str) {
    held.insert(id);
    slot.queue.hold(source, events);
    metrics::sink_batch(&slot.config.name, "held");
    slot.health.failed(&why);
    metrics::sink_error(&slot.config.name);
    tracing::error!(sink = %slot.config.name, source = %source, events, error = %why,
        "a page of this source is held in the sink's queue: the receiver refused it for its content; the other pages go on, and it is tried again at the next start or reload (fix the receiver's mapping or the sink's format)");
}

/// Holds a chunk the receiver refused on its own.
fn hold_part(slot: &SinkSlot, held: &mut BTreeSet<i64>, p: &Part, e: &SinkError) {
    let events = p.events.len() as u64;
    hold(slot, held, p.id, &p.source, events, &e.to_string());
}

/// A failure of the sink itself: retried, or in `--once` the end of the sink for this run.
fn failed(slot: &SinkSlot, cx: &DrainCx, e: SinkError) -> Failed {
    let name = slot.config.name.as_str();
    if let SinkError::Cancelled { .. } = e {
        return Failed::End(Drained::Stopped);
    }
    match e {
        // Waiting does not cure it: not ready at once, and said so.
        SinkError::NotOurs { .. } => slot.health.refused(&e),
        _ => slot.health.failed(&e),
    }
    metrics::sink_error(name);
    if cx.sources_done.is_some() {
        tracing::error!(sink = %name, error = %e, queued = slot.queue.level().events,
            "--once: the sink could not take its batch; its queue is kept for the next run");
        return give_up(slot, e.to_string());
    }
    tracing::error!(sink = %name, error = %e,
        "the sink could not take a batch; it is kept in the queue and tried again (the other sinks and the sources go on)");
    Failed::Retry
}

/// Sends `parts` as one delivery and, once the sink has them, removes them from the queue in
/// the commit that records the sink's position. `Some` is the sink's refusal (nothing
/// committed, the sink's partial write undone).
async fn send(slot: &SinkSlot, cx: &DrainCx, parts: &[Part]) -> Result<Option<SinkError>, Failed> {
    let name = slot.config.name.as_str();
    let joined: Vec<Event>;
    let events: &[Event] = if parts.len() == 1 {
        &parts[0].events
    } else {
        joined = parts
            .iter()
            .flat_map(|p| p.events.iter().cloned())
            .collect();
        &joined
    };
    let n = events.len() as u64;
    let mut sink = slot.sink.lock().await;
    let sent = async {
        sink.deliver(events, &cx.cancel).await?;
        if let Some(settle) = sink.settle(events, &cx.cancel) {
            settle.await?;
        }
        Ok::<(), SinkError>(())
    }
    .await;
    if let Err(e) = sent {
        sink.rollback();
        if !matches!(e, SinkError::Cancelled { .. }) {
            metrics::sink_batch(name, "failed");
        }
        return Ok(Some(e));
    }
    let ack = Ack {
        sink: name.to_string(),
        chunks: parts.iter().map(|p| p.id).collect(),
        events: n,
        position: sink.position(),
        lease: cx.lease.clone(),
    };
    match cx.state.ack(ack).await {
        Ok(oldest) => {
            sink.committed();
            drop(sink);
            slot.queue
                .removed(n, parts.iter().map(|p| p.bytes).sum(), oldest);
            slot.health.delivered();
            metrics::sink_batch(name, "delivered");
            if oldest.is_some() {
                slot.health.progressed();
            } else {
                slot.health.queued(false);
            }
            metrics::sink_delivered(name);
            for p in parts {
                metrics::delivered(&p.source, name, p.events.len() as u64);
            }
            Ok(None)
        }
        Err(e) => {
            sink.rollback();
            if e.is_fatal() {
                return Err(Failed::End(Drained::Fatal(e.to_string())));
            }
            tracing::warn!(sink = %name, error = %e,
                "cannot record the sink's progress; the batch is delivered again");
            Err(Failed::Retry)
        }
    }
}

fn give_up(slot: &SinkSlot, why: String) -> Failed {
    slot.queue.give_up(why.clone());
    Failed::End(Drained::GaveUp(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap() {
        let r = RetryConfig {
            initial: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_attempts: None,
        };
        let d: Vec<u64> = (1..=6).map(|f| backoff(&r, f).as_millis() as u64).collect();
        assert_eq!(d, vec![100, 200, 400, 800, 1000, 1000]);
    }
}
