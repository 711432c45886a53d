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
        mut fresh: dedupe::Fresh,
        summary: &mut PollSummary,
    ) -> Result<(), PollError> {
        // A page that holds nothing new and nothing known costs no commit (and takes no sink):
        // an empty window's cursor waits for the next commit (or the end of the poll).
        if fresh.events.is_empty() && fresh.duplicates == 0 {
            return Ok(());
        }
        let sinks = self.sinks.clone();
        let mut placed = self.place(&sinks, &fresh.events).await?;
        // Written once for every sink that queues it, shared.
        let records = if placed.queue_for.is_empty() {
            bytes::Bytes::new()
        } else {
            bytes::Bytes::from(crate::event::queued::encode(&fresh.events))
        };
        if !records.is_empty() {
            self.turn.page_bytes = records.len() as u64;
        }
        let commit = self.page_commit(&mut fresh, &mut placed, &records);
        let (cursor, requests) = (commit.cursor, commit.requests);
        if let Err(e) = self.state.commit(commit).await {
            placed.rollback();
            return Err(e.into());
        }
        self.saved_requests(requests);
        metrics::state_commit(&self.cfg.name);
        placed.committed(
            &self.cfg.name,
            fresh.events.len() as u64,
            records.len() as u64,
        );
        self.committed(&fresh, cursor, summary);
        Ok(())
    }

    /// Where a page goes. A local sink (file, stdout) that is idle with nothing queued takes it
    /// now, its position going into the page's commit (write-through: no queue row, no second
    /// pass). Holding its lock from the write through the commit keeps its commits in the order
    /// of its writes, and an empty queue means nothing older waits for it. Any other sink, or
    /// one whose write fails, gets the page in its queue, in the same commit.
    async fn place<'s>(
        &self,
        sinks: &'s [Arc<SinkSlot>],
        events: &[Event],
    ) -> Result<Placed<'s>, PollError> {
        let mut placed = Placed::default();
        for slot in sinks.iter().filter(|_| !events.is_empty()) {
            let idle = slot.write_through() && slot.queue.level().events == 0;
            let Some(mut g) = idle.then(|| slot.sink.try_lock().ok()).flatten() else {
                placed.queue_for.push(slot);
                continue;
            };
            match beating(&self.health, g.deliver(events, &self.cancel)).await {
                Ok(()) => {
                    if let Some(p) = g.position() {
                        placed.positions.push((slot.config.name.clone(), p));
                    }
                    placed.through.push((slot, g));
                }
                Err(e) => {
                    g.rollback();
                    if let SinkError::Cancelled { .. } = e {
                        placed.rollback();
                        return Err(PollError::Cancelled);
                    }
                    // Its task retries it from the queue, and says why.
                    tracing::debug!(sink = %slot.config.name, error = %e,
                        "the sink could not take a page directly; it goes into its queue");
                    placed.queue_for.push(slot);
                }
            }
        }
        Ok(placed)
    }

    /// The page's commit: its keys (taken out of `fresh`), the records queued for `placed`'s
    /// queueing sinks, the written-through sinks' positions and the pending cursor.
    fn page_commit(
        &self,
        fresh: &mut dedupe::Fresh,
        placed: &mut Placed<'_>,
        records: &bytes::Bytes,
    ) -> Commit {
        let n = fresh.events.len() as u32;
        let queued = placed
            .queue_for
            .iter()
            .map(|slot| Queued {
                sink: slot.config.name.clone(),
                events: n,
                records: records.clone(),
            })
            .collect();
        let cursor = self.pending_cursor;
        Commit {
            source: self.cfg.name.clone(),
            kind: self.cfg.kind.as_str(),
            delivered: n as u64,
            duplicates: fresh.duplicates,
            keys: std::mem::take(&mut fresh.keys),
            queued,
            positions: std::mem::take(&mut placed.positions),
            cursor,
            prune_before: cursor.map(|c| self.prune_before(c)),
            max_event: fresh.events.iter().map(|e| e.time).max(),
            requests: self.unsaved_requests(),
            lease: self.lease.clone(),
        }
    }

    /// After the page's commit: the cursor it carried is no longer pending, its keys' span is
    /// known to the lookup, and progress is counted.
    fn committed(&mut self, fresh: &dedupe::Fresh, cursor: Option<Nanos>, s: &mut PollSummary) {
        if self.pending_cursor == cursor {
            self.pending_cursor = None;
        }
        let newest = fresh.events.iter().map(|e| e.time).max();
        let oldest = fresh.events.iter().map(|e| e.time).min();
        self.seen.max_event = self.seen.max_event.max(newest);
        if let (Some(lo), Some(hi)) = (oldest, newest) {
            self.seen.lookup.delivered(lo, hi);
        }
        self.health.progress();
        let n = fresh.events.len() as u64;
        s.delivered += n;
        s.duplicates += fresh.duplicates;
        let sinks = self.sinks.iter().map(|s| s.config.name.as_str());
        metrics::queued(&self.cfg.name, sinks, n, fresh.duplicates);
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
            lease: self.lease.clone(),
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

/// Where a page went ([`Poller::place`]): the local sinks that wrote it (locked until its
/// commit), their positions, and the sinks whose queues take it.
#[derive(Default)]
struct Placed<'s> {
    through: Vec<(
        &'s SinkSlot,
        tokio::sync::MutexGuard<'s, Box<dyn crate::sinks::Sink>>,
    )>,
    positions: Vec<(String, crate::state::SinkPosition)>,
    queue_for: Vec<&'s Arc<SinkSlot>>,
}

impl Placed<'_> {
    /// The commit failed (or was cancelled): the written-through sinks take back their writes.
    fn rollback(&mut self) {
        for (_, g) in self.through.iter_mut() {
            g.rollback();
        }
    }

    /// The commit held: the written-through sinks keep their writes and count them, the
    /// queues count what they were given.
    fn committed(self, source: &str, events: u64, bytes: u64) {
        for (slot, mut g) in self.through {
            g.committed();
            drop(g);
            slot.health.delivered();
            metrics::sink_batch(&slot.config.name, "delivered");
            metrics::sink_delivered(&slot.config.name);
            metrics::delivered(source, &slot.config.name, events);
        }
        let at = timefmt::now();
        for slot in self.queue_for {
            slot.queue.added(events, bytes, at);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The commit of a page on its own: a poller over a real SQLite state and a real file sink,
    //! fed pages directly (no vendor).
    use super::*;
    use crate::event::Field;
    use crate::state::State;

    struct Rig {
        dir: tempfile::TempDir,
        poller: Poller,
        state: State,
        sink: Arc<SinkSlot>,
    }

    impl Rig {
        fn out(&self) -> Vec<String> {
            std::fs::read_to_string(self.dir.path().join("out.ndjson"))
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect()
        }
    }

    async fn rig() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auditship.toml");
        std::fs::write(
            &path,
            "[agent]\nstate_path = \"state.db\"\n\
             [[sources]]\nname = \"air\"\nkind = \"wasabi_air\"\nurl = \"http://127.0.0.1:9\"\napi_key = \"k\"\n\
             [[sinks]]\nname = \"out\"\nkind = \"file\"\npath = \"out.ndjson\"\nfsync = false\n",
        )
        .unwrap();
        let cfg = crate::config::Config::load(&path).unwrap();
        let state = State::open(&cfg.agent.state_path).unwrap();
        let sink = crate::sinks::open(&cfg.sinks[0], &state, &cfg.agent.retry, false, None)
            .await
            .unwrap();
        let src = cfg.sources[0].clone();
        let http = crate::sources::Http::new(std::time::Duration::from_secs(1)).unwrap();
        let health = crate::health::Health::default();
        let poller = Poller::new(
            src.clone(),
            crate::sources::build(&src, http),
            state.clone(),
            vec![sink.clone()],
            cfg.agent.retry.clone(),
            CancellationToken::new(),
            health.register("air"),
        );
        Rig {
            dir,
            poller,
            state,
            sink,
        }
    }

    /// A page of Wasabi AiR events with these ids, a second apart.
    fn page(ids: &[&str]) -> Vec<Event> {
        let source: Arc<str> = Arc::from("air");
        ids.iter()
            .enumerate()
            .map(|(i, id)| {
                let raw = format!(r#"{{"id":"{id}","action_key":"login"}}"#);
                let text = Arc::new(raw.clone());
                let mut e = Event::new(
                    &source,
                    "wasabi_air",
                    "wasabi",
                    1_700_000_000_000_000_000 + i as i64 * 1_000_000_000,
                    &text,
                    &text,
                );
                e.set(Field::Id, Some(id));
                e
            })
            .collect()
    }

    async fn commit(r: &mut Rig, ids: &[&str]) -> Result<PollSummary, PollError> {
        let mut s = PollSummary::default();
        r.poller
            .queue_and_commit(page(ids), None, 1_700_000_000_000_000_000, &mut s)
            .await
            .map(|_| s)
    }

    #[tokio::test]
    async fn an_idle_local_sink_takes_the_page_and_its_position_goes_with_the_commit() {
        let mut r = rig().await;
        let s = commit(&mut r, &["a", "b", "c"]).await.unwrap();
        assert_eq!(s.delivered, 3);
        assert_eq!(r.out().len(), 3);
        let len = std::fs::metadata(r.dir.path().join("out.ndjson"))
            .unwrap()
            .len();
        let pos = r.state.sink_position("out").await.unwrap().unwrap();
        assert_eq!(
            pos.position, len,
            "the position committed is the file's end"
        );
        let totals = r.state.queue_totals().await.unwrap();
        assert!(totals.iter().all(|t| t.events == 0), "{totals:?}");
        let row = r.state.source("air").await.unwrap().unwrap();
        assert_eq!(row.delivered, 3);
    }

    #[tokio::test]
    async fn a_page_read_again_commits_only_what_is_new() {
        let mut r = rig().await;
        commit(&mut r, &["a", "b"]).await.unwrap();
        let s = commit(&mut r, &["a", "b", "c"]).await.unwrap();
        assert_eq!(s.delivered, 1);
        assert_eq!(r.out().len(), 3);
        let row = r.state.source("air").await.unwrap().unwrap();
        assert_eq!((row.delivered, row.duplicates), (3, 2));
        // Nothing new and nothing known: no commit at all (the counters do not move).
        let s = commit(&mut r, &[]).await.unwrap();
        assert_eq!(s.delivered, 0);
        let again = r.state.source("air").await.unwrap().unwrap();
        assert_eq!((again.delivered, again.duplicates), (3, 2));
    }

    #[tokio::test]
    async fn a_sink_with_events_queued_gets_the_page_in_its_queue_in_the_same_commit() {
        let mut r = rig().await;
        // Something older waits in its queue: writing past it would put this page first.
        r.sink.queue.added(1, 10, 1);
        commit(&mut r, &["a", "b"]).await.unwrap();
        assert!(r.out().is_empty(), "written past an older queued page");
        let totals = r.state.queue_totals().await.unwrap();
        let out = totals.iter().find(|t| t.sink == "out").unwrap();
        assert_eq!(out.events, 2);
        let row = r.state.source("air").await.unwrap().unwrap();
        assert_eq!(row.delivered, 2);
    }

    #[tokio::test]
    async fn a_commit_that_fails_takes_back_what_the_sink_wrote() {
        let mut r = rig().await;
        commit(&mut r, &["a"]).await.unwrap();
        let before = std::fs::read(r.dir.path().join("out.ndjson")).unwrap();
        // The state file deleted under the agent: the next commit fails (fatal), and the page
        // the file sink wrote for it is cut off again.
        std::fs::remove_file(r.dir.path().join("state.db")).unwrap();
        let e = commit(&mut r, &["b", "c"]).await.unwrap_err();
        assert!(matches!(e, PollError::State(ref s) if s.is_fatal()), "{e}");
        assert_eq!(
            std::fs::read(r.dir.path().join("out.ndjson")).unwrap(),
            before,
            "the uncommitted page stayed in the file"
        );
    }
}
