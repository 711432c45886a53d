//! The native event: one shape for all four vendors, written as one JSON object per line.
//!
//! An event does not copy its text. It shares the page it was read from (`Arc<String>`, the
//! response body, made compact first if it was pretty-printed: see `sources::page_text`) and
//! records where in it its raw JSON and its string fields are; only text that
//! is not verbatim in the page (an unescaped string, a number turned into an id) is copied, into
//! a small buffer of the event's own. Reading a page therefore allocates per page, not per field,
//! and writing an event is a series of copies out of the page.

use std::sync::Arc;

use crate::rows::{Table, GENERIC};
use crate::timefmt::{self, Nanos};

pub mod queued;

/// The text of a page as received: the events read from it point into it.
pub type PageText = Arc<String>;

/// A string field of the normalised event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Field {
    /// The vendor's id of the event (content-keyed events get theirs from `set_content_id`).
    Id,
    /// What happened, in the vendor's words.
    Action,
    ActorKind,
    ActorId,
    ActorName,
    TargetKind,
    TargetId,
    TargetName,
    ProjectKind,
    ProjectId,
    ProjectName,
    /// The client's IP address, where the vendor records it.
    SrcIp,
    /// The client's user agent, where the vendor records it.
    UserAgent,
}

const FIELDS: usize = Field::UserAgent as usize + 1;

/// Where a piece of text is: `len == ABSENT` for none; otherwise `start` in the page, or in the
/// event's own buffer when `start` has the `OWN` bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

const OWN: u32 = 1 << 31;
const ABSENT: u32 = u32::MAX;

impl Span {
    const NONE: Span = Span {
        start: 0,
        len: ABSENT,
    };
}

/// Where `s` is in `page`, if it is a slice of it.
#[inline]
fn page_span(page: &str, s: &str) -> Option<Span> {
    let base = page.as_ptr() as usize;
    let at = s.as_ptr() as usize;
    (at >= base && at + s.len() <= base + page.len() && page.len() < OWN as usize).then(|| Span {
        start: (at - base) as u32,
        len: s.len() as u32,
    })
}

/// Who or what an event is about: `actor`, `target` and `project` all take this shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Entity<'a> {
    /// The vendor's kind of entity (`dataset`, `user`, `feature`, ...), when it says.
    pub kind: Option<&'a str>,
    /// The vendor's id of the entity.
    pub id: Option<&'a str>,
    /// A human name, when the vendor gives one.
    pub name: Option<&'a str>,
}

/// One normalised audit event.
#[derive(Debug, Clone)]
pub struct Event {
    /// The configured name of the source that read the event.
    pub source: Arc<str>,
    /// The source's `kind` (`domino_audit`, ...).
    pub kind: &'static str,
    /// The vendor (`domino`, `domo`, `wasabi`).
    pub vendor: &'static str,
    /// Its vendor's SIEM rows (set where the vendor's file makes it, or the queue decodes it);
    /// the generic table until then.
    siem: &'static Table,
    /// The event's instant in UTC; written with millisecond precision.
    pub time: Nanos,
    page: PageText,
    /// Text that is not verbatim in the page; usually empty (no allocation).
    own: String,
    /// The vendor's event exactly as received (bytes untouched).
    raw: Span,
    fields: [Span; FIELDS],
    /// The id derived from content and occurrence (lower-case hex), for content-keyed vendors.
    content_id: Option<[u8; 32]>,
    /// The hash of the vendor's event's canonical content, when the source computed it.
    content_hash: Option<crate::keys::ContentHash>,
    /// The vendor's text of the time means two instants (Domo's wall-clock time in the repeated
    /// hour of a daylight-saving change), so the content alone does not tell two entries an hour
    /// apart: the key takes the instant in too (see `keys::fold_hash`).
    ambiguous_time: bool,
}

impl Event {
    /// An event whose vendor JSON is `raw`, normally a slice of `page` (anything else is copied).
    pub fn new(
        source: &Arc<str>,
        kind: &'static str,
        vendor: &'static str,
        time: Nanos,
        page: &PageText,
        raw: &str,
    ) -> Event {
        // Built where it is returned (this is per event): a raw in the page, the usual case,
        // needs no second step.
        let raw_span = page_span(page, raw).unwrap_or(Span::NONE);
        let mut e = Event {
            source: source.clone(),
            kind,
            vendor,
            siem: &GENERIC,
            time,
            page: page.clone(),
            own: String::new(),
            raw: raw_span,
            fields: [Span::NONE; FIELDS],
            content_id: None,
            content_hash: None,
            ambiguous_time: false,
        };
        if raw_span == Span::NONE {
            e.raw = e.span_of(raw);
        }
        e
    }

    /// The event with its vendor's SIEM rows.
    #[inline]
    pub fn with_siem(mut self, siem: &'static Table) -> Event {
        self.siem = siem;
        self
    }

    /// Its vendor's SIEM rows.
    #[inline]
    pub fn siem(&self) -> &'static Table {
        self.siem
    }

    /// An event that is its own page: for tests and tools.
    pub fn standalone(
        source: &str,
        kind: &'static str,
        vendor: &'static str,
        time: Nanos,
        raw: &str,
    ) -> Event {
        let page = Arc::new(raw.to_string());
        Event::new(&Arc::from(source), kind, vendor, time, &page, &page)
    }

    fn span_of(&mut self, s: &str) -> Span {
        if let Some(span) = page_span(&self.page, s) {
            return span;
        }
        let start = self.own.len();
        assert!(start + s.len() < OWN as usize, "event text over 2 GiB");
        self.own.push_str(s);
        Span {
            start: start as u32 | OWN,
            len: s.len() as u32,
        }
    }

    fn text(&self, span: Span) -> Option<&str> {
        if span.len == ABSENT {
            return None;
        }
        let (buf, start) = if span.start & OWN != 0 {
            (self.own.as_str(), (span.start & !OWN) as usize)
        } else {
            (self.page.as_str(), span.start as usize)
        };
        Some(&buf[start..start + span.len as usize])
    }

    /// Bytes of text the event holds beyond its page (unescaped or synthesised fields).
    pub fn copied_len(&self) -> usize {
        self.own.len()
    }

    /// Sets a field; `None` leaves it out of the event.
    pub fn set(&mut self, field: Field, value: Option<&str>) {
        self.fields[field as usize] = match value {
            Some(v) => self.span_of(v),
            None => Span::NONE,
        };
    }

    pub fn get(&self, field: Field) -> Option<&str> {
        self.text(self.fields[field as usize])
    }

    /// Records the hash of the event's canonical content, computed where it was read.
    pub fn set_content_hash(&mut self, hash: crate::keys::ContentHash) {
        self.content_hash = Some(hash);
    }

    /// The hash of the event's canonical content, if its source computed it.
    pub fn content_hash(&self) -> Option<crate::keys::ContentHash> {
        self.content_hash
    }

    /// Marks the event's time text as one that means two instants (see `ambiguous_time`).
    pub fn set_ambiguous_time(&mut self) {
        self.ambiguous_time = true;
    }

    /// Whether the vendor's time text means two instants: then its key includes the instant.
    pub fn ambiguous_time(&self) -> bool {
        self.ambiguous_time
    }

    /// Makes the event's id the hex of a content-and-occurrence key.
    pub fn set_content_id(&mut self, key: &crate::keys::Key) {
        self.content_id = Some(crate::keys::hex_bytes(key));
    }

    /// Stable id: the vendor's own where it has one, otherwise derived from content and
    /// occurrence (see [`crate::keys`]). Receivers that cannot promise exactly-once drop repeats by it.
    pub fn id(&self) -> &str {
        match &self.content_id {
            Some(hex) => std::str::from_utf8(hex).expect("hex is ASCII"),
            None => self.get(Field::Id).unwrap_or(""),
        }
    }

    /// The vendor's event exactly as received.
    pub fn raw(&self) -> &str {
        self.text(self.raw).unwrap_or("null")
    }

    pub fn action(&self) -> Option<&str> {
        self.get(Field::Action)
    }

    fn entity(&self, first: Field) -> Option<Entity<'_>> {
        let i = first as usize;
        let e = Entity {
            kind: self.text(self.fields[i]),
            id: self.text(self.fields[i + 1]),
            name: self.text(self.fields[i + 2]),
        };
        (e != Entity::default()).then_some(e)
    }

    /// Who did it.
    pub fn actor(&self) -> Option<Entity<'_>> {
        self.entity(Field::ActorKind)
    }

    /// What it was done to.
    pub fn target(&self) -> Option<Entity<'_>> {
        self.entity(Field::TargetKind)
    }

    /// The project or workspace it happened in.
    pub fn project(&self) -> Option<Entity<'_>> {
        self.entity(Field::ProjectKind)
    }

    pub fn src_ip(&self) -> Option<&str> {
        self.get(Field::SrcIp)
    }

    pub fn user_agent(&self) -> Option<&str> {
        self.get(Field::UserAgent)
    }

    /// Appends the event's native JSON object to `out`, with or without `raw`.
    pub fn write_json(&self, out: &mut Vec<u8>, include_raw: bool) {
        // One reservation for the event (escapes may still grow it): the writes below then
        // never reallocate.
        let raw = include_raw.then(|| self.raw());
        out.reserve(raw.map_or(0, str::len) + self.fields_len() + 256);
        out.extend_from_slice(b"{\"id\":");
        match &self.content_id {
            // Lower-case hex: nothing to escape, nothing to check.
            Some(hex) => {
                out.push(b'"');
                out.extend_from_slice(hex);
                out.push(b'"');
            }
            None => push_json_str(out, self.id()),
        }
        WRITING.with_borrow_mut(|w| {
            // `,"source":...,"kind":...,"vendor":...,"time":"`, the same for every event of a
            // source: written once and then copied.
            if w.head.is_empty()
                // The head keeps its source alive, so no other can have its address.
                || !Arc::ptr_eq(&w.source, &self.source)
                || !std::ptr::eq(w.kind, self.kind)
                || !std::ptr::eq(w.vendor, self.vendor)
            {
                w.source = self.source.clone();
                (w.kind, w.vendor) = (self.kind, self.vendor);
                w.head.clear();
                w.head.extend_from_slice(b",\"source\":");
                push_json_str(&mut w.head, &self.source);
                w.head.extend_from_slice(b",\"kind\":");
                push_json_str(&mut w.head, self.kind);
                w.head.extend_from_slice(b",\"vendor\":");
                push_json_str(&mut w.head, self.vendor);
                w.head.extend_from_slice(b",\"time\":\"");
            }
            out.extend_from_slice(&w.head);
            timefmt::push_rfc3339_ms(out, self.time);
        });
        out.push(b'"');
        if let Some(v) = self.action() {
            out.extend_from_slice(b",\"action\":");
            push_json_str(out, v);
        }
        for (name, first) in [
            (&b",\"actor\":{"[..], Field::ActorKind),
            (b",\"target\":{", Field::TargetKind),
            (b",\"project\":{", Field::ProjectKind),
        ] {
            let spans = &self.fields[first as usize..first as usize + 3];
            if spans.iter().all(|s| s.len == ABSENT) {
                continue;
            }
            out.extend_from_slice(name);
            let mut sep = &b"\""[..];
            for (k, span) in [&b"type\":"[..], b"id\":", b"name\":"]
                .into_iter()
                .zip(spans)
            {
                if let Some(v) = self.text(*span) {
                    out.extend_from_slice(sep);
                    out.extend_from_slice(k);
                    push_json_str(out, v);
                    sep = b",\"";
                }
            }
            out.push(b'}');
        }
        if let Some(v) = self.src_ip() {
            out.extend_from_slice(b",\"src_ip\":");
            push_json_str(out, v);
        }
        if let Some(v) = self.user_agent() {
            out.extend_from_slice(b",\"user_agent\":");
            push_json_str(out, v);
        }
        if let Some(raw) = raw {
            out.extend_from_slice(b",\"raw\":");
            out.extend_from_slice(raw.as_bytes());
        }
        out.push(b'}');
    }

    /// The bytes of the event's fields, as text (before escapes).
    fn fields_len(&self) -> usize {
        self.fields
            .iter()
            .filter(|s| s.len != ABSENT)
            .map(|s| s.len as usize)
            .sum()
    }

    /// Appends the event's native JSON and a newline to `out`.
    pub fn write_ndjson(&self, out: &mut Vec<u8>, include_raw: bool) {
        self.write_json(out, include_raw);
        out.push(b'\n');
    }
}

/// What writing events keeps from one event to the next, per thread.
struct Writing {
    /// The source, kind and vendor of the last event written, and the JSON that names them
    /// (compared by address: equal addresses are equal names, and the rare other case only
    /// writes the head again).
    source: Arc<str>,
    kind: &'static str,
    vendor: &'static str,
    head: Vec<u8>,
}

thread_local! {
    static WRITING: std::cell::RefCell<Writing> = std::cell::RefCell::new(Writing {
        source: Arc::from(""),
        kind: "",
        vendor: "",
        // Not yet the head of any event: the first event's differs.
        head: Vec::new(),
    });
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it. Text without anything to
/// escape, the common case, is searched a word at a time ([`crate::json::scan`]) and copied whole.
#[inline]
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    match crate::json::scan::find_string_stop(bytes, 0) {
        None => {
            out.reserve(bytes.len() + 2);
            out.push(b'"');
            out.extend_from_slice(bytes);
            out.push(b'"');
        }
        Some(clean) => push_escaped(out, bytes, clean),
    }
}

/// [`push_json_str`] for a string with something to escape, the first at `clean`: each run of
/// plain bytes up to the next byte to escape is found by the same search and copied whole (the
/// vendor's JSON as `raw_data`/`event.original` has a quote every few bytes).
#[inline(never)]
fn push_escaped(out: &mut Vec<u8>, bytes: &[u8], clean: usize) {
    out.reserve(bytes.len() + 8);
    out.push(b'"');
    let (mut from, mut at) = (0, clean);
    loop {
        out.extend_from_slice(&bytes[from..at]);
        let b = bytes[at];
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            _ => b"",
        };
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.extend_from_slice(&[HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        } else {
            out.extend_from_slice(esc);
        }
        from = at + 1;
        match crate::json::scan::find_string_stop(bytes, from) {
            Some(next) => at = next,
            None => break,
        }
    }
    out.extend_from_slice(&bytes[from..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        let mut e = Event::standalone(
            "air",
            "wasabi_air",
            "wasabi",
            timefmt::parse_rfc3339("2017-10-11T16:49:52.758191Z").unwrap(),
            r#"{"id": "abc",  "x":1}"#,
        );
        e.set(Field::Id, Some("abc"));
        e.set(Field::Action, Some("login"));
        e.set(Field::ActorId, Some("u1"));
        e
    }

    #[test]
    fn absent_fields_are_left_out_and_raw_kept_verbatim() {
        let mut out = Vec::new();
        sample().write_ndjson(&mut out, true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"id\":\"abc\",\"source\":\"air\",\"kind\":\"wasabi_air\",\"vendor\":\"wasabi\",\
             \"time\":\"2017-10-11T16:49:52.758Z\",\"action\":\"login\",\"actor\":{\"id\":\"u1\"},\
             \"raw\":{\"id\": \"abc\",  \"x\":1}}\n"
        );
    }

    #[test]
    fn include_raw_false_drops_raw() {
        let mut out = Vec::new();
        sample().write_ndjson(&mut out, false);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v.get("raw").is_none());
        assert_eq!(v["time"], "2017-10-11T16:49:52.758Z");
    }

    #[test]
    fn fields_point_into_the_page_and_other_text_is_copied() {
        let page: PageText = Arc::new(r#"{"who":"alice","n":7}"#.to_string());
        let mut e = Event::new(&Arc::from("s"), "domo", "domo", 0, &page, &page[..]);
        let who = &page[8..13];
        e.set(Field::ActorName, Some(who));
        e.set(Field::ActorId, Some(&7.to_string()));
        e.set(Field::Action, None);
        assert_eq!(e.own, "7", "only the number was copied");
        assert_eq!(e.actor().unwrap().name, Some("alice"));
        assert_eq!(e.actor().unwrap().id, Some("7"));
        assert_eq!(e.action(), None);
        assert_eq!(e.target(), None);
        assert_eq!(e.raw(), page.as_str());
        e.set_content_id(&[0xab; 16]);
        assert_eq!(e.id(), "ab".repeat(16));
        let mut out = Vec::new();
        e.write_json(&mut out, false);
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["id"], "ab".repeat(16));
    }

    /// Events of different sources one after another, with any fields present, are written
    /// as a reference built from serde_json's string escapes writes them.
    #[test]
    fn events_are_written_as_a_reference_writes_them() {
        let mut rng = fastrand::Rng::with_seed(9);
        let texts = [
            "",
            "a",
            "plain-id-123",
            "quote\"q",
            "back\\slash",
            "nl\n",
            "ünï",
            "\u{1f}x",
        ];
        let q = |s: &str| serde_json::to_string(s).unwrap();
        let mut day = 0;
        let sources: Vec<Arc<str>> = ["air", "dom\"ino", "x", "air"].map(Arc::from).into();
        for round in 0..3000 {
            // Sources as the agent has them, one `Arc` each (two alike in name).
            let source = &sources[rng.usize(0..sources.len())];
            let (kind, vendor) = [("wasabi_air", "wasabi"), ("domo", "domo")][rng.usize(0..2)];
            // Runs of events on one day, and jumps anywhere (before 1970 too).
            if round % 7 == 0 {
                day = rng.i64(-100_000..100_000);
            }
            const SEC: i64 = 1_000_000_000;
            let time = day * 86_400 * SEC + rng.i64(0..86_400 * SEC);
            let raw = format!(r#"{{"n":{round}}}"#);
            let page = Arc::new(raw.clone());
            let mut e = Event::new(source, kind, vendor, time, &page, &page);
            let mut pick = |e: &mut Event, f: Field| {
                let v = rng.bool().then(|| texts[rng.usize(0..texts.len())]);
                e.set(f, v);
                v
            };
            let id = pick(&mut e, Field::Id).unwrap_or("");
            let action = pick(&mut e, Field::Action);
            let mut entities = Vec::new();
            for (name, first) in [
                ("actor", Field::ActorKind as u8),
                ("target", Field::TargetKind as u8),
                ("project", Field::ProjectKind as u8),
            ] {
                let fields = [
                    Field::ActorKind,
                    Field::ActorId,
                    Field::ActorName,
                    Field::TargetKind,
                    Field::TargetId,
                    Field::TargetName,
                    Field::ProjectKind,
                    Field::ProjectId,
                    Field::ProjectName,
                ];
                let f = &fields[(first - Field::ActorKind as u8) as usize..][..3];
                let vals: Vec<_> = ["type", "id", "name"]
                    .into_iter()
                    .zip(f)
                    .filter_map(|(k, f)| pick(&mut e, *f).map(|v| format!("\"{k}\":{}", q(v))))
                    .collect();
                if !vals.is_empty() {
                    entities.push(format!(",\"{name}\":{{{}}}", vals.join(",")));
                }
            }
            let ip = pick(&mut e, Field::SrcIp);
            let ua = pick(&mut e, Field::UserAgent);
            let mut want = format!(
                "{{\"id\":{},\"source\":{},\"kind\":{},\"vendor\":{},\"time\":\"{}\"",
                q(id),
                q(source),
                q(kind),
                q(vendor),
                timefmt::rfc3339_ms(time)
            );
            if let Some(a) = action {
                want += &format!(",\"action\":{}", q(a));
            }
            want += &entities.concat();
            if let Some(v) = ip {
                want += &format!(",\"src_ip\":{}", q(v));
            }
            if let Some(v) = ua {
                want += &format!(",\"user_agent\":{}", q(v));
            }
            let include_raw = rng.bool();
            if include_raw {
                want += &format!(",\"raw\":{raw}");
            }
            want += "}";
            let mut out = b"earlier".to_vec();
            e.write_json(&mut out, include_raw);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("earlier{want}"),
                "{round}"
            );
        }
    }

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_escapes_them() {
        let mut cases: Vec<String> = [
            "",
            "plain ascii text longer than eight",
            "quote\" and back\\slash",
            "tab\tnewline\nreturn\rbell\u{7}nul\u{0}esc\u{1b}\u{8}\u{c}\u{1f}",
            "ünïcödé → 𝄞 and \u{7f} del",
            "1234567\"",
            "12345678\\",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every single byte value that is a char, at every offset within a 16-byte block and
        // within a word after it.
        for c in (0u8..0x80).map(char::from) {
            for pad in 0..26 {
                cases.push(format!("{}{c}{}", "a".repeat(pad), "b".repeat(26 - pad)));
            }
        }
        for s in cases {
            let mut out = Vec::new();
            push_json_str(&mut out, &s);
            assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{s:?}");
        }
    }
}
