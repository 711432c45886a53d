//! `kind = "kafka"`: its keys, their validation, and the plugin ([`KafkaKind`]).

use serde::Deserialize;

use super::KafkaSink;
use crate::retry::RetryConfig;
use crate::settings::{Secret, TlsConfig};
use crate::sinks::config::{SinkCheck, SinkConfig};
use crate::sinks::{Configured, Destination, OpenCx, Probe, Sink, SinkError, SinkSettings};
use crate::BoxFuture;

/// `kind = "kafka"`.
pub struct KafkaKind;

/// The default of `message_max_bytes`: librdkafka's own default of `message.max.bytes`.
pub const MESSAGE_MAX_BYTES: usize = 1_000_000;

/// The keys of `kind = "kafka"`.
#[derive(Debug, Default, Deserialize, crate::settings::Section)]
#[serde(deny_unknown_fields)]
struct Section {
    /// The bootstrap brokers, each `host:port`: `["kafka-1:9092", "kafka-2:9092"]`.
    brokers: Option<Vec<String>>,
    /// The topic every record goes to.
    topic: Option<String>,
    /// Each record's key: `id` (default; the event's id) or `source` (the source's name, so one
    /// source's events stay in one partition, in order).
    key: Option<String>,
    /// Compression of record batches: `none` (default), `gzip`, `lz4` or `zstd`.
    compression: Option<String>,
    /// How long librdkafka keeps trying to deliver a record (`message.timeout.ms`) before the
    /// batch fails and is produced again with the agent's backoff (default "30s", at least 1s).
    message_timeout: Option<String>,
    /// Most bytes of one record, key and value and librdkafka's per-record overhead
    /// (`message.max.bytes`; default 1000000, 1000 to 1000000000). Keep it at most the brokers'
    /// and the topic's `max.message.bytes`: a larger record is held, not sent.
    message_max_bytes: Option<i64>,
    /// Connect with TLS (security protocol `SSL`, or `SASL_SSL` with SASL); default false.
    tls: Option<bool>,
    /// `tls = true`: PEM file of the CA certificates that sign the brokers' certificates
    /// (default: the system's roots).
    ca_file: Option<String>,
    /// `tls = true`: PEM client certificate for mutual TLS; needs `client_key`.
    client_cert: Option<String>,
    /// `tls = true`: PEM private key of `client_cert`.
    client_key: Option<String>,
    /// `tls = true`: do not verify the brokers' certificates (warned about at start).
    insecure_skip_verify: Option<bool>,
    /// SASL authentication: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (default none).
    sasl_mechanism: Option<String>,
    /// The SASL user name.
    sasl_username: Option<String>,
    /// The SASL password (or `sasl_password_file`, a file holding it).
    sasl_password: Option<crate::settings::SecretText>,
    /// A file holding the SASL password (one trailing newline trimmed).
    sasl_password_file: Option<crate::settings::SecretFile>,
}

/// The TLS options, which only `tls = true` takes.
const TLS_OPTIONS: [&str; 4] = [
    "ca_file",
    "client_cert",
    "client_key",
    "insecure_skip_verify",
];

/// The SASL mechanisms librdkafka implements without a system library (GSSAPI would need
/// Cyrus SASL; OAUTHBEARER an identity provider).
pub const SASL_MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// The record key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyBy {
    /// The event's id.
    Id,
    /// The source's name.
    Source,
}

/// SASL credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct Sasl {
    pub mechanism: &'static str,
    pub username: String,
    pub password: Secret,
}

/// A validated `kind = "kafka"` sink.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSinkConfig {
    /// `bootstrap.servers`: the brokers joined with commas.
    pub brokers: String,
    pub topic: String,
    pub key: KeyBy,
    /// librdkafka's `compression.codec`: `none`, `gzip`, `lz4` or `zstd`.
    pub compression: &'static str,
    /// librdkafka's `message.timeout.ms`.
    pub message_timeout: std::time::Duration,
    /// librdkafka's `message.max.bytes`: the most a record may be.
    pub message_max_bytes: usize,
    /// TLS, if `tls = true`.
    pub tls: Option<TlsConfig>,
    pub sasl: Option<Sasl>,
}

impl KafkaSinkConfig {
    /// librdkafka's `security.protocol`.
    pub fn security_protocol(&self) -> &'static str {
        match (&self.tls, &self.sasl) {
            (None, None) => "plaintext",
            (Some(_), None) => "ssl",
            (None, Some(_)) => "sasl_plaintext",
            (Some(_), Some(_)) => "sasl_ssl",
        }
    }
}

impl Destination for KafkaKind {
    fn kind(&self) -> &'static str {
        "kafka"
    }
    fn title(&self) -> &'static str {
        "a Kafka topic (idempotent producer, acks = all)"
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
    fn batch_max_age(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }
}

impl Configured for KafkaSinkConfig {
    fn open<'a>(
        &'a self,
        cfg: &'a SinkConfig,
        cx: OpenCx<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Sink>, SinkError>> {
        Box::pin(async move {
            let sink = KafkaSink::new(
                &cfg.name,
                self,
                crate::sinks::writer(cfg),
                cx.retry,
                cx.once,
            )?;
            Ok(Box::new(sink) as Box<dyn Sink>)
        })
    }
    fn probe<'a>(&'a self, cfg: &'a SinkConfig, _retry: &'a RetryConfig) -> BoxFuture<'a, Probe> {
        Box::pin(super::probe(&cfg.name, self))
    }
    fn warnings(&self, _cfg: &SinkConfig) -> Vec<String> {
        match &self.sasl {
            Some(s) if s.mechanism == "PLAIN" && self.tls.is_none() => vec![
                "sasl_mechanism = \"PLAIN\" without tls = true: the password goes out in clear; \
                 set tls = true or use SCRAM"
                    .to_string(),
            ],
            _ => Vec::new(),
        }
    }
}

/// Whether `b` is `host:port` with a port above zero.
fn host_port(b: &str) -> bool {
    b.rsplit_once(':').is_some_and(|(h, p)| {
        !h.is_empty() && !h.contains(',') && p.parse::<u16>().is_ok_and(|p| p > 0)
    })
}

/// Validates a `kind = "kafka"` sink's keys.
fn validate(c: &mut SinkCheck<'_, '_>, s: &Section) -> Option<KafkaSinkConfig> {
    let brokers = match s.brokers.as_deref() {
        None | Some([]) => {
            c.fail(
                "brokers",
                "missing: the bootstrap brokers, e.g. [\"kafka-1.example.com:9092\"]",
            );
            None
        }
        Some(list) => {
            let bad: Vec<&String> = list.iter().filter(|b| !host_port(b)).collect();
            if let Some(b) = bad.first() {
                c.fail(
                    "brokers",
                    format_args!("{b:?} is not host:port (e.g. \"kafka-1.example.com:9092\")"),
                );
                None
            } else {
                Some(list.join(","))
            }
        }
    };
    let topic = match s.topic.as_deref() {
        None | Some("") => {
            c.fail(
                "topic",
                "missing: the topic to produce to, e.g. \"audit-events\"",
            );
            None
        }
        // Kafka's rule for topic names.
        Some(t)
            if t.len() > 249
                || t == "."
                || t == ".."
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) =>
        {
            c.fail(
                "topic",
                format_args!(
                    "{t:?} is not a Kafka topic name: 1 to 249 of a-z, A-Z, 0-9, '.', '_', '-'"
                ),
            );
            None
        }
        Some(t) => Some(t.to_string()),
    };
    let key = match s.key.as_deref().unwrap_or("id") {
        "id" => Some(KeyBy::Id),
        "source" => Some(KeyBy::Source),
        other => {
            c.fail(
                "key",
                format_args!("{other:?} is not a record key; one of id, source"),
            );
            None
        }
    };
    let compression = match s.compression.as_deref().unwrap_or("none") {
        "none" => Some("none"),
        "gzip" => Some("gzip"),
        "lz4" => Some("lz4"),
        "zstd" => Some("zstd"),
        other => {
            c.fail(
                "compression",
                format_args!("{other:?} is not a compression; one of none, gzip, lz4, zstd"),
            );
            None
        }
    };
    let message_timeout = match c.duration("message_timeout", &s.message_timeout, true) {
        None if s.message_timeout.is_none() => Some(std::time::Duration::from_secs(30)),
        Some(d)
            if d < std::time::Duration::from_secs(1)
                || d > std::time::Duration::from_secs(3600) =>
        {
            c.fail("message_timeout", "must be 1s to 1h");
            None
        }
        d => d,
    };
    let message_max_bytes = match s.message_max_bytes {
        None => Some(MESSAGE_MAX_BYTES),
        Some(n) if (1000..=1_000_000_000).contains(&n) => Some(n as usize),
        Some(n) => {
            c.fail(
                "message_max_bytes",
                format_args!("{n} is out of range; 1000 to 1000000000 bytes"),
            );
            None
        }
    };
    let tls = if s.tls == Some(true) {
        Some(c.tls(
            true,
            &s.ca_file,
            &s.client_cert,
            &s.client_key,
            s.insecure_skip_verify,
        ))
    } else {
        let set = [
            s.ca_file.is_some(),
            s.client_cert.is_some(),
            s.client_key.is_some(),
            s.insecure_skip_verify.is_some(),
        ];
        for (opt, set) in TLS_OPTIONS.iter().zip(set) {
            if set {
                c.fail(opt, "only used with tls = true");
            }
        }
        None
    };
    let sasl = validate_sasl(c, s);
    Some(KafkaSinkConfig {
        brokers: brokers?,
        topic: topic?,
        key: key?,
        compression: compression?,
        message_timeout: message_timeout?,
        message_max_bytes: message_max_bytes?,
        tls,
        sasl: sasl?,
    })
}

/// The SASL keys: all three or none. `None` when they cannot be used (said on `c`).
fn validate_sasl(c: &mut SinkCheck<'_, '_>, s: &Section) -> Option<Option<Sasl>> {
    let Some(m) = s.sasl_mechanism.as_deref() else {
        let mut ok = true;
        for (opt, set) in [
            ("sasl_username", s.sasl_username.is_some()),
            ("sasl_password", s.sasl_password.is_some()),
            ("sasl_password_file", s.sasl_password_file.is_some()),
        ] {
            if set {
                c.fail(opt, "only used with sasl_mechanism");
                ok = false;
            }
        }
        return ok.then_some(None);
    };
    let mechanism = SASL_MECHANISMS.iter().find(|x| **x == m).copied();
    if mechanism.is_none() {
        c.fail(
            "sasl_mechanism",
            format_args!(
                "{m:?} is not a SASL mechanism; one of {}",
                SASL_MECHANISMS.join(", ")
            ),
        );
    }
    let username = match s.sasl_username.as_deref() {
        None | Some("") => {
            c.fail("sasl_username", "missing: the SASL user name");
            None
        }
        Some(u) => Some(u.to_string()),
    };
    let password = c.secret("sasl_password", &s.sasl_password, &s.sasl_password_file);
    if password.is_absent() {
        c.fail(
            "sasl_password",
            "missing: the SASL password (or sasl_password_file, a file holding it)",
        );
    }
    Some(Some(Sasl {
        mechanism: mechanism?,
        username: username?,
        password: password.get()?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_are_host_and_port() {
        assert!(host_port("kafka-1:9092"));
        assert!(host_port("[::1]:9092"));
        assert!(!host_port("kafka-1"));
        assert!(!host_port(":9092"));
        assert!(!host_port("a:0"));
        assert!(!host_port("a:9092,b:9092"));
    }
}
