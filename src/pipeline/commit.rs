//! The commit of a page: its new events go to each sink of the source — written through to an
//! idle local sink, into the queue of every other — and, in one SQLite transaction, their keys,
//! the queued records, the written-through sinks' positions and the cursor.

use super::*;

impl Poller {
    /// Keys a page, drops what is not new, and commits the rest into every sink of the source.
    pub(super) async fn queue_and_commit(
        &mut self,
        events: Vec<Event>,
        keep: Option<Vec<bool>>,
        start: Nanos,
        summary: &mut PollSummary,
    ) -> Result<(), PollError> {
        // The page's place among the reads, and its room in the queues, are given back once it
        // is committed (or not): after its real bytes are added.
        let _read = self.turn.read.take();
        let _reserved = std::mem::take(&mut self.turn.reserved);
        let fresh = self.new_in_page(events, keep, start).await?;
        self.commit_page(fresh, summary).await
    }

    /// The page dedupe ([`dedupe`]): keys the events `keep` keeps, asks the state about those
    /// that may be known, and gives the new ones, oldest first.
    async fn new_in_page(
        &mut self,
        mut events: Vec<Event>,
        keep: Option<Vec<bool>>,
        start: Nanos,
    ) -> Result<dedupe::Fresh, PollError> {
        dedupe::keep_marked(&mut events, keep);
        let keys = self
            .seen
            .keyer
            .key(self.traits.identity, &mut events)
            .map_err(|e| SourceError::Body(format!("event is not JSON: {e}")))?;
        let (asked, owners) = dedupe::lookups(&events, &keys, &self.seen.lookup);
        let found = if asked.is_empty() {
            Vec::new()
        } else {
            self.state.known(&self.cfg.name, asked).await?
        };
        let known = dedupe::known(events.len(), owners, found);
        let fresh = dedupe::fresh(events, &keys.keys, &known, self.traits.identity);
        // Keys of entries the vendor placed before their window are kept that much longer (the
        // poll's end says how far off they were).
        self.seen.skew = dedupe::skew(&fresh.events, start, self.seen.skew);
        Ok(fresh)
    }

    /// Commits a page's new events: written through to each idle local sink, queued for every
    /// other, with their keys, the sinks' positions and the pending cursor, in one transaction.
    async fn commit_page(
        &mut self,
        fresh: dedupe::Fresh,
        summary: &mut PollSummary,
    ) -> Result<(), PollError> {
        let dedupe::Fresh {
            events: fresh,
            keys: fresh_keys,
            duplicates,
        } = fresh;
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
            self.turn.page_bytes = records.len() as u64;
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
            // Leases are not wired to the pollers yet (docs/replicas.md).
            lease: None,
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
        self.seen.max_event = self.seen.max_event.max(newest);
        if let (Some(lo), Some(hi)) = (oldest, newest) {
            self.seen.lookup.delivered(lo, hi);
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
    pub(super) fn prune_before(&self, cursor: Nanos) -> Nanos {
        cursor
            .saturating_sub(dur_nanos(self.cfg.overlap))
            .saturating_sub(first_window(&self.cfg, &self.traits))
            .saturating_sub(self.seen.skew)
    }

    /// Commits a cursor that windows which delivered nothing have reached.
    pub(super) async fn flush_cursor(&mut self) -> Result<(), PollError> {
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
