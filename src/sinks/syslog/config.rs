//! `kind = "syslog"`: its keys, their validation, and the plugin ([`SyslogKind`]).

use serde::Deserialize;

use super::SyslogSink;
use crate::retry::RetryConfig;
use crate::settings::TlsConfig;
use crate::sinks::config::{SinkCheck, SinkConfig};
use crate::sinks::{Configured, Destination, OpenCx, Probe, Sink, SinkError, SinkSettings};
use crate::BoxFuture;

/// `kind = "syslog"`.
pub struct SyslogKind;

/// The keys of `kind = "syslog"`.
#[derive(Debug, Default, Deserialize, crate::settings::Section)]
#[serde(deny_unknown_fields)]
struct Section {
    /// The receiver's `host:port`.
    address: Option<String>,
    /// `tcp` (RFC 6587 octet counting, default), `tls` (RFC 5425) or `udp`.
    transport: Option<String>,
    /// The facility name (default `local0`).
    facility: Option<String>,
    /// APP-NAME of every message (default `auditship`).
    app_name: Option<String>,
    /// HOSTNAME of every message (default this machine's hostname).
    hostname: Option<String>,
    /// `transport = "tls"`: PEM file of CA certificates trusted besides the system's roots.
    ca_file: Option<String>,
    /// `transport = "tls"`: PEM client certificate (chain) for mutual TLS; needs `client_key`.
    client_cert: Option<String>,
    /// `transport = "tls"`: PEM private key of `client_cert`.
    client_key: Option<String>,
    /// `transport = "tls"`: do not verify the receiver's certificate (warned about at start).
    insecure_skip_verify: Option<bool>,
}

/// The TLS options, which only `transport = "tls"` takes.
const TLS_OPTIONS: [&str; 4] = [
    "ca_file",
    "client_cert",
    "client_key",
    "insecure_skip_verify",
];

/// How a syslog sink reaches its receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTransport {
    /// TCP with RFC 6587 octet-counting framing.
    Tcp,
    /// TLS (RFC 5425) over TCP, octet-counted; the HTTP sink's TLS options.
    Tls(TlsConfig),
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

impl Destination for SyslogKind {
    fn kind(&self) -> &'static str {
        "syslog"
    }
    fn title(&self) -> &'static str {
        "a syslog receiver (RFC 5424 over TCP, TLS or UDP)"
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

impl Configured for SyslogSinkConfig {
    fn open<'a>(
        &'a self,
        cfg: &'a SinkConfig,
        cx: OpenCx<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Sink>, SinkError>> {
        crate::sinks::open_built::<SyslogSink>(cfg, self, cx)
    }
    fn probe<'a>(&'a self, cfg: &'a SinkConfig, retry: &'a RetryConfig) -> BoxFuture<'a, Probe> {
        crate::sinks::probe_built::<SyslogSink>(cfg, self, retry)
    }
}

/// Whether `s` is printable ASCII without spaces (RFC 5424 PRINTUSASCII), 1 to `max` long.
fn printusascii(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.bytes().all(|b| (33..=126).contains(&b))
}

/// Validates a `kind = "syslog"` sink's keys.
fn validate(c: &mut SinkCheck<'_, '_>, s: &Section) -> Option<SyslogSinkConfig> {
    let address = match s.address.as_deref() {
        None | Some("") => {
            c.fail(
                "address",
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
                    "address",
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
            let tls = c.tls(
                true,
                &s.ca_file,
                &s.client_cert,
                &s.client_key,
                s.insecure_skip_verify,
            );
            Some(SyslogTransport::Tls(tls))
        }
        other => {
            c.fail(
                "transport",
                format_args!("{other:?} is not a syslog transport; one of tcp, tls, udp"),
            );
            None
        }
    };
    if !matches!(transport, Some(SyslogTransport::Tls(_)) | None) {
        for (opt, set) in TLS_OPTIONS.iter().zip(tls_set) {
            if set {
                c.fail(opt, "only used with transport = \"tls\"");
            }
        }
    }
    let facility = match s.facility.as_deref() {
        None => Some(16),
        Some(f) => {
            let n = FACILITIES.iter().find(|(n, _)| *n == f).map(|(_, v)| *v);
            if n.is_none() {
                c.fail(
                    "facility",
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
            "app_name",
            "must be 1 to 48 printable ASCII characters without spaces (RFC 5424 APP-NAME)",
        );
    }
    if let Some(h) = &s.hostname {
        if !printusascii(h, 255) {
            c.fail(
                "hostname",
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

impl crate::sinks::Reaches for SyslogSink {
    type Settings = SyslogSinkConfig;
    fn build(
        cfg: &SinkConfig,
        settings: &SyslogSinkConfig,
        retry: &RetryConfig,
        once: bool,
    ) -> Result<SyslogSink, SinkError> {
        SyslogSink::new(&cfg.name, settings, crate::sinks::writer(cfg), retry, once)
    }
    async fn reach(&self) -> Probe {
        match self.probe().await {
            Ok(how) => Probe {
                ok: true,
                said: how.into(),
            },
            Err(e) => Probe {
                ok: false,
                said: format!("cannot reach {}: {e}", self.address()),
            },
        }
    }
}
