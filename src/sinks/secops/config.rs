//! `kind = "secops"`: its keys, their validation (the service-account key file is read and its
//! private key parsed here, so `check` says what is wrong with it), and the plugin
//! ([`SecopsKind`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::token::ServiceAccountKey;
use super::SecopsSink;
use crate::retry::RetryConfig;
use crate::sinks::config::{SinkCheck, SinkConfig};
use crate::sinks::{Configured, Destination, OpenCx, Probe, Sink, SinkError, SinkSettings};
use crate::BoxFuture;

/// `kind = "secops"`.
pub struct SecopsKind;

/// The log type sent when `log_type` is not set: a custom log type the operator creates
/// (README "Google SecOps").
pub const DEFAULT_LOG_TYPE: &str = "AUDITSHIP";

/// Most bytes of one `logs:import` request body, and the default of `batch_max_bytes`. Google's
/// reference of `logs:import` states no request-size limit; 1 MB is the most a log may be in
/// Google's (legacy) Ingestion API, and the request size other senders of `logs:import` keep to
/// (a request over Google's limit is answered 400 and its page held).
pub const REQUEST_MAX_BYTES: usize = 1_000_000;

/// The keys of `kind = "secops"`.
#[derive(Debug, Default, Deserialize, crate::settings::Section)]
#[serde(deny_unknown_fields)]
struct Section {
    /// The Google Cloud project of the SecOps instance (its id or number).
    project: Option<String>,
    /// The instance's region (`us`, `eu`, `europe-west2`, …): the API's regional endpoint and
    /// the `locations/{region}` of every request.
    region: Option<String>,
    /// Another name of `region`, as Google's resource names say.
    location: Option<String>,
    /// The instance: the SecOps customer id (a UUID).
    instance: Option<String>,
    /// The log type the records are imported as (default `AUDITSHIP`, a custom log type).
    log_type: Option<String>,
    /// The service account's JSON key file (client_email, private_key, private_key_id,
    /// token_uri); a secret, never logged. Unset: the metadata server's identity (Workload
    /// Identity on GKE, the instance's service account on Compute Engine).
    credentials_file: Option<String>,
    /// The API's base URL (default `https://chronicle.{region}.rep.googleapis.com`); any
    /// `http(s)://host:port` for a private endpoint or a test.
    endpoint: Option<String>,
    /// The forwarder the logs are attributed to: its id, or its whole resource name.
    forwarder: Option<String>,
    /// Most bytes of one request body (default and most 1000000).
    batch_max_bytes: Option<i64>,
    /// Timeout of one request (default 30s).
    timeout: Option<String>,
    /// PEM file of CA certificates trusted besides the system's roots (a private endpoint).
    ca_file: Option<String>,
}

/// A validated `kind = "secops"` sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecopsConfig {
    /// The Google Cloud project.
    pub project: String,
    /// The region (`locations/{region}`).
    pub region: String,
    /// The instance (customer id).
    pub instance: String,
    /// The log type imported into.
    pub log_type: String,
    /// The service-account key file, as configured (for messages); `None`: the metadata
    /// server's identity.
    pub credentials_file: Option<PathBuf>,
    /// Its content; `None` without a key file, or when secrets are not read (`state`).
    pub key: Option<ServiceAccountKey>,
    /// The API's base URL.
    pub endpoint: Url,
    /// The forwarder's whole resource name, if set.
    pub forwarder: Option<String>,
    /// Most bytes of one request body.
    pub batch_max_bytes: usize,
    /// Timeout of one request.
    pub timeout: Duration,
    /// PEM CA certificates trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
}

impl SecopsConfig {
    /// `projects/{project}/locations/{region}/instances/{instance}`.
    pub fn instance_name(&self) -> String {
        format!(
            "projects/{}/locations/{}/instances/{}",
            self.project, self.region, self.instance
        )
    }

    /// The log type's resource URL; `logs:import` is under it.
    pub fn log_type_url(&self) -> String {
        format!(
            "{}/v1alpha/{}/logTypes/{}",
            self.endpoint.as_str().trim_end_matches('/'),
            self.instance_name(),
            self.log_type
        )
    }

    /// What a refusal names: the project, instance and log type.
    pub fn target(&self) -> String {
        format!(
            "project {}, region {}, instance {}, log type {}",
            self.project, self.region, self.instance, self.log_type
        )
    }
}

impl Destination for SecopsKind {
    fn kind(&self) -> &'static str {
        "secops"
    }
    fn title(&self) -> &'static str {
        "Google Security Operations (Chronicle API logs:import)"
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

impl Configured for SecopsConfig {
    fn open<'a>(
        &'a self,
        cfg: &'a SinkConfig,
        cx: OpenCx<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Sink>, SinkError>> {
        crate::sinks::open_built::<SecopsSink>(cfg, self, cx)
    }
    fn probe<'a>(&'a self, cfg: &'a SinkConfig, retry: &'a RetryConfig) -> BoxFuture<'a, Probe> {
        crate::sinks::probe_built::<SecopsSink>(cfg, self, retry)
    }
    fn take_limits(&self, _cfg: &SinkConfig) -> (u64, u64) {
        (10_000, self.batch_max_bytes as u64)
    }
}

impl crate::sinks::Reaches for SecopsSink {
    type Settings = SecopsConfig;
    fn build(
        cfg: &SinkConfig,
        settings: &SecopsConfig,
        retry: &RetryConfig,
        once: bool,
    ) -> Result<SecopsSink, SinkError> {
        let writer = crate::sinks::writer(cfg);
        SecopsSink::new(&cfg.name, settings, writer, retry, once)
    }
    fn reach(&self) -> impl std::future::Future<Output = Probe> + Send + '_ {
        self.probe()
    }
}

/// A resource id of a path segment: letters, digits, `-`, `_` and `.`.
fn segment_ok(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Validates a `kind = "secops"` sink: reads and parses its key file (unless secrets are not
/// read).
fn validate(c: &mut SinkCheck<'_, '_>, s: &Section) -> Option<SecopsConfig> {
    let required = |c: &mut SinkCheck<'_, '_>, opt: &str, v: &Option<String>, eg: &str| match v
        .as_deref()
        .map(str::trim)
    {
        None => {
            c.fail(opt, format_args!("missing: {eg}"));
            None
        }
        Some(v) if !segment_ok(v) => {
            c.fail(
                opt,
                format_args!("{v:?}: letters, digits, '-', '_' and '.' only"),
            );
            None
        }
        Some(v) => Some(v.to_string()),
    };
    let project = required(
        c,
        "project",
        &s.project,
        "the Google Cloud project of the SecOps instance",
    );
    let region = match (&s.region, &s.location) {
        (Some(_), Some(_)) => {
            c.fail(
                "location",
                "set region or location, not both (they are one key)",
            );
            None
        }
        (None, Some(_)) => required(c, "location", &s.location, ""),
        _ => required(
            c,
            "region",
            &s.region,
            "the instance's region, e.g. \"us\" or \"europe-west2\"",
        ),
    };
    let instance = required(
        c,
        "instance",
        &s.instance,
        "the SecOps customer id (SIEM Settings > Profile)",
    );
    let log_type = match &s.log_type {
        None => Some(DEFAULT_LOG_TYPE.to_string()),
        v => required(c, "log_type", v, ""),
    };
    let endpoint = match (&s.endpoint, &region) {
        (Some(_), _) => c.url("endpoint", &s.endpoint),
        (None, Some(r)) => Url::parse(&format!("https://chronicle.{r}.rep.googleapis.com")).ok(),
        (None, None) => None,
    };
    if endpoint
        .as_ref()
        .is_some_and(|u| u.query().is_some() || u.path() != "/")
    {
        c.fail("endpoint", "the API's base URL, scheme host and port only (https://chronicle.us.rep.googleapis.com)");
    }
    let forwarder = match (&s.forwarder, &project, &region, &instance) {
        (None, ..) => None,
        (Some(f), Some(p), Some(r), Some(i)) if segment_ok(f) => Some(format!(
            "projects/{p}/locations/{r}/instances/{i}/forwarders/{f}"
        )),
        (Some(f), ..) if f.starts_with("projects/") && f.contains("/forwarders/") => {
            Some(f.clone())
        }
        (Some(_), ..) => {
            c.fail(
                "forwarder",
                "the forwarder's id, or projects/…/locations/…/instances/…/forwarders/{id}",
            );
            None
        }
    };
    let batch_max_bytes = match s.batch_max_bytes {
        None => REQUEST_MAX_BYTES,
        Some(n) if n >= 512 && n as u64 <= REQUEST_MAX_BYTES as u64 => n as usize,
        Some(n) => {
            c.fail(
                "batch_max_bytes",
                format_args!("{n} is out of range; 512 to {REQUEST_MAX_BYTES} bytes"),
            );
            REQUEST_MAX_BYTES
        }
    };
    let timeout = c
        .duration("timeout", &s.timeout, true)
        .unwrap_or(Duration::from_secs(30));
    let https = endpoint.as_ref().is_none_or(|u| u.scheme() == "https");
    let tls = c.tls(https, &s.ca_file, &None, &None, None);
    // Unset: the metadata server's identity, found when the sink opens.
    let credentials_file = s.credentials_file.as_ref().map(|f| c.base().join(f));
    let key = match &credentials_file {
        Some(path) if c.secrets() => match ServiceAccountKey::read(path) {
            Ok(k) => Some(k),
            Err(e) => {
                c.fail("credentials_file", e);
                None
            }
        },
        _ => None,
    };
    if c.secrets() && credentials_file.is_some() && key.is_none() {
        return None;
    }
    Some(SecopsConfig {
        project: project?,
        region: region?,
        instance: instance?,
        log_type: log_type?,
        credentials_file,
        key,
        endpoint: endpoint?,
        forwarder: match (&s.forwarder, forwarder) {
            (Some(_), None) => return None,
            (_, f) => f,
        },
        batch_max_bytes,
        timeout,
        ca_file: tls.ca_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    const AGENT: &str = "[agent]\nstate_path = \"s.db\"\n[[sources]]\nname = \"air\"\nkind = \"wasabi_air\"\nurl = \"http://127.0.0.1:1\"\napi_key = \"k\"\n";

    /// Parses a `secops` sink with `keys`, its key file written beside the config.
    fn parse(dir: &std::path::Path, keys: &str) -> Result<crate::config::Config, String> {
        let key = serde_json::json!({
            "client_email": "a@p.iam.gserviceaccount.com",
            "private_key": include_str!("../../../tests/secops_receiver/test-key.pem"),
            "private_key_id": "k1",
            "token_uri": "https://oauth2.googleapis.com/token",
        });
        std::fs::write(dir.join("key.json"), key.to_string()).unwrap();
        crate::config::Config::parse(
            &format!("{AGENT}[[sinks]]\nname = \"g\"\nkind = \"secops\"\ncredentials_file = \"key.json\"\n{keys}"),
            &dir.join("a.toml"),
        )
        .map_err(|e| e.problems.join("\n"))
    }

    #[test]
    fn defaults_location_and_forwarder() {
        let dir = tempfile::tempdir().unwrap();
        let c = parse(
            dir.path(),
            "project = \"p\"\nlocation = \"europe-west2\"\ninstance = \"i-1\"\nforwarder = \"f1\"\n",
        )
        .unwrap();
        let crate::sinks::SinkSettings::Secops(s) = &c.sinks[0].settings else {
            panic!("not a secops sink's settings: {:?}", c.sinks[0].settings);
        };
        assert_eq!(s.region, "europe-west2");
        assert_eq!(s.log_type, DEFAULT_LOG_TYPE);
        assert_eq!(
            s.endpoint.as_str(),
            "https://chronicle.europe-west2.rep.googleapis.com/"
        );
        assert_eq!(
            s.forwarder.as_deref(),
            Some("projects/p/locations/europe-west2/instances/i-1/forwarders/f1")
        );
        assert_eq!(
            s.log_type_url(),
            "https://chronicle.europe-west2.rep.googleapis.com/v1alpha/projects/p/locations/europe-west2/instances/i-1/logTypes/AUDITSHIP"
        );
        assert_eq!(s.batch_max_bytes, REQUEST_MAX_BYTES);
        assert!(!format!("{c:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn problems_name_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = parse(
            dir.path(),
            "project = \"a/b\"\nregion = \"us\"\nlocation = \"us\"\nbatch_max_bytes = 2000000\n\
             endpoint = \"https://x.example.com/v1alpha\"\nforwarder = \"x y\"\n",
        )
        .unwrap_err();
        for want in [
            "sinks[0].project: \"a/b\": letters, digits",
            "sinks[0].location: set region or location, not both",
            "sinks[0].instance: missing",
            "sinks[0].batch_max_bytes: 2000000 is out of range",
            "sinks[0].endpoint: the API's base URL",
            "sinks[0].forwarder: the forwarder's id",
        ] {
            assert!(p.contains(want), "missing {want:?} in:\n{p}");
        }
    }

    #[test]
    fn batches_are_cut_to_the_limit_and_an_oversize_record_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let c = parse(
            dir.path(),
            "project = \"p\"\nregion = \"us\"\ninstance = \"i\"\nbatch_max_bytes = 1024\n",
        )
        .unwrap();
        let retry = c.agent.retry.clone();
        let crate::sinks::SinkSettings::Secops(s) = &c.sinks[0].settings else {
            panic!("not a secops sink's settings: {:?}", c.sinks[0].settings);
        };
        let sink =
            <SecopsSink as crate::sinks::Reaches>::build(&c.sinks[0], s, &retry, true).unwrap();
        let event = |id: &str, raw_len: usize| {
            let raw = format!("{{\"id\":\"{id}\",\"pad\":\"{}\"}}", "x".repeat(raw_len));
            let mut e = Event::standalone(
                "air",
                "wasabi_air",
                "wasabi",
                1_700_000_000_000_000_000,
                &raw,
            );
            e.set(crate::event::Field::Id, Some(id));
            e
        };
        let events: Vec<Event> = (0..10).map(|i| event(&format!("e{i}"), 50)).collect();
        let bodies = sink.bodies(&events).unwrap();
        assert!(bodies.len() > 1, "{} requests", bodies.len());
        let mut logs = 0;
        for b in &bodies {
            assert!(b.len() <= 1024, "{} bytes", b.len());
            let v: serde_json::Value = serde_json::from_slice(b).unwrap();
            logs += v["inlineSource"]["logs"].as_array().unwrap().len();
        }
        assert_eq!(logs, 10);
        let mut events = events;
        events.push(event("huge", 2000));
        match sink.bodies(&events) {
            Err(SinkError::Rejected {
                status: 413,
                detail,
                ..
            }) => {
                assert!(detail.contains("event huge of source air"), "{detail}")
            }
            other => panic!("{:?}", other.map(|b| b.len())),
        }
    }
}
