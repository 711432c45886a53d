//! Leases in PostgreSQL: which replica polls which source and drains which sink's queue, for
//! several agents that share one database (issue 32). The agent's side (a tick task, the
//! pollers and sinks' tasks started and stopped by their leases) is the `replicas` module.
//!
//! # How leases move
//! Every replica runs the same config, so each knows every lease name (`source:<name>` and
//! `sink:<name>`). One row a name in `leases`: its `holder` (a replica's id, NULL when free),
//! `epoch` (a fencing number, one more at each change of holder), `since` and `expires`. One row
//! a replica in `replicas`, its heartbeat. A replica calls [`Leases::tick`] every
//! `lease_ttl / 3` or so; one tick is, in this order:
//! 1. **heartbeat**: its `replicas` row's `expires` set to `now() + ttl`; the live replicas are
//!    those whose `expires` is still ahead.
//! 2. **renew**: `expires = now() + ttl` on the rows it holds, only where `holder` and `epoch`
//!    are still its own and `expires` is still ahead. A row not renewed is lost: the replica
//!    stops using it even if nobody took it yet (it takes it again, with a new epoch).
//! 3. **give back**: its fair share is the number of names ÷ live replicas, rounded up
//!    ([`fair_share`]); what it holds beyond that is set aside — no longer [`Leases::held`],
//!    so the replica's tasks under it stop — and released (`holder = NULL`) at the next tick,
//!    once they have; a replica that joins finds free rows then.
//! 4. **acquire**: up to its fair share, rows that are free or expired (below), or still
//!    naming this replica's id from a previous run (a restart with a fixed `replica_id`).
//!
//! A replica that stops renewing (killed, partitioned, its node lost) loses its rows at
//! `expires`; its heartbeat expires with them, the others' fair share grows, and their next
//! tick takes the rows over. Takeover therefore comes within `ttl` + one tick interval.
//!
//! # Race-free acquire, on the database's clock
//! Every time is the database's `now()`, never a replica's clock: replicas on machines whose
//! clocks disagree still agree on when a lease expires. Acquire is one statement:
//! ```sql
//! WITH c AS (SELECT name FROM leases
//!            WHERE name = ANY($names) AND (holder IS NULL OR expires <= now())
//!            ORDER BY name LIMIT $want FOR UPDATE SKIP LOCKED)
//! UPDATE leases l SET holder = $me, epoch = l.epoch + 1, since = now(), expires = now() + ttl
//! FROM c WHERE l.name = c.name AND (l.holder IS NULL OR l.expires <= now())
//! RETURNING l.name, l.epoch
//! ```
//! The row lock of `FOR UPDATE` lets one replica at a time change a row; `SKIP LOCKED` makes the
//! others pass over it (to another free row) rather than wait; the `WHERE` of the `UPDATE` is
//! evaluated again on the locked row, so a row renewed or taken in the meantime is not taken.
//!
//! # The replica's own view: a deadline on its monotonic clock
//! A replica that cannot reach the database cannot know whether its rows expired. So each held
//! lease also has a local deadline: the instant the renewing statement was *sent* plus `ttl`.
//! The database set `expires` at the statement's start, later than that, so the local deadline
//! always passes first: once it has, [`Leases::held`] no longer lists the lease and the replica
//! must stop polling that source, whether or not the database is reachable. (This assumes the
//! two clocks run at the same rate over one `ttl`, not that they agree on the time.)
//!
//! # Commits only under a lease still held
//! [`check_held`] runs inside the transaction that commits a page (its cursor, dedupe keys,
//! queued events): it reads the lease row `FOR SHARE` where holder and epoch are still the
//! committer's and `expires` is ahead of `clock_timestamp()` (the time of the check, not of the
//! transaction's start), and fails with [`LeaseError::Lost`] otherwise, so the caller rolls
//! back. The share lock stays until the transaction ends: a takeover's `FOR UPDATE SKIP LOCKED`
//! passes over the row until then, so the lease cannot move between the check and the commit.
//!
//! # Schema
//! Created and migrated by [`migrate`], versioned in `auditship_schema` like the SQLite state's
//! `user_version`, under a transaction-scoped advisory lock so that replicas starting together
//! migrate once. A database whose schema is newer than this build knows is refused.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, Config, NoTls, Transaction};

/// Each migration brings the schema from its index to its index + 1.
const MIGRATIONS: &[&str] = &[
    // 1: leases and replicas' heartbeats.
    "CREATE TABLE leases (
        name text PRIMARY KEY,
        holder text,
        epoch bigint NOT NULL DEFAULT 0,
        since timestamptz,
        expires timestamptz NOT NULL DEFAULT '-infinity'
    );
    CREATE TABLE replicas (
        id text PRIMARY KEY,
        started timestamptz NOT NULL DEFAULT now(),
        expires timestamptz NOT NULL
    );",
    // 2: the state store (src/state/postgres.rs): the SQLite store's tables at its schema 8, times in
    // ns as there. Queue ids from a sequence, never handed out twice (SQLite's AUTOINCREMENT).
    "CREATE TABLE sources (
        id bigserial PRIMARY KEY,
        name text NOT NULL UNIQUE,
        kind text NOT NULL,
        cursor bigint,
        delivered bigint NOT NULL DEFAULT 0,
        duplicates bigint NOT NULL DEFAULT 0,
        updated bigint,
        max_event bigint,
        requests bigint NOT NULL DEFAULT 0,
        rate_limited bigint NOT NULL DEFAULT 0,
        waited_ms bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE key_pages (
        id bigserial PRIMARY KEY,
        source bigint NOT NULL REFERENCES sources (id),
        min_time bigint NOT NULL,
        max_time bigint NOT NULL,
        keys bytea NOT NULL
    );
    CREATE INDEX key_pages_by_time ON key_pages (source, max_time);
    CREATE TABLE sinks (
        name text PRIMARY KEY,
        position bigint NOT NULL,
        path text,
        dev bigint,
        ino bigint,
        tail bytea
    );
    CREATE TABLE sink_rotated (
        sink text NOT NULL,
        generation bigint NOT NULL,
        dev bigint NOT NULL,
        ino bigint NOT NULL,
        PRIMARY KEY (sink, generation)
    );
    CREATE TABLE sink_queues (
        id bigserial PRIMARY KEY,
        name text NOT NULL UNIQUE,
        delivered bigint NOT NULL DEFAULT 0,
        updated bigint
    );
    CREATE TABLE queue (
        id bigserial PRIMARY KEY,
        sink bigint NOT NULL REFERENCES sink_queues (id),
        source bigint NOT NULL REFERENCES sources (id),
        events bigint NOT NULL,
        bytes bigint NOT NULL,
        enqueued bigint NOT NULL,
        records bytea NOT NULL
    );
    CREATE INDEX queue_by_sink ON queue (sink, id) INCLUDE (events, bytes, enqueued);",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Any number: the advisory lock that serialises migrations between replicas.
const MIGRATION_LOCK: i64 = 0x6175_6469_7473_6870; // "auditshp"

/// Failures of the lease store.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The database could not be reached or refused a statement. The text is tokio-postgres's,
    /// which never includes the password of the URL.
    #[error("state database: {}", pg_text(.0))]
    Db(#[from] tokio_postgres::Error),
    /// Connecting failed before a statement (TLS, or the store's own connect's error text).
    #[error("{0}")]
    Connect(String),
    #[error("state database has schema {found}, newer than this auditship knows ({known}); upgrade every replica")]
    TooNew { found: i64, known: i64 },
    /// The lease is no longer this replica's (expired, taken over, released): nothing may be
    /// committed under it.
    #[error("lease {name} (epoch {epoch}) is no longer held by {holder}")]
    Lost {
        name: String,
        holder: String,
        epoch: i64,
    },
}

/// A tokio-postgres error with its causes (its own text is only the kind: "db error"). No
/// cause quotes the URL or its password.
pub fn pg_text(e: &tokio_postgres::Error) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Creates the schema or brings it to [`SCHEMA_VERSION`]; returns the version found before.
pub async fn migrate(client: &mut Client) -> Result<i64, LeaseError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    // Not the "already exists, skipping" NOTICE at every start, in the agent's log at INFO.
    tx.batch_execute(
        "SET LOCAL client_min_messages = warning; \
         CREATE TABLE IF NOT EXISTS auditship_schema (version bigint NOT NULL)",
    )
    .await?;
    let found: i64 = match tx
        .query_opt("SELECT version FROM auditship_schema", &[])
        .await?
    {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO auditship_schema (version) VALUES (0)", &[])
                .await?;
            0
        }
    };
    if found > SCHEMA_VERSION {
        return Err(LeaseError::TooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for sql in &MIGRATIONS[found as usize..] {
        tx.batch_execute(sql).await?;
    }
    tx.execute(
        "UPDATE auditship_schema SET version = $1",
        &[&SCHEMA_VERSION],
    )
    .await?;
    tx.commit().await?;
    Ok(found)
}

/// The most leases one replica takes: `names` ÷ `live` replicas, rounded up (all of them when
/// no replica is counted live yet).
pub fn fair_share(names: usize, live: usize) -> usize {
    if live == 0 {
        names
    } else {
        names.div_ceil(live)
    }
}

/// A lease this replica holds: what a commit under it names ([`check_held`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub epoch: i64,
}

/// A held lease's local deadline: past it, the replica must act as if the lease were lost.
#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: i64,
    deadline: Instant,
}

/// What one tick did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tick {
    /// Live replicas counted, this one included.
    pub live: usize,
    /// The fair share computed from them.
    pub share: usize,
    pub acquired: Vec<String>,
    /// Given back in the database (set aside by the tick before).
    pub released: Vec<String>,
    /// Beyond the fair share: no longer held, given back at the next tick.
    pub set_aside: Vec<String>,
    /// Held before and not renewed: expired or taken over.
    pub lost: Vec<String>,
}

/// Connects as the agent's state store does (its URL and TLS mode), giving the error's text.
pub type Connector = Box<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Client, String>> + Send>>
        + Send
        + Sync,
>;

/// How a replica's lease connection is made.
enum Connect {
    /// Plain TCP (the tests' servers).
    Plain(Box<Config>),
    /// The agent's `state_url`, with its TLS mode.
    With(Connector),
}

/// One replica's leases, over its own connection (reconnected when lost).
pub struct Leases {
    connect: Connect,
    client: Option<Client>,
    me: String,
    ttl: Duration,
    held: BTreeMap<String, Held>,
    /// Leases set aside by the last tick to be given back at the next one: no longer
    /// [`Leases::held`] (so this replica's tasks under them stop), their rows still naming it
    /// (so nobody else starts on them before they have).
    releasing: BTreeMap<String, i64>,
    /// The names whose rows this replica made sure exist.
    rows: Vec<String>,
}

impl Leases {
    /// A replica named `me` (unique among the replicas sharing the database: a pod's name and
    /// a random suffix), with leases of `ttl`. Connects at the first tick.
    pub fn new(config: Config, me: impl Into<String>, ttl: Duration) -> Leases {
        Leases::connecting(Connect::Plain(Box::new(config)), me.into(), ttl)
    }

    /// [`Leases::new`] connecting with `connect` (the agent's: `state_url`, TLS included).
    pub fn connecting_with(connect: Connector, me: impl Into<String>, ttl: Duration) -> Leases {
        Leases::connecting(Connect::With(connect), me.into(), ttl)
    }

    fn connecting(connect: Connect, me: String, ttl: Duration) -> Leases {
        Leases {
            connect,
            client: None,
            me,
            ttl,
            held: BTreeMap::new(),
            releasing: BTreeMap::new(),
            rows: Vec::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.me
    }

    async fn client(&mut self) -> Result<&mut Client, LeaseError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let client = match &self.connect {
                Connect::Plain(config) => {
                    let (client, conn) = config.connect(NoTls).await?;
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!("state database connection ended: {e}");
                        }
                    });
                    client
                }
                Connect::With(connect) => connect().await.map_err(LeaseError::Connect)?,
            };
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Drops the connection (a tick that did not answer in time): the next tick connects again
    /// and makes sure of the rows. The leases keep their local deadlines.
    pub fn disconnect(&mut self) {
        self.client = None;
        self.rows.clear();
    }

    /// The ttl in seconds, for `now() + $n * interval '1 second'`.
    fn ttl_secs(&self) -> f64 {
        self.ttl.as_secs_f64()
    }

    /// The leases held now: those whose local deadline has not passed.
    pub fn held(&self) -> Vec<Lease> {
        let now = Instant::now();
        self.held
            .iter()
            .filter(|(_, h)| h.deadline > now)
            .map(|(name, h)| Lease {
                name: name.clone(),
                holder: self.me.clone(),
                epoch: h.epoch,
            })
            .collect()
    }

    /// The lease on `name`, if held now.
    pub fn lease(&self, name: &str) -> Option<Lease> {
        let h = self.held.get(name)?;
        (h.deadline > Instant::now()).then(|| Lease {
            name: name.to_string(),
            holder: self.me.clone(),
            epoch: h.epoch,
        })
    }

    /// The local deadline of the lease on `name`: poll it no later than this.
    pub fn deadline(&self, name: &str) -> Option<Instant> {
        self.held.get(name).map(|h| h.deadline)
    }

    /// Heartbeat, renew, give back the excess, acquire up to the fair share of `names` (the
    /// module doc). On an error the connection is dropped (the next tick reconnects) and the
    /// leases keep their local deadlines: a replica that cannot reach the database keeps
    /// polling until they pass, and no longer.
    pub async fn tick(&mut self, names: &[String]) -> Result<Tick, LeaseError> {
        let r = self.tick_inner(names).await;
        if r.is_err() {
            // Reconnect, and make sure of the rows again (a database restored from a backup).
            self.client = None;
            self.rows.clear();
        }
        r
    }

    async fn tick_inner(&mut self, names: &[String]) -> Result<Tick, LeaseError> {
        let ttl = self.ttl_secs();
        let me = self.me.clone();
        let sent = Instant::now();
        let deadline = sent + self.ttl;
        let new_rows = self.rows != names;
        let client = self.client().await?;
        let mut tick = Tick::default();

        client
            .execute(
                "INSERT INTO replicas (id, expires) VALUES ($1, now() + $2::float8 * interval '1 second')
                 ON CONFLICT (id) DO UPDATE SET expires = EXCLUDED.expires",
                &[&me, &ttl],
            )
            .await?;
        if new_rows {
            // Rows for names new to this replica (at its first tick, or a config reload).
            client
                .execute(
                    "INSERT INTO leases (name) SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING",
                    &[&names],
                )
                .await?;
        }
        if new_rows {
            self.rows = names.to_vec();
        }

        // Give back what the last tick set aside: the tasks under those leases stopped when
        // they left `held`, a tick ago.
        if !self.releasing.is_empty() {
            let (give, epochs): (Vec<String>, Vec<i64>) =
                std::mem::take(&mut self.releasing).into_iter().unzip();
            let client = self.client.as_mut().expect("connected above");
            let released = client
                .query(
                    "UPDATE leases l SET holder = NULL, expires = '-infinity'
                     FROM unnest($2::text[], $3::bigint[]) AS g(name, epoch)
                     WHERE l.name = g.name AND l.epoch = g.epoch AND l.holder = $1
                     RETURNING l.name",
                    &[&me, &give, &epochs],
                )
                .await?;
            tick.released = released.into_iter().map(|r| r.get(0)).collect();
        }

        // Renew what is held, at the epoch it was taken with.
        let (held_names, held_epochs): (Vec<String>, Vec<i64>) =
            self.held.iter().map(|(n, h)| (n.clone(), h.epoch)).unzip();
        let client = self.client.as_mut().expect("connected above");
        let renewed = client
            .query(
                "UPDATE leases l SET expires = now() + $2::float8 * interval '1 second'
                 FROM unnest($3::text[], $4::bigint[]) AS h(name, epoch)
                 WHERE l.name = h.name AND l.epoch = h.epoch AND l.holder = $1 AND l.expires > now()
                 RETURNING l.name",
                &[&me, &ttl, &held_names, &held_epochs],
            )
            .await?;
        let mut still = BTreeMap::new();
        for row in renewed {
            let name: String = row.get(0);
            if let Some(h) = self.held.remove(&name) {
                still.insert(
                    name,
                    Held {
                        epoch: h.epoch,
                        deadline,
                    },
                );
            }
        }
        tick.lost = std::mem::take(&mut self.held).into_keys().collect();
        self.held = still;

        // Names no longer configured are given back too.
        let wanted: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
        let mut give: Vec<String> = self
            .held
            .keys()
            .filter(|n| !wanted.contains(n.as_str()))
            .cloned()
            .collect();

        let live: i64 = client
            .query_one("SELECT count(*) FROM replicas WHERE expires > now()", &[])
            .await?
            .get(0);
        tick.live = usize::try_from(live).unwrap_or(1).max(1);
        tick.share = fair_share(names.len(), tick.live);
        let keep = self.held.len() - give.len();
        if keep > tick.share {
            // The excess, from the end of the names held: which ones does not matter, only
            // that a replica gives back the same ones each time (no churn).
            give.extend(
                self.held
                    .keys()
                    .filter(|n| wanted.contains(n.as_str()))
                    .rev()
                    .take(keep - tick.share)
                    .cloned(),
            );
        }
        // Set aside now, given back at the next tick (above): in between, this replica's tasks
        // under them stop, so two replicas never work on one name at once.
        for n in give {
            if let Some(h) = self.held.remove(&n) {
                self.releasing.insert(n.clone(), h.epoch);
                tick.set_aside.push(n);
            }
        }

        let want = tick.share.saturating_sub(self.held.len());
        if want > 0 {
            let want = i64::try_from(want).unwrap_or(i64::MAX);
            let mine: Vec<String> = self
                .held
                .keys()
                .chain(self.releasing.keys())
                .cloned()
                .collect();
            // Rows still naming this replica but not held here are a previous run's of the
            // same id (a restart with a fixed `replica_id`): taken back at once, at a new
            // epoch, so nothing that run had in flight can commit.
            let rows = client
                .query(
                    "WITH c AS (
                        SELECT name FROM leases
                        WHERE name = ANY($3::text[]) AND NOT name = ANY($5::text[])
                          AND (holder IS NULL OR expires <= now() OR holder = $1)
                        ORDER BY name LIMIT $4
                        FOR UPDATE SKIP LOCKED)
                     UPDATE leases l
                     SET holder = $1, epoch = l.epoch + 1, since = now(),
                         expires = now() + $2::float8 * interval '1 second'
                     FROM c WHERE l.name = c.name
                       AND (l.holder IS NULL OR l.expires <= now() OR l.holder = $1)
                     RETURNING l.name, l.epoch",
                    &[&me, &ttl, &names, &want, &mine],
                )
                .await?;
            for row in rows {
                let name: String = row.get(0);
                self.held.insert(
                    name.clone(),
                    Held {
                        epoch: row.get(1),
                        deadline,
                    },
                );
                tick.acquired.push(name);
            }
        }
        Ok(tick)
    }

    /// Gives back every lease and removes the heartbeat (a clean shutdown: the others take the
    /// sources over at their next tick rather than after `ttl`). The leases are dropped locally
    /// first, so they are not used even if the database cannot be reached.
    pub async fn release_all(&mut self) -> Result<(), LeaseError> {
        let held = std::mem::take(&mut self.held);
        let me = self.me.clone();
        let (names, epochs): (Vec<String>, Vec<i64>) = held
            .iter()
            .map(|(n, h)| (n.clone(), h.epoch))
            .chain(std::mem::take(&mut self.releasing))
            .unzip();
        let client = self.client().await?;
        client
            .execute(
                "UPDATE leases l SET holder = NULL, expires = '-infinity'
                 FROM unnest($2::text[], $3::bigint[]) AS g(name, epoch)
                 WHERE l.name = g.name AND l.epoch = g.epoch AND l.holder = $1",
                &[&me, &names, &epochs],
            )
            .await?;
        client
            .execute("DELETE FROM replicas WHERE id = $1", &[&me])
            .await?;
        Ok(())
    }
}

/// Fails with [`LeaseError::Lost`] unless `lease` is still held (same holder and epoch, not
/// expired by the database's clock at this instant). Call it inside the transaction that
/// commits under the lease, before the commit: the row stays share-locked until the
/// transaction ends, so no other replica can take the lease before the commit.
pub async fn check_held(tx: &Transaction<'_>, lease: &Lease) -> Result<(), LeaseError> {
    let row = tx
        .query_opt(
            "SELECT 1 FROM leases
             WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires > clock_timestamp()
             FOR SHARE",
            &[&lease.name, &lease.holder, &lease.epoch],
        )
        .await?;
    match row {
        Some(_) => Ok(()),
        None => Err(LeaseError::Lost {
            name: lease.name.clone(),
            holder: lease.holder.clone(),
            epoch: lease.epoch,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::fair_share;

    #[test]
    fn the_fair_share_is_rounded_up_and_everything_with_no_live_replica() {
        assert_eq!(fair_share(40, 1), 40);
        assert_eq!(fair_share(40, 2), 20);
        assert_eq!(fair_share(40, 3), 14);
        assert_eq!(fair_share(40, 0), 40);
        assert_eq!(fair_share(0, 3), 0);
        assert_eq!(fair_share(2, 3), 1);
    }
}
