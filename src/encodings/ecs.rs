//! `format = "ecs"`: each event as an Elastic Common Schema (ECS 9.4.0) document: `@timestamp`
//! (the vendor's time), `event.*` with the category and type of its vendor action
//! ([`super::siem`]'s tables, allowed values only), `user.*`, `source.ip`,
//! `user_agent.original`, `related.*`, and what ECS has no field for under the vendor's
//! namespace (`domino.*`, `domo.*`, `wasabi_air.*`): the target, the project, the source's name.
//!
//! `event.created` is, as ECS defines it, when the agent first read the event: the time the
//! agent encodes it for the sink, which follows the read of its page by the time the page
//! takes to be delivered. An event read again (after a restart before its page was committed)
//! carries the later read's time; `event.id` stays the same, for de-duplication.
//! `event.outcome` is `unknown`: none of the four audit APIs says whether an action failed.

use super::siem::Json;
use super::Encoding;
use crate::event::Event;
use crate::timefmt;

/// The ECS version written in `ecs.version`, whose field reference the tests check against.
pub const VERSION: &str = "9.4.0";

/// The ECS encoding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ecs;

impl Encoding for Ecs {
    const NAME: &'static str = "ecs";

    fn write(&self, e: &Event, include_raw: bool, out: &mut Vec<u8>) {
        out.reserve(if include_raw { e.raw().len() + 64 } else { 0 } + 640);
        let t = e.siem();
        let r = t.rule(e);
        let mut j = Json::open(out);
        j.key("@timestamp");
        time(j.out, e.time);
        j.begin("ecs");
        j.str("version", VERSION);
        j.end();

        j.begin("event");
        j.str("kind", "event");
        j.strs("category", [r.category]);
        j.strs("type", r.types.iter().copied());
        j.opt("action", t.action(e));
        j.str("outcome", "unknown");
        let id = e.id();
        if !id.is_empty() {
            j.str("id", id);
        }
        j.str("module", t.namespace);
        j.str("dataset", t.dataset);
        j.str("provider", t.product);
        j.key("created");
        time(j.out, timefmt::now());
        if include_raw {
            j.str("original", e.raw());
        }
        j.end();
        j.opt("message", e.action());

        let actor = e.actor().filter(|a| a.id.is_some() || a.name.is_some());
        if let Some(a) = &actor {
            j.begin("user");
            j.opt("id", a.id);
            j.opt("name", a.name);
            j.end();
        }
        let ip = e
            .src_ip()
            .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok());
        if let Some(ip) = ip {
            j.begin("source");
            j.str("ip", ip);
            j.end();
        }
        if let Some(ua) = e.user_agent() {
            j.begin("user_agent");
            j.str("original", ua);
            j.end();
        }
        let users = actor.map(|a| (a.id, a.name.filter(|n| Some(*n) != a.id)));
        if users.is_some() || ip.is_some() {
            j.begin("related");
            if let Some((id, name)) = users {
                j.strs("user", id.into_iter().chain(name));
            }
            if let Some(ip) = ip {
                j.strs("ip", [ip]);
            }
            j.end();
        }

        j.begin(t.namespace);
        j.str("source", &e.source);
        if let Some(x) = e.target() {
            j.entity("target", ["type", "id", "name"], &x);
        }
        if let Some(x) = e.project() {
            j.entity("project", ["type", "id", "name"], &x);
        }
        if let Some(kind) = actor.and_then(|a| a.kind) {
            j.begin("actor");
            j.str("type", kind);
            j.end();
        }
        if let Some(ip) = e.src_ip().filter(|_| ip.is_none()) {
            // Not an IP address: kept, but out of `source.ip`, which would refuse the document.
            j.str("src_ip", ip);
        }
        j.end();
        j.close();
    }
}

/// Appends `"2024-10-18T14:10:04.123Z"`.
fn time(out: &mut Vec<u8>, t: timefmt::Nanos) {
    out.push(b'"');
    timefmt::push_rfc3339_ms(out, t);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Field;
    use crate::sources::siem_of;
    use serde_json::Value;

    fn encode(e: &Event, include_raw: bool) -> Value {
        let mut out = Vec::new();
        Ecs.write(e, include_raw, &mut out);
        serde_json::from_slice(&out)
            .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&out)))
    }

    #[test]
    fn a_full_event_and_its_raw() {
        let raw = r#"{"userName":"ann"}"#;
        let mut e = Event::standalone("d", "domo", "domo", 1_700_000_000_123_456_789, raw)
            .with_siem(siem_of("domo"));
        e.set(Field::Id, Some("ev1"));
        e.set(Field::Action, Some("LOGGED_IN"));
        e.set(Field::ActorKind, Some("USER"));
        e.set(Field::ActorId, Some("42"));
        e.set(Field::ActorName, Some("ann"));
        e.set(Field::SrcIp, Some("10.1.2.3"));
        e.set(Field::UserAgent, Some("Mozilla/5.0"));
        let v = encode(&e, true);
        assert_eq!(v["@timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(
            v["event"]["category"],
            serde_json::json!(["authentication"])
        );
        assert_eq!(v["event"]["type"], serde_json::json!(["start"]));
        assert_eq!(v["event"]["id"], "ev1");
        assert_eq!(v["event"]["original"], raw);
        assert_eq!(v["event"]["dataset"], "domo.activity");
        assert_eq!(v["user"]["name"], "ann");
        assert_eq!(v["source"]["ip"], "10.1.2.3");
        assert_eq!(v["user_agent"]["original"], "Mozilla/5.0");
        assert_eq!(v["related"]["user"], serde_json::json!(["42", "ann"]));
        assert_eq!(v["related"]["ip"], serde_json::json!(["10.1.2.3"]));
        assert_eq!(v["domo"]["actor"]["type"], "USER");
        let created = crate::timefmt::parse_rfc3339(v["event"]["created"].as_str().unwrap());
        assert!(created.is_some());
        assert!(encode(&e, false)["event"].get("original").is_none());
    }

    #[test]
    fn a_missing_actor_ip_and_action_leave_their_fields_out() {
        let mut e = Event::standalone("w", "wasabi_air", "wasabi", 0, "{}")
            .with_siem(siem_of("wasabi_air"));
        e.set(Field::SrcIp, Some("bogus"));
        let v = encode(&e, false);
        for k in ["user", "source", "related", "message"] {
            assert!(v.get(k).is_none(), "{k}: {v}");
        }
        assert!(v["event"].get("action").is_none());
        assert_eq!(v["event"]["category"], serde_json::json!(["configuration"]));
        assert_eq!(v["event"]["type"], serde_json::json!(["info"]));
        assert_eq!(v["wasabi_air"]["src_ip"], "bogus");
        assert_eq!(v["wasabi_air"]["source"], "w");
    }
}
