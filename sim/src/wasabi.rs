//! Wasabi AiR audit: `GET /api/data/audit`, `GET /api/data/audit/{id}`,
//! `GET /api/data/audit/filters`.
//!
//! Window: `from` < time < `to` (RFC 3339, both exclusive, "newer than" / "older than"; either
//! may be absent). Paging: `page` (from 0) and `count` (default 20, 1..=1000) over the visible
//! matches, `order=ctime` (oldest first, the only order served). Filters `user_id`,
//! `target_kind`, `action_key` match exactly; `group_id` and `target_id` are accepted and ignored.
//! Every event has a unique 32-hex `id`; `time` has 1–9 fraction digits with trailing zeros
//! trimmed, and the event's true instant has exactly that precision.

use std::collections::HashMap;
use std::fmt::Write;
use std::ops::Bound;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use fastrand::Rng;

use crate::gen::{self, push_field, Plan, SEC};
use crate::server::{self, auth_token, parse_instant, Params, Sim};
use crate::store::Store;
use crate::{SimConfig, Vendor};

/// Target kinds, each with its action keys and their relative frequency.
const KINDS: &[(&str, &[(&str, u32)])] = &[
    (
        "authenticate",
        &[("login", 30), ("logout", 10), ("update-password", 1)],
    ),
    ("feature", &[("enable", 1), ("disable", 1)]),
    (
        "group",
        &[
            ("create", 1),
            ("update", 1),
            ("delete", 1),
            ("add-user", 2),
            ("remove-user", 1),
        ],
    ),
    ("user", &[("create", 1), ("update", 2), ("delete", 1)]),
    (
        "location",
        &[
            ("create", 1),
            ("update", 1),
            ("delete", 1),
            ("add-group", 1),
        ],
    ),
    (
        "asset",
        &[
            ("upload", 15),
            ("download", 12),
            ("delete", 2),
            ("update-metadata", 6),
        ],
    ),
    ("collection", &[("create", 1), ("add-asset", 3)]),
    ("api-key", &[("create", 1), ("revoke", 1)]),
];

/// Feature names (the targets of `feature` events).
const FEATURES: &[&str] = &[
    "disabled_live_harvesting",
    "face_recognition",
    "transcription",
    "object_detection",
    "logo_detection",
    "ocr",
];

/// Relative frequency of 1..=9 fraction digits.
const DIGIT_WEIGHTS: &[u32] = &[1, 1, 2, 2, 3, 10, 2, 2, 4];

/// Filter fields of one event.
#[derive(Clone)]
pub(crate) struct Meta {
    /// Index into the users.
    user: u16,
    /// Index into [`KINDS`].
    kind: u8,
    /// Index into the kind's action keys.
    action: u8,
}

/// The generated audit log.
pub(crate) struct Data {
    /// The events.
    pub store: Store<Meta>,
    /// 32-hex user ids.
    users: Vec<String>,
    /// Event id → index in the store.
    by_id: HashMap<u128, u32>,
}

/// A time in `[start, end)` with a random number (1–9) of significant fraction digits.
fn sample_time(r: &mut Rng, start: i64, end: i64) -> Option<i64> {
    for _ in 0..1000 {
        let t = gen::uniform_time(r, start, end, 1)?;
        let digits = gen::weighted(r, DIGIT_WEIGHTS) as u32 + 1;
        let g = 10i64.pow(9 - digits);
        let mut u = t.div_euclid(g) * g;
        if (u / g) % 10 == 0 {
            u += g; // the last digit must not be a zero that RFC3339Nano would trim
        }
        if (start..end).contains(&u) {
            return Some(u);
        }
    }
    None
}

impl Data {
    /// Generates the events of `cfg` (none when the vendor is not selected).
    pub fn generate(cfg: &SimConfig) -> Data {
        let plan = Plan::new(cfg, Vendor::WasabiAir);
        let mut rng = gen::rng(cfg.seed, Vendor::WasabiAir);
        let users: Vec<String> = (0..40).map(|_| gen::hex(&mut rng, 32)).collect();
        let groups: Vec<String> = (0..12).map(|_| gen::hex(&mut rng, 32)).collect();
        let locations: Vec<String> = (0..8).map(|_| gen::hex(&mut rng, 32)).collect();
        let collections: Vec<String> = (0..20).map(|_| gen::hex(&mut rng, 32)).collect();
        let actions: Vec<(u8, u8, u32)> = KINDS
            .iter()
            .enumerate()
            .flat_map(|(k, (_, acts))| {
                acts.iter()
                    .enumerate()
                    .map(move |(a, (_, w))| (k as u8, a as u8, *w))
            })
            .collect();
        let weights: Vec<u32> = actions.iter().map(|a| a.2).collect();
        let raw = gen::generate(
            &mut rng,
            &plan,
            false,
            |r| sample_time(r, plan.start, plan.end),
            |r, t, seq| {
                let (kind_ix, action_ix, _) = actions[gen::weighted(r, &weights)];
                let (kind, acts) = KINDS[kind_ix as usize];
                let action = acts[action_ix as usize].0;
                let user_ix = r.usize(0..users.len());
                let user = &users[user_ix];
                let (target, additional) = match (kind, action) {
                    ("authenticate", _) => (user.clone(), None),
                    ("feature", _) => (gen::pick(r, FEATURES).to_string(), None),
                    ("group", "add-user" | "remove-user") => (
                        gen::pick(r, &groups).clone(),
                        Some(gen::pick(r, &users).clone()),
                    ),
                    ("group", _) => (gen::pick(r, &groups).clone(), None),
                    ("user", _) => (gen::pick(r, &users).clone(), None),
                    ("location", "add-group") => (
                        gen::pick(r, &locations).clone(),
                        Some(gen::pick(r, &groups).clone()),
                    ),
                    ("location", _) => (gen::pick(r, &locations).clone(), None),
                    ("collection", "add-asset") => {
                        (gen::pick(r, &collections).clone(), Some(gen::hex(r, 32)))
                    }
                    ("collection", _) => (gen::pick(r, &collections).clone(), None),
                    _ => (gen::hex(r, 32), None),
                };
                let mut s = String::with_capacity(260);
                // seconds, then a bijection of the sequence number (unique), then randomness
                let scrambled = seq.wrapping_mul(0x9e37_79b1) ^ 0x5bd1_e995;
                let _ = write!(
                    s,
                    "{{\"id\":\"{:08x}{scrambled:08x}{}\",",
                    t.div_euclid(SEC) as u32,
                    gen::hex(r, 16)
                );
                push_field(&mut s, "user_id", user);
                s.push(',');
                push_field(&mut s, "action_key", action);
                s.push(',');
                push_field(&mut s, "target_kind", kind);
                s.push(',');
                push_field(&mut s, "target_id", &target);
                s.push(',');
                push_field(&mut s, "time", &gen::rfc3339_nano(t));
                if let Some(a) = additional {
                    s.push(',');
                    push_field(&mut s, "additional_id", &a);
                }
                s.push('}');
                (
                    s,
                    Meta {
                        user: user_ix as u16,
                        kind: kind_ix,
                        action: action_ix,
                    },
                )
            },
        );
        let store = Store::new(raw);
        let by_id = (0..store.len())
            .filter_map(|i| parse_id(&store.json(i)[7..39]).map(|id| (id, i as u32)))
            .collect();
        Data {
            store,
            users,
            by_id,
        }
    }
}

/// A 32-hex id as a number.
fn parse_id(s: &str) -> Option<u128> {
    (s.len() == 32)
        .then(|| u128::from_str_radix(s, 16).ok())
        .flatten()
}

/// A Wasabi AiR error answer `{"error": msg}`.
fn error(status: StatusCode, msg: &str) -> Response {
    server::json(status, serde_json::json!({ "error": msg }).to_string())
}

/// Whether the request carries the API key as a bearer token.
fn authorized(sim: &Sim, headers: &HeaderMap) -> bool {
    sim.cfg.accepts_key(auth_token(headers, "bearer"))
}

/// This emulator's entry in the registry ([`crate::EMULATORS`]).
pub(crate) const EMULATOR: crate::Emulator = crate::Emulator {
    vendor: Vendor::WasabiAir,
    name: "wasabi_air",
    salt: 0x0a11_4444,
    routes,
    source_keys,
    reading_keys: |_| String::new(),
    expiring_tokens: false,
    generate: |cfg| Box::new(Data::generate(cfg)),
    events,
};

/// This emulator's data in a running simulator.
fn data(sim: &Sim) -> &Data {
    sim.data(Vendor::WasabiAir)
}

fn routes(r: axum::Router<Arc<Sim>>) -> axum::Router<Arc<Sim>> {
    use axum::routing::get;
    r.route("/api/data/audit", get(list))
        .route("/api/data/audit/filters", get(filters))
        .route("/api/data/audit/{id}", get(one))
}

fn events(sim: &Sim) -> &dyn crate::store::Events {
    &data(sim).store
}

/// The credential keys of an auditship `[[sources]]` entry that reads this emulator.
pub(crate) fn source_keys(cfg: &SimConfig) -> String {
    format!("api_key = {:?}\n", cfg.api_key)
}

/// `GET /api/data/audit`.
pub(crate) async fn list(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    if let Some(fault) = sim.begin(Vendor::WasabiAir) {
        return fault;
    }
    if !authorized(&sim, &headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
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
            .map(|v| parse_instant(v).ok_or_else(|| format!("invalid {name} time {v:?}")))
            .transpose()
    };
    let from = instant("from")?.map_or(Bound::Unbounded, Bound::Excluded);
    let to = instant("to")?.map_or(Bound::Unbounded, |t| answers.end_bound(t));
    let page = q.offset("page")?;
    let count = q.limit("count", 20)?;
    match q.get("order") {
        None | Some("ctime") => {}
        Some(other) => return Err(format!("unsupported order {other:?}")),
    }
    let user_id = q.get("user_id");
    let target_kind = q.get("target_kind");
    let action_key = q.get("action_key");
    let filter = |m: &Meta| {
        let (kind, acts) = KINDS[m.kind as usize];
        user_id.is_none_or(|v| data.users[m.user as usize] == v)
            && target_kind.is_none_or(|v| kind == v)
            && action_key.is_none_or(|v| acts[m.action as usize].0 == v)
    };
    let filtered = user_id.is_some() || target_kind.is_some() || action_key.is_some();
    let sel = data.store.select(
        from,
        to,
        now,
        filtered.then_some(&filter as &dyn Fn(&Meta) -> bool),
    );
    let idx = match page.checked_mul(count) {
        Some(offset) => data.store.page(&sel, offset, count, now, false, answers),
        None => Vec::new(),
    };
    let mut body = String::from("{\"audit_events\":");
    data.store.render_array_into(&mut body, &idx);
    let _ = write!(body, ",\"total\":{},\"page\":{}}}", sel.count(), page);
    Ok(body)
}

/// `GET /api/data/audit/{id}`.
pub(crate) async fn one(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    sim.count(Vendor::WasabiAir);
    if !authorized(&sim, &headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let data = data(&sim);
    match parse_id(&id).and_then(|n| data.by_id.get(&n)) {
        Some(&i) if data.store.visible(i as usize, sim.now_ns()) => {
            sim.ok(data.store.json(i as usize).to_string())
        }
        _ => error(StatusCode::NOT_FOUND, "audit event not found"),
    }
}

/// `GET /api/data/audit/filters`.
pub(crate) async fn filters(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    sim.count(Vendor::WasabiAir);
    if !authorized(&sim, &headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let kinds: Vec<_> = KINDS
        .iter()
        .map(|(name, acts)| {
            serde_json::json!({ "name": name, "action_keys": acts.iter().map(|a| a.0).collect::<Vec<_>>() })
        })
        .collect();
    sim.ok(serde_json::json!({ "target_kinds": kinds }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_times_have_varying_nonzero_last_digits_and_stay_in_span() {
        let mut r = Rng::with_seed(3);
        let (start, end) = (1_700_000_000 * SEC + 123, 1_700_000_100 * SEC);
        let mut digits = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let t = sample_time(&mut r, start, end).unwrap();
            assert!((start..end).contains(&t));
            let s = gen::rfc3339_nano(t);
            let frac = s.split('.').nth(1).unwrap().trim_end_matches('Z');
            assert!(!frac.ends_with('0'), "{s}");
            digits.insert(frac.len());
        }
        assert_eq!(
            digits.into_iter().collect::<Vec<_>>(),
            (1..=9).collect::<Vec<_>>()
        );
    }
}
