//! `format = "ocsf"`: each event as an OCSF 1.8.0 event of the class its vendor action maps to
//! ([`super::siem`]'s tables). Every required field of the class is written, with the captions
//! of its ids (`class_name`, `activity_name`, `type_name`, `category_name`, `severity`);
//! `type_uid = class_uid * 100 + activity_id`; `metadata.uid` is the event's id and
//! `metadata.original_time` the vendor's own time text; what has no OCSF attribute goes under
//! `unmapped.<vendor>`; `raw_data` is the vendor's JSON as a string when `include_raw` is on.
//! Nothing is ever `null`: an absent value is left out, and where the class requires an object
//! the vendor did not give (an actor, a user, an entity) a stand-in that says so is written.
//!
//! Written from the event's normalised fields; the vendor's JSON is only scanned for its time
//! text, and parsed only for Domino's privilege changes (who was affected, which role), a few
//! in a hundred events.

use super::siem::{Class, Json};
use super::Encoding;
use crate::event::{Entity, Event};
use crate::json::scan::top_level;

/// The OCSF schema version written in `metadata.version`.
pub const VERSION: &str = "1.8.0";

/// The OCSF encoding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ocsf;

impl Encoding for Ocsf {
    const NAME: &'static str = "ocsf";

    fn write(&self, e: &Event, include_raw: bool, out: &mut Vec<u8>) {
        out.reserve(if include_raw { e.raw().len() + 64 } else { 0 } + 768);
        let t = e.siem();
        let r = t.rule(e);
        let action = t.action(e);
        let class = r.class;
        let caption = class.activity_caption(r.activity).unwrap_or("Other");
        let mut j = Json::open(out);
        j.num("class_uid", class.uid().into());
        j.str("class_name", class.name());
        j.num("category_uid", (class.uid() / 1000).into());
        j.str("category_name", class.category_name());
        j.num("activity_id", r.activity.into());
        j.str(
            "activity_name",
            match r.activity {
                99 => action.unwrap_or(caption),
                _ => caption,
            },
        );
        j.num(
            "type_uid",
            i64::from(class.uid()) * 100 + i64::from(r.activity),
        );
        j.key("type_name");
        j.out.push(b'"');
        j.out.extend_from_slice(class.name().as_bytes());
        j.out.extend_from_slice(b": ");
        j.out.extend_from_slice(caption.as_bytes());
        j.out.push(b'"');
        j.num("severity_id", 1);
        j.str("severity", "Informational");
        j.num("time", e.time.div_euclid(1_000_000));
        j.opt("message", e.action());

        j.begin("metadata");
        j.str("version", VERSION);
        let id = e.id();
        if !id.is_empty() {
            j.str("uid", id);
        }
        match top_level(e.raw(), t.time_key) {
            Some(s) if s.starts_with('"') => {
                j.key("original_time");
                j.out.extend_from_slice(s.as_bytes());
            }
            Some(n) => j.str("original_time", n),
            None => {}
        }
        j.opt("event_code", action);
        j.str("log_name", &e.source);
        j.begin("product");
        j.str("name", t.product);
        j.str("vendor_name", t.vendor_name);
        j.begin("feature");
        j.str("name", t.feature);
        j.end();
        j.end();
        j.end();

        let actor = e.actor().filter(|a| a.id.is_some() || a.name.is_some());
        j.begin("actor");
        match &actor {
            Some(a) => user(&mut j, "user", a),
            None => j.str("app_name", t.product),
        }
        j.end();

        let ip = e
            .src_ip()
            .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok());
        let needs_src = matches!(class, Class::ApiActivity | Class::DatastoreActivity);
        if ip.is_some() || needs_src {
            j.begin("src_endpoint");
            match ip {
                Some(ip) => j.str("ip", ip),
                None => j.str("svc_name", t.product),
            }
            j.end();
        }
        if let Some(ua) = e.user_agent() {
            j.begin("http_request");
            j.str("user_agent", ua);
            j.end();
        }

        let target = e.target();
        let target_user =
            target.filter(|t| is_kind(t, "user") && (t.id.is_some() || t.name.is_some()));
        match class {
            Class::Authentication => {
                subject(&mut j, actor.as_ref());
                j.begin("service");
                j.str("name", t.product);
                j.end();
            }
            Class::AccountChange => subject(&mut j, target_user.as_ref().or(actor.as_ref())),
            Class::UserAccess => {
                let access = t.access_detail.then(|| DominoAccess::of(e.raw())).flatten();
                let affected = access
                    .as_ref()
                    .and_then(|a| a.affecting.first())
                    .map(|u| Entity {
                        kind: Some("user"),
                        id: u.id.as_deref(),
                        name: u.name.as_deref(),
                    });
                subject(
                    &mut j,
                    target_user
                        .as_ref()
                        .or(affected.as_ref())
                        .or(actor.as_ref()),
                );
                let role = access.as_ref().and_then(DominoAccess::role);
                j.strs("privileges", [role.or(action).unwrap_or("unknown")]);
            }
            Class::EntityManagement => {
                j.begin("entity");
                match target
                    .filter(|t| t.id.is_some() || t.name.is_some())
                    .or(e.project())
                {
                    Some(x) => {
                        j.opt("uid", x.id);
                        j.opt("name", x.name);
                        let (type_id, ty) = entity_type(&x, e.project() == Some(x));
                        j.num("type_id", type_id);
                        j.str("type", ty);
                    }
                    None => {
                        j.str("name", action.unwrap_or(t.product));
                        j.num("type_id", 0);
                        j.str("type", "Unknown");
                    }
                }
                j.end();
            }
            Class::ApiActivity => {
                j.begin("api");
                j.str("operation", action.unwrap_or("unknown"));
                j.end();
                if let Some(x) = target.filter(|t| t.id.is_some() || t.name.is_some()) {
                    j.key("resources");
                    j.out.push(b'[');
                    j.out.push(b'{');
                    let mut inner = Json::inside(&mut *j.out);
                    inner.opt("uid", x.id);
                    inner.opt("name", x.name);
                    inner.opt("type", x.kind);
                    j.out.extend_from_slice(b"}]");
                }
            }
            Class::DatastoreActivity => {
                let store = target.unwrap_or_default();
                let bucket = match store.kind {
                    Some("S3Config") => Some((1, "S3")),
                    Some("ADLSConfig") => Some((2, "Azure Blob")),
                    Some("GCSConfig") => Some((3, "GCP Bucket")),
                    _ => None,
                };
                let (key, (type_id, ty)) = match bucket {
                    Some(b) => ("databucket", b),
                    None if store.kind.is_some() => ("database", (1, "Relational")),
                    None => ("database", (0, "Unknown")),
                };
                j.begin(key);
                j.opt("uid", store.id);
                match (store.id, store.name) {
                    (None, None) => j.str("name", "unknown"),
                    (_, name) => j.opt("name", name),
                }
                j.num("type_id", type_id);
                j.str("type", ty);
                j.end();
            }
        }

        let project = e.project();
        if target.is_some() || project.is_some() || actor.and_then(|a| a.kind).is_some() {
            j.begin("unmapped");
            j.begin(t.namespace);
            if let Some(x) = &target {
                j.entity("target", ["type", "id", "name"], x);
            }
            if let Some(x) = &project {
                j.entity("project", ["type", "id", "name"], x);
            }
            if let Some(kind) = actor.and_then(|a| a.kind) {
                j.begin("actor");
                j.str("type", kind);
                j.end();
            }
            j.end();
            j.end();
        }
        if include_raw {
            j.str("raw_data", e.raw());
        }
        j.close();
    }
}

/// Whether the entity's kind is `kind`, in any case (`user`, `USER`).
fn is_kind(e: &Entity<'_>, kind: &str) -> bool {
    e.kind.is_some_and(|k| k.eq_ignore_ascii_case(kind))
}

/// OCSF `managed_entity.type_id` and `type`: User and Group by their captions, anything else
/// Other with the vendor's kind.
fn entity_type<'a>(e: &Entity<'a>, is_project: bool) -> (i64, &'a str) {
    if is_kind(e, "user") {
        (2, "User")
    } else if is_kind(e, "group") {
        (3, "Group")
    } else if is_project {
        (99, "project")
    } else {
        match e.kind {
            Some(k) => (99, k),
            None => (0, "Unknown"),
        }
    }
}

/// A `user` object under `k`: the vendor's id and name, of type User.
fn user(j: &mut Json<'_>, k: &str, u: &Entity<'_>) {
    j.begin(k);
    j.opt("uid", u.id);
    j.opt("name", u.name);
    j.num("type_id", 1);
    j.str("type", "User");
    j.end();
}

/// The class's required `user`: the given one, or one that says the vendor named nobody.
fn subject(j: &mut Json<'_>, u: Option<&Entity<'_>>) {
    match u.filter(|u| u.id.is_some() || u.name.is_some()) {
        Some(u) => user(j, "user", u),
        None => {
            j.begin("user");
            j.str("name", "unknown");
            j.num("type_id", 0);
            j.str("type", "Unknown");
            j.end();
        }
    }
}

/// What a Domino privilege change says beyond the normalised event: who was affected and the
/// role given.
#[derive(serde::Deserialize)]
struct DominoAccess<'a> {
    #[serde(borrow, default)]
    affecting: Vec<Named<'a>>,
    #[serde(borrow, default)]
    targets: Vec<Target<'a>>,
}

#[derive(serde::Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<std::borrow::Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct Target<'a> {
    #[serde(borrow, default, rename = "fieldChanges")]
    field_changes: Vec<Change<'a>>,
}

#[derive(serde::Deserialize)]
struct Change<'a> {
    #[serde(borrow, rename = "fieldName")]
    field_name: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    after: Option<std::borrow::Cow<'a, str>>,
}

impl<'a> DominoAccess<'a> {
    fn of(raw: &'a str) -> Option<DominoAccess<'a>> {
        serde_json::from_str(raw).ok()
    }

    /// The role a `role` field change gives.
    fn role(&self) -> Option<&str> {
        self.targets
            .iter()
            .flat_map(|t| &t.field_changes)
            .find(|c| c.field_name.as_deref() == Some("role"))
            .and_then(|c| c.after.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Field;
    use crate::sources::siem_of;
    use serde_json::Value;

    fn encode(e: &Event, include_raw: bool) -> Value {
        let mut out = Vec::new();
        Ocsf.write(e, include_raw, &mut out);
        serde_json::from_slice(&out)
            .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&out)))
    }

    fn no_nulls(v: &Value) -> bool {
        match v {
            Value::Null => false,
            Value::Array(a) => a.iter().all(no_nulls),
            Value::Object(o) => o.values().all(no_nulls),
            _ => true,
        }
    }

    fn event(kind: &'static str, raw: &str, action: Option<&str>) -> Event {
        let mut e = Event::standalone("src", kind, "v", 1_700_000_000_123_456_789, raw)
            .with_siem(siem_of(kind));
        e.set(Field::Action, action);
        e
    }

    #[test]
    fn an_unknown_action_is_other_99_with_the_vendors_label() {
        let e = event(
            "domo",
            r#"{"time":"Oct 1, 2024 10:57:35 PM"}"#,
            Some("TELEPORTED"),
        );
        let v = encode(&e, false);
        assert_eq!(v["class_uid"], 6003);
        assert_eq!(v["activity_id"], 99);
        assert_eq!(v["activity_name"], "TELEPORTED");
        assert_eq!(v["type_uid"], 600399);
        assert_eq!(v["type_name"], "API Activity: Other");
        assert_eq!(v["api"]["operation"], "TELEPORTED");
        assert_eq!(v["metadata"]["original_time"], "Oct 1, 2024 10:57:35 PM");
        assert_eq!(v["time"], 1_700_000_000_123_i64);
        assert!(no_nulls(&v));
    }

    #[test]
    fn a_missing_actor_and_ip_still_give_the_required_objects() {
        // Domo's 6003 requires actor and src_endpoint; 3002 requires user.
        for action in ["VIEWED", "LOGGED_IN"] {
            let v = encode(&event("domo", "{}", Some(action)), false);
            assert_eq!(v["actor"]["app_name"], "Domo", "{action}");
            if action == "VIEWED" {
                assert_eq!(v["src_endpoint"]["svc_name"], "Domo");
            } else {
                assert_eq!(v["user"]["type_id"], 0);
                assert_eq!(v["user"]["name"], "unknown");
                assert!(v.get("src_endpoint").is_none());
            }
            assert!(v.get("unmapped").is_none());
            assert!(no_nulls(&v));
        }
        // An IP that is not one goes nowhere it could fail the schema's pattern.
        let mut e = event("domo", "{}", Some("VIEWED"));
        e.set(Field::SrcIp, Some("not-an-ip"));
        assert_eq!(encode(&e, false)["src_endpoint"]["svc_name"], "Domo");
    }

    #[test]
    fn a_missing_action_and_target_still_name_an_entity() {
        let v = encode(&event("wasabi_air", "{}", None), false);
        assert_eq!(v["class_uid"], 3004);
        assert_eq!(v["activity_id"], 99);
        assert_eq!(v["activity_name"], "Other");
        assert_eq!(v["entity"]["name"], "Wasabi AiR");
        assert!(v["metadata"].get("event_code").is_none());
        assert!(no_nulls(&v));
    }

    #[test]
    fn domino_privilege_changes_name_the_affected_user_and_the_role() {
        let raw = r#"{"timestamp":1700000000123,"actor":{"id":"a1","name":"ann"},"action":{"eventName":"Change Collaborator Role"},"targets":[{"entity":{"entityType":"user","id":"u2","name":"bob"},"fieldChanges":[{"fieldName":"role","before":"Contributor","after":"Owner","added":[],"removed":[]}]}],"affecting":[{"entityType":"user","id":"u2","name":"bob"}],"metadata":{}}"#;
        let mut e = event("domino_audit", raw, Some("Change Collaborator Role"));
        e.set(Field::TargetKind, Some("user"));
        e.set(Field::TargetId, Some("u2"));
        let v = encode(&e, true);
        assert_eq!(v["class_uid"], 3005);
        assert_eq!(v["user"]["uid"], "u2");
        assert_eq!(v["privileges"], serde_json::json!(["Owner"]));
        assert_eq!(v["metadata"]["original_time"], "1700000000123");
        assert_eq!(v["raw_data"], raw);
        let raw = r#"{"targets":[{"entity":{"entityType":"project","id":"p1"},"fieldChanges":[]}],"affecting":[{"entityType":"user","id":"u3","name":null}]}"#;
        let v = encode(&event("domino_audit", raw, Some("Add Collaborator")), false);
        assert_eq!(v["user"]["uid"], "u3");
        assert!(v["user"].get("name").is_none());
        assert_eq!(v["privileges"], serde_json::json!(["Add Collaborator"]));
        assert!(no_nulls(&v));
    }
}
