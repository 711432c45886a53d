//! Events as a sink's queue holds them (see `state`'s `queue` table): a page's new events,
//! written once when the page is committed and read back by each sink's task.
//!
//! A chunk is one text (every string the events need, valid UTF-8, so the events read back
//! point into it as they pointed into their page) followed by a fixed-size record per event:
//! its time, where its raw JSON and its fields are in the text, and its content id. A field
//! that is verbatim inside the event's raw JSON (the usual case) is stored as a place in it,
//! not copied again. Read back, an event writes byte for byte what it wrote when it was read.

use std::sync::Arc;

use super::{Event, Span, ABSENT, FIELDS};
use crate::timefmt::Nanos;

/// The first byte of a chunk: its layout. A chunk of another layout is refused, not guessed.
const VERSION: u8 = 1;
/// version, count, text length.
const HEADER: usize = 1 + 4 + 4;
/// time, flags, raw, fields.
const RECORD: usize = 8 + 1 + 8 + FIELDS * 8;
/// Flag: 32 bytes of content id follow the record.
const HAS_CONTENT_ID: u8 = 1;

/// The events of one chunk, written for a queue.
pub fn encode(events: &[Event]) -> Vec<u8> {
    let mut text = String::new();
    let mut table = Vec::with_capacity(events.len() * RECORD);
    for e in events {
        let raw = e.text(e.raw);
        let raw_span = match raw {
            Some(r) => {
                let at = text.len();
                text.push_str(r);
                Span {
                    start: at as u32,
                    len: r.len() as u32,
                }
            }
            None => Span::NONE,
        };
        table.extend_from_slice(&e.time.to_le_bytes());
        table.push(if e.content_id.is_some() {
            HAS_CONTENT_ID
        } else {
            0
        });
        put_span(&mut table, raw_span);
        for f in &e.fields {
            let span = match e.text(*f) {
                None => Span::NONE,
                Some(s) => match raw.and_then(|r| inside(r, s)) {
                    Some(off) => Span {
                        start: raw_span.start + off as u32,
                        len: s.len() as u32,
                    },
                    None => {
                        let at = text.len();
                        text.push_str(s);
                        Span {
                            start: at as u32,
                            len: s.len() as u32,
                        }
                    }
                },
            };
            put_span(&mut table, span);
        }
        if let Some(id) = &e.content_id {
            table.extend_from_slice(id);
        }
    }
    assert!(text.len() < u32::MAX as usize, "a chunk's text over 4 GiB");
    let mut out = Vec::with_capacity(HEADER + text.len() + table.len());
    out.push(VERSION);
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&table);
    out
}

/// How many events a chunk holds, without reading them.
pub fn count(chunk: &[u8]) -> Option<u32> {
    (chunk.len() >= HEADER && chunk[0] == VERSION).then(|| u32_at(chunk, 1))
}

/// The events of a chunk, read by `source` (of `kind`, from `vendor`). An error names what is
/// wrong with it; a damaged chunk is never read as fewer events.
pub fn decode(
    chunk: &[u8],
    source: &Arc<str>,
    kind: &'static str,
    vendor: &'static str,
    siem: &'static crate::rows::Table,
) -> Result<Vec<Event>, String> {
    if chunk.len() < HEADER {
        return Err(format!(
            "a queued chunk of {} bytes is too short",
            chunk.len()
        ));
    }
    if chunk[0] != VERSION {
        return Err(format!(
            "a queued chunk of layout {} (this release reads {VERSION})",
            chunk[0]
        ));
    }
    let n = u32_at(chunk, 1) as usize;
    let text_len = u32_at(chunk, 5) as usize;
    let table_at = HEADER + text_len;
    let text = chunk
        .get(HEADER..table_at)
        .ok_or("a queued chunk shorter than its text")?;
    let text = std::str::from_utf8(text).map_err(|e| format!("a queued chunk's text: {e}"))?;
    let page = Arc::new(text.to_string());
    let mut at = table_at;
    let mut events = Vec::with_capacity(n);
    let span_ok = |s: Span| s.len == ABSENT || (s.start as usize + s.len as usize) <= text_len;
    for _ in 0..n {
        let rec = chunk
            .get(at..at + RECORD)
            .ok_or("a queued chunk shorter than its events")?;
        at += RECORD;
        let time = Nanos::from_le_bytes(rec[..8].try_into().expect("8 bytes"));
        let flags = rec[8];
        let raw = span_at(rec, 9);
        let mut fields = [Span::NONE; FIELDS];
        for (i, f) in fields.iter_mut().enumerate() {
            *f = span_at(rec, 17 + i * 8);
        }
        if !span_ok(raw) || !fields.iter().all(|f| span_ok(*f)) {
            return Err("a queued event points outside its chunk".into());
        }
        let bounds = |s: Span| {
            s.len == ABSENT
                || (page.is_char_boundary(s.start as usize)
                    && page.is_char_boundary(s.start as usize + s.len as usize))
        };
        if !bounds(raw) || !fields.iter().all(|f| bounds(*f)) {
            return Err("a queued event's text is cut inside a character".into());
        }
        let content_id = if flags & HAS_CONTENT_ID != 0 {
            let id: [u8; 32] = chunk
                .get(at..at + 32)
                .ok_or("a queued chunk shorter than its events")?
                .try_into()
                .expect("32 bytes");
            at += 32;
            if !id.is_ascii() {
                return Err("a queued event's content id is not hex".into());
            }
            Some(id)
        } else {
            None
        };
        events.push(Event {
            source: source.clone(),
            kind,
            vendor,
            siem,
            time,
            page: page.clone(),
            own: String::new(),
            raw,
            fields,
            content_id,
            content_hash: None,
            ambiguous_time: false,
        });
    }
    if at != chunk.len() {
        return Err("a queued chunk longer than its events".into());
    }
    Ok(events)
}

/// Where `s` starts inside `outer`, if it is a slice of it.
fn inside(outer: &str, s: &str) -> Option<usize> {
    let (base, at) = (outer.as_ptr() as usize, s.as_ptr() as usize);
    (at >= base && at + s.len() <= base + outer.len()).then(|| at - base)
}

fn put_span(out: &mut Vec<u8>, s: Span) {
    out.extend_from_slice(&s.start.to_le_bytes());
    out.extend_from_slice(&s.len.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn span_at(b: &[u8], at: usize) -> Span {
    Span {
        start: u32_at(b, at),
        len: u32_at(b, at + 4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Field;

    fn sample() -> Vec<Event> {
        let page: crate::event::PageText = Arc::new(
            r#"[{"id":"a1","who":"ann","what":"login"},{"id":"b2","what":"caf\u00e9 ünï"}]"#
                .to_string(),
        );
        let src: Arc<str> = Arc::from("s1");
        let first = &page[1..page.find('}').unwrap() + 1];
        let mut a = Event::new(&src, "domino_audit", "domino", 1_000, &page, first);
        a.set(Field::Id, Some(&first[7..9]));
        a.set(Field::ActorName, Some(&first[17..20]));
        a.set(Field::Action, Some("login"));
        a.set(Field::TargetName, Some("copied ünï text"));
        let second = &page[page.find(",{").unwrap() + 1..page.len() - 1];
        let mut b = Event::new(&src, "domino_audit", "domino", 2_000, &page, second);
        b.set_content_id(&[7u8; 16]);
        b.set(Field::Action, Some("café ünï"));
        let c = Event::standalone("s1", "domino_audit", "domino", 3, "{}");
        vec![a, b, c]
    }

    fn written(events: &[Event]) -> Vec<String> {
        let w = crate::encodings::Writer::default();
        events
            .iter()
            .map(|e| {
                let mut out = Vec::new();
                w.line(e, &mut out);
                String::from_utf8(out).unwrap()
            })
            .collect()
    }

    #[test]
    fn events_read_back_write_what_they_wrote() {
        let events = sample();
        let chunk = encode(&events);
        assert_eq!(count(&chunk), Some(3));
        let back = decode(
            &chunk,
            &Arc::from("s1"),
            "domino_audit",
            "domino",
            &crate::rows::GENERIC,
        )
        .unwrap();
        assert_eq!(written(&back), written(&events));
        for (a, b) in events.iter().zip(&back) {
            assert_eq!(a.time, b.time);
            assert_eq!(a.id(), b.id());
            assert_eq!(a.raw(), b.raw());
            for f in 0..FIELDS {
                assert_eq!(a.text(a.fields[f]), b.text(b.fields[f]));
            }
        }
        // Verbatim fields are places in the raw JSON, not copies.
        let text_len = u32_at(&chunk, 5) as usize;
        let raws: usize = events.iter().map(|e| e.raw().len()).sum();
        assert_eq!(
            text_len,
            raws + "login".len() + "copied ünï text".len() + "café ünï".len()
        );
    }

    #[test]
    fn a_damaged_chunk_is_refused_never_read_short() {
        let chunk = encode(&sample());
        let src: Arc<str> = Arc::from("s1");
        for cut in [0, 3, 9, 20, chunk.len() - 1] {
            assert!(
                decode(&chunk[..cut], &src, "k", "v", &crate::rows::GENERIC).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = chunk.clone();
        longer.push(0);
        assert!(decode(&longer, &src, "k", "v", &crate::rows::GENERIC).is_err());
        let mut other = chunk.clone();
        other[0] = 9;
        assert!(decode(&other, &src, "k", "v", &crate::rows::GENERIC)
            .unwrap_err()
            .contains("layout 9"));
        assert_eq!(
            decode(&encode(&[]), &src, "k", "v", &crate::rows::GENERIC)
                .unwrap()
                .len(),
            0
        );
    }
}
