//! Parquet objects: a batch of events as the bytes of one Parquet file, with a typed schema —
//! one column per field of the record, nested objects as structs and arrays as lists, not one
//! column of JSON text. For `object_format = "parquet"` and Amazon Security Lake.
//!
//! - `ocsf`: one schema per OCSF 1.8.0 class the OCSF encoder ([`super::ocsf`]) emits (3001,
//!   3002, 3004, 3005, 6003, 6005), typed as the class says: `integer_t` as Int32, `long_t` and
//!   `timestamp_t` (`time`, epoch milliseconds) as Int64, strings as Utf8; `metadata.uid` is the
//!   event's id. Security Lake wants one class per object ([`Parquet::ocsf_class`]); a plain
//!   archive may mix them under the union of the classes ([`Parquet::ocsf`]).
//! - `native`: the project's own event, `time` as a UTC timestamp in milliseconds and `raw` the
//!   vendor's JSON as text.
//! - `ecs`: the ECS document, `@timestamp` and `event.created` as UTC timestamps.
//!
//! How: the encoding's own JSON writer writes each record, and arrow-json's decoder reads the
//! records into columns of the schema in strict mode, so a field the schema lacks, or a value of
//! another type, fails the write instead of being dropped (the unit tests run every row of the
//! vendor tables through it). Records are sorted by time, the file says so (its sorting column),
//! and it is compressed with zstd, as Security Lake recommends.

use std::sync::Arc;

use ::parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use ::parquet::basic::{Compression, ZstdLevel};
use ::parquet::file::metadata::SortingColumn;
use ::parquet::file::properties::WriterProperties;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use super::siem::{Class, Table, GENERIC};
use super::{ecs, ocsf, Encoding};
use crate::event::Event;

/// Rows decoded from JSON and handed to the Parquet writer at a time: bounds the columns held
/// besides the writer's, whatever the size of the batch.
const CHUNK_ROWS: usize = 4096;

/// Why a batch could not be written as Parquet: a record the schema cannot hold (a bug of the
/// schema or of the encoder: the tests hold them to each other), or the writer's own error.
#[derive(Debug, thiserror::Error)]
#[error("parquet ({schema}): {reason}")]
pub struct Error {
    schema: &'static str,
    reason: String,
}

/// Which encoding writes the records, and so which schemas there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Native,
    /// One class, or `None` for the union of all of them.
    Ocsf(Option<Class>),
    Ecs,
}

/// A Parquet schema and how to write a batch of events under it.
#[derive(Debug, Clone)]
pub struct Parquet {
    kind: Kind,
    schema: SchemaRef,
    name: &'static str,
}

/// Every OCSF class the OCSF encoder can emit.
pub const OCSF_CLASSES: [Class; 6] = [
    Class::AccountChange,
    Class::Authentication,
    Class::EntityManagement,
    Class::UserAccess,
    Class::ApiActivity,
    Class::DatastoreActivity,
];

/// The OCSF class the OCSF encoder writes `e` as.
pub fn ocsf_class(e: &Event) -> Class {
    e.siem().rule(e).class
}

/// The OCSF class of `uid`, if the encoder emits it.
pub fn class_by_uid(uid: u32) -> Option<Class> {
    OCSF_CLASSES.into_iter().find(|c| c.uid() == uid)
}

impl Parquet {
    /// The native event.
    pub fn native() -> Parquet {
        Parquet {
            kind: Kind::Native,
            schema: Arc::new(native_schema()),
            name: "native",
        }
    }

    /// OCSF records of one class, as Security Lake takes them; `tables` are the vendors' SIEM
    /// tables (`sources::SIEM_TABLES`), whose namespaces the schema's `unmapped` holds.
    pub fn ocsf_class(tables: &[&Table], class: Class) -> Parquet {
        Parquet {
            kind: Kind::Ocsf(Some(class)),
            schema: Arc::new(ocsf_schema(tables, &[class])),
            name: class.name(),
        }
    }

    /// OCSF records of any class: the union of the classes' fields, each record filling those
    /// of its own class.
    pub fn ocsf(tables: &[&Table]) -> Parquet {
        Parquet {
            kind: Kind::Ocsf(None),
            schema: Arc::new(ocsf_schema(tables, &OCSF_CLASSES)),
            name: "ocsf",
        }
    }

    /// The ECS document (with a field for each of `tables`' namespaces).
    pub fn ecs(tables: &[&Table]) -> Parquet {
        Parquet {
            kind: Kind::Ecs,
            schema: Arc::new(ecs_schema(tables)),
            name: "ecs",
        }
    }

    /// The schema of a sink's `format` (its name): `None` for one with no Parquet schema (cef,
    /// a line of text).
    pub fn for_format(tables: &[&Table], format: &str) -> Option<Parquet> {
        match format {
            "native" => Some(Parquet::native()),
            "ocsf" => Some(Parquet::ocsf(tables)),
            "ecs" => Some(Parquet::ecs(tables)),
            _ => None,
        }
    }

    /// The Arrow schema the records are written under.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Appends one event's record as the decoder reads it.
    fn record(&self, e: &Event, include_raw: bool, out: &mut Vec<u8>) {
        match self.kind {
            Kind::Native => {
                // The native object with `raw` as a JSON string, the text of the vendor's event.
                e.write_json(out, false);
                if include_raw {
                    out.pop();
                    out.extend_from_slice(b",\"raw\":");
                    crate::event::push_json_str(out, e.raw());
                    out.push(b'}');
                }
            }
            Kind::Ocsf(_) => ocsf::Ocsf.write(e, include_raw, out),
            Kind::Ecs => ecs::Ecs.write(e, include_raw, out),
        }
        out.push(b'\n');
    }

    /// Writes `events` as one Parquet file, sorted by time (events of the same instant keep
    /// their order). An OCSF schema of one class refuses an event of another.
    pub fn write<'e>(
        &self,
        events: impl IntoIterator<Item = &'e Event>,
        include_raw: bool,
    ) -> Result<Vec<u8>, Error> {
        self.file(&self.records(events, include_raw))
    }

    /// The first half of [`Parquet::write`], which needs the events: their records sorted by
    /// time, one JSON object a line, as [`Parquet::file`] takes them.
    pub fn records<'e>(
        &self,
        events: impl IntoIterator<Item = &'e Event>,
        include_raw: bool,
    ) -> Vec<u8> {
        let mut sorted: Vec<&Event> = events.into_iter().collect();
        sorted.sort_by_key(|e| e.time);
        let mut text = Vec::with_capacity(sorted.len() * 768);
        for e in sorted {
            self.record(e, include_raw, &mut text);
        }
        text
    }

    /// The second half of [`Parquet::write`], CPU work on owned text (a sink runs it off its
    /// async thread): the Parquet file of the records [`Parquet::records`] wrote.
    pub fn file(&self, records: &[u8]) -> Result<Vec<u8>, Error> {
        let mut writer =
            ArrowWriter::try_new(Vec::new(), self.schema.clone(), Some(self.properties()?))
                .map_err(|e| self.error(e))?;
        let mut decoder = arrow_json::ReaderBuilder::new(self.schema.clone())
            .with_strict_mode(true)
            .with_batch_size(CHUNK_ROWS)
            .build_decoder()
            .map_err(|e| self.error(e))?;
        let mut rest = records;
        loop {
            let read = decoder.decode(rest).map_err(|e| self.error(e))?;
            rest = &rest[read..];
            match decoder.flush().map_err(|e| self.error(e))? {
                Some(batch) => {
                    self.check_class(&batch)?;
                    writer.write(&batch).map_err(|e| self.error(e))?;
                }
                None if rest.is_empty() => break,
                None => return Err(self.error("a torn record")),
            }
        }
        writer.into_inner().map_err(|e| self.error(e))
    }

    /// An OCSF schema of one class refuses a record of another.
    fn check_class(&self, batch: &arrow_array::RecordBatch) -> Result<(), Error> {
        let Kind::Ocsf(Some(class)) = self.kind else {
            return Ok(());
        };
        let uids = batch
            .column_by_name("class_uid")
            .and_then(|c| {
                c.as_any()
                    .downcast_ref::<arrow_array::Int32Array>()
                    .cloned()
            })
            .ok_or_else(|| self.error("no class_uid column"))?;
        match uids.iter().find(|u| *u != Some(class.uid() as i32)) {
            Some(other) => Err(self.error(format!(
                "a record of OCSF class {}, not {}",
                other.unwrap_or(0),
                class.uid()
            ))),
            None => Ok(()),
        }
    }

    /// zstd; the time column as the sorting column.
    fn properties(&self) -> Result<WriterProperties, Error> {
        let time = match self.kind {
            Kind::Native => "time",
            Kind::Ocsf(_) => "time",
            Kind::Ecs => "@timestamp",
        };
        let descr = ArrowSchemaConverter::new()
            .convert(&self.schema)
            .map_err(|e| self.error(e))?;
        let column_idx = (0..descr.num_columns())
            .find(|&i| descr.column(i).path().string() == time)
            .ok_or_else(|| self.error(format!("no {time} column")))?;
        Ok(WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_sorting_columns(Some(vec![SortingColumn {
                column_idx: column_idx as i32,
                descending: false,
                nulls_first: false,
            }]))
            .build())
    }

    fn error(&self, reason: impl std::fmt::Display) -> Error {
        Error {
            schema: self.name,
            reason: reason.to_string(),
        }
    }
}

fn text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn int(name: &str) -> Field {
    Field::new(name, DataType::Int32, true)
}

fn long(name: &str) -> Field {
    Field::new(name, DataType::Int64, true)
}

fn object(name: &str, fields: Vec<Field>) -> Field {
    Field::new(name, DataType::Struct(Fields::from(fields)), true)
}

fn list(name: &str, item: DataType) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new("item", item, true))),
        true,
    )
}

fn required(f: Field) -> Field {
    f.with_nullable(false)
}

fn utc_millis(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
        true,
    )
}

/// `{type, id, name}`: the native event's entities, and the vendor's own under `unmapped`.
fn entity(name: &str) -> Field {
    object(name, vec![text("type"), text("id"), text("name")])
}

fn native_schema() -> Schema {
    Schema::new(vec![
        required(text("id")),
        required(text("source")),
        required(text("kind")),
        required(text("vendor")),
        required(utc_millis("time")),
        text("action"),
        entity("actor"),
        entity("target"),
        entity("project"),
        text("src_ip"),
        text("user_agent"),
        text("raw"),
    ])
}

/// The namespaces (`unmapped.<namespace>`, and ECS's top-level vendor fields) of the vendors
/// with an action of one of `classes` (all of them: `None`), the generic table's included, each
/// once.
fn namespaces(tables: &[&Table], classes: Option<&[Class]>) -> Vec<&'static str> {
    let mut ns: Vec<&'static str> = tables
        .iter()
        .copied()
        .chain([&GENERIC])
        .filter(|t| {
            classes.is_none_or(|cs| {
                t.rules
                    .iter()
                    .chain([&t.other])
                    .any(|r| cs.contains(&r.class))
            })
        })
        .map(|t| t.namespace)
        .collect();
    ns.sort_unstable();
    ns.dedup();
    ns
}

/// OCSF `user`, `managed_entity`, `database` and `databucket` as the encoder writes them.
fn ocsf_typed(name: &str) -> Field {
    object(
        name,
        vec![text("uid"), text("name"), int("type_id"), text("type")],
    )
}

/// What only `class` has.
fn ocsf_class_fields(class: Class) -> Vec<Field> {
    match class {
        Class::AccountChange => vec![ocsf_typed("user")],
        Class::Authentication => vec![ocsf_typed("user"), object("service", vec![text("name")])],
        Class::EntityManagement => vec![ocsf_typed("entity")],
        Class::UserAccess => vec![ocsf_typed("user"), list("privileges", DataType::Utf8)],
        Class::ApiActivity => vec![
            object("api", vec![text("operation")]),
            list(
                "resources",
                DataType::Struct(Fields::from(vec![text("uid"), text("name"), text("type")])),
            ),
        ],
        Class::DatastoreActivity => vec![ocsf_typed("database"), ocsf_typed("databucket")],
    }
}

/// The schema of records of `classes`: the fields every class has, then each class's own (a
/// field two classes share, `user`, once).
fn ocsf_schema(tables: &[&Table], classes: &[Class]) -> Schema {
    let mut fields = vec![
        required(int("class_uid")),
        required(text("class_name")),
        required(int("category_uid")),
        required(text("category_name")),
        required(int("activity_id")),
        required(text("activity_name")),
        required(long("type_uid")),
        required(text("type_name")),
        required(int("severity_id")),
        required(text("severity")),
        required(long("time")),
        text("message"),
        required(object(
            "metadata",
            vec![
                text("version"),
                text("uid"),
                text("original_time"),
                text("event_code"),
                text("log_name"),
                object(
                    "product",
                    vec![
                        text("name"),
                        text("vendor_name"),
                        object("feature", vec![text("name")]),
                    ],
                ),
            ],
        )),
        required(object("actor", vec![ocsf_typed("user"), text("app_name")])),
        // The product's name stands in for a missing IP where the class requires the object.
        object(
            "src_endpoint",
            if classes
                .iter()
                .any(|c| matches!(c, Class::ApiActivity | Class::DatastoreActivity))
            {
                vec![text("ip"), text("svc_name")]
            } else {
                vec![text("ip")]
            },
        ),
        object("http_request", vec![text("user_agent")]),
    ];
    for class in classes {
        for f in ocsf_class_fields(*class) {
            if !fields.iter().any(|g| g.name() == f.name()) {
                fields.push(f);
            }
        }
    }
    fields.push(object(
        "unmapped",
        namespaces(tables, Some(classes))
            .into_iter()
            .map(|ns| {
                object(
                    ns,
                    vec![
                        entity("target"),
                        entity("project"),
                        object("actor", vec![text("type")]),
                    ],
                )
            })
            .collect(),
    ));
    fields.push(text("raw_data"));
    Schema::new(fields)
}

fn ecs_schema(tables: &[&Table]) -> Schema {
    let mut fields = vec![
        required(utc_millis("@timestamp")),
        object("ecs", vec![text("version")]),
        object(
            "event",
            vec![
                text("kind"),
                list("category", DataType::Utf8),
                list("type", DataType::Utf8),
                text("action"),
                text("outcome"),
                text("id"),
                text("module"),
                text("dataset"),
                text("provider"),
                utc_millis("created"),
                text("original"),
            ],
        ),
        text("message"),
        object("user", vec![text("id"), text("name")]),
        object("source", vec![text("ip")]),
        object("user_agent", vec![text("original")]),
        object(
            "related",
            vec![list("user", DataType::Utf8), list("ip", DataType::Utf8)],
        ),
    ];
    for ns in namespaces(tables, None) {
        fields.push(object(
            ns,
            vec![
                text("source"),
                entity("target"),
                entity("project"),
                object("actor", vec![text("type")]),
                text("src_ip"),
            ],
        ));
    }
    Schema::new(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Field as F;
    use crate::sources::SIEM_TABLES;
    use serde_json::Value;

    /// Every kind of event the encoders can be given: each row of each vendor's table (and its
    /// `other` row, and the generic table's), with every field set and with none, a Domino
    /// privilege change with its affected user and role, an IP that is not one.
    fn every_shape() -> Vec<Event> {
        let mut out = Vec::new();
        let mut n = 0i64;
        let mut next = |siem: &'static Table, raw: &str| {
            n += 1;
            // Out of time order on purpose: the writer sorts.
            let t = 1_700_000_000_000_000_000 + ((n * 7919) % 1000) * 1_000_000_000;
            let kind: &'static str = if siem.kind.is_empty() {
                "nobody"
            } else {
                siem.kind
            };
            let mut e = Event::standalone("src-a", kind, "v", t, raw).with_siem(siem);
            e.set(F::Id, Some(&format!("id-{n}")));
            e
        };
        for t in SIEM_TABLES.iter().copied().chain([&GENERIC]) {
            for r in t.rules.iter().chain([&t.other]) {
                let action = (r.action != "(any other)").then_some(r.action);
                let raw = match t.action_key {
                    Some(k) => format!(
                        r#"{{"{k}":"{}","{}":"2024-10-18T14:10:04Z"}}"#,
                        r.action, t.time_key
                    ),
                    None => format!(r#"{{"{}":1729260604123}}"#, t.time_key),
                };
                // Everything set.
                let mut e = next(t, &raw);
                e.set(F::Action, action.or(Some("something else")));
                for (f, v) in [
                    (F::ActorKind, "person"),
                    (F::ActorId, "a1"),
                    (F::ActorName, "ann"),
                    (F::TargetKind, r.target.unwrap_or("S3Config")),
                    (F::TargetId, "t1"),
                    (F::TargetName, "thing \"one\""),
                    (F::ProjectKind, "project"),
                    (F::ProjectId, "p1"),
                    (F::ProjectName, "proj"),
                    (F::SrcIp, "192.0.2.7"),
                    (F::UserAgent, "curl/8"),
                ] {
                    e.set(f, Some(v));
                }
                out.push(e);
                // Nothing set but the action.
                let mut e = next(t, "{}");
                e.set(F::Action, action);
                out.push(e);
                // A target user; a target of another kind; a project only; a bad IP.
                for (tk, pk) in [
                    (Some("user"), None),
                    (Some("GCSConfig"), None),
                    (Some("group"), None),
                    (None, Some("workspace")),
                ] {
                    let mut e = next(t, "{}");
                    e.set(F::Action, action);
                    e.set(F::TargetKind, tk);
                    e.set(F::TargetId, tk.map(|_| "t2"));
                    e.set(F::TargetName, tk.map(|_| "x"));
                    e.set(F::ProjectKind, pk);
                    e.set(F::ProjectName, pk.map(|_| "w"));
                    e.set(F::SrcIp, Some("not-an-ip"));
                    e.set(F::ActorName, Some("bob"));
                    out.push(e);
                }
            }
        }
        let raw = r#"{"timestamp":1700000000123,"actor":{"id":"a1","name":"ann"},"action":{"eventName":"Change Collaborator Role"},"targets":[{"entity":{"entityType":"user","id":"u2","name":"bob"},"fieldChanges":[{"fieldName":"role","before":"Contributor","after":"Owner","added":[],"removed":[]}]}],"affecting":[{"entityType":"user","id":"u2","name":"bob"}],"metadata":{}}"#;
        let mut e = next(&crate::sources::domino_audit::SIEM, raw);
        e.set(F::Action, Some("Change Collaborator Role"));
        out.push(e);
        out
    }

    /// The Parquet file read back, each row as the JSON object it holds (nulls left out, as the
    /// encoders leave absent fields out).
    fn read_back(bytes: Vec<u8>) -> Vec<Value> {
        use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
            .unwrap()
            .build()
            .unwrap();
        let mut out = Vec::new();
        for batch in reader {
            let mut w = arrow_json::LineDelimitedWriter::new(Vec::new());
            w.write(&batch.unwrap()).unwrap();
            w.finish().unwrap();
            for line in w.into_inner().split(|&b| b == b'\n') {
                if !line.is_empty() {
                    out.push(serde_json::from_slice(line).unwrap());
                }
            }
        }
        out
    }

    fn json_of(p: &Parquet, e: &Event, include_raw: bool) -> Value {
        let mut out = Vec::new();
        p.record(e, include_raw, &mut out);
        serde_json::from_slice(&out).unwrap()
    }

    /// Every leaf path of `v` (object keys joined by `.`, list items as `[]`).
    fn leaves(v: &Value, at: String, out: &mut std::collections::BTreeSet<String>) {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    let p = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    leaves(x, p, out);
                }
            }
            Value::Array(a) => {
                for x in a {
                    leaves(x, format!("{at}[]"), out);
                }
            }
            _ => {
                out.insert(at);
            }
        }
    }

    /// Every leaf path of the schema.
    fn schema_leaves(fields: &Fields, at: &str, out: &mut std::collections::BTreeSet<String>) {
        for f in fields {
            let p = if at.is_empty() {
                f.name().clone()
            } else {
                format!("{at}.{}", f.name())
            };
            match f.data_type() {
                DataType::Struct(sub) => schema_leaves(sub, &p, out),
                DataType::List(item) => match item.data_type() {
                    DataType::Struct(sub) => schema_leaves(sub, &format!("{p}[]"), out),
                    _ => {
                        out.insert(format!("{p}[]"));
                    }
                },
                _ => {
                    out.insert(p);
                }
            }
        }
    }

    #[test]
    fn every_ocsf_class_round_trips_every_field_the_encoder_writes() {
        let events = every_shape();
        let mut seen = std::collections::BTreeSet::new();
        for class in OCSF_CLASSES {
            let p = Parquet::ocsf_class(SIEM_TABLES, class);
            let mine: Vec<&Event> = events.iter().filter(|e| ocsf_class(e) == class).collect();
            assert!(!mine.is_empty(), "no event of class {}", class.uid());
            for include_raw in [false, true] {
                let bytes = p.write(mine.iter().copied(), include_raw).unwrap();
                let got = read_back(bytes);
                let mut want: Vec<&Event> = mine.clone();
                want.sort_by_key(|e| e.time);
                assert_eq!(got.len(), want.len());
                for (g, e) in got.iter().zip(&want) {
                    let w = json_of(&p, e, include_raw);
                    assert_eq!(g, &w, "class {}", class.uid());
                    assert_eq!(g["metadata"]["uid"], e.id());
                    leaves(&w, String::new(), &mut seen);
                }
                let times: Vec<i64> = got.iter().map(|g| g["time"].as_i64().unwrap()).collect();
                assert!(times.windows(2).all(|w| w[0] <= w[1]), "not sorted by time");
            }
            // The class's schema has nothing the encoder never writes for the class.
            let mut cols = std::collections::BTreeSet::new();
            schema_leaves(p.schema().fields(), "", &mut cols);
            let mut written = std::collections::BTreeSet::new();
            for e in &mine {
                leaves(&json_of(&p, e, true), String::new(), &mut written);
            }
            let never: Vec<_> = cols.difference(&written).collect();
            assert!(
                never.is_empty(),
                "class {}: columns the encoder never writes: {never:?}",
                class.uid()
            );
        }
        // And the union schema holds them all.
        let all = Parquet::ocsf(SIEM_TABLES);
        let got = read_back(all.write(&events, true).unwrap());
        assert_eq!(got.len(), events.len());
        let mut cols = std::collections::BTreeSet::new();
        schema_leaves(all.schema().fields(), "", &mut cols);
        assert_eq!(cols, seen, "the union schema is every field written");
    }

    #[test]
    fn a_field_the_schema_lacks_fails_the_write_instead_of_being_dropped() {
        // The schema of 3004 without `entity.type`: the encoder still writes it.
        let p = Parquet::ocsf_class(SIEM_TABLES, Class::EntityManagement);
        let fields: Vec<Field> = p
            .schema()
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                "entity" => {
                    ocsf_typed("entity").with_data_type(DataType::Struct(Fields::from(vec![
                        text("uid"),
                        text("name"),
                        int("type_id"),
                    ])))
                }
                _ => f.as_ref().clone(),
            })
            .collect();
        let narrowed = Parquet {
            schema: Arc::new(Schema::new(fields)),
            ..p
        };
        let e = every_shape()
            .into_iter()
            .find(|e| ocsf_class(e) == Class::EntityManagement)
            .unwrap();
        let err = narrowed.write([&e], false).unwrap_err().to_string();
        assert!(err.contains("'type' missing from schema"), "{err}");
        // A value of another type is refused too: `time` as text.
        let fields: Vec<Field> = narrowed
            .schema()
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                "entity" => ocsf_typed("entity"),
                "time" => required(text("time")),
                _ => f.as_ref().clone(),
            })
            .collect();
        let retyped = Parquet {
            schema: Arc::new(Schema::new(fields)),
            ..narrowed
        };
        assert!(retyped.write([&e], false).is_err());
    }

    #[test]
    fn a_class_schema_refuses_an_event_of_another_class() {
        let events = every_shape();
        let of = |c: Class| events.iter().find(|e| ocsf_class(e) == c).unwrap();
        // Fields 3002 lacks.
        let p = Parquet::ocsf_class(SIEM_TABLES, Class::Authentication);
        assert!(p.write([of(Class::EntityManagement)], false).is_err());
        // Fields 3005 has (`user`), of another class.
        let p = Parquet::ocsf_class(SIEM_TABLES, Class::UserAccess);
        let err = p
            .write([of(Class::UserAccess), of(Class::AccountChange)], false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a record of OCSF class 3001, not 3005"),
            "{err}"
        );
    }

    #[test]
    fn native_and_ecs_round_trip_with_typed_times() {
        let events = every_shape();
        let p = Parquet::native();
        let got = read_back(p.write(&events, true).unwrap());
        let mut want: Vec<&Event> = events.iter().collect();
        want.sort_by_key(|e| e.time);
        for (g, e) in got.iter().zip(&want) {
            let mut w = json_of(&p, e, true);
            // arrow-json writes a UTC timestamp as `…Z` with the millisecond digits it needs.
            let t = w["time"].as_str().unwrap().to_string();
            let gt = g["time"].as_str().unwrap();
            assert_eq!(
                gt.parse::<jiff::Timestamp>().unwrap(),
                t.parse::<jiff::Timestamp>().unwrap()
            );
            w["time"] = g["time"].clone();
            assert_eq!(g, &w);
            assert_eq!(g["raw"].as_str().unwrap(), e.raw());
        }
        let mut cols = std::collections::BTreeSet::new();
        schema_leaves(p.schema().fields(), "", &mut cols);
        let mut written = std::collections::BTreeSet::new();
        for e in &events {
            leaves(&json_of(&p, e, true), String::new(), &mut written);
        }
        assert_eq!(cols, written);

        let p = Parquet::ecs(SIEM_TABLES);
        let got = read_back(p.write(&events, true).unwrap());
        assert_eq!(got.len(), events.len());
        let mut written = std::collections::BTreeSet::new();
        let instant = |v: &Value| v.as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
        for (g, e) in got.iter().zip(&want) {
            let mut g = g.clone();
            let mut w = json_of(&p, e, true);
            leaves(&w, String::new(), &mut written);
            assert_eq!(instant(&g["@timestamp"]), instant(&w["@timestamp"]));
            // `event.created` is when the record was written: the two writes differ.
            let (gc, wc) = (
                instant(&g["event"]["created"]),
                instant(&w["event"]["created"]),
            );
            assert!(gc <= wc, "{gc} {wc}");
            for v in [&mut g, &mut w] {
                v["@timestamp"] = Value::Null;
                v["event"]["created"] = Value::Null;
            }
            assert_eq!(g, w);
        }
        let mut cols = std::collections::BTreeSet::new();
        schema_leaves(p.schema().fields(), "", &mut cols);
        assert_eq!(cols, written);
    }

    #[test]
    fn the_file_is_zstd_and_says_it_is_sorted_by_time() {
        use ::parquet::file::reader::{FileReader, SerializedFileReader};
        let events = every_shape();
        let p = Parquet::ocsf_class(SIEM_TABLES, Class::EntityManagement);
        let mine = events
            .iter()
            .filter(|e| ocsf_class(e) == Class::EntityManagement);
        let bytes = p.write(mine, false).unwrap();
        let r = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
        let rg = r.metadata().row_group(0);
        let sorting = rg.sorting_columns().unwrap();
        assert_eq!(sorting.len(), 1);
        let col = rg.column(sorting[0].column_idx as usize);
        assert_eq!(col.column_path().string(), "time");
        for c in rg.columns() {
            assert!(
                matches!(c.compression(), Compression::ZSTD(_)),
                "{:?}",
                c.compression()
            );
        }
    }
}
