//! A sink's queue as the pollers and the sink's task see it: counters kept in step with the
//! state's rows (loaded at start, `+` at each page commit, `−` at each ack), the wake-ups
//! between them, and the back-pressure gate.
//!
//! The rows are the truth (`state`'s `queue` table); these counters only decide when a source
//! waits for room and what the metrics and `/readyz` say.

use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use tokio::sync::Notify;

use crate::state::QueueTotals;
use crate::timefmt::Nanos;

#[derive(Debug, Default)]
struct Counts {
    events: u64,
    bytes: u64,
    /// When the oldest queued chunk was committed.
    oldest: Option<Nanos>,
    /// Bytes of pages being read for this queue (let through, not yet committed).
    reserved: u64,
    /// Since when sources have waited for room (logged once when it starts and once when it
    /// ends: when the last source waiting goes on).
    full_since: Option<Instant>,
    /// Sources waiting for room now.
    waiting: usize,
}

/// One sink's queue.
#[derive(Debug)]
pub struct SinkQueue {
    sink: String,
    limit: u64,
    counts: Mutex<Counts>,
    /// Something was queued: the sink's task looks.
    more: Notify,
    /// Something was delivered (or the sink gave up): waiting sources look.
    room: Notify,
    /// A reload (SIGHUP) asks a failing sink to try again now rather than after its backoff.
    retry: Notify,
    /// `--once`: why the sink's task gave up for this run.
    gave_up: OnceLock<String>,
    /// Events of each source held in the queue, refused by the receiver for their content.
    held: Mutex<std::collections::BTreeMap<String, u64>>,
}

/// A source waiting for room in a queue, until it is dropped.
struct Waiter<'a>(&'a SinkQueue);

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.waited();
    }
}

/// What a queue holds, for `/readyz` and the logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueLevel {
    pub events: u64,
    pub bytes: u64,
    pub oldest: Option<Nanos>,
}

impl SinkQueue {
    /// The queue of `sink`, holding what the state says it holds.
    pub fn new(sink: &str, limit: u64, totals: Option<&QueueTotals>) -> SinkQueue {
        let q = SinkQueue {
            sink: sink.to_string(),
            limit,
            counts: Mutex::new(Counts {
                events: totals.map_or(0, |t| t.events),
                bytes: totals.map_or(0, |t| t.bytes),
                oldest: totals.and_then(|t| t.oldest),
                reserved: 0,
                full_since: None,
                waiting: 0,
            }),
            more: Notify::new(),
            room: Notify::new(),
            retry: Notify::new(),
            gave_up: OnceLock::new(),
            held: Mutex::default(),
        };
        q.report(&q.lock());
        q
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn report(&self, c: &Counts) {
        crate::metrics::sink_queue(
            &self.sink,
            c.events,
            c.bytes,
            self.limit,
            c.oldest,
            c.full_since.is_some(),
        );
    }

    /// Whether sources wait for room (`auditship_sink_queue_full`).
    pub fn full(&self) -> bool {
        self.lock().full_since.is_some()
    }

    /// The limit (`queue_max_bytes`).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn level(&self) -> QueueLevel {
        let c = self.lock();
        QueueLevel {
            events: c.events,
            bytes: c.bytes,
            oldest: c.oldest,
        }
    }

    /// A page's commit queued `events` in `bytes` for this sink, at `enqueued`.
    pub fn added(&self, events: u64, bytes: u64, enqueued: Nanos) {
        let mut c = self.lock();
        c.events += events;
        c.bytes += bytes;
        c.oldest.get_or_insert(enqueued);
        self.report(&c);
        drop(c);
        self.more.notify_one();
    }

    /// The sink's task removed `events` in `bytes`; `oldest` is what the state says is left.
    pub fn removed(&self, events: u64, bytes: u64, oldest: Option<Nanos>) {
        let mut c = self.lock();
        c.events = c.events.saturating_sub(events);
        c.bytes = c.bytes.saturating_sub(bytes);
        c.oldest = oldest;
        if oldest.is_none() {
            // Empty: whatever the counters say (they are estimates after a reload of the
            // config removed a source), the state has nothing.
            c.events = 0;
            c.bytes = 0;
        }
        self.report(&c);
        drop(c);
        self.room.notify_waiters();
    }

    /// What the state holds now (replicas sharing a PostgreSQL state: the other replicas fill
    /// and drain the same queue, which this one's counters cannot see).
    pub fn resync(&self, totals: Option<&QueueTotals>) {
        let mut c = self.lock();
        let before = c.bytes;
        c.events = totals.map_or(0, |t| t.events);
        c.bytes = totals.map_or(0, |t| t.bytes);
        c.oldest = totals.and_then(|t| t.oldest);
        self.report(&c);
        drop(c);
        let after = totals.map_or(0, |t| t.bytes);
        if after < before {
            self.room.notify_waiters();
        }
        if after > 0 {
            self.more.notify_one();
        }
    }

    /// Waits until the queue has room for a page of about `page` bytes besides what it holds
    /// and the pages being read for it ([`SinkQueue::reserve`]), or is empty; or until the sink
    /// gave up in this run (`Err` with why). A queue passes its limit only by how much pages
    /// outgrow their estimates.
    pub async fn wait_for_room(&self, page: u64) -> Result<(), String> {
        let mut waiter: Option<Waiter<'_>> = None;
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(why) = self.gave_up.get() {
                return Err(why.clone());
            }
            {
                let mut c = self.lock();
                let empty = c.bytes == 0 && c.reserved == 0;
                if empty || c.bytes + c.reserved + page <= self.limit {
                    return Ok(());
                }
                if waiter.is_none() {
                    c.waiting += 1;
                    waiter = Some(Waiter(self));
                }
                if c.full_since.is_none() {
                    c.full_since = Some(Instant::now());
                    tracing::warn!(sink = %self.sink, queued_bytes = c.bytes, queued_events = c.events,
                        limit = self.limit,
                        "queue full: the sources feeding this sink wait until it delivers (nothing is dropped; raise queue_max_bytes to hold more)");
                    self.report(&c);
                }
            }
            notified.await;
        }
    }

    /// A source stopped waiting for room (it went on, gave up or was cancelled): the last one
    /// ends the queue's being full.
    fn waited(&self) {
        let mut c = self.lock();
        c.waiting = c.waiting.saturating_sub(1);
        if c.waiting == 0 {
            if let Some(since) = c.full_since.take() {
                tracing::info!(sink = %self.sink, waited_s = since.elapsed().as_secs(),
                    queued_bytes = c.bytes, "queue has room again; its sources read on");
                self.report(&c);
            }
        }
    }

    /// A page of about `page` bytes is being read for this queue: counted against its limit
    /// until [`SinkQueue::release`].
    pub fn reserve(&self, page: u64) {
        self.lock().reserved += page;
    }

    /// The page reserved for is committed (its real bytes added), or will not be.
    pub fn release(&self, page: u64) {
        let mut c = self.lock();
        c.reserved = c.reserved.saturating_sub(page);
        drop(c);
        self.room.notify_waiters();
    }

    /// Waits until something is queued after the last look (or at once if something was
    /// queued since the last wait).
    pub async fn more(&self) {
        self.more.notified().await;
    }

    /// Asks the sink's task to end its backoff and try again now.
    pub fn retry_now(&self) {
        self.retry.notify_one();
    }

    /// Waits for [`SinkQueue::retry_now`].
    pub async fn retry_wanted(&self) {
        self.retry.notified().await;
    }

    /// `--once`: the sink's task gave up for this run; sources that would read for it do not.
    pub fn give_up(&self, why: String) {
        let _ = self.gave_up.set(why);
        self.room.notify_waiters();
    }

    /// `events` of `source` are held: refused by the receiver for their content, kept.
    pub fn hold(&self, source: &str, events: u64) {
        *self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(source.to_string())
            .or_default() += events;
    }

    /// Events held, by source.
    pub fn held(&self) -> Vec<(String, u64)> {
        let h = self.held.lock().unwrap_or_else(|p| p.into_inner());
        h.iter().map(|(s, n)| (s.clone(), *n)).collect()
    }

    /// `--once`: why the sink gave up in this run, if it did.
    pub fn gave_up(&self) -> Option<&str> {
        self.gave_up.get().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// A full queue holds its sources until a delivery makes room, and a sink that gave up
    /// lets them go with its reason at once.
    #[tokio::test]
    async fn a_full_queue_holds_sources_until_room_or_giving_up() {
        let q = Arc::new(SinkQueue::new("siem", 100, None));
        q.wait_for_room(10).await.unwrap();
        q.added(3, 150, 1);
        let waiting = tokio::spawn({
            let q = q.clone();
            async move { q.wait_for_room(10).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a full queue let a source through");
        q.removed(1, 60, Some(2));
        waiting.await.unwrap().unwrap();
        // Pages being read count: 90 held and 10 reserved leave no room for 10 more.
        q.reserve(10);
        let waiting = tokio::spawn({
            let q = q.clone();
            async move { q.wait_for_room(10).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a reserved page was not counted");
        q.release(10);
        waiting.await.unwrap().unwrap();
        assert_eq!(
            q.level(),
            QueueLevel {
                events: 2,
                bytes: 90,
                oldest: Some(2)
            }
        );
        q.added(1, 50, 3);
        let waiting = tokio::spawn({
            let q = q.clone();
            async move { q.wait_for_room(10).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        q.give_up("HTTP 401".into());
        assert_eq!(waiting.await.unwrap(), Err("HTTP 401".into()));
        q.removed(9, 9, None);
        assert_eq!(q.level(), QueueLevel::default());
    }

    /// A queue that was full only because of the pages being read for it (nothing left to
    /// deliver) is no longer full once the last source waiting for it goes on: it does not stay
    /// "full" until a delivery that never comes.
    #[tokio::test]
    async fn a_queue_full_of_reserved_pages_is_not_full_once_its_sources_go_on() {
        let q = Arc::new(SinkQueue::new("siem", 100, None));
        q.reserve(60);
        let waiting = tokio::spawn({
            let q = q.clone();
            async move { q.wait_for_room(50).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a reserved page was not counted");
        assert!(
            q.full(),
            "sources wait, yet the queue does not say it is full"
        );
        q.release(60);
        waiting.await.unwrap().unwrap();
        assert!(!q.full(), "no source waits, yet the queue says it is full");
    }
}
