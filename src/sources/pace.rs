//! One pace per vendor credential: every source that uses the same credential (the same API
//! host and the same identity: API key, JWT, OAuth client id) asks for its requests' turns
//! here, so a vendor's rate limit is heard by all of them.
//!
//! - **Told to wait, all wait.** A 429 or 503 with `Retry-After`, or rate-limit headers saying
//!   nothing remains until a reset (`X-RateLimit-*`, `RateLimit-*`), hold back every source of
//!   the credential until then: no request leaves early.
//! - **AIMD.** Until the vendor first answers 429, a credential has one request in flight at a
//!   time and no fixed rate, so a first run goes as fast as the vendor answers. The first 429
//!   after a success sets a pace of half the rate served in the second before it. Every later 429 halves the
//!   pace, or what the vendor served over the last [`SERVED_WINDOW`] if that is lower (a
//!   vendor's bucket lets a pace above its rate through for a while: what it served is its
//!   rate; never below a quarter of the pace), once per event: 429s to requests in flight
//!   together, or with nothing served since the last cut, are one (multiplicative decrease).
//!   Each success adds to the pace (additive increase): back to the rate of the last cut in
//!   [`CLIMB_SECS`], then on past it sixteen times slower, probing. A backfill settles just
//!   under the vendor's limit instead of bouncing off it.
//! - **A ceiling.** `max_requests_per_second`: the lowest of the sources sharing the
//!   credential paces it whether or not the vendor complains.
//! - **Fair.** Turns are taken first come, first served: a source waits behind at most one
//!   request of each other source, so a backfill does not starve another's live polls.
//!
//! [`Paces`] is the agent's registry of them (it outlives reloads: a credential's learned pace
//! is kept while a source still uses it). A credential is known by a hash of its host and
//! identity ([`CredentialId`]); metrics name it after the first of its sources by name, so no
//! secret reaches a label, a log line or an error.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::HeaderMap;

use crate::metrics;
use crate::sources::config::SourceConfig;
use crate::state::Requests;

/// Seconds a cut pace takes to climb back, additively, to the rate it was cut from; past that
/// rate it climbs [`PROBE_SLOWER`] times slower.
pub const CLIMB_SECS: f64 = 5.0;

/// The slowest climb, in requests a second per second: a pace cut low by 429s that were not
/// the vendor's rate (another tool had used the credential up) gets back to one a second within
/// ten seconds.
const MIN_CLIMB: f64 = 0.1;

/// How much slower the pace climbs past the rate of its last cut than up to it.
const PROBE_SLOWER: f64 = 16.0;

/// How far back what a vendor served is counted, to tell its rate.
pub const SERVED_WINDOW: Duration = Duration::from_secs(20);

/// The most successes remembered to count what a vendor served (beyond, the window is
/// shorter: at 200 requests a second and more).
const SERVED_MAX: usize = 4096;

/// The slowest pace a credential is cut to: one request a minute.
const MIN_RATE: f64 = 1.0 / 60.0;

/// Who a vendor counts requests against: a BLAKE3 hash of the API's host and the identity that
/// authenticates. The secret itself is never kept here, and the hash is never shown.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CredentialId([u8; 32]);

impl CredentialId {
    /// The credential `identity` (an API key, a JWT, an OAuth client id) at `url`'s host.
    pub fn new(url: &url::Url, identity: &str) -> CredentialId {
        let mut h = blake3::Hasher::new_derive_key("auditship 2026 credential of a vendor host");
        h.update(url.scheme().as_bytes());
        h.update(b"\0");
        h.update(url.host_str().unwrap_or_default().as_bytes());
        h.update(b"\0");
        h.update(&url.port_or_known_default().unwrap_or(0).to_le_bytes());
        h.update(identity.as_bytes());
        CredentialId(*h.finalize().as_bytes())
    }

    /// A source without a credential (it fails before asking anything): paced alone.
    fn alone(source: &str) -> CredentialId {
        let mut h = blake3::Hasher::new_derive_key("auditship 2026 source without a credential");
        h.update(source.as_bytes());
        CredentialId(*h.finalize().as_bytes())
    }

    /// The credential of source `cfg`, as its vendor names it.
    pub fn of(cfg: &SourceConfig) -> CredentialId {
        cfg.settings
            .configured()
            .credential(cfg)
            .unwrap_or_else(|| CredentialId::alone(&cfg.name))
    }
}

impl fmt::Debug for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialId(…)")
    }
}

/// What an answer says about the credential's limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// How long every request of the credential must wait: a 429's or 503's `Retry-After`, or
    /// the time to the reset of rate-limit headers that say nothing remains.
    pub wait: Option<Duration>,
}

impl Answer {
    /// Reads an answer: its status, its `Retry-After` (`retry_after`, parsed by the caller)
    /// and its rate-limit headers.
    pub fn read(
        status: u16,
        retry_after: Option<Duration>,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Answer {
        let told = retry_after.filter(|_| matches!(status, 429 | 503));
        let wait = match (told, exhausted(headers, now)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Answer { status, wait }
    }
}

/// Longest reset of rate-limit headers honoured (as for `Retry-After`).
const MAX_RESET: Duration = Duration::from_secs(3600);

/// When rate-limit headers say no request remains: the time until their reset. The draft IETF
/// headers (`RateLimit-Remaining`/`RateLimit-Reset`, or one `RateLimit: …;r=0;t=30`) and the
/// common `X-RateLimit-*` ones; a reset above 10⁹ is read as a Unix time (as GitHub sends it),
/// anything smaller as seconds from now.
pub fn exhausted(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let num = |name: &str| text(name).and_then(|v| v.trim().parse::<f64>().ok());
    let (mut remaining, mut reset) = (
        num("ratelimit-remaining").or_else(|| num("x-ratelimit-remaining")),
        num("ratelimit-reset").or_else(|| num("x-ratelimit-reset")),
    );
    if let Some(combined) = text("ratelimit") {
        // `"policy";r=0;t=30` (draft 08 on) or `limit=100, remaining=0, reset=30` (earlier).
        for item in combined.split([';', ',']) {
            let Some((k, v)) = item.split_once('=') else {
                continue;
            };
            let v = v.trim().parse::<f64>().ok();
            match k.trim() {
                "r" | "remaining" => remaining = remaining.or(v),
                "t" | "reset" => reset = reset.or(v),
                _ => {}
            }
        }
    }
    if remaining? > 0.0 {
        return None;
    }
    let reset = reset.filter(|r| r.is_finite() && *r >= 0.0)?;
    let secs = if reset > 1e9 {
        let epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        (reset - epoch).max(0.0)
    } else {
        reset
    };
    Some(Duration::from_secs_f64(secs.min(MAX_RESET.as_secs_f64())))
}

/// One credential's pace, as arithmetic on the instants it is given (the tests drive it).
#[derive(Debug, Default)]
pub struct Governor {
    /// `max_requests_per_second` of the credential: the lowest of its sources'.
    ceiling: Option<f64>,
    /// The pace learned from the vendor's 429s; `None` until the first (one request in flight
    /// at a time until then).
    rate: Option<f64>,
    /// The rate of the last cut: the pace climbs back to it in [`CLIMB_SECS`].
    peak: f64,
    /// When the next request may leave, by the pace.
    next: Option<Instant>,
    /// Until when the vendor said to wait (`Retry-After`, a reset with nothing remaining).
    until: Option<Instant>,
    /// When the pace was first and last cut: a 429 to a request sent before the last cut is
    /// the same event.
    first_cut: Option<Instant>,
    last_cut: Option<Instant>,
    /// When the requests answered with success in the last [`SERVED_WINDOW`] were sent.
    served: VecDeque<Instant>,
}

impl Governor {
    /// Sets the operator's ceiling (requests a second; `None`: none).
    pub fn set_ceiling(&mut self, ceiling: Option<f64>) {
        self.ceiling = ceiling;
        if let (Some(c), Some(r)) = (ceiling, self.rate) {
            self.rate = Some(r.min(c));
        }
    }

    /// Requests a second the credential is paced at: the learned pace and the ceiling, the
    /// lower of them; `None` when neither holds it back.
    pub fn pace(&self) -> Option<f64> {
        match (self.rate, self.ceiling) {
            (Some(r), Some(c)) => Some(r.min(c)),
            (r, c) => r.or(c),
        }
    }

    /// Whether the vendor has limited the credential yet: until then, one request at a time.
    pub fn limited(&self) -> bool {
        self.rate.is_some()
    }

    /// When the next request may leave; `None`: now.
    pub fn ready_at(&self, now: Instant) -> Option<Instant> {
        let at = self.until.max(self.next)?;
        (at > now).then_some(at)
    }

    /// A request leaves at `now` (or its turn, taken ahead, is used now): the next one waits an
    /// interval of the pace after it.
    pub fn start(&mut self, now: Instant) {
        if let Some(r) = self.pace() {
            self.next = self.next.max(Some(now + Duration::from_secs_f64(1.0 / r)));
        }
    }

    /// The answer to a request sent at `sent` came at `now`.
    pub fn answered(&mut self, sent: Instant, now: Instant, a: Answer) {
        if let Some(wait) = a.wait {
            self.until = self.until.max(Some(now + wait));
        }
        match a.status {
            429 => self.cut(sent, now),
            200..=299 => self.grow(sent, now),
            _ => {}
        }
    }

    /// Multiplicative decrease, once per event: half the pace, or half what the vendor served
    /// (the first time: in the second before; later: over the last [`SERVED_WINDOW`], or since
    /// the first cut when that is shorter), whichever is lower.
    fn cut(&mut self, sent: Instant, now: Instant) {
        // The same event: a request sent before the last cut, or none served since it (the
        // vendor still refusing: its `Retry-After` is what to wait for, not a slower pace).
        let served_since = self
            .served
            .back()
            .zip(self.last_cut)
            .is_some_and(|(s, c)| *s >= c);
        if self.last_cut.is_some_and(|c| sent < c || !served_since) {
            return;
        }
        self.prune(now);
        let from = match (self.rate, self.first_cut) {
            (Some(r), Some(first)) => {
                let span = now.duration_since(first).min(SERVED_WINDOW);
                let counted = self
                    .served
                    .iter()
                    .filter(|s| now.duration_since(**s) <= span)
                    .count();
                if span >= Duration::from_secs(1) {
                    // What was served counts only to lower the cut to a quarter of the pace:
                    // waits and failures in the window count as not served.
                    r.min((counted as f64 / span.as_secs_f64()).max(r / 2.0))
                } else {
                    r
                }
            }
            _ => {
                let last_second = self
                    .served
                    .iter()
                    .filter(|s| now.duration_since(**s) <= Duration::from_secs(1))
                    .count();
                if last_second == 0 {
                    // Nothing served to learn a rate from (another tool had used the
                    // credential up, or the vendor refuses everything): its `Retry-After` is
                    // waited for, and the next 429 after a success sets the pace.
                    return;
                }
                last_second as f64
            }
        };
        self.peak = from.max(MIN_RATE);
        let r = (from / 2.0).max(MIN_RATE);
        self.rate = Some(r);
        self.first_cut.get_or_insert(now);
        self.last_cut = Some(now);
        let gap = now + Duration::from_secs_f64(1.0 / self.pace().unwrap_or(r));
        self.next = self.next.max(Some(gap));
    }

    /// Additive increase: each success adds what climbs back to the last cut's rate in
    /// [`CLIMB_SECS`] at the current pace, [`PROBE_SLOWER`] times less past it; never past
    /// the ceiling.
    fn grow(&mut self, sent: Instant, now: Instant) {
        self.served.push_back(sent);
        if self.served.len() > SERVED_MAX {
            self.served.pop_front();
        }
        self.prune(now);
        if let Some(r) = self.rate {
            let per_second = (self.peak / 2.0 / CLIMB_SECS).max(MIN_CLIMB);
            let per_second = if r < self.peak {
                per_second
            } else {
                per_second / PROBE_SLOWER
            };
            // At most doubled by one success (at a slow pace, one success stands for a long
            // climb).
            let grown = (r + per_second / r).min(2.0 * r);
            self.rate = Some(self.ceiling.map_or(grown, |c| grown.min(c)));
        }
    }

    fn prune(&mut self, now: Instant) {
        while self
            .served
            .front()
            .is_some_and(|s| now.duration_since(*s) > SERVED_WINDOW)
        {
            self.served.pop_front();
        }
    }
}

/// The pace of one credential, shared by its sources.
pub struct Pace {
    /// Turns, first come first served (tokio's mutex queues its waiters in order): held while
    /// waiting for the next slot, and, until the vendor first limits the credential, while the
    /// request is in flight.
    gate: Arc<tokio::sync::Mutex<()>>,
    governor: Mutex<Governor>,
    /// The credential's name in metrics: the first of its sources by name.
    label: Mutex<Arc<str>>,
}

impl Pace {
    fn new(label: Arc<str>, ceiling: Option<f64>) -> Pace {
        let mut governor = Governor::default();
        governor.set_ceiling(ceiling);
        let pace = Pace {
            gate: Arc::default(),
            governor: Mutex::new(governor),
            label: Mutex::new(label),
        };
        pace.publish();
        pace
    }

    fn governor(&self) -> std::sync::MutexGuard<'_, Governor> {
        self.governor.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn label(&self) -> Arc<str> {
        self.label.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The pace gauge of the credential.
    fn publish(&self) {
        let pace = self.governor().pace();
        metrics::credential_pace(&self.label(), pace);
    }

    /// Waits for this credential's next turn; the request leaves when it returns.
    async fn turn(self: &Arc<Pace>) -> Turn {
        let gate = self.gate.clone().lock_owned().await;
        loop {
            let ready = self.governor().ready_at(Instant::now());
            match ready {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => break,
            }
        }
        let sent = Instant::now();
        let limited = {
            let mut g = self.governor();
            g.start(sent);
            g.limited()
        };
        Turn {
            pace: self.clone(),
            sent,
            _gate: (!limited).then_some(gate),
        }
    }
}

/// A request's turn: holds the credential's gate while the request is in flight, if it must.
struct Turn {
    pace: Arc<Pace>,
    sent: Instant,
    _gate: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// What one source's requests met, for `--once`'s summary and `state`.
#[derive(Debug, Default)]
struct Tally {
    sent: AtomicU64,
    rate_limited: AtomicU64,
    waited_ns: AtomicU64,
    /// What of it the state holds already ([`Paced::unsaved`], [`Paced::saved`]).
    saved: Mutex<Requests>,
}

/// The pacing of one source's requests: its credential's pace, and its own counts.
#[derive(Clone)]
pub struct Paced {
    pace: Arc<Pace>,
    source: Arc<str>,
    tally: Arc<Tally>,
    /// A turn taken ahead for the source's next request ([`Paced::reserve`]).
    reserved: Arc<Mutex<Option<Turn>>>,
}

/// A request whose turn came: tell it the answer with [`Sent::answered`] (dropped unanswered,
/// a request that got none, it only frees the turn).
pub struct Sent<'a> {
    paced: &'a Paced,
    turn: Turn,
}

impl Paced {
    fn reserved(&self) -> std::sync::MutexGuard<'_, Option<Turn>> {
        self.reserved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a turn at the credential, counting the wait.
    async fn wait(&self) -> Turn {
        let started = Instant::now();
        let turn = self.pace.turn().await;
        let waited = started.elapsed();
        self.tally
            .waited_ns
            .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
        metrics::credential_wait(&self.source, waited);
        turn
    }

    /// Once the vendor limits the credential, waits for the source's next turn and keeps it
    /// for its next request: the poller takes it before one of the agent's read permits, so
    /// that a source waiting for its credential's pace holds none (sources of other
    /// credentials would wait for it). Until then nothing is taken ahead: a turn then holds
    /// the credential until its answer, and one held while waiting for a permit could wait
    /// for sources that hold permits and wait for it.
    pub async fn reserve(&self) {
        if self.reserved().is_some() || !self.pace.governor().limited() {
            return;
        }
        let turn = self.wait().await;
        *self.reserved() = Some(turn);
    }

    /// Gives back a turn reserved and not used (a poll that ended before its request).
    pub fn unreserve(&self) {
        self.reserved().take();
    }

    /// What the source's requests met that the state does not hold yet: for the next commit.
    pub fn unsaved(&self) -> Requests {
        let t = &self.tally;
        let saved = *t.saved.lock().unwrap_or_else(|p| p.into_inner());
        Requests {
            sent: t.sent.load(Ordering::Relaxed) - saved.sent,
            rate_limited: t.rate_limited.load(Ordering::Relaxed) - saved.rate_limited,
            waited_ms: t.waited_ns.load(Ordering::Relaxed) / 1_000_000 - saved.waited_ms,
        }
    }

    /// `r` (from [`Paced::unsaved`]) is committed.
    pub fn saved(&self, r: Requests) {
        let mut saved = self.tally.saved.lock().unwrap_or_else(|p| p.into_inner());
        saved.sent += r.sent;
        saved.rate_limited += r.rate_limited;
        saved.waited_ms += r.waited_ms;
    }

    /// The turn of the source's next request: the one reserved, or the next one.
    pub async fn turn(&self) -> Sent<'_> {
        self.tally.sent.fetch_add(1, Ordering::Relaxed);
        let kept = self.reserved().take();
        let turn = match kept {
            Some(mut t) => {
                // Taken ahead: the request leaves now, and the next one an interval after.
                t.sent = Instant::now();
                t.pace.governor().start(t.sent);
                t
            }
            None => self.wait().await,
        };
        Sent { paced: self, turn }
    }
}

impl Sent<'_> {
    /// The request's answer came.
    pub fn answered(self, answer: Answer) {
        if answer.status == 429 {
            self.paced
                .tally
                .rate_limited
                .fetch_add(1, Ordering::Relaxed);
            metrics::rate_limited(&self.paced.source);
        }
        let pace = &self.turn.pace;
        let (before, after) = {
            let mut g = pace.governor();
            let before = g.pace();
            g.answered(self.turn.sent, Instant::now(), answer);
            (before, g.pace())
        };
        if before != after {
            pace.publish();
        }
        if answer.status == 429 && before != after {
            tracing::info!(source = %self.paced.source, credential = %pace.label(),
                requests_per_second = after.unwrap_or_default(),
                "the vendor limits this credential: its sources are paced together");
        }
    }
}

/// The agent's paces, one per credential, and each source's counts. It outlives reloads.
#[derive(Default)]
pub struct Paces {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    paces: HashMap<CredentialId, Arc<Pace>>,
    tallies: HashMap<String, Arc<Tally>>,
}

/// The ceiling of a credential shared by `sources`: the lowest `max_requests_per_second`.
fn ceiling<'a>(sources: impl IntoIterator<Item = &'a SourceConfig>) -> Option<f64> {
    sources
        .into_iter()
        .filter_map(|s| s.max_requests_per_second)
        .reduce(f64::min)
}

impl Paces {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Groups `sources` (the whole configuration, at start and at each reload) by credential:
    /// each credential's ceiling and name follow its sources; a credential no source uses any
    /// more is forgotten, the others keep what they learned.
    pub fn configure(&self, sources: &[SourceConfig]) {
        let mut groups: HashMap<CredentialId, Vec<&SourceConfig>> = HashMap::new();
        for s in sources {
            groups.entry(CredentialId::of(s)).or_default().push(s);
        }
        let mut inner = self.inner();
        inner.paces.retain(|id, pace| {
            let keep = groups.contains_key(id);
            if !keep {
                metrics::forget_credential(&pace.label());
            }
            keep
        });
        for (id, group) in groups {
            let label: Arc<str> = Arc::from(
                group
                    .iter()
                    .map(|s| s.name.as_str())
                    .min()
                    .unwrap_or_default(),
            );
            let ceiling = ceiling(group.iter().copied());
            match inner.paces.get(&id) {
                Some(pace) => {
                    let old = std::mem::replace(
                        &mut *pace.label.lock().unwrap_or_else(|p| p.into_inner()),
                        label.clone(),
                    );
                    if old != label {
                        metrics::forget_credential(&old);
                    }
                    pace.governor().set_ceiling(ceiling);
                    pace.publish();
                }
                None => {
                    inner
                        .paces
                        .insert(id, Arc::new(Pace::new(label.clone(), ceiling)));
                }
            }
            if group.len() > 1 {
                let names: Vec<&str> = group.iter().map(|s| s.name.as_str()).collect();
                tracing::debug!(credential = %label, sources = ?names,
                    "these sources share one credential: paced together");
            }
        }
        inner
            .tallies
            .retain(|name, _| sources.iter().any(|s| &s.name == name));
    }

    /// The pacing of source `cfg`'s requests (a credential not configured yet, as one whose
    /// secret changed since, is set up for it alone).
    pub fn paced(&self, cfg: &SourceConfig) -> Paced {
        let mut inner = self.inner();
        let pace = inner
            .paces
            .entry(CredentialId::of(cfg))
            .or_insert_with(|| {
                Arc::new(Pace::new(
                    Arc::from(cfg.name.as_str()),
                    cfg.max_requests_per_second,
                ))
            })
            .clone();
        let tally = inner.tallies.entry(cfg.name.clone()).or_default().clone();
        Paced {
            pace,
            source: Arc::from(cfg.name.as_str()),
            tally,
            reserved: Arc::default(),
        }
    }

    /// What `source`'s requests met so far: answers 429, and time waited for turns.
    pub fn tally(&self, source: &str) -> (u64, Duration) {
        self.inner()
            .tallies
            .get(source)
            .map_or((0, Duration::ZERO), |t| {
                (
                    t.rate_limited.load(Ordering::Relaxed),
                    Duration::from_nanos(t.waited_ns.load(Ordering::Relaxed)),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ok() -> Answer {
        Answer {
            status: 200,
            wait: None,
        }
    }

    fn limited(after: Option<Duration>) -> Answer {
        Answer {
            status: 429,
            wait: after,
        }
    }

    #[test]
    fn unlimited_until_the_first_429_then_half_the_rate_served_and_retry_after_for_all() {
        let t0 = Instant::now();
        let mut g = Governor::default();
        // Four requests served within a second, nothing holds the next back.
        for i in 0..4 {
            let at = t0 + ms(i * 10);
            assert_eq!(g.ready_at(at), None);
            g.start(at);
            g.answered(at, at + ms(1), ok());
        }
        assert!(!g.limited());
        assert_eq!(g.pace(), None);
        // The fifth is refused for a second.
        let at = t0 + ms(40);
        g.start(at);
        g.answered(at, at + ms(1), limited(Some(ms(1000))));
        assert!(g.limited());
        assert_eq!(g.pace(), Some(2.0));
        // Nobody leaves before the Retry-After has passed.
        assert_eq!(g.ready_at(at + ms(500)), Some(at + ms(1001)));
        assert_eq!(g.ready_at(at + ms(1001)), None);
        // Then requests are spaced by the pace.
        g.start(at + ms(1001));
        assert_eq!(g.ready_at(at + ms(1002)), Some(at + ms(1501)));
    }

    #[test]
    fn a_cut_halves_once_per_event_and_successes_climb_back_additively() {
        let t0 = Instant::now();
        let mut g = Governor::default();
        // A 429 with nothing served: no rate to learn, only its Retry-After.
        g.answered(t0, t0 + ms(1), limited(Some(ms(1000))));
        assert!(!g.limited());
        assert_eq!(g.ready_at(t0 + ms(2)), Some(t0 + ms(1001)));
        // Two served within a second, then a 429: a pace of one a second.
        let t1 = t0 + ms(1001);
        g.answered(t1, t1, ok());
        g.answered(t1 + ms(5), t1 + ms(5), ok());
        g.answered(t1 + ms(10), t1 + ms(10), limited(None));
        assert_eq!(g.pace(), Some(1.0));
        let peak = 2.0;
        let mut at = t1 + ms(10);
        let mut r = g.pace().unwrap();
        let mut steps = Vec::new();
        for _ in 0..20 {
            at += ms(2000);
            g.answered(at, at + ms(1), ok());
            let next = g.pace().unwrap();
            // Back to the rate cut from at a half of it in CLIMB_SECS, then slower.
            let per_second = (peak / 2.0 / CLIMB_SECS).max(MIN_CLIMB);
            let per_second = if r < peak {
                per_second
            } else {
                per_second / PROBE_SLOWER
            };
            assert!((next - r - per_second / r).abs() < 1e-12, "{r} → {next}");
            steps.push(next > peak);
            r = next;
        }
        assert!(steps.contains(&true) && steps.contains(&false), "{steps:?}");
        // Two 429s to requests in flight together: one cut, to half of what the vendor served
        // over the last 20 s (ten requests: its rate, below the pace, as a bucket let the pace
        // through for a while), or of half the pace if that is more.
        assert!(r > peak, "{r}");
        let cut = r.min((10.0 / 20.0_f64).max(r / 2.0)) / 2.0;
        let (a, b) = (at + ms(100), at + ms(101));
        g.answered(a, at + ms(200), limited(None));
        assert!((g.pace().unwrap() - cut).abs() < 1e-12, "{:?}", g.pace());
        g.answered(b, at + ms(201), limited(None));
        assert!((g.pace().unwrap() - cut).abs() < 1e-12, "{:?}", g.pace());
        // Later 429s with nothing served since the cut are the same event: the vendor still
        // refusing is waited for by its Retry-After, not by a slower pace.
        for i in 0..5 {
            let t = at + ms(1000 + i);
            g.answered(t, t, limited(Some(ms(1000))));
        }
        assert!((g.pace().unwrap() - cut).abs() < 1e-12, "{:?}", g.pace());
        // One served, the next 429 cuts again.
        let t = at + ms(3000);
        g.answered(t, t, ok());
        let r = g.pace().unwrap();
        g.answered(t + ms(1), t + ms(1), limited(None));
        assert!(g.pace().unwrap() < r);
    }

    #[test]
    fn the_ceiling_paces_from_the_start_and_caps_the_climb() {
        let t0 = Instant::now();
        let mut g = Governor::default();
        g.set_ceiling(Some(4.0));
        assert!(!g.limited());
        g.start(t0);
        assert_eq!(g.ready_at(t0), Some(t0 + ms(250)));
        g.answered(t0, t0 + ms(1), ok());
        g.answered(t0 + ms(250), t0 + ms(251), limited(None));
        assert_eq!(g.pace(), Some(0.5));
        for i in 0..10_000 {
            let t = t0 + ms(1000 + i);
            g.answered(t, t, ok());
        }
        assert_eq!(g.pace(), Some(4.0));
    }

    #[test]
    fn a_503_with_retry_after_holds_every_request_back_without_a_cut() {
        let t0 = Instant::now();
        let mut g = Governor::default();
        let mut h = HeaderMap::new();
        let a = Answer::read(503, Some(ms(3000)), &h, SystemTime::now());
        g.answered(t0, t0, a);
        assert!(!g.limited());
        assert_eq!(g.ready_at(t0 + ms(10)), Some(t0 + ms(3000)));
        // A Retry-After on another status is no instruction to the credential.
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("3"));
        assert_eq!(
            Answer::read(500, Some(ms(3000)), &h, SystemTime::now()).wait,
            None
        );
    }

    #[test]
    fn rate_limit_headers_with_nothing_remaining_wait_for_the_reset() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let read = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            exhausted(&h, now)
        };
        assert_eq!(read(&[]), None);
        assert_eq!(
            read(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "7")]),
            Some(ms(7000))
        );
        assert_eq!(
            read(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "1.5")]),
            Some(ms(1500))
        );
        // A Unix time (GitHub's form).
        assert_eq!(
            read(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1800000042")
            ]),
            Some(Duration::from_secs(42))
        );
        assert_eq!(
            read(&[("ratelimit", "\"default\";r=0;t=30")]),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            read(&[("ratelimit", "limit=100, remaining=0, reset=12")]),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            read(&[("x-ratelimit-remaining", "5"), ("x-ratelimit-reset", "7")]),
            None
        );
        assert_eq!(read(&[("x-ratelimit-remaining", "0")]), None);
        // A 200 that says nothing remains holds the next request back; the longer of the two
        // waits wins on a 429.
        let mut h = HeaderMap::new();
        h.insert("ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("ratelimit-reset", HeaderValue::from_static("9"));
        assert_eq!(Answer::read(200, None, &h, now).wait, Some(ms(9000)));
        assert_eq!(
            Answer::read(429, Some(ms(2000)), &h, now).wait,
            Some(ms(9000))
        );
    }

    fn source(name: &str, key: &str, url: &str, max: Option<f64>) -> SourceConfig {
        let text = format!(
            "[[sources]]\nname = {name:?}\nkind = \"wasabi_air\"\nurl = {url:?}\napi_key = {key:?}\n{}\
             [[sinks]]\nname = \"out\"\nkind = \"stdout\"\n",
            max.map(|m| format!("max_requests_per_second = {m}\n"))
                .unwrap_or_default()
        );
        let mut c =
            crate::config::Config::parse(&text, std::path::Path::new("/etc/auditship/t.toml"))
                .unwrap();
        c.sources.remove(0)
    }

    #[test]
    fn a_credential_is_its_host_and_identity_and_its_id_shows_neither() {
        let a = source("a", "key-one", "https://air.example.com", None);
        let b = source("b", "key-one", "https://air.example.com/prefix", None);
        let c = source("c", "key-two", "https://air.example.com", None);
        let d = source("d", "key-one", "https://other.example.com", None);
        assert_eq!(CredentialId::of(&a), CredentialId::of(&b));
        assert_ne!(CredentialId::of(&a), CredentialId::of(&c));
        assert_ne!(CredentialId::of(&a), CredentialId::of(&d));
        assert!(!format!("{:?}", CredentialId::of(&a)).contains("key-one"));
    }

    #[test]
    fn sources_sharing_a_credential_share_a_pace_whose_ceiling_is_their_lowest() {
        let url = "https://air.example.com";
        let sources = vec![
            source("b", "k", url, Some(5.0)),
            source("a", "k", url, Some(2.0)),
            source("c", "k", url, None),
            source("d", "other", url, Some(9.0)),
        ];
        let paces = Paces::default();
        paces.configure(&sources);
        let p: Vec<Paced> = sources.iter().map(|s| paces.paced(s)).collect();
        assert!(Arc::ptr_eq(&p[0].pace, &p[1].pace) && Arc::ptr_eq(&p[0].pace, &p[2].pace));
        assert!(!Arc::ptr_eq(&p[0].pace, &p[3].pace));
        assert_eq!(p[0].pace.governor().pace(), Some(2.0));
        assert_eq!(&*p[0].pace.label(), "a");
        assert_eq!(p[3].pace.governor().pace(), Some(9.0));
        // What a credential learned survives a reload that keeps one of its sources; the
        // ceiling follows the sources left.
        let now = Instant::now();
        p[0].pace.governor().answered(now, now, ok());
        p[0].pace.governor().answered(now, now, limited(None));
        paces.configure(&sources[..1]);
        let again = paces.paced(&sources[0]);
        assert!(Arc::ptr_eq(&again.pace, &p[0].pace));
        assert!(again.pace.governor().limited());
        assert_eq!(again.pace.governor().ceiling, Some(5.0));
        assert_eq!(&*again.pace.label(), "b");
        assert_eq!(paces.inner().paces.len(), 1);
    }

    /// Turns go first come, first served: a source that asks while another keeps asking gets
    /// every other turn, not the last one.
    #[tokio::test]
    async fn turns_are_taken_in_order_so_a_busy_source_does_not_starve_another() {
        let url = "https://air.example.com";
        let sources = [
            source("backfill", "k", url, Some(100.0)),
            source("live", "k", url, None),
        ];
        let paces = Paces::default();
        paces.configure(&sources);
        let (busy, live) = (paces.paced(&sources[0]), paces.paced(&sources[1]));
        let order = Arc::new(Mutex::new(Vec::new()));
        let o = order.clone();
        let backfill = tokio::spawn(async move {
            for _ in 0..30 {
                let t = busy.turn().await;
                o.lock().unwrap().push("b");
                tokio::time::sleep(ms(2)).await;
                t.answered(ok());
            }
        });
        tokio::time::sleep(ms(50)).await;
        for _ in 0..5 {
            let t = live.turn().await;
            order.lock().unwrap().push("L");
            t.answered(ok());
        }
        backfill.await.unwrap();
        let order = order.lock().unwrap().concat();
        let first = order.find('L').unwrap();
        assert_eq!(&order[first..first + 9], "LbLbLbLbL", "{order}");
        let (_, waited) = paces.tally("live");
        assert!(waited > ms(20), "{waited:?}");
    }
}
