//! `kind = "otlp"`: its keys, their validation, and the plugin ([`OtlpKind`]).

use std::time::Duration;

use url::Url;

use super::OtlpSink;
use crate::retry::RetryConfig;
use crate::sinks::config::{SinkCheck, SinkConfig};
use crate::sinks::http::config::{http_section, ClientSettings};
use crate::sinks::{Configured, Destination, OpenCx, Probe, Sink, SinkError, SinkSettings};
use crate::BoxFuture;

/// `kind = "otlp"`.
pub struct OtlpKind;

http_section! {
    /// The keys of `kind = "otlp"`.
    struct Section {
        /// The collector's OTLP/HTTP logs endpoint, e.g. `http://otel-collector:4318/v1/logs`.
        url: Option<String>,
        /// `protobuf` (default, `application/x-protobuf`) or `json` (the OTLP/JSON mapping,
        /// `application/json`).
        encoding: Option<String>,
        /// `gzip` or `none` (default).
        compression: Option<String>,
    }
}

/// How a request body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpEncoding {
    /// Binary protobuf (`application/x-protobuf`).
    Protobuf,
    /// The OTLP/JSON mapping of the same messages (`application/json`).
    Json,
}

/// A validated `kind = "otlp"` sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSinkConfig {
    /// Where every `ExportLogsServiceRequest` is POSTed.
    pub url: Url,
    /// Protobuf or JSON.
    pub encoding: OtlpEncoding,
    /// Compress bodies (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// Batch limits, headers, timeout and TLS, as the HTTP sink's.
    pub client: ClientSettings,
}

impl Destination for OtlpKind {
    fn kind(&self) -> &'static str {
        "otlp"
    }
    fn title(&self) -> &'static str {
        "an OpenTelemetry collector: OTLP/HTTP logs, protobuf or JSON"
    }
    fn options(&self) -> &'static [&'static str] {
        <Section as crate::settings::Section>::KEYS
    }
    fn secrets(&self) -> &'static [&'static str] {
        <Section as crate::settings::Section>::SECRETS
    }
    fn settings(&self, c: &mut SinkCheck<'_, '_>) -> Option<SinkSettings> {
        let s: Section = c.section();
        validate(c, &s).map(Into::into)
    }
    fn batch_max_age(&self) -> Duration {
        Duration::from_secs(1)
    }
}

impl Configured for OtlpSinkConfig {
    fn open<'a>(
        &'a self,
        cfg: &'a SinkConfig,
        cx: OpenCx<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Sink>, SinkError>> {
        crate::sinks::open_built::<OtlpSink>(cfg, self, cx)
    }
    fn probe<'a>(&'a self, cfg: &'a SinkConfig, retry: &'a RetryConfig) -> BoxFuture<'a, Probe> {
        crate::sinks::probe_built::<OtlpSink>(cfg, self, retry)
    }
    fn take_limits(&self, _cfg: &SinkConfig) -> (u64, u64) {
        (
            self.client.batch_max_events as u64,
            self.client.batch_max_bytes as u64,
        )
    }
    fn warnings(&self, _cfg: &SinkConfig) -> Vec<String> {
        if crate::settings::cleartext(&self.url) {
            vec![crate::settings::CLEARTEXT_URL.to_string()]
        } else {
            Vec::new()
        }
    }
}

/// Validates a `kind = "otlp"` sink: reads its header files and checks its TLS files parse.
fn validate(c: &mut SinkCheck<'_, '_>, s: &Section) -> Option<OtlpSinkConfig> {
    let url = match &s.url {
        None => {
            c.fail(
                "url",
                "missing: the collector's OTLP/HTTP logs endpoint, e.g. \"http://otel-collector:4318/v1/logs\"",
            );
            None
        }
        u => c.url("url", u),
    };
    // A log record's body is a structured value (so that a collector's processors reach the
    // event's fields): CEF is a line of text.
    if c.format() == Some("cef") {
        c.fail(
            "format",
            "cef writes text lines; an OTLP log record's body is the event as a structured map: \
             use native, ocsf or ecs (or a syslog or file sink for CEF)",
        );
    }
    let encoding = match s.encoding.as_deref() {
        None | Some("protobuf") => Some(OtlpEncoding::Protobuf),
        Some("json") => Some(OtlpEncoding::Json),
        Some(other) => {
            c.fail(
                "encoding",
                format_args!("{other:?} is not an OTLP encoding; one of protobuf, json"),
            );
            None
        }
    };
    let gzip = match s.compression.as_deref() {
        None | Some("none") => Some(false),
        Some("gzip") => Some(true),
        Some(other) => {
            c.fail(
                "compression",
                format_args!("{other:?} is not a compression; one of gzip, none"),
            );
            None
        }
    };
    let https = url.as_ref().is_none_or(|u| u.scheme() == "https");
    let client = s.client(c, https);
    Some(OtlpSinkConfig {
        url: url?,
        encoding: encoding?,
        gzip: gzip?,
        client,
    })
}

impl crate::sinks::Reaches for OtlpSink {
    type Settings = OtlpSinkConfig;
    fn build(
        cfg: &SinkConfig,
        settings: &OtlpSinkConfig,
        retry: &RetryConfig,
        once: bool,
    ) -> Result<OtlpSink, SinkError> {
        OtlpSink::new(cfg, settings, retry, once)
    }
    fn reach(&self) -> impl std::future::Future<Output = Probe> + Send + '_ {
        self.probe()
    }
}
