//! How entries are read: everything that looks at JSON text on the way from a page to its events.
//!
//! - [`entries`]: the entry point — a page's text in, its events out (with their content
//!   hashes, for a content-keyed source); the vendor files call it.
//! - [`page`]: walks a page's envelope and array, and hands each entry's text to a reader.
//! - [`compact`]: a formatted page made compact before it is read, so every `raw` is one line.
//! - [`canon`]: the canonical encoding of an entry, by one scan of its text (its hash is the
//!   content hash, see [`crate::keys`]).
//! - [`decode`]: reads a vendor shape out of that encoding, so content-keyed entries are
//!   scanned once.
//! - [`plain`]: reads a vendor shape straight from plain JSON text, for vendor-id sources.
//! - [`scan`]: the byte search the scanner, the readers and the event writer share.
//!
//! Each hand-written reader answers only where it gives exactly what serde_json would and
//! refuses ([`Refused`]) anywhere else, when serde_json reads the entry; the tests hold each to
//! serde_json (or, for the encoding, to a tree built by serde_json).

use serde::de;

pub mod canon;
pub mod compact;
pub mod decode;
pub mod entries;
pub mod page;
mod plain;
pub mod scan;

pub use entries::{read_entries, read_hashed_entries, Layout, Shape};

/// An integer as serde_json reads it: non-negative ones unsigned.
pub(crate) enum Int {
    U(u64),
    I(i64),
}

/// Why the reader gave up; never shown (the caller asks serde_json instead).
#[derive(Debug)]
pub struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("left to serde_json")
    }
}

impl std::error::Error for Refused {}

impl de::Error for Refused {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Refused
    }
}

/// The requests both readers of entries ([`decode`] and [`plain`]) answer alike: integers as the
/// reader's own `integer` gives them, strings and identifiers as `deserialize_str`, tuples as
/// `deserialize_seq`, a newtype as what it wraps, an ignored value by the reader's own `skip`; everything no vendor shape asks for
/// (floats, chars, bytes, units, enums, tuple structs) refused.
macro_rules! shared_requests {
    () => {
        $crate::json::shared_requests!(@integer
            deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
            deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        );

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

        $crate::json::shared_requests!(@refused
            deserialize_f32 deserialize_f64 deserialize_char deserialize_bytes
            deserialize_byte_buf deserialize_unit
        );

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
    };
    (@integer $($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Refused> {
            match self.integer()? {
                $crate::json::Int::U(u) => v.visit_u64(u),
                $crate::json::Int::I(i) => v.visit_i64(i),
            }
        }
    )*};
    (@refused $($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Refused> {
            Err(Refused)
        }
    )*};
}
pub(crate) use shared_requests;
