//! Domino audit trail: `GET /api/audittrail/v1/auditevents`.
//!
//! Window: `startTimestamp` ≤ timestamp < `endTimestamp` (unix ms; either may be absent).
//! Paging: `limit` (default 1000, 1..=1000) and `offset` over the visible matches, `sort`
//! `-timestamp` (newest first, the default) or `timestamp`; equal timestamps keep a stable order.
//! Filters `actorId`, `actorName`, `event`, `targetType`, `withinProjectId`, `withinProjectName`
//! match exactly; `targetId` and `targetName` are accepted and ignored.

use std::fmt::Write;
use std::ops::Bound;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use fastrand::Rng;

use crate::gen::{self, push_field, push_json_str, Person, Plan, MS};
use crate::server::{self, auth_token, header, Params, Sim};
use crate::store::Store;
use crate::{SimConfig, Vendor};

/// What an event records besides actor, action and project.
#[derive(Clone, Copy)]
enum Change {
    /// No field changes.
    None,
    /// `name` set on creation.
    Name,
    /// `filePath` set.
    FilePath,
    /// A collaborator added.
    Added,
    /// A collaborator removed.
    Removed,
    /// A role changed.
    Role,
    /// A feature flag toggled.
    Flag,
    /// A status changed.
    Status,
}

/// One kind of audit event.
struct Kind {
    /// `action.eventName`.
    name: &'static str,
    /// `targets[0].entity.entityType`, or no targets at all.
    target: Option<&'static str>,
    /// Whether the event happens `in` a project.
    in_project: bool,
    /// Whether the event affects another user.
    affecting: bool,
    /// The target's field changes.
    change: Change,
    /// Relative frequency.
    weight: u32,
}

/// The event kinds, with realistic names and entity types.
const KINDS: &[Kind] = &[
    Kind {
        name: "Create Project",
        target: Some("project"),
        in_project: false,
        affecting: false,
        change: Change::Name,
        weight: 1,
    },
    Kind {
        name: "Archive Project",
        target: Some("project"),
        in_project: false,
        affecting: false,
        change: Change::None,
        weight: 1,
    },
    Kind {
        name: "Add Collaborator",
        target: Some("project"),
        in_project: true,
        affecting: true,
        change: Change::Added,
        weight: 3,
    },
    Kind {
        name: "Remove Collaborator",
        target: Some("project"),
        in_project: true,
        affecting: true,
        change: Change::Removed,
        weight: 1,
    },
    Kind {
        name: "Change Collaborator Role",
        target: Some("user"),
        in_project: true,
        affecting: true,
        change: Change::Role,
        weight: 1,
    },
    Kind {
        name: "Create Dataset",
        target: Some("dataset"),
        in_project: true,
        affecting: false,
        change: Change::FilePath,
        weight: 4,
    },
    Kind {
        name: "Delete Dataset",
        target: Some("dataset"),
        in_project: true,
        affecting: false,
        change: Change::None,
        weight: 1,
    },
    Kind {
        name: "Create Dataset Snapshot",
        target: Some("datasetSnapshot"),
        in_project: true,
        affecting: false,
        change: Change::None,
        weight: 2,
    },
    Kind {
        name: "Upload Files",
        target: Some("file"),
        in_project: true,
        affecting: false,
        change: Change::FilePath,
        weight: 6,
    },
    Kind {
        name: "Download Files",
        target: Some("file"),
        in_project: true,
        affecting: false,
        change: Change::None,
        weight: 10,
    },
    Kind {
        name: "Delete Files",
        target: Some("file"),
        in_project: true,
        affecting: false,
        change: Change::None,
        weight: 2,
    },
    Kind {
        name: "Start Job",
        target: Some("job"),
        in_project: true,
        affecting: false,
        change: Change::None,
        weight: 10,
    },
    Kind {
        name: "Stop Job",
        target: Some("job"),
        in_project: true,
        affecting: false,
        change: Change::None,
        weight: 3,
    },
    Kind {
        name: "Create Scheduled Job",
        target: Some("scheduledRun"),
        in_project: true,
        affecting: false,
        change: Change::None,
        weight: 1,
    },
    Kind {
        name: "Start App",
        target: None,
        in_project: true,
        affecting: false,
        change: Change::None,
        weight: 3,
    },
    Kind {
        name: "Start Workspace",
        target: None,
        in_project: true,
        affecting: false,
        change: Change::None,
        weight: 8,
    },
    Kind {
        name: "Change Feature Flag",
        target: Some("featureFlag"),
        in_project: false,
        affecting: false,
        change: Change::Flag,
        weight: 1,
    },
    Kind {
        name: "Create Governance Bundle",
        target: Some("governanceBundle"),
        in_project: true,
        affecting: false,
        change: Change::None,
        weight: 1,
    },
    Kind {
        name: "Approve Governance Bundle",
        target: Some("governanceBundle"),
        in_project: true,
        affecting: false,
        change: Change::Status,
        weight: 1,
    },
    Kind {
        name: "Change Data Source Permissions",
        target: None,
        in_project: false,
        affecting: true,
        change: Change::None,
        weight: 1,
    },
    Kind {
        name: "Create User",
        target: Some("user"),
        in_project: false,
        affecting: false,
        change: Change::None,
        weight: 1,
    },
    Kind {
        name: "Change User Role",
        target: Some("user"),
        in_project: false,
        affecting: true,
        change: Change::Role,
        weight: 1,
    },
];

/// Feature flag names.
const FLAGS: &[&str] = &[
    "ShortLived.EnableNewDatasets",
    "ShortLived.AuditTrailExport",
    "EnableGovernance",
    "EnableModelMonitoring",
];

/// Project roles.
const ROLES: &[&str] = &[
    "Contributor",
    "Owner",
    "ResultsConsumer",
    "LauncherUser",
    "ProjectImporter",
];

/// File extensions.
const EXTENSIONS: &[&str] = &["csv", "parquet", "ipynb", "py", "R", "json", "txt"];

/// A user of the instance.
struct User {
    /// 24-hex id.
    id: String,
    /// The person.
    person: Person,
}

/// A project.
struct Project {
    /// 24-hex id.
    id: String,
    /// Project name.
    name: String,
}

/// Filter fields of one event.
#[derive(Clone)]
pub(crate) struct Meta {
    /// Index into the users.
    actor: u16,
    /// Index into [`KINDS`].
    kind: u8,
    /// Index into the projects, when `in` is present.
    project: Option<u16>,
}

/// The generated audit trail.
pub(crate) struct Data {
    /// The events.
    pub store: Store<Meta>,
    /// The users events refer to.
    users: Vec<User>,
    /// The projects events happen in.
    projects: Vec<Project>,
}

impl Data {
    /// Generates the events of `cfg` (none when the vendor is not selected).
    pub fn generate(cfg: &SimConfig) -> Data {
        let plan = Plan::new(cfg, Vendor::DominoAudit);
        let mut rng = gen::rng(cfg.seed, Vendor::DominoAudit);
        let epoch = plan.start.saturating_sub(400 * 86_400 * gen::SEC);
        let users: Vec<User> = gen::people(&mut rng, 80)
            .into_iter()
            .map(|person| User {
                id: gen::object_id(&mut rng, epoch),
                person,
            })
            .collect();
        let projects: Vec<Project> = (0..40)
            .map(|_| Project {
                id: gen::object_id(&mut rng, epoch),
                name: gen::slug(&mut rng),
            })
            .collect();
        let weights: Vec<u32> = KINDS.iter().map(|k| k.weight).collect();
        let raw = gen::generate(
            &mut rng,
            &plan,
            true,
            |r| gen::uniform_time(r, plan.start, plan.end, MS),
            |r, t, _| render(r, t, &users, &projects, &weights),
        );
        Data {
            store: Store::new(raw),
            users,
            projects,
        }
    }
}

/// Renders one event at `t` (ns).
fn render(
    r: &mut Rng,
    t: i64,
    users: &[User],
    projects: &[Project],
    weights: &[u32],
) -> (String, Meta) {
    let kind_ix = gen::weighted(r, weights);
    let kind = &KINDS[kind_ix];
    let actor_ix = r.usize(0..users.len());
    let actor = &users[actor_ix];
    let project_ix = r.usize(0..projects.len());
    let project = &projects[project_ix];
    let other = &users[r.usize(0..users.len())];
    let mut s = String::with_capacity(640);
    let _ = write!(s, "{{\"timestamp\":{},\"actor\":{{", t / MS);
    push_field(&mut s, "id", &actor.id);
    s.push(',');
    push_field(&mut s, "name", &actor.person.login);
    s.push(',');
    push_field(&mut s, "firstName", actor.person.first);
    s.push(',');
    push_field(&mut s, "lastName", actor.person.last);
    s.push_str("},\"action\":{");
    push_field(&mut s, "eventName", kind.name);
    s.push_str(",\"using\":[],");
    push_field(&mut s, "traceId", &gen::hex(r, 32));
    s.push_str("},\"targets\":[");
    if let Some(entity_type) = kind.target {
        let (id, name) = match entity_type {
            "project" => (project.id.clone(), project.name.clone()),
            "user" => (other.id.clone(), other.person.login.clone()),
            "file" => (
                gen::object_id(r, t),
                format!(
                    "{}/{}.{}",
                    gen::pick(r, gen::WORDS),
                    gen::slug(r),
                    gen::pick(r, EXTENSIONS)
                ),
            ),
            "job" => (gen::object_id(r, t), format!("Run #{}", r.u32(1..50_000))),
            "scheduledRun" => (gen::object_id(r, t), format!("nightly-{}", gen::slug(r))),
            "featureFlag" => (gen::object_id(r, t), gen::pick(r, FLAGS).to_string()),
            "governanceBundle" => (gen::object_id(r, t), format!("{} review", gen::slug(r))),
            "datasetSnapshot" => (gen::object_id(r, t), format!("snapshot-{}", r.u32(1..200))),
            _ => (gen::object_id(r, t), gen::slug(r)),
        };
        s.push_str("{\"entity\":{");
        push_field(&mut s, "entityType", entity_type);
        s.push(',');
        push_field(&mut s, "id", &id);
        s.push(',');
        push_field(&mut s, "name", &name);
        s.push_str("},\"fieldChanges\":[");
        render_change(r, &mut s, kind.change, &name, other);
        s.push_str("]}");
    }
    s.push_str("],\"affecting\":[");
    if kind.affecting {
        s.push('{');
        push_field(&mut s, "entityType", "user");
        s.push(',');
        push_field(&mut s, "id", &other.id);
        s.push(',');
        push_field(&mut s, "name", &other.person.login);
        s.push('}');
    }
    s.push(']');
    if kind.in_project {
        s.push_str(",\"in\":{");
        push_field(&mut s, "entityType", "project");
        s.push(',');
        push_field(&mut s, "id", &project.id);
        s.push(',');
        push_field(&mut s, "name", &project.name);
        s.push('}');
    }
    s.push_str(",\"metadata\":{}}");
    let meta = Meta {
        actor: actor_ix as u16,
        kind: kind_ix as u8,
        project: kind.in_project.then_some(project_ix as u16),
    };
    (s, meta)
}

/// Appends the field changes of one target.
fn render_change(r: &mut Rng, s: &mut String, change: Change, name: &str, other: &User) {
    let simple = |s: &mut String, field: &str, before: Option<&str>, after: &str| {
        s.push('{');
        push_field(s, "fieldName", field);
        s.push_str(",\"before\":");
        match before {
            Some(b) => push_json_str(s, b),
            None => s.push_str("null"),
        }
        s.push_str(",\"after\":");
        push_json_str(s, after);
        s.push_str(",\"added\":[],\"removed\":[]}");
    };
    let member = |s: &mut String, added: bool, null_name: bool| {
        s.push('{');
        push_field(s, "fieldName", "collaborators");
        s.push_str(",\"before\":null,\"after\":null,\"added\":[");
        let item = |s: &mut String| {
            s.push('{');
            push_field(s, "id", &other.id);
            s.push_str(",\"name\":");
            if null_name {
                s.push_str("null");
            } else {
                push_json_str(s, &other.person.login);
            }
            s.push('}');
        };
        if added {
            item(s);
        }
        s.push_str("],\"removed\":[");
        if !added {
            item(s);
        }
        s.push_str("]}");
    };
    match change {
        Change::None => {}
        Change::Name => simple(s, "name", None, name),
        Change::FilePath => {
            let file = format!("{}.{}", gen::slug(r), gen::pick(r, EXTENSIONS));
            simple(s, "filePath", None, &file);
        }
        Change::Added => member(s, true, r.u8(0..10) == 0),
        Change::Removed => member(s, false, r.u8(0..10) == 0),
        Change::Role => {
            let before = *gen::pick(r, ROLES);
            let after = *gen::pick(r, ROLES);
            simple(s, "role", Some(before), after);
        }
        Change::Flag => {
            let on = r.bool();
            simple(
                s,
                "enabled",
                Some(if on { "false" } else { "true" }),
                if on { "true" } else { "false" },
            );
        }
        Change::Status => simple(s, "status", Some("InProgress"), "Complete"),
    }
}

/// A Domino error answer `{"errors":[msg]}`.
fn error(status: StatusCode, msg: &str) -> Response {
    server::json(status, serde_json::json!({ "errors": [msg] }).to_string())
}

/// This emulator's entry in the registry ([`crate::EMULATORS`]).
pub(crate) const EMULATOR: crate::Emulator = crate::Emulator {
    vendor: Vendor::DominoAudit,
    name: "domino_audit",
    salt: 0x0d0a_1111,
    routes,
    source_keys,
    reading_keys: |_| String::new(),
    expiring_tokens: false,
    generate: |cfg| Box::new(Data::generate(cfg)),
    events,
};

/// This emulator's data in a running simulator.
fn data(sim: &Sim) -> &Data {
    sim.data(Vendor::DominoAudit)
}

fn routes(r: axum::Router<Arc<Sim>>) -> axum::Router<Arc<Sim>> {
    use axum::routing::get;
    r.route("/api/audittrail/v1/auditevents", get(list))
}

fn events(sim: &Sim) -> &dyn crate::store::Events {
    &data(sim).store
}

/// The credential keys of an auditship `[[sources]]` entry that reads this emulator.
pub(crate) fn source_keys(cfg: &SimConfig) -> String {
    format!("api_key = {:?}\n", cfg.api_key)
}

/// `GET /api/audittrail/v1/auditevents`.
pub(crate) async fn list(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    if let Some(fault) = sim.begin(Vendor::DominoAudit) {
        return fault;
    }
    let ok = sim.cfg.accepts_key(header(&headers, "x-domino-api-key"))
        || sim.cfg.accepts_key(auth_token(&headers, "bearer"));
    if !ok {
        return error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: missing or invalid API key or token",
        );
    }
    match answer(data(&sim), &Params(q), &sim.cfg.answers, sim.now_ns()) {
        Ok(body) => sim.ok(body),
        Err(msg) => error(StatusCode::BAD_REQUEST, &msg),
    }
}

/// The response body for a query, or a message for a bad request.
fn answer(data: &Data, q: &Params, answers: &crate::Answers, now: i64) -> Result<String, String> {
    let from = q.int("startTimestamp")?.map_or(Bound::Unbounded, |ms| {
        Bound::Included(ms.saturating_mul(MS))
    });
    let to = q.int("endTimestamp")?.map_or(Bound::Unbounded, |ms| {
        answers.end_bound(ms.saturating_mul(MS))
    });
    let limit = q.limit("limit", 1000)?;
    let offset = if q.get("offset").is_some() {
        q.offset("offset")?
    } else {
        q.offset("Offset")?
    };
    let newest_first = match q
        .get("sort")
        .map(|s| s.split(',').next().unwrap_or("").trim())
    {
        None | Some("-timestamp") => true,
        Some("timestamp") | Some("+timestamp") => false,
        Some(other) => return Err(format!("unsupported sort field: {other:?}")),
    };
    let actor_id = q.get("actorId");
    let actor_name = q.get("actorName");
    let event = q.get("event");
    let target_type = q.get("targetType");
    let project_id = q.get("withinProjectId");
    let project_name = q.get("withinProjectName");
    let filter = |m: &Meta| {
        let user = &data.users[m.actor as usize];
        let kind = &KINDS[m.kind as usize];
        let project = m.project.map(|p| &data.projects[p as usize]);
        actor_id.is_none_or(|v| user.id == v)
            && actor_name.is_none_or(|v| user.person.login == v)
            && event.is_none_or(|v| kind.name == v)
            && target_type.is_none_or(|v| kind.target == Some(v))
            && project_id.is_none_or(|v| project.is_some_and(|p| p.id == v))
            && project_name.is_none_or(|v| project.is_some_and(|p| p.name == v))
    };
    let filtered = [
        actor_id,
        actor_name,
        event,
        target_type,
        project_id,
        project_name,
    ]
    .iter()
    .any(Option::is_some);
    let sel = data.store.select(
        from,
        to,
        now,
        filtered.then_some(&filter as &dyn Fn(&Meta) -> bool),
    );
    let page = data
        .store
        .page(&sel, offset, limit, now, newest_first, answers);
    let mut body = String::from("{\"events\":");
    data.store.render_array_into(&mut body, &page);
    let _ = write!(body, ",\"estimatedMatches\":{}}}", sel.count());
    Ok(body)
}
