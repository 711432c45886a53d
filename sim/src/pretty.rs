//! Pretty-printing of response bodies, as a vendor or gateway that formats its JSON serves them
//! ([`SimConfig::pretty`](crate::SimConfig::pretty)): the same content, with a newline and
//! two-space indentation after every `{`, `[` and `,`, and `": "` between a key and its value.

/// `json` (compact JSON, as the emulators render it) pretty-printed, as serde_json's
/// `to_string_pretty` lays it out: strings (escapes included) are copied as they are, empty
/// containers stay `{}` and `[]`, and whitespace already there outside strings is dropped.
/// One pass over the bytes, so that pages of a thousand events cost next to nothing.
pub(crate) fn pretty(json: &str) -> String {
    let b = json.as_bytes();
    let mut out = Vec::with_capacity(b.len() + b.len() / 2);
    let mut depth = 0usize;
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        out.resize(out.len() + 2 * depth, b' ');
    };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' => {
                // Copy the string through its closing quote; a backslash takes the next byte.
                let start = i;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(b.len());
                out.extend_from_slice(&b[start..i]);
                continue;
            }
            b'{' | b'[' => {
                out.push(c);
                let close = if c == b'{' { b'}' } else { b']' };
                if b.get(i + 1) == Some(&close) {
                    out.push(close);
                    i += 1;
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            b',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => out.push(c),
        }
        i += 1;
    }
    // Only ASCII was added or dropped, and strings were copied whole.
    String::from_utf8(out).expect("pretty-printing keeps UTF-8")
}

#[cfg(test)]
mod tests {
    use super::pretty;

    #[test]
    fn lays_out_like_serde_json_pretty() {
        let compact = r#"{"events":[{"a":1,"b":[],"c":{},"d":"x: \"y\", [z]\\","e":[true,null,-1.5]},{"é":"☃"}],"n":2}"#;
        let v: serde_json::Value = serde_json::from_str(compact).unwrap();
        let p = pretty(compact);
        assert_eq!(serde_json::from_str::<serde_json::Value>(&p).unwrap(), v);
        // serde_json's own layout, where its (sorted) key order is the same as ours.
        assert_eq!(p, serde_json::to_string_pretty(&v).unwrap());
        assert!(p.contains("\n    {\n      \"a\": 1,"), "{p}");
    }

    #[test]
    fn bare_arrays_and_empty_bodies() {
        assert_eq!(pretty("[]"), "[]");
        assert_eq!(pretty("[1,2]"), "[\n  1,\n  2\n]");
        assert_eq!(pretty(""), "");
    }
}
