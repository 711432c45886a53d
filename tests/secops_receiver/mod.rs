//! An emulator of Google SecOps for the `secops` sink's tests, following Google's documented
//! API: the OAuth 2.0 token endpoint of service accounts (a JWT bearer assertion, RS256, checked
//! against the test key's public key; `{"error","error_description"}` when refused), the
//! Compute Engine / GKE metadata server's token of the attached service account
//! (`GET /computeMetadata/v1/instance/service-accounts/default/token`, only with
//! `Metadata-Flavor: Google` and without `X-Forwarded-For`, answered with `Metadata-Flavor:
//! Google` and `{"access_token","expires_in","token_type"}`; 404 when no service account is
//! attached; it can also be served on a second port started late, as a metadata server that
//! was down), and the
//! Chronicle API's `logTypes/{log_type}` (GET) and `logTypes/{log_type}/logs:import` (POST,
//! `inlineSource.logs[]`, a bearer token, Google's `{"error":{"code","message","status"}}`
//! answers). Tokens live a configurable time, so that tests see them expire mid-run; a switch
//! revokes the key; a schedule of 429s with `Retry-After`; a request-size limit; every log
//! taken is kept for the test to decode.
//!
//! It lives here rather than in `auditship-sim`: it emulates a destination, which only tests
//! use, while the sim crate holds the vendors the binary itself serves (`simulate`, `demo`).
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ring::signature::{KeyPair as _, RsaKeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// The test service account's key (2048-bit RSA, PKCS#8), made for these tests only.
pub const TEST_KEY_PEM: &str = include_str!("test-key.pem");
pub const CLIENT_EMAIL: &str = "auditship@test-project.iam.gserviceaccount.com";
pub const KEY_ID: &str = "0123456789abcdef0123456789abcdef01234567";
pub const PROJECT: &str = "test-project";
pub const REGION: &str = "us";
pub const INSTANCE: &str = "ebdc4bb9-878b-11e7-8455-10604b7cb5c1";
pub const LOG_TYPE: &str = "AUDITSHIP";

/// One log as `logs:import` took it.
#[derive(Clone, Debug)]
pub struct Log {
    /// `data`, decoded.
    pub data: Vec<u8>,
    pub log_entry_time: String,
    pub collection_time: String,
    pub forwarder: Option<String>,
}

/// What the test sets and reads.
pub struct Shared {
    /// The key's public half (PKCS#1 `RSAPublicKey`).
    public_key: Vec<u8>,
    /// `http://addr`, the `aud` an assertion must name (`{base}/token`).
    base: String,
    /// Lifetime of the tokens given out.
    pub token_lifetime: Mutex<Duration>,
    /// The key is deleted: assertions are refused with `invalid_grant`.
    pub revoked: AtomicBool,
    /// Access tokens given out and when each expires.
    tokens: Mutex<HashMap<String, Instant>>,
    /// Token requests answered 200.
    pub tokens_issued: AtomicUsize,
    /// Most bytes of a `logs:import` body.
    pub max_request_bytes: AtomicUsize,
    /// Log types of the instance.
    pub log_types: Mutex<HashSet<String>>,
    /// The identity lacks `chronicle.logs.import`: 403 on the instance.
    pub denied: AtomicBool,
    /// Answer 429 with `Retry-After: 1` to every n-th `logs:import` (0: never).
    pub throttle_every: AtomicUsize,
    /// `logs:import` requests received.
    pub imports: AtomicUsize,
    /// At this `logs:import` request (1-based; 0: never), every token given out stops working.
    pub expire_tokens_at: AtomicUsize,
    /// When each 429 was answered, and when each request arrived.
    pub throttled_at: Mutex<Vec<Instant>>,
    pub import_at: Mutex<Vec<Instant>>,
    /// 401s answered for an expired or unknown token.
    pub unauthenticated: AtomicUsize,
    /// Largest body taken.
    pub largest: AtomicUsize,
    /// Every log taken.
    pub logs: Mutex<Vec<Log>>,
    /// Tokens the metadata server gave out.
    pub metadata_tokens: AtomicUsize,
    /// Metadata requests refused for a missing `Metadata-Flavor: Google` or an
    /// `X-Forwarded-For`.
    pub metadata_refused: AtomicUsize,
    /// No service account is attached to the instance (or the pod's is not bound): 404.
    pub no_service_account: AtomicBool,
}

/// A running emulator.
pub struct Emulator {
    pub shared: Arc<Shared>,
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The service account's JSON key file, as Google's console downloads it, with `token_uri`.
pub fn key_json(token_uri: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": KEY_ID,
        "private_key": TEST_KEY_PEM,
        "client_email": CLIENT_EMAIL,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    })
    .to_string()
}

fn pkcs8_der() -> Vec<u8> {
    let body: String = TEST_KEY_PEM
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

impl Emulator {
    pub async fn start() -> Emulator {
        let pair = RsaKeyPair::from_pkcs8(&pkcs8_der()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            public_key: pair.public_key().as_ref().to_vec(),
            base: format!("http://{addr}"),
            token_lifetime: Mutex::new(Duration::from_secs(3600)),
            revoked: AtomicBool::new(false),
            tokens: Mutex::new(HashMap::new()),
            tokens_issued: AtomicUsize::new(0),
            max_request_bytes: AtomicUsize::new(1_000_000),
            log_types: Mutex::new([LOG_TYPE.to_string()].into()),
            denied: AtomicBool::new(false),
            throttle_every: AtomicUsize::new(0),
            imports: AtomicUsize::new(0),
            expire_tokens_at: AtomicUsize::new(0),
            throttled_at: Mutex::new(Vec::new()),
            import_at: Mutex::new(Vec::new()),
            unauthenticated: AtomicUsize::new(0),
            largest: AtomicUsize::new(0),
            logs: Mutex::new(Vec::new()),
            metadata_tokens: AtomicUsize::new(0),
            metadata_refused: AtomicUsize::new(0),
            no_service_account: AtomicBool::new(false),
        });
        let stop = CancellationToken::new();
        serve(listener, shared.clone(), stop.clone());
        Emulator { shared, addr, stop }
    }

    /// Serves the same emulator on `port` of loopback too, from now on: a metadata server
    /// that comes up late (`GCE_METADATA_HOST` named the port before anything listened).
    pub async fn serve_metadata_on(&self, port: u16) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        serve(listener, self.shared.clone(), self.stop.clone());
    }

    /// `GCE_METADATA_HOST` for this emulator's metadata server.
    pub fn metadata_host(&self) -> String {
        self.addr.to_string()
    }

    pub fn base(&self) -> String {
        self.shared.base.clone()
    }

    pub fn token_uri(&self) -> String {
        format!("{}/token", self.base())
    }

    /// Every access token given out stops working (they expired early).
    pub fn expire_tokens(&self) {
        self.shared.tokens.lock().unwrap().clear();
    }

    pub fn logs(&self) -> Vec<Log> {
        self.shared.logs.lock().unwrap().clone()
    }
}

fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let app = axum::Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::disable())
        .with_state(shared);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
}

/// The metadata server's token of the default service account, as Compute Engine documents
/// it: the request must carry `Metadata-Flavor: Google` and no `X-Forwarded-For` (else 403),
/// every answer carries `Metadata-Flavor: Google`, the token is JSON.
fn metadata_token(s: &Shared, method: &Method, headers: &HeaderMap) -> Response {
    let answer = |status: StatusCode, ctype: &'static str, body: String| {
        (
            status,
            [("metadata-flavor", "Google"), ("content-type", ctype)],
            body,
        )
            .into_response()
    };
    let flavor = headers
        .get("metadata-flavor")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "Google");
    if !flavor || headers.contains_key("x-forwarded-for") {
        s.metadata_refused.fetch_add(1, Ordering::Relaxed);
        return answer(
            StatusCode::FORBIDDEN,
            "text/html; charset=UTF-8",
            "Your client does not have permission to get URL /computeMetadata/v1/instance/service-accounts/default/token from this server. Missing Metadata-Flavor:Google header.".into(),
        );
    }
    if *method != Method::GET {
        return answer(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/html; charset=UTF-8",
            "Method Not Allowed".into(),
        );
    }
    if s.no_service_account.load(Ordering::Relaxed) {
        return answer(
            StatusCode::NOT_FOUND,
            "text/html; charset=UTF-8",
            "Not Found".into(),
        );
    }
    let (token, lifetime) = issue(s, "ya29.c.metadata");
    s.metadata_tokens.fetch_add(1, Ordering::Relaxed);
    answer(
        StatusCode::OK,
        "application/json",
        json!({
            "access_token": token,
            "expires_in": lifetime.as_secs().max(1),
            "token_type": "Bearer",
        })
        .to_string(),
    )
}

/// Google's error answer.
fn google(status: StatusCode, message: &str) -> Response {
    let name = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        _ => "INTERNAL",
    };
    (
        status,
        [("content-type", "application/json; charset=UTF-8")],
        json!({"error": {"code": status.as_u16(), "message": message, "status": name}}).to_string(),
    )
        .into_response()
}

/// OAuth's error answer (RFC 6749 5.2), as Google's token endpoint sends it.
fn oauth(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [("content-type", "application/json; charset=utf-8")],
        json!({"error": error, "error_description": description}).to_string(),
    )
        .into_response()
}

async fn handle(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    if path == "/token" && method == Method::POST {
        return token(&s, &body);
    }
    if path == "/computeMetadata/v1/instance/service-accounts/default/token" {
        return metadata_token(&s, &method, &headers);
    }
    let Some(rest) = path.strip_prefix("/v1alpha/") else {
        return google(
            StatusCode::NOT_FOUND,
            "The requested URL was not found on this server.",
        );
    };
    let parts: Vec<&str> = rest.split('/').collect();
    // projects/{p}/locations/{l}/instances/{i}/logTypes/{t}[/logs:import]
    let shape = parts.len() >= 8
        && parts[0] == "projects"
        && parts[2] == "locations"
        && parts[4] == "instances"
        && parts[6] == "logTypes";
    let import = shape && parts.len() == 9 && parts[8] == "logs:import";
    if !shape || !(parts.len() == 8 || import) {
        return google(
            StatusCode::NOT_FOUND,
            "The requested URL was not found on this server.",
        );
    }
    let mut n = 0;
    if import && method == Method::POST {
        n = s.imports.fetch_add(1, Ordering::Relaxed) + 1;
        s.import_at.lock().unwrap().push(Instant::now());
        if n == s.expire_tokens_at.load(Ordering::Relaxed) {
            s.tokens.lock().unwrap().clear();
        }
    }
    if !bearer_ok(&s, &headers) {
        s.unauthenticated.fetch_add(1, Ordering::Relaxed);
        return google(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
        );
    }
    let (project, location, instance, log_type) = (parts[1], parts[3], parts[5], parts[7]);
    if s.denied.load(Ordering::Relaxed) {
        // Each method's own permission: logTypes.get and logs.import.
        let permission = if import {
            "chronicle.logs.import"
        } else {
            "chronicle.logTypes.get"
        };
        return google(
            StatusCode::FORBIDDEN,
            &format!("Permission '{permission}' denied on resource '//chronicle.googleapis.com/projects/{project}/locations/{location}/instances/{instance}' (or it may not exist)."),
        );
    }
    if project != PROJECT || location != REGION || instance != INSTANCE {
        return google(
            StatusCode::NOT_FOUND,
            &format!(
                "instance projects/{project}/locations/{location}/instances/{instance} not found"
            ),
        );
    }
    if !s.log_types.lock().unwrap().contains(log_type) {
        return google(
            StatusCode::NOT_FOUND,
            &format!("LogType {log_type} not found"),
        );
    }
    let name =
        format!("projects/{project}/locations/{location}/instances/{instance}/logTypes/{log_type}");
    if !import {
        if method != Method::GET {
            return google(
                StatusCode::NOT_FOUND,
                "The requested URL was not found on this server.",
            );
        }
        return axum::Json(json!({"name": name, "displayName": log_type, "golden": false}))
            .into_response();
    }
    if method != Method::POST {
        return google(
            StatusCode::NOT_FOUND,
            "The requested URL was not found on this server.",
        );
    }
    let every = s.throttle_every.load(Ordering::Relaxed);
    if every > 0 && n % every == 0 {
        s.throttled_at.lock().unwrap().push(Instant::now());
        let mut r = google(StatusCode::TOO_MANY_REQUESTS, "Quota exceeded for quota metric 'Ingestion requests' and limit 'Ingestion requests per minute'.");
        r.headers_mut().insert("retry-after", "1".parse().unwrap());
        return r;
    }
    let max = s.max_request_bytes.load(Ordering::Relaxed);
    if body.len() > max {
        return google(
            StatusCode::BAD_REQUEST,
            &format!("Request payload size exceeds the limit: {max} bytes."),
        );
    }
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return google(
                StatusCode::BAD_REQUEST,
                &format!("Invalid JSON payload received. {e}"),
            )
        }
    };
    let Some(logs) = v["inlineSource"]["logs"]
        .as_array()
        .filter(|l| !l.is_empty())
    else {
        return google(StatusCode::BAD_REQUEST, "inline_source.logs: required");
    };
    let forwarder = v["inlineSource"]["forwarder"].as_str().map(str::to_string);
    if let Some(f) = &forwarder {
        if !f.starts_with(&format!(
            "projects/{project}/locations/{location}/instances/{instance}/forwarders/"
        )) {
            return google(StatusCode::BAD_REQUEST, &format!("invalid forwarder {f}"));
        }
    }
    let mut taken = Vec::new();
    for (i, l) in logs.iter().enumerate() {
        let data = l["data"]
            .as_str()
            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok());
        let times = (l["logEntryTime"].as_str(), l["collectionTime"].as_str());
        let (Some(data), (Some(entry), Some(collected))) = (data, times) else {
            return google(StatusCode::BAD_REQUEST, &format!("inline_source.logs[{i}]: data (base64), log_entry_time and collection_time are required"));
        };
        let (Ok(e), Ok(c)) = (
            entry.parse::<jiff::Timestamp>(),
            collected.parse::<jiff::Timestamp>(),
        ) else {
            return google(
                StatusCode::BAD_REQUEST,
                &format!("inline_source.logs[{i}]: invalid timestamp"),
            );
        };
        if c < e {
            return google(
                StatusCode::BAD_REQUEST,
                &format!("inline_source.logs[{i}]: collection_time must be after log_entry_time"),
            );
        }
        taken.push(Log {
            data,
            log_entry_time: entry.to_string(),
            collection_time: collected.to_string(),
            forwarder: forwarder.clone(),
        });
    }
    s.largest.fetch_max(body.len(), Ordering::Relaxed);
    s.logs.lock().unwrap().extend(taken);
    // "If successful, the response body is empty": the JSON of an empty message.
    axum::Json(json!({})).into_response()
}

fn bearer_ok(s: &Shared, headers: &HeaderMap) -> bool {
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    s.tokens
        .lock()
        .unwrap()
        .get(token)
        .is_some_and(|exp| Instant::now() < *exp)
}

/// The token endpoint: `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=JWT`.
fn token(s: &Shared, body: &[u8]) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return oauth(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Invalid grant_type: ",
        );
    }
    let Some(jwt) = form.get("assertion") else {
        return oauth(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: assertion",
        );
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return oauth(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: not three segments",
        );
    }
    let signed = format!("{}.{}", parts[0], parts[1]);
    let sig = b64.decode(parts[2]).unwrap_or_default();
    if s.revoked.load(Ordering::Relaxed)
        || UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &s.public_key)
            .verify(signed.as_bytes(), &sig)
            .is_err()
    {
        return oauth(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT Signature.",
        );
    }
    let decode = |p: &str| -> Value {
        b64.decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    };
    let (header, claims) = (decode(parts[0]), decode(parts[1]));
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap_or(0),
        claims["exp"].as_i64().unwrap_or(0),
    );
    let problem = if header["alg"] != "RS256" || header["kid"] != KEY_ID {
        Some("Invalid JWT header: alg must be RS256 and kid the key's id")
    } else if claims["iss"] != CLIENT_EMAIL || claims.get("sub").is_some_and(|s| s != CLIENT_EMAIL)
    {
        Some("Invalid JWT: iss (and sub) must be the service account")
    } else if claims["aud"] != format!("{}/token", s.base) {
        Some("Invalid JWT: aud must be the token endpoint")
    } else if !claims["scope"]
        .as_str()
        .unwrap_or("")
        .split(' ')
        .any(|sc| sc == "https://www.googleapis.com/auth/cloud-platform")
    {
        Some("Invalid JWT: scope")
    } else if exp <= now || iat > now + 60 || exp - iat > 3600 {
        Some("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.")
    } else {
        None
    };
    if let Some(p) = problem {
        return oauth(StatusCode::BAD_REQUEST, "invalid_grant", p);
    }
    let (token, lifetime) = issue(s, "ya29.test");
    s.tokens_issued.fetch_add(1, Ordering::Relaxed);
    axum::Json(json!({
        "access_token": token,
        "expires_in": lifetime.as_secs().max(1),
        "token_type": "Bearer",
    }))
    .into_response()
}

/// A new access token, `{prefix}-{random}`, good for the configured lifetime.
fn issue(s: &Shared, prefix: &str) -> (String, Duration) {
    let lifetime = *s.token_lifetime.lock().unwrap();
    let token = format!("{prefix}-{:016x}", fastrand_u64());
    s.tokens
        .lock()
        .unwrap()
        .insert(token.clone(), Instant::now() + lifetime);
    (token, lifetime)
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}
