//! `kind = "sentinel"`: Microsoft Sentinel through the Azure Monitor Logs Ingestion API.
//!
//! A batch of the sink's queue becomes JSON arrays of records, each the event in the sink's
//! `format` with `TimeGenerated` (the event's time, UTC, RFC 3339) in front, POSTed to
//! `{endpoint}/dataCollectionRules/{dcr}/streams/{stream}?api-version=2023-01-01` with an
//! Entra ID bearer token ([`token`]). A request body is at most [`MAX_REQUEST_BYTES`] before
//! compression (the API's 1 MB, which holds for compressed and uncompressed data alike); a
//! batch is cut to fit, and a 413 splits a request in halves. A record over the limit on its
//! own is refused before anything is sent ([`SinkError::Rejected`], 413): the drain holds its
//! page and says which source and event it is. 204 is success; 429, 503 and the rest of
//! 5xx are retried through [`retry::retry`], honouring `Retry-After`; a 401 renews the token
//! once; 400, 403 and 404 are refusals naming the DCR, the stream and Azure's error.
//!
//! Delivery is at least once: the API has no idempotency key, so a delivery cut short after
//! some of its requests were taken (or whose queue commit did not happen) sends those again.

use reqwest::header::{self, HeaderValue};
use tokio_util::sync::CancellationToken;

mod cert;
pub mod config;
mod token;

pub use config::{SentinelConfig, SentinelKind};

use super::http::client::{build_client, chain, finish_body, on_retry, status_failure, Failure};
use super::{Probe, Sink, SinkError};
use crate::encodings::Writer;
use crate::event::Event;
use crate::health::SinkHealth;
use crate::retry::RetryConfig;
use crate::retry::{self, Gave, Retryable, Verdict};
use crate::BoxFuture;
use token::Tokens;

/// Most bytes of one request body, before compression: the Logs Ingestion API's 1 MB.
pub const MAX_REQUEST_BYTES: usize = 1_000_000;

/// A Logs Ingestion sink.
pub struct SentinelSink {
    /// The sink's configured name, for logs, metrics and errors.
    name: String,
    /// The stream's ingestion URL, with the API version.
    url: url::Url,
    /// The DCR's immutable id and the stream, for messages.
    dcr: String,
    stream: String,
    /// Connection pool, TLS settings and timeout.
    client: reqwest::Client,
    /// The bearer token, cached.
    tokens: Tokens,
    /// Writes each record in the sink's `format`.
    writer: Writer,
    /// Compress bodies.
    gzip: bool,
    /// The agent's backoff; unlimited attempts in the daemon, `retry_max_attempts` in `--once`.
    retry: RetryConfig,
    /// Most bytes of one body (the API's limit; lower in unit tests).
    max_bytes: usize,
    /// Told of each failed attempt, so a delivery retried for long shows in `/readyz`.
    health: SinkHealth,
}

/// How one request ended, once retried as far as it goes.
enum Sent {
    Taken,
    /// 413: the request is too large for the service.
    TooLarge(String),
}

impl SentinelSink {
    pub fn new(
        name: &str,
        cfg: &SentinelConfig,
        writer: Writer,
        retry: &RetryConfig,
        once: bool,
    ) -> Result<SentinelSink, SinkError> {
        let client = build_client(
            name,
            cfg.timeout,
            &crate::settings::TlsConfig {
                ca_file: cfg.ca_file.clone(),
                ..Default::default()
            },
        )?;
        tracing::info!(sink = %name, dcr = %cfg.dcr, stream = %cfg.stream,
            endpoint = %format!("{}://{}", cfg.ingest_url.scheme(), cfg.ingest_url.host_str().unwrap_or("")),
            format = writer.format.name(), gzip = cfg.gzip, "sentinel sink ready");
        Ok(SentinelSink {
            name: name.to_string(),
            url: cfg.ingest_url.clone(),
            dcr: cfg.dcr.clone(),
            stream: cfg.stream.clone(),
            client,
            tokens: Tokens::new(
                cfg.token_url.clone(),
                cfg.client_id.clone(),
                cfg.credential.clone(),
            )
            .map_err(|msg| SinkError::Io {
                sink: name.to_string(),
                msg: format!("client_certificate_file: {msg}"),
            })?,
            writer,
            gzip: cfg.gzip,
            retry: RetryConfig {
                max_attempts: if once { retry.max_attempts } else { None },
                ..retry.clone()
            },
            max_bytes: MAX_REQUEST_BYTES,
            health: SinkHealth::default(),
        })
    }

    /// One event's record: `{"TimeGenerated":"…",` then the record's own fields.
    fn record(&self, e: &Event, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"TimeGenerated\":\"");
        crate::timefmt::push_rfc3339_ms(out, e.time);
        out.push(b'"');
        let at = out.len();
        self.writer.record(e, out);
        // The record is an object: drop its `{`, and join with a comma unless it is empty.
        if out.get(at) == Some(&b'{') {
            if out.get(at + 1) == Some(&b'}') {
                out.truncate(at);
                out.push(b'}');
            } else {
                out[at] = b',';
            }
        }
    }

    /// One POST of `body` (a JSON array) with the bearer token; a 401 renews it once.
    async fn post(&self, body: &bytes::Bytes) -> Result<(), Failure> {
        let mut renewed = false;
        loop {
            let token = self.tokens.get(&self.client).await?;
            let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .map_err(|_| Failure::Body("the token is not a valid header value".into()))?;
            auth.set_sensitive(true);
            let mut req = self
                .client
                .post(self.url.clone())
                .header(header::AUTHORIZATION, auth)
                .header(header::CONTENT_TYPE, "application/json");
            if self.gzip {
                req = req.header(header::CONTENT_ENCODING, "gzip");
            }
            let resp = req
                .body(body.clone())
                .send()
                .await
                .map_err(|e| Failure::Transport(chain(&e.without_url())))?;
            let status = resp.status().as_u16();
            if (200..300).contains(&status) {
                return Ok(());
            }
            if status == 401 && !renewed {
                tracing::info!(sink = %self.name, "the token was refused (401): renewing it");
                self.tokens.forget();
                renewed = true;
                continue;
            }
            return Err(status_failure(resp, |t| self.scrub(t, &token)).await);
        }
    }

    fn scrub(&self, text: &str, token: &crate::settings::Secret) -> String {
        let t = self.tokens.scrub(text);
        if token.expose().len() >= 8 {
            t.replace(token.expose(), "***")
        } else {
            t
        }
    }

    /// A body as sent: compressed if configured (off the async threads: it is CPU work).
    async fn finish(&self, body: Vec<u8>) -> std::io::Result<bytes::Bytes> {
        finish_body(self.gzip, body).await
    }

    /// Sends one body until it is taken, too large, refused, or shutdown.
    async fn send(&self, body: Vec<u8>, cancel: &CancellationToken) -> Result<Sent, SinkError> {
        let body = self.finish(body).await.map_err(|e| SinkError::Io {
            sink: self.name.clone(),
            msg: format!("compressing a batch: {e}"),
        })?;
        let name = self.name.as_str();
        let result = retry::retry(
            &self.retry,
            cancel,
            on_retry::<Failure>(name, &self.health),
            || self.post(&body),
        )
        .await;
        match result {
            Ok(()) => Ok(Sent::Taken),
            Err(Gave::Cancelled) => Err(SinkError::Cancelled {
                sink: self.name.clone(),
            }),
            Err(Gave::Up(Failure::Status {
                status: 413, body, ..
            })) => Ok(Sent::TooLarge(azure_error(&body))),
            Err(Gave::Up(e)) if matches!(e.verdict(), Verdict::Retry { .. }) => {
                let msg = format!(
                    "gave up after {} attempts: {e}",
                    self.retry.max_attempts.unwrap_or(0)
                );
                tracing::error!(sink = %self.name, error = %msg,
                    "the Logs Ingestion API could not be reached; nothing was committed: the next run sends it again");
                Err(SinkError::Io {
                    sink: self.name.clone(),
                    msg,
                })
            }
            Err(Gave::Up(Failure::Refused { status, body })) => {
                // The token endpoint refused the credential.
                tracing::error!(sink = %self.name, error = %body,
                    "Entra ID refused the sink's credential; nothing was committed (check tenant_id, client_id and the secret)");
                Err(SinkError::Rejected {
                    sink: self.name.clone(),
                    status,
                    detail: body,
                })
            }
            Err(Gave::Up(e)) => {
                let (status, detail) = match e {
                    Failure::Status { status, body, .. } => (status, azure_error(&body)),
                    other => (0, other.to_string()),
                };
                let hint = match status {
                    401 | 403 => ": the app needs the Monitoring Metrics Publisher role on the DCR (it can take 30 minutes to apply)",
                    404 => ": check endpoint, dcr_immutable_id and stream (the DCR must declare the stream, and the endpoint must be the DCE the DCR uses)",
                    _ => "",
                };
                let detail = format!("DCR {} stream {}: {detail}{hint}", self.dcr, self.stream);
                tracing::error!(sink = %self.name, status, error = %detail,
                    "the Logs Ingestion API refused the batch; not retried. Nothing was committed");
                Err(SinkError::Rejected {
                    sink: self.name.clone(),
                    status,
                    detail,
                })
            }
        }
    }

    /// `check --connect`: a token, then an empty array POSTed to the stream. Microsoft documents
    /// 204 for a request taken and does not document the answer to an empty array; 401, 403
    /// and 404 name the token, the role and the DCR or stream. A 400 (a service that refuses
    /// an empty batch) came past those checks, so it is said as reachable, with its message.
    pub async fn probe(&self) -> Probe {
        let no = |said: String| Probe { ok: false, said };
        if let Err(e) = self.tokens.get(&self.client).await {
            return no(match e {
                Failure::Refused { body, .. } => body,
                Failure::Transport(t) => format!("unreachable (token endpoint: {t})"),
                other => format!("token endpoint: {other}"),
            });
        }
        let what = format!("DCR {} stream {}", self.dcr, self.stream);
        let empty = match self.finish(b"[]".to_vec()).await {
            Ok(b) => b,
            Err(e) => return no(format!("compressing: {e}")),
        };
        match self.post(&empty).await {
            Ok(()) => Probe {
                ok: true,
                said: format!("reachable (token granted; {what} took an empty batch)"),
            },
            Err(Failure::Transport(t)) => no(format!("unreachable ({t})")),
            Err(Failure::Status { status, body, .. }) => {
                let e = azure_error(&body);
                no(match status {
                    401 | 403 => format!("auth refused (HTTP {status} {e}): the app needs the Monitoring Metrics Publisher role on the DCR"),
                    404 => format!("not found (HTTP 404 {e}): {what} does not exist at this endpoint"),
                    400 => {
                        return Probe {
                            ok: true,
                            said: format!("reachable (token granted; {what} let the app in and refused only the empty probe batch: HTTP 400 {e})"),
                        }
                    }
                    500..=599 => format!("unreachable (HTTP {status} {e})"),
                    _ => format!("refused (HTTP {status} {e}) by {what}"),
                })
            }
            Err(other) => no(other.to_string()),
        }
    }

    /// Sends `records` (each one record's JSON) as arrays within the size limit, splitting a
    /// request the service finds too large.
    async fn send_records(
        &self,
        records: &[Vec<u8>],
        cancel: &CancellationToken,
    ) -> Result<(), SinkError> {
        let mut start = 0;
        while start < records.len() {
            let end = fill(records, start, self.max_bytes);
            // Ranges to send, last first.
            let mut todo: Vec<std::ops::Range<usize>> = Vec::new();
            todo.push(start..end);
            while let Some(r) = todo.pop() {
                match self.send(array(&records[r.clone()]), cancel).await? {
                    Sent::Taken => {}
                    Sent::TooLarge(e) if r.len() > 1 => {
                        let mid = r.start + r.len() / 2;
                        tracing::warn!(sink = %self.name, records = r.len(), error = %e,
                            "413: the request was too large for the service; sending it in two halves");
                        todo.push(mid..r.end);
                        todo.push(r.start..mid);
                    }
                    Sent::TooLarge(e) => {
                        return Err(SinkError::Rejected {
                            sink: self.name.clone(),
                            status: 413,
                            detail: format!(
                                "DCR {} stream {}: a single record of {} bytes was refused as too large: {e}",
                                self.dcr,
                                self.stream,
                                records[r.start].len()
                            ),
                        })
                    }
                }
            }
            start = end;
        }
        Ok(())
    }
}

/// The end of the records from `start` that fit one array of at most `max` bytes (at least one).
fn fill(records: &[Vec<u8>], start: usize, max: usize) -> usize {
    let mut size = 2 + records[start].len();
    let mut end = start + 1;
    while end < records.len() && size + 1 + records[end].len() <= max {
        size += 1 + records[end].len();
        end += 1;
    }
    end
}

/// `[r1,r2,…]`.
fn array(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + records.iter().map(|r| r.len() + 1).sum::<usize>());
    out.push(b'[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(r);
    }
    out.push(b']');
    out
}

/// Azure's error body `{"error":{"code":…,"message":…}}` as `code: message`; any other text as is.
fn azure_error(body: &str) -> String {
    let v: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let err = v.as_ref().and_then(|v| v.get("error"));
    match err {
        Some(e) => {
            let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
            let msg = e.get("message").and_then(|m| m.as_str()).unwrap_or("");
            match (code, msg) {
                ("", "") => body.to_string(),
                (c, "") => c.to_string(),
                ("", m) => m.to_string(),
                (c, m) => format!("{c}: {m}"),
            }
        }
        None => body.to_string(),
    }
}

impl Sink for SentinelSink {
    fn watch(&mut self, health: SinkHealth) {
        self.health = health;
    }

    fn deliver<'a>(
        &'a mut self,
        events: &'a [Event],
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let mut records = Vec::with_capacity(events.len());
            for e in events {
                let mut r = Vec::new();
                self.record(e, &mut r);
                if r.len() + 2 > self.max_bytes {
                    // Refused before anything is sent: the drain holds this page and sends the rest.
                    let detail = format!(
                        "event {} of source {} is {} bytes as a record, over the {} bytes a Logs Ingestion request takes: it cannot be sent (held in the queue)",
                        e.id(),
                        e.source,
                        r.len(),
                        self.max_bytes
                    );
                    tracing::error!(sink = %self.name, source = %e.source, id = %e.id(), bytes = r.len(),
                        "a record is larger than a Logs Ingestion request may be");
                    return Err(SinkError::Rejected {
                        sink: self.name.clone(),
                        status: 413,
                        detail,
                    });
                }
                records.push(r);
            }
            self.send_records(&records, cancel).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_cuts_arrays_within_the_limit() {
        let records: Vec<Vec<u8>> = (0..10).map(|i| vec![b'x'; 10 + i]).collect();
        let mut start = 0;
        while start < records.len() {
            let end = fill(&records, start, 40);
            assert!(end > start);
            let body = array(&records[start..end]);
            assert!(body.len() <= 40 || end - start == 1, "{}", body.len());
            if end < records.len() {
                assert!(body.len() + 1 + records[end].len() > 40);
            }
            start = end;
        }
        assert_eq!(array(&[b"{}".to_vec(), b"{}".to_vec()]), b"[{},{}]");
    }

    fn sink(max_bytes: usize) -> SentinelSink {
        let cfg = SentinelConfig {
            // Nothing listens: a request would fail as a transport error, not a refusal.
            ingest_url: url::Url::parse("http://127.0.0.1:9/dataCollectionRules/dcr-x/streams/Custom-A_CL?api-version=2023-01-01").unwrap(),
            dcr: "dcr-x".into(),
            stream: "Custom-A_CL".into(),
            token_url: url::Url::parse("http://127.0.0.1:9/t/oauth2/v2.0/token").unwrap(),
            client_id: "c".into(),
            credential: config::Credential::Secret(crate::settings::Secret::new("s3cret-value")),
            gzip: true,
            timeout: std::time::Duration::from_secs(1),
            ca_file: None,
        };
        let retry = RetryConfig {
            initial: std::time::Duration::from_millis(1),
            max_delay: std::time::Duration::from_millis(1),
            max_attempts: Some(1),
        };
        let mut s = SentinelSink::new(
            "siem",
            &cfg,
            Writer {
                include_raw: true,
                ..Writer::default()
            },
            &retry,
            true,
        )
        .unwrap();
        s.max_bytes = max_bytes;
        s
    }

    /// A record over the limit is refused before anything is sent (no token asked, no
    /// request), as a 413 naming its source and id: the drain holds its page.
    #[tokio::test]
    async fn a_record_over_the_limit_is_refused_naming_its_source_and_id() {
        let small = Event::standalone("air", "wasabi_air", "Wasabi", 0, r#"{"id":"a"}"#);
        let big_raw = format!(r#"{{"id":"b","pad":"{}"}}"#, "x".repeat(MAX_REQUEST_BYTES));
        let big = Event::standalone("domo", "domo", "Domo", 0, &big_raw);
        let mut s = sink(MAX_REQUEST_BYTES);
        let cancel = CancellationToken::new();
        let err = s.deliver(&[small, big], &cancel).await.unwrap_err();
        match err {
            SinkError::Rejected { status, detail, .. } => {
                assert_eq!(status, 413);
                assert!(detail.contains("of source domo"), "{detail}");
                assert!(detail.contains(" is "), "{detail}");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn records_carry_time_generated_first() {
        let e = Event::standalone(
            "air",
            "wasabi_air",
            "Wasabi",
            1_700_000_000_123_000_000,
            r#"{"id":"a"}"#,
        );
        let s = sink(MAX_REQUEST_BYTES);
        let mut out = Vec::new();
        s.record(&e, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["TimeGenerated"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["source"], "air");
        assert!(out.starts_with(b"{\"TimeGenerated\":"));
    }

    #[test]
    fn azure_errors_read_as_code_and_message() {
        assert_eq!(
            azure_error(
                r#"{"error":{"code":"InvalidStream","message":"Stream Custom-X not found"}}"#
            ),
            "InvalidStream: Stream Custom-X not found"
        );
        assert_eq!(azure_error("plain"), "plain");
    }
}
