//! `kind = "file"`: native NDJSON appended to a file, exactly once across crashes.
//!
//! The file's committed length is recorded in the same SQLite transaction as the page's keys and
//! the cursor. On start the file is truncated back to it, dropping a tail written by a process
//! that died before its commit; that page is fetched and written again. A file that someone else
//! rotated or removed is recreated and written from its new end.
//!
//! Built-in rotation (`rotate_max_bytes`, `rotate_keep`) keeps that promise. The position in the
//! state is the file's generation (how often it was rotated) and its committed length, packed
//! into one number ([`pack`]). A rotation happens only at the start of a delivery that follows a
//! commit, when the file holds at least `rotate_max_bytes`: the file of generation G is renamed
//! `PATH.G`, a new file is created at `PATH` (with `mode`), the page is written to it, and the
//! commit records generation G+1 with the new length, in the same transaction as the page's keys
//! and cursor. A crash before that commit leaves the state at G: on start, a `PATH.G` that exists
//! means the rotation was not committed, so the new file (whose contents were never committed) is
//! removed and `PATH.G` renamed back to `PATH`, then truncated to the committed length as always.
//! A crash after the commit leaves a consistent G+1. With `fsync`, the directory is synced after
//! the rename, before the commit, so a power loss cannot undo a committed rename either.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Sink, SinkError};
use crate::config::Rotate;
use crate::encodings::Writer;
use crate::event::Event;
use crate::BoxFuture;

/// Bits of a position that hold the committed length; the generation is above them.
const LEN_BITS: u32 = 40;
const LEN_MASK: u64 = (1 << LEN_BITS) - 1;

/// The position recorded in the state: `generation` (rotations so far) and `len` (bytes of the
/// current file). A position from before rotation existed is generation 0.
pub fn pack(generation: u64, len: u64) -> u64 {
    (generation << LEN_BITS) | (len & LEN_MASK)
}

/// The generation and length of a position (see [`pack`]).
pub fn unpack(position: u64) -> (u64, u64) {
    (position >> LEN_BITS, position & LEN_MASK)
}

/// Where the file of generation `generation` goes when it is rotated: `PATH.N`.
pub fn rotated_path(path: &std::path::Path, generation: u64) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{generation}"));
    p.into()
}

/// Test-only crash injection: with `AUDITSHIP_TEST_CRASH_AT` set to `point`, the process aborts
/// there (no destructor, no flush: a crash as SIGKILL leaves it). The points are
/// `before_rename`, `after_rename` and `after_write` (the new file written, not committed). Not
/// for production use.
fn crash_point(point: &str) {
    if std::env::var("AUDITSHIP_TEST_CRASH_AT").is_ok_and(|v| v == point) {
        eprintln!("AUDITSHIP_TEST_CRASH_AT={point}: aborting");
        std::process::abort();
    }
}

/// Makes a rename or a creation in `path`'s directory durable.
fn sync_dir(path: &std::path::Path) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    File::open(dir)?.sync_all()
}

/// Deletes the rotated files of generations before `oldest_kept`.
fn prune(path: &std::path::Path, oldest_kept: u64) -> std::io::Result<()> {
    let (Some(dir), Some(base)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let dir = if dir.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        dir
    };
    let mut prefix = base.to_owned();
    prefix.push(".");
    let prefix = prefix.to_string_lossy().into_owned();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(g) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .filter(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|g| g.parse::<u64>().ok())
        else {
            continue;
        };
        if g < oldest_kept {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

pub struct FileSink {
    name: String,
    path: PathBuf,
    fsync: bool,
    /// Permissions of a file the sink creates.
    mode: u32,
    /// Built-in rotation, if configured.
    rotate: Option<Rotate>,
    /// Generation of the file at `path`: how often it was rotated.
    generation: u64,
    /// Generation at the last commit: below `generation` while a rotation is not committed.
    committed_generation: u64,
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
        rotate: Option<Rotate>,
        writer: Writer,
        committed: Option<u64>,
    ) -> Result<FileSink, SinkError> {
        let err = |e: std::io::Error| SinkError::Io {
            sink: name.to_string(),
            msg: format!("{}: {e}{}", path.display(), hint(&e)),
        };
        let p = path.clone();
        let sink_name = name.to_string();
        let generation = committed.map_or(0, |c| unpack(c).0);
        let committed = committed.map(|c| unpack(c).1);
        let (file, identity, len) = tokio::task::spawn_blocking(move || {
            // A rotation of this generation that was not committed: undo it.
            let renamed = rotated_path(&p, generation);
            if committed.is_some() && (rotate.is_some() || generation > 0) && renamed.exists() {
                match std::fs::remove_file(&p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                std::fs::rename(&renamed, &p)?;
                sync_dir(&p)?;
                tracing::info!(sink = %sink_name, path = %p.display(), generation,
                    "undid a rotation that was not committed; the events written after it will be written again");
            }
            let (f, id, len) = open_append(&p, mode)?;
            if let Some(r) = rotate {
                if let Err(e) = prune(&p, generation.saturating_sub(r.keep)) {
                    tracing::warn!(sink = %sink_name, path = %p.display(), error = %e,
                        "cannot delete rotated files beyond rotate_keep");
                }
            }
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
            rotate,
            generation,
            committed_generation: generation,
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
    /// The file was rotated (and `reopened` is the new one).
    rotated: bool,
    result: std::io::Result<()>,
}

/// Renames the file of `generation` at `path` to `PATH.generation` and creates a new one.
fn rotate_file(
    path: &std::path::Path,
    generation: u64,
    mode: u32,
    fsync: bool,
) -> std::io::Result<(File, (u64, u64), u64)> {
    crash_point("before_rename");
    let renamed = rotated_path(path, generation);
    std::fs::rename(path, &renamed)?;
    crash_point("after_rename");
    let opened = open_append(&path.to_path_buf(), mode).and_then(|o| {
        if fsync {
            sync_dir(path)?;
        }
        Ok(o)
    });
    if opened.is_err() {
        // Put the file back; if that fails too, the next start does it.
        let _ = std::fs::rename(&renamed, path);
    }
    opened
}

impl Sink for FileSink {
    fn deliver<'a>(
        &'a mut self,
        events: &'a [Event],
        _cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            self.writer.lines(events, &mut self.buf);
            if self.len + self.buf.len() as u64 > LEN_MASK {
                return Err(self.io(std::io::Error::other(
                    "the file would pass 1 TiB, the most the state records: set rotate_max_bytes",
                )));
            }
            let buf = std::mem::take(&mut self.buf);
            // Rotate only right after a commit: the file then holds committed events alone.
            let rotate_now = self.rotate.is_some_and(|r| self.len >= r.max_bytes)
                && self.generation == self.committed_generation
                && self.len == self.committed;
            let (file, identity, path, fsync, mode, len, generation) = (
                self.file.clone(),
                self.identity,
                self.path.clone(),
                self.fsync,
                self.mode,
                self.len,
                self.generation,
            );
            let (buf, written) = tokio::task::spawn_blocking(move || {
                // Rotated or removed by someone else? Then write to a new file at its path.
                let mut reopened = None;
                let mut rotated = false;
                let same = std::fs::metadata(&path)
                    .map(|m| (m.dev(), m.ino()) == identity)
                    .unwrap_or(false);
                let (file, start) = if same && !rotate_now {
                    (file, len)
                } else {
                    // Our own rotation, or a new file where someone else's went.
                    rotated = same;
                    let opened = if same {
                        rotate_file(&path, generation, mode, fsync)
                    } else {
                        open_append(&path, mode)
                    };
                    match opened {
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
                                    rotated: false,
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
                } else if rotated {
                    crash_point("after_write");
                }
                (
                    buf,
                    Written {
                        reopened,
                        rotated,
                        result,
                    },
                )
            })
            .await
            .map_err(|e| self.io(std::io::Error::other(e)))?;
            let n = buf.len() as u64;
            self.buf = buf;
            if let Some((f, id, l)) = written.reopened {
                if written.rotated {
                    tracing::info!(sink = %self.name, path = %self.path.display(),
                        rotated_to = %rotated_path(&self.path, self.generation).display(),
                        bytes = self.len, "rotated the file");
                    self.generation += 1;
                } else {
                    tracing::warn!(sink = %self.name, path = %self.path.display(),
                        "file was rotated or removed; writing to a new one");
                    self.committed = l;
                }
                self.file = f;
                self.identity = id;
                self.len = l;
            }
            written.result.map_err(|e| self.io(e))?;
            self.len += n;
            Ok(())
        })
    }

    fn position(&self) -> Option<u64> {
        Some(pack(self.generation, self.len))
    }

    fn committed(&mut self) {
        self.committed = self.len;
        if self.generation != self.committed_generation {
            self.committed_generation = self.generation;
            // The rotation is committed: the oldest rotated file beyond `rotate_keep` goes.
            if let Some(r) = self.rotate {
                if let Some(old) = self.generation.checked_sub(r.keep + 1) {
                    let old = rotated_path(&self.path, old);
                    match std::fs::remove_file(&old) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            tracing::warn!(sink = %self.name, path = %old.display(), error = %e,
                                "cannot delete a rotated file beyond rotate_keep");
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn rollback(&mut self) {
        // A rotation not committed stays done in memory, with nothing of the new file
        // committed; the state still says the old generation, which a restart goes back to.
        let keep = if self.generation == self.committed_generation {
            self.committed
        } else {
            0
        };
        if let Err(e) = self.file.set_len(keep) {
            tracing::error!(sink = %self.name, error = %e, "could not truncate after a failed commit");
        }
        self.len = keep;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A position from before rotation existed is generation 0 with its length; packing
    /// round-trips at the limits.
    #[test]
    fn positions_pack_a_generation_and_a_length() {
        assert_eq!(unpack(12_345), (0, 12_345));
        for (g, len) in [(0, 0), (1, 0), (7, LEN_MASK), (1 << 20, 42)] {
            assert_eq!(unpack(pack(g, len)), (g, len));
        }
        assert_eq!(
            rotated_path(std::path::Path::new("/var/log/a.ndjson"), 3),
            PathBuf::from("/var/log/a.ndjson.3")
        );
    }
}
