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

/// The hash of a vendor entry's canonical content: the same entry hashes the same however the
/// vendor formatted it (key order, whitespace, escapes). Fails only on JSON the parser rejects,
/// which the source has already parsed once, so in practice never.
pub fn content_hash(raw: &RawValue) -> Result<ContentHash, serde_json::Error> {
    // One pass over the text into a borrowed tree (strings without escapes are not copied),
    // then a canonical, injective encoding into the hasher: objects with sorted keys, every
    // value tagged and every string length-prefixed.
    let mut value: Canon<'_> = serde_json::from_str(raw.get())?;
    // Encode into a reused buffer and hash it once: many tiny hasher updates cost more than
    // the hashing itself.
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    Ok(SCRATCH.with_borrow_mut(|buf| {
        buf.clear();
        value.encode(buf);
        *blake3::hash(buf).as_bytes()
    }))
}

/// A JSON value borrowed from the text it was parsed from.
enum Canon<'a> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(std::borrow::Cow<'a, str>),
    Array(Vec<Canon<'a>>),
    Object(Vec<(std::borrow::Cow<'a, str>, Canon<'a>)>),
}

impl Canon<'_> {
    fn encode(&mut self, h: &mut Vec<u8>) {
        match self {
            Canon::Null => {
                h.push(b'n');
            }
            Canon::Bool(b) => {
                h.push(if *b { b't' } else { b'f' });
            }
            Canon::U64(v) => {
                h.push(b'u');
                h.extend_from_slice(&v.to_le_bytes());
            }
            Canon::I64(v) => {
                h.push(b'i');
                h.extend_from_slice(&v.to_le_bytes());
            }
            Canon::F64(v) => {
                h.push(b'd');
                h.extend_from_slice(&v.to_bits().to_le_bytes());
            }
            Canon::Str(s) => hash_str(h, b's', s),
            Canon::Array(items) => {
                h.push(b'[');
                h.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for i in items {
                    i.encode(h);
                }
            }
            Canon::Object(entries) => {
                entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                h.push(b'{');
                h.extend_from_slice(&(entries.len() as u64).to_le_bytes());
                for (k, v) in entries {
                    hash_str(h, b'k', k);
                    v.encode(h);
                }
            }
        }
    }
}

fn hash_str(h: &mut Vec<u8>, tag: u8, s: &str) {
    h.push(tag);
    h.extend_from_slice(&(s.len() as u64).to_le_bytes());
    h.extend_from_slice(s.as_bytes());
}

impl<'de> serde::Deserialize<'de> for Canon<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CanonVisitor)
    }
}

struct CanonVisitor;

impl<'de> serde::de::Visitor<'de> for CanonVisitor {
    type Value = Canon<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Canon<'de>, E> {
        Ok(Canon::Null)
    }
    fn visit_none<E>(self) -> Result<Canon<'de>, E> {
        Ok(Canon::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Canon<'de>, E> {
        Ok(Canon::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Canon<'de>, E> {
        Ok(Canon::U64(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Canon<'de>, E> {
        // Non-negative integers always arrive as u64: keep one encoding per number.
        Ok(if v >= 0 {
            Canon::U64(v as u64)
        } else {
            Canon::I64(v)
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Canon<'de>, E> {
        Ok(Canon::F64(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Canon<'de>, E> {
        Ok(Canon::Str(std::borrow::Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Canon<'de>, E> {
        Ok(Canon::Str(std::borrow::Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Canon<'de>, E> {
        Ok(Canon::Str(std::borrow::Cow::Owned(v)))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Canon<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(Canon::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Canon<'de>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some((k, v)) = map.next_entry::<CanonKey<'de>, Canon<'de>>()? {
            entries.push((k.0, v));
        }
        Ok(Canon::Object(entries))
    }
}

/// An object key, borrowed when it has no escapes.
struct CanonKey<'a>(std::borrow::Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for CanonKey<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Canon::deserialize(d)? {
            Canon::Str(s) => Ok(CanonKey(s)),
            _ => Err(serde::de::Error::custom("object key is not a string")),
        }
    }
}

/// The key of the `n`th (from 0) occurrence of a content.
pub fn occurrence_key(hash: &ContentHash, n: u32) -> Key {
    let mut buf = [0u8; 44];
    buf[..8].copy_from_slice(b"content\0");
    buf[8..40].copy_from_slice(hash);
    buf[40..].copy_from_slice(&n.to_le_bytes());
    truncate(blake3::hash(&buf))
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
