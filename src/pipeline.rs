//! The generic poller: one per source. It owns what every vendor shares — the window plan, paging,
//! retries, dedupe, delivery and the commit — and asks the vendor file only for pages.
//!
//! A poll reads the closed window `[cursor − overlap, now − lag)` in sub-windows of at most
//! `window`, oldest first. For each page: normalise, key, drop what the state already knows,
//! deliver to every sink, then commit keys, sink positions and (after a sub-window's last page)
//! the cursor in one transaction. A crash between delivery and commit repeats a page; it never
//! skips one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::config::{RetryConfig, SourceConfig};
use crate::dedupe::{self, Key, Occurrences};
use crate::event::Event;
use crate::health::SourceHealth;
use crate::metrics;
use crate::retry::{self, Gave, Retryable, Verdict};
use crate::sinks::{SinkError, SinkSlot};
use crate::sources::{Identity, Page, PageRequest, Paging, Source, SourceError, Traits};
use crate::state::{Commit, State, StateError};
use crate::timefmt::{self, dur_nanos, floor_to, Nanos, NANOS_PER_SEC};

/// Why a poll stopped before reaching now − lag.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("cancelled by shutdown")]
    Cancelled,
    #[error("{0}")]
    Source(#[from] SourceError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Sink(#[from] SinkError),
}

impl PollError {
    /// A permanent error stops the source until the config changes; others are retried at the
    /// next poll.
    pub fn is_permanent(&self) -> bool {
        matches!(self, PollError::Source(e) if e.verdict() == Verdict::Stop && !matches!(e, SourceError::TooLarge(_)))
    }
}

/// What one poll did, for the progress line and tests.
#[derive(Debug, Default, Clone)]
pub struct PollSummary {
    pub windows: u64,
    pub pages: u64,
    pub fetched: u64,
    pub delivered: u64,
    pub duplicates: u64,
    /// The cursor after the poll.
    pub cursor: Option<Nanos>,
}

/// Reads one source into its sinks.
pub struct Poller {
    cfg: SourceConfig,
    source: Box<dyn Source>,
    traits: Traits,
    state: State,
    /// The sinks that take this source, in the agent's sink order (locks are taken in it).
    sinks: Vec<Arc<SinkSlot>>,
    retry: RetryConfig,
    cancel: CancellationToken,
    /// The current sub-window length; shrinks when a whole-window response is too large.
    window: Nanos,
    occurrences: Occurrences,
    /// Set once an API was seen not sorting newest first (so keyset narrowing is off).
    unordered_warned: bool,
    /// Progress and failures, for `/healthz` and `/readyz`.
    health: SourceHealth,
    /// The newest event time ever delivered (from the state at each poll, then kept current).
    max_event: Option<Nanos>,
    /// Which events can have keys already, for the sub-window being read: a key carries its
    /// event's time, and every key stored before the sub-window is at most `max_event` as it was
    /// then, every key stored since is within the times delivered since. Anything else (all of a
    /// backfill, whichever order the API pages in) is not looked up.
    lookup: Lookup,
    /// How far before the window it was read for the vendor has placed an event (a clock or
    /// zone mismatch); keys are kept that much longer, so a re-read still finds them.
    skew: Nanos,
}

impl Poller {
    pub fn new(
        cfg: SourceConfig,
        source: Box<dyn Source>,
        state: State,
        sinks: Vec<Arc<SinkSlot>>,
        retry: RetryConfig,
        cancel: CancellationToken,
        health: SourceHealth,
    ) -> Poller {
        let traits = source.traits();
        let window = max_window(&cfg, &traits);
        Poller {
            cfg,
            source,
            traits,
            state,
            sinks,
            retry,
            cancel,
            window,
            occurrences: Occurrences::default(),
            unordered_warned: false,
            health,
            max_event: None,
            lookup: Lookup::default(),
            skew: 0,
        }
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn config(&self) -> &SourceConfig {
        &self.cfg
    }

    /// One poll: every sub-window from the cursor up to now − lag.
    pub async fn poll(&mut self) -> Result<PollSummary, PollError> {
        let unit = self.traits.time_unit;
        let now = timefmt::now();
        let row = self.state.source(&self.cfg.name).await?;
        let cursor = row.as_ref().and_then(|r| r.cursor);
        self.max_event = row.as_ref().and_then(|r| r.max_event);
        let from = match cursor {
            // Re-read `overlap` for late arrivals, but never before the configured start: the
            // user asked for nothing older.
            Some(c) => c
                .saturating_sub(dur_nanos(self.cfg.overlap))
                .max(self.cfg.start.unwrap_or(i64::MIN).min(c)),
            None => self.cfg.start.unwrap_or(now - 24 * 3600 * NANOS_PER_SEC),
        };
        let mut from = floor_to(from, unit);
        let end = floor_to(now - dur_nanos(self.cfg.lag), unit);
        let max = max_window(&self.cfg, &self.traits);
        let mut summary = PollSummary {
            cursor,
            ..Default::default()
        };
        while from < end {
            if self.cancel.is_cancelled() {
                return Err(PollError::Cancelled);
            }
            let w_end = from.saturating_add(self.window).min(end);
            match self.read_window(from, w_end, &mut summary).await {
                Ok(events) => {
                    summary.windows += 1;
                    summary.cursor = Some(summary.cursor.map_or(w_end, |c| c.max(w_end)));
                    from = w_end;
                    // Grow a shrunken window back while responses stay small.
                    if self.window < max && events.saturating_mul(4) < self.cfg.max_response_events
                    {
                        self.window = floor_to(self.window.saturating_mul(2), unit).min(max);
                    }
                }
                Err(PollError::Source(SourceError::TooLarge(n))) if self.window > unit => {
                    self.window = floor_to(self.window / 2, unit).max(unit);
                    tracing::debug!(source = %self.cfg.name, max_events = n,
                        window_ms = self.window / 1_000_000, "response too large; halving the window");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(summary)
    }

    /// Reads the sub-window `[start, end)` page by page; returns the events it fetched.
    async fn read_window(
        &mut self,
        start: Nanos,
        end: Nanos,
        summary: &mut PollSummary,
    ) -> Result<usize, PollError> {
        let unit = self.traits.time_unit;
        self.occurrences.clear();
        self.lookup = Lookup {
            before: self.max_event,
            since: None,
        };
        let mut req = PageRequest {
            start,
            end,
            offset: 0,
            page: 0,
            limit: self.cfg.page_size,
            max_events: (self.traits.paging == Paging::Whole && end - start > unit)
                .then_some(self.cfg.max_response_events),
        };
        let mut fetched = 0;
        let mut keyset = true;
        loop {
            let page = self.fetch(&req).await?;
            summary.pages += 1;
            summary.fetched += page.events.len() as u64;
            fetched += page.events.len();
            let mut next = req.clone();
            let last = match self.traits.paging {
                Paging::Whole => true,
                Paging::Numbered => {
                    next.page += 1;
                    !page.more
                }
                Paging::Offset { newest_first } => {
                    let last = page.returned < req.limit as usize;
                    if !last {
                        match newest_first
                            .then(|| keyset_step(&page, req.start, req.end, unit))
                            .flatten()
                            .filter(|_| keyset)
                        {
                            // Narrow the window to end just after the oldest time seen, and skip
                            // only what was read at that time. Late events inserted at newer
                            // times can then no longer shift the offsets of what is unread.
                            Some((new_end, at_min)) if new_end < req.end => {
                                next.end = new_end;
                                next.offset = at_min;
                            }
                            Some(_) => next.offset = req.offset + page.returned as u64,
                            None => {
                                if newest_first && !self.unordered_warned {
                                    self.unordered_warned = true;
                                    tracing::warn!(source = %self.cfg.name,
                                        "the API did not return newest first; paging by offset alone");
                                }
                                keyset = false;
                                next.offset = req.offset + page.returned as u64;
                            }
                        }
                    }
                    last
                }
            };
            self.deliver_and_commit(page.events, start, last.then_some(end), summary)
                .await?;
            if last {
                break;
            }
            req = next;
        }
        self.occurrences.clear();
        Ok(fetched)
    }

    async fn fetch(&self, req: &PageRequest) -> Result<Page, PollError> {
        let name = self.cfg.name.as_str();
        let started = Instant::now();
        let result = retry::retry(
            &self.retry,
            &self.cancel,
            |e: &SourceError, delay| {
                metrics::retry("source", name);
                tracing::warn!(source = %name, error = %e, delay_ms = delay.as_millis() as u64, "retrying request");
            },
            || async {
                let r = self.source.fetch(req).await;
                metrics::source_request(name, &r);
                match &r {
                    Ok(_) => self.health.progress(),
                    Err(e) => self.health.failed(e),
                }
                r
            },
        )
        .await;
        metrics::page_latency(name, started.elapsed());
        result.map_err(|g| match g {
            Gave::Cancelled => PollError::Cancelled,
            Gave::Up(e) => PollError::Source(e),
        })
    }

    /// Keys a page, delivers what is new to every sink, and commits.
    async fn deliver_and_commit(
        &mut self,
        mut events: Vec<Event>,
        start: Nanos,
        cursor: Option<Nanos>,
        summary: &mut PollSummary,
    ) -> Result<(), PollError> {
        let keys = self.key(&mut events)?;
        let old: Vec<usize> = (0..events.len())
            .filter(|i| self.lookup.may_be_known(events[*i].time))
            .collect();
        let mut known = vec![false; keys.len()];
        if !old.is_empty() {
            let found = self
                .state
                .known(
                    &self.cfg.name,
                    old.iter().map(|i| (keys[*i], events[*i].time)).collect(),
                )
                .await?;
            for (i, k) in old.into_iter().zip(found) {
                known[i] = k;
            }
        }
        // A vendor id can repeat within a page (offsets shifted by a late insert); content keys
        // cannot (occurrence numbers tell twins apart), so only vendor ids are checked.
        let by_id = self.traits.identity == Identity::VendorId;
        let mut in_page = HashSet::with_capacity_and_hasher(
            if by_id { keys.len() } else { 0 },
            dedupe::RandomState::default(),
        );
        let mut fresh_keys = Vec::with_capacity(events.len());
        let mut duplicates = 0u64;
        let mut i = 0;
        // Filtered in place: events are not moved unless one before them was dropped.
        events.retain(|ev| {
            let (key, known) = (keys[i], known[i]);
            i += 1;
            if known || (by_id && !in_page.insert(key)) {
                duplicates += 1;
                return false;
            }
            fresh_keys.push((key, ev.time));
            true
        });
        let fresh = events;
        for ev in &fresh {
            if ev.time < start && start - ev.time > self.skew {
                self.skew = start - ev.time;
                tracing::warn!(source = %self.cfg.name, event_time = %timefmt::human(ev.time),
                    window_start = %timefmt::human(start),
                    "the vendor returned an event older than the window asked for; is time_zone right?");
            }
        }

        // Hold every sink from delivery through commit: a sink's commits follow its writes.
        let mut guards = Vec::with_capacity(self.sinks.len());
        for slot in &self.sinks {
            guards.push(slot.sink.lock().await);
        }
        if !fresh.is_empty() {
            for i in 0..guards.len() {
                let delivery = beating(&self.health, guards[i].deliver(&fresh, &self.cancel));
                if let Err(e) = delivery.await {
                    for g in guards[..i].iter_mut() {
                        g.rollback();
                    }
                    if let SinkError::Cancelled { .. } = e {
                        return Err(PollError::Cancelled);
                    }
                    metrics::sink_error(&self.sinks[i].config.name);
                    return Err(e.into());
                }
            }
        }
        let positions = self
            .sinks
            .iter()
            .zip(&guards)
            .filter_map(|(slot, g)| g.position().map(|p| (slot.config.name.clone(), p)))
            .collect();
        let max = max_window(&self.cfg, &self.traits);
        let newest = fresh.iter().map(|e| e.time).max();
        let oldest = fresh.iter().map(|e| e.time).min();
        let commit = Commit {
            source: self.cfg.name.clone(),
            kind: self.cfg.kind.as_str(),
            delivered: fresh.len() as u64,
            duplicates,
            keys: fresh_keys,
            positions,
            cursor,
            prune_before: cursor.map(|c| c - dur_nanos(self.cfg.overlap) - max - self.skew),
            max_event: newest,
        };
        match self.state.commit(commit).await {
            Ok(()) => {
                for g in guards.iter_mut() {
                    g.committed();
                }
                self.max_event = self.max_event.max(newest);
                if let (Some(lo), Some(hi)) = (oldest, newest) {
                    self.lookup.delivered(lo, hi);
                }
                self.health.progress();
            }
            Err(e) => {
                for g in guards.iter_mut() {
                    g.rollback();
                }
                return Err(e.into());
            }
        }
        drop(guards);
        summary.delivered += fresh.len() as u64;
        summary.duplicates += duplicates;
        metrics::delivered(&self.cfg.name, &self.sinks, fresh.len() as u64, duplicates);
        Ok(())
    }

    /// The dedupe key of each event; content-keyed events get their `id` from it.
    fn key(&mut self, events: &mut [Event]) -> Result<Vec<Key>, PollError> {
        let mut keys = Vec::with_capacity(events.len());
        if self.traits.identity == Identity::VendorId {
            keys.extend(events.iter().map(|ev| dedupe::id_key(ev.id())));
            return Ok(keys);
        }
        let mut occurrences = Vec::with_capacity(events.len());
        for ev in events.iter() {
            let h = match ev.content_hash() {
                Some(h) => h,
                None => dedupe::content_hash(ev.raw())
                    .map_err(|e| SourceError::Body(format!("event is not JSON: {e}")))?,
            };
            occurrences.push((h, self.occurrences.next(h)));
        }
        dedupe::occurrence_keys(&occurrences, &mut keys);
        for (ev, k) in events.iter_mut().zip(&keys) {
            ev.set_content_id(k);
        }
        Ok(keys)
    }
}

/// The event times whose keys may already be stored (see `Poller::lookup`).
#[derive(Debug, Default, Clone, Copy)]
struct Lookup {
    /// The newest event time delivered before the sub-window.
    before: Option<Nanos>,
    /// The oldest and newest event times delivered since it began.
    since: Option<(Nanos, Nanos)>,
}

impl Lookup {
    fn may_be_known(&self, t: Nanos) -> bool {
        self.before.is_some_and(|m| t <= m) || self.since.is_some_and(|(lo, hi)| lo <= t && t <= hi)
    }

    fn delivered(&mut self, lo: Nanos, hi: Nanos) {
        self.since = Some(match self.since {
            None => (lo, hi),
            Some((a, b)) => (a.min(lo), b.max(hi)),
        });
    }
}

/// Awaits `fut`, beating `health` every second meanwhile: a sink that retries through an outage
/// keeps the loop alive (backpressure, not a hang).
async fn beating<F: std::future::Future>(health: &SourceHealth, fut: F) -> F::Output {
    tokio::pin!(fut);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = tick.tick() => health.beat(),
        }
    }
}

/// The configured window, on whole time units of the vendor.
fn max_window(cfg: &SourceConfig, traits: &Traits) -> Nanos {
    floor_to(dur_nanos(cfg.window), traits.time_unit).max(traits.time_unit)
}

/// For a full page of a newest-first API: the narrowed window end (just after the oldest time
/// unit on the page) and how many entries of that unit the page held. `None` when the page is not
/// sorted newest first or holds times outside the window, so narrowing cannot be trusted.
fn keyset_step(page: &Page, start: Nanos, end: Nanos, unit: Nanos) -> Option<(Nanos, u64)> {
    let times: Vec<Nanos> = page.events.iter().map(|e| floor_to(e.time, unit)).collect();
    let oldest = *times.last()?;
    if times.len() != page.returned
        || times.windows(2).any(|w| w[0] < w[1])
        || times.iter().any(|t| *t < start || *t >= end)
    {
        return None;
    }
    let at_oldest = times.iter().rev().take_while(|t| **t == oldest).count() as u64;
    Some((oldest + unit, at_oldest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn ev(t: Nanos) -> Event {
        Event::standalone("s", "domo", "domo", t, "{}")
    }

    fn page(times: &[Nanos]) -> Page {
        Page {
            events: times.iter().map(|t| ev(*t)).collect(),
            returned: times.len(),
            more: true,
        }
    }

    #[test]
    fn keyset_narrows_to_just_after_the_oldest_unit() {
        // Newest first, units of 10: the oldest unit is 30 and holds two entries.
        assert_eq!(
            keyset_step(&page(&[95, 71, 50, 33, 31]), 0, 100, 10),
            Some((40, 2))
        );
        // All on the last unit: the end cannot move (caller adds to the offset instead).
        assert_eq!(
            keyset_step(&page(&[99, 95, 90]), 0, 100, 10),
            Some((100, 3))
        );
    }

    #[test]
    fn only_times_that_can_have_keys_are_looked_up() {
        // Nothing delivered yet: a backfill looks nothing up.
        let mut l = Lookup::default();
        assert!(!l.may_be_known(i64::MIN) && !l.may_be_known(0));
        // Delivered before the sub-window up to 100; within it, 500..=600 so far.
        l = Lookup {
            before: Some(100),
            since: None,
        };
        l.delivered(550, 600);
        l.delivered(500, 520);
        for (t, known) in [
            (99, true),
            (100, true),
            (101, false),
            (499, false),
            (500, true),
        ] {
            assert_eq!(l.may_be_known(t), known, "{t}");
        }
        assert!(l.may_be_known(600) && !l.may_be_known(601));
    }

    #[test]
    fn keyset_refuses_unsorted_or_out_of_window_pages() {
        assert_eq!(keyset_step(&page(&[31, 95, 50]), 0, 100, 10), None);
        assert_eq!(keyset_step(&page(&[95, 50, -5]), 0, 100, 10), None);
        assert_eq!(keyset_step(&page(&[150, 50]), 0, 100, 10), None);
        assert_eq!(keyset_step(&page(&[]), 0, 100, 10), None);
    }
}
