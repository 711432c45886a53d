//! Dedupe keys: the vendor's id where there is one, otherwise a hash of the event's canonical
//! content plus its occurrence number among identical entries.
//!
//! Two genuine Domo entries can be identical to the second. Hashing content alone would merge
//! them; numbering the occurrences of one content within a window keeps both, and a later poll
//! that sees the same entries again numbers them the same way, so neither is delivered twice.

use std::collections::HashMap;

use serde_json::value::RawValue;

/// A dedupe key as stored in SQLite: 16 bytes of BLAKE3.
pub type Key = [u8; 16];

/// A hash of an event's canonical content (object keys sorted, no insignificant whitespace).
pub type ContentHash = [u8; 32];

/// The key of an event that carries the vendor's own id.
pub fn id_key(id: &str) -> Key {
    let mut h = blake3::Hasher::new();
    h.update(b"id\0");
    h.update(id.as_bytes());
    truncate(h.finalize())
}

/// The hash of a vendor entry's canonical content. Fails only on JSON the parser rejects, which
/// the source has already parsed once, so in practice never.
pub fn content_hash(raw: &RawValue) -> Result<ContentHash, serde_json::Error> {
    // serde_json's Value keeps objects in a BTreeMap: re-serialising it sorts keys and drops
    // whitespace, so the same entry hashes the same however the vendor formatted it.
    let value: serde_json::Value = serde_json::from_str(raw.get())?;
    let mut w = HashWriter(blake3::Hasher::new());
    serde_json::to_writer(&mut w, &value)?;
    Ok(*w.0.finalize().as_bytes())
}

struct HashWriter(blake3::Hasher);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The key of the `n`th (from 0) occurrence of a content.
pub fn occurrence_key(hash: &ContentHash, n: u32) -> Key {
    let mut h = blake3::Hasher::new();
    h.update(b"content\0");
    h.update(hash);
    h.update(&n.to_le_bytes());
    truncate(h.finalize())
}

fn truncate(h: blake3::Hash) -> Key {
    let mut k = [0u8; 16];
    k.copy_from_slice(&h.as_bytes()[..16]);
    k
}

/// Lower-case hex of a key: the `id` of an event without a vendor id.
pub fn hex(key: &Key) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(32);
    for b in key {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Occurrence numbers of contents seen so far in one window. The content hash covers the event's
/// time, so identical contents are necessarily in the same time unit.
#[derive(Default)]
pub struct Occurrences(HashMap<ContentHash, u32>);

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

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
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
    fn twins_get_distinct_stable_keys() {
        let h = content_hash(&raw(
            r#"{"time":"2017-12-13 10:57:35 PM","eventText":"Viewed"}"#,
        ))
        .unwrap();
        let mut first_poll = Occurrences::default();
        let k1 = [
            occurrence_key(&h, first_poll.next(h)),
            occurrence_key(&h, first_poll.next(h)),
        ];
        assert_ne!(k1[0], k1[1]);
        // A later poll sees the same two entries again: same keys, so both are recognised.
        let mut second_poll = Occurrences::default();
        let k2 = [
            occurrence_key(&h, second_poll.next(h)),
            occurrence_key(&h, second_poll.next(h)),
        ];
        assert_eq!(k1, k2);
    }

    #[test]
    fn id_keys_differ_from_content_keys_and_hex_is_32_chars() {
        let k = id_key("59de4bb09221034b071d83db64950d34");
        assert_eq!(k, id_key("59de4bb09221034b071d83db64950d34"));
        assert_ne!(k, id_key("59de4bb09221034b071d83db64950d35"));
        let s = hex(&k);
        assert_eq!(s.len(), 32);
        assert!(s
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(hex(&[0xab; 16]), "ab".repeat(16));
    }
}
