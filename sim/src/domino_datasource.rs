//! Domino data-source audit: `GET /api/datasource/v1/audit`.
//!
//! Window: `startTime` ≤ timestamp < `endTime` (ISO 8601, UTC); with neither, the last 24 hours;
//! with only one, unbounded on the other side. Repeated `dataSourceNames=` and `eventKinds=`
//! filter (any of). The answer is a bare JSON array, oldest first, with no paging and no cap.

use std::ops::Bound;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use fastrand::Rng;

use crate::gen::{self, push_field, Plan, MS, SEC};
use crate::server::{self, header, parse_instant, Params, Sim};
use crate::store::Store;
use crate::{SimConfig, Vendor};

/// Event kinds and their relative frequency; access dominates.
const KINDS: &[(&str, u32)] = &[
    ("AccessDataSource", 85),
    ("CreateDataSource", 3),
    ("DeleteDataSource", 2),
    ("EditDataSourcePermissions", 3),
    ("EditDataSourceOwnership", 1),
    ("AddDataSourceToProject", 4),
    ("RemoveDataSourceFromProject", 2),
];

/// Data-source types.
const TYPES: &[&str] = &[
    "SnowflakeConfig",
    "S3Config",
    "GenericS3Config",
    "RedshiftConfig",
    "PostgreSQLConfig",
    "MySQLConfig",
    "BigQueryConfig",
    "GCSConfig",
    "ADLSConfig",
    "OracleConfig",
];

/// Execution types that access data sources.
const RUN_TYPES: &[&str] = &["Workspace", "Job", "App", "Launcher"];

/// A configured data source.
struct Source {
    /// 24-hex id.
    id: String,
    /// Unique name.
    name: String,
    /// Its `dataSourceType`.
    kind: &'static str,
}

/// A user: 24-hex id and login.
struct User {
    /// 24-hex id.
    id: String,
    /// Login.
    login: String,
}

/// Filter fields of one event.
#[derive(Clone)]
pub(crate) struct Meta {
    /// Index into the data sources.
    source: u16,
    /// Index into [`KINDS`].
    kind: u8,
}

/// The generated data-source audit log.
pub(crate) struct Data {
    /// The events.
    pub store: Store<Meta>,
    /// The data sources events refer to.
    sources: Vec<Source>,
}

impl Data {
    /// Generates the events of `cfg` (none when the vendor is not selected).
    pub fn generate(cfg: &SimConfig) -> Data {
        let plan = Plan::new(cfg, Vendor::DominoDatasource);
        let mut rng = gen::rng(cfg.seed, Vendor::DominoDatasource);
        let epoch = plan.start.saturating_sub(200 * 86_400 * SEC);
        let sources: Vec<Source> = (0..30)
            .map(|i| {
                let kind = *gen::pick(&mut rng, TYPES);
                let prefix = kind.trim_end_matches("Config").to_ascii_lowercase();
                Source {
                    id: gen::object_id(&mut rng, epoch),
                    name: format!("{prefix}-{}-{i}", gen::pick(&mut rng, gen::WORDS)),
                    kind,
                }
            })
            .collect();
        let users: Vec<User> = gen::people(&mut rng, 60)
            .into_iter()
            .map(|p| User {
                id: gen::object_id(&mut rng, epoch),
                login: p.login,
            })
            .collect();
        let projects: Vec<String> = (0..40).map(|_| gen::object_id(&mut rng, epoch)).collect();
        let weights: Vec<u32> = KINDS.iter().map(|k| k.1).collect();
        let raw = gen::generate(
            &mut rng,
            &plan,
            true,
            |r| gen::uniform_time(r, plan.start, plan.end, MS),
            |r, t, _| render(r, t, &sources, &users, &projects, &weights),
        );
        Data {
            store: Store::new(raw),
            sources,
        }
    }
}

/// Renders one event at `t` (ns).
fn render(
    r: &mut Rng,
    t: i64,
    sources: &[Source],
    users: &[User],
    projects: &[String],
    weights: &[u32],
) -> (String, Meta) {
    let kind_ix = gen::weighted(r, weights);
    let kind = KINDS[kind_ix].0;
    let source_ix = r.usize(0..sources.len());
    let source = &sources[source_ix];
    let user = gen::pick(r, users);
    let mut s = String::with_capacity(400);
    s.push('{');
    push_field(&mut s, "dataSourceId", &source.id);
    s.push(',');
    push_field(&mut s, "dataSourceName", &source.name);
    s.push(',');
    push_field(&mut s, "dataSourceType", source.kind);
    s.push(',');
    push_field(&mut s, "eventKind", kind);
    s.push_str(",\"metadata\":{");
    match kind {
        "AccessDataSource" => {
            push_field(&mut s, "runType", gen::pick_str(r, RUN_TYPES));
            s.push(',');
            push_field(&mut s, "projectId", gen::pick(r, projects).as_str());
            s.push(',');
            let plane = if r.u8(0..5) == 0 {
                gen::object_id(r, t)
            } else {
                "0".repeat(24)
            };
            push_field(&mut s, "dataPlaneId", &plane);
            s.push(',');
            push_field(&mut s, "performedByUsername", &user.login);
            s.push(',');
            let run_started = t - r.i64(0..3_600) * SEC;
            push_field(&mut s, "runId", &gen::object_id(r, run_started));
        }
        "AddDataSourceToProject" | "RemoveDataSourceFromProject" => {
            push_field(&mut s, "projectId", gen::pick(r, projects).as_str());
            s.push(',');
            push_field(&mut s, "performedByUsername", &user.login);
        }
        _ => push_field(&mut s, "performedByUsername", &user.login),
    }
    s.push_str("},");
    push_field(&mut s, "performedBy", &user.id);
    s.push(',');
    push_field(&mut s, "timestamp", &gen::iso_ms(t));
    s.push('}');
    (
        s,
        Meta {
            source: source_ix as u16,
            kind: kind_ix as u8,
        },
    )
}

/// A Domino error answer `{"errors":[msg]}`.
fn error(status: StatusCode, msg: &str) -> Response {
    server::json(status, serde_json::json!({ "errors": [msg] }).to_string())
}

/// This emulator's entry in the registry ([`crate::EMULATORS`]).
pub(crate) const EMULATOR: crate::Emulator = crate::Emulator {
    vendor: Vendor::DominoDatasource,
    name: "domino_datasource",
    salt: 0x0d05_2222,
    routes,
    source_keys,
    reading_keys: |_| String::new(),
    expiring_tokens: false,
    generate: |cfg| Box::new(Data::generate(cfg)),
    events,
};

/// This emulator's data in a running simulator.
fn data(sim: &Sim) -> &Data {
    sim.data(Vendor::DominoDatasource)
}

fn routes(r: axum::Router<Arc<Sim>>) -> axum::Router<Arc<Sim>> {
    use axum::routing::get;
    r.route("/api/datasource/v1/audit", get(list))
        .route("/api/datasource/v1/audit/", get(list))
}

fn events(sim: &Sim) -> &dyn crate::store::Events {
    &data(sim).store
}

/// The credential keys of an auditship `[[sources]]` entry that reads this emulator.
pub(crate) fn source_keys(cfg: &SimConfig) -> String {
    format!("api_key = {:?}\n", cfg.api_key)
}

/// `GET /api/datasource/v1/audit`.
pub(crate) async fn list(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    if let Some(fault) = sim.begin(Vendor::DominoDatasource) {
        return fault;
    }
    if !sim.cfg.accepts_key(header(&headers, "x-domino-api-key")) {
        return error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: a SysAdmin X-Domino-Api-Key is required",
        );
    }
    match answer(data(&sim), &Params(q), &sim.cfg.answers, sim.now_ns()) {
        Ok(body) => sim.ok(body),
        Err(msg) => error(StatusCode::BAD_REQUEST, &msg),
    }
}

/// The response body for a query, or a message for a bad request.
fn answer(data: &Data, q: &Params, answers: &crate::Answers, now: i64) -> Result<String, String> {
    let instant = |name: &str| -> Result<Option<i64>, String> {
        q.get(name)
            .map(|v| parse_instant(v).ok_or_else(|| format!("invalid value for {name}: {v:?}")))
            .transpose()
    };
    let (from, to) = match (instant("startTime")?, instant("endTime")?) {
        (None, None) => (Bound::Included(now - 86_400 * SEC), Bound::Excluded(now)),
        (s, e) => (
            s.map_or(Bound::Unbounded, Bound::Included),
            e.map_or(Bound::Unbounded, |t| answers.end_bound(t)),
        ),
    };
    let names = q.all("dataSourceNames");
    let kinds = q.all("eventKinds");
    let filter = |m: &Meta| {
        (names.is_empty() || names.contains(&data.sources[m.source as usize].name.as_str()))
            && (kinds.is_empty() || kinds.contains(&KINDS[m.kind as usize].0))
    };
    let filtered = !names.is_empty() || !kinds.is_empty();
    let sel = data.store.select(
        from,
        to,
        now,
        filtered.then_some(&filter as &dyn Fn(&Meta) -> bool),
    );
    Ok(data
        .store
        .render_array(&data.store.page(&sel, 0, usize::MAX, now, false, answers)))
}
