//! `kind = "file"`: native NDJSON appended to a file, exactly once across crashes, and never into
//! a file that is not the sink's own.
//!
//! The file's committed length is recorded in the same SQLite transaction as the page's keys and
//! the cursor, together with which file it is: its device and inode, and a hash of its last bytes
//! before that length ([`FileMark`]). On start the file is truncated back to the committed length,
//! dropping a tail written by a process that died before its commit; that page is fetched and
//! written again. That truncation, and every write, happens only to a file proven to be the
//! sink's own:
//! - the recorded device and inode, or a copy of the recorded file (a restore, a move to another
//!   disk: the same bytes before the committed length), is the sink's file;
//! - a missing path, or an empty file there (another tool rotated ours away and created it), is
//!   started afresh, and recorded as the sink's file *before* anything is written to it, so a
//!   crash before the next commit finds it the sink's own;
//! - anything else (the sink pointed at another tool's file, a file moved over ours) is refused:
//!   nothing is written to it or cut from it, and every delivery says why, naming the sink and
//!   the path, until the file is moved away (then a new one is started) or `path` changed.
//!
//! Built-in rotation (`rotate_max_bytes`, `rotate_keep`) keeps that promise. The position in the
//! state is the file's generation (how often it was rotated) and its committed length, packed
//! into one number ([`pack`]). A rotation happens only at the start of a delivery that follows a
//! commit, when the file holds at least `rotate_max_bytes` (all of it committed): the file of
//! generation G is renamed `PATH.G` (never over a file of that name: the rename refuses to
//! replace one), a new file is created at `PATH` (with `mode`) and recorded, like any file the
//! sink starts, before the page is written to it: generation G+1, length 0, its identity, and
//! the renamed file's. A crash after that record finds G+1 and cuts the new file's uncommitted
//! tail as always. A crash between the rename and the record leaves the state at G with
//! `PATH.G` the recorded file: on start the rename is undone (the new file, empty, removed).
//! With `fsync`, the directory is synced after the rename, before the record. Rotated files
//! beyond `rotate_keep` are deleted only if they are the very files the rotation made (their
//! recorded device and inode): a `PATH.N` of anyone else's is left alone.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub mod config;

pub use config::{FileKind, FileSettings, Rotate, ROTATE_MAX_BYTES_LIMIT};

use super::{Sink, SinkError};
use crate::encodings::Writer;
use crate::event::Event;
use crate::state::{identity, FileMark, RotatedFile, SinkPosition, State};
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

/// Bytes of the file's end that [`FileMark::tail`] hashes.
const TAIL: usize = 4096;

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
    /// The sink's format and `include_raw`.
    writer: Writer,
    /// The file written to; `None` while the path holds a file that is not the sink's own.
    file: Option<Arc<File>>,
    /// (device, inode) of the open file, to notice rotation.
    identity: (u64, u64),
    /// Length after the last successful write.
    len: u64,
    /// Length at the last commit.
    committed: u64,
    /// The file's last bytes up to `len` (at most [`TAIL`]), hashed into the position.
    tail: Vec<u8>,
    buf: Vec<u8>,
    /// Where a new file the sink starts at its path is recorded before it is written to.
    state: State,
    /// The files this sink's rotation made, by generation: (device, inode). Only these are
    /// ever deleted.
    rotated: BTreeMap<u64, (u64, u64)>,
}

/// What a file the sink refuses is, for the message.
fn describe(m: &std::fs::Metadata) -> String {
    format!("{} bytes, device {} inode {}", m.len(), m.dev(), m.ino())
}

/// The last bytes of `file` before `len` (at most [`TAIL`]).
fn read_tail(file: &File, len: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt as _;
    let n = len.min(TAIL as u64) as usize;
    let mut tail = vec![0; n];
    file.read_exact_at(&mut tail, len - n as u64)?;
    Ok(tail)
}

/// Appends `buf` to `tail`, keeping the last [`TAIL`] bytes.
fn push_tail(tail: &mut Vec<u8>, buf: &[u8]) {
    if buf.len() >= TAIL {
        tail.clear();
        tail.extend_from_slice(&buf[buf.len() - TAIL..]);
    } else {
        tail.extend_from_slice(buf);
        if tail.len() > TAIL {
            tail.drain(..tail.len() - TAIL);
        }
    }
}

/// An open file, its (device, inode) and its length.
type OpenFile = (File, (u64, u64), u64);

/// Opens `path` for appending if it is missing (created with `mode` exactly, whatever the
/// umask) or empty: a file another tool created where the sink's was (logrotate's `create`), or
/// one the sink itself left empty. `Ok(Err(why))` for a file with something in it, which is not
/// for the sink to write into.
fn open_new_or_empty(path: &Path, mode: u32) -> std::io::Result<Result<OpenFile, String>> {
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
    if m.len() > 0 {
        return Ok(Err(describe(&m)));
    }
    Ok(Ok((f, (m.dev(), m.ino()), 0)))
}

/// What to tell an operator about a file at `path` that is not the sink's own.
fn not_ours(path: &Path, found: &str, recorded: Option<&FileMark>) -> String {
    let was = match recorded {
        Some(m) => format!(
            "; the sink's own file is {} (device {} inode {}) by the state",
            m.path, m.dev, m.ino
        ),
        None => String::new(),
    };
    format!(
        "{} holds a file that is not this sink's ({found}){was}: nothing is written to it or cut \
         from it. Move that file away (the sink then starts a new one there) or set the sink's \
         path to a file that does not exist yet",
        path.display()
    )
}

/// What opening found at the path.
struct Opened {
    /// The file written to, if it is the sink's own.
    file: Option<OpenFile>,
    /// Why the file at the path is refused.
    foreign: Option<String>,
    /// The file is not the one the state records (new, adopted, or a copy): record it now.
    record: bool,
    tail: Vec<u8>,
}

impl FileSink {
    /// Opens the file and truncates any uncommitted tail (beyond `committed`), if the file at
    /// the path is the sink's own; see the module's doc for what is and what happens otherwise.
    /// `rotated` are the files its rotation made, as the state records them.
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        name: &str,
        path: PathBuf,
        fsync: bool,
        mode: u32,
        rotate: Option<Rotate>,
        writer: Writer,
        state: State,
    ) -> Result<FileSink, SinkError> {
        let err = |e: std::io::Error| SinkError::Io {
            sink: name.to_string(),
            msg: format!("{}: {e}{}", path.display(), hint(&e)),
        };
        let state_err = |e: crate::state::StateError| SinkError::Io {
            sink: name.to_string(),
            msg: e.to_string(),
        };
        let recorded = state.sink_position(name).await.map_err(state_err)?;
        let rotated: BTreeMap<u64, (u64, u64)> = state
            .sink_rotated(name)
            .await
            .map_err(state_err)?
            .into_iter()
            .map(|r| (r.generation, (r.dev, r.ino)))
            .collect();
        let p = path.clone();
        let sink_name = name.to_string();
        let generation = recorded.as_ref().map_or(0, |c| unpack(c.position).0);
        let rec = recorded.clone();
        let opened = tokio::task::spawn_blocking(move || {
            open_file(&sink_name, &p, mode, rotate, generation, rec)
        })
        .await
        .map_err(|e| err(std::io::Error::other(e)))?
        .map_err(err)?;
        let mut sink = FileSink {
            name: name.to_string(),
            path,
            fsync,
            mode,
            rotate,
            generation,
            writer,
            file: None,
            identity: (0, 0),
            len: 0,
            committed: 0,
            tail: opened.tail,
            buf: Vec::new(),
            state,
            rotated,
        };
        if let Some((f, id, len)) = opened.file {
            sink.file = Some(Arc::new(f));
            sink.identity = id;
            sink.len = len;
            sink.committed = len;
        }
        if let Some(why) = &opened.foreign {
            tracing::error!(sink = %sink.name, path = %sink.path.display(), "{why}");
        }
        if opened.record || recorded.is_none() {
            if let Some(p) = sink.position() {
                sink.state
                    .set_sink_position(name, p)
                    .await
                    .map_err(state_err)?;
            }
        }
        if let Some(r) = rotate {
            sink.prune(sink.generation.saturating_sub(r.keep));
        }
        Ok(sink)
    }

    fn io(&self, e: std::io::Error) -> SinkError {
        SinkError::Io {
            sink: self.name.clone(),
            msg: format!("{}: {e}{}", self.path.display(), hint(&e)),
        }
    }

    /// Deletes the rotated files of generations before `oldest_kept` that this sink made.
    fn prune(&mut self, oldest_kept: u64) {
        let old: Vec<u64> = self.rotated.range(..oldest_kept).map(|(g, _)| *g).collect();
        for g in old {
            let id = self.rotated.remove(&g).expect("listed");
            let p = rotated_path(&self.path, g);
            match identity(&p) {
                Some(found) if found == id => {
                    if let Err(e) = std::fs::remove_file(&p) {
                        tracing::warn!(sink = %self.name, path = %p.display(), error = %e,
                            "cannot delete a rotated file beyond rotate_keep");
                        self.rotated.insert(g, id);
                        return;
                    }
                }
                Some(_) => {
                    tracing::warn!(sink = %self.name, path = %p.display(),
                        "a rotated file beyond rotate_keep is not the one this sink made: left alone");
                }
                None => {}
            }
        }
    }
}

/// The blocking half of [`FileSink::open`].
fn open_file(
    sink: &str,
    p: &Path,
    mode: u32,
    rotate: Option<Rotate>,
    generation: u64,
    recorded: Option<SinkPosition>,
) -> std::io::Result<Opened> {
    let committed = recorded.as_ref().map(|c| unpack(c.position).1);
    let mark = recorded.as_ref().and_then(|r| r.file.clone());
    // Is the file at `at` the one the state recorded? (A state from before marks were
    // recorded knows no file: the one at the path is taken as it was before.)
    let is_recorded = |at: &Path| match &mark {
        Some(m) => identity(at) == Some((m.dev, m.ino)),
        None => true,
    };
    // A rotation of this generation that was not recorded: `PATH.G` is the recorded file, so
    // the rename happened and the agent stopped before it recorded the new file. That file, if
    // any, was never written to (the sink records a file before it writes into it): removed only
    // if it is empty, so that nothing of anyone else's goes. (A state from before files were
    // recorded knows no file, and its agent wrote the new file before its commit: as then.)
    let renamed = rotated_path(p, generation);
    let at_path_is_empty_or_missing = || {
        std::fs::metadata(p).map_or_else(
            |e| e.kind() == std::io::ErrorKind::NotFound,
            |m| m.len() == 0,
        )
    };
    if committed.is_some()
        && (rotate.is_some() || generation > 0)
        && renamed.exists()
        && is_recorded(&renamed)
        && (mark.is_none() || at_path_is_empty_or_missing())
    {
        match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::rename(&renamed, p)?;
        sync_dir(p)?;
        tracing::info!(sink, path = %p.display(), generation,
            "undid a rotation that was not committed; the events written after it will be written again");
    }
    let existing = match std::fs::metadata(p) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let Some(m) = existing else {
        // Missing: started afresh.
        if committed.is_some_and(|c| c > 0) {
            tracing::warn!(sink, path = %p.display(),
                "the file is gone (rotated or removed); starting a new one");
        }
        return Ok(match open_new_or_empty(p, mode)? {
            Ok(f) => Opened {
                file: Some(f),
                foreign: None,
                record: true,
                tail: Vec::new(),
            },
            // Created by someone else between the two looks.
            Err(found) => Opened {
                file: None,
                foreign: Some(not_ours(p, &found, mark.as_ref())),
                record: false,
                tail: Vec::new(),
            },
        });
    };
    let open = || OpenOptions::new().append(true).read(true).open(p);
    let (f, record) = match judge(p, &m, mark.as_ref(), committed)? {
        Judged::Recorded => (open()?, mark.is_none()),
        Judged::Copy => {
            tracing::info!(sink, path = %p.display(), recorded = %mark.as_ref().map_or("", |m| &m.path),
                "the file is a copy of the sink's own (the same bytes up to the committed length): writing on in it");
            (open()?, true)
        }
        Judged::Empty => {
            tracing::warn!(sink, path = %p.display(),
                "the file was emptied, or rotated or removed and an empty one created in its place; writing to it");
            (open()?, true)
        }
        Judged::Foreign(why) => {
            return Ok(Opened {
                file: None,
                foreign: Some(why),
                record: false,
                tail: Vec::new(),
            })
        }
    };
    let len = f.metadata()?.len();
    let len = match committed {
        Some(c) if len > c => {
            f.set_len(c)?;
            f.sync_all()?;
            tracing::info!(sink, path = %p.display(), dropped_bytes = len - c,
                "truncated an uncommitted tail; those events will be written again");
            c
        }
        // (Only a state from before files were recorded gets here: otherwise such a file is
        // empty, or not the sink's.)
        Some(c) if len < c && len > 0 => {
            tracing::warn!(sink, path = %p.display(), committed = c, len,
                "file is shorter than committed: it was truncated (copytruncate?); appending to it");
            len
        }
        _ => len,
    };
    let tail = read_tail(&f, len)?;
    let m = f.metadata()?;
    Ok(Opened {
        file: Some((f, (m.dev(), m.ino()), len)),
        foreign: None,
        record,
        tail,
    })
}

/// Whose the file at a sink's path is, against what the state records.
enum Judged {
    /// The recorded file; or, for a state from before files were recorded, the file at the path
    /// (as then); or a new sink's existing file (appended to, never cut below its length now).
    Recorded,
    /// Another file with the recorded file's bytes up to the committed length: a copy of it.
    Copy,
    /// An empty file in place of the recorded one, or the recorded one emptied in place
    /// (logrotate's `copytruncate`).
    Empty,
    /// Someone else's: why.
    Foreign(String),
}

fn judge(
    p: &Path,
    m: &std::fs::Metadata,
    mark: Option<&FileMark>,
    committed: Option<u64>,
) -> std::io::Result<Judged> {
    let (Some(mk), Some(c)) = (mark, committed) else {
        return Ok(Judged::Recorded);
    };
    // The bytes before the committed length are the recorded ones: the file, or a copy.
    let same_bytes = || -> std::io::Result<bool> {
        let f = File::open(p)?;
        Ok(*blake3::hash(&read_tail(&f, c)?).as_bytes() == mk.tail)
    };
    let same_inode = (m.dev(), m.ino()) == (mk.dev, mk.ino);
    // The same inode with the same bytes, or another file with them (and at least one byte, or
    // any file would be one): a copy. The same inode alone is not enough: a deleted file's
    // inode number is given to the next one.
    if m.len() >= c && (same_inode || c > 0) && same_bytes()? {
        return Ok(if same_inode {
            Judged::Recorded
        } else {
            Judged::Copy
        });
    }
    if m.len() == 0 {
        return Ok(Judged::Empty);
    }
    Ok(Judged::Foreign(not_ours(p, &describe(m), Some(mk))))
}

/// Whether a file can be made at `path` as `run` would make it (creating missing directories):
/// the nearest directory that exists must let us write. `Ok` says what was found, `Err` why not.
pub fn writable(path: &Path) -> Result<String, String> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let existing = dir
        .ancestors()
        .find(|d| d.as_os_str().is_empty() || d.exists())
        .map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        })
        .unwrap_or(Path::new("/"));
    let probe = if existing.is_dir() {
        let p = existing.join(format!(".auditship-check-{}", std::process::id()));
        File::create(&p).and_then(|_| std::fs::remove_file(&p))
    } else {
        Err(std::io::Error::other("not a directory"))
    };
    match probe {
        Ok(()) if existing == dir => Ok(format!("ok ({} is writable)", dir.display())),
        Ok(()) => Ok(format!(
            "ok ({} does not exist yet; run creates it in {}, which is writable)",
            dir.display(),
            existing.display()
        )),
        Err(e) => Err(format!("cannot write in {}: {e}", existing.display())),
    }
}

/// For `check`: why a file sink would refuse the file at `path`, given what the state records
/// for it; `None` if it would write on (or start a new file there).
pub fn refusal(path: &Path, recorded: &SinkPosition) -> std::io::Result<Option<String>> {
    let (generation, committed) = unpack(recorded.position);
    let m = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mark = recorded.file.as_ref();
    // A rotation not committed, which the next start undoes.
    if mark.is_some_and(|mk| identity(&rotated_path(path, generation)) == Some((mk.dev, mk.ino))) {
        return Ok(None);
    }
    Ok(match judge(path, &m, mark, Some(committed))? {
        Judged::Foreign(why) => Some(why),
        _ => None,
    })
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

/// Renames `from` to `to` unless `to` exists (`renameat2(RENAME_NOREPLACE)`; on a file system
/// without it, a look first, which only a racing writer can beat).
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::other("a path with a NUL byte"))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: two NUL-terminated paths that live across the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            if to.symlink_metadata().is_ok() {
                return Err(std::io::Error::from_raw_os_error(libc::EEXIST));
            }
            std::fs::rename(from, to)
        }
        _ => Err(e),
    }
}

/// Renames the file of `generation` at `path` to `PATH.generation` and creates a new one. A
/// `PATH.generation` that exists already is someone else's: refused, nothing renamed.
fn rotate_file(path: &Path, generation: u64, mode: u32, fsync: bool) -> std::io::Result<OpenFile> {
    crash_point("before_rename");
    let renamed = rotated_path(path, generation);
    rename_no_replace(path, &renamed).map_err(|e| {
        if e.raw_os_error() == Some(libc::EEXIST) {
            std::io::Error::other(format!(
                "cannot rotate: {} exists and is not this sink's (its rotation would replace it); move it away",
                renamed.display()
            ))
        } else {
            e
        }
    })?;
    crash_point("after_rename");
    let opened = open_new_or_empty(path, mode).and_then(|o| {
        let o = o.map_err(|found| {
            std::io::Error::other(format!(
                "a file appeared at the path as it was rotated ({found})"
            ))
        })?;
        if fsync {
            sync_dir(path)?;
        }
        Ok(o)
    });
    if opened.is_err() {
        // Put the file back; if that fails too, the next start does it.
        let _ = rename_no_replace(&renamed, path);
    }
    opened
}

/// What the blocking half of a delivery found at the path before writing.
enum Found {
    /// The sink's file (the page is written to it in the same call).
    Ours,
    /// A file the sink starts, recorded as its own before it is written to: `rotated`, the one
    /// its rotation made; else a new or empty file at the path (`None`: its own file, emptied
    /// in place, as logrotate's `copytruncate` does).
    Started {
        file: Option<File>,
        id: (u64, u64),
        rotated: bool,
    },
    /// Not the sink's: why.
    Foreign(String),
}

/// Looks at the path before a delivery: still the sink's file (rotated if `rotate_now`), or a
/// new one to start, or someone else's.
fn look(
    path: &Path,
    identity: Option<(u64, u64)>,
    len: u64,
    rotate_now: bool,
    generation: u64,
    mode: u32,
    fsync: bool,
) -> std::io::Result<Found> {
    let now = std::fs::metadata(path).ok();
    let same = identity.is_some() && now.as_ref().map(|m| (m.dev(), m.ino())) == identity;
    if let (true, Some(m)) = (same, &now) {
        // Shorter than the sink wrote it: cut in place by someone else. Emptied (logrotate's
        // `copytruncate`), it is started afresh; anything else in it is not the sink's.
        if m.len() < len {
            return Ok(if m.len() == 0 {
                Found::Started {
                    file: None,
                    id: (m.dev(), m.ino()),
                    rotated: false,
                }
            } else {
                Found::Foreign(format!(
                    "the sink's file, cut from {len} to {} bytes by another program",
                    m.len()
                ))
            });
        }
    }
    if same && !rotate_now {
        return Ok(Found::Ours);
    }
    if same {
        let (f, id, _) = rotate_file(path, generation, mode, fsync)?;
        return Ok(Found::Started {
            file: Some(f),
            id,
            rotated: true,
        });
    }
    Ok(match open_new_or_empty(path, mode)? {
        Ok((f, id, _)) => Found::Started {
            file: Some(f),
            id,
            rotated: false,
        },
        Err(found) => Found::Foreign(found),
    })
}

/// Writes `buf` at the end of `file` (at `start`), synced if asked; a failed write leaves no
/// partial line behind.
fn write_at_end(file: &File, buf: &[u8], start: u64, fsync: bool) -> std::io::Result<()> {
    let mut result = (&*file).write_all(buf);
    if result.is_ok() && fsync {
        result = file.sync_data();
    }
    if result.is_err() {
        let _ = file.set_len(start);
    }
    result
}

impl FileSink {
    /// Makes `file` (`None`: the open one, emptied in place) the sink's file, empty, and records
    /// it in the state before anything is written to it, so that a crash before the next commit
    /// finds it the sink's own. With `rotated`, the file of the generation before was renamed
    /// `PATH.G`: the same record holds it (to be deleted only once beyond `rotate_keep`), and
    /// the rotated files beyond `rotate_keep` are deleted once it is recorded.
    async fn start_file(
        &mut self,
        file: Option<File>,
        id: (u64, u64),
        rotated: bool,
    ) -> Result<Arc<File>, SinkError> {
        let f = match (file, &self.file) {
            (Some(f), _) => Arc::new(f),
            (None, Some(own)) => own.clone(),
            (None, None) => unreachable!("emptied in place means a file is open"),
        };
        let before = RotatedFile {
            generation: self.generation,
            dev: self.identity.0,
            ino: self.identity.1,
        };
        if rotated {
            tracing::info!(sink = %self.name, path = %self.path.display(),
                rotated_to = %rotated_path(&self.path, self.generation).display(),
                bytes = self.len, "rotated the file");
            self.generation += 1;
        }
        self.file = Some(f.clone());
        self.identity = id;
        self.len = 0;
        self.committed = 0;
        self.tail.clear();
        let mut pos = self.position().expect("a file is open");
        if rotated {
            pos.rotated = Some(before);
            pos.forget_rotated_before = self.rotate.map(|r| self.generation.saturating_sub(r.keep));
        }
        if let Err(e) = self.state.set_sink_position(&self.name, pos).await {
            return Err(SinkError::Io {
                sink: self.name.clone(),
                msg: format!("cannot record the new file {}: {e}", self.path.display()),
            });
        }
        if rotated {
            self.rotated
                .insert(before.generation, (before.dev, before.ino));
            if let Some(r) = self.rotate {
                self.prune(self.generation.saturating_sub(r.keep));
            }
        }
        Ok(f)
    }
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
            let rotate_now = self.file.is_some()
                && self.rotate.is_some_and(|r| self.len >= r.max_bytes)
                && self.len == self.committed;
            let identity = self.file.as_ref().map(|_| self.identity);
            let (file, path, fsync, mode, len, generation) = (
                self.file.clone(),
                self.path.clone(),
                self.fsync,
                self.mode,
                self.len,
                self.generation,
            );
            // The common case in one blocking call: the path still holds the sink's file, and
            // the page is written to it.
            let (buf, found, written) = tokio::task::spawn_blocking(move || {
                let found = look(&path, identity, len, rotate_now, generation, mode, fsync);
                let written = match (&found, &file) {
                    (Ok(Found::Ours), Some(f)) => Some(write_at_end(f, &buf, len, fsync)),
                    _ => None,
                };
                (buf, found, written)
            })
            .await
            .map_err(|e| self.io(std::io::Error::other(e)))?;
            let found = match found {
                Ok(f) => f,
                Err(e) => {
                    self.buf = buf;
                    return Err(self.io(e));
                }
            };
            let result = match found {
                Found::Ours => {
                    self.buf = buf;
                    written.expect("written to the sink's file")
                }
                Found::Foreign(found) => {
                    self.buf = buf;
                    if self.file.take().is_some() {
                        tracing::error!(sink = %self.name, path = %self.path.display(),
                            "the sink's file was replaced by one that is not its own: delivery stops until it is moved away");
                    }
                    return Err(SinkError::NotOurs {
                        sink: self.name.clone(),
                        msg: not_ours(&self.path, &found, None),
                    });
                }
                Found::Started { file, id, rotated } => {
                    if !rotated {
                        if file.is_some() {
                            tracing::warn!(sink = %self.name, path = %self.path.display(),
                                "file was rotated or removed; writing to a new one");
                        } else {
                            tracing::warn!(sink = %self.name, path = %self.path.display(),
                                "file was emptied in place (copytruncate?); writing on from its start");
                        }
                    }
                    let f = match self.start_file(file, id, rotated).await {
                        Ok(f) => f,
                        Err(e) => {
                            self.buf = buf;
                            return Err(e);
                        }
                    };
                    let (r, buf) = tokio::task::spawn_blocking(move || {
                        let r = write_at_end(&f, &buf, 0, fsync);
                        if r.is_ok() && rotated {
                            crash_point("after_write");
                        }
                        (r, buf)
                    })
                    .await
                    .map_err(|e| self.io(std::io::Error::other(e)))?;
                    self.buf = buf;
                    r
                }
            };
            result.map_err(|e| self.io(e))?;
            push_tail(&mut self.tail, &self.buf);
            self.len += self.buf.len() as u64;
            Ok(())
        })
    }

    fn position(&self) -> Option<SinkPosition> {
        self.file.as_ref()?;
        Some(SinkPosition {
            position: pack(self.generation, self.len),
            file: Some(FileMark {
                path: self.path.to_string_lossy().into_owned(),
                dev: self.identity.0,
                ino: self.identity.1,
                tail: *blake3::hash(&self.tail).as_bytes(),
            }),
            rotated: None,
            forget_rotated_before: None,
        })
    }

    fn committed(&mut self) {
        self.committed = self.len;
    }

    fn rollback(&mut self) {
        let Some(file) = &self.file else { return };
        if let Err(e) = file.set_len(self.committed) {
            tracing::error!(sink = %self.name, error = %e, "could not truncate after a failed commit");
        }
        self.tail = read_tail(file, self.committed).unwrap_or_default();
        self.len = self.committed;
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
