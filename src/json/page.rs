//! One pass over a page: each entry of the events array is parsed into its vendor shape and its
//! raw text is taken at the same time, instead of splitting the array into raw values first and
//! parsing each again.
//!
//! serde_json does the parsing (and so the validation) of every value, or, for content-keyed
//! sources, the canonical scanner ([`super::canon`]), which accepts the same JSON (see
//! [`Cursor::hashed_value`]); this module only walks the punctuation between them: the envelope
//! object's braces, keys and commas, and the array's brackets and commas. Entry values come from
//! a `StreamDeserializer` or the scanner, which say where a value ends.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::canon;

/// Why a page's JSON could not be walked: what was expected, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageError(pub String);

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PageError {}

#[cfg(test)]
thread_local! {
    /// How many entries [`Cursor::hashed_value`] read without serde_json, from their canonical
    /// encoding.
    pub(crate) static FAST_READS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A JSON string field of a vendor entry: borrowed from the page when it holds no escapes.
/// (serde borrows a bare `Cow<str>` field but never one inside an `Option`; this type borrows
/// in either place.)
#[derive(Debug)]
pub struct Text<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// A vendor entry's serde shape, for text of any lifetime: an entry can be read from the page
/// or from its canonical encoding (see [`read_hashed_entries`]).
pub trait Shape {
    type Raw<'a>: serde::Deserialize<'a>;
}

/// A position in a page's text.
pub struct Cursor<'p> {
    text: &'p str,
    pos: usize,
}

impl<'p> Cursor<'p> {
    pub fn new(text: &'p str) -> Cursor<'p> {
        Cursor { text, pos: 0 }
    }

    fn ws(&mut self) {
        let b = self.text.as_bytes();
        while self.pos < b.len() && matches!(b[self.pos], b' ' | b'\t' | b'\n' | b'\r') {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.text.as_bytes().get(self.pos).copied()
    }

    fn error(&self, what: &str) -> PageError {
        PageError(format!("{what} at byte {}", self.pos))
    }

    fn expect(&mut self, c: u8, what: &str) -> Result<(), PageError> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    /// The JSON value at the cursor, parsed as `T`, and its text.
    pub fn value<T: Deserialize<'p>>(&mut self) -> Result<(&'p str, T), PageError> {
        self.ws();
        let rest = &self.text[self.pos..];
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<T>();
        let value = match values.next() {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                return match with_lone_surrogates_replaced::<T>(rest) {
                    Some((len, value)) => {
                        self.pos += len;
                        Ok((&rest[..len], value))
                    }
                    None => Err(self.error(&e.to_string())),
                }
            }
            None => return Err(self.error("expected a value")),
        };
        let len = values.byte_offset();
        self.pos += len;
        Ok((&rest[..len], value))
    }

    /// Reads the JSON value at the cursor with the canonical scanner, and takes `S`'s shape
    /// from its encoding (see [`super::decode`]): `each` gets the value's text, its shape and its
    /// canonical encoding (whose hash is its content hash). Where the encoding cannot give the
    /// shape exactly as serde_json would, the value is parsed by serde_json, as
    /// [`Cursor::value`] does, and what serde_json says goes.
    pub fn hashed_value<S: Shape, R>(
        &mut self,
        scratch: &mut canon::Scratch,
        each: impl for<'a> FnOnce(&'p str, S::Raw<'a>, Option<&[u8]>) -> R,
    ) -> Result<R, PageError> {
        self.ws();
        let rest = &self.text[self.pos..];
        let mut encoded = None;
        if let Some(len) = canon::canonical_value(rest, scratch) {
            encoded = Some(len);
            let text = &rest[..len];
            if let Some(shape) = super::decode::from_canonical::<S::Raw<'_>>(
                scratch.bytes(),
                scratch.origins(),
                text,
            ) {
                self.pos += len;
                #[cfg(test)]
                FAST_READS.set(FAST_READS.get() + 1);
                return Ok(each(text, shape, Some(scratch.bytes())));
            }
        }
        let (text, shape) = self.value::<S::Raw<'p>>()?;
        let encoding = encoded
            .filter(|len| *len == text.len())
            .map(|_| scratch.bytes());
        Ok(each(text, shape, encoding))
    }

    /// Calls `element` with the cursor at each element of the array at the cursor, to read
    /// it; returns how many there were.
    pub fn elements(
        &mut self,
        mut element: impl FnMut(&mut Cursor<'p>) -> Result<(), PageError>,
    ) -> Result<usize, PageError> {
        self.expect(b'[', "expected an array")?;
        let mut n = 0;
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(0);
        }
        loop {
            element(self)?;
            n += 1;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(n);
                }
                _ => return Err(self.error("expected ',' or ']' in the array")),
            }
        }
    }

    /// Walks the object at the cursor: `member` gets each key with the cursor at its value, and
    /// returns whether it read the value (a value it leaves is checked to be JSON and skipped).
    pub fn object(
        &mut self,
        mut member: impl FnMut(&str, &mut Cursor<'p>) -> Result<bool, PageError>,
    ) -> Result<(), PageError> {
        self.expect(b'{', "expected an object")?;
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a key"));
            }
            let (_, key) = self.value::<Text>()?;
            self.expect(b':', "expected ':' after a key")?;
            if !member(&key, self)? {
                self.value::<IgnoredAny>()?;
            }
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.error("expected ',' or '}' in the object")),
            }
        }
    }

    /// Checks that nothing but whitespace follows.
    pub fn end(&mut self) -> Result<(), PageError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error("trailing characters")),
        }
    }
}

/// The value at the start of `text`, when serde_json refused it only for a string it cannot
/// make: a surrogate escape with no partner (`"\ud83d"`), as a vendor writes when it cuts a
/// string between the halves of a pair. serde_json skips such a string, but cannot give it as
/// text, so the entry (and with it the page, retried for ever) would be refused. It is read
/// again with each such escape as U+FFFD, `\ufffd`; its raw text, and so its content key, stay
/// as sent. Returns the value and where it ends in `text`; `None` if it is refused for anything
/// else. Only a refused entry comes here.
fn with_lone_surrogates_replaced<'p, T: Deserialize<'p>>(text: &'p str) -> Option<(usize, T)> {
    let mut skip = serde_json::Deserializer::from_str(text).into_iter::<IgnoredAny>();
    skip.next()?.ok()?;
    let len = skip.byte_offset();
    let fixed = replace_lone_surrogates(&text[..len])?;
    // Read from bytes it does not borrow from: every string comes out owned, which the vendor
    // shapes take (`Text`), while the raw still points into the page.
    let mut de = serde_json::Deserializer::from_reader(fixed.as_bytes());
    let value = T::deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some((len, value))
}

/// `json` (JSON text) with every surrogate escape that is not half of a pair written `\ufffd`;
/// `None` if there is none.
fn replace_lone_surrogates(json: &str) -> Option<String> {
    let b = json.as_bytes();
    let unit = |at: usize| -> Option<u16> {
        let hex = b.get(at..at + 6)?;
        if &hex[..2] != b"\\u" {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()
    };
    let high = |u: u16| (0xd800..0xdc00).contains(&u);
    let low = |u: u16| (0xdc00..0xe000).contains(&u);
    let mut out = String::new();
    let (mut copied, mut i) = (0, 0);
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        match unit(i) {
            Some(u) if high(u) && unit(i + 6).is_some_and(low) => i += 12,
            Some(u) if high(u) || low(u) => {
                out.push_str(&json[copied..i]);
                out.push_str("\\ufffd");
                i += 6;
                copied = i;
            }
            Some(_) => i += 6,
            // Any other escape is two characters; this skips an escaped backslash whole.
            None => i += 2,
        }
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&json[copied..]);
    Some(out)
}

/// Reads a page that is a bare array of entries.
pub fn bare_array<'p>(
    page: &'p str,
    element: impl FnMut(&mut Cursor<'p>) -> Result<(), PageError>,
) -> Result<usize, PageError> {
    let mut c = Cursor::new(page);
    let n = c.elements(element)?;
    c.end()?;
    Ok(n)
}

/// Reads a page that is an object holding the entries under `field` (required, once) and, when
/// `total` names one, a count under that key. Other members are checked to be JSON and skipped,
/// whatever they hold.
pub fn enveloped<'p>(
    page: &'p str,
    field: &str,
    total: Option<&str>,
    mut element: impl FnMut(&mut Cursor<'p>) -> Result<(), PageError>,
) -> Result<(usize, Option<u64>), PageError> {
    let mut c = Cursor::new(page);
    let mut entries = None;
    let mut count = None;
    c.object(|key, c| {
        if key == field {
            if entries.is_some() {
                return Err(PageError(format!("duplicate field {field:?}")));
            }
            entries = Some(c.elements(&mut element)?);
            Ok(true)
        } else if Some(key) == total {
            count = Some(c.value::<u64>()?.1);
            Ok(true)
        } else {
            Ok(false)
        }
    })?;
    c.end()?;
    let n = entries.ok_or_else(|| PageError(format!("missing field {field:?}")))?;
    Ok((n, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct E<'a> {
        #[serde(borrow)]
        id: Text<'a>,
    }

    /// Each entry's text and id, and the total.
    type Read = (Vec<(String, String)>, Option<u64>);

    /// An element reader that parses each element as `T` and passes it on with its text.
    fn each<'p, T: Deserialize<'p>>(
        mut f: impl FnMut(&'p str, T) -> Result<(), PageError>,
    ) -> impl FnMut(&mut Cursor<'p>) -> Result<(), PageError> {
        move |c| {
            let (text, value) = c.value::<T>()?;
            f(text, value)
        }
    }

    fn read(page: &str) -> Result<Read, PageError> {
        let mut got = Vec::new();
        let (n, total) = enveloped(
            page,
            "events",
            Some("total"),
            each(|raw, e: E| {
                got.push((raw.to_string(), e.id.to_string()));
                Ok(())
            }),
        )?;
        assert_eq!(n, got.len());
        Ok((got, total))
    }

    #[test]
    fn entries_come_with_their_exact_text() {
        let (got, total) = read(
            " {\"page\": {\"x\": [1, \"]\"]}, \"events\" : [ {\"id\": \"a\", \"n\": [1,{}]} ,{\"id\":\"b\\u0020c\"}\n], \"total\": 7 } ",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                (r#"{"id": "a", "n": [1,{}]}"#.into(), "a".into()),
                (r#"{"id":"b\u0020c"}"#.into(), "b c".into()),
            ]
        );
        assert_eq!(total, Some(7));
        assert_eq!(read(r#"{"events": []}"#).unwrap(), (vec![], None));
        // A count nobody asked for is any JSON at all.
        let n = enveloped(
            r#"{"total": null, "events": [{"id": "a"}]}"#,
            "events",
            None,
            each(|_, _: E| Ok(())),
        );
        assert_eq!(n.unwrap(), (1, None));
        let mut ids = Vec::new();
        let n = bare_array(
            r#"[{"id":"x"},{"id":"y"}]"#,
            each(|_, e: E| {
                ids.push(e.id.to_string());
                Ok(())
            }),
        )
        .unwrap();
        assert_eq!((n, ids), (2, vec!["x".to_string(), "y".to_string()]));
    }

    #[test]
    fn anything_that_is_not_the_expected_json_is_refused() {
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"events": {}}"#,
            r#"{"events": [], "events": []}"#,
            r#"{"events": [{"id": "a"}"#,
            r#"{"events": [{"id": "a"},]}"#,
            r#"{"events": [{"id": "a"} {"id": "b"}]}"#,
            r#"{"events": [{"id": 1}]}"#,
            r#"{"events": [{"x": 1}]}"#,
            r#"{"events": [{"id": "a", "x": tru}]}"#,
            r#"{"events": [], "other": [1,]}"#,
            r#"{"events": [], "total": -1}"#,
            r#"{"events": []} x"#,
            r#"{"events": [] "total": 1}"#,
            r#"{events: []}"#,
        ] {
            assert!(matches!(read(bad), Err(PageError(_))), "{bad}");
        }
        for bad in ["", "{}", "[", r#"[{"id":"a"}"#, r#"[{"id":"a"}]]"#] {
            assert!(bare_array(bad, each(|_, _: E| Ok(()))).is_err(), "{bad}");
        }
    }
}
