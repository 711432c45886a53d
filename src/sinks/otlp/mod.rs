//! `kind = "otlp"`: log records POSTed to an OpenTelemetry collector over OTLP/HTTP, one
//! `ExportLogsServiceRequest` a request, protobuf or JSON, optionally gzipped.
//!
//! - `config.rs`: its keys and the plugin ([`OtlpKind`]).
//! - `proto.rs`: the OTLP messages, hand-written `prost` structs.
//! - `encode.rs`: a batch as a request: resource, scope, and a log record per event whose body
//!   is the event's record as a structured map, as an `AnyValue` tree; the OTLP/JSON writer.
//! - `wire.rs`: the protobuf request written straight from each record's JSON (the hot path),
//!   tested against the tree encoded by prost.
//!
//! The client, its TLS options and headers, reading answers and scrubbing secrets from them
//! are the HTTP sink's (`sinks::http::client`). Retries follow the OTLP/HTTP spec:
//! 429, 502, 503 and 504 (and connection failures) are retried, honouring `Retry-After`,
//! without limit in the daemon; any other 4xx or 5xx refuses the batch for good, which stays
//! queued (`SinkError::Rejected`). A 200 whose `partial_success` says records were rejected
//! is delivered (the spec forbids sending them again): the collector's message is logged and
//! the count goes to `auditship_sink_records_rejected_total`.
//!
//! Delivery is at-least-once; `log.record.uid` is the event's stable `id`, for a pipeline to
//! drop repeats.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use reqwest::header::{self, HeaderMap, HeaderValue};
use tokio_util::sync::CancellationToken;

mod config;
mod encode;
mod proto;
mod wire;

pub use config::{OtlpEncoding, OtlpKind, OtlpSinkConfig};

use super::http::client::{
    build_client, chain, endpoint, gave_up, gzip, on_retry, probe_answer, read_body, scrub,
    status_failure, Failure,
};
use super::{Probe, Sink, SinkError};
use crate::event::Event;
use crate::health::SinkHealth;
use crate::metrics;
use crate::retry::RetryConfig;
use crate::retry::{self, Gave, Retryable, Verdict};
use crate::settings::Secret;
use crate::sinks::config::SinkConfig;
use crate::BoxFuture;
use encode::Batcher;

/// Most of a success answer read (an `ExportLogsServiceResponse` is small).
const MAX_RESPONSE: usize = 64 << 10;

/// An OTLP/HTTP logs sink.
pub struct OtlpSink {
    /// The sink's configured name, for logs, metrics and errors.
    name: String,
    /// The collector's logs endpoint.
    url: url::Url,
    /// Connection pool, TLS settings and timeout.
    client: reqwest::Client,
    /// `Content-Type` of the encoding, then the configured headers (sensitive values).
    headers: HeaderMap,
    /// The configured header values, scrubbed from anything the collector echoes back.
    secrets: Vec<Secret>,
    /// Protobuf or JSON.
    encoding: OtlpEncoding,
    /// Compress bodies with gzip.
    gzip: bool,
    /// Resource, scope and records.
    batcher: Batcher,
    /// Most records in one request.
    max_events: usize,
    /// Most bytes of records (their JSON) in one request.
    max_bytes: usize,
    /// The agent's backoff, unlimited in the daemon, `retry_max_attempts` in `--once`.
    retry: RetryConfig,
    /// Told of each failed attempt.
    health: SinkHealth,
}

/// A failed attempt, classified as the OTLP/HTTP spec says.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct OtlpFailure(Failure);

impl Retryable for OtlpFailure {
    fn verdict(&self) -> Verdict {
        match &self.0 {
            Failure::Status {
                status,
                retry_after,
                ..
            } => otlp_verdict(*status, *retry_after),
            other => other.verdict(),
        }
    }
}

/// OTLP/HTTP: "429, 502, 503, 504" are retryable; every other 4xx or 5xx must not be retried.
fn otlp_verdict(status: u16, retry_after: Option<Duration>) -> Verdict {
    match status {
        429 | 502 | 503 | 504 => Verdict::Retry { after: retry_after },
        _ => Verdict::Stop,
    }
}

impl OtlpSink {
    /// Builds the client (reading the CA and client certificate files).
    pub fn new(
        cfg: &SinkConfig,
        o: &OtlpSinkConfig,
        retry: &RetryConfig,
        once: bool,
    ) -> Result<OtlpSink, SinkError> {
        let name = cfg.name.as_str();
        let client = build_client(name, o.client.timeout, &o.client.tls)?;
        let content_type = match o.encoding {
            OtlpEncoding::Protobuf => "application/x-protobuf",
            OtlpEncoding::Json => "application/json",
        };
        let (mut headers, secrets) =
            super::http::client::header_map(name, content_type, &o.client.headers)?;
        if o.gzip {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        tracing::info!(sink = %name, encoding = ?o.encoding, endpoint = %endpoint(&o.url),
            gzip = o.gzip, batch_max_events = o.client.batch_max_events,
            batch_max_bytes = o.client.batch_max_bytes, "otlp sink ready");
        Ok(OtlpSink {
            name: name.to_string(),
            url: o.url.clone(),
            client,
            headers,
            secrets,
            encoding: o.encoding,
            gzip: o.gzip,
            batcher: Batcher::new(super::writer(cfg), super::http::hostname()),
            max_events: o.client.batch_max_events.max(1),
            max_bytes: o.client.batch_max_bytes.max(1),
            retry: RetryConfig {
                max_attempts: if once { retry.max_attempts } else { None },
                ..retry.clone()
            },
            health: SinkHealth::default(),
        })
    }

    /// The body of a request: protobuf of the records `pb` holds ([`Batcher::record_pb`]), or
    /// OTLP/JSON of `records`; then compressed if configured.
    fn body(&self, pb: &[u8], records: Vec<proto::LogRecord>) -> std::io::Result<bytes::Bytes> {
        let body = match self.encoding {
            OtlpEncoding::Protobuf => self.batcher.request_pb(pb),
            OtlpEncoding::Json => {
                let mut out = Vec::new();
                encode::write_json(&self.batcher.request(records), &mut out);
                out
            }
        };
        Ok(if self.gzip { gzip(&body)? } else { body }.into())
    }

    /// Sends one request until the collector takes it, refuses it for good, or shutdown.
    async fn send(
        &self,
        body: bytes::Bytes,
        records: usize,
        cancel: &CancellationToken,
    ) -> Result<(), SinkError> {
        let name = self.name.as_str();
        let result = retry::retry(
            &self.retry,
            cancel,
            on_retry::<OtlpFailure>(name, &self.health),
            || {
                let body = body.clone();
                async move { self.post(body).await.map_err(OtlpFailure) }
            },
        )
        .await;
        match result {
            Ok(answer) => {
                self.partial_success(&answer, records);
                Ok(())
            }
            Err(Gave::Cancelled) => Err(SinkError::Cancelled {
                sink: self.name.clone(),
            }),
            Err(Gave::Up(e)) => {
                let retryable = matches!(e.verdict(), Verdict::Retry { .. });
                Err(gave_up(
                    name,
                    self.retry.max_attempts.unwrap_or(0),
                    (e.0, retryable),
                    &self.secrets,
                    |_| None,
                ))
            }
        }
    }

    /// A POST of `body` to the collector, with the sink's headers.
    fn request(&self, body: bytes::Bytes) -> reqwest::RequestBuilder {
        self.client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(body)
    }

    /// One POST; a 2xx answer's body is returned.
    async fn post(&self, body: bytes::Bytes) -> Result<Vec<u8>, Failure> {
        let resp = self
            .request(body)
            .send()
            .await
            .map_err(|e| Failure::Transport(chain(&e.without_url())))?;
        if !resp.status().is_success() {
            return Err(status_failure(resp, |t| scrub(&self.secrets, t)).await);
        }
        let (body, _) = read_body(resp, MAX_RESPONSE)
            .await
            .map_err(|e| Failure::Transport(chain(&e.without_url())))?;
        Ok(body)
    }

    /// Reads an `ExportLogsServiceResponse`: rejected records are logged and counted, not sent
    /// again (the spec forbids it). An empty or unreadable answer is a full success.
    fn partial_success(&self, answer: &[u8], sent: usize) {
        let (rejected, message) = match self.encoding {
            OtlpEncoding::Protobuf => {
                match proto::ExportLogsServiceResponse::decode(answer)
                    .ok()
                    .and_then(|r| r.partial_success)
                {
                    Some(p) => (p.rejected_log_records, p.error_message),
                    None => (0, String::new()),
                }
            }
            OtlpEncoding::Json => json_partial_success(answer),
        };
        if rejected > 0 || !message.is_empty() {
            let message = scrub(&self.secrets, &retry::snippet(&message));
            tracing::warn!(sink = %self.name, rejected, sent, message = %message,
                "the collector took the request but rejected some of its log records; they are \
                 not sent again");
            metrics::sink_records_rejected(&self.name, rejected.max(0) as u64);
        }
    }

    /// `check --connect`: POSTs an empty `ExportLogsServiceRequest` (which the spec accepts)
    /// with the sink's headers and TLS options.
    pub async fn probe(&self) -> Probe {
        let body: bytes::Bytes = match self.body(&[], Vec::new()) {
            Ok(b) => b,
            Err(e) => {
                return Probe {
                    ok: false,
                    said: e.to_string(),
                }
            }
        };
        match self.request(body).send().await {
            Ok(r) => probe_answer(&format!("POST {}", self.url.path()), r, &self.secrets).await,
            Err(e) => Probe {
                ok: false,
                said: format!(
                    "unreachable ({})",
                    scrub(&self.secrets, &chain(&e.without_url()))
                ),
            },
        }
    }
}

/// `partialSuccess` of an OTLP/JSON answer: `rejectedLogRecords` (a string or a number, as
/// protobuf's JSON mapping allows) and `errorMessage`.
fn json_partial_success(answer: &[u8]) -> (i64, String) {
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Answer {
        partial_success: Partial,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Partial {
        rejected_log_records: Option<serde_json::Value>,
        error_message: String,
    }
    let Ok(a) = serde_json::from_slice::<Answer>(answer) else {
        return (0, String::new());
    };
    let n = match a.partial_success.rejected_log_records {
        Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
        Some(serde_json::Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    };
    (n, a.partial_success.error_message)
}

impl Sink for OtlpSink {
    fn watch(&mut self, health: SinkHealth) {
        self.health = health;
    }

    fn deliver<'a>(
        &'a mut self,
        events: &'a [Event],
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let observed = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            let mut rest = events;
            while !rest.is_empty() {
                // Records until the next would pass `max_events` or `max_bytes` (one is always
                // taken): protobuf written as it goes, JSON's built first.
                let (mut pb, mut records) = (Vec::new(), Vec::new());
                let (mut n, mut bytes) = (0, 0);
                for e in rest {
                    if n == self.max_events {
                        break;
                    }
                    let mark = pb.len();
                    let len = match self.encoding {
                        OtlpEncoding::Protobuf => self.batcher.record_pb(e, observed, &mut pb),
                        OtlpEncoding::Json => {
                            let (r, len) = self.batcher.record(e, observed);
                            records.push(r);
                            len
                        }
                    };
                    if n > 0 && bytes + len > self.max_bytes {
                        pb.truncate(mark);
                        records.truncate(n);
                        break;
                    }
                    bytes += len;
                    n += 1;
                }
                let body = self.body(&pb, records).map_err(|e| SinkError::Io {
                    sink: self.name.clone(),
                    msg: format!("compressing a batch: {e}"),
                })?;
                self.send(body, n, cancel).await?;
                rest = &rest[n..];
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_statuses_the_otlp_spec_names_are_retried() {
        for s in [429, 502, 503, 504] {
            assert!(
                matches!(otlp_verdict(s, None), Verdict::Retry { .. }),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 408, 413, 500, 501] {
            assert_eq!(otlp_verdict(s, None), Verdict::Stop, "{s}");
        }
    }

    #[test]
    fn a_json_partial_success_is_read_with_its_count_as_string_or_number() {
        assert_eq!(
            json_partial_success(
                br#"{"partialSuccess":{"rejectedLogRecords":"2","errorMessage":"bad"}}"#
            ),
            (2, "bad".into())
        );
        assert_eq!(
            json_partial_success(br#"{"partialSuccess":{"rejectedLogRecords":3}}"#),
            (3, String::new())
        );
        assert_eq!(json_partial_success(b"{}"), (0, String::new()));
        assert_eq!(json_partial_success(b""), (0, String::new()));
    }
}
