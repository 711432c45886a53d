//! What every protocol over HTTP shares (this kind's and `otlp`): the client with its TLS
//! options, the headers, how a request failed and whether to retry it, reading a bounded
//! answer, scrubbing secrets from it, gzip, the `Idempotency-Key` of a batch, what a probe's
//! answer says, and the agent's hostname.

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::event::Event;
use crate::health::SinkHealth;
use crate::retry::{self, Retryable, Verdict};
use crate::settings::{Secret, TlsConfig};
use crate::sinks::{Probe, SinkError};

/// How much of an error answer is kept for the log line.
pub(crate) const MAX_ERROR_BODY: usize = 16 << 10;

/// The `Idempotency-Key` request header.
pub(super) static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Why one attempt at a request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// Connecting, sending or reading failed (including the timeout).
    #[error("request failed: {0}")]
    Transport(String),
    /// The receiver answered with a status other than 2xx.
    #[error("HTTP {status}: {body}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
        body: String,
    },
    /// A 2xx answer that is not what the encoding's receiver sends.
    #[error("unreadable answer: {0}")]
    Body(String),
    /// `_bulk`: some documents were not indexed for a transient reason; they are sent again.
    #[error("{retried} of {sent} documents were not indexed ({first}); sending them again")]
    Items {
        sent: usize,
        retried: usize,
        first: String,
    },
    /// `_bulk`: a document was refused for good (a mapping error, say).
    #[error("a document was refused with HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    /// `hec_ack`: Splunk took the batch but gave no `ackId`: acknowledgement is off for the token.
    #[error(
        "the HEC answer has no ackId ({0}): indexer acknowledgement is off for this token; turn \
         on \"Enable indexer acknowledgement\" (useACK) for the token, or set hec_ack = false"
    )]
    NoAck(String),
}

impl Retryable for Failure {
    fn verdict(&self) -> Verdict {
        match self {
            Failure::Transport(_) | Failure::Body(_) | Failure::Items { .. } => {
                Verdict::Retry { after: None }
            }
            Failure::Status {
                status,
                retry_after,
                ..
            } => retry::classify_status(*status, *retry_after),
            Failure::Refused { .. } | Failure::NoAck(_) => Verdict::Stop,
        }
    }
}

/// The failure of an answer that is not a 2xx: its status, its `Retry-After`, and the start of
/// its body, scrubbed of secrets by `scrub` before it is cut.
pub(crate) async fn status_failure(
    resp: reqwest::Response,
    scrub: impl Fn(&str) -> String,
) -> Failure {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
    let body = read_body(resp, MAX_ERROR_BODY)
        .await
        .map(|(b, _)| b)
        .unwrap_or_default();
    Failure::Status {
        status,
        retry_after,
        // Scrub before cutting, so that no part of a secret survives at the cut.
        body: retry::snippet(&scrub(&String::from_utf8_lossy(&body))),
    }
}

/// What a refusal means, when its text says more than "check the url, headers and
/// credentials": `format` is the sink's format name.
pub(super) fn refusal_hint(detail: &str, format: &str) -> Option<String> {
    // Elasticsearch 7.9+: "data stream timestamp field [@timestamp] is missing" (as the reason,
    // or as `caused_by` of "failed to parse").
    if detail.contains("data stream timestamp field [@timestamp] is missing") {
        return Some(if format == "ecs" {
            "document has no @timestamp, which a data stream requires (the format is ecs: \
             check the events' time)"
                .into()
        } else {
            format!(
                "document has no @timestamp: a data stream needs format = \"ecs\" \
                 (format {format:?} has no @timestamp), or point the sink at an index instead"
            )
        });
    }
    if detail.contains("only write ops with an op_type of create are allowed in data streams") {
        return Some("the data stream takes only `create` actions".into());
    }
    None
}

/// Reads at most `cap` bytes of a body; the flag says whether there was more.
pub(crate) async fn read_body(
    mut resp: reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > cap {
            let room = cap - out.len();
            out.extend_from_slice(&chunk[..room]);
            return Ok((out, true));
        }
        out.extend_from_slice(&chunk);
    }
    Ok((out, false))
}

/// An error with its causes, on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        src = s.source();
    }
    msg
}

pub(crate) fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::default(),
    );
    enc.write_all(body)?;
    enc.finish()
}

/// A request body as sent: gzip-compressed when `gzip` (off the async threads: it is CPU work).
pub(in crate::sinks) async fn finish_body(
    gzip: bool,
    body: Vec<u8>,
) -> std::io::Result<bytes::Bytes> {
    if !gzip {
        return Ok(body.into());
    }
    tokio::task::spawn_blocking(move || self::gzip(&body))
        .await
        .map_err(std::io::Error::other)?
        .map(Into::into)
}

/// The `Idempotency-Key` of a request: hex BLAKE3 over its events' ids, each length-prefixed.
/// The same events in the same order give the same key, in this process or the next.
pub(super) fn idempotency_key<'e>(events: impl Iterator<Item = &'e Event>) -> HeaderValue {
    let mut h = blake3::Hasher::new();
    for e in events {
        let id = e.id();
        h.update(&(id.len() as u64).to_le_bytes());
        h.update(id.as_bytes());
    }
    HeaderValue::from_str(h.finalize().to_hex().as_str()).expect("hex is a valid header value")
}

/// This machine's name, for Splunk's `host` field and syslog's HOSTNAME.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".into())
}

/// What a sink over HTTP does on each failed attempt it retries: count it, tell the sink's
/// health (so a delivery retried for long shows in `/readyz`), and log it.
pub(crate) fn on_retry<'a, E: std::fmt::Display>(
    name: &'a str,
    health: &'a SinkHealth,
) -> impl Fn(&E, Duration) + 'a {
    move |e, delay| {
        crate::metrics::retry("sink", name);
        health.failed(e);
        tracing::warn!(sink = %name, error = %e, delay_ms = delay.as_millis() as u64,
            "retrying delivery");
    }
}

/// The client of a sink over HTTP (`http`, `otlp`): its timeout and TLS options (reading the CA
/// and client certificate files). Redirects are not followed.
pub(crate) fn build_client(
    name: &str,
    timeout: Duration,
    tls: &TlsConfig,
) -> Result<reqwest::Client, SinkError> {
    let fail = |msg: String| SinkError::Io {
        sink: name.to_string(),
        msg,
    };
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(crate::user_agent())
        // A redirect of a POST is a misconfigured URL: say so rather than follow it.
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = &tls.ca_file {
        let pem =
            std::fs::read(path).map_err(|e| fail(format!("ca_file {}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| fail(format!("ca_file {}: {e}", path.display())))?;
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        let mut pem = std::fs::read(cert)
            .map_err(|e| fail(format!("client_cert {}: {e}", cert.display())))?;
        pem.push(b'\n');
        pem.extend(
            std::fs::read(key).map_err(|e| fail(format!("client_key {}: {e}", key.display())))?,
        );
        let identity = reqwest::Identity::from_pem(&pem).map_err(|_| {
            fail("client_cert/client_key: not a PEM certificate and private key".into())
        })?;
        builder = builder.identity(identity);
    }
    if tls.insecure_skip_verify {
        tracing::warn!(sink = %name,
            "insecure_skip_verify = true: the receiver's TLS certificate is NOT verified; anyone on \
             the network path can impersonate it, read the events and take the credentials. Use \
             ca_file instead");
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder
        .build()
        .map_err(|e| fail(format!("cannot build the HTTP client: {}", chain(&e))))
}

/// [`build_client`] for a sink whose only TLS option is `ca_file` (CAs trusted besides the
/// system's roots).
pub(crate) fn build_client_with_ca(
    name: &str,
    timeout: Duration,
    ca_file: &Option<std::path::PathBuf>,
) -> Result<reqwest::Client, SinkError> {
    let tls = TlsConfig {
        ca_file: ca_file.clone(),
        ..Default::default()
    };
    build_client(name, timeout, &tls)
}

/// The backoff of a sink's deliveries: the agent's, without a limit on attempts in the daemon,
/// and `retry_max_attempts` in `--once` (`once`), where a run must end.
pub(crate) fn delivery_retry(
    retry: &crate::retry::RetryConfig,
    once: bool,
) -> crate::retry::RetryConfig {
    crate::retry::RetryConfig {
        max_attempts: if once { retry.max_attempts } else { None },
        ..retry.clone()
    }
}

/// The headers of every request: `Content-Type`, then the configured ones (which may replace
/// it), each configured value marked sensitive; and those values, to scrub from answers.
pub(crate) fn header_map(
    name: &str,
    content_type: &'static str,
    configured: &[(String, Secret)],
) -> Result<(HeaderMap, Vec<Secret>), SinkError> {
    let fail = |msg: String| SinkError::Io {
        sink: name.to_string(),
        msg,
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let mut secrets = Vec::new();
    for (k, v) in configured {
        let key = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| fail(format!("header {k:?}: not a valid header name")))?;
        let mut value = HeaderValue::from_str(v.expose()).map_err(|_| {
            fail(format!(
                "header {k}: value holds characters not allowed in HTTP"
            ))
        })?;
        value.set_sensitive(true);
        headers.insert(key, value);
        secrets.push(v.clone());
    }
    Ok((headers, secrets))
}

/// `text` with any configured header value (or a long word of one, such as the token after
/// `Splunk `) that a receiver echoed back replaced.
pub(crate) fn scrub(secrets: &[Secret], text: &str) -> String {
    let mut out = text.to_string();
    for s in secrets {
        let v = s.expose();
        for part in std::iter::once(v).chain(v.split_whitespace().filter(|w| w.len() >= 8)) {
            if part.len() >= 4 && out.contains(part) {
                out = out.replace(part, "***");
            }
        }
    }
    out
}

/// The request's endpoint for a log line: scheme, host, port and path; no user info or query,
/// which can hold secrets.
pub(crate) fn endpoint(url: &url::Url) -> String {
    format!(
        "{}://{}{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port().map(|p| format!(":{p}")).unwrap_or_default(),
        url.path()
    )
}

/// What `check --connect` says of a receiver's answer to `what` (a request without events):
/// 401 and 403 are the credentials refused, a 5xx is not healthy, anything else is an answer.
pub(crate) async fn probe_answer(what: &str, resp: reqwest::Response, secrets: &[Secret]) -> Probe {
    let status = resp.status().as_u16();
    let body = read_body(resp, MAX_ERROR_BODY)
        .await
        .map(|(b, _)| b)
        .unwrap_or_default();
    let body = retry::snippet(&scrub(secrets, &String::from_utf8_lossy(&body)));
    let said = if body.is_empty() {
        format!("{what}: HTTP {status}")
    } else {
        format!("{what}: HTTP {status} {body}")
    };
    match status {
        401 | 403 => Probe {
            ok: false,
            said: format!("auth refused ({said}): check the sink's headers"),
        },
        500..=599 => Probe {
            ok: false,
            said: format!("unreachable ({said})"),
        },
        _ => Probe {
            ok: true,
            said: format!("reachable ({said})"),
        },
    }
}

/// The error a delivery ends with once its retries stopped on `e`: in `--once`, the attempts
/// (`attempts`) ran out on a failure that might have passed (`retryable`, as the protocol
/// classifies it), else the receiver refused the batch for good (`hint` says more of a
/// refusal's text, where it can).
pub(crate) fn gave_up(
    name: &str,
    attempts: usize,
    (e, retryable): (Failure, bool),
    secrets: &[Secret],
    hint: impl Fn(&str) -> Option<String>,
) -> SinkError {
    if retryable {
        let msg = format!(
            "gave up after {attempts} attempts: {}",
            scrub(secrets, &e.to_string())
        );
        tracing::error!(sink = %name, error = %msg,
            "the receiver could not be reached; nothing was committed: the next run sends it again");
        return SinkError::Io {
            sink: name.to_string(),
            msg,
        };
    }
    let (status, detail) = match e {
        Failure::Status { status, body, .. } | Failure::Refused { status, body } => (status, body),
        e @ Failure::NoAck(_) => (200, e.to_string()),
        // Only statuses stop the retries; anything else reaching here is a bug.
        other => (0, other.to_string()),
    };
    if let Some(hint) = hint(&detail) {
        tracing::error!(sink = %name, status, body = %detail,
            "the receiver refused the batch: {hint}. Not retried; nothing was committed: \
             the next poll (or run) sends it again");
        return SinkError::Rejected {
            sink: name.to_string(),
            status,
            detail: format!("{hint}: {detail}"),
        };
    }
    tracing::error!(sink = %name, status, body = %detail,
        "the receiver refused the batch; not retried (check the sink's url, headers and \
         credentials). Nothing was committed: the next poll (or run) sends it again");
    SinkError::Rejected {
        sink: name.to_string(),
        status,
        detail,
    }
}
