//! auditship: pulls audit events out of SaaS audit APIs, keeps a durable time-window cursor per
//! source in SQLite, drops duplicates, normalises four vendor schemas into one, and ships the
//! result to stdout, files or HTTP endpoints.
//!
//! The map:
//! - [`cli`]: the commands (`run`, `check`, `state`, `simulate`, `demo`); `main.rs` only parses.
//! - [`config`]: TOML in, validated settings out; `${ENV}` and `X_file` secrets.
//! - [`agent`]: state, sinks and one poller task per source, until shutdown; config reload.
//! - [`pipeline`]: the generic poller — windows, paging, retries, dedupe, deliver, commit.
//! - [`sources`]: one file per vendor API, behind the small [`sources::Source`] trait;
//!   `sources::json` reads a page in one pass.
//! - [`sinks`]: stdout, file and HTTP, behind [`sinks::Sink`].
//! - [`state`]: SQLite on its own thread: cursors, dedupe keys, sink positions, migrations.
//! - [`event`], [`dedupe`], [`timefmt`]: the native event (spans into the page it came in), its
//!   keys, and time text.
//! - [`retry`]: the one retry policy of every HTTP call.
//! - [`metrics`], [`health`], [`server`]: `/metrics`, `/healthz` and `/readyz`.

pub mod agent;
pub mod cli;
pub mod config;
pub mod dedupe;
pub mod event;
pub mod health;
pub mod metrics;
pub mod pipeline;
pub mod retry;
pub mod server;
pub mod sinks;
pub mod sources;
pub mod state;
pub mod timefmt;

/// Sets up logging on stderr: `AUDITSHIP_LOG` is the filter (default `info`),
/// `AUDITSHIP_LOG_FORMAT=json` writes JSON lines.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("AUDITSHIP_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed stderr (a pipe whose reader went away) must not take the agent down: by
        // default a failed log write is reported with eprintln!, which panics the task that
        // logged — and a dead signal-handling task would ignore SIGTERM.
        .log_internal_errors(false)
        .with_target(false);
    if std::env::var("AUDITSHIP_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json")) {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
