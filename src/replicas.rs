//! A replica among several sharing one PostgreSQL state (`agent.state_url`): its lease task and
//! the view that its pollers and sinks' tasks wait on.
//!
//! Every replica runs the same config and knows every lease name: `source:<name>` per source,
//! `sink:<name>` per sink. The task ticks [`Leases`] every `lease_ttl / 3` and publishes what
//! this replica holds, each lease with its local deadline ([`crate::lease`]'s module doc says
//! why that deadline always passes before the row expires). A source's task polls only while
//! its lease is held and stops, without committing, once it is not ([`LeaseView::lost`]); a
//! page's commit names the lease and the database refuses it if the lease moved meanwhile. A
//! sink's task drains the sink's queue only while it holds the sink's lease.
//!
//! On shutdown the pollers and sinks stop first (a page in flight is committed or left), then
//! the leases are given back, so the other replicas take over at their next tick rather than
//! after `lease_ttl`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::lease::{Lease, Leases};
use crate::metrics;
use crate::state::pgtls::PgUrl;

/// The lease name of source `name`.
pub fn source_lease(name: &str) -> String {
    format!("source:{name}")
}

/// The lease name of sink `name`.
pub fn sink_lease(name: &str) -> String {
    format!("sink:{name}")
}

/// A replica id for this start: the host name (a pod's name) and a random suffix, so that a
/// pod restarted under the same name is a new replica, not the old one come back.
pub fn default_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "auditship".into());
    format!("{host}-{:06x}", fastrand::u32(..0x100_0000))
}

/// A lease held, with the instant past which this replica must act as if it were lost.
#[derive(Debug, Clone)]
struct Held {
    lease: Lease,
    deadline: Instant,
}

type HeldMap = Arc<BTreeMap<String, Held>>;

/// What this replica holds, as its pollers and sinks' tasks see it.
#[derive(Clone)]
pub struct LeaseView {
    rx: watch::Receiver<HeldMap>,
}

impl LeaseView {
    /// The lease on `name`, if this replica holds it now (before its local deadline).
    pub fn lease(&self, name: &str) -> Option<Lease> {
        let m = self.rx.borrow();
        m.get(name)
            .filter(|h| h.deadline > Instant::now())
            .map(|h| h.lease.clone())
    }

    /// Waits until this replica holds `name`; `None` once `cancel` fires.
    pub async fn acquired(&mut self, name: &str, cancel: &CancellationToken) -> Option<Lease> {
        loop {
            if cancel.is_cancelled() {
                return None;
            }
            if let Some(l) = self.lease(name) {
                return Some(l);
            }
            tokio::select! {
                r = self.rx.changed() => {
                    if r.is_err() {
                        // The lease task ended (shutdown): nothing will be acquired again.
                        cancel.cancelled().await;
                        return None;
                    }
                }
                _ = cancel.cancelled() => return None,
            }
        }
    }

    /// Returns once `lease` is no longer held: a tick lost it or gave it back, or its local
    /// deadline passed (whether or not the database could be reached to renew it).
    pub async fn lost(&mut self, lease: &Lease) {
        loop {
            let deadline = {
                let m = self.rx.borrow_and_update();
                match m.get(&lease.name) {
                    Some(h) if h.lease.epoch == lease.epoch => h.deadline,
                    _ => return,
                }
            };
            if deadline <= Instant::now() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                r = self.rx.changed() => {
                    if r.is_err() {
                        tokio::time::sleep_until(deadline).await;
                        return;
                    }
                }
            }
        }
    }
}

/// This process's replica: its id and its lease task.
pub struct Replica {
    id: String,
    view: LeaseView,
    names: watch::Sender<Vec<String>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Replica {
    /// Starts the lease task of replica `id` over `names` (the lease names of every source and
    /// sink configured). The first tick runs at once.
    pub fn start(url: PgUrl, id: String, ttl: Duration, names: Vec<String>) -> Replica {
        metrics::replica(&id);
        crate::set_replica(&id);
        let (tx, rx) = watch::channel(HeldMap::default());
        let (names_tx, names_rx) = watch::channel(names);
        let stop = CancellationToken::new();
        let connect: crate::lease::Connector = Box::new(move || {
            let url = url.clone();
            Box::pin(async move { url.connect().await.map_err(|e| e.to_string()) })
        });
        let leases = Leases::connecting_with(connect, id.clone(), ttl);
        let task = tokio::spawn(run(leases, ttl, tx, names_rx, stop.clone()));
        tracing::info!(replica = %id, lease_ttl_s = ttl.as_secs_f64(),
            "replica started: sources and sinks are shared by lease with the other replicas on the state database");
        Replica {
            id,
            view: LeaseView { rx },
            names: names_tx,
            stop,
            task,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn view(&self) -> LeaseView {
        self.view.clone()
    }

    /// A reload: the lease names of the new config (leases of names gone are given back).
    pub fn set_names(&self, names: Vec<String>) {
        self.names.send_replace(names);
    }

    /// Gives every lease back (after the pollers and sinks' tasks stopped), so the others take
    /// over at their next tick.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// The lease names for `sources` and `sinks`.
pub fn names<'a>(
    sources: impl IntoIterator<Item = &'a str>,
    sinks: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let mut v: Vec<String> = sources.into_iter().map(source_lease).collect();
    v.extend(sinks.into_iter().map(sink_lease));
    v.sort();
    v
}

fn held_map(leases: &Leases) -> HeldMap {
    let now = std::time::Instant::now();
    let tnow = Instant::now();
    Arc::new(
        leases
            .held()
            .into_iter()
            .filter_map(|lease| {
                let d = leases.deadline(&lease.name)?;
                let deadline = tnow + d.saturating_duration_since(now);
                Some((lease.name.clone(), Held { lease, deadline }))
            })
            .collect(),
    )
}

fn publish_metrics(names: &[String], held: &HeldMap) {
    for n in names {
        let (kind, name) = match n.split_once(':') {
            Some(("source", s)) => ("source", s),
            Some(("sink", s)) => ("sink", s),
            _ => continue,
        };
        metrics::lease_held(kind, name, held.contains_key(n));
    }
}

async fn run(
    mut leases: Leases,
    ttl: Duration,
    tx: watch::Sender<HeldMap>,
    mut names: watch::Receiver<Vec<String>>,
    stop: CancellationToken,
) {
    let every = (ttl / 3).max(Duration::from_millis(100));
    let mut failing = false;
    loop {
        let current = names.borrow_and_update().clone();
        // A tick that hangs (a database that stopped answering) must not outlive the leases.
        match tokio::time::timeout(every, leases.tick(&current)).await {
            Ok(Ok(t)) => {
                if failing {
                    tracing::info!(replica = %leases.id(), "the state database answers again; leases renewed");
                    failing = false;
                }
                if !t.acquired.is_empty() || !t.released.is_empty() || !t.lost.is_empty() {
                    tracing::info!(
                        replica = %leases.id(),
                        live_replicas = t.live,
                        share = t.share,
                        acquired = %t.acquired.join(","),
                        given_back = %t.released.join(","),
                        lost = %t.lost.join(","),
                        "leases moved"
                    );
                }
            }
            Ok(Err(e)) => {
                if !failing {
                    tracing::warn!(replica = %leases.id(), error = %e,
                        "cannot renew the leases; what is held is polled until its lease runs out, no longer");
                    failing = true;
                }
            }
            Err(_) => {
                leases.disconnect();
                if !failing {
                    tracing::warn!(replica = %leases.id(), timeout_ms = every.as_millis() as u64,
                        "the state database did not answer a lease tick in time; trying again");
                    failing = true;
                }
            }
        }
        let held = held_map(&leases);
        publish_metrics(&current, &held);
        tx.send_replace(held);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = names.changed() => {}
            _ = stop.cancelled() => break,
        }
    }
    // Nothing is used from here on, whether or not the database takes the release.
    tx.send_replace(HeldMap::default());
    match tokio::time::timeout(Duration::from_secs(5), leases.release_all()).await {
        Ok(Ok(())) => {
            tracing::info!(replica = %leases.id(), "leases given back");
        }
        Ok(Err(e)) => {
            tracing::warn!(replica = %leases.id(), error = %e,
                "cannot give the leases back; the other replicas take them over once they expire");
        }
        Err(_) => {
            tracing::warn!(replica = %leases.id(),
                "the state database did not take the leases back in time; the other replicas take them over once they expire");
        }
    }
}
