//! The state store in PostgreSQL (`agent.state_url`, issue 32): the same tables as the SQLite
//! store's (cursors and counts, dedupe keys a page a row, sink positions and rotated files,
//! the per-sink queues), created by migration 2 of [`crate::lease`]'s schema, one version for
//! the whole PostgreSQL schema.
//!
//! One connection, behind a mutex, does everything: statements run one at a time, in the order
//! the agent asks for them, as on the SQLite store's thread, so queue chunk ids are handed out
//! in commit order. A lost connection (the server restarted) fails the statement that met it
//! with [`StateError::Db`], which the agent retries; the next statement connects again.
//!
//! A page commit is one transaction; a [`Commit`] that names a lease checks it inside that
//! transaction ([`crate::lease::check_held`]) and commits nothing if it is lost
//! ([`StateError::LeaseLost`]).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_postgres::{Client, GenericClient, Statement, Transaction};

use crate::keys::Key;
use crate::state::{
    encode_records, record, records_hold, Ack, Chunk, Commit, FileMark, QueueTotals, Requests,
    RotatedFile, SinkPosition, SourceRow, StateError, RECORD,
};
use crate::timefmt::Nanos;

pub use crate::state::pgtls::{PgUrl, SslMode};

/// Who holds a lease, for `state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub name: String,
    pub holder: String,
    /// Since when (ns since the epoch).
    pub since: i64,
    /// How long until it expires unless renewed.
    pub expires_in_ms: i64,
}

/// The PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct Postgres {
    inner: Arc<Inner>,
}

struct Inner {
    url: PgUrl,
    conn: Mutex<Option<Conn>>,
}

/// A connection and the statements prepared on it.
struct Conn {
    client: Client,
    stmts: HashMap<&'static str, Statement>,
}

/// The statement `sql`, prepared once per connection.
async fn st<C: GenericClient>(
    c: &C,
    stmts: &mut HashMap<&'static str, Statement>,
    sql: &'static str,
) -> Result<Statement, tokio_postgres::Error> {
    if let Some(s) = stmts.get(sql) {
        return Ok(s.clone());
    }
    let s = c.prepare(sql).await?;
    stmts.insert(sql, s.clone());
    Ok(s)
}

fn i(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn u(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Postgres {
    /// Connects and creates or migrates the schema. Fails at once if the database cannot be
    /// reached (see [`Postgres::open_waiting`]).
    pub async fn open(url: PgUrl) -> Result<Postgres, StateError> {
        let pg = Postgres {
            inner: Arc::new(Inner {
                url,
                conn: Mutex::new(None),
            }),
        };
        let mut guard = pg.inner.conn.lock().await;
        let conn = pg.connect(&mut guard).await?;
        crate::lease::migrate(&mut conn.client)
            .await
            .map_err(StateError::from)?;
        drop(guard);
        Ok(pg)
    }

    /// [`Postgres::open`], waiting for a database that cannot be reached yet (down, restarting,
    /// not yet created by its operator): tries again with the agent's backoff, saying so in the
    /// log, until it opens or `cancel` is cancelled — or, with `attempts` (`run --once`, which
    /// cron starts again later), until that many have failed. A schema newer than this build
    /// knows is not waited for.
    pub async fn open_waiting(
        url: PgUrl,
        retry: &crate::retry::RetryConfig,
        cancel: &tokio_util::sync::CancellationToken,
        attempts: Option<usize>,
    ) -> Result<Postgres, StateError> {
        let mut delay = retry.initial;
        let mut attempt = 0u32;
        loop {
            match Postgres::open(url.clone()).await {
                Ok(pg) => {
                    if attempt > 0 {
                        tracing::info!(state = %url, attempts = attempt + 1, "state database reached");
                    }
                    return Ok(pg);
                }
                Err(e @ StateError::DbTooNew { .. }) => return Err(e),
                Err(e) => {
                    attempt += 1;
                    if attempts.is_some_and(|n| attempt as usize >= n) {
                        return Err(e);
                    }
                    tracing::warn!(state = %url, error = %e, retry_in_ms = delay.as_millis() as u64,
                        "cannot open the state database; waiting for it (nothing is read until it opens)");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = cancel.cancelled() => return Err(e),
                    }
                    delay = (delay * 2).min(retry.max_delay);
                }
            }
        }
    }

    /// The URL without its password, for messages.
    pub fn url(&self) -> &PgUrl {
        &self.inner.url
    }

    /// The connection, made (again) if there is none or it was lost.
    async fn connect<'a>(&self, slot: &'a mut Option<Conn>) -> Result<&'a mut Conn, StateError> {
        if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
            *slot = None;
            let client = self.inner.url.connect().await?;
            *slot = Some(Conn {
                client,
                stmts: HashMap::new(),
            });
        }
        Ok(slot.as_mut().expect("connected above"))
    }

    /// Runs `f` on the connection; a failure that closed it drops it (the next call connects).
    async fn with<R>(
        &self,
        f: impl for<'c> FnOnce(
            &'c mut Conn,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<R, StateError>> + Send + 'c>,
        >,
    ) -> Result<R, StateError> {
        let mut guard = self.inner.conn.lock().await;
        let conn = self.connect(&mut guard).await?;
        let r = f(conn).await;
        if r.is_err() && guard.as_ref().is_some_and(|c| c.client.is_closed()) {
            *guard = None;
        }
        r
    }

    /// One round trip (`SELECT 1`): whether the database answers now.
    pub async fn ping(&self) -> Result<(), StateError> {
        self.with(|c| {
            Box::pin(async move {
                c.client.query_one("SELECT 1", &[]).await?;
                Ok(())
            })
        })
        .await
    }

    /// The schema version the database holds (0 before the first migration).
    pub async fn schema_version(&self) -> Result<i64, StateError> {
        self.with(|c| {
            Box::pin(async move {
                let row = c
                    .client
                    .query_one(
                        "SELECT COALESCE(MAX(version), 0)::int8 FROM auditship_schema",
                        &[],
                    )
                    .await?;
                Ok(row.get(0))
            })
        })
        .await
    }

    /// The replicas whose heartbeat has not expired (`state reset` refuses to run beside them).
    pub async fn live_replicas(&self) -> Result<Vec<String>, StateError> {
        self.with(move |c| {
            Box::pin(async move {
                let rows = c
                    .client
                    .query(
                        "SELECT id FROM replicas WHERE expires > now() ORDER BY id",
                        &[],
                    )
                    .await?;
                Ok(rows.into_iter().map(|r| r.get(0)).collect())
            })
        })
        .await
    }

    /// Who holds each lease (`source:<name>`, `sink:<name>`) and since when (ns), for `state`:
    /// only leases held and not expired.
    pub async fn holders(&self) -> Result<Vec<LeaseHolder>, StateError> {
        self.with(move |c| {
            Box::pin(async move {
                let rows = c
                    .client
                    .query(
                        "SELECT name, holder,
                                (extract(epoch FROM since) * 1e9)::bigint,
                                (extract(epoch FROM expires - now()) * 1e3)::bigint
                         FROM leases WHERE holder IS NOT NULL AND expires > now() ORDER BY name",
                        &[],
                    )
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| LeaseHolder {
                        name: r.get(0),
                        holder: r.get(1),
                        since: r.get(2),
                        expires_in_ms: r.get(3),
                    })
                    .collect())
            })
        })
        .await
    }

    pub async fn source(&self, name: &str) -> Result<Option<SourceRow>, StateError> {
        let name = name.to_string();
        self.with(move |c| {
            Box::pin(async move { source_row(&c.client, &mut c.stmts, &name).await })
        })
        .await
    }

    pub async fn sources(&self) -> Result<Vec<SourceRow>, StateError> {
        self.with(|c| {
            Box::pin(async move {
                let names: Vec<String> = c
                    .client
                    .query("SELECT name FROM sources ORDER BY name", &[])
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let mut rows = Vec::new();
                for n in names {
                    rows.extend(source_row(&c.client, &mut c.stmts, &n).await?);
                }
                Ok(rows)
            })
        })
        .await
    }

    pub async fn known(
        &self,
        source: &str,
        keys: Vec<(Key, Nanos)>,
    ) -> Result<Vec<bool>, StateError> {
        let source = source.to_string();
        self.with(move |c| {
            Box::pin(async move {
                let mut found = vec![false; keys.len()];
                let (Some(lo), Some(hi)) = (
                    keys.iter().map(|k| k.1).min(),
                    keys.iter().map(|k| k.1).max(),
                ) else {
                    return Ok(found);
                };
                let s = st(
                    &c.client,
                    &mut c.stmts,
                    "SELECT p.min_time, p.max_time, p.keys FROM key_pages p
                     JOIN sources s ON s.id = p.source
                     WHERE s.name = $1 AND p.max_time >= $2 AND p.min_time <= $3",
                )
                .await?;
                for row in c.client.query(&s, &[&source, &lo, &hi]).await? {
                    let (min, max): (Nanos, Nanos) = (row.get(0), row.get(1));
                    let blob: &[u8] = row.get(2);
                    for ((k, t), f) in keys.iter().zip(found.iter_mut()) {
                        if !*f && min <= *t && *t <= max {
                            *f = records_hold(blob, *t, k);
                        }
                    }
                }
                Ok(found)
            })
        })
        .await
    }

    pub async fn commit(&self, commit: Commit) -> Result<(), StateError> {
        self.with(move |c| {
            Box::pin(async move {
                let Conn { client, stmts } = c;
                let tx = client.transaction().await?;
                if let Some(lease) = &commit.lease {
                    crate::lease::check_held(&tx, lease).await?;
                }
                let id = ensure_source(&tx, stmts, &commit.source, commit.kind).await?;
                if let (Some(min), Some(max)) = (
                    commit.keys.iter().map(|k| k.1).min(),
                    commit.keys.iter().map(|k| k.1).max(),
                ) {
                    let s = st(
                        &tx,
                        stmts,
                        "INSERT INTO key_pages (source, min_time, max_time, keys) VALUES ($1, $2, $3, $4)",
                    )
                    .await?;
                    tx.execute(&s, &[&id, &min, &max, &encode_records(&commit.keys)])
                        .await?;
                }
                // GREATEST ignores NULLs: the cursor and max_event never move backwards.
                let s = st(
                    &tx,
                    stmts,
                    "UPDATE sources SET delivered = delivered + $2, duplicates = duplicates + $3,
                        cursor = GREATEST(cursor, $4), max_event = GREATEST(max_event, $6),
                        updated = $5, requests = requests + $7,
                        rate_limited = rate_limited + $8, waited_ms = waited_ms + $9
                     WHERE id = $1",
                )
                .await?;
                tx.execute(
                    &s,
                    &[
                        &id,
                        &i(commit.delivered),
                        &i(commit.duplicates),
                        &commit.cursor,
                        &crate::timefmt::now(),
                        &commit.max_event,
                        &i(commit.requests.sent),
                        &i(commit.requests.rate_limited),
                        &i(commit.requests.waited_ms),
                    ],
                )
                .await?;
                for (sink, pos) in &commit.positions {
                    put_sink_position(&tx, stmts, sink, pos).await?;
                }
                let enqueued = crate::timefmt::now();
                for q in &commit.queued {
                    let sink = ensure_sink_queue(&tx, stmts, &q.sink).await?;
                    let s = st(
                        &tx,
                        stmts,
                        "INSERT INTO queue (sink, source, events, bytes, enqueued, records)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .await?;
                    tx.execute(
                        &s,
                        &[
                            &sink,
                            &id,
                            &i64::from(q.events),
                            &(q.records.len() as i64),
                            &enqueued,
                            &&q.records[..],
                        ],
                    )
                    .await?;
                }
                if let Some(before) = commit.prune_before {
                    let s = st(
                        &tx,
                        stmts,
                        "DELETE FROM key_pages WHERE source = $1 AND max_time < $2",
                    )
                    .await?;
                    tx.execute(&s, &[&id, &before]).await?;
                }
                tx.commit().await?;
                Ok(())
            })
        })
        .await
    }

    pub async fn take(
        &self,
        sink: &str,
        skip: Vec<i64>,
        max_events: u64,
        max_bytes: u64,
    ) -> Result<Vec<Chunk>, StateError> {
        let sink = sink.to_string();
        self.with(move |c| {
            Box::pin(async move {
                let s = st(
                    &c.client,
                    &mut c.stmts,
                    "SELECT q.id, q.events, q.bytes FROM queue q JOIN sink_queues k ON k.id = q.sink
                     WHERE k.name = $1 ORDER BY q.id",
                )
                .await?;
                let (mut ids, mut events, mut bytes) = (Vec::new(), 0u64, 0u64);
                for r in c.client.query(&s, &[&sink]).await? {
                    let (id, n, b): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
                    if skip.contains(&id) {
                        continue;
                    }
                    if !ids.is_empty() && (events + u(n) > max_events || bytes + u(b) > max_bytes) {
                        break;
                    }
                    ids.push(id);
                    events += u(n);
                    bytes += u(b);
                }
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let s = st(
                    &c.client,
                    &mut c.stmts,
                    "SELECT q.id, s.name, s.kind, q.events, q.records
                     FROM queue q JOIN sources s ON s.id = q.source
                     WHERE q.id = ANY($1) ORDER BY q.id",
                )
                .await?;
                Ok(c.client
                    .query(&s, &[&ids])
                    .await?
                    .into_iter()
                    .map(|r| Chunk {
                        id: r.get(0),
                        source: r.get(1),
                        kind: r.get(2),
                        events: r.get::<_, i64>(3) as u32,
                        records: r.get(4),
                    })
                    .collect())
            })
        })
        .await
    }

    pub async fn ack(&self, ack: Ack) -> Result<Option<Nanos>, StateError> {
        self.with(move |c| {
            Box::pin(async move {
                let Conn { client, stmts } = c;
                let tx = client.transaction().await?;
                if let Some(lease) = &ack.lease {
                    crate::lease::check_held(&tx, lease).await?;
                }
                let sink = ensure_sink_queue(&tx, stmts, &ack.sink).await?;
                let s = st(
                    &tx,
                    stmts,
                    "DELETE FROM queue WHERE sink = $1 AND id = ANY($2)",
                )
                .await?;
                tx.execute(&s, &[&sink, &ack.chunks]).await?;
                let s = st(
                    &tx,
                    stmts,
                    "UPDATE sink_queues SET delivered = delivered + $2, updated = $3 WHERE id = $1",
                )
                .await?;
                tx.execute(&s, &[&sink, &i(ack.events), &crate::timefmt::now()])
                    .await?;
                if let Some(pos) = &ack.position {
                    put_sink_position(&tx, stmts, &ack.sink, pos).await?;
                }
                let s = st(
                    &tx,
                    stmts,
                    "SELECT enqueued FROM queue WHERE sink = $1 ORDER BY id LIMIT 1",
                )
                .await?;
                let oldest = tx.query_opt(&s, &[&sink]).await?.map(|r| r.get(0));
                tx.commit().await?;
                Ok(oldest)
            })
        })
        .await
    }

    pub async fn queue_totals(&self) -> Result<Vec<QueueTotals>, StateError> {
        self.with(|c| {
            Box::pin(async move {
                let rows = c
                    .client
                    .query(
                        "SELECT k.name, k.delivered, count(q.id), coalesce(sum(q.events), 0)::bigint,
                                coalesce(sum(q.bytes), 0)::bigint, min(q.enqueued)
                         FROM sink_queues k LEFT JOIN queue q ON q.sink = k.id
                         GROUP BY k.id, k.name, k.delivered ORDER BY k.name",
                        &[],
                    )
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| QueueTotals {
                        sink: r.get(0),
                        delivered: u(r.get(1)),
                        chunks: u(r.get(2)),
                        events: u(r.get(3)),
                        bytes: u(r.get(4)),
                        oldest: r.get(5),
                    })
                    .collect())
            })
        })
        .await
    }

    pub async fn sink_position(&self, sink: &str) -> Result<Option<SinkPosition>, StateError> {
        let sink = sink.to_string();
        self.with(move |c| {
            Box::pin(async move {
                let row = c
                    .client
                    .query_opt(
                        "SELECT position, path, dev, ino, tail FROM sinks WHERE name = $1",
                        &[&sink],
                    )
                    .await?;
                Ok(row.map(|r| {
                    let (path, dev, ino, tail): (
                        Option<String>,
                        Option<i64>,
                        Option<i64>,
                        Option<Vec<u8>>,
                    ) = (r.get(1), r.get(2), r.get(3), r.get(4));
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
                    SinkPosition {
                        position: u(r.get(0)),
                        file,
                        rotated: None,
                        forget_rotated_before: None,
                    }
                }))
            })
        })
        .await
    }

    pub async fn sink_rotated(&self, sink: &str) -> Result<Vec<RotatedFile>, StateError> {
        let sink = sink.to_string();
        self.with(move |c| {
            Box::pin(async move {
                let rows = c
                    .client
                    .query(
                        "SELECT generation, dev, ino FROM sink_rotated WHERE sink = $1 ORDER BY generation",
                        &[&sink],
                    )
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| RotatedFile {
                        generation: r.get::<_, i64>(0) as u64,
                        dev: r.get::<_, i64>(1) as u64,
                        ino: r.get::<_, i64>(2) as u64,
                    })
                    .collect())
            })
        })
        .await
    }

    pub async fn set_sink_position(&self, sink: &str, pos: SinkPosition) -> Result<(), StateError> {
        let sink = sink.to_string();
        self.with(move |c| {
            Box::pin(async move {
                let Conn { client, stmts } = c;
                let tx = client.transaction().await?;
                put_sink_position(&tx, stmts, &sink, &pos).await?;
                tx.commit().await?;
                Ok(())
            })
        })
        .await
    }

    pub async fn reset(
        &self,
        source: &str,
        kind: &'static str,
        to: Nanos,
    ) -> Result<(), StateError> {
        let source = source.to_string();
        self.with(move |c| {
            Box::pin(async move {
                let Conn { client, stmts } = c;
                let tx = client.transaction().await?;
                let id = ensure_source(&tx, stmts, &source, kind).await?;
                tx.execute(
                    "UPDATE sources SET cursor = $2, updated = $3 WHERE id = $1",
                    &[&id, &to, &crate::timefmt::now()],
                )
                .await?;
                let straddling = tx
                    .query(
                        "SELECT id, keys FROM key_pages WHERE source = $1 AND min_time < $2 AND max_time >= $2",
                        &[&id, &to],
                    )
                    .await?;
                tx.execute(
                    "DELETE FROM key_pages WHERE source = $1 AND min_time >= $2",
                    &[&id, &to],
                )
                .await?;
                for r in straddling {
                    let (row, blob): (i64, Vec<u8>) = (r.get(0), r.get(1));
                    let kept: Vec<(Key, Nanos)> = (0..blob.len() / RECORD)
                        .map(|i| record(&blob, i))
                        .filter(|(t, _)| *t < to)
                        .map(|(t, k)| (k.try_into().expect("16 bytes"), t))
                        .collect();
                    match kept.iter().map(|k| k.1).max() {
                        Some(max) => {
                            tx.execute(
                                "UPDATE key_pages SET max_time = $2, keys = $3 WHERE id = $1",
                                &[&row, &max, &encode_records(&kept)],
                            )
                            .await?
                        }
                        None => {
                            tx.execute("DELETE FROM key_pages WHERE id = $1", &[&row])
                                .await?
                        }
                    };
                }
                tx.commit().await?;
                Ok(())
            })
        })
        .await
    }
}

async fn source_row(
    c: &Client,
    stmts: &mut HashMap<&'static str, Statement>,
    name: &str,
) -> Result<Option<SourceRow>, StateError> {
    let s = st(
        c,
        stmts,
        "SELECT id, kind, cursor, delivered, duplicates, updated, max_event,
                requests, rate_limited, waited_ms,
                (SELECT coalesce(sum(length(keys)), 0) / 24 FROM key_pages WHERE source = sources.id)::bigint
         FROM sources WHERE name = $1",
    )
    .await?;
    Ok(c.query_opt(&s, &[&name]).await?.map(|r| SourceRow {
        name: name.to_string(),
        kind: r.get(1),
        cursor: r.get(2),
        delivered: u(r.get(3)),
        duplicates: u(r.get(4)),
        keys: u(r.get(10)),
        updated: r.get(5),
        max_event: r.get(6),
        requests: Requests {
            sent: u(r.get(7)),
            rate_limited: u(r.get(8)),
            waited_ms: u(r.get(9)),
        },
    }))
}

async fn ensure_source(
    tx: &Transaction<'_>,
    stmts: &mut HashMap<&'static str, Statement>,
    name: &str,
    kind: &str,
) -> Result<i64, StateError> {
    let s = st(tx, stmts, "SELECT id FROM sources WHERE name = $1").await?;
    if let Some(r) = tx.query_opt(&s, &[&name]).await? {
        return Ok(r.get(0));
    }
    let s = st(
        tx,
        stmts,
        "INSERT INTO sources (name, kind) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
    )
    .await?;
    Ok(tx.query_one(&s, &[&name, &kind]).await?.get(0))
}

async fn ensure_sink_queue(
    tx: &Transaction<'_>,
    stmts: &mut HashMap<&'static str, Statement>,
    name: &str,
) -> Result<i64, StateError> {
    let s = st(tx, stmts, "SELECT id FROM sink_queues WHERE name = $1").await?;
    if let Some(r) = tx.query_opt(&s, &[&name]).await? {
        return Ok(r.get(0));
    }
    let s = st(
        tx,
        stmts,
        "INSERT INTO sink_queues (name) VALUES ($1)
         ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
    )
    .await?;
    Ok(tx.query_one(&s, &[&name]).await?.get(0))
}

async fn put_sink_position(
    tx: &Transaction<'_>,
    stmts: &mut HashMap<&'static str, Statement>,
    sink: &str,
    pos: &SinkPosition,
) -> Result<(), StateError> {
    let file = pos.file.as_ref();
    let s = st(
        tx,
        stmts,
        "INSERT INTO sinks (name, position, path, dev, ino, tail) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, path = EXCLUDED.path,
            dev = EXCLUDED.dev, ino = EXCLUDED.ino, tail = EXCLUDED.tail",
    )
    .await?;
    tx.execute(
        &s,
        &[
            &sink,
            &i(pos.position),
            &file.map(|f| f.path.as_str()),
            &file.map(|f| f.dev as i64),
            &file.map(|f| f.ino as i64),
            &file.map(|f| &f.tail[..]),
        ],
    )
    .await?;
    if let Some(r) = pos.rotated {
        tx.execute(
            "INSERT INTO sink_rotated (sink, generation, dev, ino) VALUES ($1, $2, $3, $4)
             ON CONFLICT (sink, generation) DO UPDATE SET dev = EXCLUDED.dev, ino = EXCLUDED.ino",
            &[
                &sink,
                &(r.generation as i64),
                &(r.dev as i64),
                &(r.ino as i64),
            ],
        )
        .await?;
    }
    if let Some(g) = pos.forget_rotated_before {
        tx.execute(
            "DELETE FROM sink_rotated WHERE sink = $1 AND generation < $2",
            &[&sink, &(g as i64)],
        )
        .await?;
    }
    Ok(())
}
