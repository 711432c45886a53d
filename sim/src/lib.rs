//! Faithful emulators of the four vendor audit APIs that auditship reads, served together on one
//! loopback port for demos, tests and benchmarks.
//!
//! - `domino_audit`: Domino audit trail, `GET /api/audittrail/v1/auditevents` (offset paging,
//!   newest first by default, `{"events":[...],"estimatedMatches":N}`).
//! - `domino_datasource`: Domino data-source audit, `GET /api/datasource/v1/audit` (a bare
//!   array, no paging).
//! - `domo`: Domo activity log, `/oauth/token` and `GET /v1/audit` (bearer tokens that expire,
//!   local wall-clock times without an offset).
//! - `wasabi`: Wasabi AiR audit, `GET /api/data/audit` (page/count paging, ids, times with a
//!   varying number of fraction digits).
//! - `server`: the shared HTTP plumbing (auth helpers, injected faults, statistics) and the
//!   `/_sim/*` admin endpoints.
//! - `store`: the time-sorted, pre-rendered event vector every emulator pages through.
//! - `gen`: deterministic generation helpers; `args`: the `auditship simulate` flags;
//!   `pretty`: bodies laid out as a formatting gateway serves them (`SimConfig::pretty`).
//!
//! Each emulator file registers itself with one `EMULATOR` entry (its name, the salt of its
//! random stream, its routes, the credential keys that read it, its events) in `EMULATORS`;
//! adding one is its file, a [`Vendor`] variant and that line.
//!
//! Everything is generated up front from a [`SimConfig`] (same seed, same events) and each event
//! is rendered to JSON once. An event is served only once the wall clock has passed its
//! visibility instant (its own time, or later for "late" events), so a span that ends in the
//! future behaves like a live system. [`SimHandle::events`] is the ground truth tests compare
//! an agent's output with.

#![warn(missing_docs)]

mod args;
mod chaos;
mod domino_audit;
mod domino_datasource;
mod domo;
mod gen;
mod pretty;
mod server;
mod store;
mod wasabi;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use args::SimArgs;

/// One of the four emulated vendor APIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Vendor {
    /// Domino audit trail (`/api/audittrail/v1/auditevents`).
    DominoAudit,
    /// Domino data-source audit (`/api/datasource/v1/audit`).
    DominoDatasource,
    /// Domo activity log (`/v1/audit`).
    Domo,
    /// Wasabi AiR audit (`/api/data/audit`).
    WasabiAir,
}

/// One emulated vendor API, as its file registers it in [`EMULATORS`].
pub(crate) struct Emulator {
    /// Which vendor it is.
    pub vendor: Vendor,
    /// Its name in configuration, statistics and auditship's `kind`, e.g. `"domino_audit"`.
    pub name: &'static str,
    /// Salt of its random stream (`gen::rng`), so each vendor's events are its own.
    pub salt: u64,
    /// Adds its endpoints to the router.
    pub routes: fn(axum::Router<Arc<server::Sim>>) -> axum::Router<Arc<server::Sim>>,
    /// The keys of an auditship `[[sources]]` entry that authenticate to it.
    pub source_keys: fn(&SimConfig) -> String,
    /// The keys of that entry that say how to read its answers as `cfg` set them up (Domo's
    /// `time_zone` when it prints another zone than UTC); empty when the defaults read them.
    pub reading_keys: fn(&SimConfig) -> String,
    /// Whether its tokens expire (chaos then serves "expired_token" faults to it).
    pub expiring_tokens: bool,
    /// Generates its data for a configuration (on a thread of its own).
    pub generate: fn(&SimConfig) -> Box<dyn std::any::Any + Send + Sync>,
    /// Its generated events.
    pub events: fn(&server::Sim) -> &dyn store::Events,
}

/// Every emulator, in a fixed order: the one list of them (with [`Vendor`]'s variants).
pub(crate) const EMULATORS: [Emulator; 4] = [
    domino_audit::EMULATOR,
    domino_datasource::EMULATOR,
    domo::EMULATOR,
    wasabi::EMULATOR,
];

impl Vendor {
    /// Every vendor, in [`EMULATORS`] order.
    pub const ALL: [Vendor; EMULATORS.len()] = {
        let mut all = [Vendor::DominoAudit; EMULATORS.len()];
        let mut i = 0;
        while i < all.len() {
            all[i] = EMULATORS[i].vendor;
            i += 1;
        }
        all
    };

    /// Its registry entry.
    pub(crate) fn emulator(&self) -> &'static Emulator {
        EMULATORS
            .iter()
            .find(|e| e.vendor == *self)
            .expect("every vendor is registered")
    }

    /// The vendor's name as used in configuration and statistics, e.g. `"domino_audit"`.
    pub fn as_str(&self) -> &'static str {
        self.emulator().name
    }

    /// The keys of an auditship `[[sources]]` entry (TOML lines) that authenticate to this
    /// emulator as `cfg` set it up: what a test or the demo adds to `name`, `kind` and `url`.
    pub fn source_keys(&self, cfg: &SimConfig) -> String {
        (self.emulator().source_keys)(cfg)
    }

    /// The keys of an auditship `[[sources]]` entry (TOML lines) that say how to read this
    /// emulator's answers as `cfg` set it up (Domo: `time_zone`); empty for the defaults.
    pub fn reading_keys(&self, cfg: &SimConfig) -> String {
        (self.emulator().reading_keys)(cfg)
    }

    /// The vendor with this name (see [`Vendor::as_str`]), if any.
    pub fn parse(s: &str) -> Option<Vendor> {
        Vendor::ALL.into_iter().find(|v| v.as_str() == s.trim())
    }

    /// Every vendor's name, for messages: `a, b, c`.
    pub fn names() -> String {
        Vendor::ALL
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for Vendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that determines what the simulator serves.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed of all generated content: the same config gives the same events.
    pub seed: u64,
    /// Events get times uniformly random in `[start, end)`.
    pub start: Timestamp,
    /// End of the span; may lie in the future, in which case events become visible as wall time
    /// passes ("live" mode).
    pub end: Timestamp,
    /// Events per generated vendor over the span (twins included).
    pub events: u64,
    /// Which vendors get events; the others answer with empty results.
    pub vendors: Vec<Vendor>,
    /// Fraction of events that become visible late.
    pub late_fraction: f64,
    /// A late event becomes visible at its time + uniform(0, `late_max`].
    pub late_max: Duration,
    /// Fraction of Domo, Domino data-source and Domino audit entries that get an identical twin
    /// (same content, same time unit). Wasabi AiR events have unique ids and never have twins.
    pub twin_fraction: f64,
    /// Domo prints local wall-clock time in this zone, without an offset.
    pub domo_time_zone: jiff::tz::TimeZone,
    /// `expires_in` of issued Domo tokens; a token stops working after it.
    pub domo_token_ttl: Duration,
    /// API key accepted by Domino audit (`X-Domino-Api-Key: K` or `Authorization: Bearer K`),
    /// Domino data-source (`X-Domino-Api-Key`) and Wasabi AiR (`Authorization: Bearer K`).
    pub api_key: String,
    /// Further API keys every one of those emulators accepts as it does `api_key`: separate
    /// credentials of one tenant (each has a rate-limit bucket of its own), as when several
    /// tools or teams read the same instance with keys of their own.
    pub more_api_keys: Vec<String>,
    /// Domo OAuth client id (HTTP Basic user of `/oauth/token`).
    pub domo_client_id: String,
    /// Domo OAuth client secret (HTTP Basic password of `/oauth/token`).
    pub domo_client_secret: String,
    /// How the emulators answer where the vendor docs leave the choice open: bounds, order.
    pub answers: Answers,
    /// How long every request to a vendor endpoint (Domo's token endpoint included, the
    /// `/_sim/*` admin endpoints not) waits before it is answered; zero by default.
    pub latency: Duration,
    /// Serve every data body (and Domo's token) pretty-printed, as a vendor or gateway that
    /// formats its JSON does: newlines, indentation and `": "`, with the same content. The
    /// truth ([`SimHandle::events`], `/_sim/events`) stays compact.
    pub pretty: bool,
    /// Requests a second each credential may make (a token bucket holding one second's worth,
    /// as API gateways limit a key); past it, 429 with a `Retry-After` of the whole seconds
    /// until a request is allowed again. The credential is the request's key or token (all of
    /// Domo's tokens are its one client's). `None`: no limit.
    pub rate_limit: Option<f64>,
    /// A clock for tests that runs faster than the wall clock ([`Clock`]): what is visible,
    /// and when, follows it. `None`: the wall clock.
    pub clock: Option<Clock>,
}

/// The choices the vendor docs leave open, which an agent must survive whichever way they fall.
/// The default is what the emulators always did: an exclusive end, the documented sort, ties in
/// a stable order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Answers {
    /// The query's end bound (`end`, `endTimestamp`, `endTime`, `to`) includes events at exactly
    /// that instant.
    pub inclusive_end: bool,
    /// Entries that share a time come in a new random order in every response.
    pub shuffle_ties: bool,
    /// Responses are not sorted by time: a fixed order of the emulator's own (offsets stay
    /// stable between requests, as long as nothing new becomes visible).
    pub unsorted: bool,
}

impl Answers {
    /// The upper bound of a query that ends at `t` (ns).
    pub(crate) fn end_bound(&self, t: i64) -> std::ops::Bound<i64> {
        if self.inclusive_end {
            std::ops::Bound::Included(t)
        } else {
            std::ops::Bound::Excluded(t)
        }
    }
}

impl SimConfig {
    /// Whether `key` is one of the API keys the emulators accept (`api_key`, `more_api_keys`).
    pub(crate) fn accepts_key(&self, key: Option<&str>) -> bool {
        key.is_some_and(|k| k == self.api_key || self.more_api_keys.iter().any(|m| m == k))
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        let end = Timestamp::now();
        SimConfig {
            seed: 1,
            start: end - SignedDuration::from_hours(7 * 24),
            end,
            events: 20_000,
            vendors: Vendor::ALL.to_vec(),
            late_fraction: 0.0,
            late_max: Duration::from_secs(300),
            twin_fraction: 0.02,
            domo_time_zone: jiff::tz::TimeZone::UTC,
            domo_token_ttl: Duration::from_secs(3599),
            api_key: "sim-api-key".to_string(),
            more_api_keys: Vec::new(),
            domo_client_id: "sim-client".to_string(),
            domo_client_secret: "sim-secret".to_string(),
            answers: Answers::default(),
            latency: Duration::ZERO,
            pretty: false,
            rate_limit: None,
            clock: None,
        }
    }
}

/// Request counters of a running simulator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Calls to each vendor's endpoints (token endpoint excluded), keyed by [`Vendor::as_str`];
    /// rejected and faulted calls count too.
    pub requests: HashMap<String, u64>,
    /// Domo tokens issued.
    pub tokens_issued: u64,
    /// Injected faults served (queued and random ones).
    pub faults_served: u64,
    /// Random faults served ([`Chaos`]), by kind.
    #[serde(default)]
    pub chaos: std::collections::BTreeMap<String, u64>,
    /// Requests answered 429 by the rate limit ([`SimConfig::rate_limit`]).
    #[serde(default)]
    pub rate_limited: u64,
    /// Requests sent while their credential had been told to wait (before the `Retry-After` of
    /// an earlier 429 had passed), answered or not.
    #[serde(default)]
    pub sent_early: u64,
}

/// Random faults: each data request (any vendor, Domo's token endpoint aside) gets, with
/// probability `rate`, a fault; the kinds take turns (so a short run sees each), half of
/// Domo's faults being an expired token. Every kind the emulators have: 429 with
/// and without `Retry-After`, 500, 502 (an HTML page), 503, an HTML maintenance page with a
/// 200, an answer slower than `slow`, malformed JSON, a body cut short, a connection broken
/// before the body, an empty 200, and (Domo) every token expired.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Chaos {
    /// Fraction (0–1) of data requests that get a fault.
    pub rate: f64,
    /// How long a slow answer waits before its first byte (longer than the client's timeout).
    #[serde(default = "slow_default", with = "millis")]
    pub slow: Duration,
    /// Seed of the draws.
    #[serde(default)]
    pub seed: u64,
}

fn slow_default() -> Duration {
    Duration::from_secs(3)
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// A canned answer served instead of the real one to the next `count` data requests.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Fault {
    /// The vendor ([`Vendor::as_str`]) whose data endpoint gets the fault; `None` for any vendor.
    #[serde(default)]
    pub vendor: Option<String>,
    /// HTTP status of the answer.
    pub status: u16,
    /// Value of the `Retry-After` header, if any (seconds or an HTTP date).
    #[serde(default)]
    pub retry_after: Option<String>,
    /// Response body; `{"error":"injected"}` when `None`. Need not be JSON.
    #[serde(default)]
    pub body: Option<String>,
    /// How many requests get this answer.
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// A clock that runs `rate` times as fast as the wall clock from `anchor` on (and agrees with
/// it at `anchor`), so that a test's live traffic passes in a fraction of its span. An agent
/// runs on the same clock with `AUDITSHIP_TEST_CLOCK` set to [`Clock::env_value`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock {
    /// Where the two clocks agree.
    pub anchor: Timestamp,
    /// How many seconds pass on this clock for each second of the wall clock.
    pub rate: f64,
}

impl Clock {
    /// A clock `rate` times as fast as the wall clock, from now on.
    pub fn from_now(rate: f64) -> Clock {
        Clock {
            anchor: Timestamp::now(),
            rate,
        }
    }

    /// Now on this clock.
    pub fn now(&self) -> Timestamp {
        let real = Timestamp::now().duration_since(self.anchor).as_secs_f64();
        self.anchor + jiff::SignedDuration::from_secs_f64(real * self.rate)
    }

    /// `AUDITSHIP_TEST_CLOCK`'s value for an agent on this clock: `ANCHOR_NS,RATE`.
    pub fn env_value(&self) -> String {
        format!("{},{}", self.anchor.as_nanosecond(), self.rate)
    }
}

impl SimConfig {
    /// Now on the emulator's clock ([`SimConfig::clock`], else the wall clock).
    pub fn now(&self) -> Timestamp {
        self.clock.map_or_else(Timestamp::now, |c| c.now())
    }
}

/// A request to a vendor endpoint, as [`SimHandle::record_requests`] noted it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Logged {
    /// When it came and when it was answered (ns since the epoch, the emulator's clock).
    pub at_ns: i64,
    /// When it was answered.
    pub done_ns: i64,
    /// Its API key or bearer token (empty without one).
    pub credential: String,
    /// Its `User-Agent` (auditship names its replica there).
    pub user_agent: String,
    /// The endpoint's path.
    pub path: String,
    /// The answer's status.
    pub status: u16,
}

/// A running simulator. Dropping it stops the server without waiting; prefer
/// [`SimHandle::shutdown`].
pub struct SimHandle {
    /// The address the server listens on (the real port when started on port 0).
    pub addr: SocketAddr,
    /// Shared state, also held by the server task.
    sim: Arc<server::Sim>,
    /// Cancelled to stop the server.
    cancel: CancellationToken,
    /// The server task.
    task: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// The base URL of every emulated API, e.g. `http://127.0.0.1:8480`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The truth for tests: every event of `vendor` whose time is in `[from, to)` and that is
    /// visible now, ascending by time (twins adjacent), each exactly as the API renders it.
    pub fn events(&self, vendor: Vendor, from: Timestamp, to: Timestamp) -> Vec<String> {
        self.sim
            .events(vendor, Some(from), Some(to), self.sim.now_ns())
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// Number of generated events of `vendor`, visible or not.
    pub fn total_events(&self, vendor: Vendor) -> usize {
        self.sim.total_events(vendor)
    }

    /// Request counters so far.
    pub fn stats(&self) -> SimStats {
        self.sim.stats()
    }

    /// Queues a fault: the next `fault.count` requests to the vendor's data endpoint (any
    /// vendor's if `fault.vendor` is `None`) get its answer. Faults are served in queue order.
    pub fn inject_fault(&self, fault: Fault) {
        self.sim.inject_fault(fault);
    }

    /// Serves random faults from now on ([`Chaos`]); `None` stops them.
    pub fn set_chaos(&self, chaos: Option<Chaos>) {
        self.sim.set_chaos(chaos);
    }

    /// Notes every vendor request from now on ([`Logged`]), or stops and forgets them.
    pub fn record_requests(&self, on: bool) {
        *self.sim.log.lock().expect("log poisoned") = on.then(Vec::new);
    }

    /// The requests noted since [`SimHandle::record_requests`] was turned on.
    pub fn requests(&self) -> Vec<Logged> {
        self.sim
            .log
            .lock()
            .expect("log poisoned")
            .clone()
            .unwrap_or_default()
    }

    /// Invalidates every Domo token issued so far: the next data call with one gets a 401.
    pub fn expire_tokens(&self) {
        self.sim.expire_tokens();
    }

    /// Stops accepting connections, lets requests in flight finish and waits for the server.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Binds `listen` (port 0 picks a free port), generates the events of `cfg` and serves all four
/// emulators plus the `/_sim/*` admin endpoints in a spawned task.
pub async fn start(cfg: SimConfig, listen: SocketAddr) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let began = std::time::Instant::now();
    let sim = tokio::task::spawn_blocking(move || server::Sim::new(cfg))
        .await
        .map_err(std::io::Error::other)?;
    let sim = Arc::new(sim);
    tracing::info!(
        %addr,
        events = sim.cfg.events,
        vendors = ?sim.cfg.vendors,
        elapsed_ms = began.elapsed().as_millis() as u64,
        "simulator listening"
    );
    let cancel = CancellationToken::new();
    let app = server::router(sim.clone());
    let stop = cancel.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "simulator server failed");
        }
    });
    Ok(SimHandle {
        addr,
        sim,
        cancel,
        task: Some(task),
    })
}

#[cfg(test)]
mod registry_tests {
    use super::*;

    #[test]
    fn every_emulator_is_one_vendor_with_its_own_name_and_stream() {
        for (i, e) in EMULATORS.iter().enumerate() {
            assert_eq!(Vendor::ALL[i], e.vendor);
            assert_eq!(Vendor::parse(e.name), Some(e.vendor));
            assert_eq!(e.vendor.emulator().name, e.name);
            for other in &EMULATORS[i + 1..] {
                assert_ne!(e.vendor, other.vendor);
                assert_ne!(e.name, other.name);
                assert_ne!(
                    e.salt, other.salt,
                    "{} and {} share a stream",
                    e.name, other.name
                );
            }
            assert!(e.vendor.source_keys(&SimConfig::default()).contains(" = "));
        }
    }
}
