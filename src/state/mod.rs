//! Durable state in SQLite: per-source cursors and counts, dedupe keys, a queue per sink and
//! sink positions.
//!
//! rusqlite blocks, so one dedicated thread owns the connection and async code sends it closures
//! ([`State::call`]). A page's keys, its new events queued for every sink that takes the source,
//! and (at the end of a window) the cursor are written in one transaction ([`State::commit`]): a
//! crash leaves either all or none. Each sink's task takes its queue's events in order
//! ([`State::take`]) and, once the sink has them, removes them and records the sink's position
//! in one transaction ([`State::ack`]).

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use crate::keys::Key;
use crate::timefmt::Nanos;

pub mod pgtls;
pub mod postgres;

/// Failures of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("state {path} was written by a newer auditship (schema {found}, this one knows {known}); upgrade, or point state_path elsewhere")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("state: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A failed statement, with the file it ran on.
    #[error("state {path}: {source}")]
    At {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// The file is not a database, or not a whole one (truncated, overwritten).
    #[error("state {path} is damaged ({detail}); the agent will not start over from nothing by itself: restore the file from a backup, or move it away (and {path}.lock with it) to start every source again from its start")]
    Damaged { path: PathBuf, detail: String },
    /// The file the agent opened is no longer at its path.
    #[error("state {path} was deleted or replaced while the agent ran; commits to the old file would be lost and a new one would deliver everything again, so the agent stops: restore the file, or remove {path}.lock as well to start over")]
    Lost { path: PathBuf },
    /// The file was there before and is missing or empty now.
    #[error("state {path} is missing or empty, but {path}.lock shows an agent used it (pid {pid}); starting over would deliver every event again: restore the file, or remove {path}.lock as well to start every source again from its start")]
    Vanished { path: PathBuf, pid: String },
    /// A `-wal` or `-shm` file beside a database that does not exist: another program's, or
    /// left from another database; SQLite would take it over.
    #[error("state {path} does not exist but {other} does ({len} bytes): it is not this agent's, and SQLite would take it over; move it away (or choose another agent.state_path)")]
    Stray {
        path: PathBuf,
        other: PathBuf,
        len: u64,
    },
    #[error("state {path} is read-only; the agent records its cursors there: make the file, its directory and their file system writable")]
    ReadOnly { path: PathBuf },
    #[error("state: the state thread has stopped")]
    Gone,
    /// The state database could not be reached or refused a statement. tokio-postgres's text,
    /// which never includes the password of the URL.
    #[error("state database: {}", pg_text(.0))]
    Db(#[from] tokio_postgres::Error),
    /// TLS to the state database cannot be set up (its `sslrootcert`).
    #[error("state database: {0}")]
    DbTls(String),
    #[error("state database has schema {found}, newer than this auditship knows ({known}); upgrade every replica")]
    DbTooNew { found: i64, known: i64 },
    /// The page's lease is no longer this replica's: nothing of the page was committed (the
    /// source's new holder reads it again from the committed cursor).
    #[error(
        "lease {name} (epoch {epoch}) is no longer held by {holder}: the page was not committed"
    )]
    LeaseLost {
        name: String,
        holder: String,
        epoch: i64,
    },
    /// Something only the SQLite store does.
    #[error("state: {0} needs the SQLite state (agent.state_path)")]
    NotSqlite(&'static str),
}

pub use crate::lease::pg_text;

impl From<crate::lease::LeaseError> for StateError {
    fn from(e: crate::lease::LeaseError) -> StateError {
        use crate::lease::LeaseError;
        match e {
            LeaseError::Db(e) => StateError::Db(e),
            LeaseError::Connect(e) => StateError::DbTls(e),
            LeaseError::TooNew { found, known } => StateError::DbTooNew { found, known },
            LeaseError::Lost {
                name,
                holder,
                epoch,
            } => StateError::LeaseLost {
                name,
                holder,
                epoch,
            },
        }
    }
}

impl StateError {
    /// Whether the agent must stop rather than retry: the state it would write to is not the
    /// one it read (deleted, replaced) or not a whole database. A read-only file or a full
    /// disk may heal and is retried.
    pub fn is_fatal(&self) -> bool {
        match self {
            StateError::Damaged { .. } | StateError::Lost { .. } | StateError::Vanished { .. } => {
                true
            }
            StateError::At { source, .. } | StateError::Sql(source) => is_damage(source),
            _ => false,
        }
    }
}

/// Whether SQLite says the file is damaged.
fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// Schema migrations, applied in order; `PRAGMA user_version` is how many have run. Append only.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE sources (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        cursor INTEGER,              -- ns; every event before it has been delivered
        delivered INTEGER NOT NULL DEFAULT 0,
        duplicates INTEGER NOT NULL DEFAULT 0,
        updated INTEGER              -- ns wall clock of the last commit
     );
     CREATE TABLE keys (
        source INTEGER NOT NULL,
        key BLOB NOT NULL,
        time INTEGER NOT NULL,       -- ns; pruned once older than cursor - overlap - window
        PRIMARY KEY (source, key)
     ) WITHOUT ROWID;
     CREATE INDEX keys_by_time ON keys (source, time);
     CREATE TABLE sinks (
        name TEXT PRIMARY KEY,
        position INTEGER NOT NULL    -- file sink: committed byte length
     );",
    // 2: the newest event time ever delivered per source. A page's events newer than it cannot
    // have keys yet, so the poller looks up only the older ones (a backfill looks up nothing).
    "ALTER TABLE sources ADD COLUMN max_event INTEGER;",
    // 3: keys clustered by (source, time): one B-tree instead of a table plus a time index,
    // inserts land near the end (events arrive roughly in time order) and pruning deletes a
    // prefix. Lookups give the event's time, which is part of its content anyway.
    "CREATE TABLE keys_v3 (
        source INTEGER NOT NULL,
        time INTEGER NOT NULL,       -- ns, the event's time
        key BLOB NOT NULL,
        PRIMARY KEY (source, time, key)
     ) WITHOUT ROWID;
     INSERT INTO keys_v3 (source, time, key) SELECT source, time, key FROM keys;
     DROP TABLE keys;
     ALTER TABLE keys_v3 RENAME TO keys;",
    // 4: keys stored a commit at a time: one row per page holding its keys as sorted records
    // (see `encode_records`) instead of one B-tree row per key. Storing a page's keys is one insert
    // and pruning deletes whole rows; the few events that need a lookup read the rows whose
    // time range covers them. Existing keys move over one record per row.
    "CREATE TABLE key_pages (
        id INTEGER PRIMARY KEY,
        source INTEGER NOT NULL,
        min_time INTEGER NOT NULL,   -- ns, the oldest and newest event time in `keys`
        max_time INTEGER NOT NULL,
        keys BLOB NOT NULL           -- records of 24 bytes: time (i64 big-endian), key
     );
     CREATE INDEX key_pages_by_time ON key_pages (source, max_time);
     INSERT INTO key_pages (source, min_time, max_time, keys)
        SELECT source, time, time, CAST(unhex(printf('%016x', time)) || key AS BLOB)
        FROM keys ORDER BY source, time;
     DROP TABLE keys;",
    // 5: a source whose state predates `max_event` (schema 1) has keys but no max_event, and the
    // poller looks up only events at or before max_event: without this its first poll after the
    // upgrade would look nothing up and deliver the overlap again. Take it from the keys.
    "UPDATE sources SET max_event =
        (SELECT max(max_time) FROM key_pages WHERE key_pages.source = sources.id)
     WHERE max_event IS NULL;",
    // 6: a file sink's position belongs to one file: its path, device and inode, and a hash of
    // the bytes before the committed length (which a copy of the file keeps). The files its
    // rotation made, by generation, so that only those are ever deleted.
    "ALTER TABLE sinks ADD COLUMN path TEXT;
     ALTER TABLE sinks ADD COLUMN dev INTEGER;
     ALTER TABLE sinks ADD COLUMN ino INTEGER;
     ALTER TABLE sinks ADD COLUMN tail BLOB;
     CREATE TABLE sink_rotated (
        sink TEXT NOT NULL,
        generation INTEGER NOT NULL,
        dev INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        PRIMARY KEY (sink, generation)
     ) WITHOUT ROWID;",
    // 7: a durable queue per sink. A page's new events go into the queue of every sink that
    // takes the source, in the page's commit (one row, a chunk, per sink: see
    // `event::queued`); each sink's task delivers its rows in id order and deletes them in the
    // commit that records its progress. AUTOINCREMENT: a chunk id is never handed out twice, so
    // a sink's task never takes a new chunk for one it already delivered. The index holds the
    // counters, so totals never read a chunk.
    "CREATE TABLE sink_queues (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,   -- the sink's configured name
        delivered INTEGER NOT NULL DEFAULT 0,
        updated INTEGER              -- ns wall clock of the last delivery
     );
     CREATE TABLE queue (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sink INTEGER NOT NULL,       -- sink_queues.id
        source INTEGER NOT NULL,     -- sources.id
        events INTEGER NOT NULL,
        bytes INTEGER NOT NULL,      -- length(records)
        enqueued INTEGER NOT NULL,   -- ns wall clock of the commit
        records BLOB NOT NULL
     );
     CREATE INDEX queue_by_sink ON queue (sink, id, source, events, bytes, enqueued);",
    // 8: what a source's requests met at its vendor, for `state`: requests sent, answered 429,
    // and milliseconds waited for its credential's turn (issue 27's pacing).
    "ALTER TABLE sources ADD COLUMN requests INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE sources ADD COLUMN rate_limited INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE sources ADD COLUMN waited_ms INTEGER NOT NULL DEFAULT 0;",
];

/// Bytes of one stored key record: the event time, big-endian, then the key.
pub(crate) const RECORD: usize = 24;

/// Encodes keys as the records of one `key_pages` row, sorted by (time, key).
pub(crate) fn encode_records(keys: &[(Key, Nanos)]) -> Vec<u8> {
    // A page's keys come oldest first (the poller delivers a page in time order): they are in
    // order but where events share a time (twins, or the same millisecond).
    let mut sorted: Vec<(Nanos, Key)> = keys.iter().map(|(k, t)| (*t, *k)).collect();
    sort_nearly_sorted(&mut sorted);
    let mut out = Vec::with_capacity(sorted.len() * RECORD);
    for (t, k) in sorted {
        out.extend_from_slice(&t.to_be_bytes());
        out.extend_from_slice(&k);
    }
    out
}

/// Sorts `v`, in one pass if it is nearly in order (a few elements a few places out): an
/// insertion sort, which gives up for `sort_unstable` once it has moved elements `v.len()`
/// places in all. A page's keys take 2.7 µs this way against 24 µs with `sort_unstable` alone.
fn sort_nearly_sorted<T: Ord>(v: &mut [T]) {
    let mut budget = v.len();
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && v[j] < v[j - 1] {
            if budget == 0 {
                v.sort_unstable();
                return;
            }
            budget -= 1;
            v.swap(j, j - 1);
            j -= 1;
        }
    }
}

/// One record of a `key_pages` row.
pub(crate) fn record(blob: &[u8], i: usize) -> (Nanos, &[u8]) {
    let r = &blob[i * RECORD..(i + 1) * RECORD];
    (
        Nanos::from_be_bytes(r[..8].try_into().expect("8 bytes")),
        &r[8..],
    )
}

/// Whether the records of a row hold (time, key): a binary search.
pub(crate) fn records_hold(blob: &[u8], time: Nanos, key: &Key) -> bool {
    let (mut lo, mut hi) = (0, blob.len() / RECORD);
    while lo < hi {
        let mid = (lo + hi) / 2;
        match record(blob, mid).cmp(&(time, &key[..])) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

/// One source's row, as `state` shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceRow {
    pub name: String,
    pub kind: String,
    pub cursor: Option<Nanos>,
    pub delivered: u64,
    pub duplicates: u64,
    pub keys: u64,
    pub updated: Option<Nanos>,
    /// The newest event time ever delivered.
    pub max_event: Option<Nanos>,
    /// What its requests met at its vendor, since the state was made.
    pub requests: Requests,
}

/// The file a file sink's position belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMark {
    /// The path it had when recorded (for messages: the identity is what decides).
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    /// BLAKE3 of the file's last bytes before the committed length (up to 4 KiB): a copy of
    /// the file (restored, or moved to another disk) has other device and inode but these.
    pub tail: [u8; 32],
}

/// A file made by a sink's rotation: its generation and (device, inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotatedFile {
    pub generation: u64,
    pub dev: u64,
    pub ino: u64,
}

/// A sink's committed position, and for a file sink the file it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkPosition {
    pub position: u64,
    /// `None` for a position recorded before schema 6.
    pub file: Option<FileMark>,
    /// A rotation this commit records: the file renamed away. Written, never read back here
    /// (see [`State::sink_rotated`]).
    pub rotated: Option<RotatedFile>,
    /// Forget the rotated files of generations before this one: the sink deletes them once
    /// this is committed (a file of that name later, even on a reused inode, is not its own).
    pub forget_rotated_before: Option<u64>,
}

impl SinkPosition {
    /// A position with no file (and no rotation).
    pub fn bare(position: u64) -> SinkPosition {
        SinkPosition {
            position,
            file: None,
            rotated: None,
            forget_rotated_before: None,
        }
    }
}

/// What one page's delivery commits.
#[derive(Debug, Default)]
pub struct Commit {
    pub source: String,
    pub kind: &'static str,
    /// Keys of the delivered events, with the time that decides when they are pruned.
    pub keys: Vec<(Key, Nanos)>,
    pub delivered: u64,
    pub duplicates: u64,
    /// The page's new events, for the queue of each sink that takes the source.
    pub queued: Vec<Queued>,
    /// Sink name → position, for a sink that took the page directly (write-through).
    pub positions: Vec<(String, SinkPosition)>,
    /// The new cursor, when a window is complete (never moves backwards).
    pub cursor: Option<Nanos>,
    /// Drop this source's keys older than this.
    pub prune_before: Option<Nanos>,
    /// The newest time among the delivered events.
    pub max_event: Option<Nanos>,
    /// What the source's requests met since its last commit.
    pub requests: Requests,
    /// The lease the page was read under (replicas sharing a PostgreSQL state): checked inside
    /// the page's transaction, which commits nothing if it is lost
    /// ([`StateError::LeaseLost`]). The SQLite store has no leases and ignores it.
    pub lease: Option<crate::lease::Lease>,
}

/// What a source's requests met at its vendor: sent, answered 429, and time waited for its
/// credential's turn (milliseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    pub sent: u64,
    pub rate_limited: u64,
    pub waited_ms: u64,
}

/// A page's new events for one sink's queue ([`crate::event::queued`]).
#[derive(Debug, Clone)]
pub struct Queued {
    pub sink: String,
    pub events: u32,
    /// The chunk; one allocation shared by every sink of the page.
    pub records: bytes::Bytes,
}

/// A chunk taken from a sink's queue.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub id: i64,
    /// The source that read it, and its kind.
    pub source: String,
    pub kind: String,
    pub events: u32,
    pub records: Vec<u8>,
}

/// What a sink's task commits once the sink has taken `chunks`.
#[derive(Debug)]
pub struct Ack {
    pub sink: String,
    /// The chunks delivered: they leave the queue.
    pub chunks: Vec<i64>,
    pub events: u64,
    /// The sink's position after the delivery (a file sink's).
    pub position: Option<SinkPosition>,
    /// The sink's lease the batch was taken under (replicas sharing a PostgreSQL state):
    /// checked inside the ack's transaction like a page commit's. SQLite ignores it.
    pub lease: Option<crate::lease::Lease>,
}

/// A sink's queue, counted from the index (never from its chunks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueTotals {
    pub sink: String,
    pub chunks: u64,
    pub events: u64,
    pub bytes: u64,
    /// When the oldest queued chunk was committed.
    pub oldest: Option<Nanos>,
    /// Events this sink has delivered, ever.
    pub delivered: u64,
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The SQLite store: a handle to the state thread. Cheap to clone.
#[derive(Clone)]
pub struct Sqlite {
    tx: mpsc::Sender<Job>,
    /// The file, for errors that name it.
    path: Arc<Path>,
    /// (device, inode) of the file opened: a commit checks that it is still the one at `path`.
    opened: Option<(u64, u64)>,
}

/// The state store the agent uses: the SQLite file (the default), or PostgreSQL shared by
/// several replicas (`agent.state_url`). An enum, not a trait object: the hot path stays
/// monomorphic and each call is one match. Cheap to clone.
#[derive(Clone)]
pub enum State {
    Sqlite(Sqlite),
    Postgres(crate::state::postgres::Postgres),
}

/// Calls the same method on whichever backend `$s` is.
macro_rules! each {
    ($s:expr, $b:ident => $e:expr) => {
        match $s {
            State::Sqlite($b) => $e,
            State::Postgres($b) => $e,
        }
    };
}

impl State {
    /// Opens (creating if missing) and migrates the SQLite state file. Blocking: call it
    /// before the runtime gets busy, or inside `spawn_blocking`.
    pub fn open(path: &Path) -> Result<State, StateError> {
        Sqlite::open(path).map(State::Sqlite)
    }

    /// The SQLite file, for a store that is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            State::Sqlite(s) => Some(s.path()),
            State::Postgres(_) => None,
        }
    }

    /// Runs `f` on the SQLite state thread (tests and tools that need the connection itself).
    pub async fn call<R, F>(&self, f: F) -> Result<R, StateError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, StateError> + Send + 'static,
    {
        match self {
            State::Sqlite(s) => s.call(f).await,
            State::Postgres(_) => Err(StateError::NotSqlite("a statement on the SQLite file")),
        }
    }

    /// Whether the store answers now: a `SELECT 1` on the SQLite thread or the database.
    pub async fn ping(&self) -> Result<(), StateError> {
        match self {
            State::Sqlite(s) => {
                s.call(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
                    .await?;
                Ok(())
            }
            State::Postgres(p) => p.ping().await,
        }
    }

    /// The row of one source, if it has ever committed.
    pub async fn source(&self, name: &str) -> Result<Option<SourceRow>, StateError> {
        each!(self, s => s.source(name).await)
    }

    /// All sources ever seen, by name.
    pub async fn sources(&self) -> Result<Vec<SourceRow>, StateError> {
        each!(self, s => s.sources().await)
    }

    /// For each (key, event time), whether it is already recorded for this source.
    pub async fn known(
        &self,
        source: &str,
        keys: Vec<(Key, Nanos)>,
    ) -> Result<Vec<bool>, StateError> {
        each!(self, s => s.known(source, keys).await)
    }

    /// Commits one page: keys, counts, queued events, sink positions and perhaps the cursor,
    /// atomically.
    pub async fn commit(&self, commit: Commit) -> Result<(), StateError> {
        each!(self, s => s.commit(commit).await)
    }

    /// Chunks of `sink`'s queue in order, but those in `skip`: as many as fit in `max_events`
    /// and `max_bytes`, and always the first (a chunk is never split).
    pub async fn take(
        &self,
        sink: &str,
        skip: Vec<i64>,
        max_events: u64,
        max_bytes: u64,
    ) -> Result<Vec<Chunk>, StateError> {
        each!(self, s => s.take(sink, skip, max_events, max_bytes).await)
    }

    /// Removes a sink's delivered chunks and records its position, atomically. Returns when the
    /// oldest chunk left was committed (`None`: the queue is empty).
    pub async fn ack(&self, ack: Ack) -> Result<Option<Nanos>, StateError> {
        each!(self, s => s.ack(ack).await)
    }

    /// Every sink queue the state knows of, by sink name.
    pub async fn queue_totals(&self) -> Result<Vec<QueueTotals>, StateError> {
        each!(self, s => s.queue_totals().await)
    }

    /// The committed position of a sink, if it has one.
    pub async fn sink_position(&self, sink: &str) -> Result<Option<SinkPosition>, StateError> {
        each!(self, s => s.sink_position(sink).await)
    }

    /// The files a sink's rotation made that are still recorded, oldest first.
    pub async fn sink_rotated(&self, sink: &str) -> Result<Vec<RotatedFile>, StateError> {
        each!(self, s => s.sink_rotated(sink).await)
    }

    /// Records a sink's position outside a page's commit (see [`Sqlite::set_sink_position`]).
    pub async fn set_sink_position(&self, sink: &str, pos: SinkPosition) -> Result<(), StateError> {
        each!(self, s => s.set_sink_position(sink, pos).await)
    }

    /// Rewinds a source's cursor to `to` and forgets its keys at or after `to`.
    pub async fn reset(
        &self,
        source: &str,
        kind: &'static str,
        to: Nanos,
    ) -> Result<(), StateError> {
        each!(self, s => s.reset(source, kind, to).await)
    }
}

/// (device, inode) of the file at `path`, if there is one.
pub(crate) fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl Sqlite {
    /// Opens (creating if missing) and migrates the state file. Blocking: call it before the
    /// runtime gets busy, or inside `spawn_blocking`.
    pub fn open(path: &Path) -> Result<Sqlite, StateError> {
        let conn = open_conn(path)?;
        let opened = identity(path);
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("auditship-state".into())
            .spawn(move || {
                let mut conn = conn;
                for job in rx {
                    job(&mut conn);
                }
            })
            .expect("spawning the state thread");
        Ok(Sqlite {
            tx,
            path: path.into(),
            opened,
        })
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the state thread.
    pub async fn call<R, F>(&self, f: F) -> Result<R, StateError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, StateError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Box::new(move |c| {
                let _ = tx.send(f(c));
            }))
            .map_err(|_| StateError::Gone)?;
        rx.await
            .map_err(|_| StateError::Gone)?
            .map_err(|e| match e {
                StateError::Sql(source) => StateError::At {
                    path: self.path.to_path_buf(),
                    source,
                },
                e => e,
            })
    }

    /// The row of one source, if it has ever committed.
    pub async fn source(&self, name: &str) -> Result<Option<SourceRow>, StateError> {
        let name = name.to_string();
        self.call(move |c| source_row(c, &name)).await
    }

    /// All sources ever seen, by name.
    pub async fn sources(&self) -> Result<Vec<SourceRow>, StateError> {
        self.call(|c| {
            let names: Vec<String> = c
                .prepare("SELECT name FROM sources ORDER BY name")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut rows = Vec::new();
            for n in names {
                rows.extend(source_row(c, &n)?);
            }
            Ok(rows)
        })
        .await
    }

    /// For each (key, event time), whether it is already recorded for this source.
    pub async fn known(
        &self,
        source: &str,
        keys: Vec<(Key, Nanos)>,
    ) -> Result<Vec<bool>, StateError> {
        let source = source.to_string();
        self.call(move |c| {
            let Some(id) = source_id(c, &source)? else {
                return Ok(vec![false; keys.len()]);
            };
            let mut found = vec![false; keys.len()];
            let (Some(lo), Some(hi)) = (
                keys.iter().map(|k| k.1).min(),
                keys.iter().map(|k| k.1).max(),
            ) else {
                return Ok(found);
            };
            // The rows whose time range meets the keys' one at a time (a row is one page).
            let mut st = c.prepare_cached(
                "SELECT min_time, max_time, keys FROM key_pages
                 WHERE source = ?1 AND max_time >= ?2 AND min_time <= ?3",
            )?;
            let mut rows = st.query(params![id, lo, hi])?;
            while let Some(row) = rows.next()? {
                let (min, max): (Nanos, Nanos) = (row.get(0)?, row.get(1)?);
                let blob = match row.get_ref(2)? {
                    ValueRef::Blob(b) | ValueRef::Text(b) => b,
                    _ => continue,
                };
                for ((k, t), f) in keys.iter().zip(found.iter_mut()) {
                    if !*f && min <= *t && *t <= max {
                        *f = records_hold(blob, *t, k);
                    }
                }
            }
            Ok(found)
        })
        .await
    }

    /// Commits one page: keys, counts, sink positions and perhaps the cursor, atomically.
    pub async fn commit(&self, commit: Commit) -> Result<(), StateError> {
        let (path, opened) = (self.path.clone(), self.opened);
        self.call(move |c| {
            still_there(&path, opened)?;
            let tx = c.transaction()?;
            let id = ensure_source(&tx, &commit.source, commit.kind)?;
            insert_keys(&tx, id, &commit.keys)?;
            tx.prepare_cached(
                "UPDATE sources SET delivered = delivered + ?2, duplicates = duplicates + ?3,
                    cursor = CASE WHEN ?4 IS NULL THEN cursor
                                  WHEN cursor IS NULL OR ?4 > cursor THEN ?4 ELSE cursor END,
                    max_event = CASE WHEN ?6 IS NULL THEN max_event
                                  WHEN max_event IS NULL OR ?6 > max_event THEN ?6 ELSE max_event END,
                    updated = ?5, requests = requests + ?7,
                    rate_limited = rate_limited + ?8, waited_ms = waited_ms + ?9
                 WHERE id = ?1",
            )?
            .execute(params![
                id,
                commit.delivered as i64,
                commit.duplicates as i64,
                commit.cursor,
                crate::timefmt::now(),
                commit.max_event,
                commit.requests.sent as i64,
                commit.requests.rate_limited as i64,
                commit.requests.waited_ms as i64,
            ])?;
            for (sink, pos) in &commit.positions {
                put_sink_position(&tx, sink, pos)?;
            }
            let enqueued = crate::timefmt::now();
            for q in &commit.queued {
                let sink = ensure_sink_queue(&tx, &q.sink)?;
                tx.prepare_cached(
                    "INSERT INTO queue (sink, source, events, bytes, enqueued, records)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    sink,
                    id,
                    q.events,
                    q.records.len() as i64,
                    enqueued,
                    &q.records[..]
                ])?;
            }
            if let Some(before) = commit.prune_before {
                // Whole rows: a row that straddles the line keeps its older keys a little longer.
                tx.prepare_cached("DELETE FROM key_pages WHERE source = ?1 AND max_time < ?2")?
                    .execute(params![id, before])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Chunks of `sink`'s queue in order, but those in `skip`: as many as fit in `max_events`
    /// and `max_bytes`, and always the first (a chunk is never split).
    pub async fn take(
        &self,
        sink: &str,
        skip: Vec<i64>,
        max_events: u64,
        max_bytes: u64,
    ) -> Result<Vec<Chunk>, StateError> {
        let sink = sink.to_string();
        self.call(move |c| {
            let Some(sink) = sink_queue_id(c, &sink)? else {
                return Ok(Vec::new());
            };
            // Counters first, from the index; chunks are read only once chosen.
            let mut st = c.prepare_cached(
                "SELECT id, events, bytes FROM queue WHERE sink = ?1 ORDER BY id",
            )?;
            let mut rows = st.query(params![sink])?;
            let (mut ids, mut events, mut bytes) = (Vec::new(), 0u64, 0u64);
            while let Some(r) = rows.next()? {
                let (id, n, b): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
                if skip.contains(&id) {
                    continue;
                }
                if !ids.is_empty()
                    && (events + n as u64 > max_events || bytes + b as u64 > max_bytes)
                {
                    break;
                }
                ids.push(id);
                events += n as u64;
                bytes += b as u64;
            }
            drop(rows);
            let mut one = c.prepare_cached(
                "SELECT q.id, s.name, s.kind, q.events, q.records
                 FROM queue q JOIN sources s ON s.id = q.source WHERE q.id = ?1",
            )?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push(one.query_row(params![id], |r| {
                    Ok(Chunk {
                        id: r.get(0)?,
                        source: r.get(1)?,
                        kind: r.get(2)?,
                        events: r.get::<_, i64>(3)? as u32,
                        records: r.get(4)?,
                    })
                })?);
            }
            Ok(out)
        })
        .await
    }

    /// Removes a sink's delivered chunks and records its position, atomically. Returns when the
    /// oldest chunk left was committed (`None`: the queue is empty).
    pub async fn ack(&self, ack: Ack) -> Result<Option<Nanos>, StateError> {
        let (path, opened) = (self.path.clone(), self.opened);
        self.call(move |c| {
            still_there(&path, opened)?;
            let tx = c.transaction()?;
            let sink = ensure_sink_queue(&tx, &ack.sink)?;
            for id in &ack.chunks {
                tx.prepare_cached("DELETE FROM queue WHERE sink = ?1 AND id = ?2")?
                    .execute(params![sink, id])?;
            }
            tx.prepare_cached(
                "UPDATE sink_queues SET delivered = delivered + ?2, updated = ?3 WHERE id = ?1",
            )?
            .execute(params![sink, ack.events as i64, crate::timefmt::now()])?;
            if let Some(pos) = &ack.position {
                put_sink_position(&tx, &ack.sink, pos)?;
            }
            let oldest = tx
                .prepare_cached("SELECT enqueued FROM queue WHERE sink = ?1 ORDER BY id LIMIT 1")?
                .query_row(params![sink], |r| r.get(0))
                .optional()?;
            tx.commit()?;
            Ok(oldest)
        })
        .await
    }

    /// Every sink queue the state knows of, by sink name.
    pub async fn queue_totals(&self) -> Result<Vec<QueueTotals>, StateError> {
        self.call(|c| queue_totals(c)).await
    }

    /// The committed position of a sink, if it has one.
    pub async fn sink_position(&self, sink: &str) -> Result<Option<SinkPosition>, StateError> {
        let sink = sink.to_string();
        self.call(move |c| get_sink_position(c, &sink)).await
    }

    /// The files a sink's rotation made that are still recorded, oldest first.
    pub async fn sink_rotated(&self, sink: &str) -> Result<Vec<RotatedFile>, StateError> {
        let sink = sink.to_string();
        self.call(move |c| {
            let mut st = c.prepare_cached(
                "SELECT generation, dev, ino FROM sink_rotated WHERE sink = ?1 ORDER BY generation",
            )?;
            let rows = st.query_map(params![sink], |r| {
                Ok(RotatedFile {
                    generation: r.get::<_, i64>(0)? as u64,
                    dev: r.get::<_, i64>(1)? as u64,
                    ino: r.get::<_, i64>(2)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Records a sink's position outside a page's commit: where a sink starts (new to the
    /// state), or the new file it is about to write into. Replaces what was recorded.
    pub async fn set_sink_position(&self, sink: &str, pos: SinkPosition) -> Result<(), StateError> {
        let sink = sink.to_string();
        self.call(move |c| put_sink_position(c, &sink, &pos)).await
    }

    /// Rewinds a source's cursor to `to` and forgets its keys at or after `to`, so the events
    /// from there on are delivered again. A source without state gets a row.
    pub async fn reset(
        &self,
        source: &str,
        kind: &'static str,
        to: Nanos,
    ) -> Result<(), StateError> {
        let source = source.to_string();
        self.call(move |c| {
            let tx = c.transaction()?;
            let id = ensure_source(&tx, &source, kind)?;
            tx.prepare_cached("UPDATE sources SET cursor = ?2, updated = ?3 WHERE id = ?1")?
                .execute(params![id, to, crate::timefmt::now()])?;
            forget_keys_from(&tx, id, to)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

/// Creates `path` empty with mode 0600 (whatever the umask) unless it exists; an existing file
/// is left as it is.
pub fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f.set_permissions(std::fs::Permissions::from_mode(0o600)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn open_conn(path: &Path) -> Result<Connection, StateError> {
    let err = |source| StateError::Open {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| StateError::Open {
                path: path.to_path_buf(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        }
    }
    let damaged = |e: rusqlite::Error| {
        if is_damage(&e) {
            StateError::Damaged {
                path: path.to_path_buf(),
                detail: e.to_string(),
            }
        } else if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ReadOnly) {
            StateError::ReadOnly {
                path: path.to_path_buf(),
            }
        } else {
            err(e)
        }
    };
    // A new database has no -wal or -shm yet: files of those names are someone else's, which
    // SQLite would read as its own (a -wal is replayed into the database, then reset).
    if std::fs::metadata(path)
        .map(|m| m.len() == 0)
        .unwrap_or(true)
    {
        for suffix in ["-wal", "-shm"] {
            let mut other = path.as_os_str().to_owned();
            other.push(suffix);
            let other = PathBuf::from(other);
            if let Ok(m) = std::fs::metadata(&other) {
                if m.len() > 0 {
                    return Err(StateError::Stray {
                        path: path.to_path_buf(),
                        other,
                        len: m.len(),
                    });
                }
            }
        }
    }
    // Audit state is private whatever the umask: SQLite gives the -wal and -shm files it makes
    // the database file's mode, so a new database is created 0600 before SQLite opens it.
    private_file(path).map_err(|e| StateError::Open {
        path: path.to_path_buf(),
        source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
    })?;
    let mut conn = Connection::open(path).map_err(err)?;
    // SQLite falls back to reading a file it may not write; the agent must write.
    if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
        return Err(StateError::ReadOnly {
            path: path.to_path_buf(),
        });
    }
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(err)?;
    // WAL: readers (`auditship state`) never block the agent; NORMAL: durable across a process
    // crash, which is what a commit must survive (the file sink fsyncs its own data first).
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(damaged)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(damaged)?;
    // A file cut short or overwritten in part opens fine and fails later, page by page: find
    // out now, before anything is fetched. (Milliseconds: the keys are pruned as they age.)
    let check: String = conn
        .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
        .map_err(damaged)?;
    if check != "ok" {
        return Err(StateError::Damaged {
            path: path.to_path_buf(),
            detail: check,
        });
    }
    migrate(&mut conn, path).map_err(|e| match e {
        StateError::Sql(e) => damaged(e),
        e => e,
    })?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StateError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StateError::TooNew {
            path: path.to_path_buf(),
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

fn put_sink_position(c: &Connection, sink: &str, pos: &SinkPosition) -> Result<(), StateError> {
    let file = pos.file.as_ref();
    c.prepare_cached(
        "INSERT INTO sinks (name, position, path, dev, ino, tail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position, path = excluded.path,
            dev = excluded.dev, ino = excluded.ino, tail = excluded.tail",
    )?
    .execute(params![
        sink,
        pos.position as i64,
        file.map(|f| f.path.as_str()),
        file.map(|f| f.dev as i64),
        file.map(|f| f.ino as i64),
        file.map(|f| &f.tail[..]),
    ])?;
    if let Some(r) = pos.rotated {
        c.prepare_cached(
            "INSERT OR REPLACE INTO sink_rotated (sink, generation, dev, ino) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            sink,
            r.generation as i64,
            r.dev as i64,
            r.ino as i64
        ])?;
    }
    if let Some(g) = pos.forget_rotated_before {
        c.prepare_cached("DELETE FROM sink_rotated WHERE sink = ?1 AND generation < ?2")?
            .execute(params![sink, g as i64])?;
    }
    Ok(())
}

fn get_sink_position(c: &Connection, sink: &str) -> Result<Option<SinkPosition>, StateError> {
    Ok(c.query_row(
        "SELECT position, path, dev, ino, tail FROM sinks WHERE name = ?1",
        params![sink],
        |r| {
            let (path, dev, ino, tail) = (
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, Option<Vec<u8>>>(4)?,
            );
            let file = match (path, dev, ino, tail) {
                (Some(path), Some(dev), Some(ino), Some(tail)) if tail.len() == 32 => {
                    Some(FileMark {
                        path,
                        dev: dev as u64,
                        ino: ino as u64,
                        tail: tail.try_into().expect("32 bytes"),
                    })
                }
                _ => None,
            };
            Ok(SinkPosition {
                position: r.get::<_, i64>(0)? as u64,
                file,
                rotated: None,
                forget_rotated_before: None,
            })
        },
    )
    .optional()?)
}

/// The recorded position of every sink, read without writing (no migration, no lock): for
/// `check`, which may run beside the agent. A state of a schema before 6 has no files.
pub fn read_sink_positions(path: &Path) -> Result<Vec<(String, SinkPosition)>, StateError> {
    let err = |source| StateError::Open {
        path: path.to_path_buf(),
        source,
    };
    let c = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(err)?;
    let version: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    if version < 1 {
        return Ok(Vec::new());
    }
    let names: Vec<String> = c
        .prepare("SELECT name FROM sinks ORDER BY name")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .map_err(err)?;
    let mut out = Vec::new();
    for name in names {
        let pos = if version >= 6 {
            get_sink_position(&c, &name)?
        } else {
            c.query_row(
                "SELECT position FROM sinks WHERE name = ?1",
                params![name],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map_err(err)?
            .map(|p| SinkPosition::bare(p as u64))
        };
        if let Some(p) = pos {
            out.push((name, p));
        }
    }
    Ok(out)
}

/// Deleted or replaced under us: SQLite would go on writing to the open, unlinked file, and the
/// next start would find no cursors and deliver everything again.
fn still_there(path: &Path, opened: Option<(u64, u64)>) -> Result<(), StateError> {
    if identity(path) != opened {
        return Err(StateError::Lost {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

fn queue_totals(c: &Connection) -> Result<Vec<QueueTotals>, StateError> {
    let mut st = c.prepare_cached(
        "SELECT k.name, k.delivered, count(q.id), coalesce(sum(q.events), 0),
                coalesce(sum(q.bytes), 0), min(q.enqueued)
         FROM sink_queues k LEFT JOIN queue q ON q.sink = k.id
         GROUP BY k.id ORDER BY k.name",
    )?;
    let rows = st.query_map([], |r| {
        Ok(QueueTotals {
            sink: r.get(0)?,
            delivered: r.get::<_, i64>(1)? as u64,
            chunks: r.get::<_, i64>(2)? as u64,
            events: r.get::<_, i64>(3)? as u64,
            bytes: r.get::<_, i64>(4)? as u64,
            oldest: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn sink_queue_id(c: &Connection, name: &str) -> Result<Option<i64>, StateError> {
    Ok(
        c.prepare_cached("SELECT id FROM sink_queues WHERE name = ?1")?
            .query_row(params![name], |r| r.get(0))
            .optional()?,
    )
}

fn ensure_sink_queue(c: &Connection, name: &str) -> Result<i64, StateError> {
    if let Some(id) = sink_queue_id(c, name)? {
        return Ok(id);
    }
    c.prepare_cached("INSERT INTO sink_queues (name) VALUES (?1)")?
        .execute(params![name])?;
    Ok(c.last_insert_rowid())
}

fn insert_keys(tx: &Connection, source: i64, keys: &[(Key, Nanos)]) -> Result<(), StateError> {
    let (Some(min), Some(max)) = (
        keys.iter().map(|k| k.1).min(),
        keys.iter().map(|k| k.1).max(),
    ) else {
        return Ok(());
    };
    tx.prepare_cached(
        "INSERT INTO key_pages (source, min_time, max_time, keys) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![source, min, max, encode_records(keys)])?;
    Ok(())
}

/// Removes a source's keys at or after `to`, rewriting the rows that hold keys on both sides.
fn forget_keys_from(tx: &Connection, source: i64, to: Nanos) -> Result<(), StateError> {
    let straddling: Vec<(i64, Vec<u8>)> = tx
        .prepare(
            "SELECT id, keys FROM key_pages WHERE source = ?1 AND min_time < ?2 AND max_time >= ?2",
        )?
        .query_map(params![source, to], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    tx.execute(
        "DELETE FROM key_pages WHERE source = ?1 AND min_time >= ?2",
        params![source, to],
    )?;
    for (row, blob) in straddling {
        let kept: Vec<(Key, Nanos)> = (0..blob.len() / RECORD)
            .map(|i| record(&blob, i))
            .filter(|(t, _)| *t < to)
            .map(|(t, k)| (k.try_into().expect("16 bytes"), t))
            .collect();
        match kept.iter().map(|k| k.1).max() {
            Some(max) => tx.execute(
                "UPDATE key_pages SET max_time = ?2, keys = ?3 WHERE id = ?1",
                params![row, max, encode_records(&kept)],
            )?,
            // Only a damaged row can claim an older key and hold none.
            None => tx.execute("DELETE FROM key_pages WHERE id = ?1", params![row])?,
        };
    }
    Ok(())
}

fn source_id(c: &Connection, name: &str) -> Result<Option<i64>, StateError> {
    Ok(c.prepare_cached("SELECT id FROM sources WHERE name = ?1")?
        .query_row(params![name], |r| r.get(0))
        .optional()?)
}

fn ensure_source(c: &Connection, name: &str, kind: &str) -> Result<i64, StateError> {
    if let Some(id) = source_id(c, name)? {
        return Ok(id);
    }
    c.execute(
        "INSERT INTO sources (name, kind) VALUES (?1, ?2)",
        params![name, kind],
    )?;
    Ok(c.last_insert_rowid())
}

fn source_row(c: &Connection, name: &str) -> Result<Option<SourceRow>, StateError> {
    let row = c
        .query_row(
            "SELECT id, kind, cursor, delivered, duplicates, updated, max_event,
                    requests, rate_limited, waited_ms
             FROM sources WHERE name = ?1",
            params![name],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    SourceRow {
                        name: name.to_string(),
                        kind: r.get(1)?,
                        cursor: r.get(2)?,
                        delivered: r.get::<_, i64>(3)? as u64,
                        duplicates: r.get::<_, i64>(4)? as u64,
                        keys: 0,
                        updated: r.get(5)?,
                        max_event: r.get(6)?,
                        requests: Requests {
                            sent: r.get::<_, i64>(7)? as u64,
                            rate_limited: r.get::<_, i64>(8)? as u64,
                            waited_ms: r.get::<_, i64>(9)? as u64,
                        },
                    },
                ))
            },
        )
        .optional()?;
    let Some((id, mut row)) = row else {
        return Ok(None);
    };
    row.keys = c.query_row(
        "SELECT coalesce(sum(length(keys)), 0) / 24 FROM key_pages WHERE source = ?1",
        params![id],
        |r| r.get::<_, i64>(0),
    )? as u64;
    Ok(Some(row))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commit_is_atomic_and_cursor_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let st = State::open(&path).unwrap();
        assert_eq!(st.source("a").await.unwrap(), None);
        st.commit(Commit {
            source: "a".into(),
            kind: "domo",
            keys: vec![([1; 16], 100)],
            delivered: 1,
            duplicates: 1,
            cursor: Some(1000),
            prune_before: None,
            max_event: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
        st.commit(Commit {
            source: "a".into(),
            kind: "domo",
            keys: vec![([2; 16], 200)],
            delivered: 1,
            max_event: Some(200),
            ..Default::default()
        })
        .await
        .unwrap();
        st.commit(Commit {
            source: "a".into(),
            kind: "domo",
            cursor: Some(500),
            prune_before: Some(150),
            ..Default::default()
        })
        .await
        .unwrap();
        let row = st.source("a").await.unwrap().unwrap();
        assert_eq!(row.cursor, Some(1000));
        assert_eq!((row.delivered, row.duplicates, row.keys), (2, 1, 1));
        assert_eq!(
            st.known("a", vec![([1; 16], 100), ([2; 16], 200), ([2; 16], 201)])
                .await
                .unwrap(),
            vec![false, true, false]
        );
        assert_eq!(
            st.known("b", vec![([2; 16], 200)]).await.unwrap(),
            vec![false]
        );
        drop(st);
        // Reopening keeps everything and does not re-run migrations.
        let st = State::open(&path).unwrap();
        assert_eq!(st.source("a").await.unwrap().unwrap().cursor, Some(1000));
        st.reset("a", "domo", 150).await.unwrap();
        let row = st.source("a").await.unwrap().unwrap();
        assert_eq!((row.cursor, row.keys), (Some(150), 0));
    }

    #[tokio::test]
    async fn keys_are_stored_a_page_at_a_time_pruned_whole_and_reset_precisely() {
        let dir = tempfile::tempdir().unwrap();
        let st = State::open(&dir.path().join("s.db")).unwrap();
        let page = |keys: Vec<(Key, Nanos)>| Commit {
            source: "a".into(),
            kind: "domo",
            keys,
            ..Default::default()
        };
        // Out of order within a page, and negative times, as they come.
        st.commit(page(vec![
            ([3; 16], 30),
            ([1; 16], -10),
            ([2; 16], 20),
            ([4; 16], 20),
        ]))
        .await
        .unwrap();
        st.commit(page(vec![([5; 16], 50), ([6; 16], 60)]))
            .await
            .unwrap();
        let all = vec![
            ([1; 16], -10),
            ([2; 16], 20),
            ([4; 16], 20),
            ([3; 16], 30),
            ([5; 16], 50),
            ([6; 16], 60),
        ];
        assert_eq!(st.known("a", all.clone()).await.unwrap(), vec![true; 6]);
        let strangers = vec![([1; 16], 20), ([4; 16], -10), ([7; 16], 50), ([6; 16], 61)];
        assert_eq!(st.known("a", strangers).await.unwrap(), vec![false; 4]);
        // Pruning before 25 keeps the first page whole (it reaches 30), older keys included.
        let prune = |before| Commit {
            prune_before: Some(before),
            ..page(vec![])
        };
        st.commit(prune(25)).await.unwrap();
        assert_eq!(st.known("a", all.clone()).await.unwrap(), vec![true; 6]);
        assert_eq!(st.source("a").await.unwrap().unwrap().keys, 6);
        // Reset to 20 forgets 20 and later, rewriting the straddling page.
        st.reset("a", "domo", 20).await.unwrap();
        assert_eq!(
            st.known("a", all.clone()).await.unwrap(),
            vec![true, false, false, false, false, false]
        );
        st.commit(page(vec![([2; 16], 20)])).await.unwrap();
        st.commit(prune(31)).await.unwrap();
        // The first page now ends at -10: gone; the new one at 20: gone too.
        assert_eq!(st.known("a", all).await.unwrap(), vec![false; 6]);
        assert_eq!(st.source("a").await.unwrap().unwrap().keys, 0);
    }

    #[tokio::test]
    async fn keys_of_schema_3_move_to_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let c = Connection::open(&path).unwrap();
        for sql in &MIGRATIONS[..3] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", 3).unwrap();
        c.execute("INSERT INTO sources (name, kind) VALUES ('a', 'domo')", [])
            .unwrap();
        let keys = [
            ([1u8; 16], -5i64),
            ([2; 16], 0),
            ([3; 16], 1_700_000_000_123_456_789),
        ];
        for (k, t) in keys {
            c.execute(
                "INSERT INTO keys (source, time, key) VALUES (1, ?1, ?2)",
                params![t, &k[..]],
            )
            .unwrap();
        }
        drop(c);
        let st = State::open(&path).unwrap();
        assert_eq!(st.known("a", keys.to_vec()).await.unwrap(), vec![true; 3]);
        let moved = keys.iter().map(|(k, t)| (*k, t + 1)).collect();
        assert_eq!(st.known("a", moved).await.unwrap(), vec![false; 3]);
        assert_eq!(st.source("a").await.unwrap().unwrap().keys, 3);
    }

    #[tokio::test]
    async fn a_state_of_schema_1_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(MIGRATIONS[0]).unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        c.execute(
            "INSERT INTO sources (name, kind, cursor, delivered) VALUES ('a', 'domo', 77, 5)",
            [],
        )
        .unwrap();
        // A source with keys from before max_event existed.
        c.execute(
            "INSERT INTO sources (name, kind, cursor, delivered) VALUES ('k', 'domo', 900, 2)",
            [],
        )
        .unwrap();
        for (k, t) in [([4u8; 16], 700i64), ([5; 16], 650)] {
            c.execute(
                "INSERT INTO keys (source, key, time) VALUES (2, ?1, ?2)",
                params![&k[..], t],
            )
            .unwrap();
        }
        drop(c);
        let st = State::open(&path).unwrap();
        let row = st.source("a").await.unwrap().unwrap();
        assert_eq!(
            (row.cursor, row.delivered, row.max_event),
            (Some(77), 5, None)
        );
        // Its keys are kept, and max_event covers them, so the poller will look them up.
        let row = st.source("k").await.unwrap().unwrap();
        assert_eq!((row.max_event, row.keys), (Some(700), 2));
        assert_eq!(
            st.known("k", vec![([4; 16], 700), ([5; 16], 650)])
                .await
                .unwrap(),
            vec![true, true]
        );
        st.commit(Commit {
            source: "a".into(),
            kind: "domo",
            keys: vec![([9; 16], 90)],
            delivered: 1,
            max_event: Some(90),
            ..Default::default()
        })
        .await
        .unwrap();
        st.commit(Commit {
            source: "a".into(),
            kind: "domo",
            max_event: Some(10),
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(st.source("a").await.unwrap().unwrap().max_event, Some(90));
        let v: i64 = st
            .call(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
    }

    /// Whatever order it is given, nearly sorted or not at all, the result is sorted.
    #[test]
    fn nearly_sorted_keys_are_sorted_in_any_case() {
        let mut rng = fastrand::Rng::with_seed(3);
        for case in 0..400 {
            let n = rng.usize(0..300);
            let mut v: Vec<(i64, u8)> = (0..n).map(|i| (i as i64 / 3, rng.u8(..))).collect();
            match case % 4 {
                0 => {}                   // in order, ties in any order
                1 => v.reverse(),         // the other way: gives up and sorts
                2 => rng.shuffle(&mut v), // no order at all
                _ => {
                    // A few elements far out of place.
                    for _ in 0..3.min(n) {
                        let (a, b) = (rng.usize(0..n), rng.usize(0..n));
                        v.swap(a, b);
                    }
                }
            }
            let mut want = v.clone();
            want.sort_unstable();
            sort_nearly_sorted(&mut v);
            assert_eq!(v, want, "case {case}");
        }
    }

    fn page(source: &str, sinks: &[&str], events: u32, tag: u8) -> Commit {
        let records = bytes::Bytes::from(vec![tag; 10 * events as usize]);
        Commit {
            source: source.into(),
            kind: "domo",
            keys: vec![([tag; 16], tag as Nanos)],
            delivered: events as u64,
            queued: sinks
                .iter()
                .map(|s| Queued {
                    sink: s.to_string(),
                    events,
                    records: records.clone(),
                })
                .collect(),
            cursor: Some(tag as Nanos * 10),
            ..Default::default()
        }
    }

    /// A page's events are queued for each of its sinks in the page's own commit, and each
    /// sink takes them in commit order, from its own queue, a batch within its limits.
    #[tokio::test]
    async fn a_page_commit_queues_for_every_sink_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let st = State::open(&dir.path().join("s.db")).unwrap();
        st.commit(page("a", &["file", "siem"], 3, 1)).await.unwrap();
        st.commit(page("b", &["siem"], 2, 2)).await.unwrap();
        st.commit(page("a", &["file", "siem"], 4, 3)).await.unwrap();
        let totals = st.queue_totals().await.unwrap();
        let t = |n: &str| totals.iter().find(|t| t.sink == n).unwrap().clone();
        assert_eq!(
            (t("file").chunks, t("file").events, t("file").bytes),
            (2, 7, 70)
        );
        assert_eq!(
            (t("siem").chunks, t("siem").events, t("siem").bytes),
            (3, 9, 90)
        );
        assert!(t("siem").oldest.is_some());
        // Commit order across sources, whole chunks, at least one however small the limits.
        let all = st.take("siem", vec![], 100, 1 << 20).await.unwrap();
        let seen: Vec<(&str, u32, u8)> = all
            .iter()
            .map(|c| (c.source.as_str(), c.events, c.records[0]))
            .collect();
        assert_eq!(seen, vec![("a", 3, 1), ("b", 2, 2), ("a", 4, 3)]);
        assert_eq!(all[0].kind, "domo");
        assert_eq!(st.take("siem", vec![], 5, 1 << 20).await.unwrap().len(), 2);
        assert_eq!(st.take("siem", vec![], 1, 1).await.unwrap().len(), 1);
        assert_eq!(
            st.take("siem", vec![all[0].id], 100, 45)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(st
            .take("nobody", vec![], 100, 100)
            .await
            .unwrap()
            .is_empty());
        // A commit that fails at its last sink's queue leaves nothing: no other sink's chunk,
        // no keys, no cursor.
        st.call(|c| {
            c.execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON queue
                 WHEN NEW.sink = (SELECT id FROM sink_queues WHERE name = 'siem')
                 BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
            )?;
            Ok(())
        })
        .await
        .unwrap();
        let before = st.queue_totals().await.unwrap();
        let row = st.source("a").await.unwrap();
        assert!(st.commit(page("a", &["file", "siem"], 1, 9)).await.is_err());
        assert_eq!(st.queue_totals().await.unwrap(), before);
        assert_eq!(st.source("a").await.unwrap(), row);
        assert_eq!(
            st.known("a", vec![([9; 16], 9)]).await.unwrap(),
            vec![false]
        );
    }

    /// An ack removes what the sink took and records the sink's position in one commit; the
    /// other sinks' queues are untouched.
    #[tokio::test]
    async fn an_ack_deletes_chunks_and_records_the_file_position_together() {
        let dir = tempfile::tempdir().unwrap();
        let st = State::open(&dir.path().join("s.db")).unwrap();
        for tag in 1..=3 {
            st.commit(page("a", &["file", "siem"], 2, tag))
                .await
                .unwrap();
        }
        let taken = st.take("file", vec![], 4, 1 << 20).await.unwrap();
        assert_eq!(taken.len(), 2);
        let oldest = st
            .ack(Ack {
                sink: "file".into(),
                chunks: vec![taken[0].id, taken[1].id],
                events: 4,
                position: Some(SinkPosition::bare(120)),
                lease: None,
            })
            .await
            .unwrap();
        assert!(oldest.is_some(), "one chunk is left");
        assert_eq!(
            st.sink_position("file").await.unwrap(),
            Some(SinkPosition::bare(120))
        );
        let left = st.take("file", vec![], 100, 1 << 20).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].records[0], 3);
        let totals = st.queue_totals().await.unwrap();
        assert_eq!(totals[0].sink, "file");
        assert_eq!((totals[0].events, totals[0].delivered), (2, 4));
        assert_eq!((totals[1].sink.as_str(), totals[1].events), ("siem", 6));
        let oldest = st
            .ack(Ack {
                sink: "file".into(),
                chunks: vec![left[0].id],
                events: 2,
                position: None,
                lease: None,
            })
            .await
            .unwrap();
        assert_eq!(oldest, None);
        assert_eq!(
            st.sink_position("file").await.unwrap(),
            Some(SinkPosition::bare(120)),
            "an ack without a position keeps the recorded one"
        );
    }

    /// After a queue empties, the next chunk gets a new id: a sink's task that remembers the
    /// last id it delivered never skips a new chunk as delivered.
    #[tokio::test]
    async fn chunk_ids_are_never_reused_after_the_queue_empties() {
        let dir = tempfile::tempdir().unwrap();
        let st = State::open(&dir.path().join("s.db")).unwrap();
        st.commit(page("a", &["file"], 1, 1)).await.unwrap();
        let first = st.take("file", vec![], 10, 1 << 20).await.unwrap()[0].id;
        st.ack(Ack {
            sink: "file".into(),
            chunks: vec![first],
            events: 1,
            position: None,
            lease: None,
        })
        .await
        .unwrap();
        drop(st);
        let st = State::open(&dir.path().join("s.db")).unwrap();
        st.commit(page("a", &["file"], 1, 2)).await.unwrap();
        let next = st.take("file", vec![], 10, 1 << 20).await.unwrap();
        assert_eq!(next.len(), 1);
        assert!(next[0].id > first);
    }

    /// A state written by the release before the queue (schema 6) upgrades in place: its file
    /// positions, rotated files and cursors are kept, and its queues start empty.
    #[tokio::test]
    async fn a_state_of_schema_6_upgrades_with_its_file_positions_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let mut c = Connection::open(&path).unwrap();
            for (i, sql) in MIGRATIONS[..6].iter().enumerate() {
                let tx = c.transaction().unwrap();
                tx.execute_batch(sql).unwrap();
                tx.pragma_update(None, "user_version", (i + 1) as i64)
                    .unwrap();
                tx.commit().unwrap();
            }
            c.execute(
                "INSERT INTO sources (name, kind, cursor, delivered) VALUES ('a', 'domo', 77, 5)",
                [],
            )
            .unwrap();
            c.execute(
                "INSERT INTO sinks (name, position, path, dev, ino, tail)
                 VALUES ('file', 640, '/x/out.ndjson', 3, 9, zeroblob(32))",
                [],
            )
            .unwrap();
            c.execute(
                "INSERT INTO sink_rotated (sink, generation, dev, ino) VALUES ('file', 2, 3, 8)",
                [],
            )
            .unwrap();
        }
        let st = State::open(&path).unwrap();
        let row = st.source("a").await.unwrap().unwrap();
        assert_eq!((row.cursor, row.delivered), (Some(77), 5));
        let pos = st.sink_position("file").await.unwrap().unwrap();
        assert_eq!(pos.position, 640);
        assert_eq!(pos.file.unwrap().ino, 9);
        assert_eq!(st.sink_rotated("file").await.unwrap().len(), 1);
        assert!(st.queue_totals().await.unwrap().is_empty());
        st.commit(page("a", &["file"], 1, 1)).await.unwrap();
        assert_eq!(st.queue_totals().await.unwrap()[0].events, 1);
    }

    #[tokio::test]
    async fn a_commit_to_a_file_deleted_or_replaced_under_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let st = State::open(&path).unwrap();
        let page = || Commit {
            source: "a".into(),
            kind: "domo",
            keys: vec![([1; 16], 100)],
            delivered: 1,
            ..Default::default()
        };
        st.commit(page()).await.unwrap();
        std::fs::remove_file(&path).unwrap();
        let e = st.commit(page()).await.unwrap_err();
        assert!(matches!(e, StateError::Lost { .. }) && e.is_fatal(), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        // Another file put in its place is not the one the agent read either.
        std::fs::write(&path, "").unwrap();
        assert!(matches!(
            st.commit(page()).await,
            Err(StateError::Lost { .. })
        ));
    }

    #[test]
    fn a_damaged_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        std::fs::write(
            &path,
            "not a database at all, but long enough to look like one\n".repeat(100),
        )
        .unwrap();
        let e = State::open(&path).err().unwrap();
        assert!(
            matches!(e, StateError::Damaged { .. }) && e.is_fatal(),
            "{e}"
        );
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        assert!(matches!(
            State::open(&path),
            Err(StateError::TooNew { found: 99, .. })
        ));
    }
}
