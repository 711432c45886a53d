//! A serde `Deserializer` over the canonical encoding of [`super::canon`] (tagged values, objects with
//! their members sorted by key): a content-keyed source reads each entry once, into that
//! encoding, and takes its vendor shape from there instead of parsing the JSON a second time.
//!
//! It gives a visitor exactly the calls serde_json would for the same JSON, where it can; where
//! it cannot be sure of that it refuses, and the caller parses the entry with serde_json
//! instead, whose answer (value or error) is then the one used. So it refuses:
//! - floating-point numbers wherever a value is wanted (serde_json's float parsing is not the
//!   standard library's, so the two may differ in the last bit); skipping one is fine;
//! - enums, bytes, chars, unit structs and `f32`/`f64` requests, which no vendor shape uses;
//! - a sequence or map whose visitor stops before the end;
//! - every error: serde_json's message, with its position, is the one worth reporting.
//!
//! Members arrive in key order rather than text order. A derived struct does not care: it
//! refuses a repeated field in any order and ignores unknown ones. (A map that keeps the last
//! of repeated keys would care; no vendor shape has one.)

use serde::de::{self, DeserializeSeed, Visitor};

/// Reads `T` from the canonical encoding of `text`; `None` when the caller must ask serde_json
/// instead. `origins` say where the encoding's verbatim strings are in `text` (see
/// [`super::canon::Scratch::origins`]): those strings are given as slices of `text`, so that an event
/// can point into its page as it does when serde_json reads it.
pub fn from_canonical<'a, T: de::Deserialize<'a>>(
    bytes: &'a [u8],
    origins: &'a [(usize, usize)],
    text: &'a str,
) -> Option<T> {
    let mut r = Reader {
        b: bytes,
        i: 0,
        origins,
        next_origin: 0,
        text,
    };
    let v = T::deserialize(&mut r).ok()?;
    (r.i == bytes.len()).then_some(v)
}

/// Why the reader gave up; never shown (the caller asks serde_json instead).
#[derive(Debug)]
pub struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not read from the canonical encoding")
    }
}

impl std::error::Error for Refused {}

impl de::Error for Refused {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Refused
    }
}

/// The numbers serde_json gives for a number request, integers only.
macro_rules! integer {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refused> {
            match self.byte()? {
                b'u' => v.visit_u64(u64::from_le_bytes(self.word()?)),
                b'i' => v.visit_i64(i64::from_le_bytes(self.word()?)),
                _ => Err(Refused),
            }
        }
    )*};
}

/// Requests no vendor shape makes.
macro_rules! refused {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Refused> {
            Err(Refused)
        }
    )*};
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
    origins: &'a [(usize, usize)],
    /// The first of `origins` not behind the reader (it only reads forward).
    next_origin: usize,
    text: &'a str,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Result<u8, Refused> {
        self.b.get(self.i).copied().ok_or(Refused)
    }

    fn byte(&mut self) -> Result<u8, Refused> {
        let c = self.peek()?;
        self.i += 1;
        Ok(c)
    }

    /// An unsigned LEB128 length or count.
    #[inline]
    fn len(&mut self) -> Result<usize, Refused> {
        // Nearly every length is under 128: one byte.
        let first = self.byte()?;
        if first < 0x80 {
            return Ok(first as usize);
        }
        let mut n = (first & 0x7f) as usize;
        for shift in (7..64).step_by(7) {
            let c = self.byte()?;
            n |= ((c & 0x7f) as usize) << shift;
            if c < 0x80 {
                return Ok(n);
            }
        }
        Err(Refused)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Refused> {
        let s = self.b.get(self.i..self.i + n).ok_or(Refused)?;
        self.i += n;
        Ok(s)
    }

    fn word(&mut self) -> Result<[u8; 8], Refused> {
        Ok(self.take(8)?.try_into().expect("8 bytes"))
    }

    /// The string value after its tag: a slice of the text where it is verbatim there.
    fn str(&mut self) -> Result<&'a str, Refused> {
        let n = self.len()?;
        let at = self.i;
        let bytes = self.take(n)?;
        while self.origins.get(self.next_origin).is_some_and(|o| o.0 < at) {
            self.next_origin += 1;
        }
        if let Some(&(out, from)) = self.origins.get(self.next_origin) {
            if out == at {
                // The scanner copied these bytes from there (the tests hold reading from the
                // encoding to reading the text).
                let s = self.text.get(from..from + n).ok_or(Refused)?;
                debug_assert_eq!(s.as_bytes(), bytes);
                return Ok(s);
            }
        }
        std::str::from_utf8(bytes).map_err(|_| Refused)
    }

    /// Skips one value, whatever it is: counts the values still to skip rather than recursing.
    fn skip(&mut self) -> Result<(), Refused> {
        let mut left = 1usize;
        while left > 0 {
            left -= 1;
            match self.byte()? {
                b's' | b'k' => {
                    let n = self.len()?;
                    self.take(n)?;
                }
                b'u' | b'i' | b'd' => {
                    self.take(8)?;
                }
                b't' | b'f' | b'n' => {}
                // An array's items, an object's keys and values.
                b'[' => left = left.checked_add(self.len()?).ok_or(Refused)?,
                b'{' => {
                    let pairs = self.len()?.checked_mul(2).ok_or(Refused)?;
                    left = left.checked_add(pairs).ok_or(Refused)?;
                }
                _ => return Err(Refused),
            }
        }
        Ok(())
    }
}

/// An array's items, after its tag, for `v`; all of them must be read.
fn seq<'de, V: Visitor<'de>>(r: &mut Reader<'de>, v: V) -> Result<V::Value, Refused> {
    let left = r.len()?;
    let mut access = Items { r, left };
    let value = v.visit_seq(&mut access)?;
    if access.left != 0 {
        return Err(Refused);
    }
    Ok(value)
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = Refused;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refused> {
        match self.byte()? {
            b'{' => {
                let left = self.len()?;
                let mut access = Members { r: self, left };
                let value = v.visit_map(&mut access)?;
                if access.left != 0 {
                    return Err(Refused);
                }
                Ok(value)
            }
            b'[' => seq(self, v),
            b's' => v.visit_borrowed_str(self.str()?),
            b't' => v.visit_bool(true),
            b'f' => v.visit_bool(false),
            b'n' => v.visit_unit(),
            b'u' => v.visit_u64(u64::from_le_bytes(self.word()?)),
            b'i' => v.visit_i64(i64::from_le_bytes(self.word()?)),
            _ => Err(Refused), // floats, and anything unexpected
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refused> {
        if self.peek()? == b'n' {
            self.i += 1;
            v.visit_none()
        } else {
            v.visit_some(self)
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refused> {
        match self.byte()? {
            b's' => v.visit_borrowed_str(self.str()?),
            _ => Err(Refused),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refused> {
        match self.byte()? {
            b't' => v.visit_bool(true),
            b'f' => v.visit_bool(false),
            _ => Err(Refused),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refused> {
        match self.byte()? {
            b'[' => seq(self, v),
            _ => Err(Refused),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refused> {
        match self.peek()? {
            b'{' => self.deserialize_any(v),
            _ => Err(Refused),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Refused> {
        // As serde_json: an object, or an array of the fields in order.
        match self.peek()? {
            b'{' | b'[' => self.deserialize_any(v),
            _ => Err(Refused),
        }
    }

    // Strings and identifiers as `deserialize_str`, tuples as `deserialize_seq`, a newtype as
    // what it wraps, an ignored value skipped; everything no vendor shape asks for (floats,
    // chars, bytes, units, enums, tuple structs) refused.
    integer! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refused> {
        self.skip()?;
        v.visit_unit()
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refused> {
        self.deserialize_str(v)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refused> {
        self.deserialize_str(v)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value, Refused> {
        self.deserialize_seq(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Refused> {
        v.visit_newtype_struct(self)
    }

    refused! {
        deserialize_f32 deserialize_f64 deserialize_char deserialize_bytes
        deserialize_byte_buf deserialize_unit
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: V,
    ) -> Result<V::Value, Refused> {
        Err(Refused)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        _: V,
    ) -> Result<V::Value, Refused> {
        Err(Refused)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Refused> {
        Err(Refused)
    }
}

/// The items of an array.
struct Items<'r, 'a> {
    r: &'r mut Reader<'a>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for &mut Items<'_, 'de> {
    type Error = Refused;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Refused> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.r).map(Some)
    }
}

/// The members of an object, in key order.
struct Members<'r, 'a> {
    r: &'r mut Reader<'a>,
    left: usize,
}

impl<'de> de::MapAccess<'de> for &mut Members<'_, 'de> {
    type Error = Refused;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Refused> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        if self.r.byte()? != b'k' {
            return Err(Refused);
        }
        let n = self.r.len()?;
        seed.deserialize(EncodedKey(self.r.take(n)?)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Refused> {
        seed.deserialize(&mut *self.r)
    }
}

/// An object's key. A derived struct asks for an identifier, and its field visitor matches
/// bytes as it matches strings; that spares checking every key's UTF-8 again. Anything else
/// gets the key as a string.
struct EncodedKey<'a>(&'a [u8]);

impl<'de> de::Deserializer<'de> for EncodedKey<'de> {
    type Error = Refused;

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refused> {
        v.visit_borrowed_bytes(self.0)
    }

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refused> {
        v.visit_borrowed_str(std::str::from_utf8(self.0).map_err(|_| Refused)?)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::from_canonical;
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Pick<'a> {
        #[serde(borrow)]
        b: &'a str,
        n: u64,
        #[serde(borrow)]
        long: &'a str,
    }

    fn read<'a>(text: &'a str, scratch: &'a mut crate::json::canon::Scratch) -> Option<Pick<'a>> {
        let end = crate::json::canon::canonical_value(text, scratch).expect("JSON");
        from_canonical(scratch.bytes(), scratch.origins(), &text[..end])
    }

    /// Members a shape ignores are skipped whatever they hold (nesting, every scalar, escapes,
    /// lengths and counts past one byte), and what it reads points into the text.
    #[test]
    fn ignored_members_of_every_kind_are_skipped() {
        let many = vec!["[{}]"; 130].join(",");
        let long = "x".repeat(200);
        let text = format!(
            r#"{{"a":{{"x":[1,-2,{{"y":null}}],"z":{{}}}},"b":"kept","c":[true,false,"s\"q",1.5,-0],
            "d":{{"k":{{"l":[[]]}}}},"e":[{many}],"f":"{long}","long":"{long}","n":7,"o":"é"}}"#
        );
        let mut scratch = crate::json::canon::Scratch::default();
        let got = read(&text, &mut scratch).expect("read from the encoding");
        assert_eq!((got.b, got.n, got.long), ("kept", 7, long.as_str()));
        let at = got.long.as_ptr() as usize - text.as_ptr() as usize;
        assert_eq!(&text[at - 1..at], "\"", "a slice of the text");
    }
}
