//! Wasabi AiR audit API: `GET {url}/api/data/audit`.
//!
//! `from`/`to` in RFC 3339 ("newer than", "older than"), numbered pages with a total,
//! `Authorization: Bearer`. Every event has an id: the dedupe key.

use std::sync::Arc;

use serde::Deserialize;

use super::{BoxFuture, Http, Page, PageRequest, Paging, Source, SourceError, Traits};
use crate::event::{Event, Field, PageText};
use crate::json::Text;
use crate::keys::Identity;
use crate::rows::{on, rule, Class::*, Table, ACCESS, CHANGE, CREATE, DELETE, INFO};
use crate::settings::{Secret, SecretFile, SecretText};
use crate::sources::config::{SourceCheck, SourceConfig};
use crate::timefmt::{self, NANOS_PER_MS};

pub struct WasabiAir {
    name: Arc<str>,
    endpoint: url::Url,
    auth: super::Credential,
    filters: Vec<(String, String)>,
    http: Http,
}

const KIND: &str = "wasabi_air";
const VENDOR: &str = "wasabi";

/// Its SIEM rows: what each of its actions is in OCSF and ECS, and its names in OCSF, ECS and
/// CEF (`docs/siem-formats.md` shows them).
pub static SIEM: Table = Table {
    kind: "wasabi_air",
    product: "Wasabi AiR",
    vendor_name: "Wasabi Technologies",
    feature: "Audit API",
    namespace: "wasabi_air",
    dataset: "wasabi_air.audit",
    action_key: None,
    time_key: "time",
    cef_device: ("Wasabi", "Wasabi AiR"),
    access_detail: false,
    rules: &[
        rule("login", Authentication, 1, "authentication", &["start"]),
        rule("logout", Authentication, 2, "authentication", &["end"]),
        rule(
            "update-password",
            EntityManagement,
            3,
            "iam",
            &["user", "change"],
        ),
        rule("enable", EntityManagement, 8, "configuration", CHANGE),
        rule("disable", EntityManagement, 9, "configuration", CHANGE),
        on(
            "user",
            rule("create", EntityManagement, 1, "iam", &["user", "creation"]),
        ),
        on(
            "user",
            rule("update", EntityManagement, 3, "iam", &["user", "change"]),
        ),
        on(
            "user",
            rule("delete", EntityManagement, 4, "iam", &["user", "deletion"]),
        ),
        on(
            "group",
            rule("create", EntityManagement, 1, "iam", &["group", "creation"]),
        ),
        on(
            "group",
            rule("update", EntityManagement, 3, "iam", &["group", "change"]),
        ),
        on(
            "group",
            rule("delete", EntityManagement, 4, "iam", &["group", "deletion"]),
        ),
        rule("add-user", EntityManagement, 3, "iam", &["group", "change"]),
        rule(
            "remove-user",
            EntityManagement,
            3,
            "iam",
            &["group", "change"],
        ),
        rule("create", EntityManagement, 1, "configuration", CREATE),
        rule("update", EntityManagement, 3, "configuration", CHANGE),
        rule("delete", EntityManagement, 4, "configuration", DELETE),
        rule("add-group", EntityManagement, 3, "configuration", CHANGE),
        rule("upload", EntityManagement, 1, "file", CREATE),
        rule("download", EntityManagement, 2, "file", ACCESS),
        rule("update-metadata", EntityManagement, 3, "file", CHANGE),
        rule("add-asset", EntityManagement, 3, "configuration", CHANGE),
        rule("revoke", EntityManagement, 9, "iam", CHANGE),
    ],
    other: rule("(any other)", EntityManagement, 99, "configuration", INFO),
};

/// The `wasabi_air` plugin.
pub struct WasabiAirKind;

/// The keys of a `kind = "wasabi_air"` source besides those of every source.
#[derive(Debug, Default, Deserialize, crate::settings::Section)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// Sent as `Authorization: Bearer`.
    pub api_key: Option<SecretText>,
    pub api_key_file: Option<SecretFile>,
}

/// A `wasabi_air` source's validated keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub api_key: Option<Secret>,
}

impl super::Vendor for WasabiAirKind {
    fn siem(&self) -> &'static Table {
        &SIEM
    }
    fn kind(&self) -> &'static str {
        KIND
    }
    fn vendor(&self) -> &'static str {
        VENDOR
    }
    fn title(&self) -> &'static str {
        "Wasabi AiR audit"
    }
    fn options(&self) -> &'static [&'static str] {
        <Section as crate::settings::Section>::KEYS
    }
    fn secrets(&self) -> &'static [&'static str] {
        <Section as crate::settings::Section>::SECRETS
    }
    fn reserved_params(&self) -> &'static [&'static str] {
        &["from", "to", "page", "count", "order"]
    }
    fn filter_params(&self) -> &'static [&'static str] {
        &[
            "user_id",
            "group_id",
            "target_kind",
            "target_id",
            "action_key",
        ]
    }
    fn settings(&self, c: &mut SourceCheck<'_, '_>) -> Option<super::VendorSettings> {
        let s: Section = c.section();
        let api_key = c.secret("api_key", &s.api_key, &s.api_key_file);
        c.require("api_key", &api_key, "api_key (or api_key_file)");
        Some(super::VendorSettings::WasabiAir(Settings {
            api_key: api_key.get(),
        }))
    }
}

impl super::Configured for Settings {
    fn build(&self, cfg: &SourceConfig, http: Http) -> Box<dyn Source> {
        Box::new(WasabiAir::new(cfg, self, http))
    }
    fn credential(&self, cfg: &SourceConfig) -> Option<super::CredentialId> {
        let key = self.api_key.as_ref()?;
        Some(super::CredentialId::new(&cfg.url, key.expose()))
    }
}

impl WasabiAir {
    pub fn new(cfg: &SourceConfig, settings: &Settings, http: Http) -> WasabiAir {
        let auth = super::credential(
            reqwest::header::AUTHORIZATION,
            "Bearer ",
            settings.api_key.as_ref(),
            "no api_key",
        );
        WasabiAir {
            name: super::source_name(cfg),
            endpoint: super::endpoint(&cfg.url, "/api/data/audit"),
            auth,
            filters: cfg.filters.clone(),
            http,
        }
    }
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    user_id: Option<Text<'a>>,
    #[serde(borrow)]
    action_key: Option<Text<'a>>,
    #[serde(borrow)]
    target_kind: Option<Text<'a>>,
    #[serde(borrow)]
    target_id: Option<Text<'a>>,
    #[serde(borrow)]
    time: Text<'a>,
}

/// Reads a response: `{"audit_events": [...], "total": N}`. Returns the normalised events and
/// the total.
pub fn read_page(
    source: &Arc<str>,
    page: &PageText,
    capacity: usize,
) -> Result<(Vec<Event>, u64), SourceError> {
    let (events, total) = super::entries::read_entries(
        page,
        super::entries::Layout::Envelope {
            field: "audit_events",
            total: Some("total"),
        },
        capacity,
        |raw, e| normalise(source, page, raw, e),
    )?;
    let total = total.ok_or_else(|| SourceError::Body("missing field \"total\"".into()))?;
    Ok((events, total))
}

/// Normalises one Wasabi AiR event, `raw` (its text) being part of `page`.
fn normalise(
    source: &Arc<str>,
    page: &PageText,
    raw: &str,
    e: RawEvent<'_>,
) -> Result<Event, SourceError> {
    if e.id.is_empty() {
        return Err(SourceError::Body(
            "wasabi air event with an empty id".into(),
        ));
    }
    let time = timefmt::parse_rfc3339(&e.time).ok_or_else(|| {
        SourceError::Body(format!("wasabi air time {:?} is not RFC 3339", e.time))
    })?;
    let mut ev = Event::new(source, KIND, VENDOR, time, page, raw).with_siem(&SIEM);
    ev.set(Field::Id, Some(&e.id));
    ev.set(Field::Action, e.action_key.as_deref());
    ev.set(Field::ActorId, e.user_id.as_deref());
    ev.set(Field::TargetKind, e.target_kind.as_deref());
    ev.set(Field::TargetId, e.target_id.as_deref());
    Ok(ev)
}

impl Source for WasabiAir {
    fn traits(&self) -> Traits {
        Traits {
            paging: Paging::Numbered,
            identity: Identity::VendorId,
            time_unit: NANOS_PER_MS,
            end_can_be_shortened: false,
        }
    }

    fn fetch<'a>(&'a self, req: &'a PageRequest) -> BoxFuture<'a, Result<Page, SourceError>> {
        Box::pin(async move {
            // `from` means "newer than": ask from one nanosecond before the window so an event
            // exactly at its start is included (dedupe absorbs any overlap at the edges).
            let query = [
                ("from", timefmt::rfc3339_nanos(req.start - 1)),
                ("to", timefmt::rfc3339_nanos(req.end)),
                ("order", "ctime".to_string()),
                ("page", req.page.to_string()),
                ("count", req.limit.to_string()),
            ];
            let page = self
                .http
                .get(&self.endpoint, &self.auth, &query, &self.filters, None)
                .await?;
            let (events, total) = read_page(&self.name, &page, req.limit as usize)?;
            let returned = events.len();
            Ok(Page {
                events,
                returned,
                more: ((req.page + 1) * req.limit as u64) < total && returned > 0,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a page holding one entry.
    fn one(json: &str) -> Result<Event, SourceError> {
        let page: PageText = Arc::new(format!(r#"{{"audit_events": [{json}], "total": 1}}"#));
        let (mut events, total) = read_page(&Arc::from("air"), &page, 1)?;
        assert_eq!((events.len(), total), (1, 1));
        Ok(events.remove(0))
    }

    #[test]
    fn normalises_the_documented_shape() {
        let json = r#"{"id": "59e12813db0201953dfe7214c4750e88", "user_id": "u1", "action_key": "enable",
                "target_kind": "feature", "target_id": "disabled_live_\u0068arvesting",
                "time": "2017-10-13T20:54:43.14061Z"}"#;
        let e = one(json).unwrap();
        assert_eq!(e.id(), "59e12813db0201953dfe7214c4750e88");
        assert_eq!(timefmt::rfc3339_ms(e.time), "2017-10-13T20:54:43.140Z");
        assert_eq!(e.time % timefmt::NANOS_PER_SEC, 140_610_000);
        let target = e.target().unwrap();
        assert_eq!(target.kind, Some("feature"));
        assert_eq!(
            target.id,
            Some("disabled_live_harvesting"),
            "escapes resolved"
        );
        assert_eq!(e.raw(), json);
        // Only the field with an escape was copied; the rest point into the page.
        assert_eq!(e.copied_len(), "disabled_live_harvesting".len());
    }

    /// A string cut between the halves of a surrogate pair: serde_json cannot make it, so the
    /// entry is read again with the lone half as U+FFFD, not refused (with its page) for ever.
    #[test]
    fn a_lone_surrogate_in_a_read_field_becomes_a_replacement_character() {
        let json = r#"{"id": "e1", "user_id": "ann\ud83d", "action_key": "a\ud83d\ude00b\\ud800",
                "target_id": "\udc00x", "time": "2017-10-13T20:54:43Z"}"#;
        let e = one(json).unwrap();
        assert_eq!(e.actor().unwrap().id, Some("ann\u{fffd}"));
        assert_eq!(
            e.action(),
            Some("a😀b\\ud800"),
            "a pair and an escaped backslash kept"
        );
        assert_eq!(e.target().unwrap().id, Some("\u{fffd}x"));
        assert_eq!(e.raw(), json, "the raw as sent");
        // Broken JSON, or an entry wrong for another reason, is still refused.
        assert!(one(r#"{"id": "e1", "user_id": "ann\ud83d", "time": 5"#).is_err());
        assert!(one(r#"{"user_id": "ann\ud83d", "time": "2017-10-13T20:54:43Z"}"#).is_err());
    }

    #[test]
    fn bad_time_or_missing_id_is_a_bad_page() {
        for bad in [
            r#"{"id": "x", "time": "yesterday"}"#,
            r#"{"time": "2017-10-13T20:54:43Z"}"#,
            r#"{"id": "", "time": "2017-10-13T20:54:43Z"}"#,
        ] {
            assert!(matches!(one(bad), Err(SourceError::Body(_))), "{bad}");
        }
        let page: PageText = Arc::new("<html>502 Bad Gateway</html>".into());
        let err = read_page(&Arc::from("a"), &page, 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(r#"expected {"audit_events": [...]}: "#),
            "{err}"
        );
        let page: PageText = Arc::new(r#"{"audit_events": []}"#.into());
        assert!(
            matches!(read_page(&Arc::from("a"), &page, 1), Err(SourceError::Body(m)) if m.contains("total"))
        );
    }
}
