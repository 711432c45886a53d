//! `kind = "s3"`: its keys, their validation, and the plugin ([`S3Kind`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::creds::{AssumeRole, Base};
use super::{Layout, ObjectFormat, S3Sink, SecurityLake, SECURITY_LAKE_SOURCES};
use crate::retry::RetryConfig;
use crate::sinks::config::{SinkCheck, SinkConfig};
use crate::sinks::{Configured, Destination, OpenCx, Probe, Sink, SinkError, SinkSettings};
use crate::BoxFuture;

/// `kind = "s3"`.
pub struct S3Kind;

/// The keys of `kind = "s3"`.
#[derive(Debug, Default, Deserialize, crate::settings::Section)]
#[serde(deny_unknown_fields)]
struct Section {
    /// The bucket.
    bucket: Option<String>,
    /// Prepended to every key (e.g. `"audit/"`; default none).
    prefix: Option<String>,
    /// The bucket's region (default `$AWS_REGION`, `$AWS_DEFAULT_REGION`, or `us-east-1` with
    /// an `endpoint`).
    region: Option<String>,
    /// An S3-compatible service's URL (Wasabi, MinIO, …); default AWS's
    /// `https://s3.{region}.amazonaws.com`.
    endpoint: Option<String>,
    /// Address the bucket in the path (`{endpoint}/{bucket}/{key}`), not the host name
    /// (default false; MinIO and most local stores want true).
    force_path_style: Option<bool>,
    /// An access key id; without it the standard AWS chain is used.
    access_key_id: Option<String>,
    /// Its secret (a secret); or `secret_access_key_file`.
    secret_access_key: Option<crate::settings::SecretText>,
    secret_access_key_file: Option<crate::settings::SecretFile>,
    /// A session token of temporary keys (a secret); or `session_token_file`.
    session_token: Option<crate::settings::SecretText>,
    session_token_file: Option<crate::settings::SecretFile>,
    /// A role to assume (STS AssumeRole) with the credentials found.
    role_arn: Option<String>,
    /// The external id the role's trust policy asks for.
    external_id: Option<String>,
    /// STS's URL (default `https://sts.{region}.amazonaws.com`).
    sts_endpoint: Option<String>,
    /// `ndjson_gzip` (default) or `parquet`.
    object_format: Option<String>,
    /// `partitioned` (default) or `security_lake`.
    layout: Option<String>,
    /// Security Lake: the account id (or external id) the custom sources were made for.
    account_id: Option<String>,
    /// Security Lake: the custom source of each OCSF class, `{ 3002 = "name", … }`.
    security_lake_sources: Option<std::collections::BTreeMap<String, String>>,
    /// Most bytes of events (as queued, before compression) in one object (default 16 MiB).
    max_object_bytes: Option<i64>,
    /// Longest an event waits in the sink's queue before its object is written (default "5m").
    max_object_age: Option<String>,
    /// Objects larger than this (compressed) go up as a multipart upload of parts this size
    /// (default 16 MiB; 5 MiB to 5 GiB).
    part_bytes: Option<i64>,
    /// Timeout of one request (default 60s).
    timeout: Option<String>,
    /// PEM file of CA certificates trusted besides the system's roots.
    ca_file: Option<String>,
}

/// A validated `kind = "s3"` sink.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Config {
    pub bucket: String,
    pub prefix: String,
    pub region: String,
    /// The service's URL (AWS's regional endpoint unless configured).
    pub endpoint: Url,
    pub path_style: bool,
    /// Where the credentials come from.
    pub base: Base,
    pub assume: Option<AssumeRole>,
    pub sts: Url,
    pub object_format: ObjectFormat,
    pub layout: Layout,
    pub max_object_bytes: u64,
    pub max_object_age: Duration,
    pub part_bytes: usize,
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
}

/// `max_object_bytes` when it is not set.
pub const MAX_OBJECT_BYTES: u64 = 16 << 20;
/// Its range: from 1 MiB; at most 1 GiB (a batch is held in memory while it is written).
const MAX_OBJECT_BYTES_RANGE: std::ops::RangeInclusive<u64> = (1 << 20)..=(1 << 30);
/// `max_object_age` when it is not set.
pub const MAX_OBJECT_AGE: Duration = Duration::from_secs(300);
/// `part_bytes` when it is not set, and its range (S3's smallest part but the last, and its largest).
pub const PART_BYTES: usize = 16 << 20;
const PART_BYTES_RANGE: std::ops::RangeInclusive<u64> = (5 << 20)..=(5 << 30);

impl Destination for S3Kind {
    fn kind(&self) -> &'static str {
        "s3"
    }
    fn title(&self) -> &'static str {
        "S3-compatible object storage (AWS S3, Wasabi, MinIO, …) and Amazon Security Lake: gzip NDJSON or Parquet objects"
    }
    fn options(&self) -> &'static [&'static str] {
        <Section as crate::settings::Section>::KEYS
    }
    fn secrets(&self) -> &'static [&'static str] {
        <Section as crate::settings::Section>::SECRETS
    }
    fn settings(&self, c: &mut SinkCheck<'_, '_>) -> Option<SinkSettings> {
        let s: Section = c.section();
        validate(c, &s, |k| std::env::var(k).ok()).map(Into::into)
    }
    fn batch_max_age(&self) -> Duration {
        MAX_OBJECT_AGE
    }
    fn batch_max_age_key(&self) -> Option<&'static str> {
        Some("max_object_age")
    }
}

impl Configured for S3Config {
    fn open<'a>(
        &'a self,
        cfg: &'a SinkConfig,
        cx: OpenCx<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Sink>, SinkError>> {
        crate::sinks::open_built::<S3Sink>(cfg, self, cx)
    }
    fn probe<'a>(&'a self, cfg: &'a SinkConfig, retry: &'a RetryConfig) -> BoxFuture<'a, Probe> {
        crate::sinks::probe_built::<S3Sink>(cfg, self, retry)
    }
    fn own_batch_max_age(&self) -> Option<Duration> {
        Some(self.max_object_age)
    }
    fn take_limits(&self, cfg: &SinkConfig) -> (u64, u64) {
        // An object's worth of the queue: each delivery writes its objects whole, and the
        // batch leaves the queue once S3 has them all.
        (u64::MAX, object_bytes(self, cfg))
    }
    fn warnings(&self, cfg: &SinkConfig) -> Vec<String> {
        let mut w = Vec::new();
        if self.max_object_bytes > object_bytes(self, cfg) {
            w.push(format!(
                "max_object_bytes ({}) is more than half of queue_max_bytes ({}): objects are cut at {} bytes, so that the queue does not fill before an object is written",
                self.max_object_bytes,
                cfg.queue_max_bytes,
                object_bytes(self, cfg)
            ));
        }
        if matches!(self.layout, Layout::SecurityLake(_)) && self.max_object_age < MAX_OBJECT_AGE {
            w.push(format!(
                "max_object_age ({}) is under 5 minutes: Security Lake asks a custom source for objects every 5 minutes to 1 day (more often only when they are over 256 MB)",
                humantime::format_duration(self.max_object_age)
            ));
        }
        if self.endpoint.scheme() == "http" {
            w.push("endpoint is plain http: the events go out in clear (the signature keeps the secret key off the wire, not the data); use https".to_string());
        }
        w
    }
}

/// Most bytes of queued events in one batch: `max_object_bytes`, but at most half the queue,
/// so that the sources never wait for room while the sink waits for a full object.
fn object_bytes(s: &S3Config, cfg: &SinkConfig) -> u64 {
    s.max_object_bytes.min(cfg.queue_max_bytes / 2)
}

/// Validates a `kind = "s3"` sink; `env` reads the environment (the region's and the
/// credential chain's variables).
fn validate(
    c: &mut SinkCheck<'_, '_>,
    s: &Section,
    env: impl Fn(&str) -> Option<String>,
) -> Option<S3Config> {
    if c.format() == Some("cef") {
        c.fail(
            "format",
            "cef writes text lines, which neither an NDJSON nor a Parquet object can hold; use native, ocsf or ecs",
        );
    }
    let bucket = match s.bucket.as_deref().map(str::trim) {
        None => {
            c.fail("bucket", "missing: the bucket's name");
            None
        }
        Some(b) if valid_bucket(b) => Some(b.to_string()),
        Some(b) => {
            c.fail("bucket", format_args!("{b:?} is not a bucket name: 3 to 63 lower-case letters, digits, dots and hyphens, starting and ending with a letter or digit"));
            None
        }
    };
    let prefix = s.prefix.clone().unwrap_or_default();
    if prefix.starts_with('/')
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!-_.*'()/=".contains(&b))
    {
        c.fail("prefix", format_args!("{prefix:?}: use letters, digits and !-_.*'()/= only (S3's safe characters), not starting with /"));
    }
    let endpoint = match &s.endpoint {
        None => None,
        e => c.url("endpoint", e),
    };
    let region = s
        .region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .filter(|r| !r.trim().is_empty())
        .or_else(|| s.endpoint.as_ref().map(|_| "us-east-1".to_string()));
    let region = match region {
        None => {
            c.fail("region", "missing: the bucket's region, e.g. \"eu-west-1\" (or AWS_REGION in the environment)");
            None
        }
        Some(r) if r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => Some(r),
        Some(r) => {
            c.fail("region", format_args!("{r:?} is not a region name"));
            None
        }
    };
    let secret = c.secret(
        "secret_access_key",
        &s.secret_access_key,
        &s.secret_access_key_file,
    );
    let token = c.secret("session_token", &s.session_token, &s.session_token_file);
    let base = match (&s.access_key_id, secret) {
        (Some(id), secret) if !id.trim().is_empty() => match secret {
            crate::settings::SecretValue::Given(secret) => Some(Base::Static {
                access_key_id: id.trim().to_string(),
                secret_access_key: secret,
                session_token: token.get(),
                from: "config",
            }),
            crate::settings::SecretValue::Absent => {
                c.fail(
                    "secret_access_key",
                    "missing: access_key_id is set, so its secret_access_key (or secret_access_key_file) is needed",
                );
                None
            }
            crate::settings::SecretValue::Broken => None,
        },
        (Some(_), _) => {
            c.fail("access_key_id", "is empty");
            None
        }
        (None, secret) => {
            if !secret.is_absent() {
                c.fail(
                    "access_key_id",
                    "missing: secret_access_key is set without its access_key_id",
                );
                None
            } else if !token.is_absent() {
                c.fail(
                    "access_key_id",
                    "missing: session_token is set without access_key_id",
                );
                None
            } else {
                match Base::from_env(&env) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        c.fail(
                            "access_key_id",
                            format_args!(
                                "missing, and the standard AWS chain has no credentials: {e}"
                            ),
                        );
                        None
                    }
                }
            }
        }
    };
    let assume = match (&s.role_arn, &s.external_id) {
        (Some(arn), x) => {
            if !arn.starts_with("arn:") || arn.split(':').count() < 6 {
                c.fail(
                    "role_arn",
                    format_args!("{arn:?} is not a role ARN (arn:aws:iam::123456789012:role/name)"),
                );
            }
            Some(AssumeRole {
                role_arn: arn.clone(),
                external_id: x.clone().filter(|x| !x.is_empty()),
            })
        }
        (None, Some(_)) => {
            c.fail("external_id", "is set without role_arn");
            None
        }
        (None, None) => None,
    };
    let sts = match &s.sts_endpoint {
        None => None,
        e => c.url("sts_endpoint", e),
    };
    let object_format = match s.object_format.as_deref() {
        None => Some(ObjectFormat::NdjsonGzip),
        Some(f) => {
            let found = ObjectFormat::by_name(f);
            if found.is_none() {
                c.fail(
                    "object_format",
                    format_args!(
                        "{f:?} is not supported by this version; use {}",
                        ObjectFormat::NAMES.join(" or ")
                    ),
                );
            }
            found
        }
    };
    let layout = security_lake(c, s, region.as_deref(), object_format);
    let max_object_bytes = range(
        c,
        "max_object_bytes",
        s.max_object_bytes,
        MAX_OBJECT_BYTES_RANGE,
        MAX_OBJECT_BYTES,
    );
    let max_object_age = c
        .duration("max_object_age", &s.max_object_age, true)
        .unwrap_or(MAX_OBJECT_AGE);
    if max_object_age > Duration::from_secs(86_400) {
        c.fail("max_object_age", "is longer than the most, 24 hours");
    }
    let part_bytes = range(
        c,
        "part_bytes",
        s.part_bytes,
        PART_BYTES_RANGE,
        PART_BYTES as u64,
    ) as usize;
    let timeout = c
        .duration("timeout", &s.timeout, true)
        .unwrap_or(Duration::from_secs(60));
    let https = endpoint.as_ref().is_none_or(|u| u.scheme() == "https");
    let tls = c.tls(https, &s.ca_file, &None, &None, None);

    let region = region?;
    let endpoint = match endpoint {
        Some(e) => e,
        None if s.endpoint.is_some() => return None,
        None => Url::parse(&format!("https://s3.{region}.amazonaws.com")).ok()?,
    };
    let sts = match sts {
        Some(u) => u,
        None if s.sts_endpoint.is_some() => return None,
        None => Url::parse(&format!("https://sts.{region}.amazonaws.com")).ok()?,
    };
    Some(S3Config {
        bucket: bucket?,
        prefix,
        region,
        endpoint,
        path_style: s.force_path_style.unwrap_or(false),
        base: base?,
        assume,
        sts,
        object_format: object_format?,
        layout: layout?,
        max_object_bytes,
        max_object_age,
        part_bytes,
        timeout,
        ca_file: tls.ca_file,
    })
}

/// `layout`, and what `security_lake` needs: OCSF (`format = "ocsf"`) in Parquet objects, no
/// `prefix` (Security Lake's keys start with `ext/`), `account_id`, and a custom source per
/// class (`security_lake_sources`, default [`SECURITY_LAKE_SOURCES`]).
fn security_lake(
    c: &mut SinkCheck<'_, '_>,
    s: &Section,
    region: Option<&str>,
    object_format: Option<ObjectFormat>,
) -> Option<Layout> {
    let lake = match s.layout.as_deref() {
        None | Some("partitioned") => {
            for (key, set) in [
                ("account_id", s.account_id.is_some()),
                ("security_lake_sources", s.security_lake_sources.is_some()),
            ] {
                if set {
                    c.fail(key, "is for layout = \"security_lake\" only");
                }
            }
            return Some(Layout::Partitioned);
        }
        Some("security_lake") => true,
        Some(other) => {
            c.fail(
                "layout",
                format_args!("{other:?} is not a layout; use partitioned or security_lake"),
            );
            false
        }
    };
    if c.format() != Some("ocsf") {
        c.fail(
            "format",
            "layout = \"security_lake\" takes OCSF only: set format = \"ocsf\"",
        );
    }
    if object_format != Some(ObjectFormat::Parquet) {
        c.fail(
            "object_format",
            "layout = \"security_lake\" takes Parquet objects only: set object_format = \"parquet\"",
        );
    }
    if s.prefix.as_deref().is_some_and(|p| !p.is_empty()) {
        c.fail(
            "prefix",
            "layout = \"security_lake\" writes under ext/{custom source}/, as Security Lake requires: leave prefix out",
        );
    }
    let account_id = match s.account_id.as_deref().map(str::trim) {
        None | Some("") => {
            c.fail("account_id", "missing: the AWS account id (or external id) given when the custom sources were made");
            None
        }
        Some(a)
            if a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Some(a.to_string())
        }
        Some(a) => {
            c.fail(
                "account_id",
                format_args!("{a:?}: use letters, digits, - and _ only"),
            );
            None
        }
    };
    let mut sources: Vec<(u32, String)> = SECURITY_LAKE_SOURCES
        .iter()
        .map(|(uid, n)| (*uid, n.to_string()))
        .collect();
    for (class, name) in s.security_lake_sources.iter().flatten() {
        let Some(at) = sources
            .iter()
            .position(|(uid, _)| class.parse() == Ok(*uid))
        else {
            c.fail(
                "security_lake_sources",
                format_args!(
                    "{class:?} is not an OCSF class this agent writes; one of {}",
                    SECURITY_LAKE_SOURCES
                        .map(|(uid, _)| uid.to_string())
                        .join(", ")
                ),
            );
            continue;
        };
        // Security Lake's rule for a custom source's name.
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b))
        {
            c.fail(
                "security_lake_sources",
                format_args!("{class}: {name:?} is not a custom source name (1 to 64 letters, digits and -_:.)"),
            );
        }
        sources[at].1 = name.clone();
    }
    if !lake {
        return None;
    }
    Some(Layout::SecurityLake(SecurityLake {
        region: region?.to_string(),
        account_id: account_id?,
        sources,
    }))
}

/// An integer option within `r`, or `default` when not set.
fn range(
    c: &mut SinkCheck<'_, '_>,
    opt: &str,
    v: Option<i64>,
    r: std::ops::RangeInclusive<u64>,
    default: u64,
) -> u64 {
    match v {
        None => default,
        Some(n) if n >= 0 && r.contains(&(n as u64)) => n as u64,
        Some(n) => {
            c.fail(
                opt,
                format_args!("{n} is out of range; {} to {} bytes", r.start(), r.end()),
            );
            default
        }
    }
}

/// S3's rules for a bucket's name (general purpose buckets).
fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
        && !b.contains("..")
}

impl crate::sinks::Reaches for S3Sink {
    type Settings = S3Config;
    fn build(
        cfg: &SinkConfig,
        settings: &S3Config,
        retry: &RetryConfig,
        once: bool,
    ) -> Result<S3Sink, SinkError> {
        S3Sink::new(&cfg.name, settings, crate::sinks::writer(cfg), retry, once)
    }
    fn reach(&self) -> impl std::future::Future<Output = Probe> + Send + '_ {
        self.probe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3s_rules() {
        for ok in ["abc", "my-bucket.logs", "a1b2c3"] {
            assert!(valid_bucket(ok), "{ok}");
        }
        for bad in [
            "ab",
            "My-Bucket",
            "-abc",
            "abc-",
            "a..b",
            "a_b",
            &"x".repeat(64),
        ] {
            assert!(!valid_bucket(bad), "{bad}");
        }
    }
}
