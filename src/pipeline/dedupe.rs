//! Page dedupe: which events of a keyed page are new. The state is asked only about events whose
//! time can have a key stored ([`Lookup`]), by their key and by the key an earlier release gave
//! them ([`lookups`]); what it knows, and vendor ids repeated within the page, are dropped, and
//! the rest go out oldest first with their keys ([`fresh`]).

use std::collections::HashSet;

use super::keyer::PageKeys;
use crate::event::Event;
use crate::keys::{self, Identity, Key};
use crate::timefmt::Nanos;

/// The event times whose keys may already be stored (see `Poller::lookup`).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Lookup {
    /// The newest event time delivered before the sub-window.
    pub before: Option<Nanos>,
    /// The oldest and newest event times delivered since it began.
    pub since: Option<(Nanos, Nanos)>,
}

impl Lookup {
    pub fn may_be_known(&self, t: Nanos) -> bool {
        self.before.is_some_and(|m| t <= m) || self.since.is_some_and(|(lo, hi)| lo <= t && t <= hi)
    }

    pub fn delivered(&mut self, lo: Nanos, hi: Nanos) {
        self.since = Some(match self.since {
            None => (lo, hi),
            Some((a, b)) => (a.min(lo), b.max(hi)),
        });
    }
}

/// Drops the events that `keep` (when there is one) marks false: in place, in order.
pub(super) fn keep_marked(events: &mut Vec<Event>, keep: Option<Vec<bool>>) {
    if let Some(keep) = keep {
        let mut i = 0;
        events.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }
}

/// What to ask the state: the key and time of every event that may be known, then the keys an
/// earlier release gave some of them (so an upgrade delivers nothing twice); and for each, the
/// index of its event.
pub(super) fn lookups(
    events: &[Event],
    keys: &PageKeys,
    lookup: &Lookup,
) -> (Vec<(Key, Nanos)>, Vec<usize>) {
    let mut owners: Vec<usize> = (0..events.len())
        .filter(|i| lookup.may_be_known(events[*i].time))
        .collect();
    let mut asked: Vec<(Key, Nanos)> = owners
        .iter()
        .map(|i| (keys.keys[*i], events[*i].time))
        .collect();
    if owners.is_empty() {
        return (asked, owners);
    }
    for (i, k) in &keys.legacy {
        if lookup.may_be_known(events[*i].time) {
            asked.push((*k, events[*i].time));
            owners.push(*i);
        }
    }
    (asked, owners)
}

/// Which of `n` events are known, from the state's answer `found` to [`lookups`]' questions.
pub(super) fn known(
    n: usize,
    owners: Vec<usize>,
    found: impl IntoIterator<Item = bool>,
) -> Vec<bool> {
    let mut known = vec![false; n];
    for (i, k) in owners.into_iter().zip(found) {
        known[i] |= k;
    }
    known
}

/// The new events of a page, oldest first, with their keys and times in the same order.
#[derive(Debug)]
pub(super) struct Fresh {
    pub events: Vec<Event>,
    pub keys: Vec<(Key, Nanos)>,
    /// Events dropped: known to the state, or a vendor id already in the page.
    pub duplicates: u64,
}

/// Drops the events the state knows and, for a vendor-id source, an id repeated within the page
/// (offsets shifted by a late insert; content keys cannot repeat, occurrence numbers tell twins
/// apart); sorts the rest oldest first, whatever order the vendor answered in.
pub(super) fn fresh(
    mut events: Vec<Event>,
    keys: &[Key],
    known: &[bool],
    identity: Identity,
) -> Fresh {
    let by_id = identity == Identity::VendorId;
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
    // A stable sort, which finds a reversed page (newest first, mostly) and turns it in one
    // pass.
    events.sort_by_key(|e| e.time);
    fresh_keys.sort_by_key(|(_, t)| *t);
    Fresh {
        events,
        keys: fresh_keys,
        duplicates,
    }
}

/// How far before `start`, its window's start, the vendor placed the earliest of `events`, or
/// `skew` when that is further.
pub(super) fn skew(events: &[Event], start: Nanos, skew: Nanos) -> Nanos {
    events
        .iter()
        .filter(|ev| ev.time < start)
        .map(|ev| start - ev.time)
        .fold(skew, Nanos::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: Nanos) -> Event {
        Event::standalone("s", "domo", "domo", t, "{}")
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
    fn events_marked_out_are_dropped_in_order() {
        let mut events = vec![ev(1), ev(2), ev(3), ev(4)];
        keep_marked(&mut events, Some(vec![true, false, true, false]));
        assert_eq!(events.iter().map(|e| e.time).collect::<Vec<_>>(), [1, 3]);
        keep_marked(&mut events, None);
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn the_state_is_asked_about_events_that_may_be_known_and_their_old_keys() {
        let events = vec![ev(50), ev(150), ev(90)];
        let keys = PageKeys {
            keys: vec![[1; 16], [2; 16], [3; 16]],
            legacy: vec![(1, [12; 16]), (2, [13; 16])],
        };
        let lookup = Lookup {
            before: Some(100),
            since: None,
        };
        let (asked, owners) = lookups(&events, &keys, &lookup);
        // Event 1 (150) is after everything delivered: neither of its keys is asked about.
        assert_eq!(asked, [([1; 16], 50), ([3; 16], 90), ([13; 16], 90)]);
        assert_eq!(owners, [0, 2, 2]);
        // Found by its old key only: known all the same.
        assert_eq!(known(3, owners, [false, false, true]), [false, false, true]);
        // A backfill asks nothing, old keys included.
        let (asked, owners) = lookups(&events, &keys, &Lookup::default());
        assert!(asked.is_empty() && owners.is_empty());
    }

    #[test]
    fn known_events_and_repeated_vendor_ids_are_dropped_and_the_rest_go_oldest_first() {
        let page = || vec![ev(30), ev(20), ev(20), ev(10)];
        let keys = [[3; 16], [2; 16], [2; 16], [1; 16]];
        let known = [false, false, false, true];
        let f = fresh(page(), &keys, &known, Identity::VendorId);
        assert_eq!(f.duplicates, 2, "one known, one id repeated in the page");
        assert_eq!(
            f.events.iter().map(|e| e.time).collect::<Vec<_>>(),
            [20, 30]
        );
        assert_eq!(f.keys, [([2; 16], 20), ([3; 16], 30)]);
        // Content keys are never compared within the page (twins have keys of their own, so an
        // equal key there would be the same entry read twice, which the keyer rules out).
        let f = fresh(page(), &keys, &known, Identity::Content);
        assert_eq!(f.duplicates, 1);
        assert_eq!(
            f.events.iter().map(|e| e.time).collect::<Vec<_>>(),
            [20, 20, 30]
        );
        assert_eq!(
            f.keys.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
            [20, 20, 30]
        );
    }

    #[test]
    fn skew_is_how_far_before_its_window_an_event_was_placed() {
        let events = [ev(95), ev(120), ev(80)];
        assert_eq!(skew(&events, 100, 0), 20);
        assert_eq!(skew(&events, 100, 30), 30);
        assert_eq!(skew(&events, 50, 7), 7);
    }
}
