//! A serde `Deserializer` straight over an entry's JSON text, for the plain entries most pages
//! are made of: objects of strings without escapes, integers, literals, a little nesting. It
//! gives a visitor exactly the calls serde_json gives for the same text, and where it cannot be
//! sure of that it refuses, and the caller parses the entry with serde_json instead, whose answer
//! (value or error) is then the one used (as [`super::decode`] does for content-keyed sources). So it
//! refuses:
//! - a string with an escape (serde_json would have to unescape it into a copy);
//! - any number but an integer that fits in 64 bits (serde_json's float parsing is its own);
//! - a struct written as an array, enums, bytes, chars, units, and float requests;
//! - nesting past 32 levels;
//! - a map or sequence whose visitor stops before its end;
//! - every error, JSON or shape: serde_json's message, with its position, is the one worth
//!   reporting.
//!
//! What it saves is serde_json's generic machinery: strings are found sixteen bytes at a time
//! ([`super::scan`]), and nothing is checked twice. The Wasabi AiR reader, whose entries are flat
//! objects of ids, spends about a third less on each.

use serde::de::{self, DeserializeSeed, Visitor};

use super::scan::find_string_stop;
use super::{shared_requests, Int, Refused};

/// Reads `T` from the JSON value at the start of `text` (no whitespace before it), and returns
/// it with where the value ends; `None` when the caller must ask serde_json instead.
pub fn from_text<'a, T: de::Deserialize<'a>>(text: &'a str) -> Option<(T, usize)> {
    let mut r = Plain {
        t: text,
        b: text.as_bytes(),
        i: 0,
        depth: 0,
    };
    let v = T::deserialize(&mut r).ok()?;
    Some((v, r.i))
}

/// Containers nest at most this deep here (serde_json allows 128; deeper entries go to it).
const MAX_DEPTH: u32 = 32;

struct Plain<'a> {
    t: &'a str,
    b: &'a [u8],
    i: usize,
    depth: u32,
}

impl<'a> Plain<'a> {
    /// The next byte that is not JSON whitespace (which it skips).
    #[inline]
    fn peek(&mut self) -> Result<u8, Refused> {
        loop {
            match self.b.get(self.i) {
                Some(b' ' | b'\n' | b'\t' | b'\r') => self.i += 1,
                Some(&c) => return Ok(c),
                None => return Err(Refused),
            }
        }
    }

    /// The string whose opening quote is at `self.i`, if it has no escape (and, as JSON
    /// requires, no raw control character).
    #[inline]
    fn str(&mut self) -> Result<&'a str, Refused> {
        let start = self.i + 1;
        let end = find_string_stop(self.b, start).ok_or(Refused)?;
        if self.b[end] != b'"' {
            return Err(Refused);
        }
        self.i = end + 1;
        // Both ends are ASCII quotes, so on character boundaries.
        self.t.get(start..end).ok_or(Refused)
    }

    /// `word` (a literal) at `self.i`.
    fn lit(&mut self, word: &[u8]) -> Result<(), Refused> {
        if !self.b[self.i..].starts_with(word) {
            return Err(Refused);
        }
        self.i += word.len();
        Ok(())
    }

    /// The integer at `self.i`, as serde_json reads it where it is one: `-?(0|[1-9][0-9]*)`
    /// that fits (`-0` is a float to serde_json, so refused, as are fractions and exponents).
    fn int(&mut self) -> Result<Int, Refused> {
        let negative = self.b[self.i] == b'-';
        let from = self.i + usize::from(negative);
        let mut i = from;
        let mut v: u64 = 0;
        while let Some(d) = self
            .b
            .get(i)
            .map(|c| c.wrapping_sub(b'0'))
            .filter(|d| *d < 10)
        {
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d)))
                .ok_or(Refused)?;
            i += 1;
        }
        let digits = i - from;
        if digits == 0
            || (digits > 1 && self.b[from] == b'0')
            || matches!(self.b.get(i), Some(b'.' | b'e' | b'E'))
        {
            return Err(Refused);
        }
        self.i = i;
        match negative {
            false => Ok(Int::U(v)),
            true if v != 0 && v <= 1 << 63 => Ok(Int::I((v as i64).wrapping_neg())),
            true => Err(Refused),
        }
    }

    /// The integer a number request gets, where the value is one.
    fn integer(&mut self) -> Result<Int, Refused> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.int(),
            _ => Err(Refused),
        }
    }

    /// Steps into the array or object at `self.i`, whose closing byte is `close`.
    fn inside(&mut self, close: u8) -> Result<Inside<'_, 'a>, Refused> {
        if self.depth == MAX_DEPTH {
            return Err(Refused);
        }
        self.depth += 1;
        self.i += 1;
        Ok(Inside {
            r: self,
            close,
            first: true,
            done: false,
        })
    }

    /// Skips one value, whatever it is (within what this reader reads at all).
    fn skip(&mut self) -> Result<(), Refused> {
        match self.peek()? {
            b'"' => self.str().map(|_| ()),
            b't' => self.lit(b"true"),
            b'f' => self.lit(b"false"),
            b'n' => self.lit(b"null"),
            b'-' | b'0'..=b'9' => self.int().map(|_| ()),
            b'[' => {
                let mut items = self.inside(b']')?;
                while items.step()? {
                    items.r.skip()?;
                }
                Ok(())
            }
            b'{' => {
                let mut members = self.inside(b'}')?;
                while members.key()?.is_some() {
                    members.r.skip()?;
                }
                Ok(())
            }
            _ => Err(Refused),
        }
    }

    fn map<V: Visitor<'a>>(&mut self, v: V) -> Result<V::Value, Refused> {
        let mut members = self.inside(b'}')?;
        let value = v.visit_map(&mut members)?;
        members.finish()?;
        Ok(value)
    }

    fn seq<V: Visitor<'a>>(&mut self, v: V) -> Result<V::Value, Refused> {
        let mut items = self.inside(b']')?;
        let value = v.visit_seq(&mut items)?;
        items.finish()?;
        Ok(value)
    }
}

impl<'de> de::Deserializer<'de> for &mut Plain<'de> {
    type Error = Refused;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refused> {
        match self.peek()? {
            b'{' => self.map(v),
            b'[' => self.seq(v),
            b'"' => v.visit_borrowed_str(self.str()?),
            b't' => self.lit(b"true").and_then(|_| v.visit_bool(true)),
            b'f' => self.lit(b"false").and_then(|_| v.visit_bool(false)),
            b'n' => self.lit(b"null").and_then(|_| v.visit_unit()),
            b'-' | b'0'..=b'9' => match self.int()? {
                Int::U(u) => v.visit_u64(u),
                Int::I(i) => v.visit_i64(i),
            },
            _ => Err(Refused),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refused> {
        if self.peek()? == b'n' {
            self.lit(b"null")?;
            v.visit_none()
        } else {
            v.visit_some(self)
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refused> {
        match self.peek()? {
            b'"' => v.visit_borrowed_str(self.str()?),
            _ => Err(Refused),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refused> {
        match self.peek()? {
            b't' => self.lit(b"true").and_then(|_| v.visit_bool(true)),
            b'f' => self.lit(b"false").and_then(|_| v.visit_bool(false)),
            _ => Err(Refused),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refused> {
        match self.peek()? {
            b'[' => self.seq(v),
            _ => Err(Refused),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refused> {
        match self.peek()? {
            b'{' => self.map(v),
            _ => Err(Refused),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Refused> {
        // serde_json also takes an array of the fields in order; that is left to it.
        self.deserialize_map(v)
    }

    shared_requests!();
}

/// The items of an array or the members of an object, after its opening byte, in text order
/// (as serde_json gives them).
struct Inside<'r, 'a> {
    r: &'r mut Plain<'a>,
    /// `]` or `}`.
    close: u8,
    first: bool,
    /// The closing byte has been read.
    done: bool,
}

impl<'a> Inside<'_, 'a> {
    /// Steps to the next item or member (past a comma); false at the end (past the closing
    /// byte).
    fn step(&mut self) -> Result<bool, Refused> {
        if self.done {
            return Ok(false);
        }
        match (self.first, self.r.peek()?) {
            (_, c) if c == self.close => {
                self.r.i += 1;
                self.r.depth -= 1;
                self.done = true;
                return Ok(false);
            }
            (false, b',') => self.r.i += 1,
            (true, _) => {}
            _ => return Err(Refused),
        }
        self.first = false;
        Ok(true)
    }

    /// An object's next key (the colon after it read too); `None` at its end.
    fn key(&mut self) -> Result<Option<&'a str>, Refused> {
        if !self.step()? {
            return Ok(None);
        }
        if self.r.peek()? != b'"' {
            return Err(Refused);
        }
        let key = self.r.str()?;
        if self.r.peek()? != b':' {
            return Err(Refused);
        }
        self.r.i += 1;
        Ok(Some(key))
    }

    /// After a visitor: it is done if it read to the end or stopped just before it (serde_json's
    /// `end_seq`/`end_map` accept the closing byte there and nothing else).
    fn finish(&mut self) -> Result<(), Refused> {
        match self.step()? {
            false => Ok(()),
            true => Err(Refused),
        }
    }
}

impl<'de> de::SeqAccess<'de> for &mut Inside<'_, 'de> {
    type Error = Refused;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Refused> {
        if !self.step()? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.r).map(Some)
    }
}

impl<'de> de::MapAccess<'de> for &mut Inside<'_, 'de> {
    type Error = Refused;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Refused> {
        match self.key()? {
            Some(key) => seed.deserialize(TextKey(key)).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Refused> {
        seed.deserialize(&mut *self.r)
    }
}

/// An object's key, given as serde_json gives a key without escapes: a borrowed string.
/// (serde_json reads a key as a number where one is asked for; such a request is refused here
/// by the visitor's own error.)
struct TextKey<'a>(&'a str);

impl<'de> de::Deserializer<'de> for TextKey<'de> {
    type Error = Refused;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refused> {
        v.visit_borrowed_str(self.0)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// What serde_json gives, when this reader gives anything.
    fn same<'a, T: Deserialize<'a> + PartialEq + std::fmt::Debug>(text: &'a str) -> bool {
        let Some((plain, end)) = from_text::<T>(text) else {
            return false;
        };
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<T>();
        let json = stream
            .next()
            .expect("a value")
            .expect("serde_json reads it");
        assert_eq!(plain, json, "{text}");
        assert_eq!(end, stream.byte_offset(), "{text}");
        true
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Flat<'a> {
        #[serde(borrow)]
        id: &'a str,
        #[serde(borrow)]
        name: Option<&'a str>,
        n: Option<i64>,
        ok: Option<bool>,
        #[serde(default)]
        tags: Vec<u32>,
    }

    #[test]
    fn plain_entries_read_as_serde_json_reads_them() {
        for text in [
            r#"{"id":"a","name":"b","n":-3,"ok":true,"tags":[1,2]}"#,
            r#"{ "id" : "a" , "name" : null ,"n":0 } , "trailing is the caller's""#,
            "{\n\t\"ok\":false,\r\n\"id\":\"é ✓\"}]",
            r#"{"x":{"y":[null,true,{"z":-9223372036854775808}],"w":{}},"id":"a","v":[]}"#,
            r#"{"id":"a","n":9223372036854775807,"name":"0123456789abcdef0123456789"}"#,
            r#"{"id":"a","tags":[]}"#,
        ] {
            assert!(same::<Flat>(text), "refused {text}");
        }
    }

    #[test]
    fn what_it_cannot_read_exactly_is_left_to_serde_json() {
        for text in [
            r#"{"id":"a\"b"}"#,                       // an escape
            r#"{"id":"a","x":"\u0041"}"#,             // one in an ignored member
            r#"{"id":"a","n":1.0}"#,                  // a float
            r#"{"id":"a","x":1e5}"#,                  // one ignored
            r#"{"id":"a","n":-0}"#,                   // -0 is a float to serde_json
            r#"{"id":"a","x":18446744073709551616}"#, // past u64
            r#"{"id":"a","n":01}"#,                   // not JSON
            r#"["a",null,null,null]"#,                // a struct as an array
            r#"{"id":"a","id":"b"}"#,                 // a repeated field
            r#"{"name":"b"}"#,                        // a missing one
            r#"{"id":"a",}"#,                         // a trailing comma
            r#"{"id":"a""#,                           // cut short
            r#"{"id":"a" "n":1}"#,                    // no comma
            r#"{"id":tru}"#,                          // a broken literal
            "{\"id\":\"a\tb\"}",                      // a raw control character
            r#"{"id":"a","n":"1"}"#,                  // a wrong type
        ] {
            assert!(from_text::<Flat>(text).is_none(), "read {text}");
        }
        let deep = format!(r#"{{"id":"a","x":{}1{}}}"#, "[".repeat(40), "]".repeat(40));
        assert!(from_text::<Flat>(&deep).is_none());
        let ok = format!(r#"{{"id":"a","x":{}1{}}}"#, "[".repeat(30), "]".repeat(30));
        assert!(same::<Flat>(&ok));
    }

    #[test]
    fn a_map_or_sequence_left_unfinished_is_refused() {
        // A visitor that takes one item and stops.
        struct One;
        impl<'de> Deserialize<'de> for One {
            fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<One, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = One;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a sequence")
                    }
                    fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<One, A::Error> {
                        s.next_element::<u8>()?;
                        Ok(One)
                    }
                }
                d.deserialize_seq(V)
            }
        }
        assert!(from_text::<One>("[1]").is_some());
        assert!(from_text::<One>("[1,2]").is_none());
    }
}
