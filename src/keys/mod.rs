//! How events are keyed. Dedupe keys: the vendor's id where there is one, otherwise a hash of
//! the event's canonical content plus its occurrence number among identical entries.
//!
//! Two genuine Domo entries can be identical to the second. Hashing content alone would merge
//! them; numbering the occurrences of one content within a window keeps both, and a later poll
//! that sees the same entries again numbers them the same way, so neither is delivered twice.
//!
//! - Content hashes: [`content_hash`] of an entry's text, or [`hash_canonical`] of its canonical
//!   encoding (`crate::json::canon`); a source hashes its page's entries as it reads them
//!   ([`PageHashes`], side by side in [`lanes`]).
//! - [`occurrence_keys`], [`Occurrences`], [`fold_hash`]: occurrence numbers within a window
//!   and the keys made of them, which the poller's `Keyer` (`pipeline::keyer`) applies to a page.
//! - [`hex_bytes`], [`RandomState`]: an id's text, and the hasher of maps keyed by keys.

use std::collections::HashMap;

use crate::json::canon::{self, Scratch};

pub mod lanes;

/// How a source's events are told apart (its `Traits::identity`, in `sources`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// By the vendor's id, in `Event::id`.
    VendorId,
    /// By canonical content plus occurrence; the poller fills in `Event::id`.
    Content,
}

/// A dedupe key as stored in SQLite: 16 bytes of BLAKE3.
pub type Key = [u8; 16];

/// A hash of an event's canonical content (object keys sorted, no insignificant whitespace).
pub type ContentHash = [u8; 32];

/// The key of an event that carries the vendor's own id.
pub fn id_key(id: &str) -> Key {
    // The same bytes hash the same either way; for the short ids vendors use, hashing them at
    // once from the stack costs less than setting up the incremental hasher.
    let mut buf = [0u8; 64];
    if let Some(tail) = buf.get_mut(3..3 + id.len()) {
        tail.copy_from_slice(id.as_bytes());
        buf[..3].copy_from_slice(b"id\0");
        return truncate(blake3::hash(&buf[..3 + id.len()]));
    }
    let mut h = blake3::Hasher::new();
    h.update(b"id\0");
    h.update(id.as_bytes());
    truncate(h.finalize())
}

/// The hash of a vendor entry's canonical content: the same entry hashes the same however the
/// vendor formatted it (key order, whitespace, escapes). Fails only on JSON the parser rejects,
/// which the source has already parsed once, so in practice never.
pub fn content_hash(raw: &str) -> Result<ContentHash, serde_json::Error> {
    // A canonical, injective encoding — objects with sorted keys, every value tagged, every
    // string length-prefixed, escapes resolved — written by one scan of the text into a reused
    // buffer, then hashed once.
    thread_local! {
        static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
    }
    SCRATCH.with_borrow_mut(|scratch| match canon::encode(raw, scratch) {
        Ok(bytes) => Ok(hash_canonical(bytes)),
        // The text passed serde_json once already, so this does not happen; if it did, the
        // parser's own error says what is wrong.
        Err(()) => Err(serde_json::from_str::<serde::de::IgnoredAny>(raw)
            .err()
            .unwrap_or_else(|| serde::de::Error::custom("JSON the canonical encoder cannot read"))),
    })
}

/// The content hash of a canonical encoding.
pub fn hash_canonical(bytes: &[u8]) -> ContentHash {
    *blake3::hash(bytes).as_bytes()
}

/// The key of the `n`th (from 0) occurrence of a content.
pub fn occurrence_key(hash: &ContentHash, n: u32) -> Key {
    truncate(blake3::hash(&occurrence(hash, n)))
}

/// The content hash of an entry whose time text means two instants (Domo's wall-clock time in
/// the repeated hour of a daylight-saving change; see `Event::ambiguous_time`), with the instant
/// it was read as: two twins an hour apart then get different keys, so different ids. Every other
/// entry keeps the content hash alone, as before, so no other key or id changed. (An earlier
/// release keyed such entries by the content hash alone: the poller also looks them up by that
/// key, so an upgrade delivers none of them twice.)
pub fn fold_hash(hash: &ContentHash, time: crate::timefmt::Nanos) -> ContentHash {
    let mut buf = [0u8; 45];
    buf[..5].copy_from_slice(b"fold\0");
    buf[5..37].copy_from_slice(hash);
    buf[37..].copy_from_slice(&time.to_le_bytes());
    hash_canonical(&buf)
}

/// [`occurrence_key`] of each content and occurrence number, in order, appended to `keys`:
/// hashed side by side (see [`lanes`]).
pub fn occurrence_keys(occurrences: &[(ContentHash, u32)], keys: &mut Vec<Key>) {
    let mut batch = lanes::Batch::with_capacity(occurrences.len(), 0);
    for (hash, n) in occurrences {
        batch.push(&occurrence(hash, *n));
    }
    let mut hashes = Vec::with_capacity(occurrences.len());
    batch.finish(&mut hashes);
    keys.extend(hashes.iter().map(|h| {
        let mut k = [0u8; 16];
        k.copy_from_slice(&h[..16]);
        k
    }));
}

/// What the key of the `n`th occurrence of a content hashes.
fn occurrence(hash: &ContentHash, n: u32) -> [u8; 44] {
    let mut buf = [0u8; 44];
    buf[..8].copy_from_slice(b"content\0");
    buf[8..40].copy_from_slice(hash);
    buf[40..].copy_from_slice(&n.to_le_bytes());
    buf
}

fn truncate(h: blake3::Hash) -> Key {
    let mut k = [0u8; 16];
    k.copy_from_slice(&h.as_bytes()[..16]);
    k
}

/// The lower-case hex of a key, as bytes: the `id` of an event without a vendor id.
pub fn hex_bytes(key: &Key) -> [u8; 32] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, b) in key.iter().enumerate() {
        out[2 * i] = DIGITS[(b >> 4) as usize];
        out[2 * i + 1] = DIGITS[(b & 15) as usize];
    }
    out
}

/// Encodings are hashed this many at a time: enough to keep every lane busy, few enough that
/// the copies stay small (64 KB for entries of a kilobyte).
const HASH_BATCH: usize = 64;

/// The content hashes of a page's events, worked out while the page is read: each event's
/// canonical encoding is queued as it is read, and hashed side by side with others (see
/// [`lanes`]); each hash is handed back with the index of its event.
pub struct PageHashes {
    batch: lanes::Batch,
    /// Which event each queued encoding is for.
    events: Vec<usize>,
    hashes: Vec<lanes::Hash>,
}

impl Default for PageHashes {
    fn default() -> PageHashes {
        PageHashes {
            // Canonical encodings are about the size of their text: room for a batch of entries
            // of a kilobyte from the start.
            batch: lanes::Batch::with_capacity(HASH_BATCH, HASH_BATCH * 1024),
            events: Vec::with_capacity(HASH_BATCH),
            hashes: Vec::with_capacity(HASH_BATCH),
        }
    }
}

impl PageHashes {
    /// Queues `encoding`, that of the event at `index`; when the batch is full, hashes it and
    /// gives each queued event's hash to `set`.
    pub fn push(&mut self, encoding: &[u8], index: usize, set: impl FnMut(usize, ContentHash)) {
        self.batch.push(encoding);
        self.events.push(index);
        if self.batch.len() >= HASH_BATCH {
            self.finish(set);
        }
    }

    /// Hashes what is queued and gives each queued event's hash to `set`.
    pub fn finish(&mut self, mut set: impl FnMut(usize, ContentHash)) {
        self.hashes.clear();
        self.batch.finish(&mut self.hashes);
        for (i, h) in self.events.drain(..).zip(&self.hashes) {
            set(i, *h);
        }
    }
}

/// Occurrence numbers of contents seen so far in one window. The content hash covers the event's
/// time, so identical contents are necessarily in the same time unit.
#[derive(Default)]
pub struct Occurrences(HashMap<ContentHash, u32, RandomState>);

/// The hasher of the maps keyed by hashes and keys (here and in the poller): foldhash, seeded at
/// random per process like the standard library's SipHash, so crafted events cannot be aimed at
/// one bucket; SipHash was 1.3% of Domino audit's instructions.
pub type RandomState = foldhash::fast::RandomState;

impl Occurrences {
    /// The occurrence number of this content (0 the first time it is seen in the window).
    pub fn next(&mut self, hash: ContentHash) -> u32 {
        let n = self.0.entry(hash).or_insert(0);
        *n += 1;
        *n - 1
    }

    /// Forgets everything: called when a window is complete.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> String {
        s.to_string()
    }

    #[test]
    fn content_hash_ignores_key_order_and_whitespace() {
        let a = content_hash(&raw(r#"{"a":1,"b":{"x":"y","c":[1,2]}}"#)).unwrap();
        let b = content_hash(&raw(r#"{ "b" : {"c":[1, 2], "x":"y"}, "a":1 }"#)).unwrap();
        assert_eq!(a, b);
        let c = content_hash(&raw(r#"{"a":1,"b":{"x":"y","c":[2,1]}}"#)).unwrap();
        assert_ne!(a, c, "array order is content");
    }

    #[test]
    fn content_hash_sees_through_escapes_and_tells_types_apart() {
        let plain = content_hash(&raw(r#"{"a":"x/y","n":1}"#)).unwrap();
        let escaped = content_hash(&raw(r#"{"a":"x\/y","n":1}"#)).unwrap();
        assert_eq!(plain, escaped, "the same string, written two ways");
        for other in [
            r#"{"a":"x/y","n":"1"}"#,
            r#"{"a":"x/y","n":1.0}"#,
            r#"{"a":"x/y","n":-1}"#,
            r#"{"a":"x/y","n":null}"#,
            r#"{"a":"x/y"}"#,
            r#"{"a":"x/","n":1}"#,
            r#"{"a":["x/y"],"n":1}"#,
            r#"{"ax":"/y","n":1}"#,
        ] {
            assert_ne!(plain, content_hash(&raw(other)).unwrap(), "{other}");
        }
    }

    /// The keys hashed side by side are the keys hashed one at a time, in order.
    #[test]
    fn occurrence_keys_of_a_page_are_each_occurrence_key() {
        let items: Vec<(ContentHash, u32)> = (0..100u32)
            .map(|i| (*blake3::hash(&i.to_le_bytes()).as_bytes(), i % 7))
            .collect();
        let mut keys = vec![[9; 16]];
        occurrence_keys(&items, &mut keys);
        assert_eq!(keys[0], [9; 16]);
        assert_eq!(keys.len(), 101);
        for ((h, n), k) in items.iter().zip(&keys[1..]) {
            assert_eq!(*k, occurrence_key(h, *n));
        }
    }

    #[test]
    fn id_keys_are_those_of_earlier_releases() {
        let long = "x".repeat(100);
        for (id, want) in [
            (
                "59de4bb09221034b071d83db64950d34",
                "38edba40c5b77a4374b26c0ff662b735",
            ),
            ("", "e9c55a75b1d01ec2564ccec6e96ba22c"),
            (long.as_str(), "d8af8f0e449d2ac3b694f77fe46ea52f"),
        ] {
            let got = String::from_utf8(hex_bytes(&id_key(id)).to_vec()).unwrap();
            assert_eq!(got, want, "{id}");
        }
    }

    /// Two identical entries of one time unit (Domo twins) get keys of their own, and the same
    /// two at every later read. The keys are stored, so they are pinned: computed once by the
    /// release before this test pinned them, they must never change.
    #[test]
    fn twins_get_distinct_stable_keys() {
        let h = content_hash(&raw(
            r#"{"time":"2017-12-13 10:57:35 PM","eventText":"Viewed"}"#,
        ))
        .unwrap();
        let hex = |k: &Key| String::from_utf8(hex_bytes(k).to_vec()).unwrap();
        let want = [
            "8cf9f60a5047d96ad89f2adbc1661331",
            "ed21d5cb23b2e44b19369b0306d29408",
        ];
        // A poll sees the two entries, and a later poll sees them again (the window's counter
        // starts afresh): the same keys, so both are recognised.
        for _ in 0..2 {
            let mut poll = Occurrences::default();
            let keys = [
                occurrence_key(&h, poll.next(h)),
                occurrence_key(&h, poll.next(h)),
            ];
            assert_eq!(keys.map(|k| hex(&k)), want);
        }
        // The keyer, the poller's one way to key a page, gives them too, as the events' ids.
        use crate::event::Event;
        use crate::pipeline::keyer::Keyer;
        let twin = r#"{"time":"2017-12-13 10:57:35 PM","eventText":"Viewed"}"#;
        let mut events = vec![
            Event::standalone("s", "domo", "domo", 0, twin),
            Event::standalone("s", "domo", "domo", 0, twin),
        ];
        let mut keyer = Keyer::default();
        let keys = keyer.key(Identity::Content, &mut events).unwrap();
        assert_eq!(keys.keys.iter().map(hex).collect::<Vec<_>>(), want);
        assert_eq!([events[0].id(), events[1].id()], want);
        assert!(keys.legacy.is_empty());
        // Within one window the count goes on; a new window starts it again.
        let mut third = vec![Event::standalone("s", "domo", "domo", 0, twin)];
        let next = keyer.key(Identity::Content, &mut third).unwrap();
        assert_ne!(hex(&next.keys[0]), want[0]);
        keyer.clear();
        let again = keyer.key(Identity::Content, &mut third).unwrap();
        assert_eq!(hex(&again.keys[0]), want[0]);
    }

    #[test]
    fn id_keys_differ_from_content_keys_and_hex_is_32_chars() {
        let k = id_key("59de4bb09221034b071d83db64950d34");
        assert_eq!(k, id_key("59de4bb09221034b071d83db64950d34"));
        assert_ne!(k, id_key("59de4bb09221034b071d83db64950d35"));
        let s = hex_bytes(&k);
        assert!(s
            .iter()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(hex_bytes(&[0xab; 16]), *"ab".repeat(16).as_bytes());
    }
}
