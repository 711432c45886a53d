//! Domino data-source audit: `GET {url}/api/datasource/v1/audit`.
//!
//! `startTime`/`endTime` in ISO 8601 UTC with milliseconds, repeated `dataSourceNames=` and
//! `eventKinds=` filters, `X-Domino-Api-Key`. A bare array with no paging: one response holds a
//! whole window, so the poller keeps windows small and halves one whose response is too large.
//! No event id: events are told apart by content.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{BoxFuture, Http, Identity, Page, PageRequest, Paging, Source, SourceError, Traits};
use crate::config::SourceConfig;
use crate::event::{Entity, Event};
use crate::timefmt::{self, NANOS_PER_MS};

/// Bytes allowed per event in a response before it is treated as too large (entries are a few
/// hundred bytes; this only bounds memory).
const BYTES_PER_EVENT: usize = 1024;

pub struct DominoDatasource {
    name: Arc<str>,
    endpoint: url::Url,
    auth: super::Credential,
    filters: Vec<(String, String)>,
    http: Http,
}

impl DominoDatasource {
    pub fn new(cfg: &SourceConfig, http: Http) -> DominoDatasource {
        let auth = super::credential(
            reqwest::header::HeaderName::from_static("x-domino-api-key"),
            "",
            cfg.auth.api_key.as_ref(),
            "no api_key",
        );
        DominoDatasource {
            name: super::source_name(cfg),
            endpoint: super::endpoint(&cfg.url, "/api/datasource/v1/audit"),
            auth,
            filters: cfg.filters.clone(),
            http,
        }
    }
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "dataSourceId")]
    data_source_id: Option<String>,
    #[serde(rename = "dataSourceName")]
    data_source_name: Option<String>,
    #[serde(rename = "dataSourceType")]
    data_source_type: Option<String>,
    #[serde(rename = "eventKind")]
    event_kind: Option<String>,
    #[serde(default)]
    metadata: Metadata,
    #[serde(rename = "performedBy")]
    performed_by: Option<String>,
    timestamp: String,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(rename = "performedByUsername")]
    performed_by_username: Option<String>,
    #[serde(rename = "projectId")]
    project_id: Option<String>,
}

/// Normalises one data-source audit entry.
pub fn normalise(source: &Arc<str>, raw: &RawValue) -> Result<Event, SourceError> {
    let e: RawEvent = serde_json::from_str(raw.get())
        .map_err(|err| SourceError::Body(format!("domino data-source event: {err}")))?;
    let time = timefmt::parse_rfc3339(&e.timestamp).ok_or_else(|| {
        SourceError::Body(format!(
            "data-source timestamp {:?} is not ISO 8601",
            e.timestamp
        ))
    })?;
    Ok(Event {
        id: String::new(),
        source: source.clone(),
        kind: "domino_datasource",
        vendor: "domino",
        time,
        action: e.event_kind,
        actor: Entity {
            kind: None,
            id: e.performed_by,
            name: e.metadata.performed_by_username,
        }
        .non_empty(),
        target: Entity {
            kind: e.data_source_type,
            id: e.data_source_id,
            name: e.data_source_name,
        }
        .non_empty(),
        project: Entity {
            kind: None,
            id: e.metadata.project_id,
            name: None,
        }
        .non_empty(),
        src_ip: None,
        user_agent: None,
        raw: raw.to_owned(),
    })
}

impl Source for DominoDatasource {
    fn traits(&self) -> Traits {
        Traits {
            paging: Paging::Whole,
            identity: Identity::Content,
            time_unit: NANOS_PER_MS,
        }
    }

    fn fetch<'a>(&'a self, req: &'a PageRequest) -> BoxFuture<'a, Result<Page, SourceError>> {
        Box::pin(async move {
            let query = [
                ("startTime", timefmt::rfc3339_ms(req.start)),
                ("endTime", timefmt::rfc3339_ms(req.end)),
            ];
            let cap = req
                .max_events
                .map(|n| (n.saturating_mul(BYTES_PER_EVENT), n));
            let body = self
                .http
                .get(&self.endpoint, &self.auth, &query, &self.filters, cap)
                .await?;
            let raws = super::parse_array(&body)?;
            if let Some(max) = req.max_events {
                if raws.len() > max {
                    return Err(SourceError::TooLarge(max));
                }
            }
            let returned = raws.len();
            let events = raws
                .iter()
                .map(|raw| normalise(&self.name, raw))
                .collect::<Result<Vec<_>, _>>()?;
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
        let raw = RawValue::from_string(
            r#"{"dataSourceId":"ds1","dataSourceName":"snowflake-prod","dataSourceType":"SnowflakeConfig",
                "eventKind":"AccessDataSource","metadata":{"performedByUsername":"alice","runType":"Workspace",
                "projectId":"p1","runId":"r1","dataPlaneId":"dp"},"performedBy":"u1",
                "timestamp":"2023-08-23T21:40:21.669Z"}"#
                .into(),
        )
        .unwrap();
        let e = normalise(&Arc::from("ds"), &raw).unwrap();
        assert_eq!(timefmt::rfc3339_ms(e.time), "2023-08-23T21:40:21.669Z");
        assert_eq!(e.action.as_deref(), Some("AccessDataSource"));
        assert_eq!(e.actor.unwrap().name.as_deref(), Some("alice"));
        assert_eq!(e.target.unwrap().name.as_deref(), Some("snowflake-prod"));
        assert_eq!(e.project.unwrap().id.as_deref(), Some("p1"));
    }
}
