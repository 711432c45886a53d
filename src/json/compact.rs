//! Pretty-printed pages made compact before they are read. A vendor or gateway that formats its
//! JSON puts newlines and indentation inside every entry, and an event's `raw` is a span of its
//! page: copied as it is, one entry would leave on several lines (NDJSON lines torn, `_bulk`
//! refused with a 400 on every retry). So a page that holds whitespace outside its strings has
//! it dropped once, in place, before its entries are read ([`super::page_text`]), and every span
//! the events point into is already compact. Strings, escapes included, are left as they are;
//! content hashes are of the canonical encoding (see [`super::canon`]), which never saw the whitespace,
//! so ids are the same either way.

/// Whether a page looks formatted: it holds a newline, carriage return or tab (JSON allows none
/// of them raw inside a string, so these are always outside one, and a page without them has
/// every entry on one line), or its first `:` has a space beside it, as a formatter that keeps
/// to one line (Python's `json.dumps`, for one) lays out every key and value. A compact page
/// costs one vectorised search and a look at its first key; a search for `": ` all through it
/// would cost six times that search (JSON is full of quotes, colons and spaces) and more than
/// the UTF-8 check. A page whose whitespace is elsewhere only (a space after a comma, or a
/// first entry compact and the others one-line formatted) is read as it is: its entries are
/// on one line all the same.
pub fn is_formatted(page: &[u8]) -> bool {
    memchr::memchr3(b'\n', b'\r', b'\t', page).is_some()
        || memchr::memchr(b':', page)
            .is_some_and(|i| page.get(i + 1) == Some(&b' ') || (i > 0 && page[i - 1] == b' '))
}

/// Drops the whitespace outside strings from JSON text, in place. A string is copied through
/// its closing quote (a backslash takes the byte after it along, so `\"` does not end it).
/// Where dropping a run of whitespace would join two tokens into one (two numbers or literals,
/// as in the invalid `[1 2]`), a single space is kept: text that is not JSON stays not JSON
/// rather than turning into other JSON. Only ASCII bytes are dropped, so UTF-8 stays UTF-8.
pub fn compact(b: &mut Vec<u8>) {
    let n = b.len();
    let (mut r, mut w) = (0, 0);
    while r < n {
        match b[r] {
            b'"' => {
                let start = r;
                r += 1;
                loop {
                    // The next quote, backslash or (not JSON, copied as it is) control byte.
                    match super::scan::find_string_stop(b, r) {
                        None => r = n,
                        Some(i) if b[i] == b'"' => r = i + 1,
                        Some(i) if b[i] == b'\\' => {
                            r = (i + 2).min(n);
                            continue;
                        }
                        Some(i) => {
                            r = i + 1;
                            continue;
                        }
                    }
                    break;
                }
                if w < start {
                    b.copy_within(start..r, w);
                }
                w += r - start;
            }
            b' ' | b'\t' | b'\n' | b'\r' => {
                while r < n && matches!(b[r], b' ' | b'\t' | b'\n' | b'\r') {
                    r += 1;
                }
                if w > 0 && r < n && joins(b[w - 1]) && joins(b[r]) {
                    b[w] = b' ';
                    w += 1;
                }
            }
            c => {
                b[w] = c;
                w += 1;
                r += 1;
            }
        }
    }
    b.truncate(w);
}

/// Whether a byte is part of a number or literal (or of something that is not JSON): two such
/// bytes with whitespace between them belong to two tokens.
fn joins(c: u8) -> bool {
    !matches!(c, b'{' | b'}' | b'[' | b']' | b',' | b':' | b'"')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compacted(s: &str) -> String {
        let mut b = s.as_bytes().to_vec();
        compact(&mut b);
        String::from_utf8(b).expect("compacting keeps UTF-8")
    }

    #[test]
    fn nested_containers_lose_their_layout() {
        let pretty = "{\n  \"events\": [\n    {\n      \"a\": 1,\n      \"b\": [\n        true,\n        null,\n        -1.5e3\n      ],\n      \"c\": {}\n    },\n\t{ \"d\" : [ ] , \"e\" :{ \"f\":[[ ]]}}\r\n  ],\n  \"total\": 2\n}\n";
        let want = r#"{"events":[{"a":1,"b":[true,null,-1.5e3],"c":{}},{"d":[],"e":{"f":[[]]}}],"total":2}"#;
        assert!(is_formatted(pretty.as_bytes()));
        assert_eq!(compacted(pretty), want);
        assert!(!is_formatted(want.as_bytes()));
        assert_eq!(compacted(want), want);
    }

    #[test]
    fn strings_are_left_as_they_are() {
        // Escaped quotes and backslashes (one just before a closing quote), whitespace and
        // punctuation inside strings, escapes of control characters, and unicode raw and escaped.
        let pretty = concat!(
            "[\n  \"say \\\"hi\\\" , { } : [ ]\",\n",
            "  \"C:\\\\dir\\\\\",\n",
            "  \"\\\\\\\"\",\n",
            "  \"  two  spaces, \\t\\n\\r escaped  \",\n",
            "  { \"clé ☃\" : \"caf\\u00e9 é 😀 \\ud83d\\ude00\" },\n",
            "  \"\"\n]"
        );
        let want = concat!(
            "[\"say \\\"hi\\\" , { } : [ ]\",",
            "\"C:\\\\dir\\\\\",",
            "\"\\\\\\\"\",",
            "\"  two  spaces, \\t\\n\\r escaped  \",",
            "{\"clé ☃\":\"caf\\u00e9 é 😀 \\ud83d\\ude00\"},",
            "\"\"]"
        );
        assert_eq!(compacted(pretty), want);
        let v = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        assert_eq!(v(&compacted(pretty)), v(pretty));
    }

    #[test]
    fn text_that_is_not_json_stays_not_json() {
        for (text, want) in [
            ("[1 2]", "[1 2]"),
            ("[1 \n\t 2]", "[1 2]"),
            ("[true false]", "[true false]"),
            ("[- 1]", "[- 1]"),
            ("{\"a\": 1 .5}", "{\"a\":1 .5}"),
            ("[\"a\" \"b\"]", "[\"a\"\"b\"]"),
            ("[\"unterminated  ", "[\"unterminated  "),
            ("[\"ends in a backslash\\", "[\"ends in a backslash\\"),
            ("  ", ""),
            ("", ""),
        ] {
            let got = compacted(text);
            assert_eq!(got, want, "{text:?}");
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(text).is_ok(),
                serde_json::from_str::<serde_json::Value>(&got).is_ok(),
                "{text:?}"
            );
        }
        // A raw newline inside a string (not JSON) is kept.
        assert_eq!(compacted("[\"a\nb\" ]"), "[\"a\nb\"]");
    }

    #[test]
    fn a_compact_page_is_not_formatted_unless_its_first_key_looks_so() {
        let page = br#"{"events":[{"who":"a b","n":[1,2],"s":"x, y","t":"10: 57"}],"total":1}"#;
        assert!(!is_formatted(page));
        for formatted in [
            &b"{\"a\":1,\n\"b\":2}"[..],
            b"{\"a\":1,\r\"b\":2}",
            b"{\"a\":1,\t\"b\":2}",
            b"{\"a\": 1, \"b\": 2}",
            b"[{\"a\" :1,\"b\" :2}]",
        ] {
            assert!(is_formatted(formatted), "{formatted:?}");
        }
        // A first key that holds `: ` is taken for formatting; compacting then changes nothing.
        let odd = br#"{"say: hi":1}"#;
        assert!(is_formatted(odd));
        assert_eq!(compacted(std::str::from_utf8(odd).unwrap()).as_bytes(), odd);
        // Spaces on one line after the first key are not looked for.
        assert!(!is_formatted(br#"{"a":1, "b": 2}"#));
    }

    /// Compact JSON text of a random value: every kind of token, unicode and escapes, nesting.
    fn random_compact(rng: &mut fastrand::Rng, depth: u32, out: &mut String) {
        const STRINGS: [&str; 8] = [
            r#""""#,
            r#""plain""#,
            r#""a \"quoted\" word""#,
            r#""back\\slash\\""#,
            r#""  spaced , : { } [ ]  ""#,
            r#""caf\u00e9 é ☃ 😀""#,
            r#""\\\"""#,
            r#""tab\tnewline\n""#,
        ];
        const SCALARS: [&str; 8] = ["0", "-12", "3.25e-7", "1E4", "true", "false", "null", "7"];
        match rng.u8(0..if depth > 3 { 2 } else { 4 }) {
            0 => out.push_str(SCALARS[rng.usize(0..SCALARS.len())]),
            1 => out.push_str(STRINGS[rng.usize(0..STRINGS.len())]),
            2 => {
                out.push('[');
                for i in 0..rng.usize(0..4) {
                    if i > 0 {
                        out.push(',');
                    }
                    random_compact(rng, depth + 1, out);
                }
                out.push(']');
            }
            _ => {
                out.push('{');
                for i in 0..rng.usize(0..4) {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&format!(r#""k{i} é""#));
                    out.push(':');
                    random_compact(rng, depth + 1, out);
                }
                out.push('}');
            }
        }
    }

    /// `compact` with whitespace runs put at random between its tokens.
    fn spread(rng: &mut fastrand::Rng, compact: &str) -> String {
        let ws = |rng: &mut fastrand::Rng, out: &mut String| {
            for _ in 0..rng.usize(0..3) {
                out.push_str([" ", "  ", "\n", "\r\n", "\t", "\n    "][rng.usize(0..6)]);
            }
        };
        let mut out = String::new();
        let mut in_string = false;
        let mut escaped = false;
        for c in compact.chars() {
            let structural = !in_string && matches!(c, '{' | '}' | '[' | ']' | ',' | ':');
            if structural {
                ws(rng, &mut out);
            }
            if !in_string && c == '"' {
                ws(rng, &mut out);
            }
            out.push(c);
            if structural {
                ws(rng, &mut out);
            }
            if in_string {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_string = false;
                    ws(rng, &mut out);
                }
            } else if c == '"' {
                in_string = true;
            }
        }
        out
    }

    /// The reference: JSON made with whitespace at random between its tokens compacts back to
    /// the text it was made from, byte for byte, and holds the same value.
    #[test]
    fn spread_json_compacts_back_to_its_compact_text() {
        let mut rng = fastrand::Rng::with_seed(9);
        for _ in 0..3000 {
            let mut text = String::new();
            random_compact(&mut rng, 0, &mut text);
            assert_eq!(compacted(&text), text);
            let spread = spread(&mut rng, &text);
            assert_eq!(compacted(&spread), text, "{spread:?}");
            let v = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
            assert_eq!(v(&spread), v(&text), "{spread:?}");
        }
    }

    /// Pretty pages give the events of compact ones (a regression test for `raw` copied with the
    /// page's newlines): the page's text is the compact one, every event is the same (its `raw`
    /// compact, every field), and so are the ids; those are also the ids of the pretty text read
    /// as it is, as before pages were made compact, so keys already stored still match.
    #[test]
    fn pretty_pages_give_the_events_and_ids_of_compact_ones() {
        use crate::event::{Event, PageText};
        use crate::keys;
        use crate::sources::{
            domino_audit, domino_datasource, domo, page_text, wasabi_air, SourceError,
        };
        use std::sync::Arc;
        const DOMINO: &str = r#"{"timestamp":1792731844525,"actor":{"id":"68cb","name":"walter","firstName":"W","lastName":"N"},"action":{"eventName":"Start Job","using":[],"traceId":"29f0"},"targets":[{"entity":{"entityType":"job","id":"6ada","name":"Run \"no. 45097\""},"fieldChanges":[]}],"affecting":[],"in":{"entityType":"project","id":"68cb","name":"finance-risk-74"},"metadata":{}}"#;
        const DOMO: &str = r#"{"actionType":"VIEWED","actorId":0,"actorName":"","additionalComment":"Leonard viewed page \u201cIntro\u201d.","browserDetails":"Mozilla/5.0 (X11; Linux)","device":"desktop","eventText":"Viewed page","ipAddress":"50.207.2.1","objectId":"1552855497","objectName":"Intro to Domo ☃","objectType":"PAGE","time":"2017-12-13 10:57:35 PM","userId":1619916076,"userName":"Leonard Euler","userType":"USER"}"#;
        const DATASOURCE: &str = r#"{"dataSourceId":"ds1","dataSourceName":"snowflake-prod","dataSourceType":"SnowflakeConfig","eventKind":"AccessDataSource","metadata":{"performedByUsername":"alice","runType":"Workspace","projectId":"p1","runId":"r1","dataPlaneId":"dp"},"performedBy":"u1","timestamp":"2023-08-23T21:40:21.669Z"}"#;
        const WASABI: &str = r#"{"id":"6adb6a5584e4f284","user_id":"650812c0ed58","action_key":"add-asset","target_kind":"collection","target_id":"315623d2f420","time":"2026-10-23T14:08:21.6625996Z","additional_id":"dc965e37b0ea"}"#;
        let src: Arc<str> = Arc::from("s");
        let utc = jiff::tz::TimeZone::UTC;
        type Read<'a> = dyn Fn(&PageText) -> Result<Vec<Event>, SourceError> + 'a;
        let vendors: [(&str, &str, String, Box<Read<'_>>); 4] = [
            (
                "domino_audit",
                DOMINO,
                DOMINO.replace("1792731844525", "1792731844526"),
                Box::new(|p| domino_audit::read_page(&src, p, 9)),
            ),
            (
                "domo",
                DOMO,
                DOMO.replace("1552855497", "1552855498"),
                Box::new(|p| domo::read_page(&src, &utc, p, 9, (0, i64::MAX))),
            ),
            (
                "domino_datasource",
                DATASOURCE,
                DATASOURCE.replace("\"ds1\"", "\"ds2\""),
                Box::new(|p| domino_datasource::read_page(&src, p, 9)),
            ),
            (
                "wasabi_air",
                WASABI,
                WASABI.replace("6adb6a5584e4f284", "6adb6a5584e4f285"),
                Box::new(|p| wasabi_air::read_page(&src, p, 9).map(|(events, _)| events)),
            ),
        ];
        // Each event's id as the poller makes it (the vendor's, or content hash and occurrence),
        // and the event as written.
        let ids = |events: Vec<Event>| {
            let mut occurrences = keys::Occurrences::default();
            events
                .iter()
                .map(|e| {
                    let id = if e.id().is_empty() {
                        let h = e
                            .content_hash()
                            .unwrap_or_else(|| keys::content_hash(e.raw()).unwrap());
                        let key = keys::occurrence_key(&h, occurrences.next(h));
                        String::from_utf8(keys::hex_bytes(&key).to_vec()).unwrap()
                    } else {
                        e.id().to_string()
                    };
                    let mut out = Vec::new();
                    e.write_ndjson(&mut out, true);
                    (id, String::from_utf8(out).unwrap())
                })
                .collect::<Vec<_>>()
        };
        let mut rng = fastrand::Rng::with_seed(3);
        for (name, entry, other, read) in &vendors {
            // An entry, its twin, and another entry.
            let entries = [*entry, *entry, other.as_str()].join(",");
            let compact = match *name {
                "domino_audit" => format!(r#"{{"events":[{entries}],"estimatedMatches":3}}"#),
                "wasabi_air" => format!(r#"{{"audit_events":[{entries}],"total":3}}"#),
                _ => format!("[{entries}]"),
            };
            let want = ids(read(&page_text(compact.clone().into_bytes()).unwrap()).unwrap());
            assert_eq!(want.len(), 3, "{name}");
            if *name != "wasabi_air" {
                assert_ne!(want[0].0, want[1].0, "{name}: twins have ids of their own");
            }
            for _ in 0..200 {
                let pretty = spread(&mut rng, &compact);
                let page = page_text(pretty.clone().into_bytes()).unwrap();
                if is_formatted(pretty.as_bytes()) {
                    assert_eq!(*page, compact, "{name}");
                } else {
                    assert!(!pretty.contains('\n'), "{name}: {pretty}");
                }
                assert_eq!(ids(read(&page).unwrap()), want, "{name}: {pretty}");
                let as_is = ids(read(&Arc::new(pretty.clone())).unwrap());
                assert_eq!(
                    as_is.iter().map(|e| &e.0).collect::<Vec<_>>(),
                    want.iter().map(|e| &e.0).collect::<Vec<_>>(),
                    "{name}: {pretty}"
                );
            }
        }
    }
}
