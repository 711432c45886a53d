//! `kind = "file"`: native NDJSON appended to a file, exactly once across crashes.
//!
//! The file's committed length is recorded in the same SQLite transaction as the page's keys and
//! the cursor. On start the file is truncated back to it, dropping a tail written by a process
//! that died before its commit; that page is fetched and written again. A file that someone else
//! rotated or removed is recreated and written from its new end.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Sink, SinkError};
use crate::encodings::Writer;
use crate::event::Event;
use crate::BoxFuture;

pub struct FileSink {
    name: String,
    path: PathBuf,
    fsync: bool,
    /// Permissions of a file the sink creates.
    mode: u32,
    /// The sink's format and `include_raw`.
    writer: Writer,
    file: Arc<File>,
    /// (device, inode) of the open file, to notice rotation.
    identity: (u64, u64),
    /// Length after the last successful write.
    len: u64,
    /// Length at the last commit.
    committed: u64,
    buf: Vec<u8>,
}

/// Opens `path` for appending; a file it creates gets `mode` exactly, whatever the umask (a file
/// that exists keeps the mode it has).
fn open_append(path: &PathBuf, mode: u32) -> std::io::Result<(File, (u64, u64), u64)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let f = match OpenOptions::new()
        .create_new(true)
        .append(true)
        .mode(mode)
        .open(path)
    {
        Ok(f) => {
            // The umask may have taken bits away from `mode`: set it as asked.
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            f
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            OpenOptions::new().append(true).open(path)?
        }
        Err(e) => return Err(e),
    };
    let m = f.metadata()?;
    Ok((f, (m.dev(), m.ino()), m.len()))
}

impl FileSink {
    /// Opens the file and truncates any uncommitted tail (beyond `committed`).
    pub async fn open(
        name: &str,
        path: PathBuf,
        fsync: bool,
        mode: u32,
        writer: Writer,
        committed: Option<u64>,
    ) -> Result<FileSink, SinkError> {
        let err = |e: std::io::Error| SinkError::Io {
            sink: name.to_string(),
            msg: format!("{}: {e}{}", path.display(), hint(&e)),
        };
        let p = path.clone();
        let sink_name = name.to_string();
        let (file, identity, len) = tokio::task::spawn_blocking(move || {
            let (f, id, len) = open_append(&p, mode)?;
            let len = match committed {
                Some(c) if len > c => {
                    f.set_len(c)?;
                    f.sync_all()?;
                    tracing::info!(sink = %sink_name, path = %p.display(), dropped_bytes = len - c,
                        "truncated an uncommitted tail; those events will be written again");
                    c
                }
                Some(c) if len < c => {
                    tracing::warn!(sink = %sink_name, path = %p.display(), committed = c, len,
                        "file is shorter than committed: it was rotated or replaced; appending to it");
                    len
                }
                _ => len,
            };
            Ok::<_, std::io::Error>((f, id, len))
        })
        .await
        .map_err(|e| err(std::io::Error::other(e)))?
        .map_err(err)?;
        Ok(FileSink {
            name: name.to_string(),
            path,
            fsync,
            mode,
            writer,
            file: Arc::new(file),
            identity,
            len,
            committed: len,
            buf: Vec::new(),
        })
    }

    fn io(&self, e: std::io::Error) -> SinkError {
        SinkError::Io {
            sink: self.name.clone(),
            msg: format!("{}: {e}{}", self.path.display(), hint(&e)),
        }
    }
}

/// What to do about a write error a person must fix; nothing was kept of the failed write, and
/// the same events are written again at the next poll.
fn hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
            "; the disk is full: free some space, delivery resumes from the last commit"
        }
        Some(libc::EFBIG) => {
            "; the file reached the process's file-size limit (RLIMIT_FSIZE, systemd LimitFSIZE=): rotate the file or raise the limit, delivery resumes from the last commit"
        }
        _ => "",
    }
}

/// What the blocking half of a delivery reports back.
struct Written {
    reopened: Option<(Arc<File>, (u64, u64), u64)>,
    result: std::io::Result<()>,
}

impl Sink for FileSink {
    fn deliver<'a>(
        &'a mut self,
        events: &'a [Event],
        _cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            self.writer.lines(events, &mut self.buf);
            let buf = std::mem::take(&mut self.buf);
            let (file, identity, path, fsync, mode, len) = (
                self.file.clone(),
                self.identity,
                self.path.clone(),
                self.fsync,
                self.mode,
                self.len,
            );
            let (buf, written) = tokio::task::spawn_blocking(move || {
                // Rotated or removed by someone else? Then write to a new file at its path.
                let mut reopened = None;
                let same = std::fs::metadata(&path)
                    .map(|m| (m.dev(), m.ino()) == identity)
                    .unwrap_or(false);
                let (file, start) = if same {
                    (file, len)
                } else {
                    match open_append(&path, mode) {
                        Ok((f, id, l)) => {
                            let f = Arc::new(f);
                            reopened = Some((f.clone(), id, l));
                            (f, l)
                        }
                        Err(e) => {
                            return (
                                buf,
                                Written {
                                    reopened,
                                    result: Err(e),
                                },
                            );
                        }
                    }
                };
                let mut result = (&*file).write_all(&buf);
                if result.is_ok() && fsync {
                    result = file.sync_data();
                }
                if result.is_err() {
                    // Leave no partial line behind.
                    let _ = file.set_len(start);
                }
                (buf, Written { reopened, result })
            })
            .await
            .map_err(|e| self.io(std::io::Error::other(e)))?;
            let n = buf.len() as u64;
            self.buf = buf;
            if let Some((f, id, l)) = written.reopened {
                tracing::warn!(sink = %self.name, path = %self.path.display(),
                    "file was rotated or removed; writing to a new one");
                self.file = f;
                self.identity = id;
                self.len = l;
                self.committed = l;
            }
            written.result.map_err(|e| self.io(e))?;
            self.len += n;
            Ok(())
        })
    }

    fn position(&self) -> Option<u64> {
        Some(self.len)
    }

    fn committed(&mut self) {
        self.committed = self.len;
    }

    fn rollback(&mut self) {
        if let Err(e) = self.file.set_len(self.committed) {
            tracing::error!(sink = %self.name, error = %e, "could not truncate after a failed commit");
        }
        self.len = self.committed;
    }
}
