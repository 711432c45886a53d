//! What every HTTP protocol shares: how a request failed and whether to retry it, reading a
//! bounded answer, gzip, the `Idempotency-Key` of a batch, and the agent's hostname.

use std::io::Write as _;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};

use crate::event::Event;
use crate::retry::{self, Retryable, Verdict};

/// How much of an error answer is kept for the log line.
pub(super) const MAX_ERROR_BODY: usize = 16 << 10;

/// The `Idempotency-Key` request header.
pub(super) static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Why one attempt at a request failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum Failure {
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

/// Reads at most `cap` bytes of a body; the flag says whether there was more.
pub(super) async fn read_body(
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
pub(super) fn chain(e: &dyn std::error::Error) -> String {
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

pub(super) fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::default(),
    );
    enc.write_all(body)?;
    enc.finish()
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
