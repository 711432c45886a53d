//! The generic poller: one per source. It owns what every vendor shares — the window plan, paging,
//! retries, dedupe, delivery and the commit — and asks the vendor file only for pages.
//!
//! A poll reads the closed window `[cursor − overlap, now − lag)` in sub-windows, oldest first,
//! whose length follows the data: it grows while answers are empty or small and shrinks when a
//! window takes many pages, so a first run from a far `start` costs requests in proportion to the events,
//! not to the span. For each page: normalise, key, drop what the state already knows, deliver to
//! then commit keys, the new events into the queue of every sink of the source, and the cursor
//! in one transaction; each sink's task delivers its queue on its own (`sinks::drain`). A crash
//! before the commit repeats a page; it never skips one. A window that delivered
//! nothing is not committed on its own: its cursor goes with the next commit, or at the end of
//! the poll.
//!
//! **Offset paging and occurrence numbers.** Entries without an id are keyed by their content
//! and their occurrence number among identical entries of the same time unit, so the number must
//! be the same at every read. It is, as long as no read counts one entry twice: so the poller
//! never takes a time unit from two pages of one read. A full page sorted by time ends in a unit
//! that may go on past it: that unit is left for the next request, whose range ends (newest
//! first) or starts (oldest first) at it, so it comes whole at the top of the next page. A full
//! page that is not sorted, or that holds times outside the range asked for, cannot be cut that
//! way: the range is halved and read again until an answer holds all of it. Only a single time
//! unit with more entries than a page is read by offset within the unit. This holds however the
//! vendor orders entries within a time unit, whether the range's end is inclusive, and while
//! late events are inserted.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::event::Event;
use crate::health::SourceHealth;
use crate::keys::Identity;
use crate::keys::{self, Key};
use crate::metrics;
use crate::retry::RetryConfig;
use crate::retry::{self, Gave, Retryable, Verdict};
use crate::sinks::{SinkError, SinkSlot};
use crate::sources::config::SourceConfig;
use crate::sources::pace::Paced;
use crate::sources::{Page, PageRequest, Paging, Source, SourceError, Traits};
use crate::state::{Commit, Queued, State, StateError};
use crate::timefmt::{self, dur_nanos, floor_to, Nanos, NANOS_PER_SEC};

pub mod keyer;
use keyer::{Keyer, PageKeys};

/// How many pages the agent reads at once, from the request for a page to its commit: what
/// bounds the memory of pages in flight however many sources there are (each waits for a
/// permit before asking its vendor for a page).
pub const READS_IN_FLIGHT: usize = 16;

static READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(READS_IN_FLIGHT);

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
        match self {
            PollError::Source(e) => {
                e.verdict() == Verdict::Stop && !matches!(e, SourceError::TooLarge(_))
            }
            // A file sink whose path holds someone else's file.
            PollError::Sink(SinkError::NotOurs { .. }) => true,
            _ => false,
        }
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

/// What reading one sub-window took, to size the next one.
#[doc(hidden)]
#[derive(Debug, Default, Clone, Copy)]
pub struct WindowStats {
    /// Requests made.
    pub pages: u64,
    /// The most entries one answer held.
    pub largest: usize,
}

/// The window plan, as pure arithmetic the poller follows (and `tests/properties.rs` checks
/// against random cursors, lags, overlaps, sizes and clocks): where a poll begins and ends, how
/// long each sub-window is, how that length follows the data.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct Planner {
    /// The vendor's time unit: every bound is a multiple of it.
    unit: Nanos,
    /// How far before the cursor a poll begins again (late arrivals).
    overlap: Nanos,
    /// How far behind now a poll stops.
    lag: Nanos,
    /// The configured `start`: nothing older is read, overlap or not.
    start: Option<Nanos>,
    /// The most entries one answer can hold (the page size, or a whole-window API's cap).
    capacity: usize,
    /// The length of the next sub-window: it grows while answers are small (eightfold while
    /// they are empty, twofold while they are small) and shrinks when they are dense (see
    /// [`Planner::adapt`]).
    window: Nanos,
}

/// What is left of a poll's range: `[from, end)`.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub from: Nanos,
    pub end: Nanos,
}

/// One planned sub-window `[start, end)`.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Nanos,
    pub end: Nanos,
    /// Whether it is as long as planned (not cut short by the poll's end or by the vendor).
    pub whole: bool,
}

impl Planner {
    /// A plan for a vendor of time unit `unit` whose answers hold at most `capacity` entries,
    /// beginning with sub-windows of `window` (rounded down to whole units, at least one).
    pub fn new(
        unit: Nanos,
        overlap: Nanos,
        lag: Nanos,
        start: Option<Nanos>,
        window: Nanos,
        capacity: usize,
    ) -> Planner {
        Planner {
            unit,
            overlap,
            lag,
            start,
            capacity,
            window: floor_to(window, unit).max(unit),
        }
    }

    /// The plan of a configured source.
    fn of(cfg: &SourceConfig, traits: &Traits) -> Planner {
        let capacity = match traits.paging {
            Paging::Whole { max_events } => max_events,
            _ => cfg.page_size as usize,
        };
        Planner::new(
            traits.time_unit,
            dur_nanos(cfg.overlap),
            dur_nanos(cfg.lag),
            cfg.start,
            dur_nanos(cfg.window),
            capacity,
        )
    }

    /// The length the next sub-window is planned with.
    pub fn window(&self) -> Nanos {
        self.window
    }

    /// What a poll at `now` reads, from the stored `cursor` (`first`: where a source without
    /// one begins): `[cursor − overlap, now − lag)` on whole units, never before `start`. It may
    /// be empty (nothing to read yet, or a clock that went back).
    pub fn span(&self, cursor: Option<Nanos>, first: Nanos, now: Nanos) -> Span {
        let from = match cursor {
            // Re-read `overlap` for late arrivals, but never before the configured start: the
            // user asked for nothing older.
            Some(c) => c
                .saturating_sub(self.overlap)
                .max(self.start.unwrap_or(i64::MIN).min(c)),
            None => first,
        };
        Span {
            from: floor_to(from, self.unit),
            end: floor_to(now - self.lag, self.unit),
        }
    }

    /// The next sub-window of `span`, which the vendor may cut short with
    /// `vendor_end(from, planned end)` (Domo: never across a repeated hour); `None` once the
    /// span is read.
    pub fn next(
        &self,
        span: &Span,
        vendor_end: impl FnOnce(Nanos, Nanos) -> Nanos,
    ) -> Option<Window> {
        let (from, end) = (span.from, span.end);
        if from >= end {
            return None;
        }
        let planned = from.saturating_add(self.window).min(end);
        let w_end = vendor_end(from, planned).clamp(from + self.unit, planned);
        Some(Window {
            start: from,
            end: w_end,
            whole: w_end == planned && planned < end,
        })
    }

    /// `w` was read (`stats`: what it took): the span goes on after it, and the next
    /// sub-window is sized from it.
    pub fn done(&mut self, span: &mut Span, w: &Window, stats: WindowStats) {
        span.from = w.end;
        self.adapt(w, stats);
    }

    /// Sizes the next sub-window from what reading `w` took. A window that was as long as
    /// planned and held small answers says something about the window's length.
    fn adapt(&mut self, w: &Window, stats: WindowStats) {
        let unit = self.unit;
        let span = w.end - w.start;
        if stats.pages > 4 {
            // Dense: aim at two pages a window, so the cursor moves (and a crash repeats little).
            let target = (span as i128 * 2 / stats.pages as i128) as Nanos;
            self.window = floor_to(target, unit).max(unit).min(self.window);
        } else if w.whole && stats.pages <= 1 && stats.largest.saturating_mul(4) < self.capacity {
            // Empty: nothing says how far away the data is; cross the gap in a few steps.
            let factor = if stats.largest == 0 { 8 } else { 2 };
            self.window = floor_to(self.window.saturating_mul(factor), unit).min(MAX_WINDOW);
        }
    }

    /// The answer to `w` held more than the agent reads in one go: halve the window and read
    /// it again. `false` when it is a single unit already (nothing to halve).
    pub fn too_large(&mut self, w: &Window) -> bool {
        if w.end - w.start <= self.unit {
            return false;
        }
        self.window = floor_to((w.end - w.start) / 2, self.unit).max(self.unit);
        true
    }
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
    /// Where polls begin and end, and the length of the next sub-window.
    plan: Planner,
    /// Keys events; counts occurrences of a content within the window being read.
    keyer: Keyer,
    /// Set once an answer held entries at exactly the end of the range asked for: from then on
    /// ranges are asked for with an end one millisecond short, which such an API includes.
    inclusive_end: bool,
    /// Set once an API was seen not sorting a page by time (logged once).
    unordered_noted: bool,
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
    /// A cursor reached by windows that delivered nothing, not yet committed: it goes with the
    /// next commit, or is committed at the end of the poll.
    pending_cursor: Option<Nanos>,
    /// How far outside the ranges asked for this poll's answers placed entries (a zone or clock
    /// mismatch): said once at the end of the poll.
    offset: clock::Offset,
    /// Where a poll ends instead of now − lag (`export`'s `--to`).
    until: Option<Nanos>,
    /// What the last poll did, including one that failed part-way (for `--once`'s summary).
    last: PollSummary,
    /// One of the agent's [`READS_IN_FLIGHT`] permits, held from the request for a page until
    /// that page is committed (or the poll ends).
    read: Option<tokio::sync::SemaphorePermit<'static>>,
    /// Room reserved in the queue of each of its sinks for the page being read (released at its
    /// commit, or when the poll ends).
    reserved: Vec<Reserved>,
    /// The bytes of this source's last queued page: what the next one is reckoned to need.
    page_bytes: u64,
    /// The pace of the source's credential: a page's turn is taken before its read permit.
    paced: Option<Paced>,
}

/// Room reserved in a sink's queue for a page being read; given back when dropped.
struct Reserved {
    slot: Arc<SinkSlot>,
    bytes: u64,
}

impl Reserved {
    fn new(slot: Arc<SinkSlot>, bytes: u64) -> Reserved {
        slot.queue.reserve(bytes);
        Reserved { slot, bytes }
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.slot.queue.release(self.bytes);
    }
}

/// Where the entries of one answer fall, against the range `[lo, hi)` it was asked for.
#[derive(Debug, Default)]
struct Spread {
    /// Entries whose time unit is inside the range.
    inside: usize,
    /// Entries at exactly `hi` (an API whose end is inclusive).
    at_end: usize,
    /// Entries outside `[lo, hi]`: a zone or clock mismatch; their times cannot steer paging.
    foreign: usize,
    /// Oldest and newest unit inside the range.
    oldest: Option<Nanos>,
    newest: Option<Nanos>,
    /// Whether the entries inside the range come newest first / oldest first (both when they
    /// share one unit).
    descending: bool,
    ascending: bool,
}

impl Spread {
    fn of(events: &[Event], lo: Nanos, hi: Nanos, unit: Nanos) -> Spread {
        let mut s = Spread {
            descending: true,
            ascending: true,
            ..Spread::default()
        };
        let mut prev: Option<Nanos> = None;
        for ev in events {
            let u = floor_to(ev.time, unit);
            if u == hi {
                s.at_end += 1;
                continue;
            }
            if u < lo || u > hi {
                s.foreign += 1;
                continue;
            }
            s.inside += 1;
            s.oldest = Some(s.oldest.map_or(u, |o| o.min(u)));
            s.newest = Some(s.newest.map_or(u, |n| n.max(u)));
            if let Some(p) = prev {
                s.descending &= u <= p;
                s.ascending &= u >= p;
            }
            prev = Some(u);
        }
        s
    }
}

/// What to do with a full answer to an offset-paged range.
#[derive(Debug, PartialEq, Eq)]
enum Cut {
    /// Newest first: take the units newer than `oldest`; read `[lo, oldest + unit)` next.
    BeforeOldest(Nanos),
    /// Oldest first: take the units older than `newest`; read `[newest, hi)` next.
    AfterNewest(Nanos),
    /// Every entry in the range is of this one unit: read it by offset, then the rest.
    OneUnit(Nanos),
    /// Nothing in it can be trusted to cut by: halve the range and read both halves again.
    Halve,
}

impl Cut {
    fn of(spread: &Spread) -> Cut {
        match (spread.foreign, spread.oldest, spread.newest) {
            (0, Some(o), Some(n)) if o == n => Cut::OneUnit(o),
            (0, Some(o), Some(_)) if spread.descending => Cut::BeforeOldest(o),
            (0, Some(_), Some(n)) if spread.ascending => Cut::AfterNewest(n),
            _ => Cut::Halve,
        }
    }
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
        let plan = Planner::of(&cfg, &traits);
        Poller {
            cfg,
            source,
            traits,
            state,
            sinks,
            retry,
            cancel,
            plan,
            keyer: Keyer::default(),
            inclusive_end: false,
            unordered_noted: false,
            health,
            max_event: None,
            lookup: Lookup::default(),
            skew: 0,
            offset: clock::Offset::default(),
            pending_cursor: None,
            until: None,
            last: PollSummary::default(),
            read: None,
            reserved: Vec::new(),
            page_bytes: 64 << 10,
            paced: None,
        }
    }

    /// What the source's requests met that the state does not hold yet.
    fn unsaved_requests(&self) -> crate::state::Requests {
        self.paced.as_ref().map(Paced::unsaved).unwrap_or_default()
    }

    /// `r` is committed.
    fn saved_requests(&self, r: crate::state::Requests) {
        if let Some(p) = &self.paced {
            p.saved(r);
        }
    }

    /// Takes each page's turn at its credential's pace (the one its source's HTTP client was
    /// given) before one of the agent's read permits: a source waiting for its credential holds
    /// no permit that sources of other credentials need.
    pub fn paced(mut self, paced: Paced) -> Poller {
        self.paced = Some(paced);
        self
    }

    /// Makes every poll end at `until` instead of now − lag: `export` reads a closed window
    /// `[start, until)` with the production paging and dedupe.
    pub fn end_at(mut self, until: Nanos) -> Poller {
        self.until = Some(until);
        self
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn config(&self) -> &SourceConfig {
        &self.cfg
    }

    /// What the last poll did, whether or not it completed: what a failed poll fetched and
    /// delivered before it stopped, and the cursor it reached.
    pub fn last_poll(&self) -> &PollSummary {
        &self.last
    }

    /// Where the source stands before its first poll: the stored cursor, or where its first
    /// poll will begin. For the lag gauge, which must show a source that is far behind from the
    /// first scrape on.
    pub async fn starting_point(&self) -> Result<Nanos, PollError> {
        let row = self.state.source(&self.cfg.name).await?;
        Ok(match row.and_then(|r| r.cursor) {
            Some(c) => c,
            None => self.first_start(timefmt::now()),
        })
    }

    /// The cursor the state holds for this source (`None`: never committed, or unreadable).
    pub async fn stored_cursor(&self) -> Option<Nanos> {
        self.state
            .source(&self.cfg.name)
            .await
            .ok()
            .flatten()
            .and_then(|r| r.cursor)
    }

    /// Where a source without a cursor begins.
    fn first_start(&self, now: Nanos) -> Nanos {
        self.cfg.start.unwrap_or(now - 24 * 3600 * NANOS_PER_SEC)
    }

    /// One poll: every sub-window from the cursor up to now − lag.
    pub async fn poll(&mut self) -> Result<PollSummary, PollError> {
        let mut summary = PollSummary::default();
        let result = self.poll_windows(&mut summary).await;
        // A page a failed or cancelled poll read is dropped: so is its place among the reads.
        self.read = None;
        self.reserved.clear();
        if let Some(p) = &self.paced {
            p.unreserve();
        }
        // Entries outside the ranges asked for: one line per poll, with the offset seen.
        let offset = std::mem::take(&mut self.offset);
        if let Some(seen) = offset.describe() {
            let hint = offset
                .estimate()
                .and_then(|(off, _)| self.source.clock_hint(off, timefmt::now()));
            tracing::warn!(source = %self.cfg.name, "{seen}: {}",
                hint.unwrap_or_else(|| "the vendor's clock or zone differs from the agent's".into()));
        }
        // Windows that delivered nothing moved the cursor only in memory: record it, whatever
        // stopped the poll (their reads are done; a shutdown must not have them repeated).
        let flushed = self.flush_cursor().await;
        self.last = summary.clone();
        result?;
        flushed?;
        Ok(summary)
    }

    async fn poll_windows(&mut self, summary: &mut PollSummary) -> Result<(), PollError> {
        let now = timefmt::now();
        let row = self.state.source(&self.cfg.name).await?;
        let cursor = row.as_ref().and_then(|r| r.cursor);
        self.max_event = row.as_ref().and_then(|r| r.max_event);
        let mut span = self.plan.span(cursor, self.first_start(now), now);
        if let Some(u) = self.until {
            // Rounded up to the vendor's unit, so nothing before `until` is left out (`export`
            // drops what is after it).
            let unit = self.traits.time_unit;
            span.end = floor_to(u.saturating_add(unit - 1), unit);
        }
        summary.cursor = cursor;
        loop {
            let source = &self.source;
            let Some(w) = self.plan.next(&span, |a, b| source.window_end(a, b)) else {
                break;
            };
            if self.cancel.is_cancelled() {
                return Err(PollError::Cancelled);
            }
            match self.read_window(w.start, w.end, summary).await {
                Ok(stats) => {
                    summary.windows += 1;
                    let reached = summary.cursor.map_or(w.end, |c| c.max(w.end));
                    summary.cursor = Some(reached);
                    self.pending_cursor = Some(self.pending_cursor.map_or(w.end, |c| c.max(w.end)));
                    // The cursor, not the window: re-reading `overlap` is not falling behind.
                    metrics::cursor_at(&self.cfg.name, reached);
                    self.plan.done(&mut span, &w, stats);
                }
                Err(PollError::Source(SourceError::TooLarge(n))) if self.plan.too_large(&w) => {
                    tracing::debug!(source = %self.cfg.name, max_events = n,
                        window_ms = self.plan.window() / 1_000_000, "response too large; halving the window");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads the sub-window `[start, end)`.
    async fn read_window(
        &mut self,
        start: Nanos,
        end: Nanos,
        summary: &mut PollSummary,
    ) -> Result<WindowStats, PollError> {
        self.lookup = Lookup {
            before: self.max_event,
            since: None,
        };
        let mut stats = WindowStats::default();
        match self.traits.paging {
            Paging::Offset => self.read_ranges(start, end, &mut stats, summary).await?,
            Paging::Whole { max_events } => {
                let mut req = self.request(start, end);
                req.max_events = (end - start > self.traits.time_unit).then_some(max_events);
                let page = self.fetch_counted(&req, &mut stats, summary).await?;
                let keep = self.keep(&page, start, end);
                self.keyer.clear();
                self.queue_and_commit(page.events, keep, start, summary)
                    .await?;
            }
            Paging::Numbered => {
                // Vendor ids: a page shifted by a late insert repeats an entry, which its id
                // gives away; nothing here is numbered.
                let mut req = self.request(start, end);
                loop {
                    let page = self.fetch_counted(&req, &mut stats, summary).await?;
                    let more = page.more;
                    let keep = self.keep(&page, start, end);
                    self.queue_and_commit(page.events, keep, start, summary)
                        .await?;
                    if !more {
                        break;
                    }
                    req.page += 1;
                }
            }
        }
        Ok(stats)
    }

    /// A request for the first page of `[start, end)`.
    fn request(&self, start: Nanos, end: Nanos) -> PageRequest {
        PageRequest {
            start,
            end,
            inclusive_end: self.inclusive_end,
            offset: 0,
            page: 0,
            limit: self.cfg.page_size,
            max_events: None,
        }
    }

    async fn fetch_counted(
        &mut self,
        req: &PageRequest,
        stats: &mut WindowStats,
        summary: &mut PollSummary,
    ) -> Result<Page, PollError> {
        self.wait_for_room().await?;
        let page = self.fetch(req).await?;
        self.offset.answer(
            page.events.iter().map(|e| e.time),
            req.start,
            req.end,
            self.traits.time_unit,
        );
        stats.pages += 1;
        stats.largest = stats.largest.max(page.returned);
        summary.pages += 1;
        summary.fetched += page.events.len() as u64;
        Ok(page)
    }

    /// Which entries of an answer to `[lo, hi)` are this range's: all but those at exactly `hi`
    /// (an inclusive end), which the range after it reads. When the answer holds times outside
    /// the range (a zone mismatch), times mean nothing and every entry is kept.
    fn keep(&mut self, page: &Page, lo: Nanos, hi: Nanos) -> Option<Vec<bool>> {
        let unit = self.traits.time_unit;
        let spread = Spread::of(&page.events, lo, hi, unit);
        if spread.at_end == 0 || spread.foreign > 0 {
            return None;
        }
        self.learn_inclusive_end();
        Some(
            page.events
                .iter()
                .map(|e| floor_to(e.time, unit) != hi)
                .collect(),
        )
    }

    fn learn_inclusive_end(&mut self) {
        if !self.inclusive_end && self.traits.end_can_be_shortened {
            self.inclusive_end = true;
            tracing::debug!(source = %self.cfg.name,
                "the API's end bound is inclusive: asking for ranges that end a millisecond short");
        }
    }

    /// Reads `[start, end)` of an offset-paged API so that no time unit is taken from two pages
    /// of one read (see the module's documentation).
    async fn read_ranges(
        &mut self,
        start: Nanos,
        end: Nanos,
        stats: &mut WindowStats,
        summary: &mut PollSummary,
    ) -> Result<(), PollError> {
        let unit = self.traits.time_unit;
        // Ranges still to read; the next one last.
        let mut todo = vec![(start, end)];
        while let Some((lo, hi)) = todo.pop() {
            let req = self.request(lo, hi);
            let page = self.fetch_counted(&req, stats, summary).await?;
            let spread = Spread::of(&page.events, lo, hi, unit);
            if spread.at_end > 0 && spread.foreign == 0 {
                self.learn_inclusive_end();
            }
            let full = page.returned >= req.limit as usize;
            if full && hi - lo <= unit {
                // One time unit with more entries than a page: through it by offset.
                self.read_unit(lo, hi, page, stats, summary).await?;
                continue;
            }
            // Which units of the answer to take: `[from, to)`, or all of them.
            let (from, to) = if !full {
                // The whole range: all of it, but what belongs to the range after it.
                if spread.foreign > 0 {
                    (Nanos::MIN, Nanos::MAX)
                } else {
                    (lo, hi)
                }
            } else {
                match Cut::of(&spread) {
                    Cut::BeforeOldest(o) => {
                        todo.push((lo, o + unit));
                        (o + unit, hi)
                    }
                    Cut::AfterNewest(n) => {
                        todo.push((n, hi));
                        (lo, n)
                    }
                    Cut::OneUnit(u) => {
                        // Newer, then the unit alone, then older: the stack pops older first.
                        if u + unit < hi {
                            todo.push((u + unit, hi));
                        }
                        todo.push((u, u + unit));
                        if lo < u {
                            todo.push((lo, u));
                        }
                        continue;
                    }
                    Cut::Halve => {
                        if !self.unordered_noted {
                            self.unordered_noted = true;
                            tracing::info!(source = %self.cfg.name,
                                "a full page was not sorted by time (or held times outside the range asked for); reading smaller ranges until one answer holds a whole range");
                        }
                        // `hi - lo` is at least two units here.
                        let mid = lo + floor_to((hi - lo) / 2, unit).max(unit);
                        todo.push((mid, hi));
                        todo.push((lo, mid));
                        continue;
                    }
                }
            };
            let keep: Vec<bool> = page
                .events
                .iter()
                .map(|e| (from..to).contains(&floor_to(e.time, unit)))
                .collect();
            self.keyer.clear();
            self.queue_and_commit(page.events, Some(keep), start, summary)
                .await?;
        }
        Ok(())
    }

    /// Reads one time unit `[lo, hi)` with more entries than a page by offset, `first` being
    /// the answer at offset 0. Only here does numbering span pages: it relies on the vendor
    /// keeping its order within the unit from one request to the next.
    async fn read_unit(
        &mut self,
        lo: Nanos,
        hi: Nanos,
        first: Page,
        stats: &mut WindowStats,
        summary: &mut PollSummary,
    ) -> Result<(), PollError> {
        let unit = self.traits.time_unit;
        tracing::debug!(source = %self.cfg.name, unit = %timefmt::human(lo),
            "one time unit holds more entries than a page; reading it by offset");
        self.keyer.clear();
        let mut req = self.request(lo, hi);
        let mut page = first;
        loop {
            let spread = Spread::of(&page.events, lo, hi, unit);
            let returned = page.returned;
            let keep: Vec<bool> = page
                .events
                .iter()
                .map(|e| spread.foreign > 0 || floor_to(e.time, unit) != hi)
                .collect();
            self.queue_and_commit(page.events, Some(keep), lo, summary)
                .await?;
            if returned < req.limit as usize {
                return Ok(());
            }
            req.offset += returned as u64;
            page = self.fetch_counted(&req, stats, summary).await?;
        }
    }

    /// Before a page is read: waits while a sink of this source has a full queue (its sources
    /// read on once it delivers), then for one of the agent's [`READS_IN_FLIGHT`] permits,
    /// unless it holds one already (a range whose page was read and set aside).
    async fn wait_for_room(&mut self) -> Result<(), PollError> {
        if self.read.is_some() {
            return Ok(());
        }
        let started = Instant::now();
        let page = self.page_bytes;
        for slot in &self.sinks {
            let room = tokio::select! {
                r = beating(&self.health, slot.queue.wait_for_room(page)) => r,
                _ = self.cancel.cancelled() => return Err(PollError::Cancelled),
            };
            if let Err(why) = room {
                // `--once`: the sink gave up for this run; nothing more is read for it.
                return Err(PollError::Sink(SinkError::Io {
                    sink: slot.config.name.clone(),
                    msg: format!("not read for in this run, the sink failed: {why}"),
                }));
            }
        }
        // Reserved only once every sink has room: a source waiting for one sink holds no room
        // in another.
        self.reserved = self
            .sinks
            .iter()
            .map(|slot| Reserved::new(slot.clone(), page))
            .collect();
        if let Some(paced) = &self.paced {
            tokio::select! {
                _ = beating(&self.health, paced.reserve()) => {}
                _ = self.cancel.cancelled() => return Err(PollError::Cancelled),
            }
        }
        let permit = tokio::select! {
            p = beating(&self.health, READS.acquire()) => p.expect("the reads semaphore is never closed"),
            _ = self.cancel.cancelled() => return Err(PollError::Cancelled),
        };
        self.read = Some(permit);
        let waited = started.elapsed();
        if waited > std::time::Duration::from_secs(1) {
            tracing::debug!(source = %self.cfg.name, waited_ms = waited.as_millis() as u64,
                "waited for room in the sinks' queues before reading another page");
        }
        Ok(())
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
                metrics::source_request(
                    name,
                    request_class(&r),
                    r.as_ref().ok().map(|p| p.events.len() as u64),
                );
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

    /// Keys a page and commits what is new into the queue of every sink of the source.
    async fn queue_and_commit(
        &mut self,
        mut events: Vec<Event>,
        keep: Option<Vec<bool>>,
        start: Nanos,
        summary: &mut PollSummary,
    ) -> Result<(), PollError> {
        // The page's place among the reads, and its room in the queues, are given back once it
        // is committed (or not): after its real bytes are added.
        let _read = self.read.take();
        let _reserved = std::mem::take(&mut self.reserved);
        if let Some(keep) = keep {
            let mut i = 0;
            events.retain(|_| {
                i += 1;
                keep[i - 1]
            });
        }
        let PageKeys { keys, legacy } = self
            .keyer
            .key(self.traits.identity, &mut events)
            .map_err(|e| SourceError::Body(format!("event is not JSON: {e}")))?;
        let old: Vec<usize> = (0..events.len())
            .filter(|i| self.lookup.may_be_known(events[*i].time))
            .collect();
        let mut known = vec![false; keys.len()];
        if !old.is_empty() {
            // An entry keyed differently by an earlier release is also looked up by that key,
            // so an upgrade delivers nothing twice.
            let mut asked: Vec<(Key, Nanos)> =
                old.iter().map(|i| (keys[*i], events[*i].time)).collect();
            let mut owners: Vec<usize> = old.clone();
            for (i, k) in &legacy {
                if self.lookup.may_be_known(events[*i].time) {
                    asked.push((*k, events[*i].time));
                    owners.push(*i);
                }
            }
            let found = self.state.known(&self.cfg.name, asked).await?;
            for (i, k) in owners.into_iter().zip(found) {
                known[i] |= k;
            }
        }
        // A vendor id can repeat within a page (offsets shifted by a late insert); content keys
        // cannot (occurrence numbers tell twins apart), so only vendor ids are checked.
        let by_id = self.traits.identity == Identity::VendorId;
        let mut in_page = HashSet::with_capacity_and_hasher(
            if by_id { keys.len() } else { 0 },
            keys::RandomState::default(),
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
        // Each page goes out oldest first, whatever order the vendor answered in (newest first,
        // mostly): a stable sort, which finds a reversed page and turns it in one pass.
        let mut fresh = events;
        fresh.sort_by_key(|e| e.time);
        fresh_keys.sort_by_key(|(_, t)| *t);
        // Keys of entries the vendor placed before their window are kept that much longer (the
        // poll's end says how far off they were).
        for ev in &fresh {
            if ev.time < start && start - ev.time > self.skew {
                self.skew = start - ev.time;
            }
        }

        // A page that holds nothing new and nothing known costs no commit (and takes no sink):
        // an empty window's cursor waits for the next commit (or the end of the poll).
        if fresh.is_empty() && duplicates == 0 {
            return Ok(());
        }
        // A local sink (file, stdout) that is idle with nothing queued takes the page now, its
        // position going into the page's commit (write-through: no queue row, no second pass).
        // Holding its lock from the write through the commit keeps its commits in the order of
        // its writes, and an empty queue means nothing older waits for it. Any other sink, or
        // one whose write fails, gets the page in its queue, in the same commit.
        let n = fresh.len() as u32;
        let mut through = Vec::new();
        let mut positions = Vec::new();
        let mut queue_for = Vec::new();
        for slot in self.sinks.iter().filter(|_| n > 0) {
            let idle = slot.write_through() && slot.queue.level().events == 0;
            let guard = if idle {
                slot.sink.try_lock().ok()
            } else {
                None
            };
            let Some(mut g) = guard else {
                queue_for.push(slot);
                continue;
            };
            match beating(&self.health, g.deliver(&fresh, &self.cancel)).await {
                Ok(()) => {
                    if let Some(p) = g.position() {
                        positions.push((slot.config.name.clone(), p));
                    }
                    through.push((slot, g));
                }
                Err(e) => {
                    g.rollback();
                    if let SinkError::Cancelled { .. } = e {
                        for (_, g) in through.iter_mut() {
                            g.rollback();
                        }
                        return Err(PollError::Cancelled);
                    }
                    // Its task retries it from the queue, and says why.
                    tracing::debug!(sink = %slot.config.name, error = %e,
                        "the sink could not take a page directly; it goes into its queue");
                    queue_for.push(slot);
                }
            }
        }
        // Written once for every sink that queues it, shared.
        let records = if queue_for.is_empty() {
            bytes::Bytes::new()
        } else {
            bytes::Bytes::from(crate::event::queued::encode(&fresh))
        };
        if !records.is_empty() {
            self.page_bytes = records.len() as u64;
        }
        let queued = queue_for
            .iter()
            .map(|slot| Queued {
                sink: slot.config.name.clone(),
                events: n,
                records: records.clone(),
            })
            .collect();
        let newest = fresh.iter().map(|e| e.time).max();
        let oldest = fresh.iter().map(|e| e.time).min();
        let cursor = self.pending_cursor;
        let commit = Commit {
            source: self.cfg.name.clone(),
            kind: self.cfg.kind.as_str(),
            delivered: fresh.len() as u64,
            duplicates,
            keys: fresh_keys,
            queued,
            positions,
            cursor,
            prune_before: cursor.map(|c| self.prune_before(c)),
            max_event: newest,
            requests: self.unsaved_requests(),
        };
        let requests = commit.requests;
        if let Err(e) = self.state.commit(commit).await {
            for (_, g) in through.iter_mut() {
                g.rollback();
            }
            return Err(e.into());
        }
        self.saved_requests(requests);
        metrics::state_commit(&self.cfg.name);
        for (slot, mut g) in through {
            g.committed();
            drop(g);
            slot.health.delivered();
            metrics::sink_batch(&slot.config.name, "delivered");
            metrics::sink_delivered(&slot.config.name);
            metrics::delivered(&self.cfg.name, &slot.config.name, n as u64);
        }
        let at = timefmt::now();
        for slot in queue_for {
            slot.queue.added(n as u64, records.len() as u64, at);
        }
        if self.pending_cursor == cursor {
            self.pending_cursor = None;
        }
        self.max_event = self.max_event.max(newest);
        if let (Some(lo), Some(hi)) = (oldest, newest) {
            self.lookup.delivered(lo, hi);
        }
        self.health.progress();
        summary.delivered += fresh.len() as u64;
        summary.duplicates += duplicates;
        metrics::queued(
            &self.cfg.name,
            self.sinks.iter().map(|s| s.config.name.as_str()),
            fresh.len() as u64,
            duplicates,
        );
        Ok(())
    }

    /// Keys older than this can go once the cursor is at `cursor`: a poll re-reads `overlap`
    /// before the cursor, and a window can begin a little before that.
    fn prune_before(&self, cursor: Nanos) -> Nanos {
        cursor
            .saturating_sub(dur_nanos(self.cfg.overlap))
            .saturating_sub(first_window(&self.cfg, &self.traits))
            .saturating_sub(self.skew)
    }

    /// Commits a cursor that windows which delivered nothing have reached.
    async fn flush_cursor(&mut self) -> Result<(), PollError> {
        let Some(cursor) = self.pending_cursor else {
            return Ok(());
        };
        let commit = Commit {
            source: self.cfg.name.clone(),
            kind: self.cfg.kind.as_str(),
            cursor: Some(cursor),
            prune_before: Some(self.prune_before(cursor)),
            requests: self.unsaved_requests(),
            ..Commit::default()
        };
        let requests = commit.requests;
        self.state.commit(commit).await?;
        self.saved_requests(requests);
        metrics::state_commit(&self.cfg.name);
        if self.pending_cursor == Some(cursor) {
            self.pending_cursor = None;
        }
        Ok(())
    }
}

/// A page request's outcome class for `auditship_api_requests_total`: 2xx, 4xx, 5xx or error.
fn request_class(r: &Result<Page, SourceError>) -> &'static str {
    match r {
        Ok(_) => "2xx",
        Err(SourceError::Status { status, .. }) if *status < 500 => "4xx",
        Err(SourceError::Status { .. }) => "5xx",
        // The answer came (2xx); it held more than the agent reads in one go.
        Err(SourceError::TooLarge(_)) => "2xx",
        Err(_) => "error",
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

/// The first sub-window's length: the configured `window`, on whole time units of the vendor.
fn first_window(cfg: &SourceConfig, traits: &Traits) -> Nanos {
    floor_to(dur_nanos(cfg.window), traits.time_unit).max(traits.time_unit)
}

/// The longest a sub-window grows to: about 34 years, more than any audit trail holds, and far
/// from overflowing a time.
const MAX_WINDOW: Nanos = 1 << 60;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn ev(t: Nanos) -> Event {
        Event::standalone("s", "domo", "domo", t, "{}")
    }

    fn spread(times: &[Nanos], lo: Nanos, hi: Nanos) -> Spread {
        let events: Vec<Event> = times.iter().map(|t| ev(*t)).collect();
        Spread::of(&events, lo, hi, 10)
    }

    #[test]
    fn a_full_sorted_page_is_cut_before_its_last_unit() {
        // Newest first, units of 10: the oldest unit (30) may go on past the page.
        assert_eq!(
            Cut::of(&spread(&[95, 71, 50, 33, 31], 0, 100)),
            Cut::BeforeOldest(30)
        );
        // An inclusive end: the entries at exactly 100 belong to the next range.
        let s = spread(&[100, 100, 95, 50, 33], 0, 100);
        assert_eq!((s.at_end, s.inside, s.foreign), (2, 3, 0));
        assert_eq!(Cut::of(&s), Cut::BeforeOldest(30));
        // Oldest first.
        assert_eq!(
            Cut::of(&spread(&[3, 17, 50, 61, 64], 0, 100)),
            Cut::AfterNewest(60)
        );
        // Ties in any order within a unit do not matter.
        assert_eq!(
            Cut::of(&spread(&[99, 91, 95, 50, 52, 51], 0, 100)),
            Cut::BeforeOldest(50)
        );
    }

    #[test]
    fn a_page_of_one_unit_is_read_by_offset_and_anything_else_is_halved() {
        assert_eq!(Cut::of(&spread(&[55, 51, 59], 0, 100)), Cut::OneUnit(50));
        assert_eq!(Cut::of(&spread(&[100, 55, 51], 0, 100)), Cut::OneUnit(50));
        // Not sorted.
        assert_eq!(Cut::of(&spread(&[31, 95, 50], 0, 100)), Cut::Halve);
        // Times outside the range: a zone mismatch; they cannot steer paging.
        assert_eq!(Cut::of(&spread(&[95, 50, -5], 0, 100)), Cut::Halve);
        assert_eq!(Cut::of(&spread(&[150, 50], 0, 100)), Cut::Halve);
        assert_eq!(Cut::of(&spread(&[], 0, 100)), Cut::Halve);
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
}
