//! What every part of the configuration is validated with: [`Check`], which collects each
//! problem under its key; [`Secret`] and [`SecretValue`], the secret options (`X` or `X_file`,
//! written as [`SecretText`] and [`SecretFile`] fields); [`TlsConfig`], the TLS options a source
//! and a sink share; [`section`], a table of the file into its serde struct, whose keys and
//! secrets `#[derive(Section)]` lists ([`Section`]).
//!
//! `config` reads the file and hands each `[[sources]]` and `[[sinks]]` entry to its plugin
//! (`sources::config`, `sinks::config`); they all check their keys with these.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::timefmt::{self, Nanos};

pub mod kind;
pub mod section;
pub mod tls;

pub use section::Section;
pub use tls::TlsConfig;

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

/// A secret written in the file (`X`): a field of this type (or `Option` of it, or a map of
/// them) is a secret key of its section ([`Section::SECRETS`]). `Debug` shows `***`.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretText(String);

impl SecretText {
    /// The secret as written (after `${NAME}` expansion).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The path of a file holding a secret (`X_file`): a field of this type (or `Option` of it, or
/// a map of them) is a secret key of its section ([`Section::SECRETS`]), as its `X` is.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretFile(String);

impl SecretFile {
    /// The path as written, relative to the file's directory or absolute.
    pub fn path(&self) -> &str {
        &self.0
    }
}

/// Whether `u` carries a user name or password over plain `http`: they would go out in clear
/// with every request (as HTTP Basic authentication).
pub fn cleartext(u: &Url) -> bool {
    u.scheme() == "http" && (!u.username().is_empty() || u.password().is_some())
}

/// What is said of a `url` that is [`cleartext`].
pub const CLEARTEXT_URL: &str = "its url carries a user name and password over plain http: they go out in clear with every request; use https";

/// A secret option as read: not given, given but unusable (and already reported), or its value.
#[derive(Debug, Clone, PartialEq)]
pub enum SecretValue {
    /// Neither `X` nor `X_file` is set.
    Absent,
    /// Set, but it could not be used; the problem is reported under its key.
    Broken,
    /// The secret.
    Given(Secret),
}

impl SecretValue {
    /// The secret, when there is one.
    pub fn get(self) -> Option<Secret> {
        match self {
            SecretValue::Given(s) => Some(s),
            _ => None,
        }
    }

    /// Neither `X` nor `X_file` was set: "missing" is the right thing to say (and only then).
    pub fn is_absent(&self) -> bool {
        matches!(self, SecretValue::Absent)
    }
}

/// Collects the problems of a config, each naming its key: what every section is validated
/// with.
pub struct Check<'a> {
    problems: Vec<String>,
    /// Keys with a problem reported: one message a key (a `${NAME}` that is not set is not
    /// also "not a URL").
    failed: HashSet<String>,
    /// Where relative paths of the file resolve.
    base: &'a Path,
    /// Whether secrets are read and required (see `Config::load_without_secrets`).
    secrets: bool,
}

impl<'a> Check<'a> {
    /// A check of a file whose relative paths resolve against `base`; `secrets`: whether
    /// secrets are read and required.
    pub fn new(base: &'a Path, secrets: bool) -> Check<'a> {
        Check {
            problems: Vec::new(),
            failed: HashSet::new(),
            base,
            secrets,
        }
    }

    /// The problems reported, one line each: `key: what is wrong`.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// Where relative paths of the file resolve.
    pub fn base(&self) -> &'a Path {
        self.base
    }

    /// Runs `f` with secrets read and required, whatever this check was made with: for the
    /// one secret every command needs (`agent.state_url`).
    pub fn with_secrets<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let was = std::mem::replace(&mut self.secrets, true);
        let r = f(self);
        self.secrets = was;
        r
    }

    /// Whether secrets are read and required.
    pub fn secrets(&self) -> bool {
        self.secrets
    }

    pub fn fail(&mut self, key: &str, msg: impl fmt::Display) {
        if self.failed.insert(key.to_string()) {
            self.problems.push(format!("{key}: {msg}"));
        }
    }

    /// Marks `key` as having a problem without saying one: nothing else is then said of it.
    pub fn mark(&mut self, key: &str) {
        self.failed.insert(key.to_string());
    }

    /// Whether a problem of `key` was reported.
    pub(crate) fn has_failed(&self, key: &str) -> bool {
        self.failed.contains(key)
    }

    pub(crate) fn page_size(&mut self, key: &str, v: Option<i64>) -> Option<u32> {
        match v {
            None => None,
            Some(n) if (1..=1000).contains(&n) => Some(n as u32),
            Some(n) => {
                self.fail(
                    key,
                    format_args!("{n} is out of range; 1 to 1000 (the vendors' largest page)"),
                );
                None
            }
        }
    }

    pub(crate) fn duration(
        &mut self,
        key: &str,
        v: &Option<String>,
        positive: bool,
    ) -> Option<Duration> {
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

    pub(crate) fn time(&mut self, key: &str, v: &Option<String>) -> Option<Nanos> {
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

    pub(crate) fn url(&mut self, key: &str, v: &Option<String>) -> Option<Url> {
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

    pub(crate) fn name(
        &mut self,
        key: &str,
        v: &Option<String>,
        seen: &mut HashSet<String>,
    ) -> String {
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
}

impl Check<'_> {
    /// A secret given either inline (`key`) or as a file (`key_file`), not both. The file is
    /// read (one trailing newline trimmed) unless secrets are not wanted ([`Check::secrets`]):
    /// then a set option reads as an empty placeholder that is never sent.
    pub fn secret(
        &mut self,
        prefix: &str,
        key: &str,
        inline: &Option<SecretText>,
        file: &Option<SecretFile>,
    ) -> SecretValue {
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.fail(
                    &format!("{prefix}.{key}"),
                    format_args!("set either {key} or {key}_file, not both"),
                );
                SecretValue::Broken
            }
            (Some(_), None) | (None, Some(_)) if !self.secrets => {
                SecretValue::Given(Secret::new(""))
            }
            // Set, but its `${NAME}` is not (said already, or not wanted).
            (Some(_), None) if self.has_failed(&format!("{prefix}.{key}")) => SecretValue::Broken,
            (Some(v), None) => {
                let k = format!("{prefix}.{key}");
                if v.expose().is_empty() {
                    self.fail(&k, "is empty");
                    return SecretValue::Broken;
                }
                SecretValue::Given(Secret::new(v.expose()))
            }
            (None, Some(f)) => {
                let k = format!("{prefix}.{key}_file");
                if self.has_failed(&k) {
                    return SecretValue::Broken;
                }
                let p = self.base.join(f.path());
                match std::fs::read_to_string(&p) {
                    Ok(s) => {
                        let s = s.strip_suffix('\n').unwrap_or(&s);
                        let s = s.strip_suffix('\r').unwrap_or(s);
                        if s.is_empty() {
                            self.fail(&k, format_args!("{} is empty", p.display()));
                            SecretValue::Broken
                        } else {
                            SecretValue::Given(Secret::new(s))
                        }
                    }
                    Err(e) => {
                        self.fail(&k, format_args!("cannot read {}: {e}", p.display()));
                        SecretValue::Broken
                    }
                }
            }
            (None, None) => SecretValue::Absent,
        }
    }
}
