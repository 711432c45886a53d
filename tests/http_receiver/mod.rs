//! A small HTTP receiver for the HTTP sink tests, parsing each encoding as its real receiver
//! would: Splunk HEC (`/services/collector/event`, `Authorization: Splunk TOKEN`, concatenated
//! event objects), Elasticsearch `_bulk` (action/document NDJSON pairs, `create` semantics with
//! 409 on an existing `_id`, per-item statuses), plain NDJSON and a JSON array. Faults are
//! scripted: canned answers, every n-th request refused, a stretch of 503s, a revoked
//! credential, per-item `_bulk` errors, and a listener that is stopped and started again.
#![allow(dead_code)]

pub mod tls;

use std::collections::{HashMap, VecDeque};
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the receiver emulates.
#[derive(Clone, Debug)]
pub enum Mode {
    /// One JSON object a line.
    Ndjson,
    /// One JSON array.
    JsonArray,
    /// Splunk HEC event endpoint with this token.
    SplunkHec { token: String },
    /// Elasticsearch `_bulk`; with `Some(key)`, `Authorization: ApiKey KEY` is required.
    Bulk { api_key: Option<String> },
}

/// A canned answer for the next request.
#[derive(Clone, Debug)]
pub struct Canned {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: String,
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub status: u16,
    /// Ids of the events (or `_bulk` documents) the body held.
    pub ids: Vec<String>,
    pub idempotency_key: Option<String>,
    pub gzip: bool,
    /// Length of the body after decompression.
    pub bytes: usize,
}

/// Faults and behaviour, set by the test.
#[derive(Default)]
pub struct Faults {
    /// Answers for the next requests, in order (before anything else is looked at).
    pub canned: VecDeque<Canned>,
    /// Every n-th request (counting all) is answered 503.
    pub fail_every: Option<usize>,
    /// After this many requests, answer 503 to everything for the duration.
    pub outage: Option<(usize, Duration)>,
    /// `_bulk`: after this many accepted requests the API key is replaced by the second one.
    pub revoke: Option<(usize, String)>,
    /// `_bulk`: the first n requests get per-item errors (positions 1 mod 5 → 429, 3 mod 5 → 503).
    pub item_fault_requests: usize,
    /// Splunk HEC indexer acknowledgement (`useACK` on the token): event requests need a
    /// channel and are answered with an `ackId`; `/services/collector/ack` says which are done.
    pub hec_ack: Option<HecAck>,
    /// `_bulk`: targets that are data streams: a document without `@timestamp` is refused with
    /// Elasticsearch 8's per-item error.
    pub data_streams: Vec<String>,
    /// `_bulk`: documents whose `source` is this are refused with a mapping error (400), as an
    /// index refuses a field of the wrong type.
    pub refuse_source: Option<String>,
}

/// How the emulated indexer acknowledges.
#[derive(Clone, Debug, Default)]
pub struct HecAck {
    /// An ackId is reported done this long after its request was taken.
    pub delay: Duration,
    /// These ackIds are never reported done (the indexer lost the batch).
    pub withhold: Vec<u64>,
    /// Answer events without an ackId, as a token without useACK does.
    pub no_ack_id: bool,
}

#[derive(Default)]
pub struct Data {
    /// HEC: ackIds given, per channel: when, and the ids of the batch's events.
    pub acks: HashMap<(String, u64), (Instant, Vec<String>)>,
    /// HEC: ids of the events of every batch reported done to an ack query.
    pub acked: Vec<String>,
    /// HEC: ack queries answered.
    pub ack_queries: usize,
    /// HEC: the `source` of each batch not yet reported done, and the most sources that had
    /// batches waiting for their acknowledgement at once.
    pub unacked_sources: HashMap<(String, u64), String>,
    pub most_sources_unacked: usize,
    pub requests: Vec<Seen>,
    /// Every event accepted, in arrival order (repeats included).
    pub events: Vec<Value>,
    /// `_bulk`: documents by `_id`.
    pub docs: HashMap<String, Value>,
    /// `_bulk`: how often each `_id` was created (must be at most 1).
    pub creates: HashMap<String, u32>,
    /// `_bulk`: 409 answers given.
    pub conflicts: usize,
    /// `_bulk`: the target of every document, from `_index` or the URL.
    pub targets: Vec<String>,
    /// Requests whose `Idempotency-Key` was not the BLAKE3 of their ids.
    pub bad_keys: usize,
    /// Requests refused as malformed, with why.
    pub malformed: Vec<String>,
    /// The text of every request answered 200 (after decompression), in arrival order: how
    /// the records were laid out.
    pub bodies: Vec<String>,
    outage_until: Option<Instant>,
    accepted: usize,
    /// HEC: ackIds given so far (the next one is this).
    pub issued: u64,
}

struct Shared {
    mode: Mutex<Mode>,
    faults: Mutex<Faults>,
    data: Mutex<Data>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<(CancellationToken, JoinHandle<()>)>,
}

impl Receiver {
    /// Starts a receiver on a free loopback port.
    pub async fn start(mode: Mode) -> Receiver {
        let mut r = Receiver::down(mode);
        r.up().await;
        r
    }

    /// A receiver with a reserved port that does not listen yet (connections are refused).
    pub fn down(mode: Mode) -> Receiver {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        Receiver {
            addr,
            shared: Arc::new(Shared {
                mode: Mutex::new(mode),
                faults: Mutex::new(Faults::default()),
                data: Mutex::new(Data::default()),
            }),
            server: None,
        }
    }

    /// Starts listening (again) on the receiver's port.
    pub async fn up(&mut self) {
        assert!(self.server.is_none());
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        let app = axum::Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::disable())
            .with_state(self.shared.clone());
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await;
        });
        self.server = Some((stop, task));
    }

    /// Stops listening: from now on connections are refused.
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.server.take() {
            stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.shared.faults.lock().unwrap()
    }

    pub fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        self.shared.data.lock().unwrap()
    }
}

/// The `Idempotency-Key` the sink must send for these ids.
pub fn expected_key(ids: &[String]) -> String {
    let mut h = blake3::Hasher::new();
    for id in ids {
        h.update(&(id.len() as u64).to_le_bytes());
        h.update(id.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

fn answer(status: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(
    State(sh): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let mode = sh.mode.lock().unwrap().clone();
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let gzip = header("content-encoding").as_deref() == Some("gzip");
    let key = header("idempotency-key");
    let mut data = sh.data.lock().unwrap();
    let mut faults = sh.faults.lock().unwrap();
    let n = data.requests.len() + 1;
    let mut seen = Seen {
        at,
        status: 0,
        ids: Vec::new(),
        idempotency_key: key.clone(),
        gzip,
        bytes: 0,
    };
    let record = |data: &mut Data, seen: Seen| data.requests.push(seen);

    // Faults that answer before the body is looked at.
    let canned = faults.canned.pop_front();
    let outage = match (faults.outage, data.outage_until) {
        (Some((after, d)), None) if n > after => {
            data.outage_until = Some(at + d);
            true
        }
        (_, Some(until)) => at < until,
        _ => false,
    };
    let fault = if let Some(c) = canned {
        Some(c)
    } else if outage || faults.fail_every.is_some_and(|k| n.is_multiple_of(k)) {
        Some(Canned {
            status: 503,
            retry_after: None,
            body: match mode {
                Mode::SplunkHec { .. } => json!({"text":"Server is busy","code":9}).to_string(),
                _ => "{\"error\":\"unavailable\"}".into(),
            },
        })
    } else {
        None
    };
    if let Some(c) = fault {
        seen.status = c.status;
        record(&mut data, seen);
        let mut resp = (StatusCode::from_u16(c.status).unwrap(), c.body).into_response();
        if let Some(ra) = c.retry_after {
            resp.headers_mut()
                .insert("retry-after", ra.parse().unwrap());
        }
        return resp;
    }
    // HEC health (what `check --connect` asks): a token, when sent, must be valid.
    if let (Mode::SplunkHec { token }, "/services/collector/health") = (&mode, uri.path()) {
        let auth = header("authorization");
        let (s, b) = match auth.as_deref().map(|a| a.strip_prefix("Splunk ")) {
            Some(Some(t)) if t != token => (403, json!({"text":"Invalid token","code":4})),
            Some(None) => (401, json!({"text":"Invalid authorization","code":3})),
            _ => (200, json!({"text":"HEC is healthy","code":17})),
        };
        seen.status = s;
        record(&mut data, seen);
        return answer(s, b);
    }
    // Elasticsearch's root (what `check --connect` asks): cluster info, credentials checked.
    if let (Mode::Bulk { api_key }, "/") = (&mode, uri.path()) {
        let want = api_key.as_ref().map(|k| format!("ApiKey {k}"));
        if want.is_some() && header("authorization") != want {
            seen.status = 401;
            record(&mut data, seen);
            return answer(
                401,
                json!({"error":{"root_cause":[{"type":"security_exception","reason":"unable to authenticate with provided credentials"}],"type":"security_exception","reason":"unable to authenticate with provided credentials"},"status":401}),
            );
        }
        seen.status = 200;
        record(&mut data, seen);
        return answer(
            200,
            json!({"name":"es-1","cluster_name":"test","version":{"number":"8.15.0"},"tagline":"You Know, for Search"}),
        );
    }
    if method != Method::POST {
        seen.status = 405;
        record(&mut data, seen);
        return answer(405, json!({"error": "POST only"}));
    }

    // Authentication, as the real receiver does it.
    let auth = header("authorization");
    match &mode {
        Mode::SplunkHec { token } => {
            if uri.path() != "/services/collector/event" && uri.path() != "/services/collector/ack"
            {
                seen.status = 404;
                record(&mut data, seen);
                return answer(
                    404,
                    json!({"text":"The requested URL was not found on this server.","code":404}),
                );
            }
            let status_body = match auth.as_deref() {
                None => Some((401, json!({"text":"Token is required","code":2}))),
                Some(a) => match a.strip_prefix("Splunk ") {
                    None => Some((401, json!({"text":"Invalid authorization","code":3}))),
                    Some(t) if t != token => Some((403, json!({"text":"Invalid token","code":4}))),
                    Some(_) => None,
                },
            };
            if let Some((s, b)) = status_body {
                seen.status = s;
                record(&mut data, seen);
                return answer(s, b);
            }
            if let Some(ack) = &faults.hec_ack {
                let Some(channel) = header("x-splunk-request-channel") else {
                    seen.status = 400;
                    record(&mut data, seen);
                    return answer(400, json!({"text":"Data channel is missing","code":10}));
                };
                if uri.path() == "/services/collector/ack" {
                    data.ack_queries += 1;
                    let asked: Vec<u64> = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| v["acks"].as_array().cloned())
                        .unwrap_or_default()
                        .iter()
                        .filter_map(Value::as_u64)
                        .collect();
                    let mut acks = serde_json::Map::new();
                    for id in asked {
                        let done = !ack.withhold.contains(&id)
                            && data
                                .acks
                                .get(&(channel.clone(), id))
                                .is_some_and(|(t, _)| t.elapsed() >= ack.delay);
                        if done {
                            if let Some((_, ids)) = data.acks.remove(&(channel.clone(), id)) {
                                data.acked.extend(ids);
                            }
                            data.unacked_sources.remove(&(channel.clone(), id));
                        }
                        acks.insert(id.to_string(), Value::Bool(done));
                    }
                    seen.status = 200;
                    record(&mut data, seen);
                    return answer(200, json!({ "acks": acks }));
                }
            }
        }
        Mode::Bulk { api_key: Some(k) } => {
            let mut key = k.clone();
            if let Some((after, next)) = &faults.revoke {
                if data.accepted >= *after {
                    key = next.clone();
                }
            }
            if auth.as_deref() != Some(&format!("ApiKey {key}")) {
                seen.status = 401;
                record(&mut data, seen);
                return answer(
                    401,
                    json!({"error":{"root_cause":[{"type":"security_exception","reason":"unable to authenticate with provided credentials"}],"type":"security_exception","reason":"unable to authenticate with provided credentials"},"status":401}),
                );
            }
        }
        _ => {}
    }

    let raw = if gzip {
        let mut out = Vec::new();
        if let Err(e) = flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out) {
            data.malformed.push(format!("gzip: {e}"));
            seen.status = 400;
            record(&mut data, seen);
            return answer(400, json!({"error": "bad gzip"}));
        }
        out
    } else {
        body.to_vec()
    };
    seen.bytes = raw.len();
    let text = match String::from_utf8(raw) {
        Ok(t) => t,
        Err(_) => {
            data.malformed.push("not UTF-8".into());
            seen.status = 400;
            record(&mut data, seen);
            return answer(400, json!({"error": "not UTF-8"}));
        }
    };

    let (status, resp) = match &mode {
        Mode::Ndjson | Mode::JsonArray => {
            let parsed: Result<Vec<Value>, String> = if matches!(mode, Mode::Ndjson) {
                if !text.ends_with('\n') {
                    Err("NDJSON body does not end with a newline".into())
                } else {
                    text.lines()
                        .map(|l| serde_json::from_str::<Value>(l).map_err(|e| format!("{e}: {l}")))
                        .collect()
                }
            } else {
                serde_json::from_str(&text).map_err(|e| e.to_string())
            };
            match parsed {
                Ok(events) => {
                    seen.ids = events
                        .iter()
                        .map(|e| e["id"].as_str().unwrap_or("").to_string())
                        .collect();
                    data.events.extend(events);
                    (200, json!({"ok": true}))
                }
                Err(e) => {
                    data.malformed.push(e.clone());
                    (400, json!({ "error": e }))
                }
            }
        }
        Mode::SplunkHec { .. } => {
            let mut events = Vec::new();
            let mut bad = None;
            for (i, obj) in serde_json::Deserializer::from_str(&text)
                .into_iter::<Value>()
                .enumerate()
            {
                match obj {
                    Ok(o)
                        if o.get("event").is_some_and(Value::is_object)
                            && o.get("time").is_some_and(Value::is_number)
                            && o.get("host").is_some_and(Value::is_string)
                            && o.get("source").is_some_and(Value::is_string)
                            && o.get("sourcetype").is_some_and(Value::is_string) =>
                    {
                        events.push(o)
                    }
                    _ => {
                        bad = Some(i);
                        break;
                    }
                }
            }
            match bad {
                None if !events.is_empty() => {
                    seen.ids = events
                        .iter()
                        .map(|e| e["event"]["id"].as_str().unwrap_or("").to_string())
                        .collect();
                    data.events.extend(events);
                    match &faults.hec_ack {
                        Some(a) if !a.no_ack_id => {
                            let channel = header("x-splunk-request-channel").unwrap_or_default();
                            let id = data.issued;
                            data.issued += 1;
                            let source = data.events.last().map_or(String::new(), |e| {
                                e["event"]["source"].as_str().unwrap_or("").to_string()
                            });
                            data.unacked_sources.insert((channel.clone(), id), source);
                            let waiting: std::collections::HashSet<&String> =
                                data.unacked_sources.values().collect();
                            data.most_sources_unacked =
                                data.most_sources_unacked.max(waiting.len());
                            data.acks.insert((channel, id), (at, seen.ids.clone()));
                            (200, json!({"text":"Success","code":0,"ackId":id}))
                        }
                        _ => (200, json!({"text":"Success","code":0})),
                    }
                }
                None => (400, json!({"text":"No data","code":5})),
                Some(i) => {
                    data.malformed.push(format!("HEC event {i}"));
                    (
                        400,
                        json!({"text":"Invalid data format","code":6,"invalid-event-number":i}),
                    )
                }
            }
        }
        Mode::Bulk { .. } => {
            if !uri.path().ends_with("/_bulk") {
                (
                    404,
                    json!({"error":"no handler found for uri","status":404}),
                )
            } else if !text.ends_with('\n') {
                data.malformed
                    .push("bulk body does not end with a newline".into());
                (
                    400,
                    json!({"error":{"type":"illegal_argument_exception","reason":"The bulk request must be terminated by a newline [\\n]"},"status":400}),
                )
            } else {
                let lines: Vec<&str> = text.lines().collect();
                let faulted = data.accepted < faults.item_fault_requests;
                let mut items = Vec::new();
                let mut errors = false;
                let mut ok = lines.len().is_multiple_of(2);
                let mut missing_index = false;
                for (pos, pair) in lines.chunks(2).enumerate() {
                    let (Ok(action), Some(Ok(doc))) = (
                        serde_json::from_str::<Value>(pair[0]),
                        pair.get(1).map(|d| serde_json::from_str::<Value>(d)),
                    ) else {
                        ok = false;
                        break;
                    };
                    let Some(create) = action.get("create") else {
                        ok = false;
                        break;
                    };
                    let id = create["_id"].as_str().unwrap_or("").to_string();
                    // `_index`, else the URL's `/{target}/_bulk`.
                    let index = create["_index"].as_str().map(str::to_string).or_else(|| {
                        let t = uri.path().strip_suffix("/_bulk")?.trim_start_matches('/');
                        (!t.is_empty()).then(|| t.to_string())
                    });
                    let Some(index) = index else {
                        missing_index = true;
                        break;
                    };
                    data.targets.push(index.clone());
                    seen.ids.push(id.clone());
                    let stream = faults.data_streams.contains(&index);
                    let refused = faults
                        .refuse_source
                        .as_deref()
                        .is_some_and(|r| doc["source"] == r);
                    let status = if refused || (stream && doc.get("@timestamp").is_none()) {
                        400
                    } else if faulted && pos % 5 == 1 {
                        429
                    } else if faulted && pos % 5 == 3 {
                        503
                    } else if data.docs.contains_key(&id) {
                        data.conflicts += 1;
                        409
                    } else {
                        *data.creates.entry(id.clone()).or_default() += 1;
                        data.docs.insert(id.clone(), doc.clone());
                        data.events.push(doc);
                        201
                    };
                    let mut item = json!({"_index": index, "_id": id, "status": status});
                    if status != 201 {
                        errors = true;
                        item["error"] = match status {
                            409 => {
                                json!({"type":"version_conflict_engine_exception","reason":format!("[{id}]: version conflict, document already exists (current version [1])")})
                            }
                            429 => {
                                json!({"type":"es_rejected_execution_exception","reason":"rejected execution of coordinating operation"})
                            }
                            400 if refused => {
                                json!({"type":"document_parsing_exception","reason":"[1:42] failed to parse field [actor] of type [keyword]"})
                            }
                            // Elasticsearch 8.x, verbatim but for the column number.
                            400 => {
                                json!({"type":"document_parsing_exception","reason":"[1:180] failed to parse: data stream timestamp field [@timestamp] is missing","caused_by":{"type":"illegal_argument_exception","reason":"data stream timestamp field [@timestamp] is missing"}})
                            }
                            _ => {
                                json!({"type":"unavailable_shards_exception","reason":"primary shard is not active"})
                            }
                        };
                    }
                    items.push(json!({ "create": item }));
                }
                if missing_index {
                    data.malformed.push("bulk action without a target".into());
                    (
                        400,
                        json!({"error":{"root_cause":[{"type":"action_request_validation_exception","reason":"Validation Failed: 1: index is missing;"}],"type":"action_request_validation_exception","reason":"Validation Failed: 1: index is missing;"},"status":400}),
                    )
                } else if ok {
                    (200, json!({"took": 1, "errors": errors, "items": items}))
                } else {
                    data.malformed
                        .push("bulk body is not action/document pairs".into());
                    (
                        400,
                        json!({"error":{"type":"illegal_argument_exception","reason":"Malformed action/metadata line"},"status":400}),
                    )
                }
            }
        }
    };
    if status == 200 {
        data.bodies.push(text);
        data.accepted += 1;
        if seen.idempotency_key.as_deref() != Some(expected_key(&seen.ids).as_str()) {
            data.bad_keys += 1;
        }
    }
    seen.status = status;
    record(&mut data, seen);
    answer(status, resp)
}
