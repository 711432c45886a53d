//! `[agent]`: settings of the whole agent, and the defaults of every source.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::retry::RetryConfig;
use crate::settings::{Check, SecretFile, SecretText};
use crate::sources::config::SourceDefaults;
use crate::state::pgtls::PgUrl;

// What the file says.

/// `[agent]`: settings of the whole agent, and defaults for every source.
#[derive(Debug, Default, Deserialize, crate::settings::Section)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    /// SQLite file holding cursors, dedupe keys and sink positions; created if missing.
    pub state_path: Option<String>,
    /// PostgreSQL holding the state instead of `state_path` (a secret: its password).
    pub state_url: Option<SecretText>,
    /// A file holding `state_url`.
    pub state_url_file: Option<SecretFile>,
    /// With `state_url`: how long a replica's lease on a source or sink outlives its last
    /// renewal (default 30s); a dead replica's sources move to the others after it.
    pub lease_ttl: Option<String>,
    /// With `state_url`: this replica's name among those sharing the database (default the
    /// host name plus a random suffix, unique per start).
    pub replica_id: Option<String>,
    /// How often each source polls (default 60s).
    pub poll_interval: Option<String>,
    /// Never ask for events newer than now − lag (default 2m).
    pub lag: Option<String>,
    /// Each poll re-reads this much before the cursor, for late arrivals (default 15m).
    pub overlap: Option<String>,
    /// The first sub-window's length (default 1h); later ones grow while answers are small and
    /// shrink when they are dense.
    pub window: Option<String>,
    /// Events per page requested (1–1000, default 1000).
    pub page_size: Option<i64>,
    /// Address of the /healthz, /readyz and /metrics server (optional).
    pub listen: Option<String>,
    /// Timeout of one HTTP request (default 30s).
    pub request_timeout: Option<String>,
    /// First retry delay (default 1s); each retry doubles it, with full jitter.
    pub retry_initial: Option<String>,
    /// Longest retry delay (default 60s).
    pub retry_max_delay: Option<String>,
    /// Attempts per request before a poll gives up (default 8; the next poll tries again).
    pub retry_max_attempts: Option<i64>,
    /// `/readyz` answers 503 once a source has been failing for longer than this (default 5m).
    pub unready_after: Option<String>,
}

/// `[agent]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// The SQLite file (unused when `state_url` is set).
    pub state_path: PathBuf,
    /// The state in PostgreSQL instead (`state_url` / `state_url_file`).
    pub state_url: Option<PgUrl>,
    /// With `state_url`: the leases' time to live.
    pub lease_ttl: Duration,
    /// With `state_url`: this replica's id as configured (`None`: made at start).
    pub replica_id: Option<String>,
    pub listen: Option<SocketAddr>,
    pub request_timeout: Duration,
    pub retry: RetryConfig,
    /// A source failing for longer than this makes `/readyz` answer 503.
    pub unready_after: Duration,
}

/// Validates `[agent]`.
pub(super) fn validate(c: &mut Check<'_>, a: &RawAgent) -> (AgentConfig, SourceDefaults) {
    let base = c.base();
    let defaults = SourceDefaults {
        poll_interval: c.duration("agent.poll_interval", &a.poll_interval, true),
        lag: c.duration("agent.lag", &a.lag, false),
        overlap: c.duration("agent.overlap", &a.overlap, false),
        window: c.duration("agent.window", &a.window, true),
        page_size: c.page_size("agent.page_size", a.page_size),
    };
    let request_timeout = c
        .duration("agent.request_timeout", &a.request_timeout, true)
        .unwrap_or(Duration::from_secs(30));
    let retry = RetryConfig {
        initial: c
            .duration("agent.retry_initial", &a.retry_initial, true)
            .unwrap_or(Duration::from_secs(1)),
        max_delay: c
            .duration("agent.retry_max_delay", &a.retry_max_delay, true)
            .unwrap_or(Duration::from_secs(60)),
        max_attempts: match a.retry_max_attempts {
            None => Some(8),
            Some(n) if n >= 1 => Some(n as usize),
            Some(n) => {
                c.fail(
                    "agent.retry_max_attempts",
                    format_args!("{n} must be at least 1"),
                );
                None
            }
        },
    };
    let unready_after = c
        .duration("agent.unready_after", &a.unready_after, true)
        .unwrap_or(Duration::from_secs(300));
    let listen = a
        .listen
        .as_deref()
        .and_then(|s| match s.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                c.fail(
                    "agent.listen",
                    format_args!("{s:?} is not an address; write e.g. \"127.0.0.1:9464\""),
                );
                None
            }
        });
    let state_path = match a.state_path.as_deref() {
        Some("") => {
            c.fail("agent.state_path", "is empty");
            PathBuf::new()
        }
        Some(p) => base.join(p),
        None => PathBuf::from("/var/lib/auditship/state.db"),
    };
    // Read even by `state`, which reads no other secret: the state is what it shows.
    let url = c.with_secrets(|c| c.secret("agent", "state_url", &a.state_url, &a.state_url_file));
    let key = if a.state_url_file.is_some() {
        "agent.state_url_file"
    } else {
        "agent.state_url"
    };
    let state_url = match url {
        crate::settings::SecretValue::Given(u) => {
            if a.state_path.is_some() {
                c.fail(
                    key,
                    "set either state_url (PostgreSQL) or state_path (SQLite), not both",
                );
                None
            } else {
                match PgUrl::parse(u.expose(), base) {
                    Ok(u) => Some(u),
                    Err(e) => {
                        c.fail(key, e);
                        None
                    }
                }
            }
        }
        _ => None,
    };
    let lease_ttl = c
        .duration("agent.lease_ttl", &a.lease_ttl, true)
        .unwrap_or(Duration::from_secs(30));
    if a.lease_ttl.is_some() && lease_ttl < Duration::from_secs(1) {
        c.fail(
            "agent.lease_ttl",
            "must be at least 1s (replicas renew their leases every third of it)",
        );
    }
    let replica_id = a.replica_id.as_deref().map(str::trim).map(str::to_string);
    if let Some(id) = &replica_id {
        if id.is_empty() || id.len() > 200 || id.chars().any(|ch| ch.is_control()) {
            c.fail(
                "agent.replica_id",
                "must be 1 to 200 printable characters (or left out: the host name and a random suffix)",
            );
        }
    }
    for (key, set) in [
        ("agent.lease_ttl", a.lease_ttl.is_some()),
        ("agent.replica_id", a.replica_id.is_some()),
    ] {
        if set && a.state_url.is_none() && a.state_url_file.is_none() {
            c.fail(
                key,
                "only applies with agent.state_url (replicas sharing a PostgreSQL state); a SQLite state has one agent",
            );
        }
    }
    let agent = AgentConfig {
        state_path,
        state_url,
        lease_ttl,
        replica_id,
        listen,
        request_timeout,
        retry,
        unready_after,
    };
    (agent, defaults)
}
