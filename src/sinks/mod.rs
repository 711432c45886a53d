//! Sinks: where delivered events go, behind one small trait. The poller hands a sink a page of
//! new events, then commits; a sink with a position (the file) has it recorded in that commit.
//!
//! One file per kind (`stdout`, `file`, `http`, `syslog`), opened by the one `match` in [`open`]. A sink
//! frames records; what goes inside a frame is the sink's `format`, written by an
//! [`encodings::Writer`](crate::encodings::Writer) it is handed.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{RetryConfig, SinkConfig, SinkKind};
use crate::encodings::Writer;
use crate::event::Event;
use crate::health::SinkHealth;
use crate::state::{SinkPosition, State};
use crate::BoxFuture;

pub mod file;
pub mod http;
pub mod stdout;
pub mod syslog;

/// Why a sink could not take a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {sink}: {msg}")]
    Io { sink: String, msg: String },
    /// The path holds a file that is not the sink's own: nothing is written to it.
    #[error("sink {sink}: {msg}")]
    NotOurs { sink: String, msg: String },
    #[error("sink {sink}: delivery cancelled by shutdown")]
    Cancelled { sink: String },
    /// The receiver refused a batch for good (a 4xx other than 408/429); nothing is committed.
    #[error("sink {sink}: the receiver refused the batch with HTTP {status} (not retried; fix the sink's url, headers or credentials): {detail}")]
    Rejected {
        sink: String,
        status: u16,
        detail: String,
    },
}

/// A destination for events.
pub trait Sink: Send {
    /// Delivers a batch. On error nothing of the batch counts as delivered, and the sink has
    /// undone what it could of a partial write.
    fn deliver<'a>(
        &'a mut self,
        events: &'a [Event],
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), SinkError>>;

    /// What must still happen after `deliver` before the page may commit, awaited by the
    /// poller once it has given the sink back (other sources deliver meanwhile): Splunk's
    /// acknowledgements with `hec_ack`. A sink that returns one keeps no position, and gets no
    /// `committed` or `rollback` for that page: its commits need not follow its writes. If it
    /// fails, or is never awaited, the page is not committed and is delivered again.
    fn settle<'a>(
        &mut self,
        _events: &'a [Event],
        _cancel: &'a CancellationToken,
    ) -> Option<BoxFuture<'a, Result<(), SinkError>>> {
        None
    }

    /// The position to record in the commit that follows a delivery, if this sink keeps one.
    fn position(&self) -> Option<SinkPosition> {
        None
    }

    /// The commit after the last delivery succeeded.
    fn committed(&mut self) {}

    /// Where a sink that retries inside a delivery reports each failed attempt.
    fn watch(&mut self, _health: SinkHealth) {}

    /// The commit after the last delivery failed: undo the delivery where possible.
    fn rollback(&mut self) {}
}

/// How many pages may be read for one sink and not yet committed to it, across all the sources
/// it takes. A poller holds one of these permits from the request for a page until that page is
/// committed: so while the receiver is down (its delivery retried) or slow, at most this many
/// pages wait in memory for it and the other sources ask their vendors for nothing, instead of
/// every source holding a page it cannot deliver. Sixteen pages in flight keep a sink busy
/// behind vendors that take a second or more to answer.
pub const PAGES_IN_FLIGHT: usize = 16;

/// A configured sink, shared by the pollers of the sources it takes. The mutex is held from
/// delivery through commit, so that commits of one sink happen in the order of its writes.
pub struct SinkSlot {
    pub config: SinkConfig,
    pub sink: tokio::sync::Mutex<Box<dyn Sink>>,
    /// Permits for pages read and not yet committed ([`PAGES_IN_FLIGHT`]).
    pages: Arc<tokio::sync::Semaphore>,
    /// `--once` only: why a delivery failed earlier in this run. The sink is not tried again
    /// until the next run: the run exits 1 either way, and a retry cycle for every source
    /// (one after the other, behind the sink's lock) would make a cron job late by that many.
    failed: Option<std::sync::OnceLock<String>>,
    /// Each delivery's outcome, for `/readyz` and `auditship_sink_up`.
    pub health: SinkHealth,
}

impl SinkSlot {
    /// A sink shared by the pollers of its sources; `once` for a run that must end.
    pub fn new(config: SinkConfig, mut sink: Box<dyn Sink>, once: bool) -> Arc<SinkSlot> {
        let health = SinkHealth::default();
        sink.watch(health.clone());
        Arc::new(SinkSlot {
            health,
            config,
            sink: tokio::sync::Mutex::new(sink),
            pages: Arc::new(tokio::sync::Semaphore::new(PAGES_IN_FLIGHT)),
            failed: once.then(std::sync::OnceLock::new),
        })
    }

    /// `--once`: the error for a page this sink is not tried with, having failed earlier.
    pub fn failed_earlier(&self) -> Option<SinkError> {
        let why = self.failed.as_ref()?.get()?;
        Some(SinkError::Io {
            sink: self.config.name.clone(),
            msg: format!("not tried again in this run, it failed earlier: {why}"),
        })
    }

    /// A delivery failed: in `--once`, a failure of the sink itself (unreachable after its
    /// retries, a full disk, credentials or URL refused) means it is not tried again. A page
    /// refused for its content (a 400 for a field of the wrong type, say) is that page's: the
    /// other sources' pages are still tried.
    pub fn note_failure(&self, e: &SinkError) {
        let Some(failed) = &self.failed else {
            return;
        };
        let why = match e {
            SinkError::Cancelled { .. } => return,
            SinkError::Io { msg, .. } | SinkError::NotOurs { msg, .. } => msg.clone(),
            SinkError::Rejected { status, detail, .. } if sink_wide(*status) => {
                format!("HTTP {status}: {detail}")
            }
            SinkError::Rejected { .. } => return,
        };
        let _ = failed.set(why);
    }

    /// Waits for a place for one more page, held until the [`PagePermit`] is dropped; each
    /// change shows in `auditship_sink_pages_in_flight`.
    pub async fn page(self: &Arc<SinkSlot>) -> PagePermit {
        let permit = self
            .pages
            .clone()
            .acquire_owned()
            .await
            .expect("the page semaphore is never closed");
        self.report_pages();
        PagePermit {
            permit: Some(permit),
            slot: self.clone(),
        }
    }

    fn report_pages(&self) {
        let n = PAGES_IN_FLIGHT - self.pages.available_permits();
        crate::metrics::sink_pages_in_flight(&self.config.name, n);
    }
}

/// Whether a refusal with this status is the receiver's about every page, not one page's
/// content: credentials (401, 403, 407) or the URL (404, 405).
fn sink_wide(status: u16) -> bool {
    matches!(status, 401 | 403 | 404 | 405 | 407)
}

/// A page's place in a sink, from the request for the page until its commit.
pub struct PagePermit {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    slot: Arc<SinkSlot>,
}

impl Drop for PagePermit {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.slot.report_pages();
    }
}

/// Opens a sink (a sink with a position reads it from, and records it in, `state`); `retry` is the
/// agent's backoff, which the HTTP sink uses without a limit on attempts, except in `--once`
/// (`once`), where a run must end: there it gives up after `retry_max_attempts`.
pub async fn open(
    cfg: &SinkConfig,
    state: &State,
    retry: &RetryConfig,
    once: bool,
) -> Result<Arc<SinkSlot>, SinkError> {
    let writer = Writer {
        format: cfg.format.clone(),
        include_raw: cfg.include_raw,
    };
    // One line per kind; each kind is one file.
    let sink: Box<dyn Sink> = match &cfg.kind {
        SinkKind::Stdout => Box::new(stdout::Stdout::new(writer)),
        SinkKind::File {
            path,
            fsync,
            mode,
            rotate,
        } => Box::new(
            file::FileSink::open(
                &cfg.name,
                path.clone(),
                *fsync,
                *mode,
                *rotate,
                writer,
                state.clone(),
            )
            .await?,
        ),
        SinkKind::Http(h) => Box::new(http::HttpSink::new(&cfg.name, h, writer, retry, once)?),
        SinkKind::Syslog(s) => {
            Box::new(syslog::SyslogSink::new(&cfg.name, s, writer, retry, once)?)
        }
    };
    Ok(SinkSlot::new(cfg.clone(), sink, once))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(once: bool) -> Arc<SinkSlot> {
        let config = SinkConfig {
            name: "siem".into(),
            kind: SinkKind::Stdout,
            sources: None,
            include_raw: true,
            format: crate::encodings::Format::default(),
        };
        SinkSlot::new(
            config,
            Box::new(stdout::Stdout::new(Writer::default())),
            once,
        )
    }

    fn rejected(status: u16) -> SinkError {
        SinkError::Rejected {
            sink: "siem".into(),
            status,
            detail: "no".into(),
        }
    }

    /// In `--once`, the sink's own failures stop it for the run; a page refused for its
    /// content, shutdown, and anything in the daemon do not.
    #[test]
    fn only_a_failure_of_the_sink_itself_stops_it_for_the_run() {
        for e in [
            rejected(400),
            rejected(409),
            rejected(413),
            rejected(422),
            SinkError::Cancelled {
                sink: "siem".into(),
            },
        ] {
            let s = slot(true);
            s.note_failure(&e);
            assert!(s.failed_earlier().is_none(), "{e}");
        }
        for e in [
            rejected(401),
            rejected(403),
            rejected(404),
            SinkError::Io {
                sink: "siem".into(),
                msg: "gave up after 3 attempts: connection refused".into(),
            },
        ] {
            let s = slot(true);
            s.note_failure(&e);
            let again = s.failed_earlier().expect("stopped for the run").to_string();
            assert!(again.contains("not tried again in this run"), "{again}");
            let daemon = slot(false);
            daemon.note_failure(&e);
            assert!(daemon.failed_earlier().is_none(), "{e}");
        }
    }
}
