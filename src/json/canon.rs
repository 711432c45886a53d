//! The canonical encoding of a JSON value, by direct scan of its text: objects with their
//! members sorted by key, every value tagged, every string length-prefixed, escapes resolved.
//! Its hash is an entry's content hash (see `keys`), and the entry readers take a vendor
//! shape from it (see [`super::decode`]).
//!
//! It produces exactly what encoding a parsed tree produces (the reference in the tests, which
//! hold it to that) at a fraction of the cost, and it accepts exactly the JSON that serde_json
//! accepts (the tests hold it to that too), so it can read a vendor entry without serde_json
//! having seen it first.
//!
//! Everything is written once, in text order, into one buffer: an object's members (key, then
//! value) follow its header, and when the object closes its members are put in key order in
//! place. Objects whose keys are already in order (most small ones) are not moved at all.

use super::scan::{find_string_stop, first_stop16};

/// Buffers reused from event to event.
#[derive(Default)]
pub struct Scratch {
    /// The encoding is `out[..len]`. The scanner writes at its own position and keeps `out`
    /// longer than that, zero-filled once, so that most writes are plain stores of a fixed
    /// size (a short string is copied as 32 bytes, then the position moves by its length).
    out: Vec<u8>,
    len: usize,
    /// The members of the objects being encoded, innermost object's last.
    members: Vec<Member>,
    /// Where an object's members are copied while they are put in order.
    tmp: Vec<u8>,
    /// For each string value written as it is in the text: where its bytes are in `out`
    /// and where in the text, sorted by the former (see [`Scratch::origins`]).
    origins: Vec<(usize, usize)>,
    /// Where an object's strings are copied while they are put in order.
    moved: Vec<(usize, usize)>,
}

impl Scratch {
    /// The last encoding made.
    pub fn bytes(&self) -> &[u8] {
        &self.out[..self.len]
    }

    /// For each string value of the last encoding whose bytes are those of the text (no
    /// escapes): where they are in [`Scratch::bytes`] and where in the text, sorted.
    pub fn origins(&self) -> &[(usize, usize)] {
        &self.origins
    }
}

/// One member of an object, as encoded in the output: 32 bytes, sorted when the object's
/// keys are out of order. (Positions fit in 32 bits: an entry whose encoding would not is
/// refused, see [`grow`].)
#[derive(Clone, Copy)]
struct Member {
    /// The key's first eight bytes as a number (see [`prefix`]).
    prefix: u64,
    /// The member's encoding (key, then value) is `out[start..end]`.
    start: u32,
    end: u32,
    /// The key's bytes are `out[key..key + key_len]`.
    key: u32,
    key_len: u32,
    /// The member's verbatim string values are `origins[strings.0..strings.1]`.
    strings: (u32, u32),
}

impl Member {
    fn key<'o>(&self, out: &'o [u8]) -> &'o [u8] {
        &out[self.key as usize..(self.key + self.key_len) as usize]
    }
}

/// Puts an object's members in key order; equal keys (JSON allows them) stay in text order.
fn sort_members(m: &mut [Member], out: &[u8]) {
    // Keys alike in their first eight bytes are rare: compared whole out of line.
    #[cold]
    #[inline(never)]
    fn tie_less(a: &Member, b: &Member, out: &[u8]) -> bool {
        (a.key(out), a.start) < (b.key(out), b.start)
    }
    let less = |a: &Member, b: &Member| {
        a.prefix < b.prefix || (a.prefix == b.prefix && tie_less(a, b, out))
    };
    if m.len() > 16 {
        m.sort_unstable_by(|a, b| {
            a.prefix
                .cmp(&b.prefix)
                .then_with(|| a.key(out).cmp(b.key(out)))
                .then(a.start.cmp(&b.start))
        });
        return;
    }
    // Insertion sort: objects are small, and their keys often nearly in order.
    for i in 1..m.len() {
        let x = m[i];
        let mut j = i;
        while j > 0 && less(&x, &m[j - 1]) {
            m[j] = m[j - 1];
            j -= 1;
        }
        m[j] = x;
    }
}

/// The first eight bytes of `k`, zero-padded, as a big-endian number: comparing two of these
/// orders keys as comparing the keys does, except that equal ones need the whole keys.
fn prefix(k: &[u8]) -> u64 {
    match k.first_chunk::<8>() {
        Some(b) => u64::from_be_bytes(*b),
        None => k
            .iter()
            .enumerate()
            .fold(0, |p, (i, c)| p | (*c as u64) << (56 - 8 * i)),
    }
}

/// [`prefix`] of the `n` bytes at `out[at..]`, reading eight bytes at once where `out` has
/// them (whatever follows the key is masked off).
#[inline(always)]
fn prefix_at(out: &[u8], at: usize, n: usize) -> u64 {
    match out.get(at..at + 8) {
        Some(b) if n >= 8 => u64::from_be_bytes(b.try_into().expect("8 bytes")),
        Some(b) => u64::from_be_bytes(b.try_into().expect("8 bytes")) & !(u64::MAX >> (8 * n)),
        None => prefix(&out[at..at + n]),
    }
}

/// Arrays and objects nest at most this deep. (serde_json skips a value it ignores however
/// deep it is; such an entry falls back to the slower path and its key cannot be computed,
/// as before.)
const MAX_DEPTH: usize = 128;

/// A string of at most this many bytes is copied as this many (from the text, which goes
/// on past it), in one fixed-size move instead of a call to `memcpy`.
const SHORT: usize = 32;

/// Encodes `text`, which must be one JSON value (whitespace around it allowed), into the
/// scratch buffer and returns the bytes; fails on anything that is not JSON.
pub(crate) fn encode<'s>(text: &str, scratch: &'s mut Scratch) -> Result<&'s [u8], ()> {
    let (_, end) = encode_value(text, scratch)?;
    if text.as_bytes()[end..]
        .iter()
        .any(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return Err(());
    }
    Ok(scratch.bytes())
}

/// Encodes the JSON value at the start of `text` (after any whitespace) and returns its
/// encoding and where in `text` it ends; what follows it is not looked at.
pub(crate) fn encode_value<'s>(
    text: &str,
    scratch: &'s mut Scratch,
) -> Result<(&'s [u8], usize), ()> {
    scratch.len = 0;
    scratch.members.clear();
    scratch.origins.clear();
    let mut sc = Scanner {
        t: text,
        b: text.as_bytes(),
        i: 0,
        w: 0,
    };
    sc.value(scratch, 0)?;
    scratch.len = sc.w;
    Ok((scratch.bytes(), sc.i))
}

struct Scanner<'a> {
    t: &'a str,
    b: &'a [u8],
    /// Where in the text the scan is.
    i: usize,
    /// Where in `Scratch::out` the next byte goes.
    w: usize,
}

/// A JSON string's bytes, escapes resolved, as serde_json reads a byte string: the bytes of
/// the `String` it would make, except that a surrogate escape with no partner (`"\ud800"`,
/// a string cut between the halves of a pair) is kept in UTF-8's bit layout (WTF-8) where a
/// `String` refuses it. serde_json skips such a string in a member it ignores, so an entry
/// must not go without a key for it (its source would fail on it for ever); and valid UTF-8
/// never holds those bytes, so no other string encodes the same.
struct Unescaped(Vec<u8>);

impl<'de> serde::Deserialize<'de> for Unescaped {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl serde::de::Visitor<'_> for Bytes {
            type Value = Unescaped;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_bytes<E>(self, b: &[u8]) -> Result<Unescaped, E> {
                Ok(Unescaped(b.to_vec()))
            }
        }
        d.deserialize_bytes(Bytes)
    }
}

/// Whether `n` is a number as JSON spells it: `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn json_number(n: &[u8]) -> bool {
    let digits = |i: &mut usize| {
        let from = *i;
        while *i < n.len() && n[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > from
    };
    let mut i = usize::from(n.first() == Some(&b'-'));
    match n.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if n.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(n.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(n.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == n.len()
}

/// Writes `n` as an unsigned LEB128 varint (lengths and counts in the canonical encoding) at
/// `out[at..]`, which has room for it (ten bytes at most), and returns where it ends.
#[inline(always)]
fn put_len_at(out: &mut [u8], mut at: usize, mut n: u64) -> usize {
    while n >= 0x80 {
        out[at] = (n as u8 & 0x7f) | 0x80;
        n >>= 7;
        at += 1;
    }
    out[at] = n as u8;
    at + 1
}

/// Makes `out` at least `need` bytes long (zero-filled), doubling it at least; refuses an
/// encoding past 4 GiB, so that every position in it fits in 32 bits (see [`Member`]).
#[cold]
#[inline(never)]
fn grow(out: &mut Vec<u8>, need: usize) -> Result<(), ()> {
    const MAX: usize = u32::MAX as usize;
    if need > MAX {
        return Err(());
    }
    out.resize(need.max(2 * out.len()).clamp(1024, MAX), 0);
    Ok(())
}

/// [`Scanner::patch_count`] for a count that needs more than one byte: `out[at + 1..end]`
/// moves up to make room for it; returns by how much.
#[cold]
#[inline(never)]
fn widen_count(out: &mut Vec<u8>, at: usize, end: usize, n: usize) -> Result<usize, ()> {
    let mut count = [0u8; 10];
    let len = put_len_at(&mut count, 0, n as u64);
    if out.len() < end + len - 1 {
        grow(out, end + len - 1)?;
    }
    out.copy_within(at + 1..end, at + len);
    out[at..at + len].copy_from_slice(&count[..len]);
    Ok(len - 1)
}

impl Scanner<'_> {
    /// Makes room for `n` bytes at the write position.
    #[inline(always)]
    fn room(&self, out: &mut Vec<u8>, n: usize) -> Result<(), ()> {
        if out.len() < self.w + n {
            grow(out, self.w + n)?;
        }
        Ok(())
    }

    /// The `N` bytes at the write position, room made for them.
    #[inline(always)]
    fn slot<'o, const N: usize>(&self, out: &'o mut Vec<u8>) -> Result<&'o mut [u8; N], ()> {
        self.room(out, N)?;
        Ok((&mut out[self.w..self.w + N]).try_into().expect("N bytes"))
    }

    /// Writes one byte.
    #[inline(always)]
    fn put(&mut self, out: &mut Vec<u8>, byte: u8) -> Result<(), ()> {
        self.slot::<1>(out)?[0] = byte;
        self.w += 1;
        Ok(())
    }

    /// The next byte that is not whitespace (which it skips), if there is one. Most text
    /// has no whitespace, which one comparison tells.
    #[inline(always)]
    fn next(&mut self) -> Option<u8> {
        match self.b.get(self.i) {
            Some(&c) if c > b' ' => Some(c),
            _ => self.next_after_ws(),
        }
    }

    #[cold]
    #[inline(never)]
    fn next_after_ws(&mut self) -> Option<u8> {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
        self.b.get(self.i).copied()
    }

    fn lit(&mut self, word: &[u8]) -> Result<(), ()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(())
        }
    }

    /// Encodes the string at `self.i` (its opening quote) with `tag`, escapes resolved;
    /// returns where its bytes are in `out`, how many there are, and whether they are
    /// those of the text (no escapes). Eight bytes at `out[at..]` are always there to read
    /// (see [`prefix_at`]).
    #[inline(always)]
    fn string(&mut self, out: &mut Vec<u8>, tag: u8) -> Result<(usize, usize, bool), ()> {
        let start = self.i + 1;
        // Most strings (keys, short values) are under sixteen bytes without escapes: found
        // and copied sixteen bytes at a time.
        if let Some(block) = self.b.get(start..start + 16) {
            let block: &[u8; 16] = block.try_into().expect("16 bytes");
            let n = first_stop16(block);
            if n < 16 && block[n] == b'"' {
                let slot = self.slot::<18>(out)?;
                slot[0] = tag;
                slot[1] = n as u8;
                slot[2..].copy_from_slice(block);
                let at = self.w + 2;
                self.w = at + n;
                self.i = start + n + 1;
                return Ok((at, n, true));
            }
        }
        let mut j = start;
        let mut escaped = false;
        let end = loop {
            let k = find_string_stop(self.b, j).ok_or(())?;
            match self.b[k] {
                b'"' => break k,
                b'\\' => {
                    escaped = true;
                    j = k + 2;
                }
                _ => return Err(()), // a raw control character
            }
        };
        self.i = end + 1;
        if escaped {
            return self
                .unescaped(out, tag, &self.t[start - 1..end + 1])
                .map(|(at, n)| (at, n, false));
        }
        let n = end - start;
        self.room(out, 11 + n.max(SHORT))?;
        let at = if n < 0x80 {
            out[self.w] = tag;
            out[self.w + 1] = n as u8;
            self.w + 2
        } else {
            out[self.w] = tag;
            put_len_at(out, self.w + 1, n as u64)
        };
        match self.b.get(start..start + SHORT) {
            Some(short) if n <= SHORT => out[at..at + SHORT].copy_from_slice(short),
            _ => out[at..at + n].copy_from_slice(&self.b[start..end]),
        }
        self.w = at + n;
        Ok((at, n, true))
    }

    /// [`Scanner::string`] for a string with escapes (`quoted` includes its quotes): rare,
    /// so kept out of line, where its frame does not weigh on every other string.
    #[cold]
    #[inline(never)]
    fn unescaped(
        &mut self,
        out: &mut Vec<u8>,
        tag: u8,
        quoted: &str,
    ) -> Result<(usize, usize), ()> {
        let Unescaped(s) = serde_json::from_str(quoted).map_err(|_| ())?;
        self.room(out, 11 + s.len() + 8)?;
        out[self.w] = tag;
        let at = put_len_at(out, self.w + 1, s.len() as u64);
        out[at..at + s.len()].copy_from_slice(&s);
        self.w = at + s.len();
        Ok((at, s.len()))
    }

    /// Writes a count of `n` into the byte reserved for it at `at`; `origins` are those of
    /// the strings after it, which move with them when the count needs more than one byte.
    #[inline(always)]
    fn patch_count(
        &mut self,
        out: &mut Vec<u8>,
        at: usize,
        n: usize,
        origins: &mut [(usize, usize)],
    ) -> Result<(), ()> {
        if n < 0x80 {
            out[at] = n as u8;
            return Ok(());
        }
        let extra = widen_count(out, at, self.w, n)?;
        self.w += extra;
        origins.iter_mut().for_each(|o| o.0 += extra);
        Ok(())
    }

    /// Encodes the value at `self.i`, after any whitespace. Scalars are encoded right here,
    /// in the loop of the array or object they are in; only arrays and objects are calls.
    #[inline(always)]
    fn value(&mut self, sc: &mut Scratch, depth: usize) -> Result<(), ()> {
        match self.next().ok_or(())? {
            b'{' => self.object(sc, depth),
            b'[' => self.array(sc, depth),
            b'"' => {
                let from = self.i + 1;
                let (at, _, verbatim) = self.string(&mut sc.out, b's')?;
                if verbatim {
                    sc.origins.push((at, from));
                }
                Ok(())
            }
            b't' => self.lit(b"true").and_then(|_| self.put(&mut sc.out, b't')),
            b'f' => self.lit(b"false").and_then(|_| self.put(&mut sc.out, b'f')),
            b'n' => self.lit(b"null").and_then(|_| self.put(&mut sc.out, b'n')),
            b'-' | b'0'..=b'9' => self.number(&mut sc.out),
            _ => Err(()),
        }
    }

    /// Writes a tag and eight bytes.
    #[inline(always)]
    fn put_tagged(&mut self, out: &mut Vec<u8>, tag: u8, bytes: [u8; 8]) -> Result<(), ()> {
        let slot = self.slot::<9>(out)?;
        slot[0] = tag;
        slot[1..].copy_from_slice(&bytes);
        self.w += 9;
        Ok(())
    }

    /// Encodes the number at `self.i`: an integer that fits, the common case, in one pass
    /// over its digits; anything else as [`Scanner::any_number`] does.
    #[inline(never)]
    fn number(&mut self, out: &mut Vec<u8>) -> Result<(), ()> {
        let b = self.b;
        let negative = b[self.i] == b'-';
        let from = self.i + usize::from(negative);
        let mut i = from;
        let mut v: u64 = 0;
        while let Some(d) = b.get(i).map(|c| c.wrapping_sub(b'0')).filter(|d| *d < 10) {
            match v.checked_mul(10).and_then(|v| v.checked_add(u64::from(d))) {
                Some(next) => v = next,
                None => return self.any_number(out),
            }
            i += 1;
        }
        let digits = i - from;
        if digits == 0
            || (digits > 1 && b[from] == b'0')
            || matches!(b.get(i), Some(b'.' | b'e' | b'E' | b'+' | b'-'))
        {
            return self.any_number(out);
        }
        if !negative {
            self.i = i;
            self.put_tagged(out, b'u', v.to_le_bytes())
        } else if v != 0 && v <= 1 << 63 {
            self.i = i;
            // `v` is at most 2^63, so its negation fits (2^63 is i64::MIN).
            self.put_tagged(out, b'i', (v as i64).wrapping_neg().to_le_bytes())
        } else {
            // "-0" is the float -0.0 to serde_json; below i64::MIN a float too.
            self.any_number(out)
        }
    }

    #[cold]
    #[inline(never)]
    fn any_number(&mut self, out: &mut Vec<u8>) -> Result<(), ()> {
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
        if !json_number(n.as_bytes()) {
            return Err(());
        }
        // As serde_json reads numbers: integers that fit are integers (non-negative ones
        // unsigned), everything else a float.
        let float = |me: &mut Self, out: &mut Vec<u8>| -> Result<(), ()> {
            // Out of range is infinite, as before: serde_json skips such a number in a field
            // it ignores, and only refuses it where a number is wanted.
            let f: f64 = n.parse().map_err(|_| ())?;
            me.put_tagged(out, b'd', f.to_bits().to_le_bytes())
        };
        if n.bytes().any(|c| matches!(c, b'.' | b'e' | b'E')) {
            float(self, out)
        } else if let Ok(u) = n.parse::<u64>() {
            self.put_tagged(out, b'u', u.to_le_bytes())
        } else if let Ok(i) = n.parse::<i64>().map_err(|_| ()).and_then(|i| {
            // serde_json reads "-0" as the float -0.0.
            if i == 0 {
                Err(())
            } else {
                Ok(i)
            }
        }) {
            if i >= 0 {
                self.put_tagged(out, b'u', (i as u64).to_le_bytes())
            } else {
                self.put_tagged(out, b'i', i.to_le_bytes())
            }
        } else {
            float(self, out)
        }
    }

    /// Steps over the `[` or `{` at `self.i` and writes `tag` and a count of 0; returns
    /// where the count is. One byte is reserved for it, which is enough below 128 items.
    #[inline(always)]
    fn open(&mut self, out: &mut Vec<u8>, depth: usize, tag: u8) -> Result<usize, ()> {
        if depth >= MAX_DEPTH {
            return Err(());
        }
        self.i += 1;
        *self.slot::<2>(out)? = [tag, 0];
        self.w += 2;
        Ok(self.w - 1)
    }

    #[inline(never)]
    fn array(&mut self, sc: &mut Scratch, depth: usize) -> Result<(), ()> {
        let count_at = self.open(&mut sc.out, depth, b'[')?;
        let origins_base = sc.origins.len();
        let mut n = 0;
        if self.next() == Some(b']') {
            self.i += 1;
            return Ok(()); // its count is the 0 already written
        }
        loop {
            self.value(sc, depth + 1)?;
            n += 1;
            match self.next() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    break;
                }
                _ => return Err(()),
            }
        }
        self.patch_count(&mut sc.out, count_at, n, &mut sc.origins[origins_base..])
    }

    #[inline(never)]
    fn object(&mut self, sc: &mut Scratch, depth: usize) -> Result<(), ()> {
        let count_at = self.open(&mut sc.out, depth, b'{')?;
        let base = sc.members.len();
        let origins_base = sc.origins.len();
        let mut in_order = true;
        let mut c = self.next();
        if c == Some(b'}') {
            self.i += 1;
            return Ok(()); // its count is the 0 already written
        }
        loop {
            if c != Some(b'"') {
                return Err(());
            }
            let start = self.w;
            let strings_from = sc.origins.len();
            let (key, key_len, _) = self.string(&mut sc.out, b'k')?;
            let p = prefix_at(&sc.out, key, key_len);
            if in_order && sc.members.len() > base {
                let last = &sc.members[sc.members.len() - 1];
                // Equal keys (JSON allows them) stay in text order, so they are in order.
                in_order = last.prefix < p
                    || (last.prefix == p && *last.key(&sc.out) <= sc.out[key..key + key_len]);
            }
            if self.next() != Some(b':') {
                return Err(());
            }
            self.i += 1;
            self.value(sc, depth + 1)?;
            // Every position is below `out`'s length, which `grow` keeps within 32 bits,
            // and there are fewer strings than bytes.
            sc.members.push(Member {
                prefix: p,
                start: start as u32,
                end: self.w as u32,
                key: key as u32,
                key_len: key_len as u32,
                strings: (strings_from as u32, sc.origins.len() as u32),
            });
            match self.next() {
                Some(b',') => {
                    self.i += 1;
                    c = self.next();
                }
                Some(b'}') => {
                    self.i += 1;
                    break;
                }
                _ => return Err(()),
            }
        }
        let Scratch {
            out,
            members,
            tmp,
            origins,
            moved,
            ..
        } = sc;
        let mine = &mut members[base..];
        let n = mine.len();
        if !in_order {
            sort_members(mine, out);
            let first = count_at + 1;
            tmp.clear();
            tmp.extend_from_slice(&out[first..self.w]);
            let mut w = first;
            moved.clear();
            for m in mine.iter() {
                let (start, end) = (m.start as usize, m.end as usize);
                let len = end - start;
                out[w..w + len].copy_from_slice(&tmp[start - first..end - first]);
                // The member's strings move with it, and stay in order among themselves.
                let (from, to) = (m.strings.0 as usize, m.strings.1 as usize);
                moved.extend(origins[from..to].iter().map(|o| (o.0 - start + w, o.1)));
                w += len;
            }
            origins[origins_base..].copy_from_slice(moved);
        }
        members.truncate(base);
        self.patch_count(out, count_at, n, &mut origins[origins_base..])
    }
}

/// Encodes the JSON value at the start of `text` (after any whitespace) into `scratch`
/// ([`Scratch::bytes`]) and returns where in `text` that value ends; `None` if it is not JSON.
/// A source reads its entries this way (see [`super::decode`]), and
/// `keys::hash_canonical` of the encoding is `keys::content_hash` of the
/// entry's text.
pub fn canonical_value(text: &str, scratch: &mut Scratch) -> Option<usize> {
    encode_value(text, scratch).ok().map(|(_, end)| end)
}

/// The reference for the scanner: the same encoding, from a parsed tree.
#[cfg(test)]
mod reference {
    /// Appends `n` as an unsigned LEB128 varint, written here again so that the reference
    /// shares nothing with the scanner it checks.
    pub(super) fn put_len(out: &mut Vec<u8>, mut n: u64) {
        while n >= 0x80 {
            out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
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
                    put_len(h, items.len() as u64);
                    for i in items {
                        i.encode(h);
                    }
                }
                Canon::Object(entries) => {
                    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                    h.push(b'{');
                    put_len(h, entries.len() as u64);
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
        put_len(h, s.len() as u64);
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
    use crate::keys::{content_hash, hex_bytes, occurrence_key};

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
        let mut scratch = Scratch::default();
        for _ in 0..20_000 {
            let mut text = String::new();
            random_json(&mut rng, 0, &mut text);
            if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_err() {
                continue; // e.g. duplicate keys are fine, but an odd escape mix may not be
            }
            let fast = encode(&text, &mut scratch).map(|b| b.to_vec());
            assert_eq!(fast, Ok(reference::encode(&text)), "{text}");
        }
        // Keys alike in their first eight bytes, prefixes of each other, NULs, repeats.
        let text = r#"{"abcdefghX":1,"abcdefghA":2,"abcdefgh":3,"abcdefgh\u0000":4,"abcdefgh":5,
                       "abcdefg":6,"abcdefgh\u0000\u0000":7,"b":8,"a\u0000":9,"a":10,"":11,"":12}"#;
        assert_eq!(
            encode(text, &mut scratch).map(|b| b.to_vec()),
            Ok(reference::encode(text))
        );
        // Counts whose varint takes one, two and three bytes, nested and at the top.
        for n in [0, 1, 127, 128, 129, 300, 16_383, 16_384, 20_000] {
            let items = vec!["[1,\"x\"]"; n].join(",");
            for text in [
                format!("[{items}]"),
                format!(r#"{{"b":[{items}],"a":{{"z":[{items}],"y":[]}}}}"#),
            ] {
                let fast = encode(&text, &mut scratch).map(|b| b.to_vec());
                assert_eq!(fast, Ok(reference::encode(&text)), "{n} items");
            }
        }
        // Strings and keys of every length around the short copy's 32 bytes and the one-byte
        // length's 127, with the text ending right after them or going on, unsorted.
        for n in 0..=140 {
            let s = "é".repeat(n / 2) + &"k".repeat(n % 2);
            for text in [
                format!("\"{s}\""),
                format!(r#"{{"{s}":"{s}"}}"#),
                format!(r#"{{"{s}z":"{s}","{s}":["{s}",{n}],"a":1}}  "#),
            ] {
                let fast = encode(&text, &mut scratch).map(|b| b.to_vec());
                assert_eq!(fast, Ok(reference::encode(&text)), "{n} bytes");
            }
        }
    }

    /// The scanner reads entries that serde_json has not seen, so it must refuse exactly what
    /// serde_json refuses.
    #[test]
    fn the_scanner_accepts_exactly_the_json_serde_json_accepts() {
        let serde_ok = |t: &str| serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok();
        let mut scratch = Scratch::default();
        let mut check = |t: &str| {
            let (canon_ok, serde_ok) = (encode(t, &mut scratch).is_ok(), serde_ok(t));
            // Never more lenient. Stricter only past 128 levels of nesting, which serde_json
            // skips at any depth.
            let deep = t.starts_with(&"[".repeat(129)) || t.starts_with(&"{\"a\":".repeat(129));
            assert!(
                canon_ok == serde_ok || (serde_ok && deep),
                "{t:?}: scanner {canon_ok}, serde_json {serde_ok}"
            );
        };
        for t in [
            "01",
            "-01",
            "1.",
            ".5",
            "-",
            "+1",
            "1e",
            "1e+",
            "1E-2",
            "-0.0e0",
            "1e400",
            "-1e400",
            "1e-400",
            "0x10",
            "00",
            "-",
            "1.5.2",
            "1ee2",
            "2e3.5",
            "Infinity",
            "NaN",
            "tru",
            "nul",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{a:1}",
            "[1 2]",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\ud800\"",
            "\"\\ud800\\u0041\"",
            "\"\\udc00\"",
            "\"a\u{1}b\"",
            "\"\t\"",
            "\"\u{7f}\"",
            " [ ] ",
            "[]]",
            "{}}",
            "\"abc",
            "\"",
            "[\"a\",{\"b\":[true,null]}]",
            "\u{a0}1",
            "1\u{b}",
            "\u{c}1",
            "-1.0E+2",
            "123456789012345678901234567890",
        ] {
            check(t);
        }
        for depth in [126, 127, 128, 129] {
            check(&("[".repeat(depth) + &"]".repeat(depth)));
            check(&("{\"a\":".repeat(depth) + "1" + &"}".repeat(depth)));
        }
        // Valid documents with random bytes changed, inserted or dropped.
        let mut rng = fastrand::Rng::with_seed(11);
        let alphabet = b"{}[],:\"\\ 0123456789-+.eEtrufalsn\x01\x1f\tu/x";
        for _ in 0..40_000 {
            let mut text = String::new();
            random_json(&mut rng, 0, &mut text);
            let mut b = text.into_bytes();
            for _ in 0..rng.usize(1..3) {
                let c = alphabet[rng.usize(0..alphabet.len())];
                let at = rng.usize(0..=b.len());
                match rng.u8(0..3) {
                    0 if at < b.len() => b[at] = c,
                    1 if at < b.len() => {
                        b.remove(at);
                    }
                    _ => b.insert(at, c),
                }
            }
            if let Ok(t) = String::from_utf8(b) {
                check(&t);
            }
        }
    }

    /// serde_json skips a lone surrogate escape in a field it ignores but cannot make a String
    /// of it; such an entry still gets a key, which earlier releases could not give it.
    #[test]
    fn lone_surrogates_are_encoded_and_get_a_stable_key() {
        let mut scratch = Scratch::default();
        let mut enc = |t: &str| encode(t, &mut scratch).map(|b| b.to_vec());
        assert_eq!(enc(r#""\ud800""#), Ok(b"s\x03\xed\xa0\x80".to_vec()));
        assert_eq!(enc(r#""\ud800""#), enc(r#""\uD800""#));
        assert_ne!(enc(r#""\ud800""#), enc(r#""\udc00""#));
        assert_ne!(enc(r#""\ud800""#), enc(r#""\ud800\ud800""#));
        // A pair after a lone one is joined, however it is spelled.
        assert_eq!(enc("\"\\ud800\u{1f600}\""), enc(r#""\ud800\ud83d\ude00""#));
        assert_eq!(
            enc(r#"{"k":"x\udfff\n"}"#),
            enc("{\"k\":\"x\\uDFFF\\u000a\"}")
        );
        let entry = r#"{"timestamp":1,"metadata":{"note":"cut \ud83d"}}"#;
        assert!(serde_json::from_str::<serde::de::IgnoredAny>(entry).is_ok());
        let h = content_hash(entry).expect("a key for it");
        assert_eq!(
            hex_bytes(&occurrence_key(&h, 0)),
            *b"585d2080a20470776bff5194d379c9fc",
        );
    }

    /// Strings with escapes are encoded with exactly the bytes of the String serde_json makes
    /// of them (so no key changes), and refused exactly where serde_json refuses to skip them;
    /// lone surrogates, which no String holds, are the test above.
    #[test]
    fn escaped_strings_are_encoded_as_serde_json_reads_them() {
        let pieces = [
            "a", "é", "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u0041",
            "\\u00e9", "\\u20AC", "\\ud83d", "\\uDE00", "\\udbff", "\\udfff", "\\ud800", "\\uDC00",
            "\\u12", "\\x", "\\", "\\u", "\\ug000", "\\u0000",
        ];
        let mut scratch = Scratch::default();
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..20_000 {
            let inner: String = (0..rng.usize(0..5))
                .map(|_| pieces[rng.usize(0..pieces.len())])
                .collect();
            let quoted = format!("\"{inner}\"");
            let fast = encode(&quoted, &mut scratch).map(|b| b.to_vec());
            assert_eq!(
                fast.is_ok(),
                serde_json::from_str::<serde::de::IgnoredAny>(&quoted).is_ok(),
                "{quoted}"
            );
            if let Ok(s) = serde_json::from_str::<String>(&quoted) {
                let mut want = vec![b's'];
                reference::put_len(&mut want, s.len() as u64);
                want.extend_from_slice(s.as_bytes());
                assert_eq!(fast, Ok(want), "{quoted}");
            }
        }
    }

    #[test]
    fn the_scanner_refuses_broken_json_without_panicking() {
        let mut scratch = Scratch::default();
        let text = r#"{"a": [1, "x\"y", {"b": null}], "c": -2.5e3}"#;
        assert!(encode(text, &mut scratch).is_ok());
        for cut in 0..text.len() {
            if text.is_char_boundary(cut) && cut < text.len() {
                assert!(
                    encode(&text[..cut], &mut scratch).is_err(),
                    "{}",
                    &text[..cut]
                );
            }
        }
        let deep = "[".repeat(1000) + &"]".repeat(1000);
        assert!(encode(&deep, &mut scratch).is_err());
    }

    /// Keys are stored: a change to the encoding would make an upgraded agent deliver its overlap
    /// again. These were computed by the encoder of earlier releases and must never change.
    #[test]
    fn content_keys_are_those_of_earlier_releases() {
        let domino = r#"{"timestamp":1795328233784,"actor":{"id":"68f1e00c0232d736e43bb2e3","name":"mallory.smith34","firstName":"Mallory","lastName":"Smith"},"action":{"eventName":"Create Dataset Snapshot","using":[],"traceId":"691a2b1e324fb6dc5758c9d3c9992da1"},"targets":[{"entity":{"entityType":"datasetSnapshot","id":"6b0288e9a0c4786ac438f7dd","name":"snapshot-21"},"fieldChanges":[]}],"affecting":[],"in":{"entityType":"project","id":"68f1e00cf03a4891975edf40","name":"ops-sales-69"},"metadata":{}}"#;
        let many = format!(
            r#"{{"z":[{}],"a\u00e9\n":-1.5e3,"m":{{{}}},"b":[true,false,null,-7,18446744073709551616]}}"#,
            vec!["\"x\\/y\""; 200].join(","),
            (0..150)
                .rev()
                .map(|i| format!(r#""k{i}":{i}"#))
                .collect::<Vec<_>>()
                .join(",")
        );
        for (text, want) in [
            (
                domino,
                "0e5756946f36095e3a985b88b658a197/0a06c0a5717cc8e17093df2598df9991",
            ),
            (
                many.as_str(),
                "f2d72f6e08e2c552392bebff605c5afd/05f3c2266c8a091e5b44a7e979f8b57a",
            ),
        ] {
            let mut scratch = Scratch::default();
            let fast = encode(text, &mut scratch).map(|b| b.to_vec());
            assert_eq!(fast, Ok(reference::encode(text)));
            let h = content_hash(text).unwrap();
            let k = occurrence_key(&h, 1);
            let got = format!(
                "{}/{}",
                String::from_utf8(hex_bytes(h[..16].try_into().unwrap()).to_vec()).unwrap(),
                String::from_utf8(hex_bytes(&k).to_vec()).unwrap()
            );
            assert_eq!(got, want, "{text}");
        }
    }
}
