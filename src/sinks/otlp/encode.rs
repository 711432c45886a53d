//! A batch as one `ExportLogsServiceRequest`: the resource and scope once, a `LogRecord` per
//! event whose body is the event's record (in the sink's `format`) as a structured `AnyValue`;
//! written in the OTLP/JSON mapping ([`write_json`]), or as protobuf straight from each
//! record's JSON ([`Batcher::record_pb`], `wire.rs`), which prost's encoding of the tree
//! checks in the tests.
//!
//! The record is written by the sink's encoding as JSON (as every sink does) and read straight
//! into `AnyValue`s by a serde visitor: no `serde_json::Value` in between.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use prost::Message as _;

use super::proto::*;
use super::wire::{self, Pool};
use crate::encodings::Writer;
use crate::event::{push_json_str, Event};

/// What is the same in every request of a sink: the resource and the scope.
pub(super) struct Batcher {
    /// `service.name`, `service.version`, `host.name`.
    resource: Resource,
    /// The agent, as the instrumentation scope.
    scope: InstrumentationScope,
    /// The sink's format and `include_raw`.
    writer: Writer,
    /// One record's JSON, reused.
    scratch: Vec<u8>,
    /// The resource and the scope, as protobuf, for [`Batcher::request_pb`].
    resource_pb: Vec<u8>,
    scope_pb: Vec<u8>,
    /// Buffers of [`Batcher::record_pb`], reused.
    pool: Pool,
}

fn string(s: impl Into<String>) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Value::StringValue(s.into())),
    })
}

fn kv(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: string(value),
    }
}

impl Batcher {
    pub(super) fn new(writer: Writer, host: String) -> Batcher {
        let version = env!("CARGO_PKG_VERSION");
        let mut b = Batcher {
            resource_pb: Vec::new(),
            scope_pb: Vec::new(),
            pool: Pool::default(),
            resource: Resource {
                attributes: vec![
                    kv("service.name", "auditship"),
                    kv("service.version", version),
                    kv("host.name", host),
                ],
            },
            scope: InstrumentationScope {
                name: "auditship".into(),
                version: version.into(),
            },
            writer,
            scratch: Vec::new(),
        };
        b.resource_pb = b.resource.encode_to_vec();
        b.scope_pb = b.scope.encode_to_vec();
        b
    }

    /// Appends an event's log record to `out` as protobuf, as a `ScopeLogs.log_records` field
    /// (the same record as [`Batcher::record`], written without building it). Returns the size
    /// of its record's JSON.
    pub(super) fn record_pb(&mut self, e: &Event, observed: u64, out: &mut Vec<u8>) -> usize {
        self.scratch.clear();
        self.writer.record(e, &mut self.scratch);
        let pool = &mut self.pool;
        let mut rec = pool.take();
        let time = e.time.max(0) as u64;
        if time != 0 {
            wire::fixed64(&mut rec, 1, time);
        }
        wire::varint(&mut rec, 2, SEVERITY_INFO as u64);
        wire::bytes(&mut rec, 3, b"INFO");
        let mut body = pool.take();
        if wire::any_value(&self.scratch, &mut body, pool).is_none() {
            wire::bytes(
                &mut body,
                1,
                String::from_utf8_lossy(&self.scratch).as_bytes(),
            );
        }
        wire::bytes(&mut rec, 5, &body);
        pool.give(body);
        wire::string_kv(&mut rec, 6, "log.record.uid", e.id(), pool);
        wire::string_kv(&mut rec, 6, "auditship.source", &e.source, pool);
        wire::string_kv(&mut rec, 6, "auditship.vendor", e.vendor, pool);
        wire::string_kv(&mut rec, 6, "auditship.kind", e.kind, pool);
        if let Some(a) = e.action() {
            wire::string_kv(&mut rec, 6, "auditship.action", a, pool);
        }
        if observed != 0 {
            wire::fixed64(&mut rec, 11, observed);
        }
        wire::bytes(out, 2, &rec);
        pool.give(rec);
        self.scratch.len()
    }

    /// The protobuf request of the records [`Batcher::record_pb`] wrote into `records`.
    pub(super) fn request_pb(&self, records: &[u8]) -> Vec<u8> {
        let mut scope_logs = Vec::with_capacity(records.len() + self.scope_pb.len() + 8);
        wire::bytes(&mut scope_logs, 1, &self.scope_pb);
        scope_logs.extend_from_slice(records);
        let mut resource_logs = Vec::with_capacity(scope_logs.len() + self.resource_pb.len() + 16);
        wire::bytes(&mut resource_logs, 1, &self.resource_pb);
        wire::bytes(&mut resource_logs, 2, &scope_logs);
        drop(scope_logs);
        let mut req = Vec::with_capacity(resource_logs.len() + 8);
        wire::bytes(&mut req, 1, &resource_logs);
        req
    }

    /// An event's log record; `observed` is when the agent handed it to the collector (the
    /// event carries no time of its fetch). Also returns the size of its record's JSON.
    pub(super) fn record(&mut self, e: &Event, observed: u64) -> (LogRecord, usize) {
        self.scratch.clear();
        self.writer.record(e, &mut self.scratch);
        let body = body(&self.scratch);
        let mut attributes = Vec::with_capacity(5);
        attributes.push(kv("log.record.uid", e.id()));
        attributes.push(kv("auditship.source", &*e.source));
        attributes.push(kv("auditship.vendor", e.vendor));
        attributes.push(kv("auditship.kind", e.kind));
        if let Some(a) = e.action() {
            attributes.push(kv("auditship.action", a));
        }
        let record = LogRecord {
            time_unix_nano: e.time.max(0) as u64,
            observed_time_unix_nano: observed,
            severity_number: SEVERITY_INFO,
            severity_text: "INFO".into(),
            body: Some(body),
            attributes,
        };
        (record, self.scratch.len())
    }

    /// The request of `records`.
    pub(super) fn request(&self, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(self.resource.clone()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(self.scope.clone()),
                    log_records: records,
                }],
            }],
        }
    }
}

/// A record's JSON as an `AnyValue` (a `kvlist_value` for an object). Every encoding writes
/// valid JSON; were it not so, the text goes as a string rather than be lost.
pub(super) fn body(json: &[u8]) -> AnyValue {
    let mut de = serde_json::Deserializer::from_slice(json);
    match AnySeed
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
    {
        Ok(v) => v,
        Err(_) => AnyValue {
            value: Some(Value::StringValue(
                String::from_utf8_lossy(json).into_owned(),
            )),
        },
    }
}

/// Reads one JSON value into an `AnyValue`.
struct AnySeed;

impl<'de> DeserializeSeed<'de> for AnySeed {
    type Value = AnyValue;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<AnyValue, D::Error> {
        d.deserialize_any(AnyVisitor)
    }
}

struct AnyVisitor;

fn any(v: Value) -> AnyValue {
    AnyValue { value: Some(v) }
}

impl<'de> Visitor<'de> for AnyVisitor {
    type Value = AnyValue;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<AnyValue, E> {
        Ok(any(Value::BoolValue(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<AnyValue, E> {
        Ok(any(Value::IntValue(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<AnyValue, E> {
        // Past i64: a double, as a JSON reader would take it.
        Ok(any(match i64::try_from(v) {
            Ok(i) => Value::IntValue(i),
            Err(_) => Value::DoubleValue(v as f64),
        }))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<AnyValue, E> {
        Ok(any(Value::DoubleValue(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<AnyValue, E> {
        Ok(any(Value::StringValue(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<AnyValue, E> {
        Ok(any(Value::StringValue(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<AnyValue, E> {
        Ok(AnyValue { value: None })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyValue, A::Error> {
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element_seed(AnySeed)? {
            values.push(v);
        }
        Ok(any(Value::ArrayValue(ArrayValue { values })))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyValue, A::Error> {
        let mut values = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(AnySeed)?;
            values.push(KeyValue {
                key,
                value: Some(value),
            });
        }
        Ok(any(Value::KvlistValue(KeyValueList { values })))
    }
}

/// Appends `req` in the OTLP/JSON mapping (protobuf's JSON mapping as OTLP specifies it):
/// lowerCamelCase keys, 64-bit integers as decimal strings, enums as their numbers, default
/// values left out.
pub(super) fn write_json(req: &ExportLogsServiceRequest, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"resourceLogs\":[");
    for (i, rl) in req.resource_logs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        if let Some(r) = &rl.resource {
            out.extend_from_slice(b"\"resource\":{\"attributes\":");
            write_kvs(&r.attributes, out);
            out.extend_from_slice(b"},");
        }
        out.extend_from_slice(b"\"scopeLogs\":[");
        for (j, sl) in rl.scope_logs.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.push(b'{');
            if let Some(s) = &sl.scope {
                out.extend_from_slice(b"\"scope\":{\"name\":");
                push_json_str(out, &s.name);
                out.extend_from_slice(b",\"version\":");
                push_json_str(out, &s.version);
                out.extend_from_slice(b"},");
            }
            out.extend_from_slice(b"\"logRecords\":[");
            for (k, r) in sl.log_records.iter().enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                write_record(r, out);
            }
            out.extend_from_slice(b"]}");
        }
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"]}");
}

fn write_record(r: &LogRecord, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let _ = write!(
        out,
        "{{\"timeUnixNano\":\"{}\",\"observedTimeUnixNano\":\"{}\",\"severityNumber\":{},\"severityText\":",
        r.time_unix_nano, r.observed_time_unix_nano, r.severity_number
    );
    push_json_str(out, &r.severity_text);
    if let Some(b) = &r.body {
        out.extend_from_slice(b",\"body\":");
        write_any(b, out);
    }
    out.extend_from_slice(b",\"attributes\":");
    write_kvs(&r.attributes, out);
    out.push(b'}');
}

fn write_kvs(kvs: &[KeyValue], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, kv) in kvs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"key\":");
        push_json_str(out, &kv.key);
        if let Some(v) = &kv.value {
            out.extend_from_slice(b",\"value\":");
            write_any(v, out);
        }
        out.push(b'}');
    }
    out.push(b']');
}

fn write_any(v: &AnyValue, out: &mut Vec<u8>) {
    use std::io::Write as _;
    match &v.value {
        None => out.extend_from_slice(b"{}"),
        Some(Value::StringValue(s)) => {
            out.extend_from_slice(b"{\"stringValue\":");
            push_json_str(out, s);
            out.push(b'}');
        }
        Some(Value::BoolValue(b)) => {
            let _ = write!(out, "{{\"boolValue\":{b}}}");
        }
        Some(Value::IntValue(i)) => {
            let _ = write!(out, "{{\"intValue\":\"{i}\"}}");
        }
        Some(Value::DoubleValue(d)) => {
            out.extend_from_slice(b"{\"doubleValue\":");
            // From JSON, so finite: serde_json writes it as a JSON number.
            let _ = serde_json::to_writer(&mut *out, d);
            out.push(b'}');
        }
        Some(Value::ArrayValue(a)) => {
            out.extend_from_slice(b"{\"arrayValue\":{\"values\":[");
            for (i, v) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_any(v, out);
            }
            out.extend_from_slice(b"]}}");
        }
        Some(Value::KvlistValue(kvs)) => {
            out.extend_from_slice(b"{\"kvlistValue\":{\"values\":");
            write_kvs(&kvs.values, out);
            out.extend_from_slice(b"}}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_becomes_a_kvlist_with_every_json_type() {
        let v = body(br#"{"s":"x\"y","i":-3,"big":18446744073709551615,"f":1.5,"b":true,"n":null,"a":[1,"2"],"o":{"k":{}}}"#);
        let Some(Value::KvlistValue(kv)) = &v.value else {
            panic!("{v:?}")
        };
        let keys: Vec<&str> = kv.values.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["s", "i", "big", "f", "b", "n", "a", "o"]);
        let val = |i: usize| kv.values[i].value.clone().unwrap().value;
        assert_eq!(val(0), Some(Value::StringValue("x\"y".into())));
        assert_eq!(val(1), Some(Value::IntValue(-3)));
        assert_eq!(val(2), Some(Value::DoubleValue(u64::MAX as f64)));
        assert_eq!(val(4), Some(Value::BoolValue(true)));
        assert_eq!(val(5), None);
        let mut out = Vec::new();
        write_any(&v, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"kvlistValue":{"values":[{"key":"s","value":{"stringValue":"x\"y"}},{"key":"i","value":{"intValue":"-3"}},{"key":"big","value":{"doubleValue":1.8446744073709552e+19}},{"key":"f","value":{"doubleValue":1.5}},{"key":"b","value":{"boolValue":true}},{"key":"n","value":{}},{"key":"a","value":{"arrayValue":{"values":[{"intValue":"1"},{"stringValue":"2"}]}}},{"key":"o","value":{"kvlistValue":{"values":[{"key":"k","value":{"kvlistValue":{"values":[]}}}]}}}]}}"#
        );
    }

    /// The protobuf written straight from the records' JSON is the request the `AnyValue` tree
    /// makes (prost's encoding, the reference): every JSON type, nesting, escapes, a negative
    /// time, a record without an action.
    #[test]
    fn protobuf_written_directly_decodes_to_the_tree_request() {
        let mut b = Batcher::new(Writer::default(), "h".into());
        let raws = [
            r#"{"id":"a","n":-7,"big":18446744073709551615,"f":0.25,"t":true,"z":null,"arr":[[],{},"x",1],"o":{"k\"ey":"v\u00e9","e":{}}}"#,
            r#"{"id":"b"}"#,
            r#"{"id":"c","deep":{"a":{"b":{"c":[{"d":[null,false]}]}}}}"#,
        ];
        let mut events = Vec::new();
        for (i, raw) in raws.iter().enumerate() {
            let t = if i == 1 {
                -5
            } else {
                1_700_000_000_123_000_000 + i as i64
            };
            let mut e = Event::standalone("src", "wasabi_air", "wasabi", t, raw);
            e.set(crate::event::Field::Id, Some(&format!("id-{i}")));
            if i != 1 {
                e.set(crate::event::Field::Action, Some("log\"in"));
            }
            events.push(e);
        }
        let mut pb = Vec::new();
        let mut tree = Vec::new();
        for e in &events {
            let n = b.record_pb(e, 42, &mut pb);
            let (r, m) = b.record(e, 42);
            assert_eq!(n, m);
            tree.push(r);
        }
        let want = b.request(tree);
        let got = ExportLogsServiceRequest::decode(&b.request_pb(&pb)[..]).unwrap();
        assert_eq!(got, want);
        // No records: the empty request a probe sends.
        let empty = ExportLogsServiceRequest::decode(&b.request_pb(&[])[..]).unwrap();
        assert_eq!(empty, b.request(Vec::new()));
    }

    #[test]
    fn a_request_round_trips_through_protobuf_and_its_json_is_json() {
        let mut b = Batcher::new(Writer::default(), "h".into());
        let mut e = Event::standalone(
            "air",
            "wasabi_air",
            "wasabi",
            1_700_000_000_123_000_000,
            r#"{"id":"a"}"#,
        );
        e.set(crate::event::Field::Id, Some("a"));
        e.set(crate::event::Field::Action, Some("login"));
        let (r, _) = b.record(&e, 5);
        let req = b.request(vec![r]);
        let bytes = req.encode_to_vec();
        assert_eq!(ExportLogsServiceRequest::decode(&bytes[..]).unwrap(), req);
        let mut json = Vec::new();
        write_json(&req, &mut json);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let rec = &v["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
        assert_eq!(rec["timeUnixNano"], "1700000000123000000");
        assert_eq!(rec["observedTimeUnixNano"], "5");
        assert_eq!(rec["severityNumber"], 9);
        assert_eq!(rec["attributes"][0]["key"], "log.record.uid");
        assert_eq!(rec["attributes"][0]["value"]["stringValue"], "a");
        assert_eq!(
            v["resourceLogs"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "auditship"
        );
    }
}
