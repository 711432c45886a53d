//! The `auditship` binary: parse the command line, set up logging, hand over to `cli`.

use std::process::ExitCode;

use auditship::cli::{self, Cli, Command};
use clap::Parser;

fn main() -> ExitCode {
    let args = Cli::parse();
    auditship::init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
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
            Command::Simulate(sim) => cli::simulate(sim).await,
            Command::Demo { events, duration } => cli::demo(events, duration).await,
        }
    })
}
