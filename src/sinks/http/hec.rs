//! Splunk HEC indexer acknowledgements (`hec_ack`): the channel, the ack endpoint, reading
//! `ackId`s and ack statuses, and waiting for every batch of a delivery to be indexed.

use std::ops::Range;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;

use super::client::*;
use super::Inner;
use crate::event::Event;
use crate::metrics;

use super::SinkError;
use serde::Deserialize;

/// Splunk's channel header: acknowledgements are per channel.
pub(super) static HEC_CHANNEL: HeaderName = HeaderName::from_static("x-splunk-request-channel");
/// Largest HEC answer read (`{"text":"Success","code":0,"ackId":7}` or the ack statuses).
pub(super) const MAX_HEC_RESPONSE: usize = 1 << 20;

/// Where and how long to wait for Splunk's indexer acknowledgements.
pub(super) struct HecAck {
    /// `…/services/collector/ack`, beside the event endpoint.
    pub(super) url: url::Url,
    /// How long a batch may wait for its acknowledgement before it is sent again.
    pub(super) timeout: Duration,
}

/// A batch of the page being delivered that Splunk has not yet said is indexed.
pub(super) struct Waiting {
    /// Its events, as positions in the page.
    pub(super) range: Range<usize>,
    /// The `ackId` of its last sending.
    pub(super) ack: u64,
    /// When it was last sent.
    pub(super) sent: Instant,
    /// How often it was sent.
    pub(super) sends: usize,
}

impl Inner {
    /// `hec_ack`: polls `/services/collector/ack` with the agent's backoff until Splunk says
    /// every batch of the page is indexed; a batch not acknowledged within `ack_timeout` is
    /// sent again (at-least-once), without limit in the daemon and `retry_max_attempts` times in
    /// `--once`. Only then may the page commit.
    pub(super) async fn await_acks(
        &self,
        events: &[Event],
        mut waiting: Vec<Waiting>,
        cancel: &CancellationToken,
    ) -> Result<(), SinkError> {
        let Some(ack) = &self.ack else {
            return Ok(());
        };
        let mut delay = self.retry.initial;
        while !waiting.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancel.cancelled() => return Err(SinkError::Cancelled { sink: self.name.clone() }),
            }
            delay = (delay * 2).min(self.retry.max_delay);
            let ids: Vec<u64> = waiting.iter().map(|w| w.ack).collect();
            match self.query_acks(&ack.url, &ids).await {
                Ok(done) => waiting.retain(|w| !done.contains(&w.ack)),
                Err(e) => {
                    metrics::retry("sink", &self.name);
                    self.health.failed(&self.scrub(&e.to_string()));
                    tracing::warn!(sink = %self.name, error = %self.scrub(&e.to_string()),
                        "asking Splunk for acknowledgements failed; asking again");
                }
            }
            for w in waiting.iter_mut() {
                if w.sent.elapsed() < ack.timeout {
                    continue;
                }
                let n = w.range.len();
                if self.retry.max_attempts.is_some_and(|max| w.sends >= max) {
                    let msg = format!(
                        "gave up after {} attempts: a batch of {n} events was not acknowledged \
                         within ack_timeout ({})",
                        w.sends,
                        humantime::format_duration(ack.timeout)
                    );
                    tracing::error!(sink = %self.name, error = %msg,
                        "Splunk did not acknowledge the batch; nothing was committed: the next run sends it again");
                    return Err(SinkError::Io {
                        sink: self.name.clone(),
                        msg,
                    });
                }
                metrics::retry("sink", &self.name);
                tracing::warn!(sink = %self.name, events = n, ack_id = w.ack, sends = w.sends,
                    "batch not acknowledged within ack_timeout; sending it again");
                let batch = &events[w.range.clone()];
                let mut body = Vec::new();
                self.encoder.encode_all(batch.iter(), &mut body);
                let Some(id) = self.send_batch(batch, body, cancel).await? else {
                    return Err(SinkError::Io {
                        sink: self.name.clone(),
                        msg: "the HEC answer held no ackId".into(),
                    });
                };
                *w = Waiting {
                    range: w.range.clone(),
                    ack: id,
                    sent: Instant::now(),
                    sends: w.sends + 1,
                };
                delay = self.retry.initial;
            }
        }
        Ok(())
    }

    /// One POST to `/services/collector/ack`: which of `ids` are indexed.
    pub(super) async fn query_acks(
        &self,
        url: &url::Url,
        ids: &[u64],
    ) -> Result<Vec<u64>, Failure> {
        let resp = self
            .client
            .post(url.clone())
            .headers(self.headers.clone())
            .body(serde_json::json!({ "acks": ids }).to_string())
            .send()
            .await
            .map_err(|e| Failure::Transport(chain(&e.without_url())))?;
        let status = resp.status().as_u16();
        let (body, _) = read_body(resp, MAX_HEC_RESPONSE)
            .await
            .map_err(|e| Failure::Transport(chain(&e.without_url())))?;
        if !(200..300).contains(&status) {
            return Err(Failure::Status {
                status,
                retry_after: None,
                body: crate::retry::snippet(&self.scrub(&String::from_utf8_lossy(&body))),
            });
        }
        read_ack_statuses(&body).map_err(Failure::Body)
    }
}

/// The ack endpoint beside a HEC event endpoint (`…/services/collector[/event|/raw]`).
pub(super) fn ack_url(url: &url::Url) -> url::Url {
    let mut u = url.clone();
    let path = url.path();
    let base = path.find("/services/collector").map_or("", |i| &path[..i]);
    u.set_path(&format!("{base}/services/collector/ack"));
    u.set_query(None);
    u
}

/// The sink's HEC channel: a UUID (version 4 layout) derived from its name and URL, so it is
/// the same at every start.
pub(super) fn channel(name: &str, url: &url::Url) -> HeaderValue {
    let mut h = blake3::Hasher::new();
    h.update(b"auditship hec channel\0");
    h.update(name.as_bytes());
    h.update(b"\0");
    h.update(url.as_str().as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.finalize().as_bytes()[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    );
    HeaderValue::from_str(&uuid).expect("a UUID is a valid header value")
}

/// The `ackId` of a HEC answer (`{"text":"Success","code":0,"ackId":7}`).
pub(super) fn read_ack_id(body: &[u8]) -> Result<u64, Failure> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        Failure::Body(format!(
            "not a HEC answer ({e}): {}",
            crate::retry::snippet(&String::from_utf8_lossy(body))
        ))
    })?;
    v.get("ackId")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| Failure::NoAck(crate::retry::snippet(&v.to_string())))
}

/// The ids an ack answer (`{"acks":{"0":true,"1":false}}`) says are indexed.
pub(super) fn read_ack_statuses(body: &[u8]) -> Result<Vec<u64>, String> {
    #[derive(Deserialize)]
    struct Acks {
        acks: std::collections::HashMap<String, bool>,
    }
    let a: Acks = serde_json::from_slice(body).map_err(|e| {
        format!(
            "not an ack answer ({e}): {}",
            crate::retry::snippet(&String::from_utf8_lossy(body))
        )
    })?;
    Ok(a.acks
        .into_iter()
        .filter(|(_, done)| *done)
        .filter_map(|(id, _)| id.parse().ok())
        .collect())
}
