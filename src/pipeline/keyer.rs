//! The poller's one call to key a page ([`Keyer`]): vendor-id keys, occurrence numbers within
//! the window, the occurrence keys (and the keys of earlier releases to look up too), and the
//! `id` of each event without a vendor id. The key arithmetic itself is [`crate::keys`].

use crate::event::Event;
use crate::keys::{content_hash, fold_hash, id_key, occurrence_key, occurrence_keys};
use crate::keys::{Identity, Key, Occurrences};

/// The keys of a page's events, as [`Keyer::key`] gives them.
#[derive(Debug, Default)]
pub struct PageKeys {
    /// The dedupe key of each event, in order.
    pub keys: Vec<Key>,
    /// The keys an earlier release gave some of them (see [`fold_hash`]), by index: looked up
    /// too, so an upgrade delivers none of them twice.
    pub legacy: Vec<(usize, Key)>,
}

/// Keys events: the one place where an event's dedupe key, and the `id` of an event without a
/// vendor id, are made. The poller owns one per source: occurrence numbers count within a
/// window, and it says where windows begin ([`Keyer::clear`]).
#[derive(Default)]
pub struct Keyer {
    occurrences: Occurrences,
}

impl Keyer {
    /// The dedupe key of each event, in order; a content-keyed event gets its `id` from it.
    /// Fails only on an event whose raw text the canonical encoder cannot read, which its
    /// source has already read once, so in practice never.
    pub fn key(
        &mut self,
        identity: Identity,
        events: &mut [Event],
    ) -> Result<PageKeys, serde_json::Error> {
        let mut out = PageKeys {
            keys: Vec::with_capacity(events.len()),
            legacy: Vec::new(),
        };
        if identity == Identity::VendorId {
            out.keys.extend(events.iter().map(|ev| id_key(ev.id())));
            return Ok(out);
        }
        let mut occurrences = Vec::with_capacity(events.len());
        for (i, ev) in events.iter().enumerate() {
            // Hashed where the entry was read (see `PageHashes`), but for entries that only
            // serde_json could read.
            let h = match ev.content_hash() {
                Some(h) => h,
                None => content_hash(ev.raw())?,
            };
            if ev.ambiguous_time() {
                let folded = fold_hash(&h, ev.time);
                let n = self.occurrences.next(folded);
                out.legacy.push((i, occurrence_key(&h, n)));
                occurrences.push((folded, n));
            } else {
                occurrences.push((h, self.occurrences.next(h)));
            }
        }
        occurrence_keys(&occurrences, &mut out.keys);
        for (ev, k) in events.iter_mut().zip(&out.keys) {
            ev.set_content_id(k);
        }
        Ok(out)
    }

    /// Forgets the occurrences counted so far: called where a window (or a time unit read by
    /// offset) begins.
    pub fn clear(&mut self) {
        self.occurrences.clear();
    }
}
