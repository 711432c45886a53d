//! The raw file: TOML text into a tree of values, and a section of that tree into its serde
//! struct with every problem reported, not only the first.
//!
//! The tree is `serde_json::Value`, so that `${ENV}` expansion (`secrets.rs`) walks one shape
//! and every section reads it with serde. A key that a section does not know is reported and
//! dropped, a value of the wrong type likewise, and the rest of the section is still read: an
//! unknown key never hides the other problems.

use serde_json::{Map, Value};

/// Parses TOML text into a tree, or says where and why not: the parser's reason and the line
/// with a caret under the spot.
pub(super) fn parse_toml(text: &str) -> Result<Map<String, Value>, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
    Ok(table.into_iter().map(|(k, v)| (k, to_json(v))).collect())
}

/// `not valid TOML at line L, column C: reason`, then the line and a caret.
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    let reason = e.message().trim().replace('\n', "; ");
    let Some(span) = e.span() else {
        return format!("not valid TOML: {reason}");
    };
    let at = span.start.min(text.len());
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let line_no = text[..at].matches('\n').count() + 1;
    let line = text[line_start..line_end].trim_end_matches('\r');
    let column = text[line_start..at].chars().count();
    // Tabs keep their width so the caret stays under the spot.
    let pad: String = line
        .chars()
        .take(column)
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    format!(
        "not valid TOML at line {line_no}, column {}: {reason}\n    {line}\n    {pad}^",
        column + 1
    )
}

fn to_json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        // JSON has no NaN or infinity (`Value::from` would make them null, as if the key were
        // not there): they stay text, which a number key refuses, naming itself.
        toml::Value::Float(f) if !f.is_finite() => Value::String(f.to_string()),
        toml::Value::Float(f) => Value::from(f),
        toml::Value::Boolean(b) => Value::Bool(b),
        // A bare TOML date-time reads as the text it was written as (`start = 2024-10-18T00:00:00Z`).
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.into_iter().map(|(k, v)| (k, to_json(v))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syntax_error_shows_the_reason_and_the_line_with_a_caret() {
        let e = parse_toml("[agent]\nstate_path = \"/tmp/x\" lag\n").unwrap_err();
        let lines: Vec<&str> = e.lines().collect();
        let head = "not valid TOML at line 2, column 23: ";
        assert!(lines[0].starts_with(head), "{e}");
        // The parser's reason, not only where.
        assert!(lines[0].len() > head.len() + 10, "{e}");
        assert_eq!(lines[1], "    state_path = \"/tmp/x\" lag");
        assert_eq!(lines[2], format!("    {}^", " ".repeat(22)));
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn bare_datetimes_read_as_their_text() {
        let t = parse_toml("start = 2024-10-18T00:00:00Z\n").unwrap();
        assert_eq!(t["start"], "2024-10-18T00:00:00Z");
    }
}
