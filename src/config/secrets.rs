//! `${NAME}` expansion in any string of the file, which knows which keys hold secrets (the
//! secret options themselves, `X` or `X_file`, are read by [`crate::settings::Check::secret`]).

use serde_json::Value;

use crate::settings::section::is_secret;
use crate::settings::Check;

/// Replaces `${NAME}` with the environment variable in every string of the tree (`$${` stays a
/// literal `${`). A variable that is not set is an error naming the key — unless secrets are
/// not wanted and the key is a secret's: then it is only marked, so nothing else is said of it.
pub(super) fn expand_env(v: &mut Value, key: &mut String, c: &mut Check<'_>) {
    match v {
        Value::String(s) if s.contains('$') => match expand_str(s) {
            Ok(e) => *s = e,
            Err(_) if !c.secrets() && is_secret_key(key) => {
                c.mark(key);
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

/// Whether `key` holds a secret (or a secret's file): an option of a `[[sources]]` or
/// `[[sinks]]` entry that is a secret of some vendor's or sink kind's section (its
/// [`Section::SECRETS`](crate::settings::Section::SECRETS), known by the fields' types; the
/// entry's kind is not looked at). `agent.state_url` is not one: every command needs it.
fn is_secret_key(key: &str) -> bool {
    let entry = |prefix: &str| {
        key.strip_prefix(prefix)
            .and_then(|r| r.split_once("]."))
            .map(|(_, opt)| opt)
    };
    if let Some(opt) = entry("sinks[") {
        crate::sinks::DESTINATIONS
            .iter()
            .any(|d| is_secret(d.secrets(), opt))
    } else if let Some(opt) = entry("sources[") {
        crate::sources::VENDORS
            .iter()
            .any(|v| is_secret(v.secrets(), opt))
    } else {
        false
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Section;

    /// `X` and `X_file` are one secret option: when a section takes both, both are secrets or
    /// neither is (so a new secret option cannot be half-marked by its types).
    #[test]
    fn a_secret_and_its_file_are_marked_together() {
        let sections = crate::sources::VENDORS
            .iter()
            .map(|v| (v.kind(), v.options(), v.secrets()))
            .chain(
                crate::sinks::DESTINATIONS
                    .iter()
                    .map(|d| (d.kind(), d.options(), d.secrets())),
            )
            .chain([(
                "agent",
                crate::config::agent::RawAgent::KEYS,
                crate::config::agent::RawAgent::SECRETS,
            )]);
        for (kind, keys, secrets) in sections {
            for secret in secrets {
                let key = secret.strip_suffix(".*").unwrap_or(secret);
                assert!(keys.contains(&key), "{kind}: secret {secret} is not a key");
            }
            for file in keys {
                let Some(base) = file.strip_suffix("_file") else {
                    continue;
                };
                if keys.contains(&base) {
                    assert_eq!(
                        secrets.contains(&base),
                        secrets.contains(file),
                        "{kind}: {base} and {file}: both secrets or neither"
                    );
                }
            }
        }
    }

    /// The secret keys as they were named before their types said so (issue 28).
    fn secret_by_name(key: &str) -> bool {
        const SINKS: &[&str] = &[
            "client_secret",
            "client_secret_file",
            "sasl_password",
            "sasl_password_file",
            "secret_access_key",
            "secret_access_key_file",
            "session_token",
            "session_token_file",
        ];
        if let Some(rest) = key.strip_prefix("sinks[") {
            let opt = rest.split_once("].").map_or("", |(_, o)| o);
            return opt.starts_with("headers.")
                || opt.starts_with("header_files.")
                || SINKS.contains(&opt);
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

    #[test]
    fn the_secret_keys_are_those_named_before() {
        let mut opts: Vec<String> = crate::sources::VENDORS
            .iter()
            .flat_map(|v| v.options())
            .chain(crate::sinks::DESTINATIONS.iter().flat_map(|d| d.options()))
            .chain(crate::sources::config::RawSource::KEYS)
            .chain(crate::sinks::config::RawSink::KEYS)
            .chain(crate::config::agent::RawAgent::KEYS)
            .map(|k| k.to_string())
            .collect();
        for k in opts.clone() {
            opts.extend([
                format!("{k}.Authorization"),
                format!("{k}."),
                format!("{k}[0]"),
                format!("{k}_file"),
            ]);
        }
        let mut secret = 0;
        for opt in &opts {
            for entry in ["sources[0]", "sinks[3]", "agent", "sources[1]x", "sinks["] {
                let key = format!("{entry}.{opt}");
                assert_eq!(is_secret_key(&key), secret_by_name(&key), "{key}");
                secret += usize::from(is_secret_key(&key));
            }
        }
        assert!(secret > 20, "{secret}");
        assert!(is_secret_key("sinks[0].headers.Authorization"));
        assert!(is_secret_key("sources[2].client_id"));
        assert!(!is_secret_key("sinks[0].client_id"));
        assert!(!is_secret_key("agent.state_url"));
    }
}
