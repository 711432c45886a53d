//! `kind = "stdout"`: native NDJSON on standard output. At-least-once: a crash between the write
//! and the commit repeats the page, and the stable `id` lets a reader drop the repeat.

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::{Sink, SinkError};
use crate::event::Event;
use crate::sources::BoxFuture;

pub struct Stdout {
    include_raw: bool,
    buf: Vec<u8>,
    out: tokio::io::Stdout,
}

impl Stdout {
    pub fn new(include_raw: bool) -> Stdout {
        Stdout {
            include_raw,
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
            super::encode_ndjson(events, self.include_raw, &mut self.buf);
            let io = |e: std::io::Error| SinkError::Io {
                sink: "stdout".into(),
                msg: e.to_string(),
            };
            self.out.write_all(&self.buf).await.map_err(io)?;
            self.out.flush().await.map_err(io)
        })
    }
}
