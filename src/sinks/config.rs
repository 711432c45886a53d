//! `[[sinks]]`: the keys every sink takes are read here; the rest of an entry is its
//! destination's section, read and validated by the destination's plugin
//! ([`Destination`]), found by `kind` in the registry [`DESTINATIONS`]. `config` hands each
//! entry here.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use url::Url;

use super::{Destination, SinkSettings, DESTINATIONS};
use crate::settings::kind::{Kind, Registered};
use crate::settings::section::{read_section, split_entry, unknown_key, Section};
use crate::settings::tls::{self, RawTls};
use crate::settings::{Check, SecretFile, SecretText, SecretValue, TlsConfig};

/// The keys of `[[sinks]]` that every kind takes.
#[derive(Debug, Default, Deserialize, Section)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    /// Unique, `[a-z0-9_-]+`; names the sink in logs, metrics and the state.
    pub name: Option<String>,
    /// Which destination plugin delivers (`stdout`, `file`, `http`, `syslog`, `secops`).
    pub kind: Option<String>,
    /// Only these sources' events (default: all).
    pub sources: Option<Vec<String>>,
    /// Keep the vendor's event under `raw` (default true).
    pub include_raw: Option<bool>,
    /// How each event is written: `native` (default), `ocsf`, `ecs` or `cef`.
    pub format: Option<String>,
    /// The most bytes of events waiting in the sink's queue (read from the vendors, not yet
    /// delivered), 1 MiB to 1 TiB (default 512 MiB). At the limit the sources feeding the sink
    /// stop reading until it delivers; nothing is dropped.
    pub queue_max_bytes: Option<i64>,
    /// How long a batch smaller than the sink's batch waits for more events of its queue before
    /// it is sent (default per kind: "1s" for http, syslog and secops, "0s" for file and stdout), so
    /// that many sources' small pages share one request. At most 1 minute.
    pub batch_max_age: Option<String>,
}

/// The kind of a sink: its destination's plugin.
pub type SinkKind = Kind<dyn Destination>;

impl Registered for dyn Destination {
    fn registry() -> &'static [&'static Self] {
        DESTINATIONS
    }
    fn kind_name(&self) -> &'static str {
        self.kind()
    }
}

impl SinkKind {
    /// The plugin.
    pub fn destination(self) -> &'static dyn Destination {
        self.plugin()
    }
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
    /// What the destination's own keys say, as its plugin validated them.
    pub settings: SinkSettings,
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

/// What a destination's plugin validates its section with: its keys, the problems found so
/// far, and what the keys every sink takes said.
pub struct SinkCheck<'c, 'b> {
    check: &'c mut Check<'b>,
    /// `sinks[i]`.
    key: &'c str,
    kind: &'static str,
    section: Option<Map<String, Value>>,
    format: Option<&'c str>,
}

impl SinkCheck<'_, '_> {
    /// The destination's keys, read as its section struct `T` (every problem reported).
    pub fn section<T: serde::de::DeserializeOwned + Default + Section>(&mut self) -> T {
        let map = self.section.take().unwrap_or_default();
        // Keys `T` does not take were sorted out before (`validate`): none is left.
        read_section(self.check, self.key, Value::Object(map), |c, key, name| {
            unknown_key(c, key, name, &[])
        })
    }

    /// The full key of option `opt`: `sinks[i].opt`.
    pub fn key(&self, opt: &str) -> String {
        format!("{}.{opt}", self.key)
    }

    /// Reports a problem of option `opt` (or of `opt.sub`).
    pub fn fail(&mut self, opt: &str, msg: impl fmt::Display) {
        self.check.fail(&format!("{}.{opt}", self.key), msg);
    }

    /// Whether option `opt` has a problem reported already.
    pub fn has_failed(&self, opt: &str) -> bool {
        self.check.has_failed(&format!("{}.{opt}", self.key))
    }

    /// An http(s) URL option.
    pub fn url(&mut self, opt: &str, v: &Option<String>) -> Option<Url> {
        self.check.url(&format!("{}.{opt}", self.key), v)
    }

    /// A duration option (`"30s"`); `positive`: zero is refused.
    pub fn duration(&mut self, opt: &str, v: &Option<String>, positive: bool) -> Option<Duration> {
        self.check
            .duration(&format!("{}.{opt}", self.key), v, positive)
    }

    /// The TLS options of a client whose server is `https` (or not known yet).
    pub fn tls(
        &mut self,
        https: bool,
        ca_file: &Option<String>,
        client_cert: &Option<String>,
        client_key: &Option<String>,
        insecure_skip_verify: Option<bool>,
    ) -> TlsConfig {
        tls::validate(
            self.check,
            self.key,
            https,
            &RawTls {
                ca_file: ca_file.clone(),
                client_cert: client_cert.clone(),
                client_key: client_key.clone(),
                insecure_skip_verify,
            },
        )
    }

    /// A secret option given inline (`opt`) or as a file (`opt_file`), not both.
    pub fn secret(
        &mut self,
        opt: &str,
        inline: &Option<SecretText>,
        file: &Option<SecretFile>,
    ) -> SecretValue {
        let key = self.key;
        self.check.secret(key, opt, inline, file)
    }

    /// Where relative paths of the config file resolve.
    pub fn base(&self) -> &Path {
        self.check.base()
    }

    /// Whether secrets are read (not for `state`, which runs where they are not mounted).
    pub fn secrets(&self) -> bool {
        self.check.secrets()
    }

    /// `format` as written (`None`: the default, `native`).
    pub fn format(&self) -> Option<&str> {
        self.format
    }

    /// The kind being checked.
    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

/// The kinds of the registry, for messages: `a, b, c`.
fn kinds() -> String {
    DESTINATIONS
        .iter()
        .map(|d| d.kind())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Validates every `[[sinks]]` entry; `names` are the names of the configured sources.
/// Returns the valid ones and how many entries there were.
pub(crate) fn validate(
    c: &mut Check<'_>,
    raw: Vec<Value>,
    names: &HashSet<String>,
) -> (Vec<SinkConfig>, usize) {
    let mut sink_names = HashSet::new();
    let mut sinks = Vec::new();
    if raw.is_empty() {
        c.fail(
            "sinks",
            "no [[sinks]]: events would go nowhere; add e.g. [[sinks]] name = \"out\" kind = \"stdout\"",
        );
    }
    let entries = raw.len();
    let common = RawSink::KEYS;
    for (i, entry) in raw.into_iter().enumerate() {
        let key = format!("sinks[{i}]");
        let Value::Object(mut entry) = entry else {
            c.fail(&key, "must be a table");
            continue;
        };
        let kind = match entry.get("kind") {
            Some(Value::String(k)) => SinkKind::parse(k),
            _ => None,
        };
        // Split the entry: the keys every sink takes, and the destination's.
        let section = split_entry(
            c,
            &key,
            &mut entry,
            common,
            kind.map(|k| (k.as_str(), k.destination().options())),
            |k| DESTINATIONS.iter().any(|d| d.options().contains(&k)),
        );
        let s: RawSink = read_section(c, &key, Value::Object(entry), |_, _, _| {});
        let name = c.name(&format!("{key}.name"), &s.name, &mut sink_names);
        let Some(kind) = kind else {
            match &s.kind {
                None => c.fail(
                    &format!("{key}.kind"),
                    format_args!("missing; one of {}", kinds()),
                ),
                Some(k) => c.fail(
                    &format!("{key}.kind"),
                    format_args!("{k:?} is not a sink kind; one of {}", kinds()),
                ),
            }
            continue;
        };
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
        let settings = kind.destination().settings(&mut SinkCheck {
            check: c,
            key: &key,
            kind: kind.as_str(),
            section: Some(section),
            format: s.format.as_deref(),
        });
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
        let own_age = settings
            .as_ref()
            .and_then(|p| p.configured().own_batch_max_age());
        let own_key = kind.destination().batch_max_age_key();
        let batch_max_age = match c.duration(&age_key, &s.batch_max_age, false) {
            Some(_) if own_key.is_some() => {
                c.fail(
                    &age_key,
                    format_args!(
                        "not an option of kind {}: its own key {} says how long a batch waits",
                        kind.as_str(),
                        own_key.unwrap_or_default()
                    ),
                );
                Duration::ZERO
            }
            None if own_age.is_some() => own_age.unwrap_or_default(),
            Some(d) if d > Duration::from_secs(60) => {
                c.fail(&age_key, "is longer than the most, 1 minute");
                d
            }
            Some(d) => d,
            None => kind.destination().batch_max_age(),
        };
        if let (Some(settings), Some(format)) = (settings, format) {
            sinks.push(SinkConfig {
                name,
                kind,
                sources: s.sources.clone(),
                include_raw: s.include_raw.unwrap_or(true),
                format,
                queue_max_bytes,
                batch_max_age,
                settings,
            });
        }
    }
    // Two sinks claiming one thing (two file sinks on one path) would each undo the other's
    // work.
    let mut claimed = HashSet::new();
    for s in &sinks {
        if let Some((opt, what)) = s.settings.configured().claims(s) {
            if !claimed.insert((s.kind.as_str(), what.clone())) {
                c.fail(
                    &format!("sinks.{}.{opt}", s.name),
                    format_args!("{what} is used by two {} sinks", s.kind.as_str()),
                );
            }
        }
    }
    (sinks, entries)
}
