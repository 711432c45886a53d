//! The TOML configuration: read it, expand `${ENV}` and `X_file` secrets, and validate it into
//! typed settings without any network or state I/O.
//!
//! Two steps, as ripgrep's LowArgs/HiArgs: [`RawConfig`] is what the file says (unknown keys are
//! rejected by serde), [`Config`] is what the agent runs on. Validation collects every problem so
//! the user sees them all at once, each naming its key.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::timefmt::{self, Nanos};

/// A secret value (API key, client secret, header). Never printed: `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(s: impl Into<Arc<str>>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A configuration that could not be used: every problem found, each naming its key.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file the problems are in.
    pub file: PathBuf,
    /// One line a problem: `key: what is wrong`.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration {}:", self.file.display())?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// What the file says.

/// `[agent]`: settings of the whole agent, and defaults for every source.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    /// SQLite file holding cursors, dedupe keys and sink positions; created if missing.
    pub state_path: Option<String>,
    /// How often each source polls (default 60s).
    pub poll_interval: Option<String>,
    /// Never ask for events newer than now − lag (default 2m).
    pub lag: Option<String>,
    /// Each poll re-reads this much before the cursor, for late arrivals (default 15m).
    pub overlap: Option<String>,
    /// The first sub-window's length (default 1h); later ones grow while answers are small and
    /// shrink when they are dense.
    pub window: Option<String>,
    /// Events per page requested (1–1000, default 1000).
    pub page_size: Option<i64>,
    /// Address of the /healthz, /readyz and /metrics server (optional).
    pub listen: Option<String>,
    /// Timeout of one HTTP request (default 30s).
    pub request_timeout: Option<String>,
    /// First retry delay (default 1s); each retry doubles it, with full jitter.
    pub retry_initial: Option<String>,
    /// Longest retry delay (default 60s).
    pub retry_max_delay: Option<String>,
    /// Attempts per request before a poll gives up (default 8; the next poll tries again).
    pub retry_max_attempts: Option<i64>,
    /// `/readyz` answers 503 once a source has been failing for longer than this (default 5m).
    pub unready_after: Option<String>,
}

/// `[[sources]]`: one audit API to read. One flat table for all kinds, so that a key that does
/// not belong to a kind can be named as such.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub url: Option<String>,
    pub api_key: Option<String>,
    pub api_key_file: Option<String>,
    pub jwt: Option<String>,
    pub jwt_file: Option<String>,
    pub client_id: Option<String>,
    pub client_id_file: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    pub token_url: Option<String>,
    pub time_zone: Option<String>,
    pub start: Option<String>,
    pub poll_interval: Option<String>,
    pub lag: Option<String>,
    pub overlap: Option<String>,
    pub window: Option<String>,
    pub page_size: Option<i64>,
    pub max_response_events: Option<i64>,
    pub filters: Option<BTreeMap<String, FilterValue>>,
}

/// A filter's value: one or several (sent as a repeated parameter).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FilterValue {
    One(ScalarValue),
    Many(Vec<ScalarValue>),
}

/// A scalar in a filter table.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ScalarValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl ScalarValue {
    fn text(&self) -> String {
        match self {
            ScalarValue::Str(s) => s.clone(),
            ScalarValue::Int(i) => i.to_string(),
            ScalarValue::Bool(b) => b.to_string(),
        }
    }
}

/// `[[sinks]]`: where events go.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub path: Option<String>,
    pub fsync: Option<bool>,
    pub sources: Option<Vec<String>>,
    pub include_raw: Option<bool>,
    pub format: Option<String>,
    /// `http`: where batches are POSTed.
    pub url: Option<String>,
    /// `http`: `ndjson` (default), `json_array`, `splunk_hec` or `elasticsearch_bulk`.
    pub encoding: Option<String>,
    /// `http`: the Splunk index (optional) or the Elasticsearch index (required).
    pub index: Option<String>,
    /// `http`, `splunk_hec`: `sourcetype` of every event (default `auditship`).
    pub sourcetype: Option<String>,
    /// `http`, `splunk_hec`: `host` of every event (default this machine's hostname).
    pub host: Option<String>,
    /// `http`: most events in one request (default 500).
    pub batch_max_events: Option<i64>,
    /// `http`: most bytes in one request body, before compression (default 4 MiB).
    pub batch_max_bytes: Option<i64>,
    /// `http`: gzip request bodies (default false).
    pub gzip: Option<bool>,
    /// `http`: extra request headers; the values are secrets, never logged.
    pub headers: Option<BTreeMap<String, String>>,
    /// `http`: header name → file whose content (one trailing newline trimmed) is the value.
    pub header_files: Option<BTreeMap<String, String>>,
    /// `http`: timeout of one request (default 30s).
    pub timeout: Option<String>,
    /// `http`: PEM file of CA certificates trusted besides the system's roots.
    pub ca_file: Option<String>,
    /// `http`: PEM client certificate (chain) for mutual TLS; needs `client_key`.
    pub client_cert: Option<String>,
    /// `http`: PEM private key of `client_cert`.
    pub client_key: Option<String>,
    /// `http`: do not verify the receiver's TLS certificate (warned about loudly at start).
    pub insecure_skip_verify: Option<bool>,
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub agent: RawAgent,
    #[serde(default)]
    pub sources: Vec<RawSource>,
    #[serde(default)]
    pub sinks: Vec<RawSink>,
}

// ---------------------------------------------------------------------------------------------
// What the agent runs on.

/// The kinds of source, each one file in `src/sources/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    DominoAudit,
    DominoDatasource,
    Domo,
    WasabiAir,
}

impl SourceKind {
    pub const ALL: [SourceKind; 4] = [
        SourceKind::DominoAudit,
        SourceKind::DominoDatasource,
        SourceKind::Domo,
        SourceKind::WasabiAir,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::DominoAudit => "domino_audit",
            SourceKind::DominoDatasource => "domino_datasource",
            SourceKind::Domo => "domo",
            SourceKind::WasabiAir => "wasabi_air",
        }
    }

    fn parse(s: &str) -> Option<SourceKind> {
        SourceKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Query parameters the agent itself sets, which a filter must not override.
    fn reserved_params(self) -> &'static [&'static str] {
        match self {
            SourceKind::DominoAudit => {
                &["startTimestamp", "endTimestamp", "limit", "offset", "sort"]
            }
            SourceKind::DominoDatasource => &["startTime", "endTime"],
            SourceKind::Domo => &["start", "end", "limit", "offset"],
            SourceKind::WasabiAir => &["from", "to", "page", "count", "order"],
        }
    }

    /// Options that only some kinds take.
    fn accepts(self, key: &str) -> bool {
        match key {
            "api_key" => self != SourceKind::Domo,
            "jwt" => self == SourceKind::DominoAudit,
            "client_id" | "client_secret" | "token_url" | "time_zone" => self == SourceKind::Domo,
            "max_response_events" => self == SourceKind::DominoDatasource,
            _ => true,
        }
    }
}

/// How a source authenticates. Which fields are set depends on the kind (validated).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceAuth {
    pub api_key: Option<Secret>,
    pub jwt: Option<Secret>,
    pub client_id: Option<Secret>,
    pub client_secret: Option<Secret>,
    pub token_url: Option<Url>,
}

/// One validated `[[sources]]` entry, with the agent's defaults folded in.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    /// Unique name; appears as `source` in every event and keys its state.
    pub name: String,
    pub kind: SourceKind,
    /// Base URL of the vendor's API.
    pub url: Url,
    pub auth: SourceAuth,
    /// Where the very first run begins (default now − 24h, decided at first poll).
    pub start: Option<Nanos>,
    pub poll_interval: Duration,
    pub lag: Duration,
    pub overlap: Duration,
    /// Largest sub-window.
    pub window: Duration,
    pub page_size: u32,
    /// Domino data-source: a response with more events than this is fetched again in halves.
    pub max_response_events: usize,
    /// Domo: the zone its wall-clock times are in.
    pub time_zone: jiff::tz::TimeZone,
    /// Vendor query parameters, passed through in order (repeated for lists).
    pub filters: Vec<(String, String)>,
}

/// Kinds of sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkKind {
    Stdout,
    File {
        path: PathBuf,
        /// fdatasync the file before each commit, so a power loss cannot leave the state ahead
        /// of the file (default true).
        fsync: bool,
    },
    /// POSTs batches to a SIEM or collector (`src/sinks/http.rs`).
    Http(Box<HttpSinkConfig>),
}

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
    /// sent twice cannot double a document.
    ElasticsearchBulk {
        /// The index (or data stream) the documents are created in.
        index: String,
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
}

/// One validated `[[sinks]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    pub name: String,
    pub kind: SinkKind,
    /// Only these sources' events (default: all).
    pub sources: Option<Vec<String>>,
    /// Keep the vendor's event under `raw` (default true).
    pub include_raw: bool,
    /// How each event is written (`format`, default `native`).
    pub format: crate::encodings::Format,
}

impl SinkConfig {
    /// Whether events of `source` go to this sink.
    pub fn takes(&self, source: &str) -> bool {
        self.sources
            .as_ref()
            .is_none_or(|s| s.iter().any(|n| n == source))
    }
}

/// Retry policy of every HTTP call.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    pub initial: Duration,
    pub max_delay: Duration,
    /// Attempts of one request before the poll gives up; `None` retries while the agent runs.
    pub max_attempts: Option<usize>,
}

/// `[agent]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub state_path: PathBuf,
    pub listen: Option<SocketAddr>,
    pub request_timeout: Duration,
    pub retry: RetryConfig,
    /// A source failing for longer than this makes `/readyz` answer 503.
    pub unready_after: Duration,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages and reload).
    pub path: PathBuf,
    pub agent: AgentConfig,
    pub sources: Vec<SourceConfig>,
    pub sinks: Vec<SinkConfig>,
}

impl Config {
    /// Reads, expands and validates a config file. No network, no state.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            problems: vec![format!("cannot read the file: {e}")],
        })?;
        Config::parse(&text, path)
    }

    /// Parses TOML text as if read from `path` (relative secret files resolve against its dir).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let fail = |problems: Vec<String>| ConfigError {
            file: path.to_path_buf(),
            problems,
        };
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| {
                fail(vec![format!(
                    "not valid TOML: {}",
                    first_line(&e.to_string())
                )])
            })?;
        let mut tree: serde_json::Value = built.try_deserialize().map_err(|e| {
            fail(vec![format!(
                "not valid TOML: {}",
                first_line(&e.to_string())
            )])
        })?;
        let mut problems = Vec::new();
        expand_env(&mut tree, &mut String::new(), &mut problems);
        if !problems.is_empty() {
            return Err(fail(problems));
        }
        let raw: RawConfig = serde_path_to_error::deserialize(tree).map_err(|e| {
            let key = e.path().to_string();
            let msg = e.into_inner().to_string();
            fail(vec![if key == "." {
                msg
            } else {
                format!("{key}: {msg}")
            }])
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        validate(raw, path, base).map_err(fail)
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Replaces `${NAME}` with the environment variable in every string of the tree (`$${` stays a
/// literal `${`). A variable that is not set is an error naming the key.
fn expand_env(v: &mut serde_json::Value, key: &mut String, problems: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) if s.contains('$') => match expand_str(s) {
            Ok(e) => *s = e,
            Err(name) => problems.push(format!(
                "{key}: environment variable {name} is not set (referenced as ${{{name}}})"
            )),
        },
        serde_json::Value::Array(a) => {
            for (i, item) in a.iter_mut().enumerate() {
                let len = key.len();
                key.push_str(&format!("[{i}]"));
                expand_env(item, key, problems);
                key.truncate(len);
            }
        }
        serde_json::Value::Object(m) => {
            for (k, item) in m.iter_mut() {
                let len = key.len();
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(k);
                expand_env(item, key, problems);
                key.truncate(len);
            }
        }
        _ => {}
    }
}

fn expand_str(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(after2) = after.strip_prefix("${") {
            out.push_str("${");
            rest = after2;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                out.push('$');
                rest = after;
                continue;
            };
            let name = &body[..end];
            match std::env::var(name) {
                Ok(v) => out.push_str(&v),
                Err(_) => return Err(name.to_string()),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Collects problems for one config; each helper pushes `key: message`.
struct Check<'a> {
    problems: Vec<String>,
    base: &'a Path,
}

impl Check<'_> {
    fn fail(&mut self, key: &str, msg: impl fmt::Display) {
        self.problems.push(format!("{key}: {msg}"));
    }

    fn duration(&mut self, key: &str, v: &Option<String>, positive: bool) -> Option<Duration> {
        let s = v.as_deref()?;
        match humantime::parse_duration(s.trim()) {
            Ok(d) if positive && d.is_zero() => {
                self.fail(key, "must be longer than zero");
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.fail(
                    key,
                    format_args!(
                        "{s:?} is not a duration ({e}); write e.g. \"30s\", \"5m\", \"1h\""
                    ),
                );
                None
            }
        }
    }

    fn time(&mut self, key: &str, v: &Option<String>) -> Option<Nanos> {
        let s = v.as_deref()?;
        let t = timefmt::parse_rfc3339(s.trim());
        if t.is_none() {
            self.fail(
                key,
                format_args!("{s:?} is not an RFC 3339 time; write e.g. \"2024-10-18T00:00:00Z\""),
            );
        }
        t
    }

    fn url(&mut self, key: &str, v: &Option<String>) -> Option<Url> {
        let s = v.as_deref()?;
        match Url::parse(s.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Some(u),
            Ok(_) => {
                self.fail(key, format_args!("{s:?} is not an http(s) URL"));
                None
            }
            Err(e) => {
                self.fail(key, format_args!("{s:?} is not a URL ({e})"));
                None
            }
        }
    }

    fn name(&mut self, key: &str, v: &Option<String>, seen: &mut HashSet<String>) -> String {
        let Some(n) = v.clone() else {
            self.fail(key, "missing: every entry needs a unique name");
            return String::new();
        };
        if n.is_empty()
            || !n
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
        {
            self.fail(key, format_args!("{n:?} must match [a-z0-9_-]+"));
        } else if !seen.insert(n.clone()) {
            self.fail(
                key,
                format_args!("{n:?} is used twice; names must be unique"),
            );
        }
        n
    }

    /// A secret given either inline (`key`) or as a file (`key_file`), not both.
    fn secret(
        &mut self,
        prefix: &str,
        key: &str,
        inline: &Option<String>,
        file: &Option<String>,
    ) -> Option<Secret> {
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.fail(
                    &format!("{prefix}.{key}"),
                    format_args!("set either {key} or {key}_file, not both"),
                );
                None
            }
            (Some(v), None) => {
                if v.is_empty() {
                    self.fail(&format!("{prefix}.{key}"), "is empty");
                    return None;
                }
                Some(Secret::new(v.as_str()))
            }
            (None, Some(f)) => {
                let p = self.base.join(f);
                match std::fs::read_to_string(&p) {
                    Ok(s) => {
                        let s = s.strip_suffix('\n').unwrap_or(&s);
                        let s = s.strip_suffix('\r').unwrap_or(s);
                        if s.is_empty() {
                            self.fail(
                                &format!("{prefix}.{key}_file"),
                                format_args!("{} is empty", p.display()),
                            );
                            None
                        } else {
                            Some(Secret::new(s))
                        }
                    }
                    Err(e) => {
                        self.fail(
                            &format!("{prefix}.{key}_file"),
                            format_args!("cannot read {}: {e}", p.display()),
                        );
                        None
                    }
                }
            }
            (None, None) => None,
        }
    }
}

fn validate(raw: RawConfig, path: &Path, base: &Path) -> Result<Config, Vec<String>> {
    let mut c = Check {
        problems: Vec::new(),
        base,
    };
    let a = &raw.agent;
    let d_poll = c.duration("agent.poll_interval", &a.poll_interval, true);
    let d_lag = c.duration("agent.lag", &a.lag, false);
    let d_overlap = c.duration("agent.overlap", &a.overlap, false);
    let d_window = c.duration("agent.window", &a.window, true);
    let d_page = page_size(&mut c, "agent.page_size", a.page_size);
    let request_timeout = c
        .duration("agent.request_timeout", &a.request_timeout, true)
        .unwrap_or(Duration::from_secs(30));
    let retry = RetryConfig {
        initial: c
            .duration("agent.retry_initial", &a.retry_initial, true)
            .unwrap_or(Duration::from_secs(1)),
        max_delay: c
            .duration("agent.retry_max_delay", &a.retry_max_delay, true)
            .unwrap_or(Duration::from_secs(60)),
        max_attempts: match a.retry_max_attempts {
            None => Some(8),
            Some(n) if n >= 1 => Some(n as usize),
            Some(n) => {
                c.fail(
                    "agent.retry_max_attempts",
                    format_args!("{n} must be at least 1"),
                );
                None
            }
        },
    };
    let unready_after = c
        .duration("agent.unready_after", &a.unready_after, true)
        .unwrap_or(Duration::from_secs(300));
    let listen = a
        .listen
        .as_deref()
        .and_then(|s| match s.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                c.fail(
                    "agent.listen",
                    format_args!("{s:?} is not an address; write e.g. \"127.0.0.1:9464\""),
                );
                None
            }
        });
    let state_path = match a.state_path.as_deref() {
        Some("") => {
            c.fail("agent.state_path", "is empty");
            PathBuf::new()
        }
        Some(p) => base.join(p),
        None => PathBuf::from("/var/lib/auditship/state.db"),
    };

    let mut names = HashSet::new();
    let mut sources = Vec::new();
    if raw.sources.is_empty() {
        c.fail("sources", "no [[sources]]: there is nothing to read");
    }
    for (i, s) in raw.sources.iter().enumerate() {
        let key = format!("sources[{i}]");
        let name = c.name(&format!("{key}.name"), &s.name, &mut names);
        let Some(kind_s) = s.kind.as_deref() else {
            c.fail(
                &format!("{key}.kind"),
                "missing; one of domino_audit, domino_datasource, domo, wasabi_air",
            );
            continue;
        };
        let Some(kind) = SourceKind::parse(kind_s) else {
            c.fail(
                &format!("{key}.kind"),
                format_args!(
                    "{kind_s:?} is not a source kind; one of domino_audit, domino_datasource, domo, wasabi_air"
                ),
            );
            continue;
        };
        for (opt, set) in [
            ("api_key", s.api_key.is_some() || s.api_key_file.is_some()),
            ("jwt", s.jwt.is_some() || s.jwt_file.is_some()),
            (
                "client_id",
                s.client_id.is_some() || s.client_id_file.is_some(),
            ),
            (
                "client_secret",
                s.client_secret.is_some() || s.client_secret_file.is_some(),
            ),
            ("token_url", s.token_url.is_some()),
            ("time_zone", s.time_zone.is_some()),
            ("max_response_events", s.max_response_events.is_some()),
        ] {
            if set && !kind.accepts(opt) {
                c.fail(
                    &format!("{key}.{opt}"),
                    format_args!("not an option of kind {}", kind.as_str()),
                );
            }
        }
        let url = match &s.url {
            None => {
                c.fail(&format!("{key}.url"), "missing: the vendor API's base URL");
                None
            }
            u => c.url(&format!("{key}.url"), u),
        };
        let auth = SourceAuth {
            api_key: c.secret(&key, "api_key", &s.api_key, &s.api_key_file),
            jwt: c.secret(&key, "jwt", &s.jwt, &s.jwt_file),
            client_id: c.secret(&key, "client_id", &s.client_id, &s.client_id_file),
            client_secret: c.secret(
                &key,
                "client_secret",
                &s.client_secret,
                &s.client_secret_file,
            ),
            token_url: c.url(&format!("{key}.token_url"), &s.token_url),
        };
        match kind {
            SourceKind::DominoAudit => match (&auth.api_key, &auth.jwt) {
                (None, None) => c.fail(
                    &format!("{key}.api_key"),
                    "missing: domino_audit needs api_key (or api_key_file) or jwt (or jwt_file)",
                ),
                (Some(_), Some(_)) => {
                    c.fail(&format!("{key}.jwt"), "set either api_key or jwt, not both")
                }
                _ => {}
            },
            SourceKind::DominoDatasource | SourceKind::WasabiAir => {
                if auth.api_key.is_none() && s.api_key.is_none() && s.api_key_file.is_none() {
                    c.fail(
                        &format!("{key}.api_key"),
                        format_args!("missing: {} needs api_key (or api_key_file)", kind.as_str()),
                    );
                }
            }
            SourceKind::Domo => {
                for (opt, v, raw_set) in [
                    (
                        "client_id",
                        &auth.client_id,
                        s.client_id.is_some() || s.client_id_file.is_some(),
                    ),
                    (
                        "client_secret",
                        &auth.client_secret,
                        s.client_secret.is_some() || s.client_secret_file.is_some(),
                    ),
                ] {
                    if v.is_none() && !raw_set {
                        c.fail(
                            &format!("{key}.{opt}"),
                            format_args!("missing: domo needs {opt} (or {opt}_file)"),
                        );
                    }
                }
            }
        }
        let time_zone = match s.time_zone.as_deref() {
            None => jiff::tz::TimeZone::UTC,
            Some(z) => jiff::tz::TimeZone::get(z).unwrap_or_else(|_| {
                c.fail(
                    &format!("{key}.time_zone"),
                    format_args!("{z:?} is not an IANA time zone; write e.g. \"America/Denver\""),
                );
                jiff::tz::TimeZone::UTC
            }),
        };
        let start = c.time(&format!("{key}.start"), &s.start);
        if let Some(t) = start.filter(|t| *t > timefmt::now()) {
            // A mistyped year must not stop ingestion without a word: the source would fetch
            // nothing until then, and exit 0 doing so.
            c.fail(
                &format!("{key}.start"),
                format_args!(
                    "{} is in the future; the source would fetch nothing until then",
                    timefmt::human(t)
                ),
            );
        }
        let poll_interval = c
            .duration(&format!("{key}.poll_interval"), &s.poll_interval, true)
            .or(d_poll)
            .unwrap_or(Duration::from_secs(60));
        let lag = c
            .duration(&format!("{key}.lag"), &s.lag, false)
            .or(d_lag)
            .unwrap_or(Duration::from_secs(120));
        let overlap = c
            .duration(&format!("{key}.overlap"), &s.overlap, false)
            .or(d_overlap)
            .unwrap_or(Duration::from_secs(900));
        // The first sub-window's length; later ones follow the data (`pipeline::Poller::adapt`).
        // No kind has a largest window: Domo's windows end where the clocks go back instead.
        let window = c
            .duration(&format!("{key}.window"), &s.window, true)
            .or(d_window)
            .unwrap_or(Duration::from_secs(3600));
        if kind == SourceKind::Domo && !window.as_nanos().is_multiple_of(1_000_000_000) {
            c.fail(
                &format!("{key}.window"),
                "must be whole seconds for kind domo (its times have one-second resolution)",
            );
        }
        let page_size = page_size(&mut c, &format!("{key}.page_size"), s.page_size)
            .or(d_page)
            .unwrap_or(1000);
        let max_response_events = match s.max_response_events {
            None => 5_000,
            Some(n) if n >= 1 => n as usize,
            Some(n) => {
                c.fail(
                    &format!("{key}.max_response_events"),
                    format_args!("{n} must be at least 1"),
                );
                5_000
            }
        };
        let mut filters = Vec::new();
        for (fk, fv) in s.filters.iter().flatten() {
            if kind.reserved_params().contains(&fk.as_str()) {
                c.fail(
                    &format!("{key}.filters.{fk}"),
                    "is set by the agent itself (from the window and paging); remove it",
                );
                continue;
            }
            match fv {
                FilterValue::One(v) => filters.push((fk.clone(), v.text())),
                FilterValue::Many(vs) => {
                    filters.extend(vs.iter().map(|v| (fk.clone(), v.text())));
                }
            }
        }
        if let Some(url) = url {
            sources.push(SourceConfig {
                name,
                kind,
                url,
                auth,
                start,
                poll_interval,
                lag,
                overlap,
                window,
                page_size,
                max_response_events,
                time_zone,
                filters,
            });
        }
    }

    let mut sink_names = HashSet::new();
    let mut sinks = Vec::new();
    if raw.sinks.is_empty() {
        c.fail(
            "sinks",
            "no [[sinks]]: events would go nowhere; add e.g. [[sinks]] name = \"out\" kind = \"stdout\"",
        );
    }
    for (i, s) in raw.sinks.iter().enumerate() {
        let key = format!("sinks[{i}]");
        let name = c.name(&format!("{key}.name"), &s.name, &mut sink_names);
        let kind = match s.kind.as_deref() {
            Some("stdout") => {
                if s.path.is_some() {
                    c.fail(&format!("{key}.path"), "not an option of kind stdout");
                }
                if s.fsync.is_some() {
                    c.fail(&format!("{key}.fsync"), "not an option of kind stdout");
                }
                Some(SinkKind::Stdout)
            }
            Some("file") => match s.path.as_deref() {
                None | Some("") => {
                    c.fail(
                        &format!("{key}.path"),
                        "missing: the file to append events to",
                    );
                    None
                }
                Some(p) => Some(SinkKind::File {
                    path: base.join(p),
                    fsync: s.fsync.unwrap_or(true),
                }),
            },
            Some("http") => http_sink(&mut c, &key, s).map(|h| SinkKind::Http(Box::new(h))),
            Some(other) => {
                c.fail(
                    &format!("{key}.kind"),
                    format_args!("{other:?} is not a sink kind; one of stdout, file, http"),
                );
                None
            }
            None => {
                c.fail(&format!("{key}.kind"), "missing; one of stdout, file, http");
                None
            }
        };
        if s.kind.as_deref() != Some("http") {
            for (opt, set) in http_options(s) {
                if set {
                    c.fail(
                        &format!("{key}.{opt}"),
                        format_args!("not an option of kind {}", s.kind.as_deref().unwrap_or("?")),
                    );
                }
            }
        }
        let format = match s.format.as_deref() {
            None => Some(crate::encodings::Format::default()),
            Some(f) => {
                let found = crate::encodings::Format::by_name(f);
                if found.is_none() {
                    c.fail(
                        &format!("{key}.format"),
                        format_args!(
                            "{f:?} is not supported by this version; use {}",
                            crate::encodings::Format::NAMES
                                .iter()
                                .map(|n| format!("{n:?}"))
                                .collect::<Vec<_>>()
                                .join(" or ")
                        ),
                    );
                }
                found
            }
        };
        if let Some(list) = &s.sources {
            for n in list {
                if !names.contains(n) {
                    c.fail(
                        &format!("{key}.sources"),
                        format_args!("{n:?} is not the name of a configured source"),
                    );
                }
            }
        }
        if let (Some(kind), Some(format)) = (kind, format) {
            sinks.push(SinkConfig {
                name,
                kind,
                sources: s.sources.clone(),
                include_raw: s.include_raw.unwrap_or(true),
                format,
            });
        }
    }
    // Two file sinks on one path would each truncate the other's uncommitted tail.
    let mut paths = HashSet::new();
    for s in &sinks {
        if let SinkKind::File { path, .. } = &s.kind {
            if !paths.insert(path.clone()) {
                c.fail(
                    &format!("sinks.{}.path", s.name),
                    format_args!("{} is used by two file sinks", path.display()),
                );
            }
        }
    }
    // A source no sink takes would have its cursor advance over events delivered nowhere.
    if !sinks.is_empty() && sinks.len() == raw.sinks.len() {
        for (i, src) in sources.iter().enumerate() {
            if !sinks.iter().any(|s| s.takes(&src.name)) {
                c.fail(
                    &format!("sources[{i}]"),
                    format_args!(
                        "no sink takes the events of {:?}: add it to a sink's `sources`",
                        src.name
                    ),
                );
            }
        }
    }

    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    Ok(Config {
        path: path.to_path_buf(),
        agent: AgentConfig {
            state_path,
            listen,
            request_timeout,
            retry,
            unready_after,
        },
        sources,
        sinks,
    })
}

/// The options only `kind = "http"` takes, and whether each is set.
fn http_options(s: &RawSink) -> [(&'static str, bool); 15] {
    [
        ("url", s.url.is_some()),
        ("encoding", s.encoding.is_some()),
        ("index", s.index.is_some()),
        ("sourcetype", s.sourcetype.is_some()),
        ("host", s.host.is_some()),
        ("batch_max_events", s.batch_max_events.is_some()),
        ("batch_max_bytes", s.batch_max_bytes.is_some()),
        ("gzip", s.gzip.is_some()),
        ("headers", s.headers.is_some()),
        ("header_files", s.header_files.is_some()),
        ("timeout", s.timeout.is_some()),
        ("ca_file", s.ca_file.is_some()),
        ("client_cert", s.client_cert.is_some()),
        ("client_key", s.client_key.is_some()),
        ("insecure_skip_verify", s.insecure_skip_verify.is_some()),
    ]
}

/// Headers the HTTP sink sets itself, which `headers` must not override.
const RESERVED_HEADERS: [&str; 6] = [
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "host",
    "idempotency-key",
];

/// Validates a `kind = "http"` sink: reads its header files and checks its TLS files parse.
fn http_sink(c: &mut Check<'_>, key: &str, s: &RawSink) -> Option<HttpSinkConfig> {
    use reqwest::header::{HeaderName, HeaderValue};
    for (opt, set) in [("path", s.path.is_some()), ("fsync", s.fsync.is_some())] {
        if set {
            c.fail(&format!("{key}.{opt}"), "not an option of kind http");
        }
    }
    let url = match &s.url {
        None => {
            c.fail(
                &format!("{key}.url"),
                "missing: the receiver's URL, e.g. \"https://splunk.example.com:8088/services/collector/event\"",
            );
            None
        }
        u => c.url(&format!("{key}.url"), u),
    };
    let enc = s.encoding.as_deref().unwrap_or("ndjson");
    for (opt, set, takes) in [
        (
            "index",
            s.index.is_some(),
            matches!(enc, "splunk_hec" | "elasticsearch_bulk"),
        ),
        ("sourcetype", s.sourcetype.is_some(), enc == "splunk_hec"),
        ("host", s.host.is_some(), enc == "splunk_hec"),
    ] {
        if set && !takes {
            c.fail(
                &format!("{key}.{opt}"),
                format_args!("not an option of encoding {enc}"),
            );
        }
    }
    for (opt, v) in [
        ("index", &s.index),
        ("sourcetype", &s.sourcetype),
        ("host", &s.host),
    ] {
        if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
            c.fail(&format!("{key}.{opt}"), "is empty");
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
            None => {
                c.fail(
                    &format!("{key}.index"),
                    "missing: elasticsearch_bulk needs the index (or data stream) to create documents in",
                );
                None
            }
            Some(i)
                if i.chars().any(|ch| {
                    ch.is_uppercase() || ch.is_whitespace() || "\\/*?\"<>|,#".contains(ch)
                }) =>
            {
                c.fail(
                    &format!("{key}.index"),
                    format_args!("{i:?} is not a valid index name: lowercase, without spaces or \\/*?\"<>|,#"),
                );
                None
            }
            Some(i) => Some(HttpEncoding::ElasticsearchBulk {
                index: i.to_string(),
            }),
        },
        other => {
            c.fail(
                &format!("{key}.encoding"),
                format_args!("{other:?} is not an encoding; one of ndjson, json_array, splunk_hec, elasticsearch_bulk"),
            );
            None
        }
    };
    let mut bounded = |opt: &str, v: Option<i64>, default: usize, max: usize, what: &str| match v {
        None => default,
        Some(n) if n >= 1 && n as u64 <= max as u64 => n as usize,
        Some(n) => {
            c.fail(
                &format!("{key}.{opt}"),
                format_args!("{n} is out of range; 1 to {max} {what}"),
            );
            default
        }
    };
    let batch_max_events = bounded(
        "batch_max_events",
        s.batch_max_events,
        500,
        100_000,
        "events",
    );
    let batch_max_bytes = bounded(
        "batch_max_bytes",
        s.batch_max_bytes,
        4 << 20,
        1 << 30,
        "bytes",
    );
    let timeout = c
        .duration(&format!("{key}.timeout"), &s.timeout, true)
        .unwrap_or(Duration::from_secs(30));

    let mut headers: Vec<(String, Secret)> = Vec::new();
    let mut seen = HashSet::new();
    let inline = s
        .headers
        .iter()
        .flatten()
        .map(|(k, v)| ("headers", k, Ok(v.clone())));
    let files = s.header_files.iter().flatten().map(|(k, f)| {
        let p = c.base.join(f);
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
        let hkey = format!("{key}.{table}.{name}");
        let Ok(hname) = HeaderName::from_bytes(name.as_bytes()) else {
            c.fail(&hkey, "not a valid HTTP header name");
            continue;
        };
        if RESERVED_HEADERS.contains(&hname.as_str()) {
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

    let https = url.as_ref().is_none_or(|u| u.scheme() == "https");
    let mut tls_file = |opt: &str, v: &Option<String>| -> Option<(PathBuf, Vec<u8>)> {
        let f = v.as_deref()?;
        if !https {
            c.fail(&format!("{key}.{opt}"), "only used with an https:// url");
            return None;
        }
        let p = c.base.join(f);
        match std::fs::read(&p) {
            Ok(b) => Some((p, b)),
            Err(e) => {
                c.fail(
                    &format!("{key}.{opt}"),
                    format_args!("cannot read {}: {e}", p.display()),
                );
                None
            }
        }
    };
    let ca = tls_file("ca_file", &s.ca_file);
    let cert = tls_file("client_cert", &s.client_cert);
    let client_key = tls_file("client_key", &s.client_key);
    if let Some((p, pem)) = &ca {
        if !reqwest::Certificate::from_pem_bundle(pem).is_ok_and(|v| !v.is_empty()) {
            c.fail(
                &format!("{key}.ca_file"),
                format_args!("{} holds no PEM certificate", p.display()),
            );
        }
    }
    match (
        &cert,
        &client_key,
        s.client_cert.is_some(),
        s.client_key.is_some(),
    ) {
        (Some((_, cert_pem)), Some((_, key_pem)), ..) => {
            let mut pem = cert_pem.clone();
            pem.push(b'\n');
            pem.extend_from_slice(key_pem);
            if reqwest::Identity::from_pem(&pem).is_err() {
                c.fail(
                    &format!("{key}.client_cert"),
                    "client_cert and client_key must be a PEM certificate and its PEM private key",
                );
            }
        }
        (_, _, true, false) => c.fail(
            &format!("{key}.client_key"),
            "missing: client_cert needs client_key",
        ),
        (_, _, false, true) => c.fail(
            &format!("{key}.client_cert"),
            "missing: client_key needs client_cert",
        ),
        _ => {}
    }
    if s.insecure_skip_verify == Some(true) && !https {
        c.fail(
            &format!("{key}.insecure_skip_verify"),
            "only used with an https:// url",
        );
    }
    Some(HttpSinkConfig {
        url: url?,
        encoding: encoding?,
        batch_max_events,
        batch_max_bytes,
        gzip: s.gzip.unwrap_or(false),
        headers,
        timeout,
        ca_file: ca.map(|(p, _)| p),
        client_cert: cert.map(|(p, _)| p),
        client_key: client_key.map(|(p, _)| p),
        insecure_skip_verify: s.insecure_skip_verify.unwrap_or(false),
    })
}

fn page_size(c: &mut Check<'_>, key: &str, v: Option<i64>) -> Option<u32> {
    match v {
        None => None,
        Some(n) if (1..=1000).contains(&n) => Some(n as u32),
        Some(n) => {
            c.fail(
                key,
                format_args!("{n} is out of range; 1 to 1000 (the vendors' largest page)"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/auditship/test.toml"))
    }

    fn problems(text: &str) -> String {
        parse(text).unwrap_err().problems.join("\n")
    }

    const MINIMAL: &str = r#"
        [agent]
        state_path = "/tmp/x.db"
        [[sources]]
        name = "air"
        kind = "wasabi_air"
        url = "http://127.0.0.1:1"
        api_key = "k"
        [[sinks]]
        name = "out"
        kind = "stdout"
    "#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        let s = &c.sources[0];
        assert_eq!(s.poll_interval, Duration::from_secs(60));
        assert_eq!(s.lag, Duration::from_secs(120));
        assert_eq!(s.overlap, Duration::from_secs(900));
        assert_eq!(s.window, Duration::from_secs(3600));
        assert_eq!(s.page_size, 1000);
        assert_eq!(s.auth.api_key.as_ref().unwrap().expose(), "k");
        assert_eq!(c.agent.state_path, PathBuf::from("/tmp/x.db"));
    }

    #[test]
    fn unknown_key_is_named() {
        let p =
            problems(&MINIMAL.replace("api_key = \"k\"", "api_key = \"k\"\npol_interval = \"1s\""));
        assert!(
            p.contains("sources[0]") && p.contains("pol_interval"),
            "{p}"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let p = problems(
            r#"
            [agent]
            lag = "soon"
            page_size = 5000
            [[sources]]
            name = "A"
            kind = "wasabi_air"
            url = "ftp://x"
            start = "yesterday"
            [[sources]]
            name = "b"
            kind = "domo"
            url = "http://x"
            client_id = "c"
            time_zone = "Mars/Base"
            window = "2h"
        "#,
        );
        for want in [
            "agent.lag:",
            "agent.page_size: 5000 is out of range",
            "sources[0].name:",
            "sources[0].url:",
            "sources[0].start:",
            "sources[0].api_key: missing",
            "sources[1].client_secret: missing",
            "sources[1].time_zone:",
            "sinks: no [[sinks]]",
        ] {
            assert!(p.contains(want), "missing {want:?} in:\n{p}");
        }
    }

    #[test]
    fn duplicate_names_and_foreign_options_are_errors() {
        let dup = format!(
            "{MINIMAL}\n[[sources]]\nname = \"air\"\nkind = \"wasabi_air\"\nurl = \"http://x\"\napi_key = \"k\"\ntime_zone = \"UTC\"\n"
        );
        let p = problems(&dup);
        assert!(p.contains("sources[1].name: \"air\" is used twice"), "{p}");
        assert!(
            p.contains("sources[1].time_zone: not an option of kind wasabi_air"),
            "{p}"
        );
    }

    #[test]
    fn env_expansion_and_missing_variables() {
        std::env::set_var("AUDITSHIP_TEST_KEY", "from-env");
        let c = parse(&MINIMAL.replace("\"k\"", "\"${AUDITSHIP_TEST_KEY}\"")).unwrap();
        assert_eq!(
            c.sources[0].auth.api_key.as_ref().unwrap().expose(),
            "from-env"
        );
        let p = problems(&MINIMAL.replace("\"k\"", "\"${AUDITSHIP_TEST_UNSET_VAR}\""));
        assert!(
            p.contains(
                "sources[0].api_key: environment variable AUDITSHIP_TEST_UNSET_VAR is not set"
            ),
            "{p}"
        );
        assert_eq!(expand_str("a$${b}c$d").unwrap(), "a${b}c$d");
    }

    #[test]
    fn secret_files_are_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "s3cret\n").unwrap();
        let path = dir.path().join("a.toml");
        let text = MINIMAL.replace("api_key = \"k\"", "api_key_file = \"key\"");
        let c = Config::parse(&text, &path).unwrap();
        assert_eq!(
            c.sources[0].auth.api_key.as_ref().unwrap().expose(),
            "s3cret"
        );
        let e = Config::parse(&text.replace("\"key\"", "\"nope\""), &path).unwrap_err();
        assert!(
            e.problems[0].starts_with("sources[0].api_key_file: cannot read"),
            "{e}"
        );
        assert!(!format!("{:?}", c.sources[0].auth).contains("s3cret"));
    }

    #[test]
    fn filters_pass_through_and_reserved_ones_are_refused() {
        let c = parse(&format!(
            "{MINIMAL}\n[sources.filters]\naction_key = \"login\"\nuser_id = [\"a\", \"b\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.sources[0].filters,
            vec![
                ("action_key".to_string(), "login".to_string()),
                ("user_id".to_string(), "a".to_string()),
                ("user_id".to_string(), "b".to_string()),
            ]
        );
        let p = problems(&format!("{MINIMAL}\n[sources.filters]\npage = 3\n"));
        assert!(
            p.contains("sources[0].filters.page: is set by the agent"),
            "{p}"
        );
    }

    #[test]
    fn a_source_that_no_sink_takes_is_an_error() {
        let p = problems(&MINIMAL.replace("kind = \"stdout\"", "kind = \"stdout\"\nsources = []"));
        assert!(
            p.contains("sources[0]: no sink takes the events of \"air\""),
            "{p}"
        );
    }

    #[test]
    fn bad_toml_is_a_short_message() {
        let e = parse("[agent\nx=").unwrap_err();
        assert_eq!(e.problems.len(), 1);
        assert!(e.to_string().lines().count() <= 3, "{e}");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// `config/auditship.toml` documents every option: it must stay a valid config.
    #[test]
    fn the_annotated_example_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/auditship.toml");
        let mut text = std::fs::read_to_string(&path).unwrap();
        for secret in ["domino_api_key", "domo_client_secret"] {
            let p = dir.path().join(secret);
            std::fs::write(&p, "s3cret\n").unwrap();
            text = text.replace(
                &format!("/run/secrets/auditship/{secret}"),
                p.to_str().unwrap(),
            );
        }
        for var in [
            "DOMINO_API_KEY",
            "DOMO_CLIENT_ID",
            "AIR_API_KEY",
            "HEC_TOKEN",
        ] {
            std::env::set_var(var, "from-env");
        }
        let c = Config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.sources.len(), 4);
        assert!(c.sinks.len() >= 2);
    }
}
