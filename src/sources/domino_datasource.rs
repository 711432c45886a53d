//! Domino data-source audit: `GET {url}/api/datasource/v1/audit`.
//!
//! `startTime`/`endTime` in ISO 8601 UTC with milliseconds, repeated `dataSourceNames=` and
//! `eventKinds=` filters, `X-Domino-Api-Key`. A bare array with no paging: one response holds a
//! whole window, so the poller keeps windows small and halves one whose response is too large.
//! No event id: events are told apart by content.

use std::sync::Arc;

use serde::Deserialize;

use super::{BoxFuture, Http, Page, PageRequest, Paging, Source, SourceError, Traits};
use crate::event::{Event, Field, PageText};
use crate::json::Text;
use crate::keys::Identity;
use crate::rows::{rule, Class::*, Table, ACCESS, CHANGE, CREATE, DELETE, INFO};
use crate::settings::{Secret, SecretFile, SecretText};
use crate::sources::config::{SourceCheck, SourceConfig};
use crate::timefmt::{self, NANOS_PER_MS};

/// Bytes allowed per event in a response before it is treated as too large (entries are a few
/// hundred bytes; this only bounds memory).
const BYTES_PER_EVENT: usize = 1024;

pub struct DominoDatasource {
    name: Arc<str>,
    /// A response with more events than this is fetched again in halves.
    max_response_events: usize,
    endpoint: url::Url,
    auth: super::Credential,
    filters: Vec<(String, String)>,
    http: Http,
}

const KIND: &str = "domino_datasource";
const VENDOR: &str = "domino";

/// Its SIEM rows: what each of its actions is in OCSF and ECS, and its names in OCSF, ECS and
/// CEF (`docs/siem-formats.md` shows them).
pub static SIEM: Table = Table {
    kind: "domino_datasource",
    product: "Domino",
    vendor_name: "Domino Data Lab",
    feature: "Data Source Audit",
    namespace: "domino",
    dataset: "domino.data_source",
    action_key: None,
    time_key: "timestamp",
    cef_device: ("Domino Data Lab", "Domino Data Source Audit"),
    access_detail: false,
    rules: &[
        rule("AccessDataSource", DatastoreActivity, 3, "database", ACCESS),
        rule(
            "CreateDataSource",
            EntityManagement,
            1,
            "configuration",
            CREATE,
        ),
        rule(
            "DeleteDataSource",
            EntityManagement,
            4,
            "configuration",
            DELETE,
        ),
        rule(
            "EditDataSourcePermissions",
            EntityManagement,
            3,
            "iam",
            CHANGE,
        ),
        rule(
            "EditDataSourceOwnership",
            EntityManagement,
            3,
            "iam",
            CHANGE,
        ),
        rule(
            "AddDataSourceToProject",
            EntityManagement,
            99,
            "configuration",
            CHANGE,
        ),
        rule(
            "RemoveDataSourceFromProject",
            EntityManagement,
            99,
            "configuration",
            CHANGE,
        ),
    ],
    other: rule("(any other)", EntityManagement, 99, "configuration", INFO),
};

/// The `domino_datasource` plugin.
pub struct DominoDatasourceKind;

/// The keys of a `kind = "domino_datasource"` source besides those of every source.
#[derive(Debug, Default, Deserialize, crate::settings::Section)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// Sent as `X-Domino-Api-Key` (a SysAdmin's key).
    pub api_key: Option<SecretText>,
    pub api_key_file: Option<SecretFile>,
    /// A response with more events than this is fetched again in halves (default 5000).
    pub max_response_events: Option<i64>,
}

/// A `domino_datasource` source's validated keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub api_key: Option<Secret>,
    pub max_response_events: usize,
}

impl super::Vendor for DominoDatasourceKind {
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
        "Domino data-source audit"
    }
    fn options(&self) -> &'static [&'static str] {
        <Section as crate::settings::Section>::KEYS
    }
    fn secrets(&self) -> &'static [&'static str] {
        <Section as crate::settings::Section>::SECRETS
    }
    fn reserved_params(&self) -> &'static [&'static str] {
        &["startTime", "endTime"]
    }
    fn filter_params(&self) -> &'static [&'static str] {
        &["dataSourceNames", "eventKinds"]
    }
    fn settings(&self, c: &mut SourceCheck<'_, '_>) -> Option<super::VendorSettings> {
        let s: Section = c.section();
        let api_key = c.secret("api_key", &s.api_key, &s.api_key_file);
        c.require("api_key", &api_key, "api_key (or api_key_file)");
        let max_response_events = match s.max_response_events {
            None => 5_000,
            Some(n) if n >= 1 => n as usize,
            Some(n) => {
                c.fail(
                    "max_response_events",
                    format_args!("{n} must be at least 1"),
                );
                5_000
            }
        };
        Some(super::VendorSettings::DominoDatasource(Settings {
            api_key: api_key.get(),
            max_response_events,
        }))
    }
}

impl super::Configured for Settings {
    fn build(&self, cfg: &SourceConfig, http: Http) -> Box<dyn Source> {
        Box::new(DominoDatasource::new(cfg, self, http))
    }
    fn credential(&self, cfg: &SourceConfig) -> Option<super::CredentialId> {
        // The same key reads Domino's audit trail too: one credential for both.
        let key = self.api_key.as_ref()?;
        Some(super::CredentialId::new(&cfg.url, key.expose()))
    }
}

impl DominoDatasource {
    pub fn new(cfg: &SourceConfig, settings: &Settings, http: Http) -> DominoDatasource {
        let auth = super::credential(
            reqwest::header::HeaderName::from_static("x-domino-api-key"),
            "",
            settings.api_key.as_ref(),
            "no api_key",
        );
        DominoDatasource {
            name: super::source_name(cfg),
            max_response_events: settings.max_response_events,
            endpoint: super::endpoint(&cfg.url, "/api/datasource/v1/audit"),
            auth,
            filters: cfg.filters.clone(),
            http,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEvent<'a> {
    #[serde(borrow)]
    data_source_id: Option<Text<'a>>,
    #[serde(borrow)]
    data_source_name: Option<Text<'a>>,
    #[serde(borrow)]
    data_source_type: Option<Text<'a>>,
    #[serde(borrow)]
    event_kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    metadata: Metadata<'a>,
    #[serde(borrow)]
    performed_by: Option<Text<'a>>,
    #[serde(borrow)]
    timestamp: Text<'a>,
}

/// The shape of a data-source audit entry.
struct Entry;

impl crate::json::Shape for Entry {
    type Raw<'a> = RawEvent<'a>;
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Metadata<'a> {
    #[serde(borrow)]
    performed_by_username: Option<Text<'a>>,
    #[serde(borrow)]
    project_id: Option<Text<'a>>,
}

/// Reads a response (a bare array).
pub fn read_page(
    source: &Arc<str>,
    page: &PageText,
    capacity: usize,
) -> Result<Vec<Event>, SourceError> {
    super::entries::read_hashed_entries::<Entry>(
        page,
        super::entries::Layout::Array,
        capacity,
        |raw, e| normalise(source, page, raw, e),
    )
    .map(|(events, _)| events)
}

/// Normalises one data-source audit entry, `raw` (its text) being part of `page`.
fn normalise(
    source: &Arc<str>,
    page: &PageText,
    raw: &str,
    e: RawEvent<'_>,
) -> Result<Event, SourceError> {
    let time = timefmt::parse_rfc3339(&e.timestamp).ok_or_else(|| {
        SourceError::Body(format!(
            "data-source timestamp {:?} is not ISO 8601",
            e.timestamp
        ))
    })?;
    let mut ev = Event::new(source, KIND, VENDOR, time, page, raw).with_siem(&SIEM);
    ev.set(Field::Action, e.event_kind.as_deref());
    ev.set(Field::ActorId, e.performed_by.as_deref());
    ev.set(
        Field::ActorName,
        e.metadata.performed_by_username.as_deref(),
    );
    ev.set(Field::TargetKind, e.data_source_type.as_deref());
    ev.set(Field::TargetId, e.data_source_id.as_deref());
    ev.set(Field::TargetName, e.data_source_name.as_deref());
    ev.set(Field::ProjectId, e.metadata.project_id.as_deref());
    Ok(ev)
}

impl Source for DominoDatasource {
    fn traits(&self) -> Traits {
        Traits {
            paging: Paging::Whole {
                max_events: self.max_response_events,
            },
            identity: Identity::Content,
            time_unit: NANOS_PER_MS,
            end_can_be_shortened: true,
        }
    }

    fn fetch<'a>(&'a self, req: &'a PageRequest) -> BoxFuture<'a, Result<Page, SourceError>> {
        Box::pin(async move {
            let query = [
                ("startTime", timefmt::rfc3339_ms(req.start)),
                ("endTime", timefmt::rfc3339_ms(req.end_ms() * NANOS_PER_MS)),
            ];
            let cap = req
                .max_events
                .map(|n| (n.saturating_mul(BYTES_PER_EVENT), n));
            let page = self
                .http
                .get(&self.endpoint, &self.auth, &query, &self.filters, cap)
                .await?;
            let events = read_page(&self.name, &page, req.max_events.unwrap_or(1000))?;
            if let Some(max) = req.max_events {
                if events.len() > max {
                    return Err(SourceError::TooLarge(max));
                }
            }
            let returned = events.len();
            Ok(Page {
                events,
                returned,
                more: false,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_the_documented_shape() {
        let json = r#"{"dataSourceId":"ds1","dataSourceName":"snowflake-prod","dataSourceType":"SnowflakeConfig",
                "eventKind":"AccessDataSource","metadata":{"performedByUsername":"alice","runType":"Workspace",
                "projectId":"p1","runId":"r1","dataPlaneId":"dp"},"performedBy":"u1",
                "timestamp":"2023-08-23T21:40:21.669Z"}"#;
        let page: PageText = Arc::new(format!("[{json}]"));
        let e = read_page(&Arc::from("ds"), &page, 1).unwrap().remove(0);
        assert_eq!(timefmt::rfc3339_ms(e.time), "2023-08-23T21:40:21.669Z");
        assert_eq!(e.action(), Some("AccessDataSource"));
        assert_eq!(e.actor().unwrap().name, Some("alice"));
        assert_eq!(e.target().unwrap().name, Some("snowflake-prod"));
        assert_eq!(e.project().unwrap().id, Some("p1"));
        assert_eq!(e.copied_len(), 0, "every field points into the page");
    }
}
