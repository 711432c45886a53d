//! `auditship export`: one closed window `[from, to)` of one source, written once (stdout or a
//! file), with no cursor and no state touched.
//!
//! The window is read by the production [`Poller`] (sub-windows, paging, retries, dedupe within
//! the window, page order), its state a throwaway SQLite file in a temporary directory that is
//! removed afterwards; the configured state file is never opened. Events go to a sink that
//! writes each page in the chosen format (any [`Format`] or `csv`) and drops what the vendor
//! placed outside `[from, to)`. `--output FILE` is written to a temporary file beside it and
//! renamed over it only when the whole window was read, so a failed export leaves no partial
//! file behind.
//!
//! Exit codes: 0 done; 1 the window could not be read completely (a vendor error after
//! `retry_max_attempts`, or the output could not be written); 2 bad arguments or config
//! (unknown source or format, a time that does not parse, `from >= to`, `to` in the future, a
//! `--filter` that is not `KEY=VALUE` or names a parameter the agent sets itself).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::encodings::{Format, Writer};
use crate::event::Event;
use crate::pipeline::Poller;
use crate::sinks::config::{SinkConfig, SinkKind};
use crate::sinks::{Sink, SinkError, SinkSlot};
use crate::sources::{self, Http};
use crate::timefmt::{self, dur_nanos, Nanos};
use crate::BoxFuture;

/// What `export` was asked for: its command line.
#[derive(clap::Args, Debug, Clone)]
pub struct ExportArgs {
    /// The configuration file (TOML; config/auditship.toml shows every option).
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    /// The source to read: its `name` in [[sources]].
    #[arg(long, value_name = "NAME")]
    pub source: String,
    /// Start of the window (RFC 3339, included).
    #[arg(long, value_name = "TIME")]
    pub from: String,
    /// End of the window (RFC 3339, excluded; not in the future).
    #[arg(long, value_name = "TIME")]
    pub to: String,
    /// native, csv, or any other sink format of this build.
    #[arg(long, default_value = "native")]
    pub format: String,
    /// Write here (atomically: only a complete export replaces it); default stdout. A FILE that
    /// exists and is not empty is replaced only with --overwrite.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Replace an existing, non-empty --output FILE (once the export is complete).
    #[arg(long, requires = "output")]
    pub overwrite: bool,
    /// A vendor query parameter added to the source's filters (repeatable).
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
}

/// How each event is written.
enum Encode {
    Csv,
    Records(Writer),
}

/// The export's sink: each page's events inside `[from, to)`, encoded and written at once.
struct ExportSink {
    out: Box<dyn std::io::Write + Send>,
    encode: Encode,
    from: Nanos,
    to: Nanos,
    /// Events written.
    written: Arc<AtomicU64>,
}

impl Sink for ExportSink {
    fn deliver<'a>(
        &'a mut self,
        events: &'a [Event],
        _cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let mut buf = Vec::new();
            let mut n = 0;
            for e in events
                .iter()
                .filter(|e| e.time >= self.from && e.time < self.to)
            {
                match &self.encode {
                    Encode::Csv => crate::csv::write_event(&mut buf, e),
                    Encode::Records(w) => w.line(e, &mut buf),
                }
                n += 1;
            }
            self.out
                .write_all(&buf)
                .and_then(|()| self.out.flush())
                .map_err(|e| SinkError::Io {
                    sink: "export".into(),
                    msg: format!("writing the output: {e}"),
                })?;
            self.written.fetch_add(n, Ordering::Relaxed);
            Ok(())
        })
    }
}

/// A directory removed (with what is in it) when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        let base = std::env::temp_dir();
        for _ in 0..16 {
            let p = base.join(format!(
                "auditship-export-{}-{:016x}",
                std::process::id(),
                fastrand::u64(..)
            ));
            match std::fs::create_dir(&p) {
                Ok(()) => return Ok(TempDir(p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("no free temporary directory name"))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file beside the output, renamed over it by [`Partial::commit`] or removed when dropped.
struct Partial {
    tmp: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl Partial {
    fn create(dest: &Path) -> std::io::Result<(Partial, std::fs::File)> {
        let name = dest
            .file_name()
            .ok_or_else(|| std::io::Error::other("not a file name"))?;
        let tmp = dest.with_file_name(format!(
            ".{}.partial-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        // A name of its own (the pid), made new: a file of that name is not touched.
        let file = std::fs::File::create_new(&tmp)?;
        Ok((
            Partial {
                tmp,
                dest: dest.to_path_buf(),
                done: false,
            },
            file,
        ))
    }

    fn commit(mut self) -> std::io::Result<()> {
        std::fs::File::open(&self.tmp)?.sync_all()?;
        std::fs::rename(&self.tmp, &self.dest)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A usage error: said, exit 2.
fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

/// A run-time failure: said, exit 1.
fn failed(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(1)
}

pub async fn export(args: ExportArgs) -> ExitCode {
    let cfg = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let Some(src) = cfg.sources.iter().find(|s| s.name == args.source) else {
        return usage(format_args!(
            "--source {:?} is not a source in {}; one of {}",
            args.source,
            args.config.display(),
            cfg.sources
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let Some(from) = timefmt::parse_rfc3339(&args.from) else {
        return usage(format_args!(
            "--from {:?} is not an RFC 3339 time (e.g. 2024-10-18T00:00:00Z)",
            args.from
        ));
    };
    let Some(to) = timefmt::parse_rfc3339(&args.to) else {
        return usage(format_args!(
            "--to {:?} is not an RFC 3339 time (e.g. 2024-10-19T00:00:00Z)",
            args.to
        ));
    };
    if from >= to {
        return usage(format_args!(
            "--from {} is not before --to {}: the window [from, to) is empty",
            args.from, args.to
        ));
    }
    if let Some(out) = args.output.as_ref().filter(|_| !args.overwrite) {
        if let Ok(m) = std::fs::metadata(out) {
            if m.len() > 0 || !m.is_file() {
                return usage(format_args!(
                    "--output {} exists ({} bytes) and would be replaced: pass --overwrite to replace it, or choose another file",
                    out.display(),
                    m.len()
                ));
            }
        }
    }
    let now = timefmt::now();
    if to > now {
        return usage(format_args!(
            "--to {} is in the future: its events do not exist yet",
            args.to
        ));
    }
    if to > now - dur_nanos(src.lag) {
        eprintln!(
            "warning: --to is within the source's lag ({}) of now: events of the last moments may \
             still arrive at the vendor and would be missing from this export",
            humantime::format_duration(src.lag)
        );
    }
    let encode = if args.format == "csv" {
        Encode::Csv
    } else {
        match Format::by_name(&args.format) {
            Some(format) => Encode::Records(Writer {
                format,
                include_raw: true,
            }),
            None => {
                return usage(format_args!(
                    "--format {:?} is not a format; one of {}, csv",
                    args.format,
                    Format::NAMES.join(", ")
                ))
            }
        }
    };
    let mut source = src.clone();
    for f in &args.filters {
        let Some((k, v)) = f.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
            return usage(format_args!(
                "--filter {f:?} is not KEY=VALUE (a vendor query parameter, as in the source's filters)"
            ));
        };
        if let Some(why) = crate::sources::config::filter_problem(source.kind.vendor(), k) {
            return usage(format_args!("--filter {k}: {why}"));
        }
        source.filters.push((k.to_string(), v.to_string()));
    }
    // The window alone: from `from` (as a first run's `start`), no overlap, up to `to`.
    source.start = Some(from);
    source.overlap = Duration::ZERO;

    let dir = match TempDir::new() {
        Ok(d) => d,
        Err(e) => return failed(format_args!("cannot make a temporary directory: {e}")),
    };
    let state = match crate::agent::open_state(&dir.0.join("export.db")).await {
        Ok(s) => s,
        Err(e) => return failed(format_args!("{e:#}")),
    };
    let mut partial = None;
    let mut out: Box<dyn std::io::Write + Send> = match &args.output {
        None => Box::new(std::io::stdout()),
        Some(path) => match Partial::create(path) {
            Ok((p, file)) => {
                partial = Some(p);
                Box::new(file)
            }
            Err(e) => {
                return failed(format_args!("cannot write {}: {e}", path.display()));
            }
        },
    };
    if let Encode::Csv = encode {
        let mut header = Vec::new();
        crate::csv::write_header(&mut header);
        if let Err(e) = out.write_all(&header) {
            return failed(format_args!("writing the output: {e}"));
        }
    }
    let written = Arc::new(AtomicU64::new(0));
    let sink = ExportSink {
        out,
        encode,
        from,
        to,
        written: written.clone(),
    };
    let slot = SinkSlot::new(
        SinkConfig {
            name: "export".into(),
            // Written through, as a stdout sink: the export's own sink, no settings of its own.
            kind: SinkKind::parse("stdout").expect("stdout is a kind"),
            sources: None,
            include_raw: true,
            format: Format::default(),
            queue_max_bytes: crate::sinks::config::QUEUE_MAX_BYTES,
            batch_max_age: std::time::Duration::ZERO,
            settings: crate::sinks::stdout::Settings.into(),
        },
        Box::new(sink),
        None,
    );
    let http = match Http::new(cfg.agent.request_timeout) {
        Ok(h) => h,
        Err(e) => return failed(format_args!("cannot build the HTTP client: {e}")),
    };
    let cancel = CancellationToken::new();
    crate::signals::spawn_signal_handler(cancel.clone());
    let health = crate::health::Health::default().register(&source.name);
    // The window is read into the temporary state's queue and written out by the sink's task
    // as it is read, the way the agent delivers.
    let done = CancellationToken::new();
    let drained = tokio::spawn(crate::sinks::drain::drain(
        slot.clone(),
        crate::sinks::drain::DrainCx {
            state: state.clone(),
            retry: cfg.agent.retry.clone(),
            sources_done: Some(done.clone()),
            cancel: cancel.clone(),
            lease: None,
        },
    ));
    // Paced as the agent paces it (its ceiling, the vendor's 429s and Retry-After).
    let paces = sources::pace::Paces::default();
    paces.configure(std::slice::from_ref(&source));
    let paced = paces.paced(&source);
    let mut poller = Poller::new(
        source.clone(),
        sources::build(&source, http.paced(paced.clone())),
        state,
        vec![slot],
        cfg.agent.retry.clone(),
        cancel,
        health,
    )
    .end_at(to)
    .paced(paced);
    let polled = poller.poll().await;
    done.cancel();
    let written_out = drained.await;
    let failure = match (polled, written_out) {
        (Err(e), _) => Some(format!("the window could not be read completely ({e})")),
        (Ok(_), Ok(crate::sinks::drain::Drained::Empty)) => None,
        (Ok(_), Ok(d)) => Some(format!("the events could not be written out ({d:?})")),
        (Ok(_), Err(e)) => Some(format!("the events could not be written out ({e})")),
    };
    if let Some(why) = failure {
        return failed(format_args!(
            "{}: {why}; {}",
            source.name,
            match &args.output {
                Some(p) => format!("{} was not written", p.display()),
                None => "what stdout received is incomplete".into(),
            }
        ));
    }
    if let Some(p) = partial {
        if let Err(e) = p.commit() {
            return failed(format_args!("cannot write the output: {e}"));
        }
    }
    eprintln!(
        "exported {} events of {} in [{}, {})",
        written.load(Ordering::Relaxed),
        source.name,
        timefmt::rfc3339_ms(from),
        timefmt::rfc3339_ms(to)
    );
    ExitCode::SUCCESS
}
