//! The window plan: where a poll begins and ends, how long each sub-window is and how that
//! length follows the data — pure arithmetic, which the poller follows and `tests/properties.rs`
//! checks against random polls.

use crate::sources::config::SourceConfig;
use crate::sources::{Paging, Traits};
use crate::timefmt::{dur_nanos, floor_to, Nanos};

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
    pub(super) fn of(cfg: &SourceConfig, traits: &Traits) -> Planner {
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

/// The first sub-window's length: the configured `window`, on whole time units of the vendor.
pub(super) fn first_window(cfg: &SourceConfig, traits: &Traits) -> Nanos {
    floor_to(dur_nanos(cfg.window), traits.time_unit).max(traits.time_unit)
}

/// The longest a sub-window grows to: about 34 years, more than any audit trail holds, and far
/// from overflowing a time.
const MAX_WINDOW: Nanos = 1 << 60;
