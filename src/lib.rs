//! auditship: pulls audit events out of SaaS audit APIs, keeps a durable time-window cursor per
//! source in SQLite, drops duplicates, normalises four vendor schemas into one, and ships the
//! result to stdout, files or HTTP endpoints.
//!
//! No module imports one that imports it (ARCHITECTURE.md lists them from the bottom).
//! The map (ARCHITECTURE.md has the data path and how to add a vendor, a sink or an encoding):
//! - [`cli`]: the commands (`run`, `check`, `state`, `export`, `simulate`, `demo`); `main.rs`
//!   only parses. [`export`]: one window of one source, no state touched; [`csv`]: its CSV.
//! - [`config`]: TOML in, validated settings out: the file, `${ENV}`, `[agent]`; each
//!   `[[sources]]` entry is checked by [`sources::config`], each `[[sinks]]` entry by
//!   [`sinks::config`], and every section with [`settings`] ([`settings::Check`], which keys
//!   every problem; [`settings::Secret`] and `X_file` secrets; TLS options).
//! - [`agent`]: state, sinks and one poller task per source, until shutdown; config reload.
//! - [`pipeline`]: the generic poller — windows ([`pipeline::planner`]), paging, retries,
//!   dedupe, deliver, commit, one file each; [`pipeline::keyer::Keyer`] is the one place a
//!   page's keys are made.
//! - [`sources`]: one file per vendor API, behind the small [`sources::Source`] trait;
//!   [`sources::entries`]: a page's text in, its events out.
//! - [`json`]: how entries are read, knowing nothing of events: the page walker, the canonical
//!   scanner and readers that give exactly what serde_json gives.
//! - [`keys`]: how events are keyed — vendor ids, content hashes, occurrence numbers.
//! - [`sinks`]: stdout, file (with rotation), HTTP, syslog, OTLP, Kafka, Google SecOps and
//!   Microsoft Sentinel, each a plugin in its folder listed by one `sinks!` line
//!   ([`sinks::DESTINATIONS`], [`sinks::SinkSettings`]), behind [`sinks::Sink`];
//!   [`encodings`]: how each event is written inside a sink's framing (`format`: native, ocsf,
//!   ecs, cef), behind [`encodings::Encoding`]; [`rows`]: the types of a vendor's SIEM rows
//!   (each vendor's table is in its file, [`sources::SIEM_TABLES`] lists them).
//! - [`state`]: cursors, dedupe keys, sink positions, the sinks' queues, migrations: SQLite on
//!   its own thread, or PostgreSQL ([`state::postgres`], `agent.state_url`, its TLS in
//!   [`state::pgtls`]). [`lease`]: sources and sinks leased to replicas in PostgreSQL;
//!   [`replicas`]: a replica's lease task and the view its pollers and sinks' tasks wait on.
//! - [`event`], [`timefmt`]: the native event (spans into the page it came in) and time text.
//! - [`retry`]: the one retry policy of every HTTP call and its settings; [`clock`]: what entries placed outside
//!   the range asked for say about a vendor's zone or clock.
//! - [`metrics`], [`health`], [`server`]: `/metrics`, `/healthz` and `/readyz`; [`signals`]:
//!   shutdown on SIGTERM/SIGINT for every command that runs until told to stop.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod agent;
pub mod cli;
pub mod clock;
pub mod config;
pub mod csv;
pub mod encodings;
pub mod event;
pub mod export;
pub mod health;
pub mod json;
pub mod keys;
pub mod lease;
pub mod metrics;
pub mod pipeline;
pub mod replicas;
pub mod retry;
pub mod rows;
pub mod server;
pub mod settings;
pub mod signals;
pub mod sinks;
pub mod sources;
pub mod state;
pub mod timefmt;

/// A boxed future, so that the traits with async methods ([`sources::Source`], [`sinks::Sink`])
/// can be used as trait objects.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The User-Agent of every request: `auditship/VERSION`, and the replica's id once
/// [`set_replica`] named it (replicas sharing a PostgreSQL state), so that a vendor's or a
/// receiver's logs tell which replica asked.
pub fn user_agent() -> &'static str {
    REPLICA_AGENT.get().map_or(
        concat!("auditship/", env!("CARGO_PKG_VERSION")),
        String::as_str,
    )
}

static REPLICA_AGENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Names this process's replica in [`user_agent`] (once; later calls change nothing).
pub fn set_replica(id: &str) {
    let _ = REPLICA_AGENT.set(format!(
        "auditship/{} (replica {id})",
        env!("CARGO_PKG_VERSION")
    ));
}

/// Returns the heap's free pages to the system. glibc keeps what a poll freed inside its heap
/// (only free memory at the very top goes back by itself), so an idle agent would hold on to the
/// high-water mark of its last catch-up: 1.6 MB of heap for 0.75 MB in use after four sources
/// caught up on 1000 events each. Called when a source goes to sleep; it costs microseconds.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own heaps; it takes the
    // allocator's locks and touches no memory the program owns.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sets up logging on stderr: `AUDITSHIP_LOG` is the filter (default `info`),
/// `AUDITSHIP_LOG_FORMAT=json` writes JSON lines.
/// What `AUDITSHIP_LOG_FORMAT` asks for: `Ok(true)` for JSON lines, `Ok(false)` for text (unset
/// or empty too); anything else is refused rather than silently logged as text.
pub fn log_format() -> Result<bool, String> {
    match std::env::var("AUDITSHIP_LOG_FORMAT") {
        Err(_) => Ok(false),
        Ok(v) if v.trim().is_empty() || v.trim().eq_ignore_ascii_case("text") => Ok(false),
        Ok(v) if v.trim().eq_ignore_ascii_case("json") => Ok(true),
        Ok(v) => Err(format!(
            "AUDITSHIP_LOG_FORMAT={v:?} is not a log format: one of text, json"
        )),
    }
}

/// Whether the logs are JSON lines: then stderr holds them alone, errors included.
pub fn json_logs() -> bool {
    log_format().unwrap_or(false)
}

pub fn init_logging() {
    let (filter, bad) = log_filter(std::env::var("AUDITSHIP_LOG").ok().as_deref());
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed stderr (a pipe whose reader went away) must not take the agent down: by
        // default a failed log write is reported with eprintln!, which panics the task that
        // logged — and a dead signal-handling task would ignore SIGTERM.
        .log_internal_errors(false)
        .with_target(false);
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    if json_logs() {
        builder
            .json()
            .flatten_event(true)
            .finish()
            .with(filter)
            .init();
    } else {
        builder.finish().with(filter).init();
    }
    if let Some(e) = bad {
        tracing::warn!("AUDITSHIP_LOG: {e}; logging at info");
    }
}

/// The log filter that `AUDITSHIP_LOG` spells: comma-separated `level` or `target=level`
/// directives (`debug`, `info,auditship::sinks=trace`); unset, `info`. A filter that does not
/// parse gives `info` and the reason. (A target filter and not tracing's `EnvFilter`: the
/// span and field matching of the latter brings a regex engine, a quarter of a megabyte of
/// code that every idle agent would map.)
fn log_filter(spec: Option<&str>) -> (tracing_subscriber::filter::Targets, Option<String>) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    let info = || Targets::new().with_default(LevelFilter::INFO);
    match spec.map(str::trim).filter(|s| !s.is_empty()) {
        None => (info(), None),
        // A bare word that is not a level parses as a target to trace, with everything else
        // off: `AUDITSHIP_LOG=verbose` would silence every line, errors included. Such a
        // filter is refused like one that does not parse.
        Some(s) => {
            let word = s
                .split(',')
                .map(str::trim)
                .find(|d| !d.contains('=') && d.parse::<LevelFilter>().is_err());
            match (word, s.parse::<Targets>()) {
                (Some(w), _) => (
                    info(),
                    Some(format!(
                        "{w:?} is neither a level (trace, debug, info, warn, error, off) nor target=level"
                    )),
                ),
                (None, Ok(t)) => (t, None),
                (None, Err(e)) => (info(), Some(e.to_string())),
            }
        }
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod release_tests {
    /// Resident memory of this process, in bytes.
    fn rss() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    /// RSS is the whole process's, and the tests running beside this one allocate and free
    /// too: the measurement runs in a process of its own (this test binary, that test alone).
    #[test]
    fn freed_heap_memory_goes_back_to_the_system() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "release_tests::freed_heap_memory_goes_back_measured_alone",
                "--ignored",
                "--test-threads=1",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    #[ignore = "run alone in a process of its own by freed_heap_memory_goes_back_to_the_system"]
    fn freed_heap_memory_goes_back_measured_alone() {
        // 64 MB in blocks small enough to come from a heap rather than their own mappings,
        // each followed by a small block that stays: the freed blocks are holes glibc cannot
        // give back by shrinking the heap, whichever arena this thread was given.
        let mut blocks = Vec::new();
        let mut kept = Vec::new();
        for i in 0..1024u32 {
            blocks.push(vec![(i as u8) | 1; 64 << 10]);
            kept.push(vec![1u8; 64]);
        }
        drop(blocks);
        let before = rss();
        super::release_free_memory();
        let after = rss();
        assert!(
            before > after + (32 << 20),
            "RSS {before} bytes before, {after} after"
        );
        assert!(kept.iter().all(|k| k[63] == 1));
    }
}

#[cfg(test)]
mod log_filter_tests {
    use super::log_filter;
    use tracing::Level;

    #[test]
    fn levels_and_targets_parse_and_nonsense_falls_back_to_info() {
        let (f, bad) = log_filter(None);
        assert!(bad.is_none());
        assert!(f.would_enable("auditship::agent", &Level::INFO));
        assert!(!f.would_enable("auditship::agent", &Level::DEBUG));

        let (f, bad) = log_filter(Some("warn,auditship::sinks=trace"));
        assert!(bad.is_none());
        assert!(f.would_enable("auditship::sinks::http", &Level::TRACE));
        assert!(!f.would_enable("auditship::agent", &Level::INFO));
        assert!(f.would_enable("hyper", &Level::WARN));

        let (f, bad) = log_filter(Some("debug"));
        assert!(bad.is_none());
        assert!(f.would_enable("anything", &Level::DEBUG));

        let (f, bad) = log_filter(Some("auditship=loud"));
        assert!(bad.is_some());
        assert!(f.would_enable("auditship", &Level::INFO));
        assert!(!f.would_enable("auditship", &Level::DEBUG));

        // A bare word that is not a level would be a target to trace, everything else off.
        for spec in ["verbose", "info,verbose", "Debug,loud"] {
            let (f, bad) = log_filter(Some(spec));
            assert!(bad.unwrap().contains("neither a level"), "{spec}");
            assert!(
                f.would_enable("auditship::pipeline", &Level::ERROR),
                "{spec}"
            );
            assert!(
                f.would_enable("auditship::pipeline", &Level::INFO),
                "{spec}"
            );
        }
        let (f, bad) = log_filter(Some("WARN"));
        assert!(bad.is_none());
        assert!(f.would_enable("x", &Level::WARN) && !f.would_enable("x", &Level::INFO));
    }
}
