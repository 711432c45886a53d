//! Sinks: where delivered events go, behind one small trait. The pollers commit each page's new
//! events into a queue per sink ([`queue`]); each sink's task ([`drain`]) hands the sink a batch
//! of its queue, then removes the batch from the queue in the commit that records the sink's
//! position (the file's).
//!
//! A destination is a plugin: one folder per kind (`stdout`, `file`, `http`, `syslog`, `otlp`, `kafka`,
//! `secops`, `sentinel`, `s3`), whose
//! type implements [`Destination`] — its kind name, its own `[[sinks]]` keys (a serde struct in
//! its `config.rs`) and their validation into its settings type — and whose settings type
//! implements [`Configured`]: how to open its [`Sink`] and how `check --connect` probes its
//! receiver. The `sinks!` registry lists them, one line each ([`DESTINATIONS`],
//! [`SinkSettings`]); nothing else names a kind. A sink frames
//! records; what goes inside a frame is the sink's `format`, written by an
//! [`encodings::Writer`](crate::encodings::Writer) it is handed.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::encodings::Writer;
use crate::event::Event;
use crate::health::SinkHealth;
use crate::retry::RetryConfig;
use crate::sinks::config::{SinkCheck, SinkConfig};
use crate::state::{SinkPosition, State};
use crate::BoxFuture;
use std::time::Duration;

pub mod config;
pub mod drain;
pub mod file;
pub mod http;
pub mod kafka;
pub mod otlp;
pub mod queue;
pub mod s3;
pub mod secops;
pub mod sentinel;
pub mod stdout;
pub mod syslog;

/// Registers destinations, one line each (`Variant: module::Kind => Settings`): [`DESTINATIONS`],
/// every kind of sink, and [`SinkSettings`], a destination's validated settings as its own type.
macro_rules! sinks {
    ($($variant:ident: $module:ident::$kind:ident => $settings:ident),* $(,)?) => {
        /// Every kind of sink, as `kind = "…"` names it: the one place where kinds are
        /// registered.
        pub static DESTINATIONS: &[&dyn Destination] = &[$(&$module::$kind),*];

        /// A destination's validated settings (what its plugin read of its own keys), kept in
        /// [`SinkConfig`]: one variant a kind, each its folder's settings type (shared: a
        /// config is cloned for each task that uses it).
        #[derive(Debug, Clone, PartialEq)]
        pub enum SinkSettings {
            $($variant(Arc<$module::$settings>)),*
        }

        impl SinkSettings {
            /// What the settings open, probe and say.
            pub fn configured(&self) -> &dyn Configured {
                match self {
                    $(SinkSettings::$variant(s) => &**s),*
                }
            }
        }

        $(impl From<$module::$settings> for SinkSettings {
            fn from(s: $module::$settings) -> SinkSettings {
                SinkSettings::$variant(Arc::new(s))
            }
        })*
    };
}

sinks! {
    Stdout: stdout::StdoutKind => Settings,
    File: file::FileKind => FileSettings,
    Http: http::HttpKind => HttpSinkConfig,
    Syslog: syslog::SyslogKind => SyslogSinkConfig,
    Otlp: otlp::OtlpKind => OtlpSinkConfig,
    Kafka: kafka::KafkaKind => KafkaSinkConfig,
    Secops: secops::SecopsKind => SecopsConfig,
    Sentinel: sentinel::SentinelKind => SentinelConfig,
    S3: s3::S3Kind => S3Config,
}

/// Everything the agent knows of one kind of sink, besides its [`Sink`]'s delivering.
pub trait Destination: Sync {
    /// `kind = "…"` in `[[sinks]]`.
    fn kind(&self) -> &'static str;
    /// What it is, for people: "a syslog receiver (RFC 5424)".
    fn title(&self) -> &'static str;
    /// The keys of its own section of `[[sinks]]` (its section struct's
    /// [`Section::KEYS`](crate::settings::Section::KEYS)), besides the ones every sink takes.
    fn options(&self) -> &'static [&'static str];
    /// Those of its keys that hold secrets (its section struct's
    /// [`Section::SECRETS`](crate::settings::Section::SECRETS), known by their types): a
    /// `${NAME}` in one is not needed by `state`, which reads no secrets.
    fn secrets(&self) -> &'static [&'static str];
    /// Reads and validates its own keys (`c.section()`), reporting every problem on `c`;
    /// `None` when they cannot be used.
    fn settings(&self, c: &mut SinkCheck<'_, '_>) -> Option<SinkSettings>;
    /// `batch_max_age` when it is not set: how long a small batch waits for more.
    fn batch_max_age(&self) -> Duration {
        Duration::ZERO
    }
    /// The kind's own key that takes `batch_max_age`'s place (an S3 object's
    /// `max_object_age`, which may be longer than the minute `batch_max_age` allows); the
    /// kind then refuses `batch_max_age`.
    fn batch_max_age_key(&self) -> Option<&'static str> {
        None
    }
    /// Whether a poller may hand this sink a page itself while the sink is idle and its queue
    /// empty (local and cheap: writing costs less than queueing).
    fn write_through(&self) -> bool {
        false
    }
}

/// What a destination's validated settings (its own keys, credentials among them) open and
/// say: each kind's settings type, held in [`SinkConfig`] as its variant of [`SinkSettings`],
/// so a sink is opened from its settings' own type and never from a guess at it. `cfg` is the
/// entry the settings are part of (its name, format and the keys every sink takes).
pub trait Configured: Sync {
    /// Opens the sink of a validated entry of its kind.
    fn open<'a>(
        &'a self,
        cfg: &'a SinkConfig,
        cx: OpenCx<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Sink>, SinkError>>;
    /// `check --connect`: whether the receiver answers (and takes the credentials), without
    /// delivering anything.
    fn probe<'a>(&'a self, cfg: &'a SinkConfig, retry: &'a RetryConfig) -> BoxFuture<'a, Probe>;
    /// What the kind's own [`Destination::batch_max_age_key`] says.
    fn own_batch_max_age(&self) -> Option<Duration> {
        None
    }
    /// Most events and bytes one delivery takes from the sink's queue (a page larger than
    /// that goes alone, whole).
    fn take_limits(&self, _cfg: &SinkConfig) -> (u64, u64) {
        (1000, 1 << 20)
    }
    /// What the sink owns that no other sink of its kind may (a file sink's path): the option
    /// and its value.
    fn claims(&self, _cfg: &SinkConfig) -> Option<(&'static str, String)> {
        None
    }
    /// Why the sink would refuse to start with what the state recorded of it (`check` says
    /// so before `run` does): a file sink whose path holds another file.
    fn preflight(&self, _cfg: &SinkConfig, _recorded: &SinkPosition) -> Option<String> {
        None
    }
    /// Warnings about a valid entry (credentials sent in clear).
    fn warnings(&self, _cfg: &SinkConfig) -> Vec<String> {
        Vec::new()
    }
}

/// A sink of a kind that reaches a receiver over the network: built from its entry alone (no
/// connection yet), and probed by `check --connect`. Its settings' `open` and `probe` are then
/// [`open_built`] and [`probe_built`].
pub trait Reaches: Sink + Sized + 'static {
    /// Its kind's settings.
    type Settings;
    /// The sink of a validated entry (`settings`: its kind's part of `cfg`).
    fn build(
        cfg: &SinkConfig,
        settings: &Self::Settings,
        retry: &RetryConfig,
        once: bool,
    ) -> Result<Self, SinkError>;
    /// Whether its receiver answers (and takes the credentials), without delivering anything.
    fn reach(&self) -> impl std::future::Future<Output = Probe> + Send + '_;
}

/// [`Configured::open`] of a kind whose sink [`Reaches`].
pub fn open_built<'a, S: Reaches>(
    cfg: &'a SinkConfig,
    settings: &S::Settings,
    cx: OpenCx<'a>,
) -> BoxFuture<'a, Result<Box<dyn Sink>, SinkError>> {
    let sink = S::build(cfg, settings, cx.retry, cx.once);
    Box::pin(async move { Ok(Box::new(sink?) as Box<dyn Sink>) })
}

/// [`Configured::probe`] of a kind whose sink [`Reaches`]: a sink that cannot be built (a TLS
/// file unreadable, say) is a failed probe saying why.
pub fn probe_built<'a, S: Reaches>(
    cfg: &'a SinkConfig,
    settings: &S::Settings,
    retry: &'a RetryConfig,
) -> BoxFuture<'a, Probe> {
    let sink = S::build(cfg, settings, retry, true);
    Box::pin(async move {
        match sink {
            Ok(sink) => sink.reach().await,
            Err(e) => Probe {
                ok: false,
                said: e.to_string(),
            },
        }
    })
}

/// What opening a sink may use: the state (a sink keeping a position reads it from, and
/// records it in, the state), the agent's backoff, and whether the run is `--once`.
#[derive(Clone, Copy)]
pub struct OpenCx<'a> {
    pub state: &'a State,
    pub retry: &'a RetryConfig,
    pub once: bool,
}

/// What `check --connect` found of a sink's receiver: `ok` and a line for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub ok: bool,
    pub said: String,
}

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
        self.config.kind.destination().write_through()
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
    let cx = OpenCx { state, retry, once };
    let sink = cfg.settings.configured().open(cfg, cx).await?;
    Ok(SinkSlot::new(cfg.clone(), sink, queued))
}

/// The writer of a sink's records: its `format`, and whether the vendor's event goes along.
pub fn writer(cfg: &SinkConfig) -> Writer {
    Writer {
        format: cfg.format.clone(),
        include_raw: cfg.include_raw,
    }
}
