//! Wasabi AiR audit API: `GET {url}/api/data/audit`.
//!
//! `from`/`to` in RFC 3339 ("newer than", "older than"), numbered pages with a total,
//! `Authorization: Bearer`. Every event has an id: the dedupe key.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{BoxFuture, Http, Identity, Page, PageRequest, Paging, Source, SourceError, Traits};
use crate::config::SourceConfig;
use crate::event::{Entity, Event};
use crate::timefmt::{self, NANOS_PER_MS};

pub struct WasabiAir {
    name: Arc<str>,
    endpoint: url::Url,
    auth: super::Credential,
    filters: Vec<(String, String)>,
    http: Http,
}

impl WasabiAir {
    pub fn new(cfg: &SourceConfig, http: Http) -> WasabiAir {
        let auth = super::credential(
            reqwest::header::AUTHORIZATION,
            "Bearer ",
            cfg.auth.api_key.as_ref(),
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
struct Envelope<'a> {
    #[serde(borrow)]
    audit_events: Vec<&'a RawValue>,
    total: u64,
}

#[derive(Deserialize)]
struct RawEvent {
    id: String,
    user_id: Option<String>,
    action_key: Option<String>,
    target_kind: Option<String>,
    target_id: Option<String>,
    time: String,
}

/// Normalises one Wasabi AiR event.
pub fn normalise(source: &Arc<str>, raw: &RawValue) -> Result<Event, SourceError> {
    let e: RawEvent = serde_json::from_str(raw.get())
        .map_err(|err| SourceError::Body(format!("wasabi air event: {err}")))?;
    if e.id.is_empty() {
        return Err(SourceError::Body(
            "wasabi air event with an empty id".into(),
        ));
    }
    let time = timefmt::parse_rfc3339(&e.time).ok_or_else(|| {
        SourceError::Body(format!("wasabi air time {:?} is not RFC 3339", e.time))
    })?;
    Ok(Event {
        id: e.id,
        source: source.clone(),
        kind: "wasabi_air",
        vendor: "wasabi",
        time,
        action: e.action_key,
        actor: Entity {
            kind: None,
            id: e.user_id,
            name: None,
        }
        .non_empty(),
        target: Entity {
            kind: e.target_kind,
            id: e.target_id,
            name: None,
        }
        .non_empty(),
        project: None,
        src_ip: None,
        user_agent: None,
        raw: raw.to_owned(),
    })
}

impl Source for WasabiAir {
    fn traits(&self) -> Traits {
        Traits {
            paging: Paging::Numbered,
            identity: Identity::VendorId,
            time_unit: NANOS_PER_MS,
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
            let body = self
                .http
                .get(&self.endpoint, &self.auth, &query, &self.filters, None)
                .await?;
            let env: Envelope<'_> = serde_json::from_slice(&body).map_err(|e| {
                SourceError::Body(format!(
                    "expected {{\"audit_events\": [...], \"total\": N}}: {e}"
                ))
            })?;
            let returned = env.audit_events.len();
            let events = env
                .audit_events
                .into_iter()
                .map(|raw| normalise(&self.name, raw))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Page {
                events,
                returned,
                more: ((req.page + 1) * req.limit as u64) < env.total && returned > 0,
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
            r#"{"id": "59e12813db0201953dfe7214c4750e88", "user_id": "u1", "action_key": "enable",
                "target_kind": "feature", "target_id": "disabled_live_harvesting",
                "time": "2017-10-13T20:54:43.14061Z"}"#
                .into(),
        )
        .unwrap();
        let e = normalise(&Arc::from("air"), &raw).unwrap();
        assert_eq!(e.id, "59e12813db0201953dfe7214c4750e88");
        assert_eq!(timefmt::rfc3339_ms(e.time), "2017-10-13T20:54:43.140Z");
        assert_eq!(e.time % timefmt::NANOS_PER_SEC, 140_610_000);
        assert_eq!(e.target.unwrap().kind.as_deref(), Some("feature"));
        assert_eq!(e.raw.get(), raw.get());
    }

    #[test]
    fn bad_time_or_missing_id_is_a_bad_page() {
        for bad in [
            r#"{"id": "x", "time": "yesterday"}"#,
            r#"{"time": "2017-10-13T20:54:43Z"}"#,
            r#"{"id": "", "time": "2017-10-13T20:54:43Z"}"#,
        ] {
            let raw = RawValue::from_string(bad.into()).unwrap();
            assert!(
                matches!(normalise(&Arc::from("a"), &raw), Err(SourceError::Body(_))),
                "{bad}"
            );
        }
    }
}
