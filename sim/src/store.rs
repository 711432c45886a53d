//! A time-sorted, pre-rendered event vector with visibility-aware selection and paging.
//!
//! Every emulator keeps its events in one [`Store`]: times in nanoseconds since the Unix epoch,
//! sorted ascending (ties in generation order), each event's JSON rendered once. A query is a
//! time window plus an optional filter; [`Store::select`] turns it into a [`Selection`] whose size
//! and pages cost O(log n + recently late events) when there is no filter, so deep offsets over a
//! million events stay cheap.

use std::ops::Bound;

/// One generated event before it is sorted into a [`Store`].
pub(crate) struct Raw<M> {
    /// The event's true instant, ns since the Unix epoch.
    pub time: i64,
    /// When the event becomes visible through the API (≥ `time`).
    pub visible_at: i64,
    /// Generation order, the tie-break among equal times.
    pub seq: u32,
    /// The event exactly as the API renders it.
    pub json: Box<str>,
    /// Vendor-specific fields that filters look at.
    pub meta: M,
}

/// All events of one vendor, sorted by time.
pub(crate) struct Store<M> {
    /// Event instants, ns since the Unix epoch, ascending.
    times: Vec<i64>,
    /// Visibility instants, parallel to `times`.
    visible_at: Vec<i64>,
    /// Pre-rendered JSON, parallel to `times`.
    json: Vec<Box<str>>,
    /// Filter fields, parallel to `times`.
    meta: Vec<M>,
    /// Indices (ascending) of the events whose `visible_at` is after their `time`.
    late: Vec<u32>,
    /// The largest `visible_at - time` of any event.
    max_delay: i64,
}

/// The events of a window that are visible now and pass the filter.
pub(crate) enum Selection {
    /// Every index in `lo..hi` except those in `invisible` (ascending).
    Range {
        /// First index of the window.
        lo: usize,
        /// One past the last index of the window that could be visible.
        hi: usize,
        /// Indices in `lo..hi` that are not visible yet, ascending.
        invisible: Vec<usize>,
    },
    /// An explicit ascending list of indices (used when a filter applies).
    List(Vec<u32>),
}

impl Selection {
    /// How many events the selection holds.
    pub fn count(&self) -> usize {
        match self {
            Selection::Range { lo, hi, invisible } => hi - lo - invisible.len(),
            Selection::List(v) => v.len(),
        }
    }
}

/// A vendor's events as the shared endpoints see them, whatever its metadata.
pub(crate) trait Events: Sync {
    /// Number of events, visible or not.
    fn count(&self) -> usize;
    /// Visible events with time in `[from, to)`, ascending, as rendered.
    fn window(&self, from: std::ops::Bound<i64>, to: std::ops::Bound<i64>, now: i64) -> Vec<&str>;
}

impl<M: Sync> Events for Store<M> {
    fn count(&self) -> usize {
        self.len()
    }
    fn window(&self, from: std::ops::Bound<i64>, to: std::ops::Bound<i64>, now: i64) -> Vec<&str> {
        let sel = self.select(from, to, now, None);
        self.all(&sel, now)
            .into_iter()
            .map(|i| self.json(i))
            .collect()
    }
}

impl<M> Store<M> {
    /// Sorts raw events by (time, generation order) and indexes them.
    pub fn new(mut raw: Vec<Raw<M>>) -> Self {
        raw.sort_unstable_by_key(|r| (r.time, r.seq));
        let n = raw.len();
        let mut s = Store {
            times: Vec::with_capacity(n),
            visible_at: Vec::with_capacity(n),
            json: Vec::with_capacity(n),
            meta: Vec::with_capacity(n),
            late: Vec::new(),
            max_delay: 0,
        };
        for (i, r) in raw.into_iter().enumerate() {
            if r.visible_at > r.time {
                s.late.push(i as u32);
                s.max_delay = s.max_delay.max(r.visible_at - r.time);
            }
            s.times.push(r.time);
            s.visible_at.push(r.visible_at.max(r.time));
            s.json.push(r.json);
            s.meta.push(r.meta);
        }
        s
    }

    /// Number of events, visible or not.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// The pre-rendered JSON of event `i`.
    pub fn json(&self, i: usize) -> &str {
        &self.json[i]
    }

    /// Whether event `i` is visible at `now`.
    pub fn visible(&self, i: usize, now: i64) -> bool {
        self.visible_at[i] <= now
    }

    /// The index range of events whose time lies within the bounds.
    fn index_range(&self, from: Bound<i64>, to: Bound<i64>) -> (usize, usize) {
        let t = &self.times;
        let lo = match from {
            Bound::Included(x) => t.partition_point(|&v| v < x),
            Bound::Excluded(x) => t.partition_point(|&v| v <= x),
            Bound::Unbounded => 0,
        };
        let hi = match to {
            Bound::Included(x) => t.partition_point(|&v| v <= x),
            Bound::Excluded(x) => t.partition_point(|&v| v < x),
            Bound::Unbounded => t.len(),
        };
        (lo, hi.max(lo))
    }

    /// The events with time within the bounds that are visible at `now` and pass `filter`.
    pub fn select(
        &self,
        from: Bound<i64>,
        to: Bound<i64>,
        now: i64,
        filter: Option<&dyn Fn(&M) -> bool>,
    ) -> Selection {
        let (lo, hi) = self.index_range(from, to);
        // Events after `now` cannot be visible: they form a suffix.
        let hi = hi.min(self.times.partition_point(|&v| v <= now)).max(lo);
        if let Some(f) = filter {
            let list = (lo..hi)
                .filter(|&i| self.visible_at[i] <= now && f(&self.meta[i]))
                .map(|i| i as u32)
                .collect();
            return Selection::List(list);
        }
        // Only late events newer than `now - max_delay` can still be hidden.
        let recent = self
            .times
            .partition_point(|&v| v <= now.saturating_sub(self.max_delay));
        let first = lo.max(recent);
        let a = self.late.partition_point(|&i| (i as usize) < first);
        let b = self.late.partition_point(|&i| (i as usize) < hi);
        let invisible = self.late[a.min(b)..b]
            .iter()
            .map(|&i| i as usize)
            .filter(|&i| self.visible_at[i] > now)
            .collect();
        Selection::Range { lo, hi, invisible }
    }

    /// The index of the `k`-th (from 0, ascending) event of a range selection.
    fn nth(lo: usize, invisible: &[usize], k: usize) -> usize {
        let mut idx = lo + k;
        for &inv in invisible {
            if inv <= idx {
                idx += 1;
            } else {
                break;
            }
        }
        idx
    }

    /// Indices of one page, oldest first: `limit` events after skipping `offset`.
    pub fn page_asc(&self, sel: &Selection, offset: usize, limit: usize, now: i64) -> Vec<usize> {
        if offset >= sel.count() || limit == 0 {
            return Vec::new();
        }
        match sel {
            Selection::Range { lo, hi, invisible } => {
                let mut out = Vec::with_capacity(limit.min(sel.count() - offset));
                let mut i = Self::nth(*lo, invisible, offset);
                while i < *hi && out.len() < limit {
                    if self.visible(i, now) {
                        out.push(i);
                    }
                    i += 1;
                }
                out
            }
            Selection::List(v) => v[offset..(offset.saturating_add(limit)).min(v.len())]
                .iter()
                .map(|&i| i as usize)
                .collect(),
        }
    }

    /// Indices of one page, newest first: `limit` events after skipping the `offset` newest.
    /// Events with equal times come in the reverse of their ascending order, so the order is
    /// stable from one request to the next.
    pub fn page_desc(&self, sel: &Selection, offset: usize, limit: usize, now: i64) -> Vec<usize> {
        let count = sel.count();
        if offset >= count || limit == 0 {
            return Vec::new();
        }
        let rank = count - 1 - offset;
        match sel {
            Selection::Range { lo, invisible, .. } => {
                let mut out = Vec::with_capacity(limit.min(rank + 1));
                let mut i = Self::nth(*lo, invisible, rank) as isize;
                while i >= *lo as isize && out.len() < limit {
                    if self.visible(i as usize, now) {
                        out.push(i as usize);
                    }
                    i -= 1;
                }
                out
            }
            Selection::List(v) => v[..=rank]
                .iter()
                .rev()
                .take(limit)
                .map(|&i| i as usize)
                .collect(),
        }
    }

    /// Every index of a selection, ascending.
    pub fn all(&self, sel: &Selection, now: i64) -> Vec<usize> {
        self.page_asc(sel, 0, usize::MAX, now)
    }

    /// Indices of one page as the API answers it: newest or oldest first after skipping
    /// `offset`, unless `answers` says ties are shuffled (anew for every call) or pages are not
    /// sorted at all (a fixed order by a hash of the index, so offsets stay stable).
    pub fn page(
        &self,
        sel: &Selection,
        offset: usize,
        limit: usize,
        now: i64,
        newest_first: bool,
        answers: &crate::Answers,
    ) -> Vec<usize> {
        if !answers.shuffle_ties && !answers.unsorted {
            return if newest_first {
                self.page_desc(sel, offset, limit, now)
            } else {
                self.page_asc(sel, offset, limit, now)
            };
        }
        let mut all = self.all(sel, now);
        if newest_first {
            all.reverse();
        }
        if answers.unsorted {
            // splitmix64 of the index: a fixed order that has nothing to do with time.
            all.sort_by_key(|&i| {
                let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            });
        }
        if answers.shuffle_ties {
            let mut rng = fastrand::Rng::new();
            let mut run = 0;
            while run < all.len() {
                let t = self.times[all[run]];
                let len = all[run..]
                    .iter()
                    .take_while(|&&i| self.times[i] == t)
                    .count();
                rng.shuffle(&mut all[run..run + len]);
                run += len;
            }
        }
        all.into_iter().skip(offset).take(limit).collect()
    }

    /// Renders events as a JSON array: `[` + the events joined by `,` + `]`.
    pub fn render_array(&self, idx: &[usize]) -> String {
        let mut out = String::new();
        self.render_array_into(&mut out, idx);
        out
    }

    /// Appends events as a JSON array to `out`.
    pub fn render_array_into(&self, out: &mut String, idx: &[usize]) {
        let len: usize = idx.iter().map(|&i| self.json[i].len() + 1).sum();
        out.reserve(len + 2);
        out.push('[');
        for (n, &i) in idx.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            out.push_str(&self.json[i]);
        }
        out.push(']');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events at times 0..n (ns), event i visible at `vis(i)`, meta = i.
    fn store(n: i64, vis: impl Fn(i64) -> i64) -> Store<i64> {
        let raw = (0..n)
            .rev()
            .map(|t| Raw {
                time: t * 10,
                visible_at: vis(t * 10),
                seq: t as u32,
                json: t.to_string().into_boxed_str(),
                meta: t,
            })
            .collect();
        Store::new(raw)
    }

    /// The slow, obviously right answer: visible and filtered indices in the bounds.
    fn naive(
        s: &Store<i64>,
        from: Bound<i64>,
        to: Bound<i64>,
        now: i64,
        f: &dyn Fn(&i64) -> bool,
    ) -> Vec<usize> {
        (0..s.len())
            .filter(|&i| {
                let t = s.times[i];
                let ok_from = match from {
                    Bound::Included(x) => t >= x,
                    Bound::Excluded(x) => t > x,
                    Bound::Unbounded => true,
                };
                let ok_to = match to {
                    Bound::Included(x) => t <= x,
                    Bound::Excluded(x) => t < x,
                    Bound::Unbounded => true,
                };
                ok_from && ok_to && s.visible(i, now) && f(&s.meta[i])
            })
            .collect()
    }

    #[test]
    fn pages_match_a_naive_scan_with_late_and_future_events() {
        // Every third event is late by up to 95 ns; times run 0..1000.
        let s = store(100, |t| if t % 30 == 0 { t + 95 - (t % 7) } else { t });
        for now in [-5, 0, 333, 500, 990, 2000] {
            for (from, to) in [
                (Bound::Unbounded, Bound::Unbounded),
                (Bound::Included(100), Bound::Excluded(800)),
                (Bound::Excluded(100), Bound::Included(800)),
                (Bound::Included(805), Bound::Excluded(100)),
            ] {
                let want = naive(&s, from, to, now, &|_| true);
                let sel = s.select(from, to, now, None);
                assert_eq!(sel.count(), want.len(), "now {now}");
                assert_eq!(s.all(&sel, now), want);
                for limit in [1, 3, 7, 1000] {
                    let mut asc = Vec::new();
                    let mut desc = Vec::new();
                    let mut off = 0;
                    loop {
                        let a = s.page_asc(&sel, off, limit, now);
                        let d = s.page_desc(&sel, off, limit, now);
                        assert_eq!(a.len(), d.len());
                        if a.is_empty() {
                            break;
                        }
                        off += a.len();
                        asc.extend(a);
                        desc.extend(d);
                    }
                    desc.reverse();
                    assert_eq!(asc, want);
                    assert_eq!(desc, want);
                }
                let odd = |m: &i64| m % 2 == 1;
                let want = naive(&s, from, to, now, &odd);
                let sel = s.select(from, to, now, Some(&odd));
                assert_eq!(s.all(&sel, now), want);
                let mut d = s.page_desc(&sel, 0, usize::MAX, now);
                d.reverse();
                assert_eq!(d, want);
            }
        }
    }

    #[test]
    fn shuffled_and_unsorted_pages_hold_the_same_events() {
        // Ten distinct times, each shared by five events.
        let raw = (0..50)
            .map(|i| Raw {
                time: (i / 5) * 10,
                visible_at: (i / 5) * 10,
                seq: i as u32,
                json: i.to_string().into_boxed_str(),
                meta: i,
            })
            .collect();
        let s = Store::new(raw);
        let sel = s.select(Bound::Unbounded, Bound::Unbounded, 1000, None);
        let want: Vec<usize> = (0..50).collect();
        for answers in [
            crate::Answers {
                shuffle_ties: true,
                ..Default::default()
            },
            crate::Answers {
                unsorted: true,
                ..Default::default()
            },
        ] {
            for newest_first in [true, false] {
                let page = s.page(&sel, 0, usize::MAX, 1000, newest_first, &answers);
                let mut sorted = page.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, want);
                if answers.shuffle_ties {
                    // Still sorted by time, in the direction asked for.
                    let times: Vec<i64> = page.iter().map(|&i| s.times[i]).collect();
                    let mut by_time = times.clone();
                    by_time.sort_unstable();
                    if newest_first {
                        by_time.reverse();
                    }
                    assert_eq!(times, by_time);
                } else {
                    // A fixed order, not by time.
                    assert_eq!(
                        page,
                        s.page(&sel, 0, usize::MAX, 1000, newest_first, &answers)
                    );
                    let times: Vec<i64> = page.iter().map(|&i| s.times[i]).collect();
                    assert!(times.windows(2).any(|w| w[0] < w[1]));
                    assert!(times.windows(2).any(|w| w[0] > w[1]));
                }
            }
        }
        // Shuffled ties differ from one call to the next (50 events in runs of five: the chance
        // that 20 calls agree is nil).
        let shuffled = crate::Answers {
            shuffle_ties: true,
            ..Default::default()
        };
        let first = s.page(&sel, 0, usize::MAX, 1000, true, &shuffled);
        assert!((0..20).any(|_| s.page(&sel, 0, usize::MAX, 1000, true, &shuffled) != first));
    }

    #[test]
    fn renders_a_json_array() {
        let s = store(3, |t| t);
        assert_eq!(s.render_array(&[0, 2]), "[0,2]");
        assert_eq!(s.render_array(&[]), "[]");
    }
}
