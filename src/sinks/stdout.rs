//! `kind = "stdout"`: one record per line (native JSON by default) on standard output. At-least-once: a crash between the write
//! and the commit repeats the page, and the stable `id` lets a reader drop the repeat.

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::{Sink, SinkError};
use crate::encodings::Writer;
use crate::event::Event;
use crate::BoxFuture;

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
