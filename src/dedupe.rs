//! Dedupe keys: the vendor's id where there is one, otherwise a hash of the event's canonical
//! content plus its occurrence number among identical entries.
//!
//! Two genuine Domo entries can be identical to the second. Hashing content alone would merge
//! them; numbering the occurrences of one content within a window keeps both, and a later poll
//! that sees the same entries again numbers them the same way, so neither is delivered twice.

use std::collections::HashMap;

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
pub fn content_hash(raw: &str) -> Result<ContentHash, serde_json::Error> {
    // A canonical, injective encoding — objects with sorted keys, every value tagged, every
    // string length-prefixed, escapes resolved — written by one scan of the text into a reused
    // buffer, then hashed once.
    thread_local! {
        static SCRATCH: std::cell::RefCell<canon::Scratch> = std::cell::RefCell::new(canon::Scratch::default());
    }
    SCRATCH.with_borrow_mut(|scratch| match canon::encode(raw, scratch) {
        Ok(bytes) => Ok(*blake3::hash(bytes).as_bytes()),
        // The text passed serde_json once already, so this does not happen; if it did, the
        // parser's own error says what is wrong.
        Err(()) => Err(serde_json::from_str::<serde::de::IgnoredAny>(raw)
            .err()
            .unwrap_or_else(|| serde::de::Error::custom("JSON the canonical encoder cannot read"))),
    })
}

/// Appends `n` as an unsigned LEB128 varint: lengths and counts in the canonical encoding.
fn put_len(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The canonical encoding, by direct scan of JSON text. Produces exactly what encoding the
/// parsed tree ([`Canon`]) produces — the tests hold it to that — at a fraction of the cost.
mod canon {
    use std::ops::Range;

    /// Buffers reused from event to event, one set per nesting depth.
    #[derive(Default)]
    pub struct Scratch {
        out: Vec<u8>,
        levels: Vec<Level>,
    }

    #[derive(Default)]
    struct Level {
        /// Encoded values of the object's members, in text order.
        values: Vec<u8>,
        /// Per member: the key (a range of the text, or an unescaped copy) and its value's
        /// range in `values`.
        members: Vec<(Key, Range<usize>)>,
        owned: Vec<String>,
        /// The members' sort order: each key's first eight bytes as a number, and its index.
        order: Vec<(u64, u32)>,
    }

    /// The first eight bytes of `k`, zero-padded, as a big-endian number: comparing two of these
    /// orders keys as comparing the keys does, except that equal ones need the whole keys.
    fn prefix(k: &str) -> u64 {
        let mut b = [0u8; 8];
        let n = k.len().min(8);
        b[..n].copy_from_slice(&k.as_bytes()[..n]);
        u64::from_be_bytes(b)
    }

    enum Key {
        Text(Range<usize>),
        Owned(usize),
    }

    const MAX_DEPTH: usize = 128;

    /// Encodes `text` (valid JSON) into the scratch buffer and returns the bytes.
    pub fn encode<'s>(text: &str, scratch: &'s mut Scratch) -> Result<&'s [u8], ()> {
        let mut out = std::mem::take(&mut scratch.out);
        out.clear();
        let mut sc = Scanner {
            t: text,
            b: text.as_bytes(),
            i: 0,
        };
        let r = sc.value(&mut out, &mut scratch.levels, 0);
        scratch.out = out;
        r?;
        sc.ws();
        if sc.i != sc.b.len() {
            return Err(());
        }
        Ok(&scratch.out)
    }

    struct Scanner<'a> {
        t: &'a str,
        b: &'a [u8],
        i: usize,
    }

    /// The first `"` or `\` in `b`: eight bytes at a time, then memchr for long runs. Most
    /// strings in audit events are short, where memchr's setup costs more than the search.
    pub(super) fn find_quote_or_backslash(b: &[u8]) -> Option<usize> {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        let mut i = 0;
        while i + 8 <= b.len() && i < 64 {
            let w = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
            let hit = zero(w ^ (ONES * b'"' as u64)) | zero(w ^ (ONES * b'\\' as u64));
            if hit != 0 {
                // The lowest flagged byte is a true match (borrows only run upwards).
                return Some(i + (hit.trailing_zeros() / 8) as usize);
            }
            i += 8;
        }
        if i < 64 {
            return b[i..]
                .iter()
                .position(|c| *c == b'"' || *c == b'\\')
                .map(|k| i + k);
        }
        memchr::memchr2(b'"', b'\\', &b[i..]).map(|k| i + k)
    }

    fn put_str(out: &mut Vec<u8>, tag: u8, s: &str) {
        out.push(tag);
        super::put_len(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }

    impl<'a> Scanner<'a> {
        fn ws(&mut self) {
            while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            }
        }

        fn lit(&mut self, word: &[u8]) -> Result<(), ()> {
            if self.b[self.i..].starts_with(word) {
                self.i += word.len();
                Ok(())
            } else {
                Err(())
            }
        }

        /// A string at `self.i` (the opening quote): its text range when it has no escapes,
        /// or its unescaped copy.
        fn string(&mut self) -> Result<Result<Range<usize>, String>, ()> {
            let start = self.i + 1;
            let mut j = start;
            let mut escaped = false;
            while let Some(k) = find_quote_or_backslash(&self.b[j.min(self.b.len())..]) {
                j += k;
                if self.b[j] == b'"' {
                    break;
                }
                escaped = true;
                j += 2;
            }
            if j >= self.b.len() || self.b[j] != b'"' {
                return Err(());
            }
            self.i = j + 1;
            if escaped {
                serde_json::from_str::<String>(&self.t[start - 1..j + 1])
                    .map(Err)
                    .map_err(|_| ())
            } else {
                Ok(Ok(start..j))
            }
        }

        fn value(
            &mut self,
            out: &mut Vec<u8>,
            levels: &mut Vec<Level>,
            depth: usize,
        ) -> Result<(), ()> {
            self.ws();
            match *self.b.get(self.i).ok_or(())? {
                b'{' => self.object(out, levels, depth),
                b'[' => {
                    if depth >= MAX_DEPTH {
                        return Err(());
                    }
                    self.i += 1;
                    // Items are encoded before their count is known: encode them after a gap,
                    // then move them up behind the count.
                    // One byte is kept for the count, which is enough below 128 items.
                    out.extend_from_slice(b"[\0");
                    let items_at = out.len();
                    let mut n: u64 = 0;
                    self.ws();
                    if self.b.get(self.i) == Some(&b']') {
                        self.i += 1;
                    } else {
                        loop {
                            self.value(out, levels, depth + 1)?;
                            n += 1;
                            self.ws();
                            match self.b.get(self.i) {
                                Some(b',') => self.i += 1,
                                Some(b']') => {
                                    self.i += 1;
                                    break;
                                }
                                _ => return Err(()),
                            }
                        }
                    }
                    if n < 0x80 {
                        out[items_at - 1] = n as u8;
                    } else {
                        let mut count = Vec::with_capacity(10);
                        super::put_len(&mut count, n);
                        out.splice(items_at - 1..items_at, count);
                    }
                    Ok(())
                }
                b'"' => {
                    match self.string()? {
                        Ok(r) => put_str(out, b's', &self.t[r]),
                        Err(s) => put_str(out, b's', &s),
                    }
                    Ok(())
                }
                b't' => self.lit(b"true").map(|_| out.push(b't')),
                b'f' => self.lit(b"false").map(|_| out.push(b'f')),
                b'n' => self.lit(b"null").map(|_| out.push(b'n')),
                b'-' | b'0'..=b'9' => {
                    let start = self.i;
                    while self.i < self.b.len()
                        && matches!(
                            self.b[self.i],
                            b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                        )
                    {
                        self.i += 1;
                    }
                    let n = &self.t[start..self.i];
                    // As serde_json reads numbers: integers that fit are integers (non-negative
                    // ones unsigned), everything else a float.
                    let float = |out: &mut Vec<u8>| -> Result<(), ()> {
                        let f: f64 = n.parse().map_err(|_| ())?;
                        out.push(b'd');
                        out.extend_from_slice(&f.to_bits().to_le_bytes());
                        Ok(())
                    };
                    if n.bytes().any(|c| matches!(c, b'.' | b'e' | b'E')) {
                        float(out)
                    } else if let Ok(u) = n.parse::<u64>() {
                        out.push(b'u');
                        out.extend_from_slice(&u.to_le_bytes());
                        Ok(())
                    } else if let Ok(i) = n.parse::<i64>().map_err(|_| ()).and_then(|i| {
                        // serde_json reads "-0" as the float -0.0.
                        if i == 0 {
                            Err(())
                        } else {
                            Ok(i)
                        }
                    }) {
                        if i >= 0 {
                            out.push(b'u');
                            out.extend_from_slice(&(i as u64).to_le_bytes());
                        } else {
                            out.push(b'i');
                            out.extend_from_slice(&i.to_le_bytes());
                        }
                        Ok(())
                    } else {
                        float(out)
                    }
                }
                _ => Err(()),
            }
        }

        fn object(
            &mut self,
            out: &mut Vec<u8>,
            levels: &mut Vec<Level>,
            depth: usize,
        ) -> Result<(), ()> {
            if depth >= MAX_DEPTH {
                return Err(());
            }
            self.i += 1;
            if levels.len() <= depth {
                levels.resize_with(depth + 1, Level::default);
            }
            let mut level = std::mem::take(&mut levels[depth]);
            level.values.clear();
            level.members.clear();
            level.owned.clear();
            let r = self.members(&mut level, levels, depth);
            if r.is_ok() {
                let t = self.t;
                let owned = &level.owned;
                let key = |k: &Key| -> &str {
                    match k {
                        Key::Text(r) => &t[r.clone()],
                        Key::Owned(i) => &owned[*i],
                    }
                };
                let members = &level.members;
                let order = &mut level.order;
                order.clear();
                order.extend(
                    members
                        .iter()
                        .enumerate()
                        .map(|(i, (k, _))| (prefix(key(k)), i as u32)),
                );
                // Keys in order; equal keys (JSON allows them) keep their text order.
                order.sort_unstable_by(|a, b| {
                    a.0.cmp(&b.0)
                        .then_with(|| {
                            key(&members[a.1 as usize].0).cmp(key(&members[b.1 as usize].0))
                        })
                        .then(a.1.cmp(&b.1))
                });
                out.push(b'{');
                super::put_len(out, members.len() as u64);
                for (_, i) in order.iter() {
                    let (k, v) = &members[*i as usize];
                    put_str(out, b'k', key(k));
                    out.extend_from_slice(&level.values[v.clone()]);
                }
            }
            levels[depth] = level;
            r
        }

        fn members(
            &mut self,
            level: &mut Level,
            levels: &mut Vec<Level>,
            depth: usize,
        ) -> Result<(), ()> {
            self.ws();
            if self.b.get(self.i) == Some(&b'}') {
                self.i += 1;
                return Ok(());
            }
            loop {
                self.ws();
                if self.b.get(self.i) != Some(&b'"') {
                    return Err(());
                }
                let key = match self.string()? {
                    Ok(r) => Key::Text(r),
                    Err(s) => {
                        level.owned.push(s);
                        Key::Owned(level.owned.len() - 1)
                    }
                };
                self.ws();
                if self.b.get(self.i) != Some(&b':') {
                    return Err(());
                }
                self.i += 1;
                let start = level.values.len();
                self.value(&mut level.values, levels, depth + 1)?;
                level.members.push((key, start..level.values.len()));
                self.ws();
                match self.b.get(self.i) {
                    Some(b',') => self.i += 1,
                    Some(b'}') => {
                        self.i += 1;
                        return Ok(());
                    }
                    _ => return Err(()),
                }
            }
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

/// The reference for the scanner: the same encoding, from a parsed tree.
#[cfg(test)]
mod reference {
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
                    super::put_len(h, items.len() as u64);
                    for i in items {
                        i.encode(h);
                    }
                }
                Canon::Object(entries) => {
                    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                    h.push(b'{');
                    super::put_len(h, entries.len() as u64);
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
        super::put_len(h, s.len() as u64);
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
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Canon<'de>, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(v) = seq.next_element()? {
                items.push(v);
            }
            Ok(Canon::Array(items))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Canon<'de>, A::Error> {
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

    /// The encoding of `text` by way of the tree.
    pub fn encode(text: &str) -> Vec<u8> {
        let mut v: Canon<'_> = serde_json::from_str(text).unwrap();
        let mut out = Vec::new();
        v.encode(&mut out);
        out
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

    /// Random JSON with the vendors' quirks: escapes, unicode, every number form, nesting,
    /// duplicate-looking keys, varied whitespace.
    fn random_json(rng: &mut fastrand::Rng, depth: u32, out: &mut String) {
        let ws = |rng: &mut fastrand::Rng, out: &mut String| {
            for _ in 0..rng.usize(0..2) {
                out.push([' ', '\n', '\t', '\r'][rng.usize(0..4)]);
            }
        };
        let string = |rng: &mut fastrand::Rng, out: &mut String| {
            out.push('"');
            for _ in 0..rng.usize(0..6) {
                out.push_str(
                    [
                        "a",
                        "Z",
                        "é",
                        "\\\"",
                        "\\\\",
                        "\\/",
                        "\\n",
                        "\\u00e9",
                        "\\ud83d\\ude00",
                        " ",
                        "k",
                    ][rng.usize(0..11)],
                );
            }
            out.push('"');
        };
        ws(rng, out);
        match if depth > 3 {
            rng.u32(0..5)
        } else {
            rng.u32(0..7)
        } {
            0 => out.push_str(["null", "true", "false"][rng.usize(0..3)]),
            1 => out.push_str(
                [
                    "0",
                    "-0",
                    "7",
                    "-12",
                    "18446744073709551615",
                    "18446744073709551616",
                    "-9223372036854775808",
                    "-9223372036854775809",
                    "1.5",
                    "-2.25e3",
                    "1E2",
                    "100",
                    "1.0",
                    "0.1",
                    "3e-7",
                ][rng.usize(0..15)],
            ),
            2..=4 => string(rng, out),
            5 => {
                out.push('[');
                for i in 0..rng.usize(0..4) {
                    if i > 0 {
                        out.push(',');
                    }
                    random_json(rng, depth + 1, out);
                }
                ws(rng, out);
                out.push(']');
            }
            _ => {
                out.push('{');
                for i in 0..rng.usize(0..5) {
                    if i > 0 {
                        out.push(',');
                    }
                    ws(rng, out);
                    string(rng, out);
                    ws(rng, out);
                    out.push(':');
                    random_json(rng, depth + 1, out);
                }
                ws(rng, out);
                out.push('}');
            }
        }
        ws(rng, out);
    }

    #[test]
    fn the_scanner_encodes_exactly_as_the_parsed_tree_does() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut scratch = canon::Scratch::default();
        for _ in 0..20_000 {
            let mut text = String::new();
            random_json(&mut rng, 0, &mut text);
            if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_err() {
                continue; // e.g. duplicate keys are fine, but an odd escape mix may not be
            }
            let fast = canon::encode(&text, &mut scratch).map(|b| b.to_vec());
            assert_eq!(fast, Ok(reference::encode(&text)), "{text}");
        }
        // Keys alike in their first eight bytes, prefixes of each other, NULs, repeats.
        let text = r#"{"abcdefghX":1,"abcdefghA":2,"abcdefgh":3,"abcdefgh\u0000":4,"abcdefgh":5,
                       "abcdefg":6,"abcdefgh\u0000\u0000":7,"b":8,"a\u0000":9,"a":10,"":11,"":12}"#;
        assert_eq!(
            canon::encode(text, &mut scratch).map(|b| b.to_vec()),
            Ok(reference::encode(text))
        );
        // Counts whose varint takes one, two and three bytes, nested and at the top.
        for n in [0, 1, 127, 128, 129, 300, 16_383, 16_384, 20_000] {
            let items = vec!["[1,\"x\"]"; n].join(",");
            for text in [
                format!("[{items}]"),
                format!(r#"{{"b":[{items}],"a":{{"z":[{items}],"y":[]}}}}"#),
            ] {
                let fast = canon::encode(&text, &mut scratch).map(|b| b.to_vec());
                assert_eq!(fast, Ok(reference::encode(&text)), "{n} items");
            }
        }
    }

    #[test]
    fn the_quote_search_finds_the_first_quote_or_backslash() {
        for len in 0..90 {
            for at in 0..=len {
                for (c, other) in [(b'"', b'\\'), (b'\\', b'"')] {
                    let mut b = vec![b'a'; len];
                    // Bytes either side of the searched ones, and a later match of the other.
                    for (i, x) in b.iter_mut().enumerate() {
                        *x = [b'a', b'!', 0x21 ^ 1, b'#', 0xe9, b'['][i % 6];
                    }
                    if at < len {
                        b[at] = c;
                        if at + 3 < len {
                            b[at + 3] = other;
                        }
                    }
                    let want = b.iter().position(|x| *x == b'"' || *x == b'\\');
                    assert_eq!(canon::find_quote_or_backslash(&b), want, "{len} {at}");
                }
            }
        }
    }

    #[test]
    fn the_scanner_refuses_broken_json_without_panicking() {
        let mut scratch = canon::Scratch::default();
        let text = r#"{"a": [1, "x\"y", {"b": null}], "c": -2.5e3}"#;
        assert!(canon::encode(text, &mut scratch).is_ok());
        for cut in 0..text.len() {
            if text.is_char_boundary(cut) && cut < text.len() {
                assert!(
                    canon::encode(&text[..cut], &mut scratch).is_err(),
                    "{}",
                    &text[..cut]
                );
            }
        }
        let deep = "[".repeat(1000) + &"]".repeat(1000);
        assert!(canon::encode(&deep, &mut scratch).is_err());
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
        let s = hex_bytes(&k);
        assert!(s
            .iter()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(hex_bytes(&[0xab; 16]), *"ab".repeat(16).as_bytes());
    }
}
