//! The native event: one shape for all four vendors, written as one JSON object per line.

use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

use crate::timefmt::{self, Nanos};

/// Who or what an event is about: `actor`, `target` and `project` all take this shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entity {
    /// The vendor's kind of entity (`dataset`, `user`, `feature`, ...), when it says.
    pub kind: Option<String>,
    /// The vendor's id of the entity.
    pub id: Option<String>,
    /// A human name, when the vendor gives one.
    pub name: Option<String>,
}

impl Entity {
    /// `None` when every field is absent, so an empty entity is left out rather than written `{}`.
    pub fn non_empty(self) -> Option<Entity> {
        (self.kind.is_some() || self.id.is_some() || self.name.is_some()).then_some(self)
    }
}

/// One normalised audit event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Stable id: the vendor's own where it has one, otherwise derived from content and
    /// occurrence (see `dedupe`). Receivers that cannot promise exactly-once drop repeats by it.
    pub id: String,
    /// The configured name of the source that read the event.
    pub source: Arc<str>,
    /// The source's `kind` (`domino_audit`, ...).
    pub kind: &'static str,
    /// The vendor (`domino`, `domo`, `wasabi`).
    pub vendor: &'static str,
    /// The event's instant in UTC; written with millisecond precision.
    pub time: Nanos,
    /// What happened, in the vendor's words.
    pub action: Option<String>,
    /// Who did it.
    pub actor: Option<Entity>,
    /// What it was done to.
    pub target: Option<Entity>,
    /// The project or workspace it happened in.
    pub project: Option<Entity>,
    /// The client's IP address, where the vendor records it.
    pub src_ip: Option<String>,
    /// The client's user agent, where the vendor records it.
    pub user_agent: Option<String>,
    /// The vendor's event exactly as received (bytes untouched).
    pub raw: Box<RawValue>,
}

struct EntityJson<'a>(&'a Entity);

impl Serialize for EntityJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(v) = &self.0.kind {
            m.serialize_entry("type", v)?;
        }
        if let Some(v) = &self.0.id {
            m.serialize_entry("id", v)?;
        }
        if let Some(v) = &self.0.name {
            m.serialize_entry("name", v)?;
        }
        m.end()
    }
}

/// An event as its native JSON, with or without `raw`.
pub struct NativeJson<'a> {
    pub event: &'a Event,
    pub include_raw: bool,
}

impl Serialize for NativeJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.event;
        let mut time = String::with_capacity(24);
        timefmt::push_rfc3339_ms(&mut time, e.time);
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("id", &e.id)?;
        m.serialize_entry("source", &*e.source)?;
        m.serialize_entry("kind", e.kind)?;
        m.serialize_entry("vendor", e.vendor)?;
        m.serialize_entry("time", &time)?;
        if let Some(v) = &e.action {
            m.serialize_entry("action", v)?;
        }
        for (k, v) in [
            ("actor", &e.actor),
            ("target", &e.target),
            ("project", &e.project),
        ] {
            if let Some(v) = v {
                m.serialize_entry(k, &EntityJson(v))?;
            }
        }
        if let Some(v) = &e.src_ip {
            m.serialize_entry("src_ip", v)?;
        }
        if let Some(v) = &e.user_agent {
            m.serialize_entry("user_agent", v)?;
        }
        if self.include_raw {
            m.serialize_entry("raw", &e.raw)?;
        }
        m.end()
    }
}

impl Event {
    /// Appends the event's native JSON and a newline to `out`.
    pub fn write_ndjson(&self, out: &mut Vec<u8>, include_raw: bool) {
        let json = NativeJson {
            event: self,
            include_raw,
        };
        // Writing to a Vec cannot fail, and every field serialises infallibly.
        serde_json::to_writer(&mut *out, &json).expect("serialising to memory");
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            id: "abc".into(),
            source: Arc::from("air"),
            kind: "wasabi_air",
            vendor: "wasabi",
            time: timefmt::parse_rfc3339("2017-10-11T16:49:52.758191Z").unwrap(),
            action: Some("login".into()),
            actor: Some(Entity {
                kind: None,
                id: Some("u1".into()),
                name: None,
            }),
            target: Entity::default().non_empty(),
            project: None,
            src_ip: None,
            user_agent: None,
            raw: RawValue::from_string(r#"{"id": "abc",  "x":1}"#.into()).unwrap(),
        }
    }

    #[test]
    fn absent_fields_are_left_out_and_raw_kept_verbatim() {
        let mut out = Vec::new();
        sample().write_ndjson(&mut out, true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"id\":\"abc\",\"source\":\"air\",\"kind\":\"wasabi_air\",\"vendor\":\"wasabi\",\
             \"time\":\"2017-10-11T16:49:52.758Z\",\"action\":\"login\",\"actor\":{\"id\":\"u1\"},\
             \"raw\":{\"id\": \"abc\",  \"x\":1}}\n"
        );
    }

    #[test]
    fn include_raw_false_drops_raw() {
        let mut out = Vec::new();
        sample().write_ndjson(&mut out, false);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v.get("raw").is_none());
        assert_eq!(v["time"], "2017-10-11T16:49:52.758Z");
    }
}
