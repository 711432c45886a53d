//! Framing a batch per `encoding`: NDJSON, a JSON array, Splunk HEC event objects, `_bulk`
//! action and document pairs; the records inside are the sink's `format`.

use std::io::Write as _;

use super::client::hostname;
use super::HttpEncoding;
use crate::encodings::Writer;
use crate::event::{push_json_str, Event};
use crate::timefmt::{NANOS_PER_MS, NANOS_PER_SEC};

/// How a batch of events becomes a request body: the framing of this `encoding`, around records
/// that `writer` writes in the sink's `format`.
pub(super) struct Encoder {
    pub(super) writer: Writer,
    pub(super) framing: Framing,
}

/// The framing of each `encoding`.
pub(super) enum Framing {
    /// One record per line.
    Ndjson,
    /// `[record,record,...]`.
    JsonArray,
    /// Splunk HEC event objects one after another. `fields` is the constant JSON between `time`
    /// and `source`: `,"host":…`; `after_source` that between `source` and the event.
    SplunkHec {
        fields: String,
        after_source: String,
    },
    /// `_bulk` create action and document pairs; `action` is `{"create":{"_index":…,"_id":`
    /// (or `{"create":{"_id":` when the URL names the target).
    Bulk { action: String },
}

impl Encoder {
    pub(super) fn new(enc: &HttpEncoding, writer: Writer) -> Encoder {
        let json = |s: &str| serde_json::to_string(s).expect("a string serialises");
        let framing = match enc {
            HttpEncoding::Ndjson => Framing::Ndjson,
            HttpEncoding::JsonArray => Framing::JsonArray,
            HttpEncoding::SplunkHec {
                index,
                sourcetype,
                host,
            } => {
                let host = host.clone().unwrap_or_else(hostname);
                let mut after_source = format!(",\"sourcetype\":{}", json(sourcetype));
                if let Some(i) = index {
                    after_source.push_str(&format!(",\"index\":{}", json(i)));
                }
                after_source.push_str(",\"event\":");
                Framing::SplunkHec {
                    fields: format!(",\"host\":{},\"source\":", json(&host)),
                    after_source,
                }
            }
            // Without `index`, the URL's `/{target}/_bulk` is the target of every action.
            HttpEncoding::ElasticsearchBulk { index } => Framing::Bulk {
                action: match index {
                    Some(i) => format!("{{\"create\":{{\"_index\":{},\"_id\":", json(i)),
                    None => "{\"create\":{\"_id\":".to_string(),
                },
            },
        };
        Encoder { writer, framing }
    }

    pub(super) fn name(&self) -> &'static str {
        match self.framing {
            Framing::Ndjson => "ndjson",
            Framing::JsonArray => "json_array",
            Framing::SplunkHec { .. } => "splunk_hec",
            Framing::Bulk { .. } => "elasticsearch_bulk",
        }
    }

    pub(super) fn content_type(&self) -> &'static str {
        match self.framing {
            Framing::Ndjson | Framing::Bulk { .. } => "application/x-ndjson",
            Framing::JsonArray | Framing::SplunkHec { .. } => "application/json",
        }
    }

    /// Bytes before the first record, between records, and after the last.
    pub(super) fn framing(&self) -> (&'static [u8], &'static [u8], &'static [u8]) {
        match self.framing {
            Framing::JsonArray => (b"[", b",", b"]"),
            _ => (b"", b"", b""),
        }
    }

    /// Appends one event's record.
    pub(super) fn record(&self, e: &Event, out: &mut Vec<u8>) {
        match &self.framing {
            Framing::Ndjson => self.writer.line(e, out),
            Framing::JsonArray => self.writer.record(e, out),
            Framing::SplunkHec {
                fields,
                after_source,
            } => {
                let secs = e.time.div_euclid(NANOS_PER_SEC);
                let ms = e.time.rem_euclid(NANOS_PER_SEC) / NANOS_PER_MS;
                let _ = write!(out, "{{\"time\":{secs}.{ms:03}");
                out.extend_from_slice(fields.as_bytes());
                push_json_str(out, &e.source);
                out.extend_from_slice(after_source.as_bytes());
                self.writer.record(e, out);
                out.push(b'}');
            }
            Framing::Bulk { action } => {
                out.extend_from_slice(action.as_bytes());
                push_json_str(out, e.id());
                out.extend_from_slice(b"}}\n");
                self.writer.line(e, out);
            }
        }
    }

    /// Encodes `events[start..]` into `body` (cleared first) until the next event would pass
    /// `max_events` or `max_bytes`; returns where it stopped. An event is always taken, even one
    /// larger than `max_bytes` on its own.
    pub(super) fn fill(
        &self,
        events: &[Event],
        start: usize,
        max_events: usize,
        max_bytes: usize,
        body: &mut Vec<u8>,
    ) -> usize {
        let (open, sep, close) = self.framing();
        body.clear();
        body.extend_from_slice(open);
        let mut end = start;
        while end < events.len() && end - start < max_events {
            let mark = body.len();
            if end > start {
                body.extend_from_slice(sep);
            }
            self.record(&events[end], body);
            if end > start && body.len() + close.len() > max_bytes {
                body.truncate(mark);
                break;
            }
            end += 1;
        }
        body.extend_from_slice(close);
        end
    }

    /// Encodes every event given into `body`.
    pub(super) fn encode_all<'e>(
        &self,
        events: impl Iterator<Item = &'e Event>,
        body: &mut Vec<u8>,
    ) {
        let (open, sep, close) = self.framing();
        body.clear();
        body.extend_from_slice(open);
        for (i, e) in events.enumerate() {
            if i > 0 {
                body.extend_from_slice(sep);
            }
            self.record(e, body);
        }
        body.extend_from_slice(close);
    }
}
