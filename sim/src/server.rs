//! The shared HTTP plumbing: simulator state, query and auth helpers, injected faults,
//! statistics, the router and the `/_sim/*` admin endpoints.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Query, Request, State};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jiff::Timestamp;

use crate::gen;
use crate::{Chaos, Fault, SimConfig, SimStats, Vendor};

/// Everything a running simulator knows: generated data plus mutable counters and queues.
pub(crate) struct Sim {
    /// The configuration the data was generated from.
    pub cfg: SimConfig,
    /// Each emulator's generated data, in [`Vendor::ALL`] order (see [`Sim::data`]).
    data: Vec<Box<dyn Any + Send + Sync>>,
    /// Data calls per vendor, in [`Vendor::ALL`] order.
    requests: [AtomicU64; Vendor::ALL.len()],
    /// Domo tokens issued.
    pub tokens_issued: AtomicU64,
    /// Injected faults served.
    faults_served: AtomicU64,
    /// Queued faults, served front first.
    faults: Mutex<VecDeque<Fault>>,
    /// Valid Domo tokens and when each expires.
    pub tokens: Mutex<HashMap<String, Instant>>,
    /// Random faults, with the generator of their draws.
    chaos: Mutex<Option<(Chaos, fastrand::Rng, bool)>>,
    /// Random faults served, by kind.
    chaos_served: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Random faults drawn so far (but expired tokens): whose turn it is.
    chaos_turn: AtomicU64,
    /// [`SimConfig::rate_limit`]: each credential's bucket.
    buckets: Mutex<HashMap<String, Bucket>>,
    /// Requests answered 429 by the rate limit, and requests sent before the `Retry-After` their
    /// credential was given had passed.
    rate_limited: AtomicU64,
    sent_early: AtomicU64,
    /// [`crate::SimHandle::record_requests`]: every vendor request, while on.
    pub(crate) log: Mutex<Option<Vec<crate::Logged>>>,
}

/// One credential's token bucket.
struct Bucket {
    tokens: f64,
    at: Instant,
    /// The end of the last `Retry-After` given to this credential.
    wait_until: Option<Instant>,
}

impl Sim {
    /// Generates every vendor's events (in parallel) for `cfg`.
    pub fn new(cfg: SimConfig) -> Sim {
        let data = std::thread::scope(|s| {
            let cfg = &cfg;
            let running: Vec<_> = crate::EMULATORS
                .iter()
                .map(|e| (e.name, s.spawn(move || (e.generate)(cfg))))
                .collect();
            running
                .into_iter()
                .map(|(name, t)| {
                    t.join()
                        .unwrap_or_else(|_| panic!("{name}: generation panicked"))
                })
                .collect()
        });
        Sim {
            cfg,
            data,
            requests: Default::default(),
            tokens_issued: AtomicU64::new(0),
            faults_served: AtomicU64::new(0),
            faults: Mutex::new(VecDeque::new()),
            tokens: Mutex::new(HashMap::new()),
            chaos: Mutex::new(None),
            chaos_served: Mutex::new(Default::default()),
            chaos_turn: AtomicU64::new(0),
            buckets: Mutex::new(HashMap::new()),
            rate_limited: AtomicU64::new(0),
            sent_early: AtomicU64::new(0),
            log: Mutex::new(None),
        }
    }

    /// Now on the emulator's clock ([`SimConfig::clock`], else the wall clock), in ns.
    pub fn now_ns(&self) -> i64 {
        match &self.cfg.clock {
            Some(c) => gen::to_ns(c.now()),
            None => gen::now_ns(),
        }
    }

    /// Serves random faults from now on, or stops them.
    pub fn set_chaos(&self, chaos: Option<Chaos>) {
        *self.chaos.lock().expect("chaos poisoned") =
            chaos.map(|c| (c.clone(), fastrand::Rng::with_seed(c.seed), false));
    }

    /// A random fault for this request of `vendor`, if the draw says so.
    fn chaos(&self, vendor: Vendor) -> Option<Response> {
        let (kind, slow) = {
            let mut g = self.chaos.lock().expect("chaos poisoned");
            let (c, rng, expired_last) = g.as_mut()?;
            if rng.f64() >= c.rate {
                return None;
            }
            // A token issued after an expiry is not expired again at its first use (Domo's
            // tokens live an hour): the agent renews once on a 401, as the docs say.
            let may_expire = vendor.emulator().expiring_tokens && !std::mem::take(expired_last);
            // Only a vendor with tokens (Domo) has them expire; it makes fewer requests than the
            // others (one page a window), so half of its faults are that one.
            let kinds: Vec<&str> = crate::chaos::KINDS
                .iter()
                .copied()
                .filter(|k| *k != "expired_token")
                .collect();
            // The others take turns, so that a short run sees every kind.
            let kind = if may_expire && rng.bool() {
                *expired_last = true;
                "expired_token"
            } else {
                let n = self.chaos_turn.fetch_add(1, Ordering::Relaxed) as usize;
                kinds[n % kinds.len()]
            };
            (kind, c.slow)
        };
        self.faults_served.fetch_add(1, Ordering::Relaxed);
        *self
            .chaos_served
            .lock()
            .expect("chaos poisoned")
            .entry(kind.to_string())
            .or_default() += 1;
        match crate::chaos::serve(kind, slow) {
            crate::chaos::Served::Response(r) => Some(r),
            crate::chaos::Served::ExpiredToken => {
                self.expire_tokens();
                None
            }
        }
    }

    /// The generated data of `vendor`, which its emulator made as a `T`.
    pub fn data<T: 'static>(&self, vendor: Vendor) -> &T {
        let i = Vendor::ALL.iter().position(|v| *v == vendor).unwrap_or(0);
        self.data[i]
            .downcast_ref()
            .unwrap_or_else(|| panic!("{vendor}: data of another type"))
    }

    /// Visible events of `vendor` with time in `[from, to)`, ascending, as rendered.
    pub fn events(
        &self,
        vendor: Vendor,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        now: i64,
    ) -> Vec<&str> {
        let from = from.map_or(Bound::Unbounded, |t| Bound::Included(gen::to_ns(t)));
        let to = to.map_or(Bound::Unbounded, |t| Bound::Excluded(gen::to_ns(t)));
        (vendor.emulator().events)(self).window(from, to, now)
    }

    /// Number of generated events of `vendor`, visible or not.
    pub fn total_events(&self, vendor: Vendor) -> usize {
        (vendor.emulator().events)(self).count()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SimStats {
        SimStats {
            requests: Vendor::ALL
                .iter()
                .zip(&self.requests)
                .map(|(v, n)| (v.as_str().to_string(), n.load(Ordering::Relaxed)))
                .collect(),
            tokens_issued: self.tokens_issued.load(Ordering::Relaxed),
            faults_served: self.faults_served.load(Ordering::Relaxed),
            chaos: self.chaos_served.lock().expect("chaos poisoned").clone(),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            sent_early: self.sent_early.load(Ordering::Relaxed),
        }
    }

    /// Queues a fault (a zero count is ignored).
    pub fn inject_fault(&self, fault: Fault) {
        if fault.count > 0 {
            self.faults
                .lock()
                .expect("fault queue poisoned")
                .push_back(fault);
        }
    }

    /// Forgets every issued Domo token.
    pub fn expire_tokens(&self) {
        self.tokens.lock().expect("token map poisoned").clear();
    }

    /// A 200 answer with a JSON body, pretty-printed when the config asks for it.
    pub fn ok(&self, body: String) -> Response {
        let body = if self.cfg.pretty {
            crate::pretty::pretty(&body)
        } else {
            body
        };
        json(StatusCode::OK, body)
    }

    /// Counts a call to one of `vendor`'s endpoints.
    pub fn count(&self, vendor: Vendor) {
        let i = Vendor::ALL.iter().position(|v| *v == vendor).unwrap_or(0);
        self.requests[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a data call and takes the first queued fault that applies to `vendor`, rendered
    /// as the response to serve instead of the real answer.
    pub fn begin(&self, vendor: Vendor) -> Option<Response> {
        self.count(vendor);
        let fault = {
            let mut q = self.faults.lock().expect("fault queue poisoned");
            let pos = q.iter().position(|f| {
                f.vendor
                    .as_deref()
                    .is_none_or(|v| v.trim() == vendor.as_str())
            });
            let Some(pos) = pos else {
                drop(q);
                return self.chaos(vendor);
            };
            let f = q[pos].clone();
            if q[pos].count <= 1 {
                q.remove(pos);
            } else {
                q[pos].count -= 1;
            }
            f
        };
        self.faults_served.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            vendor = vendor.as_str(),
            status = fault.status,
            "serving injected fault"
        );
        let status =
            StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = fault
            .body
            .unwrap_or_else(|| r#"{"error":"injected"}"#.to_string());
        let mut resp = json(status, body);
        if let Some(v) = fault
            .retry_after
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            resp.headers_mut().insert(RETRY_AFTER, v);
        }
        Some(resp)
    }
}

/// A response with a JSON content type.
pub(crate) fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
}

/// The query string as name/value pairs, repeated names kept.
pub(crate) struct Params(pub Vec<(String, String)>);

impl Params {
    /// The first value of `name`, trimmed; `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Every non-empty value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// The first value of `name` as an integer; an error message when it is not one.
    pub fn int(&self, name: &str) -> Result<Option<i64>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| format!("invalid value for {name}: {v:?}")),
        }
    }

    /// A page-size parameter: `default` when absent, an error outside `1..=1000`.
    pub fn limit(&self, name: &str, default: i64) -> Result<usize, String> {
        let v = self.int(name)?.unwrap_or(default);
        if !(1..=1000).contains(&v) {
            return Err(format!("{name} must be between 1 and 1000, got {v}"));
        }
        Ok(v as usize)
    }

    /// A non-negative offset parameter (0 when absent).
    pub fn offset(&self, name: &str) -> Result<usize, String> {
        let v = self.int(name)?.unwrap_or(0);
        usize::try_from(v).map_err(|_| format!("{name} must not be negative, got {v}"))
    }
}

/// The token of an `Authorization: <scheme> <token>` header whose scheme matches
/// (case-insensitively).
pub(crate) fn auth_token<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (s, token) = value.trim().split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(token.trim())
}

/// The value of a header, if present and text.
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

/// Parses an RFC 3339 instant to ns since the epoch; a naive `YYYY-MM-DDTHH:MM:SS[.f]` is UTC.
pub(crate) fn parse_instant(s: &str) -> Option<i64> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Some(gen::to_ns(t));
    }
    jiff::fmt::strtime::parse("%Y-%m-%dT%H:%M:%S%.f", s)
        .and_then(|t| t.to_datetime())
        .and_then(|t| t.to_zoned(jiff::tz::TimeZone::UTC))
        .ok()
        .map(|t| gen::to_ns(t.timestamp()))
}

/// Every route of the simulator.
pub(crate) fn router(sim: Arc<Sim>) -> Router {
    crate::EMULATORS
        .iter()
        .fold(Router::new(), |r, e| (e.routes)(r))
        // Only the routes above (the vendors' own, Domo's token endpoint included) wait.
        .route_layer(middleware::from_fn_with_state(sim.clone(), rate_limit))
        .route_layer(middleware::from_fn_with_state(sim.clone(), latency))
        .route_layer(middleware::from_fn_with_state(sim.clone(), record))
        .route("/_sim/events", get(admin_events))
        .route("/_sim/stats", get(admin_stats))
        .route("/_sim/faults", post(admin_faults))
        .route("/_sim/expire_tokens", post(admin_expire_tokens))
        .fallback(not_found)
        .with_state(sim)
}

/// [`crate::SimHandle::record_requests`]: notes who asked (the request's key or token, and its
/// User-Agent), what, when it came and when it was answered.
async fn record(State(sim): State<Arc<Sim>>, req: Request, next: Next) -> Response {
    if sim.log.lock().expect("log poisoned").is_none() {
        return next.run(req).await;
    }
    let headers = req.headers();
    let credential = header(headers, "x-domino-api-key")
        .or_else(|| auth_token(headers, "Bearer"))
        .unwrap_or_default()
        .to_string();
    let user_agent = header(headers, "user-agent")
        .unwrap_or_default()
        .to_string();
    let path = req.uri().path().to_string();
    let at = sim.now_ns();
    let resp = next.run(req).await;
    let logged = crate::Logged {
        at_ns: at,
        done_ns: sim.now_ns(),
        credential,
        user_agent,
        path,
        status: resp.status().as_u16(),
    };
    if let Some(log) = sim.log.lock().expect("log poisoned").as_mut() {
        log.push(logged);
    }
    resp
}

/// Waits the configured per-request latency, holding nothing, before a vendor endpoint answers.
async fn latency(State(sim): State<Arc<Sim>>, req: Request, next: Next) -> Response {
    let wait = sim.cfg.latency;
    drop(sim);
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    next.run(req).await
}

/// [`SimConfig::rate_limit`]: a token bucket per credential (the request's key or token; every
/// Domo token is its one client's, and Domo's token endpoint is not limited). A request without
/// a token left is answered 429 with the whole seconds until one is back.
async fn rate_limit(State(sim): State<Arc<Sim>>, req: Request, next: Next) -> Response {
    let Some(rate) = sim.cfg.rate_limit else {
        return next.run(req).await;
    };
    let headers = req.headers();
    let Some(credential) = header(headers, "x-domino-api-key")
        .map(str::to_string)
        .or_else(|| {
            auth_token(headers, "Bearer").map(|t| {
                if sim.tokens.lock().expect("tokens poisoned").contains_key(t) {
                    format!("domo:{}", sim.cfg.domo_client_id)
                } else {
                    t.to_string()
                }
            })
        })
    else {
        // No credential (Domo's token endpoint, or a request the emulator refuses anyway).
        return next.run(req).await;
    };
    let now = Instant::now();
    let refused = {
        let mut buckets = sim.buckets.lock().expect("buckets poisoned");
        let b = buckets.entry(credential).or_insert(Bucket {
            tokens: rate,
            at: now,
            wait_until: None,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(rate.max(1.0));
        b.at = now;
        if b.wait_until.is_some_and(|w| now < w) {
            sim.sent_early.fetch_add(1, Ordering::Relaxed);
        }
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            None
        } else {
            let secs = ((1.0 - b.tokens) / rate).ceil().max(1.0);
            let until = now + std::time::Duration::from_secs_f64(secs);
            b.wait_until = Some(b.wait_until.map_or(until, |w| w.max(until)));
            Some(secs as u64)
        }
    };
    match refused {
        None => next.run(req).await,
        Some(secs) => {
            sim.rate_limited.fetch_add(1, Ordering::Relaxed);
            let mut resp = json(
                StatusCode::TOO_MANY_REQUESTS,
                r#"{"error":"rate limit exceeded"}"#.to_string(),
            );
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
            resp
        }
    }
}

/// Unknown paths.
async fn not_found() -> Response {
    json(
        StatusCode::NOT_FOUND,
        r#"{"error":"not found"}"#.to_string(),
    )
}

/// An admin error `{"error": msg}`.
fn admin_error(msg: &str) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        serde_json::json!({ "error": msg }).to_string(),
    )
}

/// `GET /_sim/events?vendor=V&from=RFC3339&to=RFC3339`: the truth, as a JSON array.
async fn admin_events(
    State(sim): State<Arc<Sim>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let q = Params(q);
    let Some(vendor) = q.get("vendor").and_then(Vendor::parse) else {
        return admin_error(&format!("vendor must be one of {}", Vendor::names()));
    };
    let mut bounds = [None, None];
    for (slot, name) in bounds.iter_mut().zip(["from", "to"]) {
        if let Some(v) = q.get(name) {
            match parse_instant(v) {
                Some(ns) => *slot = Some(gen::from_ns(ns)),
                None => return admin_error(&format!("{name} is not an RFC 3339 time: {v:?}")),
            }
        }
    }
    let events = sim.events(vendor, bounds[0], bounds[1], sim.now_ns());
    let mut body = String::with_capacity(events.iter().map(|e| e.len() + 1).sum::<usize>() + 2);
    body.push('[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(e);
    }
    body.push(']');
    json(StatusCode::OK, body)
}

/// `GET /_sim/stats`.
async fn admin_stats(State(sim): State<Arc<Sim>>) -> Response {
    Json(sim.stats()).into_response()
}

/// `POST /_sim/faults` with a [`Fault`] body.
async fn admin_faults(State(sim): State<Arc<Sim>>, Json(fault): Json<Fault>) -> Response {
    if let Some(v) = &fault.vendor {
        if Vendor::parse(v).is_none() {
            return admin_error(&format!("unknown vendor {v:?}"));
        }
    }
    if StatusCode::from_u16(fault.status).is_err() {
        return admin_error(&format!("invalid status {}", fault.status));
    }
    if let Some(v) = &fault.retry_after {
        if HeaderValue::from_str(v).is_err() {
            return admin_error("retry_after is not a valid header value");
        }
    }
    sim.inject_fault(fault);
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /_sim/expire_tokens`.
async fn admin_expire_tokens(State(sim): State<Arc<Sim>>) -> Response {
    sim.expire_tokens();
    StatusCode::NO_CONTENT.into_response()
}
