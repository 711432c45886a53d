//! Reading an Elasticsearch/OpenSearch `_bulk` answer: which documents to send again, which
//! already existed, which were refused.

use serde::Deserialize;

use crate::retry::{self, Verdict};

/// Largest `_bulk` answer read (it lists every document sent); a larger one is retried as
/// unreadable.
pub(super) const MAX_BULK_RESPONSE: usize = 64 << 20;
/// What an `_bulk` answer says about the documents of the request, in request order.
#[derive(Debug, Default, PartialEq)]
pub(super) struct BulkReport {
    /// Positions of the documents to send again (408, 429, 5xx).
    pub(super) retry: Vec<usize>,
    /// The first of those, as `status type: reason`, for the log line.
    pub(super) first_retry: Option<String>,
    /// Documents that already existed (409 on `create`): delivered before, by us.
    pub(super) conflicts: usize,
    /// The first document refused for good (another 4xx): its status and reason.
    pub(super) rejected: Option<(u16, String)>,
}

#[derive(Deserialize)]
pub(super) struct BulkHead {
    pub(super) errors: bool,
}

#[derive(Deserialize)]
pub(super) struct BulkBody {
    pub(super) items: Vec<std::collections::HashMap<String, BulkItem>>,
}

#[derive(Deserialize)]
pub(super) struct BulkItem {
    pub(super) status: u16,
    #[serde(default)]
    pub(super) error: Option<serde_json::Value>,
}

/// Reads an `_bulk` answer to a request of `sent` documents.
pub(super) fn read_bulk(body: &[u8], sent: usize) -> Result<BulkReport, String> {
    let head: BulkHead = serde_json::from_slice(body).map_err(|e| {
        format!(
            "not an _bulk answer ({e}): {}",
            crate::retry::snippet(&String::from_utf8_lossy(body))
        )
    })?;
    let mut report = BulkReport::default();
    if !head.errors {
        return Ok(report);
    }
    let full: BulkBody =
        serde_json::from_slice(body).map_err(|e| format!("_bulk answer without items: {e}"))?;
    if full.items.len() != sent {
        return Err(format!(
            "_bulk answer lists {} items for {sent} documents",
            full.items.len()
        ));
    }
    for (i, item) in full.items.iter().enumerate() {
        let Some(item) = item.values().next() else {
            return Err(format!("_bulk answer item {i} is empty"));
        };
        let why = || {
            let e = item.error.as_ref();
            let kind = e.and_then(|e| e.get("type")).and_then(|t| t.as_str());
            let reason = e.and_then(|e| e.get("reason")).and_then(|t| t.as_str());
            // Elasticsearch 7 puts the useful part in `caused_by` ("failed to parse", caused by
            // "data stream timestamp field [@timestamp] is missing").
            let cause = e
                .and_then(|e| e.get("caused_by"))
                .and_then(|c| c.get("reason"))
                .and_then(|t| t.as_str())
                .filter(|c| !reason.is_some_and(|r| r.contains(c)));
            let mut text = format!(
                "{} {}: {}",
                item.status,
                kind.unwrap_or("error"),
                reason.unwrap_or("")
            );
            if let Some(c) = cause {
                text.push_str(&format!(" (caused by: {c})"));
            }
            crate::retry::snippet(&text)
        };
        match item.status {
            200..=299 => {}
            409 => report.conflicts += 1,
            s => match retry::classify_status(s, None) {
                Verdict::Retry { .. } => {
                    report.retry.push(i);
                    if report.first_retry.is_none() {
                        report.first_retry = Some(why());
                    }
                }
                Verdict::Stop => {
                    if report.rejected.is_none() {
                        report.rejected = Some((s, why()));
                    }
                }
            },
        }
    }
    Ok(report)
}
