//! The protobuf request written straight from each record's JSON: the hot path of a protobuf
//! sink. A serde visitor reads the record and writes its `AnyValue` bytes as it goes (nested
//! messages into reused buffers, then copied behind their length), so an event costs no
//! allocation once the buffers have grown. [`super::encode`]'s `AnyValue` tree, encoded by
//! prost, is the reference it is tested against (and the OTLP/JSON path).

use std::fmt;

use prost::encoding::encode_varint;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Buffers for nested messages, reused from record to record.
#[derive(Default)]
pub(super) struct Pool(Vec<Vec<u8>>);

impl Pool {
    pub(super) fn take(&mut self) -> Vec<u8> {
        let mut b = self.0.pop().unwrap_or_default();
        b.clear();
        b
    }
    pub(super) fn give(&mut self, b: Vec<u8>) {
        self.0.push(b);
    }
}

/// Field `field`, wire type `wire`.
#[inline]
pub(super) fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    encode_varint(u64::from(field << 3 | u32::from(wire)), out);
}

/// A length-delimited field: bytes, a string or a message.
#[inline]
pub(super) fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, 2);
    encode_varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

/// A `fixed64` field.
#[inline]
pub(super) fn fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    key(out, field, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

/// A varint field.
#[inline]
pub(super) fn varint(out: &mut Vec<u8>, field: u32, v: u64) {
    key(out, field, 0);
    encode_varint(v, out);
}

/// A `KeyValue` with a string value.
pub(super) fn string_kv(out: &mut Vec<u8>, field: u32, k: &str, v: &str, pool: &mut Pool) {
    let mut any = pool.take();
    bytes(&mut any, 1, v.as_bytes());
    let mut kv = pool.take();
    bytes(&mut kv, 1, k.as_bytes());
    bytes(&mut kv, 2, &any);
    bytes(out, field, &kv);
    pool.give(kv);
    pool.give(any);
}

/// Appends the `AnyValue` message (its fields, without a tag or length of its own) of the JSON
/// value `json` to `out`; `None` if `json` is not one JSON value (every encoding writes valid
/// JSON: the caller then sends the text as a string).
pub(super) fn any_value(json: &[u8], out: &mut Vec<u8>, pool: &mut Pool) -> Option<()> {
    let mark = out.len();
    let mut de = serde_json::Deserializer::from_slice(json);
    let ok = AnySeed { out, pool }.deserialize(&mut de).is_ok() && de.end().is_ok();
    if !ok {
        out.truncate(mark);
        return None;
    }
    Some(())
}

/// Writes one JSON value as `AnyValue` fields into `out`.
struct AnySeed<'a> {
    out: &'a mut Vec<u8>,
    pool: &'a mut Pool,
}

impl<'de> DeserializeSeed<'de> for AnySeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AnySeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        varint(self.out, 2, u64::from(v));
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        varint(self.out, 3, v as u64);
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        // Past i64: a double, as a JSON reader would take it.
        match i64::try_from(v) {
            Ok(i) => self.visit_i64(i),
            Err(_) => self.visit_f64(v as f64),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        fixed64(self.out, 4, v.to_bits());
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        bytes(self.out, 1, v.as_bytes());
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // ArrayValue { repeated AnyValue values = 1 }
        let mut list = self.pool.take();
        let mut item = self.pool.take();
        loop {
            item.clear();
            let seed = AnySeed {
                out: &mut item,
                pool: self.pool,
            };
            if seq.next_element_seed(seed)?.is_none() {
                break;
            }
            bytes(&mut list, 1, &item);
        }
        bytes(self.out, 5, &list);
        self.pool.give(item);
        self.pool.give(list);
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // KeyValueList { repeated KeyValue values = 1 }, KeyValue { key = 1, value = 2 }
        let mut list = self.pool.take();
        let mut kv = self.pool.take();
        let mut value = self.pool.take();
        loop {
            kv.clear();
            if map.next_key_seed(KeySeed(&mut kv))?.is_none() {
                break;
            }
            value.clear();
            map.next_value_seed(AnySeed {
                out: &mut value,
                pool: self.pool,
            })?;
            bytes(&mut kv, 2, &value);
            bytes(&mut list, 1, &kv);
        }
        bytes(self.out, 6, &list);
        self.pool.give(value);
        self.pool.give(kv);
        self.pool.give(list);
        Ok(())
    }
}

/// Writes a JSON object's key as `KeyValue.key` into its buffer, without allocating.
struct KeySeed<'a>(&'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        bytes(self.0, 1, v.as_bytes());
        Ok(())
    }
}
