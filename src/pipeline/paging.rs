//! Paging: asking for the pages of a sub-window and cutting them so that no time unit is taken
//! from two pages of one read (see the module doc of [`super`]): [`Spread`] says where an
//! answer's entries fall, [`Cut`] what to do with a full one; the poller's reading methods
//! (`read_window`, `read_ranges`, `read_unit`, `fetch`) follow them.

use super::*;

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
    /// Reads the sub-window `[start, end)`.
    pub(super) async fn read_window(
        &mut self,
        start: Nanos,
        end: Nanos,
        summary: &mut PollSummary,
    ) -> Result<WindowStats, PollError> {
        self.seen.lookup = Lookup {
            before: self.seen.max_event,
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
                self.seen.keyer.clear();
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
            self.seen.keyer.clear();
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
        self.seen.keyer.clear();
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
        if self.turn.read.is_some() {
            return Ok(());
        }
        let started = Instant::now();
        let page = self.turn.page_bytes;
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
        self.turn.reserved = self
            .sinks
            .iter()
            .map(|slot| Reserved::new(slot.clone(), page))
            .collect();
        if let Some(paced) = &self.turn.paced {
            tokio::select! {
                _ = beating(&self.health, paced.reserve()) => {}
                _ = self.cancel.cancelled() => return Err(PollError::Cancelled),
            }
        }
        let permit = tokio::select! {
            p = beating(&self.health, READS.acquire()) => p.expect("the reads semaphore is never closed"),
            _ = self.cancel.cancelled() => return Err(PollError::Cancelled),
        };
        self.turn.read = Some(permit);
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
}
