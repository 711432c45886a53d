//! The one entry point from a page's text to its events: each entry of the page's array is read
//! once into its vendor shape (by serde_json, or for a content-keyed source by the canonical
//! scanner and reader, which give exactly what serde_json would; see [`crate::json`]) and handed,
//! with its raw text, to the vendor's normaliser. A content-keyed
//! source also gets each entry's content hash here, from the same read (see
//! [`crate::keys::PageHashes`]); what remains of its key (the occurrence number) depends on the
//! window it is delivered in, and is the poller's `Keyer` (`pipeline::keyer`).

use super::SourceError;
use crate::event::Event;
use crate::json::page::{self, PageError};
use crate::json::{canon, Shape};
use crate::keys::PageHashes;

/// Where a page keeps its entries.
#[derive(Debug, Clone, Copy)]
pub enum Layout<'a> {
    /// The page is a bare array.
    Array,
    /// The array under `field` of an object, with perhaps a count under `total`.
    Envelope {
        field: &'a str,
        total: Option<&'a str>,
    },
}

/// Reads a page in one pass: each entry is parsed as `T` by serde_json and handed, with its raw
/// text, to `normalise`; `capacity` is how many entries to make room for. Returns the events and the
/// envelope's count, when the layout names one and the page has it.
pub fn read_entries<'p, T: serde::Deserialize<'p>>(
    page: &'p str,
    layout: Layout<'_>,
    capacity: usize,
    mut normalise: impl FnMut(&'p str, T) -> Result<Event, SourceError>,
) -> Result<(Vec<Event>, Option<u64>), SourceError> {
    read_elements(page, layout, capacity, |c, events| {
        let (raw, entry) = c.value::<T>()?;
        Ok(normalise(raw, entry).map(|ev| events.push(ev)))
    })
}

/// [`read_entries`] for a content-keyed source: each entry is read once, by the canonical
/// scanner, which gives its content hash (set on the event, so the poller does not compute it
/// again) and its shape `S` (see [`crate::json::decode`]). An entry the encoding cannot give exactly is
/// parsed by serde_json as `read_entries` would, and behaves as it would there.
///
/// The encodings are hashed as they are read (see [`PageHashes`]).
pub fn read_hashed_entries<'p, S: Shape>(
    page: &'p str,
    layout: Layout<'_>,
    capacity: usize,
    mut normalise: impl for<'a> FnMut(&'p str, S::Raw<'a>) -> Result<Event, SourceError>,
) -> Result<(Vec<Event>, Option<u64>), SourceError> {
    #[cfg(test)]
    if tests::SERDE_ONLY.get() {
        return read_entries::<S::Raw<'p>>(page, layout, capacity, normalise);
    }
    let mut scratch = canon::Scratch::default();
    let mut hashing = PageHashes::default();
    let (mut events, total) = read_elements(page, layout, capacity, |c, events| {
        c.hashed_value::<S, _>(&mut scratch, |raw, entry, encoding| {
            events.push(normalise(raw, entry)?);
            if let Some(bytes) = encoding {
                hashing.push(bytes, events.len() - 1, |i, h| {
                    events[i].set_content_hash(h)
                });
            }
            Ok(())
        })
    })?;
    hashing.finish(|i, h| events[i].set_content_hash(h));
    Ok((events, total))
}

/// Reads a page whose entries `element` reads, one at the cursor each time, and pushes (events
/// are built in place: moving one costs more than reading it): an outer error is the page's
/// JSON, an inner one the vendor entry (refused by its normaliser).
fn read_elements<'p>(
    page: &'p str,
    layout: Layout<'_>,
    capacity: usize,
    mut element: impl FnMut(
        &mut page::Cursor<'p>,
        &mut Vec<Event>,
    ) -> Result<Result<(), SourceError>, PageError>,
) -> Result<(Vec<Event>, Option<u64>), SourceError> {
    let mut events = Vec::with_capacity(capacity.min(10_000));
    // An entry the vendor file refuses is reported as it is; anything wrong with the page's
    // JSON says what shape was expected.
    let mut refused = None;
    let each = |c: &mut page::Cursor<'p>| match element(c, &mut events)? {
        Ok(()) => Ok(()),
        Err(e) => {
            refused = Some(e);
            Err(PageError(String::new()))
        }
    };
    let read = match layout {
        Layout::Envelope { field, total } => {
            page::enveloped(page, field, total, each).map(|(_, n)| n)
        }
        Layout::Array => page::bare_array(page, each).map(|_| None),
    };
    match (read, refused) {
        (Ok(total), _) => Ok((events, total)),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(SourceError::Body(format!(
            "expected {}: {}",
            match layout {
                Layout::Array => "[...]".to_string(),
                Layout::Envelope { field, .. } => format!("{{\"{field}\": [...]}}"),
            },
            e.0
        ))),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::json::page::FAST_READS;
    use crate::sources::{domino_audit, domino_datasource, domo, wasabi_air};
    use std::cell::Cell;
    use std::sync::Arc;

    thread_local! {
        /// Makes [`read_hashed_entries`] read every entry with serde_json alone, as
        /// [`read_entries`] does (and as before the canonical scanner).
        pub(crate) static SERDE_ONLY: Cell<bool> = const { Cell::new(false) };
    }

    /// JSON that may repeat keys.
    #[derive(Clone)]
    enum J {
        Lit(String),
        Arr(Vec<J>),
        Obj(Vec<(String, J)>),
    }

    impl J {
        fn from_value(v: &serde_json::Value) -> J {
            match v {
                serde_json::Value::Array(a) => J::Arr(a.iter().map(J::from_value).collect()),
                serde_json::Value::Object(o) => J::Obj(
                    o.iter()
                        .map(|(k, v)| (serde_json::to_string(k).unwrap(), J::from_value(v)))
                        .collect(),
                ),
                other => J::Lit(other.to_string()),
            }
        }

        fn write(&self, rng: &mut fastrand::Rng, out: &mut String) {
            let ws = |rng: &mut fastrand::Rng, out: &mut String| {
                if rng.u8(0..4) == 0 {
                    out.push([' ', '\n', '\t'][rng.usize(0..3)]);
                }
            };
            ws(rng, out);
            match self {
                J::Lit(t) => out.push_str(t),
                J::Arr(items) => {
                    out.push('[');
                    for (i, v) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        v.write(rng, out);
                    }
                    out.push(']');
                }
                J::Obj(members) => {
                    out.push('{');
                    for (i, (k, v)) in members.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        ws(rng, out);
                        out.push_str(k);
                        out.push(':');
                        v.write(rng, out);
                    }
                    out.push('}');
                }
            }
            ws(rng, out);
        }

        /// Every object and array in the tree, by a path of indexes.
        fn paths(&self, at: &mut Vec<usize>, all: &mut Vec<Vec<usize>>) {
            match self {
                J::Lit(_) => {}
                J::Arr(items) => {
                    all.push(at.clone());
                    for (i, v) in items.iter().enumerate() {
                        at.push(i);
                        v.paths(at, all);
                        at.pop();
                    }
                }
                J::Obj(members) => {
                    all.push(at.clone());
                    for (i, (_, v)) in members.iter().enumerate() {
                        at.push(i);
                        v.paths(at, all);
                        at.pop();
                    }
                }
            }
        }

        fn at(&mut self, path: &[usize]) -> &mut J {
            match (self, path.split_first()) {
                (j, None) => j,
                (J::Arr(items), Some((i, rest))) => items[*i].at(rest),
                (J::Obj(members), Some((i, rest))) => members[*i].1.at(rest),
                (J::Lit(_), Some(_)) => unreachable!("paths lead to containers"),
            }
        }
    }

    /// A value of any kind, with the forms that matter to the two readers.
    fn any_value(rng: &mut fastrand::Rng) -> J {
        let lit = |s: &str| J::Lit(s.to_string());
        match rng.u8(0..14) {
            0 => lit("null"),
            1 => lit(["true", "false"][rng.usize(0..2)]),
            2 => lit(["0", "-5", "7", "18446744073709551616", "-0"][rng.usize(0..5)]),
            3 => lit(["1.5", "1e400", "2.5e-3", "100.0"][rng.usize(0..4)]),
            4..=6 => lit([
                r#""plain""#,
                r#""a\/b""#,
                r#""caf\u00e9 \"q\"""#,
                r#""""#,
                r#""2017-12-13 10:57:35 PM""#,
                r#""2023-08-23T21:40:21.669Z""#,
                r#""\ud83d\ude00 é""#,
            ][rng.usize(0..7)]),
            7 => J::Arr(vec![]),
            8 => J::Arr((0..rng.usize(1..4)).map(|_| any_value(rng)).collect()),
            9 => J::Obj(vec![]),
            10 => J::Obj(vec![
                (r#""id""#.into(), lit(r#""x1""#)),
                (r#""name""#.into(), lit(r#""n\u0031""#)),
                (r#""entityType""#.into(), lit(r#""job""#)),
            ]),
            // Counts that take more than one byte, and nesting past the scanner's limit.
            11 => J::Arr((0..130).map(|i| lit(&format!(r#""s{i}""#))).collect()),
            12 => J::Obj(
                (0..130)
                    .map(|i| (format!(r#""k{}""#, 200 - i), lit(&i.to_string())))
                    .collect(),
            ),
            _ => {
                let mut v = lit("1");
                for _ in 0..[2, 127, 130][rng.usize(0..3)] {
                    v = J::Arr(vec![v]);
                }
                v
            }
        }
    }

    /// Changes a random object or array of `j` in a random way.
    fn mutate(rng: &mut fastrand::Rng, j: &mut J) {
        let mut paths = Vec::new();
        j.paths(&mut Vec::new(), &mut paths);
        let node = j.at(&paths[rng.usize(0..paths.len())]);
        match node {
            J::Lit(_) => {}
            J::Arr(items) => match rng.u8(0..3) {
                0 if !items.is_empty() => {
                    items.remove(rng.usize(0..items.len()));
                }
                1 => items.insert(rng.usize(0..=items.len()), any_value(rng)),
                _ => items.reverse(),
            },
            J::Obj(members) => {
                let n = members.len();
                match rng.u8(0..6) {
                    0 if n > 0 => {
                        members.remove(rng.usize(0..n));
                    }
                    1 if n > 0 => members[rng.usize(0..n)].1 = any_value(rng),
                    2 if n > 0 => {
                        // A repeated key, with the same or another value.
                        let mut m = members[rng.usize(0..n)].clone();
                        if rng.bool() {
                            m.1 = any_value(rng);
                        }
                        members.insert(rng.usize(0..=n), m);
                    }
                    3 => rng.shuffle(members),
                    4 if n > 0 => {
                        // The object written as an array of its values (serde reads a struct
                        // either way).
                        *node = J::Arr(std::mem::take(members).into_iter().map(|m| m.1).collect());
                    }
                    _ => members.insert(
                        rng.usize(0..=n),
                        (format!(r#""extra{}""#, rng.u8(0..3)), any_value(rng)),
                    ),
                }
            }
        }
    }

    type Outcome = Result<Vec<(String, usize)>, String>;

    /// What a page read gives: each event as written (raw included) with how much of it was
    /// copied out of the page, or the error. Events read from their canonical encoding must
    /// carry their content hash, and those read by serde_json none.
    fn outcome(r: Result<Vec<Event>, SourceError>, hashed: bool) -> Outcome {
        let events = r.map_err(|e| e.to_string())?;
        Ok(events
            .iter()
            .map(|e| {
                let want = crate::keys::content_hash(e.raw()).ok().filter(|_| hashed);
                if e.content_hash().is_some() || hashed {
                    assert_eq!(e.content_hash(), want, "{}", e.raw());
                }
                let mut out = Vec::new();
                e.write_ndjson(&mut out, true);
                (String::from_utf8(out).unwrap(), e.copied_len())
            })
            .collect())
    }

    /// Reading an entry from its canonical encoding gives exactly what
    /// serde_json's reading gives: the same events (every field, copied or pointing into the page
    /// alike) or the same error.
    #[test]
    fn entries_read_without_serde_json_are_those_serde_json_reads() {
        let domino = r#"{"timestamp":1792731844525,"actor":{"id":"68cb","name":"walter","firstName":"W","lastName":"N"},
            "action":{"eventName":"Start Job","using":[],"traceId":"29f0"},
            "targets":[{"entity":{"entityType":"job","id":"6ada","name":"Run #45097"},"fieldChanges":[]}],
            "affecting":[],"in":{"entityType":"project","id":"68cb","name":"finance-risk-74"},"metadata":{}}"#;
        let domo = r#"{"actionType":"VIEWED","actorId":0,"actorName":"","additionalComment":"Leonard viewed page Intro.",
            "browserDetails":"Mozilla/5.0","device":"desktop","eventText":"Viewed page","ipAddress":"50.207.2.1",
            "objectId":"1552855497","objectName":"Intro to Domo","objectType":"PAGE","time":"2017-12-13 10:57:35 PM",
            "userId":1619916076,"userName":"Leonard Euler","userType":"USER"}"#;
        let datasource = r#"{"dataSourceId":"ds1","dataSourceName":"snowflake-prod","dataSourceType":"SnowflakeConfig",
            "eventKind":"AccessDataSource","metadata":{"performedByUsername":"alice","runType":"Workspace",
            "projectId":"p1","runId":"r1","dataPlaneId":"dp"},"performedBy":"u1",
            "timestamp":"2023-08-23T21:40:21.669Z"}"#;
        let wasabi = r#"{"id":"6adb6a5584e4f284","user_id":"650812c0ed58","action_key":"add-asset",
            "target_kind":"collection","target_id":"315623d2f420","time":"2026-10-23T14:08:21.6625996Z",
            "additional_id":"dc965e37b0ea"}"#;
        let src: Arc<str> = Arc::from("s");
        let utc = jiff::tz::TimeZone::UTC;
        type Read<'a> = dyn Fn(&crate::event::PageText) -> Result<Vec<Event>, SourceError> + 'a;
        let vendors: [(&str, &str, Box<Read<'_>>); 4] = [
            (
                "domino_audit",
                domino,
                Box::new(|p| domino_audit::read_page(&src, p, 4)),
            ),
            (
                "domo",
                domo,
                Box::new(|p| domo::read_page(&src, &utc, p, 4, (0, i64::MAX))),
            ),
            (
                "domino_datasource",
                datasource,
                Box::new(|p| domino_datasource::read_page(&src, p, 4)),
            ),
            (
                "wasabi_air",
                wasabi,
                Box::new(|p| wasabi_air::read_page(&src, p, 4).map(|(events, _)| events)),
            ),
        ];
        let mut rng = fastrand::Rng::with_seed(5);
        for (name, sample, read) in &vendors {
            let base = J::from_value(&serde_json::from_str(sample).unwrap());
            let (mut events, mut errors, mut fast) = (0, 0, 0);
            let hashed = *name != "wasabi_air";
            for round in 0..3000 {
                let mut entries = Vec::new();
                // Now and then a page longer than a batch of hashes (`HASH_BATCH`).
                let n = if round % 50 == 7 {
                    rng.usize(60..200)
                } else {
                    rng.usize(1..4)
                };
                for _ in 0..n {
                    let mut e = base.clone();
                    for _ in 0..rng.usize(0..4) {
                        mutate(&mut rng, &mut e);
                    }
                    entries.push(e);
                }
                let mut text = String::new();
                J::Arr(entries).write(&mut rng, &mut text);
                if *name == "domino_audit" {
                    text = format!(r#"{{"events": {text}}}"#);
                }
                if *name == "wasabi_air" {
                    text = format!(r#"{{"audit_events": {text}, "total": 9}}"#);
                }
                if round % 10 == 9 {
                    // Broken JSON now and then.
                    let mut b = text.into_bytes();
                    let at = rng.usize(0..b.len());
                    b[at] = b"{}[],:\" 0-.e\\"[rng.usize(0..11)];
                    text = String::from_utf8_lossy(&b).into_owned();
                }
                let page: crate::event::PageText = Arc::new(text);
                SERDE_ONLY.set(true);
                let before = outcome(read(&page), false);
                SERDE_ONLY.set(false);
                let reads = FAST_READS.get();
                let now = outcome(read(&page), hashed);
                assert_eq!(now, before, "{name}: {page}");
                match &now {
                    Ok(e) => {
                        events += e.len();
                        fast += FAST_READS.get() - reads;
                    }
                    Err(_) => errors += 1,
                }
            }
            // Both kinds of outcome are well represented, and most entries take the new path.
            eprintln!("{name}: {events} events ({fast} without serde_json), {errors} errors");
            assert!(
                events > 1200 && errors > 300,
                "{name}: {events} events, {errors} errors"
            );
            // (Wasabi AiR's entries are read by serde_json alone since the plain reader went.)
            assert!(
                !hashed || fast * 10 > events * 7,
                "{name}: {fast} of {events} without serde_json"
            );
        }
    }
}
