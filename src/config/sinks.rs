//! `[[sinks]]`: where events go. Each entry is read and validated here; the sinks themselves
//! live in `src/sinks/`.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::file::{read_section, unknown_key};
use super::{Check, Secret};

/// `[[sinks]]`: where events go.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub path: Option<String>,
    pub fsync: Option<bool>,
    /// `file`: permissions of the file when the sink creates it, an octal string (default
    /// "0600": audit data is sensitive), whatever the umask.
    pub mode: Option<String>,
    /// `file`: rotate the file once it holds this many bytes (default: never).
    pub rotate_max_bytes: Option<i64>,
    /// `file`: rotated files kept besides the current one (default 7).
    pub rotate_keep: Option<i64>,
    pub sources: Option<Vec<String>>,
    pub include_raw: Option<bool>,
    pub format: Option<String>,
    /// Every kind: the most bytes of events waiting in the sink's queue (read from the vendors,
    /// not yet delivered), 1 MiB to 1 TiB (default 512 MiB). At the limit the sources feeding
    /// the sink stop reading until it delivers; nothing is dropped.
    pub queue_max_bytes: Option<i64>,
    /// Every kind: how long a batch smaller than the sink's batch waits for more events of its
    /// queue before it is sent (default "1s" for http and syslog, "0s" for file and stdout), so
    /// that many sources' small pages share one request. At most 1 minute.
    pub batch_max_age: Option<String>,
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

    // ---- kind = "syslog" (src/sinks/syslog.rs); with transport = "tls" it also takes
    // ---- ca_file, client_cert, client_key and insecure_skip_verify above.
    /// `syslog`: the receiver's `host:port`.
    pub address: Option<String>,
    /// `syslog`: `tcp` (RFC 6587 octet counting, default), `tls` (RFC 5425) or `udp`.
    pub transport: Option<String>,
    /// `syslog`: the facility name (default `local0`).
    pub facility: Option<String>,
    /// `syslog`: APP-NAME of every message (default `auditship`).
    pub app_name: Option<String>,
    /// `syslog`: HOSTNAME of every message (default this machine's hostname).
    pub hostname: Option<String>,
    /// `http`, `splunk_hec`: indexer acknowledgement (the token's `useACK`); a page commits
    /// only once Splunk says every batch of it is indexed (default false).
    pub hec_ack: Option<bool>,
    /// `http`, `hec_ack = true`: how long a batch may wait for its acknowledgement before it
    /// is sent again (default 60s).
    pub ack_timeout: Option<String>,
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
        /// Permissions the file is given when the sink creates it (default 0o600), rotated
        /// files included.
        mode: u32,
        /// Built-in rotation, if configured.
        rotate: Option<Rotate>,
    },
    /// POSTs batches to a SIEM or collector (`src/sinks/http.rs`).
    Http(Box<HttpSinkConfig>),
    /// Sends RFC 5424 messages to a syslog receiver (`src/sinks/syslog.rs`).
    Syslog(Box<SyslogSinkConfig>),
}

/// How a syslog sink reaches its receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTransport {
    /// TCP with RFC 6587 octet-counting framing.
    Tcp,
    /// TLS (RFC 5425) over TCP, octet-counted; the HTTP sink's TLS options.
    Tls(super::tls::TlsConfig),
    /// One datagram per message (RFC 5426): no acknowledgement, so events can be lost.
    Udp,
}

/// A validated `kind = "syslog"` sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogSinkConfig {
    /// The receiver's `host:port`, resolved when connecting.
    pub address: String,
    /// The host part of `address` (the TLS server name).
    pub host: String,
    pub transport: SyslogTransport,
    /// The facility number (0–23) in PRI.
    pub facility: u8,
    /// APP-NAME: printable ASCII, at most 48 characters.
    pub app_name: String,
    /// HOSTNAME (`None`: this machine's hostname, looked up at start).
    pub hostname: Option<String>,
}

/// Syslog facility names and numbers (RFC 5424 table 1; `security` is 13, "log audit").
pub const FACILITIES: [(&str, u8); 24] = [
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("ntp", 12),
    ("security", 13),
    ("console", 14),
    ("clock", 15),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];
/// The file sink's rotation: once the file holds `max_bytes` (checked after a commit), it is
/// renamed `PATH.N` (N its generation, counting up) and a new file is started; the oldest
/// rotated files beyond `keep` are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotate {
    /// Size at which the file is rotated (a page already written is never split).
    pub max_bytes: u64,
    /// Rotated files kept besides the current one.
    pub keep: u64,
}

/// The largest `rotate_max_bytes`: a file sink's committed length has 40 bits in the state.
pub const ROTATE_MAX_BYTES_LIMIT: u64 = (1 << 40) - 1;

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
    /// The most bytes its queue holds before its sources wait (`queue_max_bytes`).
    pub queue_max_bytes: u64,
    /// How long a small batch waits for more (`batch_max_age`, with the kind's default).
    pub batch_max_age: Duration,
}

/// `queue_max_bytes` when it is not set: at 40 events a second of about 1 KiB each (four busy
/// sources), three and a half hours of a receiver's outage.
pub const QUEUE_MAX_BYTES: u64 = 512 << 20;
/// The range of `queue_max_bytes`.
const QUEUE_MAX_BYTES_RANGE: std::ops::RangeInclusive<u64> = (1 << 20)..=(1 << 40);

impl SinkConfig {
    /// Whether events of `source` go to this sink.
    pub fn takes(&self, source: &str) -> bool {
        self.sources
            .as_ref()
            .is_none_or(|s| s.iter().any(|n| n == source))
    }
}

/// Validates every `[[sinks]]` entry; `names` are the names of the configured sources.
/// Returns the valid ones and how many entries there were.
pub(super) fn validate(
    c: &mut Check<'_>,
    raw: Vec<Value>,
    names: &HashSet<String>,
) -> (Vec<SinkConfig>, usize) {
    let raw: Vec<RawSink> = raw
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            read_section(c, &format!("sinks[{i}]"), v, |c, key, name| {
                unknown_key(c, key, name, super::file::fields::<RawSink>())
            })
        })
        .collect();
    let base = c.base;
    let mut sink_names = HashSet::new();
    let mut sinks = Vec::new();
    if raw.is_empty() {
        c.fail(
            "sinks",
            "no [[sinks]]: events would go nowhere; add e.g. [[sinks]] name = \"out\" kind = \"stdout\"",
        );
    }
    for (i, s) in raw.iter().enumerate() {
        let key = format!("sinks[{i}]");
        let name = c.name(&format!("{key}.name"), &s.name, &mut sink_names);
        let kind = match s.kind.as_deref() {
            Some("stdout") => Some(SinkKind::Stdout),
            Some("file") => match s.path.as_deref() {
                None | Some("") => {
                    c.fail(
                        &format!("{key}.path"),
                        "missing: the file to append events to",
                    );
                    None
                }
                Some(p) => {
                    let rotate = rotation(c, &key, s);
                    file_mode(c, &key, s.mode.as_deref()).map(|mode| SinkKind::File {
                        path: base.join(p),
                        fsync: s.fsync.unwrap_or(true),
                        mode,
                        rotate,
                    })
                }
            },
            Some("http") => http_sink(c, &key, s).map(|h| SinkKind::Http(Box::new(h))),
            Some("syslog") => syslog_sink(c, &key, s).map(|h| SinkKind::Syslog(Box::new(h))),
            Some(other) => {
                c.fail(
                    &format!("{key}.kind"),
                    format_args!("{other:?} is not a sink kind; one of {}", KINDS.join(", ")),
                );
                None
            }
            None => {
                c.fail(
                    &format!("{key}.kind"),
                    format_args!("missing; one of {}", KINDS.join(", ")),
                );
                None
            }
        };
        // Each kind's own options, refused by every other kind (an unknown or missing kind has
        // its one error, about `kind`). A syslog sink takes the TLS options too (checked in
        // `syslog_sink`).
        if let Some(kind) = s.kind.as_deref().filter(|k| KINDS.contains(k)) {
            let owned = (http_options(s).into_iter().map(|o| ("http", o)))
                .chain(file_options(s).into_iter().map(|o| ("file", o)))
                .chain(syslog_options(s).into_iter().map(|o| ("syslog", o)));
            for (owner, (opt, set)) in owned {
                let tls = kind == "syslog" && TLS_OPTIONS.contains(&opt);
                if set && owner != kind && !tls {
                    c.fail(
                        &format!("{key}.{opt}"),
                        format_args!("not an option of kind {kind}"),
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
        // CEF is a line of text: an HTTP body that is JSON (an array, HEC objects, `_bulk`)
        // cannot carry it.
        let enc = s.encoding.as_deref().unwrap_or("ndjson");
        if s.kind.as_deref() == Some("http")
            && s.format.as_deref() == Some("cef")
            && enc != "ndjson"
        {
            c.fail(
                &format!("{key}.format"),
                format_args!("cef writes text lines, which encoding {enc} (JSON) cannot carry; use encoding = \"ndjson\", or a syslog or file sink"),
            );
        }
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
        let queue_max_bytes = match s.queue_max_bytes {
            None => QUEUE_MAX_BYTES,
            Some(n) if n >= 0 && QUEUE_MAX_BYTES_RANGE.contains(&(n as u64)) => n as u64,
            Some(n) => {
                c.fail(
                    &format!("{key}.queue_max_bytes"),
                    format_args!(
                        "{n} is out of range; {} to {} bytes",
                        QUEUE_MAX_BYTES_RANGE.start(),
                        QUEUE_MAX_BYTES_RANGE.end()
                    ),
                );
                QUEUE_MAX_BYTES
            }
        };
        let age_key = format!("{key}.batch_max_age");
        let batch_max_age = match c.duration(&age_key, &s.batch_max_age, false) {
            Some(d) if d > Duration::from_secs(60) => {
                c.fail(&age_key, "is longer than the most, 1 minute");
                d
            }
            Some(d) => d,
            None => match s.kind.as_deref() {
                Some("http" | "syslog") => Duration::from_secs(1),
                _ => Duration::ZERO,
            },
        };
        if let (Some(kind), Some(format)) = (kind, format) {
            sinks.push(SinkConfig {
                name,
                kind,
                sources: s.sources.clone(),
                include_raw: s.include_raw.unwrap_or(true),
                format,
                queue_max_bytes,
                batch_max_age,
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
    (sinks, raw.len())
}

/// The TLS options, which `kind = "syslog"` shares with `http`.
const TLS_OPTIONS: [&str; 4] = [
    "ca_file",
    "client_cert",
    "client_key",
    "insecure_skip_verify",
];

/// The sink kinds, as `kind` names them.
const KINDS: [&str; 4] = ["stdout", "file", "http", "syslog"];

/// The options only `kind = "file"` takes, and whether each is set.
fn file_options(s: &RawSink) -> [(&'static str, bool); 5] {
    [
        ("path", s.path.is_some()),
        ("fsync", s.fsync.is_some()),
        ("mode", s.mode.is_some()),
        ("rotate_max_bytes", s.rotate_max_bytes.is_some()),
        ("rotate_keep", s.rotate_keep.is_some()),
    ]
}

/// The options only `kind = "syslog"` takes, and whether each is set.
fn syslog_options(s: &RawSink) -> [(&'static str, bool); 5] {
    [
        ("address", s.address.is_some()),
        ("transport", s.transport.is_some()),
        ("facility", s.facility.is_some()),
        ("app_name", s.app_name.is_some()),
        ("hostname", s.hostname.is_some()),
    ]
}

/// Whether `s` is printable ASCII without spaces (RFC 5424 PRINTUSASCII), 1 to `max` long.
fn printusascii(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.bytes().all(|b| (33..=126).contains(&b))
}

/// Validates a `kind = "syslog"` sink.
fn syslog_sink(c: &mut Check<'_>, key: &str, s: &RawSink) -> Option<SyslogSinkConfig> {
    let address = match s.address.as_deref() {
        None | Some("") => {
            c.fail(
                &format!("{key}.address"),
                "missing: the receiver's host:port, e.g. \"siem.example.com:6514\"",
            );
            None
        }
        Some(a) => {
            let host = a
                .rsplit_once(':')
                .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
                .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string());
            if host.is_none() {
                c.fail(
                    &format!("{key}.address"),
                    format_args!(
                        "{a:?} is not host:port (e.g. \"siem.example.com:6514\", \"[::1]:514\")"
                    ),
                );
            }
            host.map(|h| (a.to_string(), h))
        }
    };
    let tls_set = [
        s.ca_file.is_some(),
        s.client_cert.is_some(),
        s.client_key.is_some(),
        s.insecure_skip_verify.is_some(),
    ];
    let transport = match s.transport.as_deref().unwrap_or("tcp") {
        "tcp" => Some(SyslogTransport::Tcp),
        "udp" => Some(SyslogTransport::Udp),
        "tls" => {
            let tls = super::tls::validate(
                c,
                key,
                true,
                &super::tls::RawTls {
                    ca_file: s.ca_file.clone(),
                    client_cert: s.client_cert.clone(),
                    client_key: s.client_key.clone(),
                    insecure_skip_verify: s.insecure_skip_verify,
                },
            );
            Some(SyslogTransport::Tls(tls))
        }
        other => {
            c.fail(
                &format!("{key}.transport"),
                format_args!("{other:?} is not a syslog transport; one of tcp, tls, udp"),
            );
            None
        }
    };
    if !matches!(transport, Some(SyslogTransport::Tls(_)) | None) {
        for (opt, set) in TLS_OPTIONS.iter().zip(tls_set) {
            if set {
                c.fail(
                    &format!("{key}.{opt}"),
                    "only used with transport = \"tls\"",
                );
            }
        }
    }
    let facility = match s.facility.as_deref() {
        None => Some(16),
        Some(f) => {
            let n = FACILITIES.iter().find(|(n, _)| *n == f).map(|(_, v)| *v);
            if n.is_none() {
                c.fail(
                    &format!("{key}.facility"),
                    format_args!(
                        "{f:?} is not a syslog facility; one of {}",
                        FACILITIES.map(|(n, _)| n).join(", ")
                    ),
                );
            }
            n
        }
    };
    let app_name = s.app_name.clone().unwrap_or_else(|| "auditship".into());
    if !printusascii(&app_name, 48) {
        c.fail(
            &format!("{key}.app_name"),
            "must be 1 to 48 printable ASCII characters without spaces (RFC 5424 APP-NAME)",
        );
    }
    if let Some(h) = &s.hostname {
        if !printusascii(h, 255) {
            c.fail(
                &format!("{key}.hostname"),
                "must be 1 to 255 printable ASCII characters without spaces (RFC 5424 HOSTNAME)",
            );
        }
    }
    let (address, host) = address?;
    Some(SyslogSinkConfig {
        address,
        host,
        transport: transport?,
        facility: facility?,
        app_name,
        hostname: s.hostname.clone(),
    })
}

/// The file sink's `rotate_max_bytes` and `rotate_keep`.
fn rotation(c: &mut Check<'_>, key: &str, s: &RawSink) -> Option<Rotate> {
    let keep = match s.rotate_keep {
        None => 7,
        Some(n) if (1..=1024).contains(&n) => n as u64,
        Some(n) => {
            c.fail(
                &format!("{key}.rotate_keep"),
                format_args!("{n} is out of range; 1 to 1024 rotated files"),
            );
            7
        }
    };
    match s.rotate_max_bytes {
        None => {
            if s.rotate_keep.is_some() {
                c.fail(
                    &format!("{key}.rotate_keep"),
                    "needs rotate_max_bytes, the size at which the file is rotated",
                );
            }
            None
        }
        Some(n) if n >= 1 && n as u64 <= ROTATE_MAX_BYTES_LIMIT => Some(Rotate {
            max_bytes: n as u64,
            keep,
        }),
        Some(n) => {
            c.fail(
                &format!("{key}.rotate_max_bytes"),
                format_args!("{n} is out of range; 1 to {ROTATE_MAX_BYTES_LIMIT} bytes"),
            );
            None
        }
    }
}

/// The file sink's `mode`: an octal string of permission bits ("0600", "640"), at most 0777, and
/// readable and writable by the owner (the agent appends to it and truncates it).
fn file_mode(c: &mut Check<'_>, key: &str, mode: Option<&str>) -> Option<u32> {
    let Some(m) = mode else {
        return Some(0o600);
    };
    let digits = m.strip_prefix("0o").unwrap_or(m);
    match u32::from_str_radix(digits, 8) {
        Ok(v) if !digits.is_empty() && digits.len() <= 4 && v <= 0o777 && v & 0o600 == 0o600 => {
            Some(v)
        }
        Ok(v) if v <= 0o777 && !digits.is_empty() && digits.len() <= 4 => {
            c.fail(
                &format!("{key}.mode"),
                format_args!("{m:?} does not let the owner read and write the file, which the agent must; e.g. \"0600\" or \"0640\""),
            );
            None
        }
        _ => {
            c.fail(
                &format!("{key}.mode"),
                format_args!("{m:?} is not a file mode: octal permission bits as a string, at most \"0777\", e.g. \"0600\" or \"0640\""),
            );
            None
        }
    }
}

/// The options only `kind = "http"` takes, and whether each is set.
fn http_options(s: &RawSink) -> [(&'static str, bool); 17] {
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
        ("hec_ack", s.hec_ack.is_some()),
        ("ack_timeout", s.ack_timeout.is_some()),
    ]
}

/// The target an `_bulk` URL names (`/{target}/_bulk`), if any.
pub fn bulk_target(url: &Url) -> Option<&str> {
    let path = url.path().trim_end_matches('/');
    let target = path.strip_suffix("/_bulk")?.rsplit('/').next()?;
    (!target.is_empty()).then_some(target)
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
        ("hec_ack", s.hec_ack.is_some(), enc == "splunk_hec"),
        ("ack_timeout", s.ack_timeout.is_some(), enc == "splunk_hec"),
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
            // `/{target}/_bulk` names the default target itself; a bare `/_bulk` does not.
            None if url.as_ref().is_none_or(|u| bulk_target(u).is_none()) => {
                c.fail(
                    &format!("{key}.index"),
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
                    &format!("{key}.index"),
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
    let ack_timeout = c
        .duration(&format!("{key}.ack_timeout"), &s.ack_timeout, true)
        .unwrap_or(Duration::from_secs(60));
    if s.ack_timeout.is_some() && s.hec_ack != Some(true) && enc == "splunk_hec" {
        c.fail(
            &format!("{key}.ack_timeout"),
            "only used with hec_ack = true",
        );
    }
    let hec_ack = (s.hec_ack == Some(true) && enc == "splunk_hec").then_some(ack_timeout);

    let mut headers: Vec<(String, Secret)> = Vec::new();
    let mut seen = HashSet::new();
    let inline = s
        .headers
        .iter()
        .flatten()
        .map(|(k, v)| ("headers", k, Ok(v.clone())));
    let (base, read) = (c.base, c.secrets);
    let files = s.header_files.iter().flatten().map(|(k, f)| {
        if !read {
            return ("header_files", k, Ok("unread".to_string()));
        }
        let p = base.join(f);
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
            // A `${NAME}` that is not set: said already (or not wanted, without secrets).
            _ if c.has_failed(&hkey) => {}
            Ok(_) if !c.secrets => headers.push((name.clone(), Secret::new(""))),
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
    let tls = super::tls::validate(
        c,
        key,
        https,
        &super::tls::RawTls {
            ca_file: s.ca_file.clone(),
            client_cert: s.client_cert.clone(),
            client_key: s.client_key.clone(),
            insecure_skip_verify: s.insecure_skip_verify,
        },
    );
    Some(HttpSinkConfig {
        url: url?,
        encoding: encoding?,
        batch_max_events,
        batch_max_bytes,
        gzip: s.gzip.unwrap_or(false),
        headers,
        timeout,
        ca_file: tls.ca_file,
        client_cert: tls.client_cert,
        client_key: tls.client_key,
        insecure_skip_verify: tls.insecure_skip_verify,
        hec_ack,
    })
}
