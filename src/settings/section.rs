//! A section of the file (a table of its tree) into its serde struct with every problem
//! reported, not only the first: a key that a section does not know is reported and dropped, a
//! value of the wrong type likewise, and the rest of the section is still read, so an unknown
//! key never hides the other problems.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Check;

/// What `#[derive(Section)]` says of a section's serde struct (`crate::settings::Section`, the
/// derive, is re-exported beside this trait).
pub trait Section {
    /// The keys the section takes: its fields' serde names.
    const KEYS: &'static [&'static str];
    /// Its keys that hold secrets, known by their fields' types ([`SecretText`](super::SecretText),
    /// [`SecretFile`](super::SecretFile), an `Option` of one): `X`, or `X.*` for a table whose
    /// every value is one (the key `X.name` of each entry).
    const SECRETS: &'static [&'static str];
}

pub use auditship_macros::Section;

/// Whether the option `opt` of a section (`client_secret`, `headers.Authorization`) is one of
/// its `secrets` ([`Section::SECRETS`]).
pub fn is_secret(secrets: &[&str], opt: &str) -> bool {
    secrets.iter().any(|s| match s.strip_suffix(".*") {
        Some(table) => opt
            .strip_prefix(table)
            .is_some_and(|entry| entry.starts_with('.')),
        None => opt == *s,
    })
}

/// Reads a table of the tree as `T`: a key `T` does not take is reported by `unknown` (which
/// names it) and dropped, and a value of the wrong type is reported and dropped; what remains
/// is read. Every field of `T` must be optional (or defaulted), so that dropping one is fine.
pub fn read_section<T: DeserializeOwned + Default + Section>(
    c: &mut Check<'_>,
    key: &str,
    value: Value,
    mut unknown: impl FnMut(&mut Check<'_>, &str, &str),
) -> T {
    let mut map = match value {
        Value::Object(m) => m,
        other => {
            c.fail(
                key,
                format_args!("must be a table, not {}", type_name(&other)),
            );
            return T::default();
        }
    };
    let known = T::KEYS;
    let strange: Vec<String> = map
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .cloned()
        .collect();
    for k in strange {
        map.remove(&k);
        unknown(c, &format!("{key}.{k}"), &k);
    }
    // One bad value at a time: serde stops at the first, so drop it and read again.
    for _ in 0..=known.len() {
        match serde_path_to_error::deserialize::<_, T>(Value::Object(map.clone())) {
            Ok(t) => return t,
            Err(e) => {
                let path = e.path().to_string();
                let first = e
                    .path()
                    .iter()
                    .next()
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                let msg = e.into_inner().to_string();
                if path == "." || map.remove(&first).is_none() {
                    c.fail(key, msg);
                    return T::default();
                }
                c.fail(&format!("{key}.{path}"), msg);
            }
        }
    }
    T::default()
}

/// The message for a key no section takes: `unknown field`, and the nearest key that is known
/// (one or two letters off) as the likely fix.
pub fn unknown_key(c: &mut Check<'_>, key: &str, name: &str, known: &[&str]) {
    match known
        .iter()
        .map(|k| (distance(name, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
    {
        Some((_, k)) => c.fail(key, format_args!("unknown field; did you mean `{k}`?")),
        None => c.fail(key, "unknown field"),
    }
}

/// Splits a `[[sources]]` or `[[sinks]]` entry (at `key`) in two: the keys every entry takes
/// (`common`) stay in `entry`; the keys of its plugin (`kind`: its name and options) are
/// returned, its section. A key of another plugin (`foreign`) is "not an option of kind X",
/// said only when the kind is known (an unknown kind has its one error, about `kind`); any
/// other key is unknown, with the nearest known one suggested.
pub fn split_entry(
    c: &mut Check<'_>,
    key: &str,
    entry: &mut serde_json::Map<String, Value>,
    common: &[&str],
    kind: Option<(&str, &[&str])>,
    foreign: impl Fn(&str) -> bool,
) -> serde_json::Map<String, Value> {
    let mut section = serde_json::Map::new();
    let theirs: Vec<String> = entry
        .keys()
        .filter(|k| !common.contains(&k.as_str()))
        .cloned()
        .collect();
    for k in theirs {
        let v = entry.remove(&k).expect("listed");
        let at = format!("{key}.{k}");
        match kind {
            Some((_, options)) if options.contains(&k.as_str()) => {
                section.insert(k, v);
            }
            _ if foreign(&k) => {
                if let Some((name, _)) = kind {
                    c.fail(&at, format_args!("not an option of kind {name}"));
                }
            }
            Some((_, options)) => {
                let mut known: Vec<&str> = common.to_vec();
                known.extend(options);
                unknown_key(c, &at, &k, &known);
            }
            None => unknown_key(c, &at, &k, common),
        }
    }
    section
}

/// The known key nearest to `name` (one or two letters off), if any.
pub fn nearest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (distance(name, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance of two short ASCII-ish keys.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::settings::{SecretFile, SecretText};
    use std::collections::BTreeMap;

    #[allow(dead_code)]
    #[derive(serde::Deserialize, Section)]
    #[serde(deny_unknown_fields)]
    struct Example {
        plain: Option<String>,
        #[serde(rename = "renamed-key")]
        renamed: Option<i64>,
        #[serde(skip)]
        skipped: Option<String>,
        #[serde(default)]
        token: SecretText,
        password: Option<SecretText>,
        password_file: Option<SecretFile>,
        #[serde(rename = "key_path")]
        key_file: Option<crate::settings::SecretFile>,
        headers: Option<BTreeMap<String, SecretText>>,
        header_files: BTreeMap<String, SecretFile>,
        table: Option<BTreeMap<String, String>>,
    }

    #[test]
    fn the_derive_lists_keys_and_secrets_by_type() {
        assert_eq!(
            Example::KEYS,
            [
                "plain",
                "renamed-key",
                "token",
                "password",
                "password_file",
                "key_path",
                "headers",
                "header_files",
                "table"
            ]
        );
        assert_eq!(
            Example::SECRETS,
            [
                "token",
                "password",
                "password_file",
                "key_path",
                "headers.*",
                "header_files.*"
            ]
        );
        // The keys are serde's own (what the struct's `Deserialize` names).
        let e = serde_json::from_value::<Example>(serde_json::json!({"nope": 1})).err();
        let e = e.expect("unknown key").to_string();
        assert!(e.contains("`plain`, `renamed-key`, `token`"), "{e}");
    }

    #[test]
    fn a_secret_table_holds_a_secret_in_each_entry() {
        let secrets = Example::SECRETS;
        assert!(is_secret(secrets, "password"));
        assert!(is_secret(secrets, "key_path"));
        assert!(is_secret(secrets, "headers.Authorization"));
        assert!(is_secret(secrets, "header_files.X-Key"));
        assert!(is_secret(secrets, "headers."));
        assert!(!is_secret(secrets, "headers"));
        assert!(!is_secret(secrets, "headersX.y"));
        assert!(!is_secret(secrets, "password.x"));
        assert!(!is_secret(secrets, "plain"));
        assert!(!is_secret(secrets, "table.x"));
    }

    #[test]
    fn secrets_are_never_shown() {
        let t: SecretText = serde_json::from_value(serde_json::json!("hunter2")).unwrap();
        assert_eq!(t.expose(), "hunter2");
        assert_eq!(format!("{t:?}"), "***");
    }

    #[test]
    fn near_misses_are_suggested() {
        assert_eq!(distance("poll_intervall", "poll_interval"), 1);
        assert_eq!(distance("pol_interval", "poll_interval"), 1);
        assert_eq!(distance("abc", "xyz"), 3);
    }
}
