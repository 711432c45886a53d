//! `kind = "secops"`: Google Security Operations through the Chronicle API's `logs:import`.
//!
//! Each record (the sink's `format`) is one log of `inlineSource.logs`: `data` its bytes in
//! base64, `logEntryTime` the event's time, `collectionTime` when the sink sends it (an event
//! carries no time of its reading; a send is never before it). A batch is cut into requests of
//! at most `batch_max_bytes`; a record that cannot fit a request alone is refused before
//! anything of the batch is sent (HTTP 413, naming its source and id), so the sink's task holds
//! its page and delivers the others.
//!
//! Authentication ([`token`]): an access token from the key file's `token_uri`, or, without a
//! key file, from the metadata server (workload identity), renewed before it expires and once
//! when the API answers 401. Retries go through [`retry::retry`] as the
//! HTTP sink's do: 429, 5xx and transport failures without limit in the daemon (honouring
//! `Retry-After`), `retry_max_attempts` in `--once`. 400, 403 and 404 are refusals naming the
//! project, instance and log type, with Google's message. Delivery is at-least-once: Google
//! takes no idempotency key for `logs:import`, so a request whose answer was lost is sent again.

pub mod config;
mod token;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use tokio_util::sync::CancellationToken;

pub use config::{SecopsConfig, SecopsKind};
use token::{Source, TokenError, Tokens};

use super::http::client::{build_client, chain, read_body, status_failure, Failure};
use super::{Probe, Sink, SinkError};
use crate::encodings::Writer;
use crate::event::Event;
use crate::health::SinkHealth;
use crate::metrics;
use crate::retry::RetryConfig;
use crate::retry::{self, Gave, Retryable, Verdict};
use crate::BoxFuture;

/// A Google SecOps sink.
pub struct SecopsSink {
    /// The sink's configured name, for logs, metrics and errors.
    name: String,
    /// What it imports into.
    cfg: SecopsConfig,
    /// `{log type}/logs:import`.
    import_url: String,
    /// Connection pool, TLS settings and timeout, for the token endpoint and the API.
    client: reqwest::Client,
    /// The service account's token.
    tokens: Tokens,
    /// Writes each record.
    writer: Writer,
    /// The agent's backoff: unlimited attempts in the daemon, `retry_max_attempts` in `--once`.
    retry: RetryConfig,
    /// Told of each failed attempt, so a delivery retried for long shows in `/readyz`.
    health: SinkHealth,
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum Attempt {
    #[error("{0}")]
    Http(Failure),
    #[error("{0}")]
    Token(TokenError),
    /// A 401 with a token thought good: renewed at once, once.
    #[error("the access token was refused (HTTP 401); renewing it")]
    Renew,
}

impl Retryable for Attempt {
    fn verdict(&self) -> Verdict {
        match self {
            Attempt::Http(f) => f.verdict(),
            Attempt::Token(TokenError::Unreachable { retry_after, .. }) => Verdict::Retry {
                after: *retry_after,
            },
            Attempt::Token(_) => Verdict::Stop,
            Attempt::Renew => Verdict::Retry {
                after: Some(Duration::ZERO),
            },
        }
    }
}

/// Google's error answer, `{"error":{"code","message","status"}}`, as `STATUS: message`.
fn google_error(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    match (
        v["error"]["status"].as_str(),
        v["error"]["message"].as_str(),
    ) {
        (Some(s), Some(m)) => format!("{s}: {m}"),
        (None, Some(m)) => m.to_string(),
        _ => body.to_string(),
    }
}

impl SecopsSink {
    /// Builds the client; the key was read and checked with the config.
    pub fn new(
        name: &str,
        cfg: &SecopsConfig,
        writer: Writer,
        retry: &RetryConfig,
        once: bool,
    ) -> Result<SecopsSink, SinkError> {
        let fail = |msg: String| SinkError::Io {
            sink: name.to_string(),
            msg,
        };
        let source = match (&cfg.credentials_file, &cfg.key) {
            (Some(_), Some(key)) => Source::Key(key.clone()),
            (Some(path), None) => {
                return Err(fail(format!(
                    "credentials_file {}: not read",
                    path.display()
                )))
            }
            (None, _) => Source::metadata(
                std::env::var("GCE_METADATA_HOST").ok().as_deref(),
                cfg.timeout,
            )
            .map_err(fail)?,
        };
        let client = build_client(
            name,
            cfg.timeout,
            &crate::settings::TlsConfig {
                ca_file: cfg.ca_file.clone(),
                ..Default::default()
            },
        )?;
        let tokens = Tokens::new(source);
        tracing::info!(sink = %name, endpoint = %cfg.endpoint, target = %cfg.target(),
            tokens = %tokens.describe(), "secops sink ready");
        Ok(SecopsSink {
            name: name.to_string(),
            import_url: format!("{}/logs:import", cfg.log_type_url()),
            cfg: cfg.clone(),
            client,
            tokens,
            writer,
            retry: RetryConfig {
                max_attempts: if once { retry.max_attempts } else { None },
                ..retry.clone()
            },
            health: SinkHealth::default(),
        })
    }

    /// One log of `inlineSource.logs`, appended to `out`.
    fn push_log(&self, e: &Event, collected: i64, record: &mut Vec<u8>, out: &mut Vec<u8>) {
        record.clear();
        self.writer.record(e, record);
        out.extend_from_slice(b"{\"data\":\"");
        let data = base64::engine::general_purpose::STANDARD.encode(&*record);
        out.extend_from_slice(data.as_bytes());
        out.extend_from_slice(b"\",\"logEntryTime\":\"");
        crate::timefmt::push_rfc3339_ms(out, e.time);
        out.extend_from_slice(b"\",\"collectionTime\":\"");
        crate::timefmt::push_rfc3339_ms(out, collected.max(e.time));
        out.extend_from_slice(b"\"}");
    }

    /// The request bodies of a batch, each within `batch_max_bytes`; a record too large for a
    /// request of its own is a refusal naming it.
    fn bodies(&self, events: &[Event]) -> Result<Vec<Vec<u8>>, SinkError> {
        let collected = crate::timefmt::now();
        let open = b"{\"inlineSource\":{\"logs\":[";
        let close = match &self.cfg.forwarder {
            Some(f) => {
                let mut c = b"],\"forwarder\":".to_vec();
                crate::event::push_json_str(&mut c, f);
                c.extend_from_slice(b"}}");
                c
            }
            None => b"]}}".to_vec(),
        };
        let room = self.cfg.batch_max_bytes;
        let (mut bodies, mut body, mut record, mut log) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for e in events {
            log.clear();
            self.push_log(e, collected, &mut record, &mut log);
            if open.len() + log.len() + close.len() > room {
                return Err(SinkError::Rejected {
                    sink: self.name.clone(),
                    status: 413,
                    detail: format!(
                        "event {} of source {} is {} bytes as a log of logs:import, over the {room} bytes of a request: \
                         it is held in the queue (not sent, not dropped); a smaller format or include_raw = false may fit it",
                        e.id(),
                        e.source,
                        log.len()
                    ),
                });
            }
            if !body.is_empty() && body.len() + 1 + log.len() + close.len() > room {
                body.extend_from_slice(&close);
                bodies.push(std::mem::take(&mut body));
            }
            if body.is_empty() {
                body.extend_from_slice(open);
            } else {
                body.push(b',');
            }
            body.extend_from_slice(&log);
        }
        if !body.is_empty() {
            body.extend_from_slice(&close);
            bodies.push(body);
        }
        Ok(bodies)
    }

    /// One request, with the token in hand; `renewed` says whether a 401 was met already.
    async fn post(&self, body: bytes::Bytes, renewed: &AtomicBool) -> Result<(), Attempt> {
        let token = self
            .tokens
            .get(&self.client)
            .await
            .map_err(Attempt::Token)?;
        let resp = self
            .client
            .post(&self.import_url)
            .bearer_auth(token.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| Attempt::Http(Failure::Transport(chain(&e.without_url()))))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            // The answer is `{}`; read it so the connection is reused.
            let _ = read_body(resp, 1 << 10).await;
            return Ok(());
        }
        if status == 401 && !renewed.swap(true, Ordering::Relaxed) {
            self.tokens.forget().await;
            return Err(Attempt::Renew);
        }
        let secret = token.expose().to_string();
        Err(Attempt::Http(
            status_failure(resp, |t| google_error(&t.replace(&secret, "***"))).await,
        ))
    }

    /// Sends one request body until Google takes it, refuses it, or shutdown.
    async fn send(&self, body: Vec<u8>, cancel: &CancellationToken) -> Result<(), SinkError> {
        let body = bytes::Bytes::from(body);
        let renewed = &AtomicBool::new(false);
        let name = self.name.as_str();
        let result = retry::retry(
            &self.retry,
            cancel,
            |e: &Attempt, delay| {
                if !matches!(e, Attempt::Renew) {
                    metrics::retry("sink", name);
                    self.health.failed(e);
                }
                tracing::warn!(sink = %name, error = %e, delay_ms = delay.as_millis() as u64,
                    "retrying delivery");
            },
            || self.post(body.clone(), renewed),
        )
        .await;
        let e = match result {
            Ok(()) => return Ok(()),
            Err(Gave::Cancelled) => {
                return Err(SinkError::Cancelled {
                    sink: self.name.clone(),
                })
            }
            Err(Gave::Up(e)) => e,
        };
        if matches!(e.verdict(), Verdict::Retry { .. }) {
            let msg = format!(
                "gave up after {} attempts: {e}",
                self.retry.max_attempts.unwrap_or(0)
            );
            tracing::error!(sink = %self.name, error = %msg,
                "Google SecOps could not be reached; nothing was committed: the next run sends it again");
            return Err(SinkError::Io {
                sink: self.name.clone(),
                msg,
            });
        }
        let (status, detail) = match e {
            Attempt::Http(Failure::Status { status, body, .. }) => {
                (status, format!("{} ({})", body, self.cfg.target()))
            }
            // The credentials, whatever the token endpoint's status: every batch would fail alike.
            Attempt::Token(_) => (401, e.to_string()),
            other => (0, other.to_string()),
        };
        tracing::error!(sink = %self.name, status, error = %detail,
            "Google SecOps refused the logs; not retried now. Nothing was committed: they stay queued");
        Err(SinkError::Rejected {
            sink: self.name.clone(),
            status,
            detail,
        })
    }

    /// `check --connect`: a token, then `GET` the log type (the cheapest call that proves the
    /// instance and log type exist and the identity is let in to the instance; it needs
    /// `chronicle.logTypes.get`, which does not prove `chronicle.logs.import`: a role holding one
    /// and not the other passes here and is refused at the first import, as a 403 naming it).
    pub async fn probe(&self) -> Probe {
        let no = |said: String| Probe { ok: false, said };
        let token = match self.tokens.get(&self.client).await {
            Ok(t) => t,
            Err(e @ TokenError::Unreachable { .. }) => {
                return no(format!("unreachable: getting a token: {e}"))
            }
            Err(e) => return no(format!("auth refused: getting a token: {e}")),
        };
        let url = self.cfg.log_type_url();
        let resp = match self
            .client
            .get(&url)
            .bearer_auth(token.expose())
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return no(format!("unreachable ({})", chain(&e.without_url()))),
        };
        let status = resp.status().as_u16();
        if status == 200 {
            return Probe {
                ok: true,
                said: format!(
                    "reachable: token from {}, log type found ({})",
                    self.tokens.describe(),
                    self.cfg.target()
                ),
            };
        }
        let secret = token.expose().to_string();
        let body = match status_failure(resp, |t| google_error(&t.replace(&secret, "***"))).await {
            Failure::Status { body, .. } => body,
            other => other.to_string(),
        };
        let target = self.cfg.target();
        no(match status {
            401 | 403 => format!(
                "permission denied (HTTP {status} {body}): the service account needs chronicle.logTypes.get (this check) \
                 and chronicle.logs.import (the imports) on the instance ({target})"
            ),
            404 => format!("not found (HTTP 404 {body}): check project, region, instance and log_type ({target})"),
            _ => format!("unreachable (HTTP {status} {body})"),
        })
    }
}

impl Sink for SecopsSink {
    fn watch(&mut self, health: SinkHealth) {
        self.health = health;
    }

    fn deliver<'a>(
        &'a mut self,
        events: &'a [Event],
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            for body in self.bodies(events)? {
                self.send(body, cancel).await?;
            }
            Ok(())
        })
    }
}
