//! What every HTTP protocol shares: how a request failed and whether to retry it, reading a
//! bounded answer, gzip, the `Idempotency-Key` of a batch, and the agent's hostname.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use reqwest::header::{self, HeaderName, HeaderValue};

use crate::event::Event;
use crate::retry::{self, Retryable, Verdict};

/// How much of an error answer is kept for the log line.
pub(in crate::sinks) const MAX_ERROR_BODY: usize = 16 << 10;

/// The `Idempotency-Key` request header.
pub(super) static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Why one attempt at a request failed.
#[derive(Debug, thiserror::Error)]
pub(in crate::sinks) enum Failure {
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

/// The TLS and timeout settings of a sink's HTTP client.
pub(in crate::sinks) struct ClientTls<'a> {
    pub timeout: Duration,
    pub ca_file: &'a Option<PathBuf>,
    pub client_cert: &'a Option<PathBuf>,
    pub client_key: &'a Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

/// A sink's HTTP client: its timeout, its TLS files read (the CA bundle, the client certificate
/// and key), no redirects (a redirected POST is a misconfigured URL: said rather than followed).
pub(in crate::sinks) fn build_client(
    name: &str,
    tls: ClientTls<'_>,
) -> Result<reqwest::Client, crate::sinks::SinkError> {
    let fail = |msg: String| crate::sinks::SinkError::Io {
        sink: name.to_string(),
        msg,
    };
    let mut builder = reqwest::Client::builder()
        .timeout(tls.timeout)
        .connect_timeout(tls.timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("auditship/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = tls.ca_file {
        let pem =
            std::fs::read(path).map_err(|e| fail(format!("ca_file {}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| fail(format!("ca_file {}: {e}", path.display())))?;
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    if let (Some(cert), Some(key)) = (tls.client_cert, tls.client_key) {
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

/// A non-2xx answer as a [`Failure::Status`]: its `Retry-After` and the start of its body,
/// with `scrub` applied before the cut (so no part of a secret survives at the cut).
pub(in crate::sinks) async fn status_failure(
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
        body: retry::snippet(&scrub(&String::from_utf8_lossy(&body))),
    }
}

/// What a sink tells of each retried attempt: the metric, `/readyz` (through `health`) and a
/// warning with the delay chosen.
pub(in crate::sinks) fn on_retry<'a>(
    name: &'a str,
    health: &'a crate::health::SinkHealth,
) -> impl FnMut(&Failure, Duration) + 'a {
    move |e, delay| {
        crate::metrics::retry("sink", name);
        health.failed(e);
        tracing::warn!(sink = %name, error = %e, delay_ms = delay.as_millis() as u64,
            "retrying delivery");
    }
}

/// Reads at most `cap` bytes of a body; the flag says whether there was more.
pub(in crate::sinks) async fn read_body(
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
pub(in crate::sinks) fn chain(e: &dyn std::error::Error) -> String {
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

pub(in crate::sinks) fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
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
