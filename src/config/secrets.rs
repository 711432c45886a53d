//! `${NAME}` expansion in any string of the file, which knows which keys hold secrets (the
//! secret options themselves, `X` or `X_file`, are read by [`crate::settings::Check::secret`]).

use serde_json::Value;

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
