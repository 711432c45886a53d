//! `format = "cef"`: ArcSight Common Event Format, one line per event:
//! `CEF:0|Device Vendor|Device Product|Device Version|Signature ID|Name|Severity|Extension`.
//!
//! The header names the SaaS product the event came from (the "device"), the action is both the
//! signature and the name, and the extension carries the native fields under standard CEF keys
//! (or labelled custom strings where CEF has no key): [`MAPPING`] lists them, and the CEF table
//! of `docs/siem-formats.md` is checked against it by a unit test. Header values escape `\` and
//! `|`; extension values escape `\`, `=` and line breaks (`\n`, `\r`), as the CEF guide requires.

use super::Encoding;
use crate::event::{Entity, Event};
use crate::timefmt::NANOS_PER_SEC;

/// CEF lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cef;

/// How bad an event looks, from its action: one scale for syslog's severity and CEF's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Anything else (reads, creates, logins, edits).
    Info,
    /// Something removed or access changed: delete, remove, revoke, disable, permissions, roles.
    Notice,
    /// Something refused or failed: a failed login, a denied access.
    Warning,
}

impl Severity {
    /// The severity of an event, from words in its action (case-insensitive).
    pub fn of(e: &Event) -> Severity {
        let a = e.action().unwrap_or("").to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| a.contains(w));
        if has(&["fail", "denied", "invalid", "unauthori", "reject"]) {
            Severity::Warning
        } else if has(&[
            "delete",
            "remove",
            "revoke",
            "disable",
            "permission",
            "ownership",
            "role",
            "grant",
        ]) {
            Severity::Notice
        } else {
            Severity::Info
        }
    }

    /// RFC 5424 severity: 6 informational, 5 notice, 4 warning.
    pub fn syslog(self) -> u8 {
        match self {
            Severity::Info => 6,
            Severity::Notice => 5,
            Severity::Warning => 4,
        }
    }

    /// CEF severity (0–10): 3 low, 5 medium, 7 high.
    pub fn cef(self) -> u8 {
        match self {
            Severity::Info => 3,
            Severity::Notice => 5,
            Severity::Warning => 7,
        }
    }
}

/// Device Vendor and Device Product of an event: its vendor's SIEM table's, or for an event
/// without one, the vendor's name.
pub fn device(e: &Event) -> (&'static str, &'static str) {
    let (t, vendor) = (e.siem(), e.vendor);
    if !t.kind.is_empty() {
        return t.cef_device;
    }
    match vendor {
        "domino" => ("Domino Data Lab", "Domino"),
        "domo" => ("Domo", "Domo"),
        "wasabi" => ("Wasabi", "Wasabi"),
        _ => t.cef_device,
    }
}

/// One extension key holding a native string field.
pub struct Ext {
    /// The native field (its JSON path).
    pub native: &'static str,
    /// The CEF key.
    pub key: &'static str,
    /// For a custom field (`cs1`, `flexString1`...), the label written as `{key}Label`.
    pub label: Option<&'static str>,
    /// Reads the field.
    pub get: fn(&Event) -> Option<&str>,
}

fn part(e: Option<Entity<'_>>, f: fn(Entity<'_>) -> Option<&str>) -> Option<&str> {
    e.and_then(f)
}

/// The string fields of the extension, in the order they are written.
pub const MAPPING: &[Ext] = &[
    Ext {
        native: "id",
        key: "externalId",
        label: None,
        get: |e| Some(e.id()),
    },
    Ext {
        native: "action",
        key: "act",
        label: None,
        get: |e| e.action(),
    },
    Ext {
        native: "kind",
        key: "cat",
        label: None,
        get: |e| Some(e.kind),
    },
    Ext {
        native: "source",
        key: "cs6",
        label: Some("source"),
        get: |e| Some(&e.source),
    },
    Ext {
        native: "actor.type",
        key: "flexString1",
        label: Some("actorType"),
        get: |e| part(e.actor(), |a| a.kind),
    },
    Ext {
        native: "actor.id",
        key: "suid",
        label: None,
        get: |e| part(e.actor(), |a| a.id),
    },
    Ext {
        native: "actor.name",
        key: "suser",
        label: None,
        get: |e| part(e.actor(), |a| a.name),
    },
    Ext {
        native: "target.type",
        key: "cs1",
        label: Some("targetType"),
        get: |e| part(e.target(), |a| a.kind),
    },
    Ext {
        native: "target.id",
        key: "cs2",
        label: Some("targetId"),
        get: |e| part(e.target(), |a| a.id),
    },
    Ext {
        native: "target.name",
        key: "cs3",
        label: Some("targetName"),
        get: |e| part(e.target(), |a| a.name),
    },
    Ext {
        native: "project.type",
        key: "flexString2",
        label: Some("projectType"),
        get: |e| part(e.project(), |a| a.kind),
    },
    Ext {
        native: "project.id",
        key: "cs4",
        label: Some("projectId"),
        get: |e| part(e.project(), |a| a.id),
    },
    Ext {
        native: "project.name",
        key: "cs5",
        label: Some("projectName"),
        get: |e| part(e.project(), |a| a.name),
    },
    Ext {
        native: "user_agent",
        key: "requestClientApplication",
        label: None,
        get: |e| e.user_agent(),
    },
];

/// The CEF table of `docs/siem-formats.md`, made from the code: header parts, then every
/// extension key.
pub fn mapping_table() -> String {
    let mut t = String::from("| native | CEF |\n| --- | --- |\n");
    for (n, c) in [
        (
            "vendor, kind",
            "Device Vendor, Device Product (e.g. `Domino Data Lab`, `Domino Audit Trail`)",
        ),
        ("(agent)", "Device Version: auditship's version"),
        ("action", "Signature ID and Name (`unknown` when absent)"),
        (
            "action",
            "Severity: 3, 5 for deletes/removals/access changes, 7 for failures/denials",
        ),
        ("time", "`rt` (milliseconds since the epoch)"),
    ] {
        t.push_str(&format!("| {n} | {c} |\n"));
    }
    for m in MAPPING {
        match m.label {
            Some(l) => t.push_str(&format!(
                "| {} | `{}` (`{}Label={l}`) |\n",
                m.native, m.key, m.key
            )),
            None => t.push_str(&format!("| {} | `{}` |\n", m.native, m.key)),
        }
    }
    t.push_str("| src_ip | `src` when it is an IP address, otherwise `shost` |\n");
    t.push_str("| raw | `rawEvent` (the vendor's JSON; left out with `include_raw = false`) |\n");
    t
}

/// Appends a header value: `\` and `|` escaped, line breaks made spaces (a header has none).
fn push_header(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        match b {
            b'\\' | b'|' => out.extend_from_slice(&[b'\\', b]),
            b'\n' | b'\r' => out.push(b' '),
            _ => out.push(b),
        }
    }
}

/// Appends an extension value: `\`, `=` and line breaks escaped.
fn push_value(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        match b {
            b'\\' | b'=' => out.extend_from_slice(&[b'\\', b]),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// Appends ` key=value` (no space before the first pair).
fn push_pair(out: &mut Vec<u8>, first: &mut bool, key: &str, value: &str) {
    if !std::mem::take(first) {
        out.push(b' ');
    }
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    push_value(out, value);
}

impl Encoding for Cef {
    const NAME: &'static str = "cef";

    fn write(&self, e: &Event, include_raw: bool, out: &mut Vec<u8>) {
        let (vendor, product) = device(e);
        let action = e.action().unwrap_or("unknown");
        out.extend_from_slice(b"CEF:0|");
        for h in [vendor, product, env!("CARGO_PKG_VERSION"), action, action] {
            push_header(out, h);
            out.push(b'|');
        }
        out.extend_from_slice(Severity::of(e).cef().to_string().as_bytes());
        out.push(b'|');
        let mut first = true;
        let ms = e.time.div_euclid(NANOS_PER_SEC / 1000);
        push_pair(out, &mut first, "rt", &ms.to_string());
        for m in MAPPING {
            let Some(v) = (m.get)(e) else { continue };
            if let Some(l) = m.label {
                push_pair(out, &mut first, &format!("{}Label", m.key), l);
            }
            push_pair(out, &mut first, m.key, v);
        }
        if let Some(ip) = e.src_ip() {
            let key = if ip.parse::<std::net::IpAddr>().is_ok() {
                "src"
            } else {
                "shost"
            };
            push_pair(out, &mut first, key, ip);
        }
        if include_raw {
            push_pair(out, &mut first, "rawEvent", e.raw());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::Field;

    /// A table with the CEF device of Domino's audit trail (the vendor's own, in
    /// `sources/domino_audit.rs`, is above this module; `tests/siem.rs` checks its records).
    static DOMINO_AUDIT: crate::rows::Table = crate::rows::Table {
        kind: "domino_audit",
        cef_device: ("Domino Data Lab", "Domino Audit Trail"),
        ..crate::rows::NO_ROWS
    };

    /// A Domino audit event with most fields set and characters CEF must escape.
    pub(crate) fn event(action: &str) -> Event {
        let mut e = Event::standalone(
            "dom",
            "domino_audit",
            "domino",
            1_729_260_604_123_000_000,
            r#"{"a":"x=y\\z"}"#,
        )
        .with_siem(&DOMINO_AUDIT);
        e.set(Field::Id, Some("ev-1"));
        e.set(Field::Action, Some(action));
        e.set(Field::ActorId, Some("u1"));
        e.set(Field::ActorName, Some("ann=b\nc"));
        e.set(Field::TargetKind, Some("dataset"));
        e.set(Field::TargetName, Some("a|b\\c"));
        e.set(Field::SrcIp, Some("10.0.0.1"));
        e
    }

    #[test]
    fn header_and_extension_are_escaped_as_the_guide_says() {
        let mut out = Vec::new();
        Cef.write(&event("Edit | Dataset\\x"), true, &mut out);
        let line = String::from_utf8(out).unwrap();
        assert_eq!(
            line,
            format!(
                "CEF:0|Domino Data Lab|Domino Audit Trail|{}|Edit \\| Dataset\\\\x|Edit \\| Dataset\\\\x|3|\
                 rt=1729260604123 externalId=ev-1 act=Edit | Dataset\\\\x cat=domino_audit \
                 cs6Label=source cs6=dom suid=u1 suser=ann\\=b\\nc cs1Label=targetType cs1=dataset \
                 cs3Label=targetName cs3=a|b\\\\c src=10.0.0.1 rawEvent={{\"a\":\"x\\=y\\\\\\\\z\"}}",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn severity_follows_the_action() {
        for (a, s) in [
            ("Create Dataset", Severity::Info),
            ("DeleteDataSource", Severity::Notice),
            ("EditDataSourcePermissions", Severity::Notice),
            ("Login Failed", Severity::Warning),
        ] {
            assert_eq!(Severity::of(&event(a)), s, "{a}");
        }
        let mut out = Vec::new();
        Cef.write(&event("DeleteDataSource"), false, &mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(line.contains("|5|rt="), "{line}");
        assert!(!line.contains("rawEvent"), "{line}");
    }

    #[test]
    fn a_non_ip_client_address_goes_to_shost() {
        let mut e = event("x");
        e.set(Field::SrcIp, Some("proxy.example.com"));
        let mut out = Vec::new();
        Cef.write(&e, false, &mut out);
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with(" shost=proxy.example.com"));
    }

    /// docs/siem-formats.md's table is the one the code makes: the mapping cannot drift from the
    /// docs.
    #[test]
    fn readme_cef_table_matches_the_code() {
        let readme = include_str!("../../docs/siem-formats.md");
        let start = readme
            .find("<!-- cef-mapping:start -->\n")
            .expect("docs/siem-formats.md has the cef-mapping markers");
        let rest = &readme[start + "<!-- cef-mapping:start -->\n".len()..];
        let end = rest.find("<!-- cef-mapping:end -->").unwrap();
        assert_eq!(
            &rest[..end],
            mapping_table(),
            "docs/siem-formats.md's CEF table differs from the code; paste mapping_table()'s output"
        );
    }
}
