//! Sources: one file a vendor, each knowing only how to ask for a page of a window and how to
//! read what comes back. The generic poller (`pipeline/`) owns intervals, windows, paging,
//! retries, dedupe and commits.
//!
//! A vendor is a plugin (`vendor.rs`): its file declares its kind, its own `[[sources]]` keys
//! and their validation, and builds its source; [`VENDORS`] lists them. Adding a vendor is its
//! file here, its emulator in `sim/`, a line in each registry, and its docs.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::event::{Event, PageText};
use crate::keys::Identity;
use crate::retry::{self, Retryable, Verdict};
use crate::settings::Secret;
use crate::sources::config::SourceConfig;
use crate::timefmt::Nanos;

pub mod config;
pub mod domino_audit;
pub mod domino_datasource;
pub mod domo;
pub mod entries;
pub mod pace;
mod vendor;
pub mod wasabi_air;

pub use crate::BoxFuture;
pub use pace::CredentialId;
pub use vendor::{Configured, Vendor};

/// Registers vendors, one line each (`Variant: module::Kind`): [`VENDORS`], every kind of
/// source, and [`VendorSettings`], a vendor's validated settings as its own type.
macro_rules! vendors {
    ($($variant:ident: $module:ident::$kind:ident),* $(,)?) => {
        /// Every kind of source: the one place where vendors are registered.
        pub static VENDORS: &[&dyn Vendor] = &[$(&$module::$kind),*];

        /// Every vendor's SIEM rows, in the order of [`VENDORS`] (and of
        /// `docs/siem-formats.md`): each vendor file's `SIEM`.
        pub static SIEM_TABLES: &[&crate::rows::Table] = &[$(&$module::SIEM),*];

        /// A vendor's validated settings (what its plugin read of its own keys), kept in
        /// [`SourceConfig`](config::SourceConfig): one variant a vendor, each its file's
        /// `Settings`.
        #[derive(Debug, Clone, PartialEq)]
        pub enum VendorSettings {
            $($variant($module::Settings)),*
        }

        impl VendorSettings {
            /// What the settings build.
            pub fn configured(&self) -> &dyn Configured {
                match self {
                    $(VendorSettings::$variant(s) => s),*
                }
            }
        }
    };
}

/// The SIEM rows of the vendor of `kind`, or the generic table for a kind no vendor has (for
/// tests and tools that make events of a kind; a vendor's own events carry its table).
pub fn siem_of(kind: &str) -> &'static crate::rows::Table {
    SIEM_TABLES
        .iter()
        .find(|t| t.kind == kind)
        .copied()
        .unwrap_or(&crate::rows::GENERIC)
}

vendors! {
    DominoAudit: domino_audit::DominoAuditKind,
    DominoDatasource: domino_datasource::DominoDatasourceKind,
    Domo: domo::DomoKind,
    WasabiAir: wasabi_air::WasabiAirKind,
}

/// How a vendor pages through a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paging {
    /// `limit`/`offset`; the page is full when it holds `limit` entries. The poller reads the
    /// order from the pages themselves (see `pipeline/`): newest first, oldest first, or none.
    Offset,
    /// Numbered pages with a total.
    Numbered,
    /// One response holds the whole window; one with more than `max_events` events is fetched
    /// again in halves.
    Whole { max_events: usize },
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

    /// What to tell the operator when the vendor placed entries `earlier_by` before their true
    /// time (negative: after), around `at`: a setting to fix (Domo: `time_zone`), or `None`.
    fn clock_hint(&self, _earlier_by: Nanos, _at: Nanos) -> Option<String> {
        None
    }
}

/// Builds the source of a config entry, by its vendor's plugin.
/// `http` is the agent's client; a source with TLS options gets its own (see [`Http::for_source`]).
pub fn build(cfg: &SourceConfig, http: Http) -> Box<dyn Source> {
    let http = http.for_source(cfg);
    cfg.settings.configured().build(cfg, http)
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
    /// The pace of the source's credential, which every request waits its turn at (`None`:
    /// not paced, as `check --connect`'s single requests).
    paced: Option<pace::Paced>,
}

impl Http {
    pub fn new(timeout: Duration) -> Result<Http, reqwest::Error> {
        Ok(Http {
            client: Http::builder(timeout).build()?,
            timeout,
            broken: None,
            paced: None,
        })
    }

    /// This client, with every request taking its turn at `paced` (its source's credential).
    pub fn paced(mut self, paced: pace::Paced) -> Http {
        self.paced = Some(paced);
        self
    }

    fn builder(timeout: Duration) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(crate::user_agent())
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
                paced: self.paced.clone(),
            },
            Err(e) => Http {
                client: self.client.clone(),
                timeout: self.timeout,
                broken: Some(e.into()),
                paced: self.paced.clone(),
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

    /// Sends a request, when its credential's pace gives it its turn, and returns the body of
    /// a 2xx answer, read up to `max_bytes` (more is `TooLarge` with `max_events`, so the
    /// caller can shrink its window). Anything else is a classified [`SourceError`]. What the
    /// answer says of the credential's limit (429, `Retry-After`, rate-limit headers) goes to
    /// the pace.
    pub async fn send(
        &self,
        req: reqwest::RequestBuilder,
        max_bytes: Option<(usize, usize)>,
    ) -> Result<Vec<u8>, SourceError> {
        if let Some(why) = &self.broken {
            return Err(SourceError::Permanent(why.to_string()));
        }
        let turn = match &self.paced {
            Some(p) => Some(p.turn().await),
            None => None,
        };
        let mut resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let retry_after = if (200..300).contains(&status) {
            None
        } else {
            resp.headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry::parse_retry_after(v, SystemTime::now()))
        };
        if let Some(turn) = turn {
            turn.answered(pace::Answer::read(
                status,
                retry_after,
                resp.headers(),
                SystemTime::now(),
            ));
        }
        if !(200..300).contains(&status) {
            let body = resp.text().await.unwrap_or_default();
            return Err(SourceError::Status {
                status,
                retry_after,
                body: retry::snippet(&body),
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
    if !crate::json::compact::is_formatted(text.as_bytes()) {
        return Ok(Arc::new(text));
    }
    let mut bytes = text.into_bytes();
    crate::json::compact::compact(&mut bytes);
    Ok(Arc::new(
        String::from_utf8(bytes).expect("dropping ASCII whitespace keeps UTF-8"),
    ))
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
mod tests {
    use super::*;
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

    /// Each vendor's table is its own (its kind, its CEF device), and its events carry it.
    #[test]
    fn every_vendor_has_its_own_siem_rows_and_cef_device() {
        use crate::encodings::cef;
        for v in VENDORS {
            let t = v.siem();
            assert_eq!(t.kind, v.kind(), "vendor {}'s SIEM table", v.kind());
            assert!(!t.rules.is_empty(), "vendor {} has no SIEM rows", v.kind());
            assert!(std::ptr::eq(siem_of(v.kind()), t), "{}", v.kind());
            let e =
                crate::event::Event::standalone("s", v.kind(), v.vendor(), 0, "{}").with_siem(t);
            assert_ne!(
                cef::device(&e),
                ("auditship", "auditship"),
                "vendor {} has no CEF device",
                v.kind()
            );
        }
        assert_eq!(SIEM_TABLES.len(), VENDORS.len());
    }

    #[test]
    fn secret_headers_are_sensitive() {
        let h = secret_header("Bearer ", &Secret::new("tok")).unwrap();
        assert!(h.is_sensitive());
        assert!(!format!("{h:?}").contains("tok"));
    }

    #[test]
    fn every_row_names_an_activity_of_its_class() {
        for t in SIEM_TABLES.iter().copied().chain([&crate::rows::GENERIC]) {
            for r in t.rules.iter().chain([&t.other]) {
                assert!(
                    r.class.activity_caption(r.activity).is_some(),
                    "{} {:?}",
                    t.kind,
                    r
                );
                assert!(!r.types.is_empty(), "{} {:?}", t.kind, r);
            }
            assert_eq!(t.other.activity, 99, "{}", t.kind);
        }
    }

    #[test]
    fn readme_holds_the_tables_of_the_code() {
        let readme = include_str!("../../docs/siem-formats.md");
        let want = crate::encodings::siem::readme_section(SIEM_TABLES);
        const BEGIN: &str = "<!-- siem-tables: generated from each vendor's SIEM table (src/sources/<vendor>.rs) -->\n";
        const END: &str = "<!-- /siem-tables -->";
        let got = readme
            .split_once(BEGIN)
            .and_then(|(_, rest)| rest.split_once(END))
            .map(|(tables, _)| tables);
        assert_eq!(
            got,
            Some(want.as_str()),
            "docs/siem-formats.md's tables differ from the code's: put this between the \
             {BEGIN:?} and {END:?} lines:\n{want}"
        );
    }

    #[test]
    fn the_first_matching_row_wins_and_target_kinds_narrow_a_row() {
        let mut e = crate::event::Event::standalone("w", "wasabi_air", "wasabi", 0, "{}");
        e.set(crate::event::Field::Action, Some("create"));
        e.set(crate::event::Field::TargetKind, Some("user"));
        let t = siem_of("wasabi_air");
        assert_eq!(t.rule(&e).types, &["user", "creation"]);
        e.set(crate::event::Field::TargetKind, Some("location"));
        assert_eq!(t.rule(&e).types, crate::rows::CREATE);
        e.set(crate::event::Field::Action, Some("teleport"));
        assert_eq!(t.rule(&e), &t.other);
        e.set(crate::event::Field::Action, None);
        assert_eq!(t.rule(&e), &t.other);
        assert!(std::ptr::eq(siem_of("nobody"), &crate::rows::GENERIC));
    }
}
