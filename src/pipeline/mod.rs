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
//!
//! The pieces: `planner.rs` (the window plan, pure arithmetic), `paging.rs` (asking for pages
//! and cutting them), `keyer.rs` (a page's keys), `dedupe.rs` (which events are new, pure
//! functions), `commit.rs` (write-through, queues and the transaction); this file holds the
//! poll loop and the poller's state.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::event::Event;
use crate::health::SourceHealth;
use crate::metrics;
use crate::retry::RetryConfig;
use crate::retry::{self, Gave, Retryable, Verdict};
use crate::sinks::{SinkError, SinkSlot};
use crate::sources::config::SourceConfig;
use crate::sources::pace::Paced;
use crate::sources::{Page, PageRequest, Paging, Source, SourceError, Traits};
use crate::state::{Commit, Queued, State, StateError};
use crate::timefmt::{self, dur_nanos, floor_to, Nanos, NANOS_PER_SEC};

mod commit;
mod dedupe;
pub mod keyer;
mod paging;
pub mod planner;

use dedupe::Lookup;
use keyer::Keyer;
use planner::{first_window, Planner, WindowStats};

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
    /// What is known of the events delivered, to tell new ones from old.
    seen: Seen,
    /// A page's turn: its credential's pace, its read permit and its room in the queues.
    turn: PageTurn,
    /// Set once an answer held entries at exactly the end of the range asked for: from then on
    /// ranges are asked for with an end one millisecond short, which such an API includes.
    inclusive_end: bool,
    /// Set once an API was seen not sorting a page by time (logged once).
    unordered_noted: bool,
    /// Progress and failures, for `/healthz` and `/readyz`.
    health: SourceHealth,
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
    /// The lease this source is polled under (replicas sharing a PostgreSQL state): every
    /// commit names it, and the database refuses one whose lease moved.
    lease: Option<crate::lease::Lease>,
}

/// What the poller knows of the events it delivered, to tell a page's new events from old.
struct Seen {
    /// Keys events; counts occurrences of a content within the window being read.
    keyer: Keyer,
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

/// A page's turn: the pace of its credential, then one of the agent's read permits and room in
/// its sinks' queues, held until it is committed.
struct PageTurn {
    /// The pace of the source's credential: a page's turn is taken before its read permit.
    paced: Option<Paced>,
    /// One of the agent's [`READS_IN_FLIGHT`] permits, held from the request for a page until
    /// that page is committed (or the poll ends).
    read: Option<tokio::sync::SemaphorePermit<'static>>,
    /// Room reserved in the queue of each of its sinks for the page being read (released at its
    /// commit, or when the poll ends).
    reserved: Vec<Reserved>,
    /// The bytes of this source's last queued page: what the next one is reckoned to need.
    page_bytes: u64,
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
            seen: Seen {
                keyer: Keyer::default(),
                max_event: None,
                lookup: Lookup::default(),
                skew: 0,
            },
            turn: PageTurn {
                paced: None,
                read: None,
                reserved: Vec::new(),
                page_bytes: 64 << 10,
            },
            inclusive_end: false,
            unordered_noted: false,
            health,
            offset: clock::Offset::default(),
            pending_cursor: None,
            until: None,
            last: PollSummary::default(),
            lease: None,
        }
    }

    /// What the source's requests met that the state does not hold yet.
    fn unsaved_requests(&self) -> crate::state::Requests {
        self.turn
            .paced
            .as_ref()
            .map(Paced::unsaved)
            .unwrap_or_default()
    }

    /// `r` is committed.
    fn saved_requests(&self, r: crate::state::Requests) {
        if let Some(p) = &self.turn.paced {
            p.saved(r);
        }
    }

    /// Takes each page's turn at its credential's pace (the one its source's HTTP client was
    /// given) before one of the agent's read permits: a source waiting for its credential holds
    /// no permit that sources of other credentials need.
    pub fn paced(mut self, paced: Paced) -> Poller {
        self.turn.paced = Some(paced);
        self
    }

    /// Polls under `lease` (replicas sharing a PostgreSQL state, [`crate::replicas`]).
    pub fn leased(mut self, lease: crate::lease::Lease) -> Poller {
        self.lease = Some(lease);
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
        self.turn.read = None;
        self.turn.reserved.clear();
        if let Some(p) = &self.turn.paced {
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
        self.seen.max_event = row.as_ref().and_then(|r| r.max_event);
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
