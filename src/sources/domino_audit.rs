//! Domino Data Lab audit trail: `GET {url}/api/audittrail/v1/auditevents`.
//!
//! Windows in unix milliseconds (`startTimestamp`, `endTimestamp`), offset paging newest first,
//! `X-Domino-Api-Key` or a bearer JWT. Events carry no id: they are told apart by content.

use std::sync::Arc;

use serde::Deserialize;

use super::{BoxFuture, Http, Page, PageRequest, Paging, Source, SourceError, Traits};
use crate::event::{Event, Field, PageText};
use crate::json::Text;
use crate::keys::Identity;
use crate::rows::{rule, Class::*, Table, ACCESS, CHANGE, CREATE, DELETE, INFO};
use crate::settings::{Secret, SecretFile, SecretText, SecretValue};
use crate::sources::config::{SourceCheck, SourceConfig};
use crate::timefmt::NANOS_PER_MS;

pub struct DominoAudit {
    name: Arc<str>,
    endpoint: url::Url,
    /// `X-Domino-Api-Key` or `Authorization: Bearer` (marked sensitive).
    auth: super::Credential,
    filters: Vec<(String, String)>,
    http: Http,
}

const KIND: &str = "domino_audit";
const VENDOR: &str = "domino";

/// Its SIEM rows: what each of its actions is in OCSF and ECS, and its names in OCSF, ECS and
/// CEF (`docs/siem-formats.md` shows them).
pub static SIEM: Table = Table {
    kind: "domino_audit",
    product: "Domino",
    vendor_name: "Domino Data Lab",
    feature: "Audit Trail",
    namespace: "domino",
    dataset: "domino.audit",
    action_key: None,
    time_key: "timestamp",
    cef_device: ("Domino Data Lab", "Domino Audit Trail"),
    access_detail: true,
    rules: &[
        rule(
            "Create Project",
            EntityManagement,
            1,
            "configuration",
            CREATE,
        ),
        rule(
            "Archive Project",
            EntityManagement,
            9,
            "configuration",
            CHANGE,
        ),
        rule(
            "Add Collaborator",
            UserAccess,
            1,
            "iam",
            &["group", "change"],
        ),
        rule(
            "Remove Collaborator",
            UserAccess,
            2,
            "iam",
            &["group", "change"],
        ),
        rule(
            "Change Collaborator Role",
            UserAccess,
            1,
            "iam",
            &["user", "change"],
        ),
        rule("Create Dataset", EntityManagement, 1, "file", CREATE),
        rule("Delete Dataset", EntityManagement, 4, "file", DELETE),
        rule(
            "Create Dataset Snapshot",
            EntityManagement,
            1,
            "file",
            CREATE,
        ),
        rule("Upload Files", EntityManagement, 1, "file", CREATE),
        rule("Download Files", EntityManagement, 2, "file", ACCESS),
        rule("Delete Files", EntityManagement, 4, "file", DELETE),
        rule("Start Job", EntityManagement, 99, "process", &["start"]),
        rule("Stop Job", EntityManagement, 99, "process", &["end"]),
        rule(
            "Create Scheduled Job",
            EntityManagement,
            1,
            "configuration",
            CREATE,
        ),
        rule("Start App", EntityManagement, 99, "process", &["start"]),
        rule(
            "Start Workspace",
            EntityManagement,
            99,
            "process",
            &["start"],
        ),
        rule(
            "Change Feature Flag",
            EntityManagement,
            3,
            "configuration",
            CHANGE,
        ),
        rule(
            "Create Governance Bundle",
            EntityManagement,
            1,
            "configuration",
            CREATE,
        ),
        rule(
            "Approve Governance Bundle",
            EntityManagement,
            3,
            "configuration",
            CHANGE,
        ),
        rule(
            "Change Data Source Permissions",
            UserAccess,
            1,
            "iam",
            &["user", "change"],
        ),
        rule(
            "Create User",
            AccountChange,
            1,
            "iam",
            &["user", "creation"],
        ),
        rule(
            "Change User Role",
            UserAccess,
            1,
            "iam",
            &["user", "change"],
        ),
    ],
    other: rule("(any other)", EntityManagement, 99, "configuration", INFO),
};

/// The `domino_audit` plugin.
pub struct DominoAuditKind;

/// The keys of a `kind = "domino_audit"` source besides those of every source: one of the two
/// credentials.
#[derive(Debug, Default, Deserialize, crate::settings::Section)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// Sent as `X-Domino-Api-Key`.
    pub api_key: Option<SecretText>,
    pub api_key_file: Option<SecretFile>,
    /// Sent as `Authorization: Bearer`.
    pub jwt: Option<SecretText>,
    pub jwt_file: Option<SecretFile>,
}

/// A `domino_audit` source's validated keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub api_key: Option<Secret>,
    pub jwt: Option<Secret>,
}

impl super::Vendor for DominoAuditKind {
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
        "Domino audit trail"
    }
    fn options(&self) -> &'static [&'static str] {
        <Section as crate::settings::Section>::KEYS
    }
    fn secrets(&self) -> &'static [&'static str] {
        <Section as crate::settings::Section>::SECRETS
    }
    fn reserved_params(&self) -> &'static [&'static str] {
        &["startTimestamp", "endTimestamp", "limit", "offset", "sort"]
    }
    fn filter_params(&self) -> &'static [&'static str] {
        &[
            "actorId",
            "actorName",
            "event",
            "targetType",
            "targetId",
            "targetName",
            "withinProjectId",
            "withinProjectName",
        ]
    }
    fn settings(&self, c: &mut SourceCheck<'_, '_>) -> Option<super::VendorSettings> {
        let s: Section = c.section();
        let api_key = c.secret("api_key", &s.api_key, &s.api_key_file);
        let jwt = c.secret("jwt", &s.jwt, &s.jwt_file);
        match (&api_key, &jwt) {
            (SecretValue::Absent, SecretValue::Absent) => c.fail(
                "api_key",
                "missing: domino_audit needs api_key (or api_key_file) or jwt (or jwt_file)",
            ),
            (SecretValue::Given(_), SecretValue::Given(_)) => {
                c.fail("jwt", "set either api_key or jwt, not both")
            }
            _ => {}
        }
        Some(super::VendorSettings::DominoAudit(Settings {
            api_key: api_key.get(),
            jwt: jwt.get(),
        }))
    }
}

impl super::Configured for Settings {
    fn build(&self, cfg: &SourceConfig, http: Http) -> Box<dyn Source> {
        Box::new(DominoAudit::new(cfg, self, http))
    }
    fn credential(&self, cfg: &SourceConfig) -> Option<super::CredentialId> {
        let key = self.api_key.as_ref().or(self.jwt.as_ref())?;
        Some(super::CredentialId::new(&cfg.url, key.expose()))
    }
}

impl DominoAudit {
    pub fn new(cfg: &SourceConfig, settings: &Settings, http: Http) -> DominoAudit {
        let auth = match (&settings.api_key, &settings.jwt) {
            (None, Some(j)) => super::credential(
                reqwest::header::AUTHORIZATION,
                "Bearer ",
                Some(j),
                "no api_key or jwt",
            ),
            (k, _) => super::credential(
                reqwest::header::HeaderName::from_static("x-domino-api-key"),
                "",
                k.as_ref(),
                "no api_key or jwt",
            ),
        };
        DominoAudit {
            name: super::source_name(cfg),
            endpoint: super::endpoint(&cfg.url, "/api/audittrail/v1/auditevents"),
            auth,
            filters: cfg.filters.clone(),
            http,
        }
    }
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    timestamp: i64,
    #[serde(borrow)]
    actor: Option<RawEntity<'a>>,
    #[serde(borrow)]
    action: Option<RawAction<'a>>,
    #[serde(borrow, default)]
    targets: super::First<RawTarget<'a>>,
    #[serde(borrow, rename = "in")]
    within: Option<RawEntity<'a>>,
}

/// The shape of a Domino audit event.
struct Entry;

impl crate::json::Shape for Entry {
    type Raw<'a> = RawEvent<'a>;
}

#[derive(Deserialize)]
struct RawAction<'a> {
    #[serde(borrow, rename = "eventName")]
    event_name: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct RawTarget<'a> {
    #[serde(borrow)]
    entity: Option<RawEntity<'a>>,
}

#[derive(Deserialize)]
struct RawEntity<'a> {
    #[serde(borrow, rename = "entityType")]
    entity_type: Option<Text<'a>>,
    #[serde(borrow)]
    id: Option<Text<'a>>,
    #[serde(borrow)]
    name: Option<Text<'a>>,
}

impl RawEntity<'_> {
    /// Sets the entity whose kind field is `kind` (`None`: the type is not kept).
    fn set(&self, ev: &mut Event, kind: Option<Field>, id: Field, name: Field) {
        if let Some(k) = kind {
            ev.set(k, self.entity_type.as_deref());
        }
        ev.set(id, self.id.as_deref());
        ev.set(name, self.name.as_deref());
    }
}

/// Reads a response: `{"events": [...]}`.
pub fn read_page(
    source: &Arc<str>,
    page: &PageText,
    capacity: usize,
) -> Result<Vec<Event>, SourceError> {
    super::entries::read_hashed_entries::<Entry>(
        page,
        super::entries::Layout::Envelope {
            field: "events",
            total: None,
        },
        capacity,
        |raw, e| normalise(source, page, raw, e),
    )
    .map(|(events, _)| events)
}

/// Normalises one Domino audit event, `raw` (its text) being part of `page`.
fn normalise(
    source: &Arc<str>,
    page: &PageText,
    raw: &str,
    e: RawEvent<'_>,
) -> Result<Event, SourceError> {
    let time = e
        .timestamp
        .checked_mul(NANOS_PER_MS)
        .ok_or_else(|| SourceError::Body(format!("timestamp {} out of range", e.timestamp)))?;
    let mut ev = Event::new(source, KIND, VENDOR, time, page, raw).with_siem(&SIEM);
    ev.set(
        Field::Action,
        e.action.as_ref().and_then(|a| a.event_name.as_deref()),
    );
    if let Some(a) = &e.actor {
        a.set(&mut ev, None, Field::ActorId, Field::ActorName);
    }
    if let Some(t) = e.targets.0.as_ref().and_then(|t| t.entity.as_ref()) {
        t.set(
            &mut ev,
            Some(Field::TargetKind),
            Field::TargetId,
            Field::TargetName,
        );
    }
    if let Some(p) = &e.within {
        p.set(&mut ev, None, Field::ProjectId, Field::ProjectName);
    }
    Ok(ev)
}

impl Source for DominoAudit {
    fn traits(&self) -> Traits {
        Traits {
            paging: Paging::Offset,
            identity: Identity::Content,
            time_unit: NANOS_PER_MS,
            end_can_be_shortened: true,
        }
    }

    fn fetch<'a>(&'a self, req: &'a PageRequest) -> BoxFuture<'a, Result<Page, SourceError>> {
        Box::pin(async move {
            let query = [
                ("startTimestamp", (req.start / NANOS_PER_MS).to_string()),
                ("endTimestamp", req.end_ms().to_string()),
                ("limit", req.limit.to_string()),
                ("offset", req.offset.to_string()),
                ("sort", "-timestamp".to_string()),
            ];
            let page = self
                .http
                .get(&self.endpoint, &self.auth, &query, &self.filters, None)
                .await?;
            let events = read_page(&self.name, &page, req.limit as usize)?;
            let returned = events.len();
            Ok(Page {
                events,
                returned,
                more: returned >= req.limit as usize,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a page holding one entry.
    fn one(json: &str) -> Result<Event, SourceError> {
        let page: PageText = Arc::new(format!(r#"{{"events": [{json}]}}"#));
        let mut events = read_page(&Arc::from("dom"), &page, 1)?;
        assert_eq!(events.len(), 1);
        Ok(events.remove(0))
    }

    #[test]
    fn normalises_the_documented_shape() {
        let json = r#"{"timestamp": 1729185360064,
               "actor": {"id": "u1", "name": "alice", "firstName": "Alice", "lastName": "X"},
               "action": {"eventName": "Create Dataset", "using": [], "traceId": "t"},
               "targets": [{"entity": {"entityType": "dataset", "id": "d1", "name": "ds1"},
                            "fieldChanges": []}],
               "affecting": [], "in": {"entityType": "project", "id": "p1", "name": "proj"},
               "metadata": {}}"#;
        let e = one(json).unwrap();
        assert_eq!(
            crate::timefmt::rfc3339_ms(e.time),
            "2024-10-17T17:16:00.064Z"
        );
        assert_eq!(e.action(), Some("Create Dataset"));
        assert_eq!(e.actor().unwrap().name, Some("alice"));
        assert_eq!(e.actor().unwrap().kind, None);
        let t = e.target().unwrap();
        assert_eq!((t.kind, t.id), (Some("dataset"), Some("d1")));
        assert_eq!(e.project().unwrap().name, Some("proj"));
        assert_eq!(e.copied_len(), 0, "every field points into the page");
    }

    #[test]
    fn missing_in_and_empty_targets_are_absent_and_no_timestamp_is_an_error() {
        let n = one;
        let e = n(r#"{"timestamp": 1, "actor": {"id": "u"}, "action": {"eventName": "Login"}, "targets": []}"#).unwrap();
        assert!(e.target().is_none() && e.project().is_none());
        let e =
            n(r#"{"timestamp": 1, "targets": [{"entity": {"id": "a"}}, {"entity": {"id": "b"}}]}"#)
                .unwrap();
        assert_eq!(e.target().unwrap().id, Some("a"), "the first target");
        assert!(matches!(n(r#"{"actor": {}}"#), Err(SourceError::Body(_))));
        // Members the API does not document are skipped whatever they hold.
        let page: PageText = Arc::new(r#"{"total": null, "events": [{"timestamp": 1}]}"#.into());
        assert_eq!(read_page(&Arc::from("dom"), &page, 1).unwrap().len(), 1);
        assert!(matches!(
            n(r#"{"timestamp": 1, "targets": {}}"#),
            Err(SourceError::Body(_))
        ));
    }

    /// A lone surrogate escape in a member the shape does not read (a vendor that cut a string
    /// between the halves of a pair): the entry is read and keyed, not refused for ever.
    #[test]
    fn an_entry_with_a_lone_surrogate_in_an_unread_member_is_read_and_keyed() {
        let e = one(
            r#"{"timestamp": 1, "actor": {"name": "bob"}, "metadata": {"note": "cut \ud83d"}}"#,
        )
        .unwrap();
        assert_eq!(e.actor().unwrap().name, Some("bob"));
        let hash = e.content_hash().expect("hashed while read");
        assert_eq!(hash, crate::keys::content_hash(e.raw()).unwrap());
    }

    /// The same in a member the shape reads: the field gets U+FFFD, the key comes from the raw
    /// as sent (so it is the key the entry always had).
    #[test]
    fn an_entry_with_a_lone_surrogate_in_a_read_member_is_read_and_keyed() {
        let json = r#"{"timestamp": 1, "actor": {"name": "bob \ud83d"}, "in": {"id": "p"}}"#;
        let e = one(json).unwrap();
        assert_eq!(e.actor().unwrap().name, Some("bob \u{fffd}"));
        assert_eq!(e.project().unwrap().id, Some("p"));
        assert_eq!(e.raw(), json);
        let want = crate::keys::content_hash(e.raw()).unwrap();
        assert_eq!(e.content_hash(), Some(want), "hashed while read");
    }
}
