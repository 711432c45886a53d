//! The command line: `run`, `check`, `state`, `export`, `simulate`, `demo`. `main.rs` only parses and
//! calls into here; exit codes follow DESIGN.md (0 ok, 1 run-time failure, 2 usage or config).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::agent::{self, Outcome};
use crate::config::Config;
use crate::sources::{self, Http, PageRequest};
use crate::timefmt::{self, NANOS_PER_SEC};

#[derive(Parser, Debug)]
#[command(
    name = "auditship",
    version,
    about = "Pulls audit events out of SaaS audit APIs and ships them, normalised, with nothing lost and nothing doubled"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Poll every source on its interval until SIGTERM/SIGINT (or once, with --once).
    Run {
        /// The configuration file (TOML; config/auditship.toml shows every option).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// One catch-up pass: each source up to now − lag, then exit (0 if all completed).
        #[arg(long)]
        once: bool,
    },
    /// Validate the configuration (secret files included) without network or state.
    Check {
        /// The configuration file (TOML; config/auditship.toml shows every option).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Also authenticate to each source, reach each HTTP sink (no events sent) and check
        /// each file sink can be written.
        #[arg(long)]
        connect: bool,
    },
    /// Show each source's cursor, lag and counts; `state reset SOURCE` rewinds one.
    #[command(
        override_usage = "auditship state --config <FILE> [--json]\n       auditship state --config <FILE> reset <SOURCE> [--to <TIME>]"
    )]
    State {
        /// The configuration file (required; may also follow `reset SOURCE`).
        #[arg(long, short, global = true, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<StateAction>,
    },
    /// Read one window [from, to) of one source (its filters applied) and write it; no cursor
    /// or state is touched.
    Export(crate::export::ExportArgs),
    /// Serve emulators of all four vendor APIs on loopback.
    #[cfg(feature = "sim")]
    Simulate(auditship_sim::SimArgs),
    /// Serve emulators of all four vendor APIs on loopback (not in this build).
    #[cfg(not(feature = "sim"))]
    Simulate(NoSimArgs),
    /// Simulator and agent in one process, printing normalised events as they flow.
    Demo {
        /// Backfilled events per vendor (the last 30 minutes), before live ones arrive.
        #[arg(long, default_value_t = 300)]
        events: u64,
        /// Stop after this long (default: run until Ctrl-C).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
    },
}

/// `simulate`'s arguments in a build without the emulators: anything, so that the command says
/// why it cannot run instead of what it cannot parse.
#[cfg(not(feature = "sim"))]
#[derive(clap::Args, Debug)]
pub struct NoSimArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum StateAction {
    /// Rewind one source: its events from --to on are delivered again.
    Reset {
        /// The source to rewind: its `name` in [[sources]].
        source: String,
        /// RFC 3339 instant, not in the future (default: the source's `start`, or now − 24h).
        #[arg(long, value_name = "TIME")]
        to: Option<String>,
    },
}

/// Loads a config, or prints why not (exit code 2).
fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        say_error("invalid configuration", &e);
        ExitCode::from(2)
    })
}

/// The sinks' queues live in the state file: while sinks are down they may hold up to the sum
/// of their `queue_max_bytes`. Says so when the state's file system has less room than that.
fn queue_room(cfg: &Config) -> Option<String> {
    // In PostgreSQL (agent.state_url) the database's own disk holds them: not seen from here.
    if cfg.agent.state_url.is_some() {
        return None;
    }
    let most: u64 = cfg.sinks.iter().map(|s| s.queue_max_bytes).sum();
    let dir = cfg.agent.state_path.parent().unwrap_or(Path::new("."));
    let dir = dir
        .ancestors()
        .find(|d| !d.as_os_str().is_empty() && d.exists())
        .unwrap_or(Path::new("."));
    let free = free_bytes(dir)?;
    (free < most).then(|| {
        format!(
            "the sinks' queues may hold up to {most} bytes together (the sum of their \
             queue_max_bytes) while sinks are down, but {} has {free} bytes free: when the disk \
             fills the sources stop reading; lower queue_max_bytes or give the state more room",
            dir.display()
        )
    })
}

/// Bytes an unprivileged writer may still use on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` a buffer statvfs fills on success.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Sources whose `url` carries a user name or password over plain `http` (those go out in clear
/// with every request, as HTTP Basic authentication), and each sink's own warnings.
fn cleartext_credentials(cfg: &Config) -> Vec<String> {
    let sources = cfg
        .sources
        .iter()
        .filter(|s| crate::settings::cleartext(&s.url))
        .map(|s| format!("source {}", s.name));
    let sinks = cfg.sinks.iter().flat_map(|s| {
        s.settings
            .configured()
            .warnings(s)
            .into_iter()
            .map(|w| format!("sink {}: {w}", s.name))
    });
    sources
        .map(|who| format!("{who}: {}", crate::settings::CLEARTEXT_URL))
        .chain(sinks)
        .collect()
}

/// An error that ends a command: a JSON log line when the logs are JSON (stderr then holds them
/// alone, for the collector that parses it), else `error: …` for a person.
fn say_error(what: &str, e: &dyn std::fmt::Display) {
    if crate::json_logs() {
        tracing::error!(error = %e, "{what}");
    } else {
        eprintln!("error: {e}");
    }
}

pub async fn run(config: &Path, once: bool) -> ExitCode {
    let cfg = match load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let cancel = CancellationToken::new();
    crate::signals::spawn_signal_handler(cancel.clone());
    tracing::info!(config = %config.display(), sources = cfg.sources.len(), sinks = cfg.sinks.len(),
        state = %state_name(&cfg), once, "auditship starting");
    for w in cleartext_credentials(&cfg) {
        tracing::warn!("{w}");
    }
    if let Ok(v) = std::env::var("AUDITSHIP_TEST_CLOCK") {
        match timefmt::test_clock() {
            Some((_, rate)) => tracing::warn!(rate,
                "AUDITSHIP_TEST_CLOCK is set: event time runs {rate} times as fast as the wall clock; for tests only"),
            None => tracing::warn!(value = %v,
                "AUDITSHIP_TEST_CLOCK is not ANCHOR_NS,RATE: ignored, the wall clock is used"),
        }
    }
    if cfg.agent.state_url.is_none() && !cfg.agent.state_path.exists() {
        tracing::info!(state = %cfg.agent.state_path.display(),
            "no state file yet: creating it (agent.state_path; every source starts at its start)");
    }
    let code = match agent::run(&cfg, once, cancel).await {
        Ok(Outcome::Completed) => 0,
        Ok(Outcome::Failed) => 1,
        Err(e) => {
            let e = format!("{e:#}");
            tracing::error!(error = %e, "auditship failed");
            if !crate::json_logs() {
                eprintln!("error: {e}");
            }
            1
        }
    };
    tracing::info!(exit_code = code, once, "auditship stopped");
    ExitCode::from(code)
}

pub async fn check(config: &Path, connect: bool) -> ExitCode {
    let cfg = match load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    println!(
        "{}: ok ({} sources, {} sinks)",
        config.display(),
        cfg.sources.len(),
        cfg.sinks.len()
    );
    // A file sink whose path holds a file that is not its own would refuse it: say so now.
    let mut refused = false;
    if cfg.agent.state_url.is_none() && cfg.agent.state_path.exists() {
        match crate::state::read_sink_positions(&cfg.agent.state_path) {
            Ok(recorded) => {
                for s in &cfg.sinks {
                    let Some((_, pos)) = recorded.iter().find(|(n, _)| *n == s.name) else {
                        continue;
                    };
                    if let Some(why) = s.settings.configured().preflight(s, pos) {
                        refused = true;
                        println!("sink {}: {why}", s.name);
                    }
                }
            }
            Err(e) => println!("state: cannot read it to check the file sinks: {e}"),
        }
    }
    if refused {
        return ExitCode::from(2);
    }
    for w in cleartext_credentials(&cfg) {
        println!("warning: {w}");
    }
    if let Some(w) = queue_room(&cfg) {
        println!("warning: {w}");
    }
    if !connect {
        return ExitCode::SUCCESS;
    }
    let http = match Http::new(cfg.agent.request_timeout) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: cannot build the HTTP client: {e}");
            return ExitCode::from(1);
        }
    };
    let mut ok = true;
    for s in &cfg.sources {
        let src = sources::build(s, http.clone());
        let unit = src.traits().time_unit;
        let end = timefmt::floor_to(timefmt::now() - timefmt::dur_nanos(s.lag), unit);
        // The last hour, up to a hundred entries: enough to see whether the vendor places them
        // inside the range asked for (a wrong Domo time_zone shows here).
        let req = PageRequest {
            start: end - 3600 * NANOS_PER_SEC,
            end,
            inclusive_end: false,
            offset: 0,
            page: 0,
            limit: s.page_size.min(100),
            max_events: None,
        };
        match src.fetch(&req).await {
            Ok(page) => {
                let mut offset = crate::clock::Offset::default();
                offset.answer(page.events.iter().map(|e| e.time), req.start, req.end, unit);
                match offset.describe() {
                    None => println!("source {}: ok", s.name),
                    Some(seen) => {
                        ok = false;
                        let hint = offset
                            .estimate()
                            .and_then(|(off, _)| src.clock_hint(off, end))
                            .unwrap_or_else(|| {
                                "the vendor's clock or zone differs from the agent's".into()
                            });
                        println!("source {}: reachable, but {seen}: {hint}", s.name);
                    }
                }
            }
            Err(e) => {
                ok = false;
                println!("source {}: {e}", s.name);
            }
        }
    }
    for s in &cfg.sinks {
        let probe = s.settings.configured().probe(s, &cfg.agent.retry).await;
        ok &= probe.ok;
        println!("sink {}: {}", s.name, probe.said);
    }
    if let Some(url) = &cfg.agent.state_url {
        ok &= report_database(url).await;
    } else {
        ok &= report_state_file(&cfg.agent.state_path);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Where the state is, for the log: the SQLite file, or the database without its password.
fn state_name(cfg: &Config) -> String {
    match &cfg.agent.state_url {
        Some(url) => url.to_string(),
        None => cfg.agent.state_path.display().to_string(),
    }
}

/// `check --connect` of a PostgreSQL state: connects, and says the schema it holds.
async fn report_database(url: &crate::state::postgres::PgUrl) -> bool {
    let opened = async {
        let pg = crate::state::postgres::Postgres::open(url.clone()).await?;
        pg.schema_version().await
    };
    match tokio::time::timeout(std::time::Duration::from_secs(30), opened).await {
        Ok(Ok(v)) => {
            println!("state: {url}: ok (schema {v})");
            true
        }
        Ok(Err(e)) => {
            println!("state: {url}: {e}");
            false
        }
        Err(_) => {
            println!("state: {url}: no answer within 30s");
            false
        }
    }
}

/// The SQLite state: its directory must take the file (and its -wal, -shm, .lock), the file
/// itself must be writable if it exists.
fn report_state_file(path: &Path) -> bool {
    let mut ok = report_writable("state", path);
    if path.exists() {
        if let Err(e) = std::fs::OpenOptions::new().write(true).open(path) {
            ok = false;
            println!("state: cannot write {}: {e}", path.display());
        }
    }
    ok
}

/// Opens the PostgreSQL state of `state` commands, at once or not at all (no waiting).
async fn open_database(cfg: &Config) -> anyhow::Result<crate::state::postgres::Postgres> {
    let url = cfg.agent.state_url.clone().context("no agent.state_url")?;
    Ok(crate::state::postgres::Postgres::open(url).await?)
}

/// Says whether `path` can be created or written, as `who: …`.
fn report_writable(who: &str, path: &Path) -> bool {
    match crate::sinks::file::writable(path) {
        Ok(said) => {
            println!("{who}: {said}");
            true
        }
        Err(said) => {
            println!("{who}: {said}");
            false
        }
    }
}

pub async fn state(config: &Path, json: bool, action: Option<StateAction>) -> ExitCode {
    // `state` contacts no vendor and no sink: it runs where the secrets are not mounted.
    let cfg = match Config::load_without_secrets(config).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    }) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let path = &cfg.agent.state_path;
    if let Some(StateAction::Reset { source, to }) = action {
        let Some(src) = cfg.sources.iter().find(|s| s.name == source) else {
            eprintln!("error: {source:?} is not a source in {}", config.display());
            return ExitCode::from(2);
        };
        let to = match to.as_deref() {
            Some(t) => match timefmt::parse_rfc3339(t) {
                Some(to) if to > timefmt::now() => {
                    eprintln!("error: --to {t:?} is in the future: {source} would fetch nothing until then");
                    return ExitCode::from(2);
                }
                Some(t) => t,
                None => {
                    eprintln!("error: --to {t:?} is not an RFC 3339 time");
                    return ExitCode::from(2);
                }
            },
            None => src
                .start
                .unwrap_or(timefmt::now() - 24 * 3600 * NANOS_PER_SEC),
        };
        let result = async {
            // Kept while the cursor moves: no agent may run on the state meanwhile.
            let (st, _guard) = match &cfg.agent.state_url {
                Some(_) => {
                    let pg = open_database(&cfg).await?;
                    let live = pg.live_replicas().await?;
                    if !live.is_empty() {
                        anyhow::bail!(
                            "replicas are running on the state database ({}): stop them before a reset",
                            live.join(", ")
                        );
                    }
                    (crate::state::State::Postgres(pg), agent::StateGuard::Shared)
                }
                None => {
                    let lock = agent::StateLock::acquire(path)?;
                    (
                        agent::open_state(path).await?,
                        agent::StateGuard::File(lock),
                    )
                }
            };
            let before = st.source(&source).await?.and_then(|r| r.cursor);
            st.reset(&source, src.kind.as_str(), to).await?;
            anyhow::Ok(before)
        }
        .await;
        return match result {
            Ok(before) => {
                println!(
                    "{source}: cursor {} -> {}",
                    before.map(timefmt::human).unwrap_or("(none)".into()),
                    timefmt::human(to)
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let (rows, queues, holders) = if cfg.agent.state_url.is_some() || path.exists() {
        match async {
            let (st, holders) = match &cfg.agent.state_url {
                Some(_) => {
                    let pg = open_database(&cfg).await?;
                    let holders = pg.holders().await?;
                    (crate::state::State::Postgres(pg), Some(holders))
                }
                None => (agent::open_state(path).await?, None),
            };
            let rows = st.sources().await?;
            let queues = st.queue_totals().await?;
            anyhow::Ok((rows, queues, holders))
        }
        .await
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(1);
            }
        }
    } else {
        (Vec::new(), Vec::new(), None)
    };
    // Replicas sharing a PostgreSQL state: who holds each source's and sink's lease.
    let holder = |lease: &str| {
        holders
            .as_ref()
            .and_then(|h| h.iter().find(|h| h.name == lease))
    };
    let now = timefmt::now();
    let mut names: Vec<(String, String)> = cfg
        .sources
        .iter()
        .map(|s| (s.name.clone(), s.kind.as_str().to_string()))
        .collect();
    for r in &rows {
        if !names.iter().any(|(n, _)| n == &r.name) {
            names.push((r.name.clone(), r.kind.clone()));
        }
    }
    let mut out = std::io::stdout().lock();
    if json {
        let list: Vec<serde_json::Value> = names
            .iter()
            .map(|(n, k)| {
                let r = rows.iter().find(|r| &r.name == n);
                let cursor = r.and_then(|r| r.cursor);
                let mut v = serde_json::json!({
                    "source": n,
                    "kind": k,
                    "configured": cfg.sources.iter().any(|s| &s.name == n),
                    "cursor": cursor.map(timefmt::rfc3339_ms),
                    "lag_seconds": cursor.map(|c| (now - c) / NANOS_PER_SEC),
                    "delivered": r.map_or(0, |r| r.delivered),
                    "duplicates": r.map_or(0, |r| r.duplicates),
                    "keys": r.map_or(0, |r| r.keys),
                    "requests": r.map_or(0, |r| r.requests.sent),
                    "rate_limited": r.map_or(0, |r| r.requests.rate_limited),
                    "waited_seconds": r.map_or(0.0, |r| r.requests.waited_ms as f64 / 1000.0),
                });
                if holders.is_some() {
                    let h = holder(&crate::replicas::source_lease(n));
                    v["holder"] = h.map(|h| h.holder.clone()).into();
                    v["held_since"] = h.map(|h| timefmt::rfc3339_ms(h.since)).into();
                }
                v
            })
            .collect();
        let _ = writeln!(out, "{}", serde_json::Value::Array(list));
        return ExitCode::SUCCESS;
    }
    let _ = writeln!(
        out,
        "{:<20} {:<18} {:<24} {:>12} {:>10} {:>10} {:>8} {:>9} {:>6} {:>8}",
        "SOURCE",
        "KIND",
        "CURSOR",
        "LAG",
        "DELIVERED",
        "DUPLICATES",
        "KEYS",
        "REQUESTS",
        "429",
        "WAITED"
    );
    for (n, k) in &names {
        let r = rows.iter().find(|r| &r.name == n);
        let cursor = r.and_then(|r| r.cursor);
        let lag = cursor
            .map(|c| timefmt::short_duration((now - c) / NANOS_PER_SEC))
            .unwrap_or_else(|| "-".into());
        let mut name = n.clone();
        if !cfg.sources.iter().any(|s| &s.name == n) {
            name.push_str(" (removed)");
        }
        let _ = writeln!(
            out,
            "{:<20} {:<18} {:<24} {:>12} {:>10} {:>10} {:>8} {:>9} {:>6} {:>8}",
            name,
            k,
            cursor
                .map(timefmt::human)
                .unwrap_or_else(|| "nothing committed yet".into()),
            lag,
            r.map_or(0, |r| r.delivered),
            r.map_or(0, |r| r.duplicates),
            r.map_or(0, |r| r.keys),
            r.map_or(0, |r| r.requests.sent),
            r.map_or(0, |r| r.requests.rate_limited),
            timefmt::short_duration(r.map_or(0, |r| r.requests.waited_ms as i64 / 1000)),
        );
    }
    // Each sink's queue: read and committed, not yet delivered.
    let _ = writeln!(
        out,
        "\n{:<20} {:>10} {:>12} {:>8} {:>12} {:>12}",
        "SINK", "QUEUED", "BYTES", "OLDEST", "LIMIT", "DELIVERED"
    );
    let mut sinks: Vec<&str> = cfg.sinks.iter().map(|s| s.name.as_str()).collect();
    for q in &queues {
        if !sinks.contains(&q.sink.as_str()) && q.events > 0 {
            sinks.push(&q.sink);
        }
    }
    for name in sinks {
        let q = queues.iter().find(|q| q.sink == name);
        let limit = cfg
            .sinks
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.queue_max_bytes);
        let label = match limit {
            Some(_) => name.to_string(),
            None => format!("{name} (removed)"),
        };
        let _ = writeln!(
            out,
            "{:<20} {:>10} {:>12} {:>8} {:>12} {:>12}",
            label,
            q.map_or(0, |q| q.events),
            q.map_or(0, |q| q.bytes),
            q.and_then(|q| q.oldest)
                .map(|o| timefmt::short_duration((now - o).max(0) / NANOS_PER_SEC))
                .unwrap_or_else(|| "-".into()),
            limit.map_or_else(|| "-".into(), |l| l.to_string()),
            q.map_or(0, |q| q.delivered),
        );
    }
    if holders.is_some() {
        let _ = writeln!(
            out,
            "\n{:<28} {:<36} {:<24} {:>10}",
            "LEASE", "HOLDER", "SINCE", "EXPIRES IN"
        );
        let leases = crate::replicas::names(
            cfg.sources.iter().map(|s| s.name.as_str()),
            cfg.sinks.iter().map(|s| s.name.as_str()),
        );
        for lease in leases {
            let h = holder(&lease);
            let _ = writeln!(
                out,
                "{:<28} {:<36} {:<24} {:>10}",
                lease,
                h.map_or("(none: taken at the next tick)", |h| h.holder.as_str()),
                h.map_or_else(|| "-".into(), |h| timefmt::human(h.since)),
                h.map_or_else(
                    || "-".into(),
                    |h| format!("{:.1}s", h.expires_in_ms as f64 / 1000.0)
                ),
            );
        }
    }
    ExitCode::SUCCESS
}

/// What `simulate` and `demo` say in a build without the emulators (`--no-default-features`,
/// as the container image and the systemd build are made).
pub fn without_emulators_message(command: &str) -> String {
    format!(
        "auditship {command}: built without the emulators (--no-default-features, as the container \
         image and the systemd build are); `cargo run --release -- {command}` in a checkout of the \
         source builds them in"
    )
}

/// `simulate` or `demo` in a build without the emulators: a usage error (exit 2).
#[cfg(not(feature = "sim"))]
fn without_emulators(command: &str) -> ExitCode {
    eprintln!("error: {}", without_emulators_message(command));
    ExitCode::from(2)
}

#[cfg(not(feature = "sim"))]
pub async fn simulate(_args: NoSimArgs) -> ExitCode {
    without_emulators("simulate")
}

#[cfg(not(feature = "sim"))]
pub async fn demo(_events: u64, _duration: Option<Duration>) -> ExitCode {
    without_emulators("demo")
}

#[cfg(feature = "sim")]
pub async fn simulate(args: auditship_sim::SimArgs) -> ExitCode {
    let cfg = match args.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let handle = match auditship_sim::start(cfg.clone(), args.listen()).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen());
            return ExitCode::from(1);
        }
    };
    println!("simulator listening on {}", handle.url());
    let start = format!("{:.0}", cfg.start);
    let (_, blocks) = sim_sources(&cfg, &handle.url(), &start);
    println!(
        "\n# Ready to paste into a config file: one source per emulated vendor, and a stdout sink.\n\n{blocks}[[sinks]]\nname = \"console\"\nkind = \"stdout\"\n"
    );
    let cancel = CancellationToken::new();
    crate::signals::spawn_signal_handler(cancel.clone());
    cancel.cancelled().await;
    handle.shutdown().await;
    ExitCode::SUCCESS
}

/// The `[[sources]]` entries that read the emulators at `url` from `start` on: one per vendor
/// that both the agent (`sources::VENDORS`) and the emulators know, named after its kind, with
/// the credentials the emulators take as `cfg` sets them. Also the vendors' titles.
#[cfg(feature = "sim")]
fn sim_sources(
    cfg: &auditship_sim::SimConfig,
    url: &str,
    start: &str,
) -> (Vec<&'static str>, String) {
    let mut titles = Vec::new();
    let mut text = String::new();
    for v in sources::VENDORS {
        let Some(emulated) = auditship_sim::Vendor::parse(v.kind()) else {
            continue;
        };
        titles.push(v.title());
        text.push_str(&format!(
            "[[sources]]\nname = \"{name}\"\nkind = \"{kind}\"\n{reading}url = {url:?}\nstart = {start:?}\n{auth}\n",
            name = v.kind().replace('_', "-"),
            kind = v.kind(),
            reading = emulated.reading_keys(cfg),
            auth = emulated.source_keys(cfg),
        ));
    }
    (titles, text)
}

#[cfg(feature = "sim")]
pub async fn demo(events: u64, duration: Option<Duration>) -> ExitCode {
    use auditship_sim::SimConfig;
    let now = jiff::Timestamp::now();
    let live = jiff::SignedDuration::from_hours(2);
    // `events` over the last 30 minutes, and the same rate on for two more hours, live.
    let per_vendor = events.saturating_mul(5);
    let sim_cfg = SimConfig {
        start: now - jiff::SignedDuration::from_mins(30),
        end: now + live,
        events: per_vendor,
        late_fraction: 0.1,
        late_max: Duration::from_secs(20),
        ..SimConfig::default()
    };
    let sim = match auditship_sim::start(sim_cfg.clone(), "127.0.0.1:0".parse().expect("address"))
        .await
    {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: cannot start the simulator: {e}");
            return ExitCode::from(1);
        }
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot make a temporary directory: {e}");
            return ExitCode::from(1);
        }
    };
    let url = sim.url();
    let start = timefmt::rfc3339_ms(timefmt::now() - 30 * 60 * NANOS_PER_SEC);
    let mut text = format!(
        "[agent]\nstate_path = {state:?}\npoll_interval = \"2s\"\nlag = \"2s\"\noverlap = \"30s\"\n\n",
        state = dir.path().join("state.db").display().to_string()
    );
    let (titles, sources) = sim_sources(&sim_cfg, &url, &start);
    text.push_str(&sources);
    text.push_str("[[sinks]]\nname = \"console\"\nkind = \"stdout\"\ninclude_raw = false\n");
    let cfg = match Config::parse(&text, &dir.path().join("demo.toml")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: the demo's own config is invalid: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!(
        "auditship demo: emulators of the {} on {url}; events from the last 30 minutes, then live (10% arrive late). Ctrl-C to stop.",
        titles.join(", ")
    );
    let cancel = CancellationToken::new();
    crate::signals::spawn_signal_handler(cancel.clone());
    if let Some(d) = duration {
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            c.cancel();
        });
    }
    let result = agent::run(&cfg, false, cancel).await;
    sim.shutdown().await;
    match result {
        Ok(Outcome::Completed) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_without_emulators_says_so_and_how_to_get_them() {
        let m = without_emulators_message("demo");
        assert!(
            m.starts_with("auditship demo: built without the emulators"),
            "{m}"
        );
        assert!(m.contains("`cargo run --release -- demo`"), "{m}");
        assert!(!m.ends_with('.'), "{m}");
    }

    /// Both builds accept `simulate` with its flags: without the emulators it must reach the
    /// message above rather than a clap error about an unknown flag.
    #[test]
    fn simulate_parses_its_flags_in_either_build() {
        let cli =
            Cli::try_parse_from(["auditship", "simulate", "--listen", "127.0.0.1:0"]).unwrap();
        assert!(matches!(cli.command, Command::Simulate(_)));
    }
}
