//! Secrets and expansion: `${NAME}` in any string of the file, and the secret options that take
//! either a value (`X`) or a file holding it (`X_file`).

use serde_json::Value;

use super::{Check, Secret};

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

/// Replaces `${NAME}` with the environment variable in every string of the tree (`$${` stays a
/// literal `${`). A variable that is not set is an error naming the key — unless secrets are
/// not wanted and the key is a secret's: then it is only marked, so nothing else is said of it.
pub(super) fn expand_env(v: &mut Value, key: &mut String, c: &mut Check<'_>) {
    match v {
        Value::String(s) if s.contains('$') => match expand_str(s) {
            Ok(e) => *s = e,
            Err(_) if !c.secrets && is_secret_key(key) => {
                c.failed.insert(key.clone());
            }
            Err(name) => c.fail(
                key,
                format_args!("environment variable {name} is not set (referenced as ${{{name}}})"),
            ),
        },
        Value::Array(a) => {
            for (i, item) in a.iter_mut().enumerate() {
                let len = key.len();
                key.push_str(&format!("[{i}]"));
                expand_env(item, key, c);
                key.truncate(len);
            }
        }
        Value::Object(m) => {
            for (k, item) in m.iter_mut() {
                let len = key.len();
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(k);
                expand_env(item, key, c);
                key.truncate(len);
            }
        }
        _ => {}
    }
}

/// Whether `key` holds a secret (or a secret's file): a vendor option `X` (or `X_file`) of a
/// source where the vendor also takes `X_file`, a sink's header, or a sink's
/// [`SECRET_OPTIONS`](crate::sinks::SECRET_OPTIONS).
fn is_secret_key(key: &str) -> bool {
    if let Some(rest) = key.strip_prefix("sinks[") {
        let opt = rest.split_once("].").map_or("", |(_, o)| o);
        return opt.starts_with("headers.")
            || opt.starts_with("header_files.")
            || crate::sinks::SECRET_OPTIONS.contains(&opt);
    }
    let Some(opt) = key
        .strip_prefix("sources[")
        .and_then(|r| r.split_once("]."))
        .map(|(_, o)| o)
    else {
        return false;
    };
    let base = opt.strip_suffix("_file").unwrap_or(opt);
    crate::sources::VENDORS
        .iter()
        .any(|v| v.options().contains(&format!("{base}_file").as_str()))
}

pub(super) fn expand_str(s: &str) -> Result<String, String> {
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

impl Check<'_> {
    /// A secret given either inline (`key`) or as a file (`key_file`), not both. The file is
    /// read (one trailing newline trimmed) unless secrets are not wanted ([`Check::secrets`]):
    /// then a set option reads as an empty placeholder that is never sent.
    pub fn secret(
        &mut self,
        prefix: &str,
        key: &str,
        inline: &Option<String>,
        file: &Option<String>,
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
                if v.is_empty() {
                    self.fail(&k, "is empty");
                    return SecretValue::Broken;
                }
                SecretValue::Given(Secret::new(v.as_str()))
            }
            (None, Some(f)) => {
                let k = format!("{prefix}.{key}_file");
                if self.has_failed(&k) {
                    return SecretValue::Broken;
                }
                let p = self.base.join(f);
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
