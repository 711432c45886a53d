//! Domo activity log: `GET|POST /oauth/token` and `GET /v1/audit`.
//!
//! Tokens: HTTP Basic `client_id:client_secret`, `grant_type=client_credentials` in the query or
//! a form body; each token is random and valid for `domo_token_ttl` (or until
//! `expire_tokens`). Data: `start` ≤ time < `end` (unix ms; `start` required, `end` optional;
//! ≤ `end` with [`Answers::inclusive_end`](crate::Answers)), `limit` (default 50, 1..=1000),
//! `offset`, `user` (a userId); newest first, ties in a stable order (unless
//! [`Answers`](crate::Answers) says otherwise); a bare JSON array with no total. `time` is the instant (whole seconds) as local
//! wall-clock time in `domo_time_zone`, `"2017-12-13 10:57:35 PM"`, with no offset.

use std::fmt::Write;
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use fastrand::Rng;
use jiff::tz::TimeZone;

use crate::gen::{self, push_field, Plan, MS, SEC};
use crate::server::{self, auth_token, Params, Sim};
use crate::store::Store;
use crate::{SimConfig, Vendor};

/// Kinds of activity: actionType, objectType, eventText, comment verb, weight.
const ACTIONS: &[(&str, &str, &str, &str, u32)] = &[
    ("VIEWED", "PAGE", "Viewed page", "viewed page", 30),
    ("VIEWED", "CARD", "Viewed card", "viewed card", 25),
    ("CREATED", "CARD", "Created card", "created card", 3),
    ("UPDATED", "CARD", "Edited card", "edited card", 4),
    ("DELETED", "CARD", "Deleted card", "deleted card", 1),
    ("EXPORTED", "CARD", "Exported card", "exported card", 2),
    ("SHARED", "PAGE", "Shared page", "shared page", 2),
    (
        "CREATED",
        "DATA_SOURCE",
        "Created DataSet",
        "created DataSet",
        2,
    ),
    (
        "UPDATED",
        "DATA_SOURCE",
        "Updated DataSet",
        "updated DataSet",
        3,
    ),
    ("RAN", "DATAFLOW_TYPE", "Ran DataFlow", "ran DataFlow", 2),
    ("LOGGED_IN", "USER", "Logged in", "logged in", 8),
    ("LOGGED_OUT", "USER", "Logged out", "logged out", 2),
    ("UPDATED", "USER", "Updated user", "updated user", 1),
    ("UPDATED", "GROUP", "Updated group", "updated group", 1),
];

/// Desktop browser user agents.
const DESKTOP_UA: &[&str] = &[
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_12_6) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/62.0.3202.94 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
];

/// Mobile user agents.
const MOBILE_UA: &[&str] = &[
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Domo/5.4",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
];

/// A Domo user.
struct User {
    /// Numeric id, as a string.
    id: String,
    /// Full name.
    name: String,
    /// Usual IP address.
    ip: String,
}

/// A Domo object (page, card, data set, ...).
struct Object {
    /// Its id.
    id: String,
    /// Its title.
    name: String,
}

/// Filter fields of one entry.
#[derive(Clone)]
pub(crate) struct Meta {
    /// Index into the users.
    user: u16,
}

/// The generated activity log.
pub(crate) struct Data {
    /// The entries.
    pub store: Store<Meta>,
    /// The users entries refer to.
    users: Vec<User>,
}

/// `"2017-12-13 10:57:35 PM"`: the instant (seconds since the epoch) as wall-clock time in `tz`.
pub(crate) fn wall_clock(secs: i64, tz: &TimeZone) -> String {
    let Ok(t) = jiff::Timestamp::from_second(secs) else {
        return String::new();
    };
    let d = tz.to_datetime(t);
    let (h, pm) = match d.hour() {
        0 => (12, false),
        h @ 1..=11 => (h, false),
        12 => (12, true),
        h => (h - 12, true),
    };
    format!(
        "{:04}-{:02}-{:02} {h:02}:{:02}:{:02} {}",
        d.year(),
        d.month(),
        d.day(),
        d.minute(),
        d.second(),
        if pm { "PM" } else { "AM" }
    )
}

/// A random IPv4 address.
fn ip(r: &mut Rng) -> String {
    format!(
        "{}.{}.{}.{}",
        r.u8(1..224),
        r.u8(0..=255),
        r.u8(0..=255),
        r.u8(1..255)
    )
}

/// A title like "Churn Forecast".
fn title(r: &mut Rng) -> String {
    let cap = |w: &str| {
        let mut c = w.chars();
        c.next()
            .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
            .unwrap_or_default()
    };
    format!(
        "{} {}",
        cap(gen::pick_str(r, gen::WORDS)),
        cap(gen::pick_str(r, gen::WORDS))
    )
}

impl Data {
    /// Generates the entries of `cfg` (none when the vendor is not selected).
    pub fn generate(cfg: &SimConfig) -> Data {
        let plan = Plan::new(cfg, Vendor::Domo);
        let mut rng = gen::rng(cfg.seed, Vendor::Domo);
        let users: Vec<User> = gen::people(&mut rng, 60)
            .into_iter()
            .map(|p| User {
                id: rng.u64(1_000_000_000..2_000_000_000).to_string(),
                name: format!("{} {}", p.first, p.last),
                ip: ip(&mut rng),
            })
            .collect();
        let mut objects = |n: usize, numeric: bool| -> Vec<Object> {
            (0..n)
                .map(|_| Object {
                    id: if numeric {
                        rng.u64(100_000_000..2_000_000_000).to_string()
                    } else {
                        let h = gen::hex(&mut rng, 32);
                        format!(
                            "{}-{}-{}-{}-{}",
                            &h[..8],
                            &h[8..12],
                            &h[12..16],
                            &h[16..20],
                            &h[20..]
                        )
                    },
                    name: title(&mut rng),
                })
                .collect()
        };
        let pages = objects(40, true);
        let cards = objects(150, true);
        let datasets = objects(50, false);
        let dataflows = objects(20, true);
        let groups = objects(10, true);
        let weights: Vec<u32> = ACTIONS.iter().map(|a| a.4).collect();
        let tz = &cfg.domo_time_zone;
        let raw = gen::generate(
            &mut rng,
            &plan,
            true,
            |r| gen::uniform_time(r, plan.start, plan.end, SEC),
            |r, t, _| {
                let a = ACTIONS[gen::weighted(r, &weights)];
                let user_ix = r.usize(0..users.len());
                let user = &users[user_ix];
                let other = gen::pick(r, &users);
                let (object_id, object_name) = match a.1 {
                    "PAGE" => {
                        let o = gen::pick(r, &pages);
                        (o.id.as_str(), o.name.as_str())
                    }
                    "CARD" => {
                        let o = gen::pick(r, &cards);
                        (o.id.as_str(), o.name.as_str())
                    }
                    "DATA_SOURCE" => {
                        let o = gen::pick(r, &datasets);
                        (o.id.as_str(), o.name.as_str())
                    }
                    "DATAFLOW_TYPE" => {
                        let o = gen::pick(r, &dataflows);
                        (o.id.as_str(), o.name.as_str())
                    }
                    "GROUP" => {
                        let o = gen::pick(r, &groups);
                        (o.id.as_str(), o.name.as_str())
                    }
                    _ if a.3.starts_with("logged") => (user.id.as_str(), user.name.as_str()),
                    _ => (other.id.as_str(), other.name.as_str()),
                };
                let comment = if a.3.starts_with("logged") {
                    format!("{} {}.", user.name, a.3)
                } else {
                    format!("{} {} {}.", user.name, a.3, object_name)
                };
                let roll = r.u8(0..100);
                let (device, browser) = match roll {
                    0..=79 => ("desktop", *gen::pick(r, DESKTOP_UA)),
                    80..=91 => ("mobile", *gen::pick(r, MOBILE_UA)),
                    _ => ("API", "Apache-HttpClient/4.5.13 (Java/11.0.21)"),
                };
                let proxy = (r.u8(0..100) < 3).then_some(other);
                let address = if r.u8(0..10) == 0 {
                    ip(r)
                } else {
                    user.ip.clone()
                };
                let mut s = String::with_capacity(640);
                s.push('{');
                push_field(&mut s, "actionType", a.0);
                let _ = write!(s, ",\"actorId\":{},", proxy.map_or("0", |p| p.id.as_str()));
                push_field(&mut s, "actorName", proxy.map_or("", |p| p.name.as_str()));
                s.push(',');
                push_field(&mut s, "additionalComment", &comment);
                s.push(',');
                push_field(&mut s, "browserDetails", browser);
                s.push(',');
                push_field(&mut s, "device", device);
                s.push(',');
                push_field(&mut s, "eventText", a.2);
                s.push(',');
                push_field(&mut s, "ipAddress", &address);
                s.push(',');
                push_field(&mut s, "objectId", object_id);
                s.push(',');
                push_field(&mut s, "objectName", object_name);
                s.push(',');
                push_field(&mut s, "objectType", a.1);
                s.push(',');
                push_field(&mut s, "time", &wall_clock(t.div_euclid(SEC), tz));
                s.push(',');
                push_field(&mut s, "userId", &user.id);
                s.push(',');
                push_field(&mut s, "userName", &user.name);
                s.push(',');
                push_field(&mut s, "userType", "USER");
                s.push('}');
                (
                    s,
                    Meta {
                        user: user_ix as u16,
                    },
                )
            },
        );
        let raw = fold_twins(raw, &mut rng, cfg.twin_fraction, tz);
        Data {
            store: Store::new(raw),
            users,
        }
    }
}

/// Twins an hour apart: in the repeated hour of a daylight-saving change, an entry of the first
/// pass gets, with probability `fraction`, an identical entry at the instant of the second pass
/// that prints the same wall-clock time (Domo's text cannot tell them apart; the instants differ).
fn fold_twins(
    mut raw: Vec<crate::store::Raw<Meta>>,
    rng: &mut Rng,
    fraction: f64,
    tz: &TimeZone,
) -> Vec<crate::store::Raw<Meta>> {
    if fraction <= 0.0 || raw.is_empty() {
        return raw;
    }
    // Only a span the clocks change in can hold a repeated hour (UTC never does): look no
    // further, and spare every entry two offset look-ups.
    let (first, last) = raw.iter().fold((i64::MAX, i64::MIN), |(a, b), r| {
        (a.min(r.time), b.max(r.time))
    });
    let changes = jiff::Timestamp::from_nanosecond(i128::from(first))
        .ok()
        .and_then(|t| tz.following(t).next())
        .is_some_and(|c| c.timestamp().as_nanosecond() <= i128::from(last));
    if !changes {
        return raw;
    }
    let offset = |t: i64| {
        jiff::Timestamp::from_nanosecond(i128::from(t))
            .map(|ts| i64::from(tz.to_offset(ts).seconds()))
            .unwrap_or(0)
    };
    let mut seq = raw.len() as u32;
    let mut extra = Vec::new();
    for r in &raw {
        // The same wall-clock time `shift` seconds later, where the clocks went back by it.
        let shift = offset(r.time) - offset(r.time + 3 * 3600 * SEC);
        if shift <= 0 {
            continue;
        }
        let later = r.time + shift * SEC;
        let secs = r.time.div_euclid(SEC);
        if wall_clock(secs, tz) != wall_clock(secs + shift, tz) || rng.f64() >= fraction {
            continue;
        }
        extra.push(crate::store::Raw {
            time: later,
            visible_at: later.max(r.visible_at),
            seq,
            json: r.json.clone(),
            meta: r.meta.clone(),
        });
        seq += 1;
    }
    raw.extend(extra);
    raw
}

/// A Domo error answer `{"status","statusReason","message","path","toe"}`.
fn error(status: StatusCode, msg: &str, path: &str) -> Response {
    let toe = gen::hex(&mut Rng::new(), 20).to_ascii_uppercase();
    let body = serde_json::json!({
        "status": status.as_u16(),
        "statusReason": status.canonical_reason().unwrap_or(""),
        "message": msg,
        "path": path,
        "toe": toe,
    });
    server::json(status, body.to_string())
}

/// Decodes standard base64 (padding optional); `None` if malformed.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// This emulator's entry in the registry ([`crate::EMULATORS`]).
/// The flags of `auditship simulate` that only this emulator reads (flattened into
/// [`crate::SimArgs`]).
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct DomoArgs {
    /// IANA time zone in which Domo prints its wall-clock times.
    #[arg(long, value_name = "ZONE", default_value = "UTC")]
    domo_time_zone: String,
    /// Lifetime (`expires_in`) of issued Domo tokens.
    #[arg(long, value_name = "DURATION", default_value = "3599s", value_parser = humantime::parse_duration)]
    domo_token_ttl: std::time::Duration,
    /// Domo OAuth client id.
    #[arg(long, default_value = "sim-client")]
    domo_client_id: String,
    /// Domo OAuth client secret.
    #[arg(long, default_value = "sim-secret")]
    domo_client_secret: String,
}

/// What [`DomoArgs`] set up, checked.
pub(crate) struct DomoSetup {
    pub time_zone: jiff::tz::TimeZone,
    pub token_ttl: std::time::Duration,
    pub client_id: String,
    pub client_secret: String,
}

impl DomoArgs {
    /// The setup the flags say, each problem added to `problems` (an unknown zone reads as UTC
    /// meanwhile).
    pub(crate) fn check(&self, problems: &mut Vec<String>) -> DomoSetup {
        let tz = jiff::tz::TimeZone::get(&self.domo_time_zone);
        if tz.is_err() {
            problems.push(format!(
                "--domo-time-zone: unknown IANA time zone {:?} (e.g. UTC, America/Denver)",
                self.domo_time_zone
            ));
        }
        DomoSetup {
            time_zone: tz.unwrap_or(jiff::tz::TimeZone::UTC),
            token_ttl: self.domo_token_ttl,
            client_id: self.domo_client_id.clone(),
            client_secret: self.domo_client_secret.clone(),
        }
    }
}

pub(crate) const EMULATOR: crate::Emulator = crate::Emulator {
    vendor: Vendor::Domo,
    name: "domo",
    salt: 0x0d00_3333,
    routes,
    source_keys,
    reading_keys,
    expiring_tokens: true,
    generate: |cfg| Box::new(Data::generate(cfg)),
    events,
};

/// This emulator's data in a running simulator.
fn data(sim: &Sim) -> &Data {
    sim.data(Vendor::Domo)
}

fn routes(r: axum::Router<Arc<Sim>>) -> axum::Router<Arc<Sim>> {
    use axum::routing::get;
    r.route("/oauth/token", get(token).post(token))
        .route("/v1/audit", get(list))
}

fn events(sim: &Sim) -> &dyn crate::store::Events {
    &data(sim).store
}

/// The credential keys of an auditship `[[sources]]` entry that reads this emulator.
pub(crate) fn source_keys(cfg: &SimConfig) -> String {
    format!(
        "client_id = {:?}\nclient_secret = {:?}\n",
        cfg.domo_client_id, cfg.domo_client_secret
    )
}

/// Domo prints local time: an agent reading an instance in another zone than UTC must be told
/// it (`time_zone`).
fn reading_keys(cfg: &SimConfig) -> String {
    match cfg.domo_time_zone.iana_name() {
        Some(zone) if zone != "UTC" => format!("time_zone = {zone:?}\n"),
        _ => String::new(),
    }
}

/// `GET|POST /oauth/token`.
pub(crate) async fn token(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
    body: String,
) -> Response {
    const PATH: &str = "/oauth/token";
    let mut params = q;
    params.extend(
        form_urlencoded::parse(body.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())),
    );
    let params = Params(params);
    let credentials = auth_token(&headers, "basic")
        .and_then(base64_decode)
        .and_then(|b| String::from_utf8(b).ok());
    let ok = credentials
        .as_deref()
        .and_then(|c| c.split_once(':'))
        .is_some_and(|(id, secret)| {
            id == sim.cfg.domo_client_id && secret == sim.cfg.domo_client_secret
        });
    if !ok {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials", PATH);
    }
    if params.get("grant_type") != Some("client_credentials") {
        return error(
            StatusCode::BAD_REQUEST,
            "grant_type must be client_credentials",
            PATH,
        );
    }
    let mut r = Rng::new();
    let token = format!("{}.{}", gen::hex(&mut r, 48), gen::hex(&mut r, 32));
    let h = gen::hex(&mut r, 32);
    let jti = format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    );
    let ttl = sim.cfg.domo_token_ttl;
    {
        let mut tokens = sim.tokens.lock().expect("token map poisoned");
        let now = Instant::now();
        tokens.retain(|_, expiry| *expiry > now);
        tokens.insert(token.clone(), now + ttl);
    }
    sim.tokens_issued.fetch_add(1, Ordering::Relaxed);
    let body = serde_json::json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": ttl.as_secs(),
        "scope": "audit",
        "customer": "sim",
        "role": "Admin",
        "userId": 1,
        "jti": jti,
    });
    sim.ok(body.to_string())
}

/// `GET /v1/audit`.
pub(crate) async fn list(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    const PATH: &str = "/v1/audit";
    if let Some(fault) = sim.begin(Vendor::Domo) {
        return fault;
    }
    let Some(token) = auth_token(&headers, "bearer") else {
        return error(
            StatusCode::UNAUTHORIZED,
            "Full authentication is required to access this resource",
            PATH,
        );
    };
    let valid = sim
        .tokens
        .lock()
        .expect("token map poisoned")
        .get(token)
        .is_some_and(|expiry| *expiry > Instant::now());
    if !valid {
        return error(
            StatusCode::UNAUTHORIZED,
            "Invalid or expired access token",
            PATH,
        );
    }
    match answer(data(&sim), &Params(q), &sim.cfg.answers, sim.now_ns()) {
        Ok(body) => sim.ok(body),
        Err(msg) => error(StatusCode::BAD_REQUEST, &msg, PATH),
    }
}

/// The response body for a query, or a message for a bad request.
fn answer(data: &Data, q: &Params, answers: &crate::Answers, now: i64) -> Result<String, String> {
    let Some(start) = q.int("start")? else {
        return Err("Required parameter 'start' is not present".to_string());
    };
    let from = Bound::Included(start.saturating_mul(MS));
    let to = q.int("end")?.map_or(Bound::Unbounded, |ms| {
        answers.end_bound(ms.saturating_mul(MS))
    });
    let limit = q.limit("limit", 50)?;
    let offset = q.offset("offset")?;
    let user = q.get("user");
    let filter = |m: &Meta| user.is_none_or(|u| data.users[m.user as usize].id == u);
    let sel = data.store.select(
        from,
        to,
        now,
        user.is_some().then_some(&filter as &dyn Fn(&Meta) -> bool),
    );
    Ok(data
        .store
        .render_array(&data.store.page(&sel, offset, limit, now, true, answers)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_matches_the_documented_sample() {
        // 2017-12-14T05:57:35Z is 10:57:35 PM the day before at UTC−7 (the doc's sample).
        let t = "2017-12-14T05:57:35Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_second();
        assert_eq!(
            wall_clock(t, &TimeZone::get("America/Denver").unwrap()),
            "2017-12-13 10:57:35 PM"
        );
        assert_eq!(wall_clock(t, &TimeZone::UTC), "2017-12-14 05:57:35 AM");
    }

    #[test]
    fn wall_clock_repeats_and_skips_hours_at_dst_changes() {
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_second();
        let den = &TimeZone::get("America/Denver").unwrap();
        // November: 01:00–02:00 local happens twice (MDT, then MST).
        assert_eq!(
            wall_clock(at("2024-11-03T07:30:00Z"), den),
            "2024-11-03 01:30:00 AM"
        );
        assert_eq!(
            wall_clock(at("2024-11-03T08:30:00Z"), den),
            "2024-11-03 01:30:00 AM"
        );
        assert_eq!(
            wall_clock(at("2024-11-03T09:30:00Z"), den),
            "2024-11-03 02:30:00 AM"
        );
        // March: 02:00–03:00 local never happens.
        assert_eq!(
            wall_clock(at("2024-03-10T08:59:59Z"), den),
            "2024-03-10 01:59:59 AM"
        );
        assert_eq!(
            wall_clock(at("2024-03-10T09:00:00Z"), den),
            "2024-03-10 03:00:00 AM"
        );
        // Noon and midnight on a 12-hour clock.
        assert_eq!(
            wall_clock(at("2024-06-01T18:00:00Z"), den),
            "2024-06-01 12:00:00 PM"
        );
        assert_eq!(
            wall_clock(at("2024-06-01T06:00:00Z"), den),
            "2024-06-01 12:00:00 AM"
        );
    }

    #[test]
    fn base64_decodes_basic_credentials() {
        assert_eq!(
            base64_decode("c2ltLWNsaWVudDpzaW0tc2VjcmV0").unwrap(),
            b"sim-client:sim-secret"
        );
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert!(base64_decode("a b").is_none());
    }
}
