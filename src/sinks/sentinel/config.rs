//! `kind = "sentinel"`: its keys, their validation, and the plugin ([`SentinelKind`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::{SentinelSink, MAX_REQUEST_BYTES};
use crate::retry::RetryConfig;
use crate::settings::Secret;
use crate::sinks::config::{SinkCheck, SinkConfig};
use crate::sinks::{Configured, Destination, OpenCx, Probe, Sink, SinkError, SinkSettings};
use crate::BoxFuture;

/// `kind = "sentinel"`.
pub struct SentinelKind;

/// The keys of `kind = "sentinel"`.
#[derive(Debug, Default, Deserialize, crate::settings::Section)]
#[serde(deny_unknown_fields)]
struct Section {
    /// The data collection endpoint's logs ingestion URL (or the DCR's own logs ingestion
    /// endpoint), e.g. `https://my-dce-abcd.westeurope-1.ingest.monitor.azure.com`.
    endpoint: Option<String>,
    /// The DCR's immutable id, `dcr-` and 32 hex digits.
    dcr_immutable_id: Option<String>,
    /// The DCR's input stream, e.g. `Custom-AuditShip_CL`.
    stream: Option<String>,
    /// The Microsoft Entra tenant (directory) id of the app registration.
    tenant_id: Option<String>,
    /// The app registration's application (client) id.
    client_id: Option<String>,
    /// The app's client secret (a secret); or `client_secret_file`.
    client_secret: Option<crate::settings::SecretText>,
    /// A file holding the client secret (one trailing newline trimmed).
    client_secret_file: Option<crate::settings::SecretFile>,
    /// A PEM file holding a client certificate registered on the app and its RSA private key
    /// (a signed JWT client assertion is sent instead of a secret).
    client_certificate_file: Option<String>,
    /// A workload identity's federated token file (AKS); default `$AZURE_FEDERATED_TOKEN_FILE`
    /// when neither client secret key is set.
    federated_token_file: Option<String>,
    /// The Entra ID authority (default `https://login.microsoftonline.com`; sovereign clouds
    /// and tests set their own).
    authority: Option<String>,
    /// gzip request bodies (default true).
    gzip: Option<bool>,
    /// Timeout of one request (default 30s).
    timeout: Option<String>,
    /// PEM file of CA certificates trusted besides the system's roots.
    ca_file: Option<String>,
}

/// How the sink proves who it is to Entra ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// The app's client secret.
    Secret(Secret),
    /// A PEM file with a client certificate and its key, for signed client assertions.
    Certificate(PathBuf),
    /// A federated token file, read at each token request (the kubelet rotates it).
    Federated(PathBuf),
}

/// A validated `kind = "sentinel"` sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    /// `{endpoint}/dataCollectionRules/{dcr}/streams/{stream}?api-version=2023-01-01`.
    pub ingest_url: Url,
    /// The DCR's immutable id, for messages.
    pub dcr: String,
    /// The stream, for messages.
    pub stream: String,
    /// `{authority}/{tenant_id}/oauth2/v2.0/token`.
    pub token_url: Url,
    /// The app's client id.
    pub client_id: String,
    /// Its credential.
    pub credential: Credential,
    /// Compress bodies (`Content-Encoding: gzip`); the size limit is on the body before.
    pub gzip: bool,
    /// Timeout of one request.
    pub timeout: Duration,
    /// PEM CA certificates trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
}

/// The API version of the Logs Ingestion API this sink speaks.
pub const API_VERSION: &str = "2023-01-01";

impl Destination for SentinelKind {
    fn kind(&self) -> &'static str {
        "sentinel"
    }
    fn title(&self) -> &'static str {
        "Microsoft Sentinel / Azure Monitor Logs Ingestion API (a DCR stream)"
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

impl Configured for SentinelConfig {
    fn open<'a>(
        &'a self,
        cfg: &'a SinkConfig,
        cx: OpenCx<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Sink>, SinkError>> {
        crate::sinks::open_built::<SentinelSink>(cfg, self, cx)
    }
    fn probe<'a>(&'a self, cfg: &'a SinkConfig, retry: &'a RetryConfig) -> BoxFuture<'a, Probe> {
        crate::sinks::probe_built::<SentinelSink>(cfg, self, retry)
    }
    fn take_limits(&self, _cfg: &SinkConfig) -> (u64, u64) {
        // About one request's worth: a delivery that fails half-way sends again only what one
        // request held (the API has no idempotency key).
        (10_000, MAX_REQUEST_BYTES as u64)
    }
    fn warnings(&self, _cfg: &SinkConfig) -> Vec<String> {
        [("endpoint", &self.ingest_url), ("authority", &self.token_url)]
            .iter()
            .filter(|(_, u)| u.scheme() == "http")
            .map(|(k, _)| {
                format!("{k} is plain http: the bearer token (or the client secret) goes out in clear; use https")
            })
            .collect()
    }
}

/// Validates a `kind = "sentinel"` sink, reading its secret file.
fn validate(c: &mut SinkCheck<'_, '_>, s: &Section) -> Option<SentinelConfig> {
    if c.format() == Some("cef") {
        c.fail(
            "format",
            "cef writes text lines, which a DCR stream (JSON records) cannot take; use native, ocsf or ecs",
        );
    }
    let required = |c: &mut SinkCheck<'_, '_>, opt: &str, v: &Option<String>, what: &str| match v
        .as_deref()
        .map(str::trim)
    {
        None => {
            c.fail(opt, format_args!("missing: {what}"));
            None
        }
        Some("") => {
            c.fail(opt, "is empty");
            None
        }
        Some(v) => Some(v.to_string()),
    };
    let endpoint = match &s.endpoint {
        None => {
            c.fail("endpoint", "missing: the data collection endpoint's logs ingestion URL, e.g. \"https://my-dce-abcd.westeurope-1.ingest.monitor.azure.com\"");
            None
        }
        e => c.url("endpoint", e),
    };
    let dcr = required(
        c,
        "dcr_immutable_id",
        &s.dcr_immutable_id,
        "the DCR's immutable id (\"dcr-…\", on the DCR's JSON view)",
    );
    let dcr = dcr.filter(|d| {
        let ok = d
            .strip_prefix("dcr-")
            .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok {
            c.fail("dcr_immutable_id", format_args!("{d:?} is not a DCR immutable id: \"dcr-\" and 32 hex digits (the DCR's JSON view shows it as immutableId)"));
        }
        ok
    });
    let stream = required(
        c,
        "stream",
        &s.stream,
        "the DCR's input stream, e.g. \"Custom-AuditShip_CL\"",
    );
    let stream = stream.filter(|st| {
        let ok = (st.starts_with("Custom-") || st.starts_with("Microsoft-"))
            && st.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        if !ok {
            c.fail("stream", format_args!("{st:?} is not a stream name: \"Custom-\" (or \"Microsoft-\") and letters, digits, _ or -"));
        }
        ok
    });
    let tenant = required(
        c,
        "tenant_id",
        &s.tenant_id,
        "the Entra tenant (directory) id",
    );
    let tenant = tenant.filter(|t| {
        let ok = t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
        if !ok {
            c.fail("tenant_id", "is not a tenant id (a GUID or a domain name)");
        }
        ok
    });
    let client_id = required(
        c,
        "client_id",
        &s.client_id,
        "the app registration's application (client) id",
    );
    let authority = match &s.authority {
        None => Some(Url::parse("https://login.microsoftonline.com").expect("a valid URL")),
        a => c.url("authority", a),
    };
    let secret = c.secret("client_secret", &s.client_secret, &s.client_secret_file);
    let certificate = s.client_certificate_file.clone();
    let federated = s.federated_token_file.clone().or_else(|| {
        (secret.is_absent() && certificate.is_none())
            .then(|| std::env::var("AZURE_FEDERATED_TOKEN_FILE").ok())
            .flatten()
            .filter(|f| !f.is_empty())
    });
    let given = [
        (!secret.is_absent()).then_some("client_secret"),
        certificate.as_ref().map(|_| "client_certificate_file"),
        s.federated_token_file
            .as_ref()
            .map(|_| "federated_token_file"),
    ];
    let given: Vec<&str> = given.into_iter().flatten().collect();
    let credential = if given.len() > 1 {
        c.fail(
            given[1],
            format_args!("set one credential, not both {} and {}", given[0], given[1]),
        );
        None
    } else if let Some(f) = certificate {
        let p = c.base().join(f);
        if c.secrets() {
            if let Err(e) = super::cert::Signer::load(&p) {
                c.fail("client_certificate_file", e);
            }
        }
        Some(Credential::Certificate(p))
    } else if let Some(f) = federated {
        let p = c.base().join(f);
        if c.secrets() && std::fs::metadata(&p).is_err() {
            c.fail(
                "federated_token_file",
                format_args!("cannot read {}", p.display()),
            );
        }
        Some(Credential::Federated(p))
    } else if secret.is_absent() {
        c.fail("client_secret", "missing: a credential: client_secret, client_secret_file, client_certificate_file or federated_token_file (or AZURE_FEDERATED_TOKEN_FILE in the environment)");
        None
    } else {
        secret.get().map(Credential::Secret)
    };
    let timeout = c
        .duration("timeout", &s.timeout, true)
        .unwrap_or(Duration::from_secs(30));
    let https = endpoint.as_ref().is_none_or(|u| u.scheme() == "https");
    let tls = c.tls(https, &s.ca_file, &None, &None, None);

    let (endpoint, dcr, stream) = (endpoint?, dcr?, stream?);
    let mut ingest_url = endpoint.clone();
    let base = endpoint.path().trim_end_matches('/');
    ingest_url.set_path(&format!(
        "{base}/dataCollectionRules/{dcr}/streams/{stream}"
    ));
    ingest_url.set_query(Some(&format!("api-version={API_VERSION}")));
    let authority = authority?;
    let mut token_url = authority.clone();
    let base = authority.path().trim_end_matches('/');
    token_url.set_path(&format!("{base}/{}/oauth2/v2.0/token", tenant?));
    token_url.set_query(None);
    Some(SentinelConfig {
        ingest_url,
        dcr,
        stream,
        token_url,
        client_id: client_id?,
        credential: credential?,
        gzip: s.gzip.unwrap_or(true),
        timeout,
        ca_file: tls.ca_file,
    })
}

impl crate::sinks::Reaches for SentinelSink {
    type Settings = SentinelConfig;
    fn build(
        cfg: &SinkConfig,
        settings: &SentinelConfig,
        retry: &RetryConfig,
        once: bool,
    ) -> Result<SentinelSink, SinkError> {
        SentinelSink::new(&cfg.name, settings, crate::sinks::writer(cfg), retry, once)
    }
    fn reach(&self) -> impl std::future::Future<Output = Probe> + Send + '_ {
        self.probe()
    }
}
