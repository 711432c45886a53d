//! Domo activity log: `GET {url}/v1/audit`, with an OAuth client-credentials token.
//!
//! `start`/`end` in unix milliseconds, `limit` ≤ 1000 and `offset`, a bare array, newest first.
//! `time` is wall-clock text with whole seconds and no offset (`2017-12-13 10:57:35 PM`) in the
//! instance's zone (`time_zone`). Entries carry no id, and two genuine ones can be identical to
//! the second: the poller keys them by content plus occurrence, on whole-second windows.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::tz::{AmbiguousOffset, TimeZone};
use reqwest::header::HeaderValue;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::{BoxFuture, Http, Page, PageRequest, Paging, Source, SourceError, Traits};
use crate::event::{Event, Field, PageText};
use crate::json::Text;
use crate::keys::Identity;
use crate::rows::{on, rule, Class::*, Table, ACCESS, CHANGE, CREATE, DELETE, INFO};
use crate::settings::{Secret, SecretFile, SecretText};
use crate::sources::config::{SourceCheck, SourceConfig};
use crate::timefmt::{Nanos, NANOS_PER_MS, NANOS_PER_SEC};

/// Renew a token this long before the vendor says it expires.
const RENEW_EARLY: Duration = Duration::from_secs(60);

/// Domo prints wall-clock time in the instance's zone: entries placed `earlier_by` early were
/// printed in a zone that far behind the configured one (`at` picks the configured zone's offset).
fn zone_hint(tz: &jiff::tz::TimeZone, earlier_by: Nanos, at: Nanos) -> Option<String> {
    let ts = jiff::Timestamp::from_nanosecond(at as i128).ok()?;
    let configured = i64::from(tz.to_offset(ts).seconds());
    let instance = configured - earlier_by / NANOS_PER_SEC;
    let offset = crate::clock::utc_offset(configured);
    let now = match tz.iana_name() {
        Some(name) if name != offset => format!("{name}, {offset}"),
        _ => offset,
    };
    Some(format!(
        "time_zone is probably {} (it is {now}): set time_zone to the Domo instance's IANA zone",
        crate::clock::utc_offset(instance)
    ))
}

pub struct Domo {
    name: Arc<str>,
    endpoint: url::Url,
    token_url: url::Url,
    client_id: Option<Secret>,
    client_secret: Option<Secret>,
    time_zone: jiff::tz::TimeZone,
    filters: Vec<(String, String)>,
    http: Http,
    /// The cached access token (sensitive header value) and when to renew it.
    token: Mutex<Option<(HeaderValue, Instant)>>,
}

const KIND: &str = "domo";
const VENDOR: &str = "domo";

/// Its SIEM rows: what each of its actions is in OCSF and ECS, and its names in OCSF, ECS and
/// CEF (`docs/siem-formats.md` shows them).
pub static SIEM: Table = Table {
    kind: "domo",
    product: "Domo",
    vendor_name: "Domo",
    feature: "Activity Log",
    namespace: "domo",
    dataset: "domo.activity",
    action_key: Some("actionType"),
    time_key: "time",
    cef_device: ("Domo", "Domo Activity Log"),
    access_detail: false,
    rules: &[
        rule("LOGGED_IN", Authentication, 1, "authentication", &["start"]),
        rule("LOGGED_OUT", Authentication, 2, "authentication", &["end"]),
        rule("VIEWED", ApiActivity, 2, "web", ACCESS),
        rule("CREATED", ApiActivity, 1, "configuration", CREATE),
        on(
            "USER",
            rule("UPDATED", ApiActivity, 3, "iam", &["user", "change"]),
        ),
        on(
            "GROUP",
            rule("UPDATED", ApiActivity, 3, "iam", &["group", "change"]),
        ),
        rule("UPDATED", ApiActivity, 3, "configuration", CHANGE),
        rule("DELETED", ApiActivity, 4, "configuration", DELETE),
        rule("EXPORTED", ApiActivity, 99, "web", ACCESS),
        rule("SHARED", ApiActivity, 99, "configuration", CHANGE),
        rule("RAN", ApiActivity, 99, "api", &["start"]),
    ],
    other: rule("(any other)", ApiActivity, 99, "api", INFO),
};

/// The `domo` plugin.
pub struct DomoKind;

/// The keys of a `kind = "domo"` source besides those of every source.
#[derive(Debug, Default, Deserialize, crate::settings::Section)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// OAuth client credentials with the audit scope.
    pub client_id: Option<SecretText>,
    pub client_id_file: Option<SecretFile>,
    pub client_secret: Option<SecretText>,
    pub client_secret_file: Option<SecretFile>,
    /// The token endpoint (default `{url}/oauth/token`).
    pub token_url: Option<String>,
    /// The IANA zone Domo prints its wall-clock times in (default UTC).
    pub time_zone: Option<String>,
}

/// A `domo` source's validated keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub client_id: Option<Secret>,
    pub client_secret: Option<Secret>,
    pub token_url: Option<url::Url>,
    /// The zone its wall-clock times are in.
    pub time_zone: TimeZone,
}

impl super::Vendor for DomoKind {
    fn siem(&self) -> &'static Table {
        &SIEM
    }
    fn kind(&self) -> &'static str {
        KIND
    }
    fn vendor(&self) -> &'static str {
        VENDOR
    }
    fn title(&self) -> &'static str {
        "Domo activity log"
    }
    fn options(&self) -> &'static [&'static str] {
        <Section as crate::settings::Section>::KEYS
    }
    fn secrets(&self) -> &'static [&'static str] {
        <Section as crate::settings::Section>::SECRETS
    }
    fn reserved_params(&self) -> &'static [&'static str] {
        &["start", "end", "limit", "offset"]
    }
    fn filter_params(&self) -> &'static [&'static str] {
        &["user"]
    }
    fn settings(&self, c: &mut SourceCheck<'_, '_>) -> Option<super::VendorSettings> {
        let s: Section = c.section();
        let client_id = c.secret("client_id", &s.client_id, &s.client_id_file);
        c.require("client_id", &client_id, "client_id (or client_id_file)");
        let client_secret = c.secret("client_secret", &s.client_secret, &s.client_secret_file);
        c.require(
            "client_secret",
            &client_secret,
            "client_secret (or client_secret_file)",
        );
        let token_url = c.url("token_url", &s.token_url);
        let time_zone = match s.time_zone.as_deref() {
            None => TimeZone::UTC,
            Some(z) => TimeZone::get(z).unwrap_or_else(|_| {
                c.fail(
                    "time_zone",
                    format_args!("{z:?} is not an IANA time zone; write e.g. \"America/Denver\""),
                );
                TimeZone::UTC
            }),
        };
        // No largest window: Domo's windows end where the clocks go back instead.
        if !c.window.as_nanos().is_multiple_of(1_000_000_000) {
            c.fail(
                "window",
                "must be whole seconds for kind domo (its times have one-second resolution)",
            );
        }
        Some(super::VendorSettings::Domo(Settings {
            client_id: client_id.get(),
            client_secret: client_secret.get(),
            token_url,
            time_zone,
        }))
    }
}

impl super::Configured for Settings {
    fn build(&self, cfg: &SourceConfig, http: Http) -> Box<dyn Source> {
        Box::new(Domo::new(cfg, self, http))
    }
    fn credential(&self, cfg: &SourceConfig) -> Option<super::CredentialId> {
        // Every token is its client's: the client is the credential.
        let id = self.client_id.as_ref()?;
        Some(super::CredentialId::new(&cfg.url, id.expose()))
    }
}

impl Domo {
    pub fn new(cfg: &SourceConfig, settings: &Settings, http: Http) -> Domo {
        let mut token_url = settings
            .token_url
            .clone()
            .unwrap_or_else(|| super::endpoint(&cfg.url, "/oauth/token"));
        if token_url.query().is_none() {
            token_url.set_query(Some("grant_type=client_credentials&scope=audit"));
        }
        Domo {
            name: super::source_name(cfg),
            endpoint: super::endpoint(&cfg.url, "/v1/audit"),
            token_url,
            client_id: settings.client_id.clone(),
            client_secret: settings.client_secret.clone(),
            time_zone: settings.time_zone.clone(),
            filters: cfg.filters.clone(),
            http,
            token: Mutex::new(None),
        }
    }

    /// A valid token: the cached one unless it is about to expire or `renew` is set.
    async fn token(&self, renew: bool) -> Result<HeaderValue, SourceError> {
        let mut slot = self.token.lock().await;
        if let Some((tok, renew_at)) = slot.as_ref() {
            if !renew && Instant::now() < *renew_at {
                return Ok(tok.clone());
            }
        }
        *slot = None;
        let (Some(id), Some(secret)) = (&self.client_id, &self.client_secret) else {
            return Err(SourceError::Permanent(
                "domo needs client_id and client_secret".into(),
            ));
        };
        let body = self
            .http
            .send(
                self.http
                    .client()
                    .get(self.token_url.clone())
                    .headers(super::json_headers())
                    .basic_auth(id.expose(), Some(secret.expose())),
                None,
            )
            .await
            .map_err(|e| match e {
                SourceError::Status { status: 401 | 403, .. } => SourceError::Permanent(format!(
                    "domo refused the client credentials at the token endpoint ({e}); check client_id and client_secret"
                )),
                other => other,
            })?;
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            expires_in: Option<u64>,
        }
        let t: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| SourceError::Body(format!("domo token response: {e}")))?;
        let lifetime = Duration::from_secs(t.expires_in.unwrap_or(3600));
        // Renew a minute early, or at half-life for very short-lived tokens.
        let renew_at = Instant::now() + lifetime.saturating_sub(RENEW_EARLY.min(lifetime / 2));
        let header = super::secret_header("bearer ", &Secret::new(t.access_token))?;
        *slot = Some((header.clone(), renew_at));
        tracing::debug!(source = %self.name, expires_in_s = lifetime.as_secs(), "domo token issued");
        Ok(header)
    }

    async fn get_page(
        &self,
        req: &PageRequest,
        token: HeaderValue,
    ) -> Result<PageText, SourceError> {
        let query = [
            ("start", (req.start / NANOS_PER_MS).to_string()),
            ("end", req.end_ms().to_string()),
            ("limit", req.limit.to_string()),
            ("offset", req.offset.to_string()),
        ];
        let auth = Ok((reqwest::header::AUTHORIZATION, token));
        self.http
            .get(&self.endpoint, &auth, &query, &self.filters, None)
            .await
    }
}

/// Parses Domo's `2017-12-13 10:57:35 PM` (12-hour clock, no offset).
pub fn parse_wall_clock(s: &str) -> Option<WallClock> {
    fixed_wall_clock(s.as_bytes()).or_else(|| any_wall_clock(s))
}

/// The form Domo writes, `YYYY-MM-DD HH:MM:SS AM`, read by position: a sixth of a Domo event's
/// parsing went to splitting the text. `None` for anything else, which [`any_wall_clock`] reads.
fn fixed_wall_clock(b: &[u8]) -> Option<WallClock> {
    let b: &[u8; 22] = b.try_into().ok()?;
    let num = |r: std::ops::Range<usize>| {
        b[r].iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + (c - b'0') as u32)
        })
    };
    if [
        (4, b'-'),
        (7, b'-'),
        (10, b' '),
        (13, b':'),
        (16, b':'),
        (19, b' '),
    ]
    .iter()
    .any(|(i, c)| b[*i] != *c)
        || !b[21].eq_ignore_ascii_case(&b'm')
    {
        return None;
    }
    let h = num(11..13)?;
    if !(1..=12).contains(&h) {
        return None;
    }
    let h24 = match b[20].to_ascii_uppercase() {
        b'A' => h % 12,
        b'P' => h % 12 + 12,
        _ => return None,
    };
    wall_clock(
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        h24,
        num(14..16)?,
        num(17..19)?,
    )
}

/// A wall-clock date and time, with no zone.
pub type WallClock = jiff::civil::DateTime;

/// The wall-clock time of these fields, if they are a calendar day and a time of day (no leap
/// second).
fn wall_clock(y: u32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<WallClock> {
    let small = |n: u32| i8::try_from(n).ok();
    jiff::civil::DateTime::new(
        i16::try_from(y).ok()?,
        small(mo)?,
        small(d)?,
        small(h)?,
        small(mi)?,
        small(s)?,
        0,
    )
    .ok()
}

/// Any spacing and field widths Domo's form could be written with.
fn any_wall_clock(s: &str) -> Option<WallClock> {
    let (date, rest) = s.trim().split_once(' ')?;
    let (clock, meridiem) = rest.trim().split_once(' ')?;
    let mut ymd = date.split('-');
    let (y, mo, d) = (ymd.next()?, ymd.next()?, ymd.next()?);
    let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit());
    if ymd.next().is_some() || y.len() != 4 || ![y, mo, d].into_iter().all(all_digits) {
        return None;
    }
    let mut parts = clock.split(':');
    let h: u32 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let sec: u32 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&h) {
        return None;
    }
    let h24 = match meridiem.trim().to_ascii_uppercase().as_str() {
        "AM" => h % 12,
        "PM" => h % 12 + 12,
        _ => return None,
    };
    wall_clock(
        y.parse().ok()?,
        mo.parse().ok()?,
        d.parse().ok()?,
        h24,
        m,
        sec,
    )
}

/// The first instant in `(start, end)` at which the clocks of `tz` go back, if any: the second
/// pass of a repeated hour begins there. A Domo window ends at it, so that no window holds both
/// instants a wall-clock time of that hour can mean.
pub fn next_fold(tz: &TimeZone, start: Nanos, end: Nanos) -> Option<Nanos> {
    let from = jiff::Timestamp::from_nanosecond(i128::from(start)).ok()?;
    for t in tz.following(from) {
        let at = i64::try_from(t.timestamp().as_nanosecond()).ok()?;
        if at >= end {
            return None;
        }
        let before = tz.to_offset(
            t.timestamp()
                .checked_sub(jiff::SignedDuration::from_nanos(1))
                .ok()?,
        );
        if t.offset() < before {
            return Some(at);
        }
    }
    None
}

/// Where a window `[start, end)` of a Domo instance in `tz` ends: at the first instant the
/// clocks go back, if one falls inside it ([`next_fold`]), else at `end`.
pub fn window_end(tz: &TimeZone, start: Nanos, end: Nanos) -> Nanos {
    next_fold(tz, start, end).unwrap_or(end)
}

/// The instant of a wall-clock time in `tz`. In the repeated hour of a daylight-saving change a
/// wall-clock time means two instants: the one inside the requested window `[start, end)` is
/// chosen (windows never cross the change, see [`next_fold`], so at most one is). In the skipped
/// hour, which a correct clock never shows, the offset from before the change is used.
pub fn resolve(tz: &TimeZone, local: WallClock, start: Nanos, end: Nanos) -> Option<Nanos> {
    resolve_noting_fold(tz, local, start, end).map(|(t, _)| t)
}

/// [`resolve`], and whether the wall-clock time was one of a repeated hour (two instants).
fn resolve_noting_fold(
    tz: &TimeZone,
    local: WallClock,
    start: Nanos,
    end: Nanos,
) -> Option<(Nanos, bool)> {
    // The instant of the wall-clock time at offset `o`; none where nanoseconds cannot hold it
    // (a damaged page can hold any year).
    let at = |o: jiff::tz::Offset| {
        let t = o.to_timestamp(local).ok()?;
        i64::try_from(t.as_nanosecond()).ok()
    };
    match tz.to_ambiguous_timestamp(local).offset() {
        AmbiguousOffset::Unambiguous { offset } => at(offset).map(|t| (t, false)),
        AmbiguousOffset::Fold { before, after } => {
            // `before` is the larger offset, so its instant is the earlier one.
            let (a, b) = (at(before)?, at(after)?);
            let inside = |t: Nanos| start <= t && t < end;
            Some((if inside(b) && !inside(a) { b } else { a }, true))
        }
        AmbiguousOffset::Gap { before, .. } => at(before).map(|t| (t, false)),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEntry<'a> {
    #[serde(borrow)]
    user_name: Option<Text<'a>>,
    #[serde(borrow, default)]
    user_id: IdText<'a>,
    #[serde(borrow)]
    user_type: Option<Text<'a>>,
    #[serde(borrow)]
    object_name: Option<Text<'a>>,
    #[serde(borrow, default)]
    object_id: IdText<'a>,
    #[serde(borrow)]
    object_type: Option<Text<'a>>,
    #[serde(borrow)]
    time: Text<'a>,
    #[serde(borrow)]
    event_text: Option<Text<'a>>,
    #[serde(borrow)]
    action_type: Option<Text<'a>>,
    #[serde(borrow)]
    browser_details: Option<Text<'a>>,
    #[serde(borrow)]
    ip_address: Option<Text<'a>>,
}

/// The shape of a Domo entry.
struct Entry;

impl crate::json::Shape for Entry {
    type Raw<'a> = RawEntry<'a>;
}

/// An id that arrives as a string or a number: its text either way (anything else: none).
#[derive(Default)]
struct IdText<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for IdText<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = IdText<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an id")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<IdText<'a>, E> {
                Ok(IdText(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<IdText<'a>, E> {
                Ok(IdText(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_u64<E>(self, v: u64) -> Result<IdText<'a>, E> {
                Ok(IdText(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_i64<E>(self, v: i64) -> Result<IdText<'a>, E> {
                Ok(IdText(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E>(self, v: f64) -> Result<IdText<'a>, E> {
                Ok(IdText(
                    serde_json::Number::from_f64(v).map(|n| Cow::Owned(n.to_string())),
                ))
            }
            fn visit_bool<E>(self, _: bool) -> Result<IdText<'a>, E> {
                Ok(IdText(None))
            }
            fn visit_unit<E>(self) -> Result<IdText<'a>, E> {
                Ok(IdText(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<IdText<'a>, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(IdText(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<IdText<'a>, A::Error> {
                while a
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(IdText(None))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// Reads a response (a bare array) for the window `[start, end)`.
pub fn read_page(
    source: &Arc<str>,
    tz: &TimeZone,
    page: &PageText,
    capacity: usize,
    (start, end): (Nanos, Nanos),
) -> Result<Vec<Event>, SourceError> {
    super::entries::read_hashed_entries::<Entry>(
        page,
        super::entries::Layout::Array,
        capacity,
        |raw, e| normalise(source, tz, page, raw, e, start, end),
    )
    .map(|(events, _)| events)
}

/// Normalises one Domo entry read for the window `[start, end)`, `raw` (its text) being part
/// of `page`.
fn normalise(
    source: &Arc<str>,
    tz: &TimeZone,
    page: &PageText,
    raw: &str,
    e: RawEntry<'_>,
    start: Nanos,
    end: Nanos,
) -> Result<Event, SourceError> {
    let local = parse_wall_clock(&e.time).ok_or_else(|| {
        SourceError::Body(format!(
            "domo time {:?} is not \"YYYY-MM-DD hh:mm:ss AM\"",
            e.time
        ))
    })?;
    let (time, ambiguous) = resolve_noting_fold(tz, local, start, end)
        .ok_or_else(|| SourceError::Body(format!("domo time {:?} is out of range", e.time)))?;
    let mut ev = Event::new(source, KIND, VENDOR, time, page, raw).with_siem(&SIEM);
    if ambiguous {
        ev.set_ambiguous_time();
    }
    ev.set(
        Field::Action,
        non_empty(e.event_text.as_deref()).or(non_empty(e.action_type.as_deref())),
    );
    ev.set(Field::ActorKind, non_empty(e.user_type.as_deref()));
    ev.set(Field::ActorId, non_empty(e.user_id.0.as_deref()));
    ev.set(Field::ActorName, non_empty(e.user_name.as_deref()));
    ev.set(Field::TargetKind, non_empty(e.object_type.as_deref()));
    ev.set(Field::TargetId, non_empty(e.object_id.0.as_deref()));
    ev.set(Field::TargetName, non_empty(e.object_name.as_deref()));
    ev.set(Field::SrcIp, non_empty(e.ip_address.as_deref()));
    ev.set(Field::UserAgent, non_empty(e.browser_details.as_deref()));
    Ok(ev)
}

impl Source for Domo {
    fn traits(&self) -> Traits {
        Traits {
            paging: Paging::Offset,
            identity: Identity::Content,
            time_unit: NANOS_PER_SEC,
            end_can_be_shortened: true,
        }
    }

    fn window_end(&self, start: Nanos, end: Nanos) -> Nanos {
        window_end(&self.time_zone, start, end)
    }

    fn clock_hint(&self, earlier_by: Nanos, at: Nanos) -> Option<String> {
        zone_hint(&self.time_zone, earlier_by, at)
    }

    fn fetch<'a>(&'a self, req: &'a PageRequest) -> BoxFuture<'a, Result<Page, SourceError>> {
        Box::pin(async move {
            let token = self.token(false).await?;
            let page = match self.get_page(req, token).await {
                // The token was revoked or expired early: renew it once and try again.
                Err(SourceError::Status { status: 401, .. }) => {
                    tracing::info!(source = %self.name, "domo answered 401: renewing the token");
                    let token = self.token(true).await?;
                    self.get_page(req, token).await.map_err(|e| match e {
                        SourceError::Status { status: 401, .. } => SourceError::Permanent(format!(
                            "domo refused a freshly issued token ({e}); does the client have the audit scope?"
                        )),
                        other => other,
                    })?
                }
                other => other?,
            };
            let events = read_page(
                &self.name,
                &self.time_zone,
                &page,
                req.limit as usize,
                (req.start, req.end),
            )?;
            let returned = events.len();
            Ok(Page {
                events,
                returned,
                more: returned >= req.limit as usize,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_zone_hint_names_the_offset_the_entries_suggest() {
        let at = 1_700_000_000 * NANOS_PER_SEC; // 2023-11-14, no daylight-saving time in Paris
        let h = 3600 * NANOS_PER_SEC;
        assert_eq!(
            zone_hint(&jiff::tz::TimeZone::UTC, 7 * h, at).unwrap(),
            "time_zone is probably UTC-7 (it is UTC): set time_zone to the Domo instance's IANA zone"
        );
        let paris = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
        assert!(zone_hint(&paris, -(4 * h + h / 2), at)
            .unwrap()
            .starts_with("time_zone is probably UTC+5:30 (it is Europe/Paris, UTC+1)"));
    }

    use super::*;
    use crate::timefmt::{parse_rfc3339, rfc3339_ms};

    fn at(s: &str) -> Nanos {
        parse_rfc3339(s).unwrap()
    }

    #[test]
    fn parses_the_twelve_hour_clock() {
        let p = |s| parse_wall_clock(s).map(|d| d.strftime("%Y-%m-%d %H:%M:%S").to_string());
        assert_eq!(
            p("2017-12-13 10:57:35 PM").as_deref(),
            Some("2017-12-13 22:57:35")
        );
        assert_eq!(
            p("2017-12-13 12:00:01 AM").as_deref(),
            Some("2017-12-13 00:00:01")
        );
        assert_eq!(
            p("2017-12-13 12:00:01 PM").as_deref(),
            Some("2017-12-13 12:00:01")
        );
        assert_eq!(p("2017-12-13 13:00:01 PM"), None);
        assert_eq!(p("2017-12-13 10:57 PM"), None);
        assert_eq!(p("2017-12-13T10:57:35Z"), None);
        // Dates that are not a calendar day or not YYYY-MM-DD.
        for bad in [
            "2017-02-30 10:57:35 PM",
            "2017-13-01 10:57:35 PM",
            "17-12-13 10:57:35 PM",
            "2017-12 10:57:35 PM",
            "2017-12-13-01 10:57:35 PM",
            "2017-+2-13 10:57:35 PM",
            "2017--13 10:57:35 PM",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
        assert_eq!(
            p("2024-02-29 01:02:03 AM").as_deref(),
            Some("2024-02-29 01:02:03")
        );
    }

    #[test]
    fn the_fixed_form_reads_as_the_general_parser_does() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut fixed = 0;
        for _ in 0..50_000 {
            let mut s = format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02} {}",
                rng.i32(1990..2040),
                rng.u32(0..14),
                rng.u32(0..33),
                rng.u32(0..14),
                rng.u32(0..61),
                rng.u32(0..61),
                ["AM", "PM", "am", "pM", "XM", "A "][rng.usize(0..6)]
            );
            if rng.u8(0..4) == 0 {
                // A byte changed anywhere: separators, digits, or the length.
                let i = rng.usize(0..s.len());
                let c = [b'-', b' ', b':', b'0', b'9', b'x', b'+', b'/'][rng.usize(0..8)];
                s.replace_range(i..i + 1, std::str::from_utf8(&[c]).unwrap());
            }
            let want = any_wall_clock(&s);
            let by_position = fixed_wall_clock(s.as_bytes());
            assert!(by_position.is_none() || by_position == want, "{s:?}");
            assert_eq!(parse_wall_clock(&s), want, "{s:?}");
            fixed += usize::from(by_position.is_some());
        }
        assert!(fixed > 10_000, "the fixed form was read only {fixed} times");
        // Other spellings still go to the general parser.
        assert!(fixed_wall_clock(b"2017-12-13  10:57:35 PM").is_none());
        assert!(parse_wall_clock(" 2017-12-13 10:57:35 pm ").is_some());
    }

    #[test]
    fn utc_and_fixed_zones() {
        let local = parse_wall_clock("2017-12-13 10:57:35 PM").unwrap();
        let t = resolve(&TimeZone::UTC, local, 0, i64::MAX).unwrap();
        assert_eq!(rfc3339_ms(t), "2017-12-13T22:57:35.000Z");
        let denver = &TimeZone::get("America/Denver").unwrap();
        // The vendor's own sample: MST is UTC−7 in December.
        let t = resolve(denver, local, 0, i64::MAX).unwrap();
        assert_eq!(rfc3339_ms(t), "2017-12-14T05:57:35.000Z");
    }

    #[test]
    fn the_repeated_hour_is_resolved_by_the_window() {
        let denver = &TimeZone::get("America/Denver").unwrap();
        // 2024-11-03 01:30 happens twice in Denver: 07:30Z (MDT) and 08:30Z (MST).
        let local = parse_wall_clock("2024-11-03 01:30:00 AM").unwrap();
        let first = resolve(
            denver,
            local,
            at("2024-11-03T07:15:00Z"),
            at("2024-11-03T07:45:00Z"),
        );
        let second = resolve(
            denver,
            local,
            at("2024-11-03T08:15:00Z"),
            at("2024-11-03T08:45:00Z"),
        );
        assert_eq!(rfc3339_ms(first.unwrap()), "2024-11-03T07:30:00.000Z");
        assert_eq!(rfc3339_ms(second.unwrap()), "2024-11-03T08:30:00.000Z");
    }

    #[test]
    fn the_skipped_hour_uses_the_offset_before_the_change() {
        let denver = &TimeZone::get("America/Denver").unwrap();
        // 2024-03-10 02:30 does not exist in Denver (02:00 MST jumps to 03:00 MDT).
        let local = parse_wall_clock("2024-03-10 02:30:00 AM").unwrap();
        let t = resolve(denver, local, 0, i64::MAX).unwrap();
        assert_eq!(rfc3339_ms(t), "2024-03-10T09:30:00.000Z");
        // Either side of the gap is unambiguous.
        let before = parse_wall_clock("2024-03-10 01:59:59 AM").unwrap();
        let after = parse_wall_clock("2024-03-10 03:00:00 AM").unwrap();
        assert_eq!(
            rfc3339_ms(resolve(denver, before, 0, i64::MAX).unwrap()),
            "2024-03-10T08:59:59.000Z"
        );
        assert_eq!(
            rfc3339_ms(resolve(denver, after, 0, i64::MAX).unwrap()),
            "2024-03-10T09:00:00.000Z"
        );
    }

    #[test]
    fn half_hour_changes_and_dates_past_the_last_listed_transition() {
        let r = |zone: &str, wall: &str| {
            let tz = TimeZone::get(zone).unwrap();
            rfc3339_ms(resolve(&tz, parse_wall_clock(wall).unwrap(), 0, i64::MAX).unwrap())
        };
        // Lord Howe Island moves its clocks by 30 minutes (+10:30 to +11:00 on the first
        // Sunday of October at 02:00): 02:15 is skipped, and read with the offset before.
        assert_eq!(
            r("Australia/Lord_Howe", "2024-10-06 02:15:00 AM"),
            "2024-10-05T15:45:00.000Z"
        );
        assert_eq!(
            r("Australia/Lord_Howe", "2024-10-06 03:00:00 AM"),
            "2024-10-05T16:00:00.000Z"
        );
        // Far-future summer and winter times come from the zone's standing rule.
        assert_eq!(
            r("America/Denver", "2040-07-01 12:00:00 PM"),
            "2040-07-01T18:00:00.000Z"
        );
        assert_eq!(
            r("America/Denver", "2040-01-01 12:00:00 PM"),
            "2040-01-01T19:00:00.000Z"
        );
        // Zone names are looked up as the tz database spells them, in any case.
        assert!(TimeZone::get("america/denver").is_ok());
    }

    #[test]
    fn normalises_the_documented_entry() {
        let json = r#"{"actionType":"VIEWED","actorId":0,"actorName":"","additionalComment":"Leonard Euler viewed page Intro to Domo.",
                "browserDetails":"Mozilla/5.0","device":"desktop","eventText":"Viewed page","ipAddress":"50.207.2.1",
                "objectId":"1552855497","objectName":"Intro to Domo","objectType":"PAGE","time":"2017-12-13 10:57:35 PM",
                "userId":"1619916076","userName":"Leonard Euler","userType":"USER"}"#;
        let n = |json: &str| {
            let page: PageText = Arc::new(format!("[{json}]"));
            read_page(&Arc::from("domo"), &TimeZone::UTC, &page, 1, (0, i64::MAX))
                .map(|mut events| events.remove(0))
        };
        let e = n(json).unwrap();
        assert_eq!(e.action(), Some("Viewed page"));
        assert_eq!(e.src_ip(), Some("50.207.2.1"));
        assert_eq!(e.user_agent(), Some("Mozilla/5.0"));
        let t = e.target().unwrap();
        assert_eq!(
            (t.kind, t.id, t.name),
            (Some("PAGE"), Some("1552855497"), Some("Intro to Domo"))
        );
        assert_eq!(e.actor().unwrap().name, Some("Leonard Euler"));
        assert_eq!(e.copied_len(), 0, "every field points into the page");
        // Ids as numbers, other JSON or nothing; an empty event text gives way to the type.
        for (user_id, want) in [
            ("42", Some("42")),
            ("-7", Some("-7")),
            ("1.5", Some("1.5")),
            ("\"\"", None),
            ("null", None),
            ("{\"a\": [1]}", None),
            ("[1, 2]", None),
            ("true", None),
        ] {
            let e = n(&format!(
                r#"{{"userId": {user_id}, "eventText": "", "actionType": "LOGIN", "time": "2017-12-13 10:57:35 PM"}}"#
            ))
            .unwrap();
            assert_eq!(e.actor().and_then(|a| a.id), want, "{user_id}");
            assert_eq!(e.action(), Some("LOGIN"));
        }
    }
}
