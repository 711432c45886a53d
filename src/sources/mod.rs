//! Sources: one file a vendor, each knowing only how to ask for a page of a window and how to
//! read what comes back. The generic poller (`pipeline.rs`) owns intervals, windows, paging,
//! retries, dedupe and commits.
//!
//! A vendor is a plugin (`vendor.rs`): its file declares its kind, its own `[[sources]]` keys
//! and their validation, and builds its source; [`VENDORS`] lists them. Adding a vendor is its
//! file here, its emulator in `sim/`, a line in each registry, and its docs.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{Secret, SourceConfig};
use crate::event::{Event, PageText};
use crate::retry::{self, Retryable, Verdict};
use crate::timefmt::Nanos;

mod compact;
pub mod domino_audit;
pub mod domino_datasource;
pub mod domo;
pub mod json;
mod plain;
mod vendor;
pub mod wasabi_air;

pub use vendor::{options_of, settings_of, Vendor, VendorSettings};

/// Every kind of source: the one place where vendors are registered.
pub static VENDORS: &[&dyn Vendor] = &[
    &domino_audit::DominoAuditKind,
    &domino_datasource::DominoDatasourceKind,
    &domo::DomoKind,
    &wasabi_air::WasabiAirKind,
];

/// A boxed future, so that [`Source`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a vendor pages through a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paging {
    /// `limit`/`offset`; the page is full when it holds `limit` entries. The poller reads the
    /// order from the pages themselves (see `pipeline.rs`): newest first, oldest first, or none.
    Offset,
    /// Numbered pages with a total.
    Numbered,
    /// One response holds the whole window; one with more than `max_events` events is fetched
    /// again in halves.
    Whole { max_events: usize },
}

/// How a source's events are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// By the vendor's id, in `Event::id`.
    VendorId,
    /// By canonical content plus occurrence; the poller fills in `Event::id`.
    Content,
}

/// What the poller needs to know about a source.
#[derive(Debug, Clone, Copy)]
pub struct Traits {
    pub paging: Paging,
    pub identity: Identity,
    /// The vendor's time resolution: windows start and end on multiples of it.
    pub time_unit: Nanos,
    /// Whether the source can ask for a range that ends one millisecond short when
    /// [`PageRequest::inclusive_end`] is set: true where the API's bounds are whole
    /// milliseconds, so that `≤ end − 1ms` holds exactly what `< end` holds.
    pub end_can_be_shortened: bool,
}

/// One request: a page of the window `[start, end)`.
#[derive(Debug, Clone)]
pub struct PageRequest {
    pub start: Nanos,
    pub end: Nanos,
    /// The API was seen to include entries at exactly `end`: ask for one millisecond less (see
    /// [`PageRequest::end_ms`]), where [`Traits::end_can_be_shortened`].
    pub inclusive_end: bool,
    /// Entries to skip (`Paging::Offset`).
    pub offset: u64,
    /// Page number from 0 (`Paging::Numbered`).
    pub page: u64,
    pub limit: u32,
    /// `Paging::Whole`: a response with more events than this is refused with
    /// [`SourceError::TooLarge`] so the poller can halve the window.
    pub max_events: Option<usize>,
}

impl PageRequest {
    /// The end to send, in milliseconds: `end`, or one millisecond less for an API whose end is
    /// inclusive (the same entries, as the API's bounds are whole milliseconds).
    pub fn end_ms(&self) -> i64 {
        self.end / crate::timefmt::NANOS_PER_MS - i64::from(self.inclusive_end)
    }
}

/// One page as read.
#[derive(Debug)]
pub struct Page {
    /// Normalised events, in the order the API returned them.
    pub events: Vec<Event>,
    /// Entries the API returned (before anything was left out).
    pub returned: usize,
    /// `Paging::Numbered`: whether the API says more pages follow.
    pub more: bool,
}

/// Why a page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("request failed: {0}")]
    Transport(String),
    #[error("HTTP {status}{}: {body}", retry_after.map(|d| format!(" (Retry-After {}ms)", d.as_millis())).unwrap_or_default())]
    Status {
        status: u16,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
        body: String,
    },
    #[error("unreadable response: {0}")]
    Body(String),
    #[error("response holds more than {0} events")]
    TooLarge(usize),
    #[error("{0}")]
    Permanent(String),
}

impl Retryable for SourceError {
    fn verdict(&self) -> Verdict {
        match self {
            SourceError::Transport(_) | SourceError::Body(_) => Verdict::Retry { after: None },
            SourceError::Status {
                status,
                retry_after,
                ..
            } => retry::classify_status(*status, *retry_after),
            SourceError::TooLarge(_) | SourceError::Permanent(_) => Verdict::Stop,
        }
    }
}

/// A vendor's audit API.
pub trait Source: Send + Sync {
    fn traits(&self) -> Traits;
    /// Reads one page. One HTTP exchange (plus a token renewal where the vendor needs one);
    /// the poller retries.
    fn fetch<'a>(&'a self, req: &'a PageRequest) -> BoxFuture<'a, Result<Page, SourceError>>;

    /// Where a sub-window that begins at `start` must end at the latest, given that the poller
    /// would end it at `end`: `end`, unless the vendor's times need a cut in between (Domo: a
    /// window never holds both passes of a repeated hour).
    fn window_end(&self, _start: Nanos, end: Nanos) -> Nanos {
        end
    }
}

/// Builds the source of a config entry, by its vendor's plugin.
/// `http` is the agent's client; a source with TLS options gets its own (see [`Http::for_source`]).
pub fn build(cfg: &SourceConfig, http: Http) -> Box<dyn Source> {
    let http = http.for_source(cfg);
    cfg.kind.vendor().build(cfg, http)
}

/// Largest response body read from a vendor, whatever the page size (a runaway guard).
const MAX_BODY: usize = 256 << 20;

/// The HTTP client of the sources, with the helpers every vendor file uses.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    /// Timeout of one request, kept to build a source's own client with the same.
    timeout: Duration,
    /// Why this source's own client could not be built (a TLS file gone since the config was
    /// checked): every request fails with it, permanently, so the source stops saying why.
    broken: Option<Arc<str>>,
}

impl Http {
    pub fn new(timeout: Duration) -> Result<Http, reqwest::Error> {
        Ok(Http {
            client: Http::builder(timeout).build()?,
            timeout,
            broken: None,
        })
    }

    fn builder(timeout: Duration) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("auditship/", env!("CARGO_PKG_VERSION")))
    }

    /// The client of source `cfg`: this one, or one of its own with its TLS options (`ca_file`,
    /// `client_cert` + `client_key`, `insecure_skip_verify`, as the HTTP sink takes them).
    pub fn for_source(&self, cfg: &SourceConfig) -> Http {
        if cfg.tls.is_default() {
            return self.clone();
        }
        if cfg.tls.insecure_skip_verify {
            tracing::warn!(source = %cfg.name,
                "insecure_skip_verify = true: the vendor's TLS certificate is NOT verified; anyone on \
                 the network path can impersonate it, read the events and take the credentials. Use \
                 ca_file instead");
        }
        let built = cfg.tls.apply(Http::builder(self.timeout)).and_then(|b| {
            b.build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))
        });
        match built {
            Ok(client) => Http {
                client,
                timeout: self.timeout,
                broken: None,
            },
            Err(e) => Http {
                client: self.client.clone(),
                timeout: self.timeout,
                broken: Some(e.into()),
            },
        }
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// GETs `url` with `Accept: application/json`, the source's credential header, the query and
    /// the configured filters (passed through after it); the body of a 2xx answer, as [`send`],
    /// as the text the page's events will point into.
    ///
    /// [`send`]: Http::send
    pub async fn get(
        &self,
        url: &url::Url,
        auth: &Credential,
        query: &[(&str, String)],
        filters: &[(String, String)],
        max_bytes: Option<(usize, usize)>,
    ) -> Result<PageText, SourceError> {
        let (name, value) = auth.clone().map_err(SourceError::Permanent)?;
        let mut req = self
            .client
            .get(url.clone())
            .headers(json_headers())
            .header(name, value)
            .query(query);
        if !filters.is_empty() {
            req = req.query(filters);
        }
        page_text(self.send(req, max_bytes).await?)
    }

    /// Sends a request and returns the body of a 2xx answer, read up to `max_bytes` (more is
    /// `TooLarge` with `max_events`, so the caller can shrink its window). Anything else is a
    /// classified [`SourceError`].
    pub async fn send(
        &self,
        req: reqwest::RequestBuilder,
        max_bytes: Option<(usize, usize)>,
    ) -> Result<Vec<u8>, SourceError> {
        if let Some(why) = &self.broken {
            return Err(SourceError::Permanent(why.to_string()));
        }
        let mut resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
            let body = resp.text().await.unwrap_or_default();
            return Err(SourceError::Status {
                status,
                retry_after,
                body: snippet(&body),
            });
        }
        let (cap, events) = max_bytes.unwrap_or((MAX_BODY, 0));
        let mut body =
            Vec::with_capacity(resp.content_length().unwrap_or(0).min(cap as u64) as usize);
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > cap {
                return Err(if events > 0 {
                    SourceError::TooLarge(events)
                } else {
                    SourceError::Body(format!("body larger than {cap} bytes"))
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn transport(e: reqwest::Error) -> SourceError {
    // reqwest's message names the URL (our query: times and paging, never a secret) and cause.
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    SourceError::Transport(msg)
}

/// The first 200 characters of an error body, on one line.
fn snippet(body: &str) -> String {
    let one_line: String = body
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.is_empty() {
        "(empty body)".into()
    } else {
        one_line
    }
}

/// A source's credential header, or why it has none (reported when a request is due).
pub type Credential = Result<(HeaderName, HeaderValue), String>;

/// The credential header `name: {prefix}{secret}`, marked sensitive.
pub fn credential(
    name: HeaderName,
    prefix: &str,
    secret: Option<&Secret>,
    missing: &str,
) -> Credential {
    let secret = secret.ok_or_else(|| missing.to_string())?;
    secret_header(prefix, secret)
        .map(|v| (name, v))
        .map_err(|e| e.to_string())
}

/// A header value carrying a secret: marked sensitive so no debug output ever shows it.
pub fn secret_header(prefix: &str, secret: &Secret) -> Result<HeaderValue, SourceError> {
    let mut v = HeaderValue::from_str(&format!("{prefix}{}", secret.expose())).map_err(|_| {
        SourceError::Permanent("a credential holds characters not allowed in an HTTP header".into())
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// Headers every vendor request carries.
pub fn json_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        reqwest::header::ACCEPT,
        HeaderValue::from_static("application/json"),
    );
    h
}

/// A response body as the text its events will point into: UTF-8, and compact, so that every
/// event's `raw` is one line whatever layout the vendor or a gateway gave the page (see
/// `compact`; a compact page is only looked at).
pub fn page_text(body: Vec<u8>) -> Result<PageText, SourceError> {
    let text = String::from_utf8(body)
        .map_err(|e| SourceError::Body(format!("the response is not UTF-8: {}", e.utf8_error())))?;
    if !compact::is_formatted(text.as_bytes()) {
        return Ok(Arc::new(text));
    }
    let mut bytes = text.into_bytes();
    compact::compact(&mut bytes);
    Ok(Arc::new(
        String::from_utf8(bytes).expect("dropping ASCII whitespace keeps UTF-8"),
    ))
}

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

/// Reads a page in one pass: each entry is parsed as `T` and handed, with its raw text, to
/// `normalise`; `capacity` is how many entries to make room for. Returns the events and the
/// envelope's count, when the layout names one and the page has it.
pub fn read_entries<'p, T: serde::Deserialize<'p>>(
    page: &'p str,
    layout: Layout<'_>,
    capacity: usize,
    mut normalise: impl FnMut(&'p str, T) -> Result<Event, SourceError>,
) -> Result<(Vec<Event>, Option<u64>), SourceError> {
    read_elements(page, layout, capacity, |c, events| {
        #[cfg(test)]
        if tests::SERDE_ONLY.get() {
            let (raw, entry) = c.value::<T>()?;
            return Ok(normalise(raw, entry).map(|ev| events.push(ev)));
        }
        let (raw, entry) = c.plain_value::<T>()?;
        Ok(normalise(raw, entry).map(|ev| events.push(ev)))
    })
}

/// A vendor entry's serde shape, for text of any lifetime: an entry can be read from the page
/// or from its canonical encoding (see [`read_hashed_entries`]).
pub trait Shape {
    type Raw<'a>: serde::Deserialize<'a>;
}

/// [`read_entries`] for a content-keyed source: each entry is read once, by the canonical
/// scanner, which gives its content hash (set on the event, so the poller does not compute it
/// again) and its shape `S` (see `canonical`). An entry the encoding cannot give exactly is
/// parsed by serde_json as `read_entries` would, and behaves as it would there.
///
/// The encodings are hashed [`HASH_BATCH`] at a time, side by side (see `lanes`).
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
    let mut scratch = crate::dedupe::Scratch::default();
    let mut hashing = Hashing {
        // Canonical encodings are about the size of their text: room for a batch of entries
        // of a kilobyte from the start.
        batch: crate::lanes::Batch::with_capacity(HASH_BATCH, HASH_BATCH * 1024),
        events: Vec::with_capacity(HASH_BATCH),
        hashes: Vec::with_capacity(HASH_BATCH),
    };
    let (mut events, total) = read_elements(page, layout, capacity, |c, events| {
        c.hashed_value::<S, _>(&mut scratch, |raw, entry, encoding| {
            events.push(normalise(raw, entry)?);
            if let Some(bytes) = encoding {
                hashing.push(bytes, events);
            }
            Ok(())
        })
    })?;
    hashing.finish(&mut events);
    Ok((events, total))
}

/// Encodings are hashed this many at a time: enough to keep every lane busy, few enough that
/// the copies stay small (64 KB for entries of a kilobyte).
const HASH_BATCH: usize = 64;

/// The content hashes of a page's events being worked out: which event each encoding in the
/// batch is for.
struct Hashing {
    batch: crate::lanes::Batch,
    events: Vec<usize>,
    hashes: Vec<crate::lanes::Hash>,
}

impl Hashing {
    /// Queues the encoding of the last event of `events`; hashes the batch when it is full.
    fn push(&mut self, encoding: &[u8], events: &mut [Event]) {
        self.batch.push(encoding);
        self.events.push(events.len() - 1);
        if self.batch.len() >= HASH_BATCH {
            self.finish(events);
        }
    }

    /// Hashes what is queued and sets each hash on its event.
    fn finish(&mut self, events: &mut [Event]) {
        self.hashes.clear();
        self.batch.finish(&mut self.hashes);
        for (i, h) in self.events.drain(..).zip(&self.hashes) {
            events[i].set_content_hash(*h);
        }
    }
}

/// Reads a page whose entries `element` reads, one at the cursor each time, and pushes (events
/// are built in place: moving one costs more than reading it): an outer error is the page's
/// JSON, an inner one the vendor entry (refused by its normaliser).
fn read_elements<'p>(
    page: &'p str,
    layout: Layout<'_>,
    capacity: usize,
    mut element: impl FnMut(
        &mut json::Cursor<'p>,
        &mut Vec<Event>,
    ) -> Result<Result<(), SourceError>, SourceError>,
) -> Result<(Vec<Event>, Option<u64>), SourceError> {
    let mut events = Vec::with_capacity(capacity.min(10_000));
    // An entry the vendor file refuses is reported as it is; anything wrong with the page's
    // JSON says what shape was expected.
    let mut refused = None;
    let each = |c: &mut json::Cursor<'p>| match element(c, &mut events)? {
        Ok(()) => Ok(()),
        Err(e) => {
            refused = Some(e);
            Err(SourceError::Body(String::new()))
        }
    };
    let read = match layout {
        Layout::Envelope { field, total } => {
            json::enveloped(page, field, total, each).map(|(_, n)| n)
        }
        Layout::Array => json::bare_array(page, each).map(|_| None),
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
            match e {
                SourceError::Body(m) => m,
                other => other.to_string(),
            }
        ))),
    }
}

/// A base URL joined with an API path (the base may carry a path prefix of its own).
pub fn endpoint(base: &url::Url, path: &str) -> url::Url {
    let mut u = base.clone();
    let joined = format!("{}{}", u.path().trim_end_matches('/'), path);
    u.set_path(&joined);
    u
}

/// The source name as events carry it.
pub fn source_name(cfg: &SourceConfig) -> Arc<str> {
    Arc::from(cfg.name.as_str())
}

/// A JSON string field of a vendor entry: borrowed from the page when it holds no escapes.
/// (serde borrows a bare `Cow<str>` field but never one inside an `Option`; this type borrows
/// in either place.)
#[derive(Debug)]
pub struct Text<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// The first element of a JSON array (the rest are checked to be JSON and skipped): for a field
/// where only the first entry is normalised, without collecting the others.
#[derive(Debug)]
pub struct First<T>(pub Option<T>);

impl<T> Default for First<T> {
    fn default() -> Self {
        First(None)
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for First<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Seq<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Seq<T> {
            type Value = First<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<First<T>, A::Error> {
                let first = seq.next_element()?;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(First(first))
            }
        }
        d.deserialize_seq(Seq(std::marker::PhantomData))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Makes [`read_entries`] and [`read_hashed_entries`] read every entry with serde_json
        /// alone, as before the plain reader and the canonical scanner.
        pub(crate) static SERDE_ONLY: Cell<bool> = const { Cell::new(false) };
        /// How many entries were read without serde_json: from their canonical encoding, or by
        /// the plain reader.
        pub(crate) static FAST_READS: Cell<usize> = const { Cell::new(0) };
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
                let want = crate::dedupe::content_hash(e.raw()).ok().filter(|_| hashed);
                if e.content_hash().is_some() || hashed {
                    assert_eq!(e.content_hash(), want, "{}", e.raw());
                }
                let mut out = Vec::new();
                e.write_ndjson(&mut out, true);
                (String::from_utf8(out).unwrap(), e.copied_len())
            })
            .collect())
    }

    /// Reading an entry from its canonical encoding, or with the plain reader, gives exactly what
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
                let hashed = *name != "wasabi_air";
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
            assert!(
                fast * 10 > events * 7,
                "{name}: {fast} of {events} without serde_json"
            );
        }
    }

    #[test]
    fn endpoint_keeps_a_base_path() {
        let u = url::Url::parse("https://x.example.com/prefix/").unwrap();
        assert_eq!(
            endpoint(&u, "/v1/audit").as_str(),
            "https://x.example.com/prefix/v1/audit"
        );
        let u = url::Url::parse("https://x.example.com").unwrap();
        assert_eq!(
            endpoint(&u, "/v1/audit").as_str(),
            "https://x.example.com/v1/audit"
        );
    }

    #[test]
    fn errors_are_classified() {
        let st = |status, ra: Option<u64>| SourceError::Status {
            status,
            retry_after: ra.map(Duration::from_millis),
            body: String::new(),
        };
        assert_eq!(
            st(429, Some(2000)).verdict(),
            Verdict::Retry {
                after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(st(503, None).verdict(), Verdict::Retry { after: None });
        assert_eq!(st(403, None).verdict(), Verdict::Stop);
        assert_eq!(
            SourceError::Body("x".into()).verdict(),
            Verdict::Retry { after: None }
        );
        assert_eq!(SourceError::TooLarge(5).verdict(), Verdict::Stop);
    }

    #[test]
    fn secret_headers_are_sensitive() {
        let h = secret_header("Bearer ", &Secret::new("tok")).unwrap();
        assert!(h.is_sensitive());
        assert!(!format!("{h:?}").contains("tok"));
    }
}
