//! The byte search that JSON reading and writing share: where a run of plain string bytes ends.
//! The canonical scanner ([`super::canon`]) looks for the end of every string of an entry with
//! it, and the event writer (`event::push_json_str`) for the first byte to escape.

/// The first position from `from` on where `b` holds `"`, `\` or a control character (below
/// 0x20, which JSON does not allow raw in a string): the bytes that end a run of plain string
/// bytes in JSON text, and those a JSON string must escape. `None` if there is none (or `from`
/// is past the end).
#[inline(always)]
pub fn find_string_stop(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    while let Some(block) = b.get(i..i + 16) {
        let m = sse2::stops(block);
        if m != 0 {
            return Some(i + m.trailing_zeros() as usize);
        }
        i += 16;
    }
    while i + 8 <= b.len() {
        let hit = stops_in_word(u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes")));
        if hit != 0 {
            // The lowest flagged byte is a true match (borrows only run upwards).
            return Some(i + (hit.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    // Fewer than eight bytes left: one word check over them (read as two overlapping halves,
    // or picked one by one), then a look at each byte only if it found something.
    let rest = b.get(i..)?;
    let w = match rest.len() {
        0 => return None,
        n @ 1..=3 => u64::from_le_bytes([
            rest[0],
            rest[n / 2],
            rest[n - 1],
            b'a',
            b'a',
            b'a',
            b'a',
            b'a',
        ]),
        n => {
            let half =
                |at: usize| u32::from_le_bytes(rest[at..at + 4].try_into().expect("4 bytes"));
            u64::from(half(0)) | u64::from(half(n - 4)) << 32
        }
    };
    if stops_in_word(w) == 0 {
        return None;
    }
    rest.iter()
        .position(|c| *c == b'"' || *c == b'\\' || *c < 0x20)
        .map(|k| i + k)
}

/// Where the first `"`, `\` or control character is among sixteen bytes: 16 or more if none.
#[inline(always)]
pub fn first_stop16(block: &[u8; 16]) -> usize {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    return sse2::stops(block).trailing_zeros() as usize;
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    return find_string_stop(block, 0).unwrap_or(16);
}

/// The high bit of every byte of `w` (little-endian) that is `"`, `\` or below 0x20, and maybe
/// of bytes above a flagged one; the lowest flagged byte is always a true match. Bytes from 0x80
/// up (UTF-8) never match.
#[inline(always)]
pub fn stops_in_word(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    // Bytes below 0x20: subtracting 0x20 borrows from them, and only from them among bytes
    // without their high bit set.
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    zero(w ^ (ONES * b'"' as u64)) | zero(w ^ (ONES * b'\\' as u64)) | control
}

/// Sixteen bytes at a time with SSE2, which every x86-64 processor has: most strings of an
/// audit entry (keys, ids, names) end within the first sixteen bytes, found in one step.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };

    /// A bit per byte of `b` (sixteen bytes), set where the byte is `"`, `\` or below 0x20.
    #[inline(always)]
    pub fn stops(b: &[u8]) -> u32 {
        assert!(b.len() >= 16);
        // SAFETY: the sixteen bytes read are in `b` (asserted just above, and known to the
        // callers, so the check is free), and `loadu` needs no alignment. The other intrinsics
        // only compute on registers and need SSE2, which the build enables (the cfg on this
        // module), as it does for every x86-64 target.
        unsafe {
            let v = _mm_loadu_si128(b.as_ptr().cast::<__m128i>());
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // Unsigned `v <= 0x1f`: the minimum of the two is `v` itself only then.
            let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_string_search_finds_the_first_quote_backslash_or_control_character() {
        for len in 0..90 {
            for at in 0..=len {
                for (c, other) in [(b'"', b'\\'), (b'\\', b'"'), (0x1f, b'"'), (0, b'\\')] {
                    let mut b = vec![b'a'; len];
                    // Bytes either side of the searched ones, and a later match of the other.
                    for (i, x) in b.iter_mut().enumerate() {
                        *x = [b'a', b'!', 0x21 ^ 1, b'#', 0xe9, b'[', 0x20, 0x7f, 0xff][i % 9];
                    }
                    if at < len {
                        b[at] = c;
                        if at + 3 < len {
                            b[at + 3] = other;
                        }
                    }
                    for from in [0, 1, 7, 17].into_iter().filter(|f| *f <= len + 2) {
                        let want = b
                            .iter()
                            .enumerate()
                            .skip(from)
                            .find(|(_, x)| **x == b'"' || **x == b'\\' || **x < 0x20)
                            .map(|(i, _)| i);
                        assert_eq!(find_string_stop(&b, from), want, "{len} {at} {from}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_word_check_finds_exactly_the_bytes_to_escape() {
        for b in 0..=255u8 {
            let expect = b < 0x20 || b == b'"' || b == b'\\';
            for pos in 0..8 {
                let mut w = [b'a'; 8];
                w[pos] = b;
                assert_eq!(
                    stops_in_word(u64::from_le_bytes(w)) != 0,
                    expect,
                    "{b:#x} at {pos}"
                );
            }
            let mut v = [b'a'; 16];
            for pos in 0..16 {
                v[pos] = b;
                #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
                assert_eq!(sse2::stops(&v), u32::from(expect) << pos, "{b:#x} at {pos}");
                let first = first_stop16(&v).min(16);
                assert_eq!(first, if expect { pos } else { 16 }, "{b:#x} at {pos}");
                v[pos] = b'a';
            }
        }
    }
}

/// The JSON text of the value of `key` in the top-level object `raw` (a string with its
/// quotes, or a number), found by one scan that skips strings and nested values: no tree is
/// built, and nothing is validated — `raw` is an event's text, which its page's walk already
/// read as JSON. `None` when the key is absent or its value is an object or array.
///
/// The SIEM encodings' lookups in an event's text: OCSF's `metadata.original_time` (every
/// vendor's time key) and a vendor's action code (Domo's `actionType`). Kept over the page
/// walker ([`super::page::Cursor::object`], which deserializes each value it passes): an A/B
/// of the whole agent (`benches/e2e.py --ab`, 200k Domo events into a file, median of 5 rounds)
/// measured 2.71 µs of CPU per event with this scan against 3.19 with the walker for
/// `format = "ocsf"` (the walker 18% more), and 2.43 against 2.64 for `"ecs"` (9%).
pub fn top_level<'r>(raw: &'r str, key: &str) -> Option<&'r str> {
    let b = raw.as_bytes();
    let mut i = b.iter().position(|&c| c == b'{')? + 1;
    let mut depth = 1usize;
    let mut want_key = true;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let end = string_end(b, i)?;
                if depth == 1 && want_key {
                    let mut j = skip_ws(b, end);
                    if b.get(j) != Some(&b':') {
                        return None;
                    }
                    j = skip_ws(b, j + 1);
                    if &raw[i + 1..end - 1] == key {
                        let stop = match b.get(j)? {
                            b'"' => string_end(b, j)?,
                            b'{' | b'[' => return None,
                            _ => {
                                j + b[j..].iter().position(|c| {
                                    matches!(c, b',' | b'}' | b']') || c.is_ascii_whitespace()
                                })?
                            }
                        };
                        return Some(&raw[j..stop]);
                    }
                    want_key = false;
                    i = j;
                    continue;
                }
                i = end;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth -= 1,
            b',' if depth == 1 => want_key = true,
            _ => {}
        }
        if depth == 0 {
            return None;
        }
        i += 1;
    }
    None
}

/// The position after the string that opens at `b[at]`.
fn string_end(b: &[u8], at: usize) -> Option<usize> {
    let mut j = at + 1;
    loop {
        let p = find_string_stop(b, j)?;
        match b[p] {
            b'"' => return Some(p + 1),
            b'\\' => j = p + 2,
            _ => j = p + 1,
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod top_level_tests {
    use super::top_level;

    #[test]
    fn finds_only_top_level_keys() {
        let raw =
            r#"{"a":{"time":"inner"},"s":"x\"time\":1","time":"2024-01-02T03:04:05Z","n":17}"#;
        assert_eq!(top_level(raw, "time"), Some(r#""2024-01-02T03:04:05Z""#));
        assert_eq!(top_level(raw, "n"), Some("17"));
        assert_eq!(top_level(raw, "a"), None);
        assert_eq!(top_level(raw, "missing"), None);
        assert_eq!(
            top_level(r#"{"x":[1,{"timestamp":2}],"timestamp" : 3 }"#, "timestamp"),
            Some("3")
        );
        assert_eq!(top_level("not json", "time"), None);
    }
}
