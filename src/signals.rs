//! Shutdown by signal, for every command that runs until told to stop (`run`, `export`,
//! `simulate`, `demo`): its own module, so that none of them imports another for it.

use tokio_util::sync::CancellationToken;

/// Cancels `cancel` on SIGTERM or SIGINT; a second signal exits at once.
pub fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut got = 0;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            got += 1;
            if got == 1 {
                tracing::info!("shutting down: finishing the pages in flight");
                cancel.cancel();
            } else {
                tracing::warn!("second signal: exiting now; uncommitted pages will be read again");
                std::process::exit(130);
            }
        }
    });
}
