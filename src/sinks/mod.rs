//! Sinks: where delivered events go, behind one small trait. The pollers commit each page's new
//! events into a queue per sink ([`queue`]); each sink's task ([`drain`]) hands the sink a batch
//! of its queue, then removes the batch from the queue in the commit that records the sink's
//! position (the file's).
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

pub mod drain;
pub mod file;
pub mod http;
pub mod queue;
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

    /// What must still happen after `deliver` before the batch may leave the sink's queue,
    /// awaited by the sink's task: Splunk's acknowledgements with `hec_ack`. If it fails, the
    /// batch stays queued and is delivered again.
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

/// A configured sink: its config, the sink itself (used by its task, and by a poller writing
/// through to an idle local sink), its queue as the pollers and its task share it, and its
/// health.
pub struct SinkSlot {
    pub config: SinkConfig,
    pub sink: tokio::sync::Mutex<Box<dyn Sink>>,
    pub queue: queue::SinkQueue,
    /// Each delivery's outcome, for `/readyz` and `auditship_sink_up`.
    pub health: SinkHealth,
}

impl SinkSlot {
    /// A sink whose queue holds `queued` (what the state holds for it).
    pub fn new(
        config: SinkConfig,
        mut sink: Box<dyn Sink>,
        queued: Option<&crate::state::QueueTotals>,
    ) -> Arc<SinkSlot> {
        let health = SinkHealth::default();
        sink.watch(health.clone());
        Arc::new(SinkSlot {
            health,
            queue: queue::SinkQueue::new(&config.name, config.queue_max_bytes, queued),
            config,
            sink: tokio::sync::Mutex::new(sink),
        })
    }

    /// Whether a poller may hand this sink a page itself while the sink is idle and its queue
    /// empty (a local file or stdout: writing costs less than queueing).
    pub fn write_through(&self) -> bool {
        matches!(self.config.kind, SinkKind::File { .. } | SinkKind::Stdout)
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
    queued: Option<&crate::state::QueueTotals>,
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
    Ok(SinkSlot::new(cfg.clone(), sink, queued))
}
