//! A section of the file (a table of its tree) into its serde struct with every problem
//! reported, not only the first: a key that a section does not know is reported and dropped, a
//! value of the wrong type likewise, and the rest of the section is still read, so an unknown
//! key never hides the other problems.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Check;

/// The field names serde knows for `T` (a struct): the keys its section takes.
pub fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Fields(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Stop {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for &mut Fields {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut f = Fields(None);
    let _ = T::deserialize(&mut f);
    f.0.unwrap_or(&[])
}

/// Reads a table of the tree as `T`: a key `T` does not take is reported by `unknown` (which
/// names it) and dropped, and a value of the wrong type is reported and dropped; what remains
/// is read. Every field of `T` must be optional (or defaulted), so that dropping one is fine.
pub fn read_section<T: DeserializeOwned + Default>(
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
    let known = fields::<T>();
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

    #[test]
    fn near_misses_are_suggested() {
        assert_eq!(distance("poll_intervall", "poll_interval"), 1);
        assert_eq!(distance("pol_interval", "poll_interval"), 1);
        assert_eq!(distance("abc", "xyz"), 3);
    }
}
