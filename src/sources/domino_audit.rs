//! Domino Data Lab audit trail: `GET {url}/api/audittrail/v1/auditevents`.
//!
//! Windows in unix milliseconds (`startTimestamp`, `endTimestamp`), offset paging newest first,
//! `X-Domino-Api-Key` or a bearer JWT. Events carry no id: they are told apart by content.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{BoxFuture, Http, Identity, Page, PageRequest, Paging, Source, SourceError, Traits};
use crate::config::SourceConfig;
use crate::event::{Entity, Event};
use crate::timefmt::NANOS_PER_MS;

pub struct DominoAudit {
    name: Arc<str>,
    endpoint: url::Url,
    /// `X-Domino-Api-Key` or `Authorization: Bearer` (marked sensitive).
    auth: super::Credential,
    filters: Vec<(String, String)>,
    http: Http,
}

impl DominoAudit {
    pub fn new(cfg: &SourceConfig, http: Http) -> DominoAudit {
        let auth = match (&cfg.auth.api_key, &cfg.auth.jwt) {
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
struct Envelope<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawEvent {
    timestamp: i64,
    actor: Option<RawEntity>,
    action: Option<RawAction>,
    #[serde(default)]
    targets: Vec<RawTarget>,
    #[serde(rename = "in")]
    within: Option<RawEntity>,
}

#[derive(Deserialize)]
struct RawAction {
    #[serde(rename = "eventName")]
    event_name: Option<String>,
}

#[derive(Deserialize)]
struct RawTarget {
    entity: Option<RawEntity>,
}

#[derive(Deserialize)]
struct RawEntity {
    #[serde(rename = "entityType")]
    entity_type: Option<String>,
    id: Option<String>,
    name: Option<String>,
}

impl RawEntity {
    fn into_entity(self, with_type: bool) -> Option<Entity> {
        Entity {
            kind: if with_type { self.entity_type } else { None },
            id: self.id,
            name: self.name,
        }
        .non_empty()
    }
}

/// Normalises one Domino audit event.
pub fn normalise(source: &Arc<str>, raw: &RawValue) -> Result<Event, SourceError> {
    let e: RawEvent = serde_json::from_str(raw.get())
        .map_err(|err| SourceError::Body(format!("domino audit event: {err}")))?;
    Ok(Event {
        id: String::new(),
        source: source.clone(),
        kind: "domino_audit",
        vendor: "domino",
        time: e
            .timestamp
            .checked_mul(NANOS_PER_MS)
            .ok_or_else(|| SourceError::Body(format!("timestamp {} out of range", e.timestamp)))?,
        action: e.action.and_then(|a| a.event_name),
        actor: e.actor.and_then(|a| a.into_entity(false)),
        target: e
            .targets
            .into_iter()
            .next()
            .and_then(|t| t.entity)
            .and_then(|t| t.into_entity(true)),
        project: e.within.and_then(|p| p.into_entity(false)),
        src_ip: None,
        user_agent: None,
        raw: raw.to_owned(),
    })
}

impl Source for DominoAudit {
    fn traits(&self) -> Traits {
        Traits {
            paging: Paging::Offset { newest_first: true },
            identity: Identity::Content,
            time_unit: NANOS_PER_MS,
        }
    }

    fn fetch<'a>(&'a self, req: &'a PageRequest) -> BoxFuture<'a, Result<Page, SourceError>> {
        Box::pin(async move {
            let query = [
                ("startTimestamp", (req.start / NANOS_PER_MS).to_string()),
                ("endTimestamp", (req.end / NANOS_PER_MS).to_string()),
                ("limit", req.limit.to_string()),
                ("offset", req.offset.to_string()),
                ("sort", "-timestamp".to_string()),
            ];
            let body = self
                .http
                .get(&self.endpoint, &self.auth, &query, &self.filters, None)
                .await?;
            let env: Envelope<'_> = serde_json::from_slice(&body)
                .map_err(|e| SourceError::Body(format!("expected {{\"events\": [...]}}: {e}")))?;
            let returned = env.events.len();
            let events = env
                .events
                .into_iter()
                .map(|raw| normalise(&self.name, raw))
                .collect::<Result<Vec<_>, _>>()?;
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

    #[test]
    fn normalises_the_documented_shape() {
        let raw = RawValue::from_string(
            r#"{"timestamp": 1729185360064,
               "actor": {"id": "u1", "name": "alice", "firstName": "Alice", "lastName": "X"},
               "action": {"eventName": "Create Dataset", "using": [], "traceId": "t"},
               "targets": [{"entity": {"entityType": "dataset", "id": "d1", "name": "ds1"},
                            "fieldChanges": []}],
               "affecting": [], "in": {"entityType": "project", "id": "p1", "name": "proj"},
               "metadata": {}}"#
                .into(),
        )
        .unwrap();
        let e = normalise(&Arc::from("dom"), &raw).unwrap();
        assert_eq!(
            crate::timefmt::rfc3339_ms(e.time),
            "2024-10-17T17:16:00.064Z"
        );
        assert_eq!(e.action.as_deref(), Some("Create Dataset"));
        assert_eq!(e.actor.unwrap().name.as_deref(), Some("alice"));
        let t = e.target.unwrap();
        assert_eq!(
            (t.kind.as_deref(), t.id.as_deref()),
            (Some("dataset"), Some("d1"))
        );
        assert_eq!(e.project.unwrap().name.as_deref(), Some("proj"));
    }

    #[test]
    fn missing_in_and_empty_targets_are_absent_and_no_timestamp_is_an_error() {
        let raw = RawValue::from_string(
            r#"{"timestamp": 1, "actor": {"id": "u"}, "action": {"eventName": "Login"}, "targets": []}"#.into(),
        )
        .unwrap();
        let e = normalise(&Arc::from("dom"), &raw).unwrap();
        assert!(e.target.is_none() && e.project.is_none());
        let bad = RawValue::from_string(r#"{"actor": {}}"#.into()).unwrap();
        assert!(matches!(
            normalise(&Arc::from("d"), &bad),
            Err(SourceError::Body(_))
        ));
    }
}
