//! `[[sources]]`: the keys every source takes are read here; the rest of an entry is its
//! vendor's section, read and validated by the vendor's plugin ([`Vendor`]), found by `kind` in
//! the registry [`VENDORS`]. `config` hands each entry here.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use url::Url;

use super::{Vendor, VendorSettings, VENDORS};
use crate::settings::kind::{Kind, Registered};
use crate::settings::section::{nearest, read_section, split_entry, unknown_key, Section};
use crate::settings::tls::{self, RawTls};
use crate::settings::{Check, SecretFile, SecretText, SecretValue, TlsConfig};
use crate::timefmt::{self, Nanos};

/// The defaults `[agent]` gives every source (each `None` when not set or not valid).
#[derive(Debug, Default)]
pub struct SourceDefaults {
    pub poll_interval: Option<Duration>,
    pub lag: Option<Duration>,
    pub overlap: Option<Duration>,
    pub window: Option<Duration>,
    pub page_size: Option<u32>,
}

/// The keys of `[[sources]]` that every kind takes.
#[derive(Debug, Default, Deserialize, Section)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// Unique, `[a-z0-9_-]+`; `source` of every event.
    pub name: Option<String>,
    /// Which vendor plugin reads it.
    pub kind: Option<String>,
    /// The vendor API's base URL.
    pub url: Option<String>,
    /// Where the very first run begins.
    pub start: Option<String>,
    pub poll_interval: Option<String>,
    pub lag: Option<String>,
    pub overlap: Option<String>,
    pub window: Option<String>,
    pub page_size: Option<i64>,
    /// The most requests a second this source's credential may make (shared by every source
    /// using it, which then all take the lowest of theirs).
    pub max_requests_per_second: Option<f64>,
    /// Vendor query parameters, passed through.
    pub filters: Option<BTreeMap<String, FilterValue>>,
    /// PEM CA certificates trusted besides the system's roots (a vendor behind a private CA).
    pub ca_file: Option<String>,
    /// PEM client certificate for mutual TLS; needs `client_key`.
    pub client_cert: Option<String>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<String>,
    /// Do not verify the vendor's TLS certificate (warned about loudly at start).
    pub insecure_skip_verify: Option<bool>,
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

/// The kind of a source: its vendor's plugin.
pub type SourceKind = Kind<dyn Vendor>;

impl Registered for dyn Vendor {
    fn registry() -> &'static [&'static Self] {
        VENDORS
    }
    fn kind_name(&self) -> &'static str {
        self.kind()
    }
}

impl SourceKind {
    /// The plugin.
    pub fn vendor(self) -> &'static dyn Vendor {
        self.plugin()
    }
}

/// One validated `[[sources]]` entry, with the agent's defaults folded in.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    /// Unique name; appears as `source` in every event and keys its state.
    pub name: String,
    pub kind: SourceKind,
    /// Base URL of the vendor's API.
    pub url: Url,
    /// Where the very first run begins (default now − 24h, decided at first poll).
    pub start: Option<Nanos>,
    pub poll_interval: Duration,
    pub lag: Duration,
    pub overlap: Duration,
    /// The first sub-window's length.
    pub window: Duration,
    pub page_size: u32,
    /// The most requests a second its credential may make (`None`: as many as the vendor
    /// allows); a credential several sources share takes the lowest of theirs.
    pub max_requests_per_second: Option<f64>,
    /// Vendor query parameters, passed through in order (repeated for lists).
    pub filters: Vec<(String, String)>,
    /// How the vendor's TLS certificate is checked, and the client certificate.
    pub tls: TlsConfig,
    /// What the vendor's own keys say (credentials and the like), as its plugin validated them.
    pub settings: VendorSettings,
}

/// What a vendor's plugin validates its section with: its keys, the problems found so far,
/// and the settings every source has.
pub struct SourceCheck<'c, 'b> {
    check: &'c mut Check<'b>,
    /// `sources[i]`.
    key: &'c str,
    kind: &'static str,
    section: Option<Map<String, Value>>,
    /// The source's first sub-window, validated (default applied).
    pub window: Duration,
}

impl SourceCheck<'_, '_> {
    /// The vendor's keys, read as its section struct `T` (every problem reported).
    pub fn section<T: serde::de::DeserializeOwned + Default + Section>(&mut self) -> T {
        let map = self.section.take().unwrap_or_default();
        // Keys `T` does not take were sorted out before (`validate`): none is left.
        read_section(self.check, self.key, Value::Object(map), |c, key, name| {
            unknown_key(c, key, name, &[])
        })
    }

    /// Reports a problem of option `opt`.
    pub fn fail(&mut self, opt: &str, msg: impl fmt::Display) {
        self.check.fail(&format!("{}.{opt}", self.key), msg);
    }

    /// A secret option `opt` (or `opt_file`).
    pub fn secret(
        &mut self,
        opt: &str,
        inline: &Option<SecretText>,
        file: &Option<SecretFile>,
    ) -> SecretValue {
        self.check.secret(self.key, opt, inline, file)
    }

    /// Reports `opt: missing: {kind} needs {what}` when `v` is absent (and only then: a value
    /// that was given but broken is reported already).
    pub fn require(&mut self, opt: &str, v: &SecretValue, what: &str) {
        if v.is_absent() {
            let msg = format!("missing: {} needs {what}", self.kind);
            self.fail(opt, msg);
        }
    }

    /// An http(s) URL option.
    pub fn url(&mut self, opt: &str, v: &Option<String>) -> Option<Url> {
        self.check.url(&format!("{}.{opt}", self.key), v)
    }

    /// The kind being checked.
    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

/// The kinds of the registry, for messages: `a, b, c`.
fn kinds() -> String {
    VENDORS
        .iter()
        .map(|v| v.kind())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Validates every `[[sources]]` entry; returns the valid ones and the names of all.
pub(crate) fn validate(
    c: &mut Check<'_>,
    raw: Vec<Value>,
    defaults: &SourceDefaults,
) -> (Vec<SourceConfig>, HashSet<String>) {
    let mut names = HashSet::new();
    let mut sources = Vec::new();
    if raw.is_empty() {
        c.fail("sources", "no [[sources]]: there is nothing to read");
    }
    let common = RawSource::KEYS;
    for (i, entry) in raw.into_iter().enumerate() {
        let key = format!("sources[{i}]");
        let Value::Object(mut entry) = entry else {
            c.fail(&key, "must be a table");
            continue;
        };
        let kind = match entry.get("kind") {
            Some(Value::String(k)) => SourceKind::parse(k).ok_or(Some(k.clone())),
            _ => Err(None),
        };
        // Split the entry: the keys every source takes, and the vendor's.
        let section = split_entry(
            c,
            &key,
            &mut entry,
            common,
            kind.as_ref()
                .ok()
                .map(|k| (k.as_str(), k.vendor().options())),
            |k| VENDORS.iter().any(|v| v.options().contains(&k)),
        );
        let s: RawSource = read_section(c, &key, Value::Object(entry), |_, _, _| {});
        let name = c.name(&format!("{key}.name"), &s.name, &mut names);
        let kind = match (kind, &s.kind) {
            (Ok(kind), _) => kind,
            (Err(_), None) => {
                c.fail(
                    &format!("{key}.kind"),
                    format_args!("missing; one of {}", kinds()),
                );
                continue;
            }
            (Err(_), Some(k)) => {
                c.fail(
                    &format!("{key}.kind"),
                    format_args!("{k:?} is not a source kind; one of {}", kinds()),
                );
                continue;
            }
        };
        let url = match &s.url {
            None => {
                c.fail(&format!("{key}.url"), "missing: the vendor API's base URL");
                None
            }
            u => c.url(&format!("{key}.url"), u),
        };
        let tls = tls::validate(
            c,
            &key,
            url.as_ref().is_none_or(|u| u.scheme() == "https"),
            &RawTls {
                ca_file: s.ca_file.clone(),
                client_cert: s.client_cert.clone(),
                client_key: s.client_key.clone(),
                insecure_skip_verify: s.insecure_skip_verify,
            },
        );
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
            .or(defaults.poll_interval)
            .unwrap_or(Duration::from_secs(60));
        let lag = c
            .duration(&format!("{key}.lag"), &s.lag, false)
            .or(defaults.lag)
            .unwrap_or(Duration::from_secs(120));
        let overlap = c
            .duration(&format!("{key}.overlap"), &s.overlap, false)
            .or(defaults.overlap)
            .unwrap_or(Duration::from_secs(900));
        // The first sub-window's length; later ones follow the data (`pipeline::Poller::adapt`).
        let window = c
            .duration(&format!("{key}.window"), &s.window, true)
            .or(defaults.window)
            .unwrap_or(Duration::from_secs(3600));
        let page_size = c
            .page_size(&format!("{key}.page_size"), s.page_size)
            .or(defaults.page_size)
            .unwrap_or(1000);
        let max_requests_per_second = s.max_requests_per_second.filter(|r| {
            let ok = r.is_finite() && *r > 0.0;
            if !ok {
                c.fail(
                    &format!("{key}.max_requests_per_second"),
                    format_args!(
                        "{r} must be a number above 0 (requests a second; 0.5 is one every two seconds)"
                    ),
                );
            }
            ok
        });
        let mut filters = Vec::new();
        for (fk, fv) in s.filters.iter().flatten() {
            if let Some(why) = filter_problem(kind.vendor(), fk) {
                c.fail(&format!("{key}.filters.{fk}"), why);
                continue;
            }
            match fv {
                FilterValue::One(v) => filters.push((fk.clone(), v.text())),
                FilterValue::Many(vs) => {
                    filters.extend(vs.iter().map(|v| (fk.clone(), v.text())));
                }
            }
        }
        let settings = kind.vendor().settings(&mut SourceCheck {
            check: c,
            key: &key,
            kind: kind.as_str(),
            section: Some(section),
            window,
        });
        if let (Some(url), Some(settings)) = (url, settings) {
            sources.push(SourceConfig {
                name,
                kind,
                url,
                start,
                poll_interval,
                lag,
                overlap,
                window,
                page_size,
                max_requests_per_second,
                filters,
                tls,
                settings,
            });
        }
    }
    (sources, names)
}

/// Why `key` cannot be a filter of `vendor`: a parameter the agent sets itself, or one its API
/// does not document (the vendor would ignore it and send every event).
pub fn filter_problem(vendor: &dyn Vendor, key: &str) -> Option<String> {
    if vendor.reserved_params().contains(&key) {
        return Some("is set by the agent itself (from the window and paging); remove it".into());
    }
    let known = vendor.filter_params();
    if known.contains(&key) {
        return None;
    }
    let hint = nearest(key, known)
        .map(|k| format!("; did you mean `{k}`?"))
        .unwrap_or_default();
    Some(format!(
        "is not a filter of {} (its API takes {}){hint}",
        vendor.kind(),
        known.join(", ")
    ))
}
