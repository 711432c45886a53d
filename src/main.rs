//! The `auditship` binary: parse the command line, set up logging, hand over to `cli`.

use std::process::ExitCode;

use auditship::cli::{self, Cli, Command};
use clap::Parser;

fn main() -> ExitCode {
    let args = Cli::parse();
    if !matches!(args.command, Command::Simulate(_)) {
        one_malloc_arena();
    }
    ignore_sigxfsz();
    if let Err(e) = auditship::log_format() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    auditship::init_logging();
    // The agent's tasks run on one thread: its sources take turns (a page is read in a few ms),
    // file writes, gzip and SQLite have threads of their own, and no task wakes another across
    // threads, which cost 4–12% of a backfill's CPU on two workers (README "Performance"). The
    // emulator, which serves many connections at once, gets two workers.
    let mut builder = match args.command {
        Command::Simulate(_) | Command::Demo { .. } => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        match args.command {
            Command::Run { config, once } => cli::run(&config, once).await,
            Command::Check { config, connect } => cli::check(&config, connect).await,
            Command::State {
                config: Some(config),
                json,
                action,
            } => cli::state(&config, json, action).await,
            Command::State { config: None, .. } => {
                eprintln!("error: the argument '--config <CONFIG>' is required");
                ExitCode::from(2)
            }
            Command::Export(args) => auditship::export::export(args).await,
            Command::Simulate(sim) => cli::simulate(sim).await,
            Command::Demo { events, duration } => cli::demo(events, duration).await,
        }
    })
}

/// One malloc arena for the whole process. glibc gives each thread that allocates its own arena
/// (up to eight per core), and memory freed in one stays resident there: for the agent's few
/// threads that was about 1.2 MB of an idle agent's 4 MB of anonymous memory, and 2 MB of the peak
/// of a backfill, for no measurable CPU (`benches/e2e.py`, README "Performance"). The emulator
/// (`simulate`), which serves many connections at once, keeps the default.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread is started.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// A write past the file-size limit (`RLIMIT_FSIZE`, systemd's `LimitFSIZE=`) raises SIGXFSZ,
/// whose default action kills the process without a word. Ignored, the write fails with EFBIG
/// instead, and the file sink reports it, keeps its committed data and tries again.
fn ignore_sigxfsz() {
    // SAFETY: sets the disposition of one signal to "ignore", before any thread is started;
    // no handler code runs.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}
