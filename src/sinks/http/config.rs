//! `kind = "http"`: its keys, their validation, and the plugin ([`HttpKind`]).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::HttpSink;
use crate::retry::RetryConfig;
use crate::settings::{Secret, SecretFile, SecretText};
use crate::sinks::config::{SinkCheck, SinkConfig};
use crate::sinks::{Configured, Destination, OpenCx, Probe, Sink, SinkError, SinkSettings};
use crate::BoxFuture;

/// `kind = "http"`.
pub struct HttpKind;

/// Declares the `[[sinks]]` section of a kind over HTTP (`http`, `otlp`): its own keys, then
/// the keys every such kind takes (batch limits, headers, timeout, TLS), documented once here;
/// and `client`, which validates the latter.
macro_rules! http_section {
    ($(#[$m:meta])* struct $name:ident { $($(#[$fm:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$m])*
        #[derive(Debug, Default, serde::Deserialize, crate::settings::Section)]
        #[serde(deny_unknown_fields)]
        struct $name {
            $($(#[$fm])* $field: $ty,)*
            /// Most events in one request (default 500).
            batch_max_events: Option<i64>,
            /// Most bytes in one request body, before compression (default 4 MiB).
            batch_max_bytes: Option<i64>,
            /// Extra request headers; the values are secrets, never logged.
            headers: Option<std::collections::BTreeMap<String, $crate::settings::SecretText>>,
            /// Header name → file whose content (one trailing newline trimmed) is the value.
            header_files: Option<std::collections::BTreeMap<String, $crate::settings::SecretFile>>,
            /// Timeout of one request (default 30s).
            timeout: Option<String>,
            /// PEM file of CA certificates trusted besides the system's roots.
            ca_file: Option<String>,
            /// PEM client certificate (chain) for mutual TLS; needs `client_key`.
            client_cert: Option<String>,
            /// PEM private key of `client_cert`.
            client_key: Option<String>,
            /// Do not verify the receiver's TLS certificate (warned about loudly at start).
            insecure_skip_verify: Option<bool>,
        }

        impl $name {
            /// Validates the keys every kind over HTTP takes (reading the header files);
            /// `https`: whether the url is (TLS options apply).
            fn client(
                &self,
                c: &mut $crate::sinks::config::SinkCheck<'_, '_>,
                https: bool,
            ) -> $crate::sinks::http::config::ClientSettings {
                $crate::sinks::http::config::client_settings(
                    c,
                    https,
                    $crate::sinks::http::config::ClientKeys {
                        batch_max_events: self.batch_max_events,
                        batch_max_bytes: self.batch_max_bytes,
                        headers: &self.headers,
                        header_files: &self.header_files,
                        timeout: &self.timeout,
                        ca_file: &self.ca_file,
                        client_cert: &self.client_cert,
                        client_key: &self.client_key,
                        insecure_skip_verify: self.insecure_skip_verify,
                    },
                )
            }
        }
    };
}
pub(crate) use http_section;

/// The keys every kind over HTTP takes, as read.
pub(crate) struct ClientKeys<'a> {
    pub batch_max_events: Option<i64>,
    pub batch_max_bytes: Option<i64>,
    pub headers: &'a Option<BTreeMap<String, SecretText>>,
    pub header_files: &'a Option<BTreeMap<String, SecretFile>>,
    pub timeout: &'a Option<String>,
    pub ca_file: &'a Option<String>,
    pub client_cert: &'a Option<String>,
    pub client_key: &'a Option<String>,
    pub insecure_skip_verify: Option<bool>,
}

/// The keys every kind over HTTP takes, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// Most events in one request.
    pub batch_max_events: usize,
    /// Most bytes in one request body, before compression (one larger event goes alone).
    pub batch_max_bytes: usize,
    /// Extra headers (from `headers` and `header_files`), sent as sensitive values.
    pub headers: Vec<(String, Secret)>,
    /// Timeout of one request, connection included.
    pub timeout: Duration,
    /// CA, client certificate, and whether to verify the receiver's.
    pub tls: crate::settings::TlsConfig,
}

/// Validates [`ClientKeys`].
pub(crate) fn client_settings(
    c: &mut SinkCheck<'_, '_>,
    https: bool,
    k: ClientKeys<'_>,
) -> ClientSettings {
    let batch_max_events = bounded(
        c,
        "batch_max_events",
        k.batch_max_events,
        500,
        100_000,
        "events",
    );
    let batch_max_bytes = bounded(
        c,
        "batch_max_bytes",
        k.batch_max_bytes,
        4 << 20,
        1 << 30,
        "bytes",
    );
    let timeout = c
        .duration("timeout", k.timeout, true)
        .unwrap_or(Duration::from_secs(30));
    let headers = headers(c, k.headers, k.header_files, &RESERVED_HEADERS);
    let tls = c.tls(
        https,
        k.ca_file,
        k.client_cert,
        k.client_key,
        k.insecure_skip_verify,
    );
    ClientSettings {
        batch_max_events,
        batch_max_bytes,
        headers,
        timeout,
        tls,
    }
}

http_section! {
    /// The keys of `kind = "http"`.
    struct Section {
        /// Where batches are POSTed.
        url: Option<String>,
        /// `ndjson` (default), `json_array`, `splunk_hec` or `elasticsearch_bulk`.
        encoding: Option<String>,
        /// The Splunk index (optional) or the Elasticsearch index (required).
        index: Option<String>,
        /// `splunk_hec`: `sourcetype` of every event (default `auditship`).
        sourcetype: Option<String>,
        /// `splunk_hec`: `host` of every event (default this machine's hostname).
        host: Option<String>,
        /// gzip request bodies (default false).
        gzip: Option<bool>,
        /// `splunk_hec`: indexer acknowledgement (the token's `useACK`); a batch leaves the
        /// queue only once Splunk says it is indexed (default false).
        hec_ack: Option<bool>,
        /// `hec_ack = true`: how long a batch may wait for its acknowledgement before it is
        /// sent again (default 60s).
        ack_timeout: Option<String>,
    }
}

/// `hec_ack`: batches sent before their acknowledgements are awaited.
pub const ACKED_BATCHES: u64 = 16;

/// How an HTTP sink writes a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpEncoding {
    /// One native event per line (`application/x-ndjson`).
    Ndjson,
    /// One JSON array of native events.
    JsonArray,
    /// Splunk HEC event objects one after another, the native event under `event`.
    SplunkHec {
        /// `index` of every event (default: the HEC token's default index).
        index: Option<String>,
        /// `sourcetype` of every event.
        sourcetype: String,
        /// `host` of every event (`None`: this machine's hostname, looked up at start).
        host: Option<String>,
    },
    /// Elasticsearch/OpenSearch `_bulk` `create` actions with `_id` = the event id, so a batch
    /// sent twice cannot double a document. `create` is also the only action a data stream
    /// takes (`index` is refused there), so one framing serves indices and data streams.
    ElasticsearchBulk {
        /// The index (or data stream) the documents are created in, as `_index` of each action;
        /// `None` when the URL names it (`/{target}/_bulk`), which is then the default target.
        index: Option<String>,
    },
}

/// A validated `kind = "http"` sink. Header files are read; TLS files are checked here and read
/// again when the sink starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSinkConfig {
    /// Where every batch is POSTed.
    pub url: Url,
    /// How a batch becomes a request body.
    pub encoding: HttpEncoding,
    /// Most events in one request.
    pub batch_max_events: usize,
    /// Most bytes in one request body, before compression (one larger event goes alone).
    pub batch_max_bytes: usize,
    /// Compress bodies (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// Extra headers (from `headers` and `header_files`), sent as sensitive values.
    pub headers: Vec<(String, Secret)>,
    /// Timeout of one request, connection included.
    pub timeout: Duration,
    /// PEM CA certificates trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with `client_key`).
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Accept any certificate from the receiver (warned about at start).
    pub insecure_skip_verify: bool,
    /// Splunk HEC indexer acknowledgement: `Some(ack_timeout)` when `hec_ack = true`.
    pub hec_ack: Option<Duration>,
}

impl Destination for HttpKind {
    fn kind(&self) -> &'static str {
        "http"
    }
    fn title(&self) -> &'static str {
        "an HTTP receiver: NDJSON, a JSON array, Splunk HEC or Elasticsearch _bulk"
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

impl Configured for HttpSinkConfig {
    fn open<'a>(
        &'a self,
        cfg: &'a SinkConfig,
        cx: OpenCx<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Sink>, SinkError>> {
        crate::sinks::open_built::<HttpSink>(cfg, self, cx)
    }
    fn probe<'a>(&'a self, cfg: &'a SinkConfig, retry: &'a RetryConfig) -> BoxFuture<'a, Probe> {
        crate::sinks::probe_built::<HttpSink>(cfg, self, retry)
    }
    fn take_limits(&self, _cfg: &SinkConfig) -> (u64, u64) {
        // With Splunk's acknowledgements, [`ACKED_BATCHES`] batches: sent one after the other,
        // their acknowledgements awaited together.
        let n = if self.hec_ack.is_some() {
            ACKED_BATCHES
        } else {
            1
        };
        (
            n * self.batch_max_events as u64,
            n * self.batch_max_bytes as u64,
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

/// The target an `_bulk` URL names (`/{target}/_bulk`), if any.
pub fn bulk_target(url: &Url) -> Option<&str> {
    let path = url.path().trim_end_matches('/');
    let target = path.strip_suffix("/_bulk")?.rsplit('/').next()?;
    (!target.is_empty()).then_some(target)
}

/// Headers the HTTP sink sets itself, which `headers` must not override.
pub(crate) const RESERVED_HEADERS: [&str; 6] = [
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "host",
    "idempotency-key",
];

/// Validates a `kind = "http"` sink: reads its header files and checks its TLS files parse.
fn validate(c: &mut SinkCheck<'_, '_>, s: &Section) -> Option<HttpSinkConfig> {
    let url = match &s.url {
        None => {
            c.fail(
                "url",
                "missing: the receiver's URL, e.g. \"https://splunk.example.com:8088/services/collector/event\"",
            );
            None
        }
        u => c.url("url", u),
    };
    let enc = s.encoding.as_deref().unwrap_or("ndjson");
    // CEF is a line of text: an HTTP body that is JSON (an array, HEC objects, `_bulk`) cannot
    // carry it.
    if c.format() == Some("cef") && enc != "ndjson" {
        c.fail(
            "format",
            format_args!("cef writes text lines, which encoding {enc} (JSON) cannot carry; use encoding = \"ndjson\", or a syslog or file sink"),
        );
    }
    for (opt, set, takes) in [
        (
            "index",
            s.index.is_some(),
            matches!(enc, "splunk_hec" | "elasticsearch_bulk"),
        ),
        ("sourcetype", s.sourcetype.is_some(), enc == "splunk_hec"),
        ("host", s.host.is_some(), enc == "splunk_hec"),
        ("hec_ack", s.hec_ack.is_some(), enc == "splunk_hec"),
        ("ack_timeout", s.ack_timeout.is_some(), enc == "splunk_hec"),
    ] {
        if set && !takes {
            c.fail(opt, format_args!("not an option of encoding {enc}"));
        }
    }
    for (opt, v) in [
        ("index", &s.index),
        ("sourcetype", &s.sourcetype),
        ("host", &s.host),
    ] {
        if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
            c.fail(opt, "is empty");
        }
    }
    let encoding = match enc {
        "ndjson" => Some(HttpEncoding::Ndjson),
        "json_array" => Some(HttpEncoding::JsonArray),
        "splunk_hec" => Some(HttpEncoding::SplunkHec {
            index: s.index.clone(),
            sourcetype: s.sourcetype.clone().unwrap_or_else(|| "auditship".into()),
            host: s.host.clone(),
        }),
        "elasticsearch_bulk" => match s.index.as_deref() {
            // `/{target}/_bulk` names the default target itself; a bare `/_bulk` does not.
            None if url.as_ref().is_none_or(|u| bulk_target(u).is_none()) => {
                c.fail(
                    "index",
                    "missing: elasticsearch_bulk needs the index (or data stream) to create documents in, \
                     as `index` or in the url (https://es.example.com:9200/{target}/_bulk)",
                );
                None
            }
            None => Some(HttpEncoding::ElasticsearchBulk { index: None }),
            Some(i)
                if i.chars().any(|ch| {
                    ch.is_uppercase() || ch.is_whitespace() || "\\/*?\"<>|,#".contains(ch)
                }) =>
            {
                c.fail(
                    "index",
                    format_args!("{i:?} is not a valid index name: lowercase, without spaces or \\/*?\"<>|,#"),
                );
                None
            }
            Some(i) => Some(HttpEncoding::ElasticsearchBulk {
                index: Some(i.to_string()),
            }),
        },
        other => {
            c.fail(
                "encoding",
                format_args!("{other:?} is not an encoding; one of ndjson, json_array, splunk_hec, elasticsearch_bulk"),
            );
            None
        }
    };
    let ack_timeout = c
        .duration("ack_timeout", &s.ack_timeout, true)
        .unwrap_or(Duration::from_secs(60));
    if s.ack_timeout.is_some() && s.hec_ack != Some(true) && enc == "splunk_hec" {
        c.fail("ack_timeout", "only used with hec_ack = true");
    }
    let hec_ack = (s.hec_ack == Some(true) && enc == "splunk_hec").then_some(ack_timeout);

    let https = url.as_ref().is_none_or(|u| u.scheme() == "https");
    let client = s.client(c, https);
    Some(HttpSinkConfig {
        url: url?,
        encoding: encoding?,
        batch_max_events: client.batch_max_events,
        batch_max_bytes: client.batch_max_bytes,
        gzip: s.gzip.unwrap_or(false),
        headers: client.headers,
        timeout: client.timeout,
        ca_file: client.tls.ca_file,
        client_cert: client.tls.client_cert,
        client_key: client.tls.client_key,
        insecure_skip_verify: client.tls.insecure_skip_verify,
        hec_ack,
    })
}

/// Validates a sink's `headers` and `header_files` (reading the files, when the check reads
/// secrets): valid names, none of `reserved`, none twice, values that fit a header. The values
/// are secrets: no message shows one.
pub(crate) fn headers(
    c: &mut SinkCheck<'_, '_>,
    inline: &Option<BTreeMap<String, SecretText>>,
    files: &Option<BTreeMap<String, SecretFile>>,
    reserved: &[&str],
) -> Vec<(String, Secret)> {
    use reqwest::header::{HeaderName, HeaderValue};
    let mut headers: Vec<(String, Secret)> = Vec::new();
    let mut seen = HashSet::new();
    let inline = inline
        .iter()
        .flatten()
        .map(|(k, v)| ("headers", k, Ok(v.expose().to_string())));
    let (base, read) = (c.base().to_path_buf(), c.secrets());
    let files = files.iter().flatten().map(|(k, f)| {
        if !read {
            return ("header_files", k, Ok("unread".to_string()));
        }
        let p = base.join(f.path());
        let v = std::fs::read_to_string(&p)
            .map(|v| {
                let v = v.strip_suffix('\n').unwrap_or(&v);
                v.strip_suffix('\r').unwrap_or(v).to_string()
            })
            .map_err(|e| format!("cannot read {}: {e}", p.display()));
        ("header_files", k, v)
    });
    let entries: Vec<_> = inline.chain(files).collect();
    for (table, name, value) in entries {
        let hkey = format!("{table}.{name}");
        let Ok(hname) = HeaderName::from_bytes(name.as_bytes()) else {
            c.fail(&hkey, "not a valid HTTP header name");
            continue;
        };
        if reserved.contains(&hname.as_str()) {
            c.fail(&hkey, "is set by the sink itself; remove it");
            continue;
        }
        if !seen.insert(hname.as_str().to_string()) {
            c.fail(
                &hkey,
                "is set twice (names are case-insensitive; headers and header_files share them)",
            );
            continue;
        }
        match value {
            // A `${NAME}` that is not set: said already (or not wanted, without secrets).
            _ if c.has_failed(&hkey) => {}
            Ok(_) if !c.secrets() => headers.push((name.clone(), Secret::new(""))),
            Err(e) => c.fail(&hkey, e),
            Ok(v) if v.is_empty() => c.fail(&hkey, "is empty"),
            // The value is a secret: say what is wrong without showing it.
            Ok(v) if HeaderValue::from_str(&v).is_err() => c.fail(
                &hkey,
                "the value holds characters not allowed in an HTTP header (a newline?)",
            ),
            Ok(v) => headers.push((name.clone(), Secret::new(v))),
        }
    }

    headers
}

/// An integer option `opt` between 1 and `max` (`what` they count), `default` when not set or
/// out of range (which `c` is told).
pub(crate) fn bounded(
    c: &mut SinkCheck<'_, '_>,
    opt: &str,
    v: Option<i64>,
    default: usize,
    max: usize,
    what: &str,
) -> usize {
    match v {
        None => default,
        Some(n) if n >= 1 && n as u64 <= max as u64 => n as usize,
        Some(n) => {
            c.fail(opt, format_args!("{n} is out of range; 1 to {max} {what}"));
            default
        }
    }
}

impl crate::sinks::Reaches for HttpSink {
    type Settings = HttpSinkConfig;
    fn build(
        cfg: &SinkConfig,
        settings: &HttpSinkConfig,
        retry: &RetryConfig,
        once: bool,
    ) -> Result<HttpSink, SinkError> {
        HttpSink::new(&cfg.name, settings, crate::sinks::writer(cfg), retry, once)
    }
    fn reach(&self) -> impl std::future::Future<Output = Probe> + Send + '_ {
        self.probe()
    }
}
