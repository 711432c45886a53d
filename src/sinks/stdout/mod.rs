//! `kind = "stdout"`: one record per line (native JSON by default) on standard output. At-least-once: a crash between the write
//! and the commit repeats the page, and the stable `id` lets a reader drop the repeat.

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::{Configured, Destination, OpenCx, Probe, Sink, SinkError, SinkSettings};
use crate::encodings::Writer;
use crate::event::Event;
use crate::retry::RetryConfig;
use crate::sinks::config::{SinkCheck, SinkConfig};
use crate::BoxFuture;

/// `kind = "stdout"`: it takes no keys of its own.
pub struct StdoutKind;

/// Its section: nothing.
#[derive(Debug, Default, serde::Deserialize, crate::settings::Section)]
#[serde(deny_unknown_fields)]
struct Section {}

/// Its settings: none.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings;

impl Destination for StdoutKind {
    fn kind(&self) -> &'static str {
        "stdout"
    }
    fn title(&self) -> &'static str {
        "standard output, one record per line"
    }
    fn options(&self) -> &'static [&'static str] {
        <Section as crate::settings::Section>::KEYS
    }
    fn secrets(&self) -> &'static [&'static str] {
        <Section as crate::settings::Section>::SECRETS
    }
    fn settings(&self, c: &mut SinkCheck<'_, '_>) -> Option<SinkSettings> {
        let Section {} = c.section();
        Some(Settings.into())
    }
    fn write_through(&self) -> bool {
        true
    }
}

impl Configured for Settings {
    fn open<'a>(
        &'a self,
        cfg: &'a SinkConfig,
        _cx: OpenCx<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Sink>, SinkError>> {
        Box::pin(async move { Ok(Box::new(Stdout::new(super::writer(cfg))) as Box<dyn Sink>) })
    }
    fn probe<'a>(&'a self, _cfg: &'a SinkConfig, _retry: &'a RetryConfig) -> BoxFuture<'a, Probe> {
        Box::pin(async {
            Probe {
                ok: true,
                said: "ok".into(),
            }
        })
    }
}

pub struct Stdout {
    /// The sink's format and `include_raw`.
    writer: Writer,
    buf: Vec<u8>,
    out: tokio::io::Stdout,
}

impl Stdout {
    pub fn new(writer: Writer) -> Stdout {
        Stdout {
            writer,
            buf: Vec::new(),
            out: tokio::io::stdout(),
        }
    }
}

impl Sink for Stdout {
    fn deliver<'a>(
        &'a mut self,
        events: &'a [Event],
        _cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            self.writer.lines(events, &mut self.buf);
            let io = |e: std::io::Error| SinkError::Io {
                sink: "stdout".into(),
                msg: e.to_string(),
            };
            self.out.write_all(&self.buf).await.map_err(io)?;
            self.out.flush().await.map_err(io)
        })
    }
}
