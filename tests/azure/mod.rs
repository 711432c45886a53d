//! An emulator of the two Azure services the `sentinel` sink talks to, following their
//! documented APIs: the Microsoft Entra ID token endpoint (`POST /{tenant}/oauth2/v2.0/token`,
//! the client credentials grant with a client secret or a `jwt-bearer` client assertion, errors
//! in Entra's JSON shape with `error`, `error_description` and `error_codes`, tokens with a
//! configurable `expires_in`) and the Azure Monitor Logs Ingestion API
//! (`POST /dataCollectionRules/{dcr}/streams/{stream}?api-version=2023-01-01`: the api-version
//! required, the bearer token checked and an expired one answered 401, a 1 MB limit on the body
//! before and after gzip answered 413, an unknown DCR or stream 404, a missing role 403, 204 on
//! success, errors as `{"error":{"code":…,"message":…}}`). Faults are scripted: answers for the
//! next ingestion requests (429 with `Retry-After`, 503), answers for the next token requests
//! (Entra's throttling: 429 or 503 with `Retry-After` and a `temporarily_unavailable` error), a
//! revoked credential, a lower size limit. Records taken are kept for the test to read.
//!
//! It lives in `tests/` beside the HTTP receiver rather than in the `sim` crate: it emulates a
//! destination the agent writes to, not a vendor API it reads, and nothing but the tests uses it.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CLIENT_ID: &str = "0f3a9c1e-5b7d-4e21-9a8c-2b6d4f1e0a37";
pub const CLIENT_SECRET: &str = "azure-client-secret-Q8x~7fP2";
pub const DCR: &str = "dcr-00000000000000000000000000000abc";
pub const STREAM: &str = "Custom-AuditShip_CL";
/// The Logs Ingestion API's limit on a request body (1 MB).
pub const LIMIT: usize = 1_048_576;

/// A canned answer for the next ingestion request.
#[derive(Clone, Debug)]
pub struct Canned {
    pub status: u16,
    pub retry_after: Option<String>,
}

impl Canned {
    /// `status` with `Retry-After: {secs}`.
    pub fn retry_after(status: u16, secs: &str) -> Canned {
        Canned {
            status,
            retry_after: Some(secs.into()),
        }
    }
}

/// One ingestion request as received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub status: u16,
    pub records: usize,
    /// The body's length after decompression.
    pub bytes: usize,
    pub gzip: bool,
}

/// Behaviour, set by the test.
pub struct Faults {
    /// Answers for the next ingestion requests, in order.
    pub canned: VecDeque<Canned>,
    /// Answers for the next token requests, in order (429 or 503, with `Retry-After`).
    pub token_canned: VecDeque<Canned>,
    /// `expires_in` of the tokens granted.
    pub expires_in: u64,
    /// The client secret is revoked: the token endpoint refuses it and its tokens are invalid.
    pub revoked: bool,
    /// The app has no Monitoring Metrics Publisher role on the DCR: 403.
    pub no_role: bool,
    /// The body limit (before and after decompression).
    pub limit: usize,
    /// Answer an empty array 400 rather than 204 (Microsoft does not document which).
    pub refuse_empty: bool,
    /// The federated token a client assertion must carry, if workload identity is used.
    pub federated_token: Option<String>,
    /// The client certificate registered on the app (its DER, and its RSA public key as PKCS#1
    /// DER): an RS256 client assertion with its `x5t` and a valid signature is taken.
    pub certificate: Option<(Vec<u8>, Vec<u8>)>,
}

/// The throwaway client certificate (and its key) made for these tests, in a PEM file for
/// `client_certificate_file`, and as the emulator registers it.
pub fn test_certificate() -> (std::path::PathBuf, (Vec<u8>, Vec<u8>)) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/azure");
    let cert = std::fs::read(dir.join("test-client.cert.der")).unwrap();
    let public = std::fs::read(dir.join("test-client.pub.der")).unwrap();
    (dir.join("test-client.pem"), (cert, public))
}

/// Base64url, padded or not.
fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Checks a certificate's client assertion as Entra ID does: RS256, the registered
/// certificate's `x5t`, the signature, `aud` the token endpoint, `iss` and `sub` the client id,
/// and the time range. The error is Entra's (code, text).
fn check_assertion(
    a: &str,
    (cert, public): &(Vec<u8>, Vec<u8>),
    aud: &str,
) -> Result<(), (u32, String)> {
    let bad = |t: &str| (50027, format!("JWT token is invalid or malformed: {t}."));
    let parts: Vec<&str> = a.split('.').collect();
    let [h, c, sig] = parts[..] else {
        return Err(bad("not three parts"));
    };
    let header: Value = b64url_decode(h)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("header"))?;
    let claims: Value = b64url_decode(c)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("claims"))?;
    if header["alg"] != "RS256" {
        return Err(bad("alg is not RS256"));
    }
    let thumb = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert);
    let x5t = header["x5t"].as_str().and_then(b64url_decode);
    if x5t.as_deref() != Some(thumb.as_ref()) {
        return Err((700027, "The certificate with identifier used to sign the client assertion is not registered on application.".into()));
    }
    let sig = b64url_decode(sig).ok_or_else(|| bad("signature"))?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, public)
        .verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| {
            (
                700027,
                "Client assertion failed signature validation.".to_string(),
            )
        })?;
    if claims["aud"] != aud {
        return Err((700212, format!("No matching federated identity record found for presented assertion audience '{}'.", claims["aud"])));
    }
    if claims["iss"] != CLIENT_ID || claims["sub"] != CLIENT_ID {
        return Err((
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter.".into(),
        ));
    }
    let now = jiff::Timestamp::now().as_second();
    let (nbf, exp) = (
        claims["nbf"].as_i64().unwrap_or(i64::MAX),
        claims["exp"].as_i64().unwrap_or(0),
    );
    if now + 300 < nbf || now >= exp {
        return Err((
            700024,
            "Client assertion is not within its valid time range.".into(),
        ));
    }
    Ok(())
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            canned: VecDeque::new(),
            token_canned: VecDeque::new(),
            expires_in: 3599,
            revoked: false,
            no_role: false,
            limit: LIMIT,
            refuse_empty: false,
            federated_token: None,
            certificate: None,
        }
    }
}

/// What the emulator saw and took.
#[derive(Default)]
pub struct Data {
    /// Every record taken (answered 204), in order.
    pub records: Vec<Value>,
    pub requests: Vec<Seen>,
    /// Every token request: when, and the status answered.
    pub token_requests: Vec<(Instant, u16)>,
    /// Token requests granted and refused.
    pub tokens_granted: usize,
    pub tokens_refused: usize,
    /// Tokens granted: the token and when it expires.
    tokens: HashMap<String, (Instant, bool)>,
    /// Ingestion requests answered 401 for an expired token.
    pub expired_seen: usize,
}

#[derive(Default)]
struct Shared {
    faults: Mutex<Faults>,
    data: Mutex<Data>,
}

pub struct Azure {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for Azure {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Azure {
    pub async fn start() -> Azure {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .route("/{tenant}/oauth2/v2.0/token", axum::routing::post(token))
            .route(
                "/dataCollectionRules/{dcr}/streams/{stream}",
                axum::routing::post(ingest),
            )
            .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await;
        });
        Azure { addr, shared, stop }
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

    /// The keys of a `kind = "sentinel"` sink pointed at this emulator.
    pub fn sink_keys(&self) -> String {
        keys_at(&self.base())
    }
}

/// The keys of a `kind = "sentinel"` sink whose endpoint and authority are `base`.
pub fn keys_at(base: &str) -> String {
    format!(
        "endpoint = \"{base}\"\nauthority = \"{base}\"\ndcr_immutable_id = \"{DCR}\"\nstream = \"{STREAM}\"\n\
         tenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n"
    )
}

/// An Entra ID error answer.
fn aad_error(status: u16, error: &str, code: u32, text: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {text} Trace ID: 0b1c Correlation ID: 9e8d Timestamp: 2026-12-05 07:40:00Z"),
        "error_codes": [code],
        "timestamp": "2026-12-05 07:40:00Z",
        "trace_id": "0b1c",
        "correlation_id": "9e8d",
        "error_uri": "https://login.microsoftonline.com/error?code=".to_string() + &code.to_string(),
    });
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

/// An Azure Monitor error answer.
fn az_error(status: u16, code: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// The token endpoint: a canned throttling answer first, if one is scripted; every request's
/// time and status kept.
async fn token(
    State(s): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let canned = s.faults.lock().unwrap().token_canned.pop_front();
    let resp = match canned {
        Some(c) => {
            let mut r = aad_error(
                c.status,
                "temporarily_unavailable",
                90033,
                "A transient error has occurred. Please try again.",
            );
            if let Some(ra) = c.retry_after {
                r.headers_mut().insert("retry-after", ra.parse().unwrap());
            }
            r
        }
        None => grant(&s, &tenant, &headers, &body),
    };
    let status = resp.status().as_u16();
    s.data
        .lock()
        .unwrap()
        .token_requests
        .push((Instant::now(), status));
    resp
}

fn grant(s: &Shared, tenant: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let refused = |r: Response| {
        s.data.lock().unwrap().tokens_refused += 1;
        r
    };
    if headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| !v.starts_with("application/x-www-form-urlencoded"))
    {
        return refused(aad_error(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        ));
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    if tenant != TENANT {
        return refused(aad_error(
            400,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        ));
    }
    for p in ["grant_type", "client_id", "scope"] {
        if !form.contains_key(p) {
            return refused(aad_error(
                400,
                "invalid_request",
                900144,
                &format!("The request body must contain the following parameter: '{p}'."),
            ));
        }
    }
    if form["grant_type"] != "client_credentials" {
        return refused(aad_error(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        ));
    }
    if form["scope"] != "https://monitor.azure.com/.default" {
        return refused(aad_error(
            400,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {} is not valid.",
                form["scope"]
            ),
        ));
    }
    if form["client_id"] != CLIENT_ID {
        return refused(aad_error(
            400,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{}' was not found in the directory.",
                form["client_id"]
            ),
        ));
    }
    let f = s.faults.lock().unwrap();
    let ok = match (
        form.get("client_secret"),
        form.get("client_assertion_type"),
        form.get("client_assertion"),
    ) {
        (Some(sec), None, None) => sec == CLIENT_SECRET && !f.revoked,
        (None, Some(t), Some(a))
            if t == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" =>
        {
            // A JWT whose header has an `x5t` is a certificate's assertion; anything else a
            // federated token.
            let x5t = a
                .split('.')
                .next()
                .and_then(b64url_decode)
                .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
                .is_some_and(|h| h.get("x5t").is_some());
            if x5t {
                let unregistered = (700027, "The certificate with identifier used to sign the client assertion is not registered on application.".to_string());
                let host = headers
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("");
                let aud = format!("http://{host}/{tenant}/oauth2/v2.0/token");
                let checked = match (&f.certificate, f.revoked) {
                    (Some(cert), false) => check_assertion(a, cert, &aud),
                    _ => Err(unregistered),
                };
                if let Err((code, text)) = checked {
                    drop(f);
                    return refused(aad_error(401, "invalid_client", code, &text));
                }
                true
            } else if f.federated_token.as_deref() != Some(a.as_str()) || f.revoked {
                drop(f);
                return refused(aad_error(
                    400,
                    "invalid_request",
                    70021,
                    "No matching federated identity record found for presented assertion.",
                ));
            } else {
                true
            }
        }
        (None, None, None) => {
            drop(f);
            return refused(aad_error(401, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."));
        }
        _ => {
            drop(f);
            return refused(aad_error(
                400,
                "invalid_request",
                90014,
                "A required field is missing or malformed.",
            ));
        }
    };
    if !ok {
        drop(f);
        return refused(aad_error(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID."));
    }
    let expires_in = f.expires_in;
    drop(f);
    let mut d = s.data.lock().unwrap();
    d.tokens_granted += 1;
    let t = format!(
        "eyJ0eXAiOiJKV1QifQ.emulated-{}.{}",
        d.tokens_granted,
        fastrand::u64(..)
    );
    d.tokens.insert(
        t.clone(),
        (Instant::now() + Duration::from_secs(expires_in), true),
    );
    (
        StatusCode::OK,
        axum::Json(json!({"token_type": "Bearer", "expires_in": expires_in, "ext_expires_in": expires_in, "access_token": t})),
    )
        .into_response()
}

async fn ingest(
    State(s): State<Arc<Shared>>,
    Path((dcr, stream)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let gzip = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let (status, records, bytes, resp) = answer(&s, &dcr, &stream, &q, &headers, &body, gzip);
    let mut d = s.data.lock().unwrap();
    d.requests.push(Seen {
        at: Instant::now(),
        status,
        records: records.len(),
        bytes,
        gzip,
    });
    if status == 204 {
        d.records.extend(records);
    }
    resp
}

#[allow(clippy::too_many_arguments)]
fn answer(
    s: &Shared,
    dcr: &str,
    stream: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
    gzip: bool,
) -> (u16, Vec<Value>, usize, Response) {
    let no = |r: Response| (r.status().as_u16(), Vec::new(), body.len(), r);
    match q.get("api-version").map(String::as_str) {
        None => return no(az_error(400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests.")),
        Some("2023-01-01") | Some("2021-11-01-preview") => {}
        Some(v) => return no(az_error(400, "InvalidApiVersionParameter", &format!("The api-version '{v}' is invalid. The supported versions are '2023-01-01,2021-11-01-preview'."))),
    }
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return no(az_error(
            401,
            "InvalidAuthenticationToken",
            "Authentication failed. The 'Authorization' header is missing.",
        ));
    };
    {
        let mut d = s.data.lock().unwrap();
        let revoked = s.faults.lock().unwrap().revoked;
        match d.tokens.get(token).copied() {
            None => {
                return no(az_error(
                    401,
                    "InvalidAuthenticationToken",
                    "The access token is invalid.",
                ))
            }
            Some(_) if revoked => {
                return no(az_error(
                    401,
                    "InvalidAuthenticationToken",
                    "The access token is invalid.",
                ))
            }
            Some((exp, _)) if Instant::now() >= exp => {
                d.expired_seen += 1;
                return no(az_error(
                    401,
                    "ExpiredAuthenticationToken",
                    "The access token expiry UTC time is earlier than current UTC time.",
                ));
            }
            Some(_) => {}
        }
    }
    let (limit, no_role, canned) = {
        let mut f = s.faults.lock().unwrap();
        (f.limit, f.no_role, f.canned.pop_front())
    };
    if dcr != DCR {
        return no(az_error(
            404,
            "NotFound",
            &format!("Data collection rule with immutable Id '{dcr}' not found."),
        ));
    }
    if no_role {
        return no(az_error(403, "OperationFailed", &format!("The authentication token provided does not have access to ingest data for the data collection rule with immutable Id '{dcr}'.")));
    }
    if stream != STREAM {
        return no(az_error(
            404,
            "InvalidStream",
            &format!("Stream name '{stream}' is not declared in data collection rule '{dcr}'."),
        ));
    }
    if let Some(c) = canned {
        let mut r = az_error(
            c.status,
            if c.status == 429 {
                "TooManyRequests"
            } else {
                "ServiceUnavailable"
            },
            "Please retry after the time in the Retry-After header.",
        );
        if let Some(ra) = c.retry_after {
            r.headers_mut().insert("retry-after", ra.parse().unwrap());
        }
        return no(r);
    }
    let too_large = |n: usize| {
        az_error(413, "ContentLengthLimitExceeded", &format!("Maximum allowed content length: {limit} bytes (1 MB). Provided content length: {n} bytes."))
    };
    if body.len() > limit {
        return no(too_large(body.len()));
    }
    let plain = if gzip {
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(body)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .is_err()
        {
            return no(az_error(
                400,
                "InvalidContentEncoding",
                "The request body could not be decompressed with gzip.",
            ));
        }
        if out.len() > limit {
            return no(too_large(out.len()));
        }
        out
    } else {
        body.to_vec()
    };
    let Ok(Value::Array(records)) = serde_json::from_slice::<Value>(&plain) else {
        return no(az_error(
            400,
            "InvalidPayload",
            "The request body is not a JSON array of records.",
        ));
    };
    if records.is_empty() && s.faults.lock().unwrap().refuse_empty {
        return no(az_error(
            400,
            "InvalidPayload",
            "The request body is an empty array.",
        ));
    }
    for r in &records {
        let ok = r
            .get("TimeGenerated")
            .and_then(Value::as_str)
            .is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok());
        if !r.is_object() || !ok {
            return no(az_error(
                400,
                "InvalidPayload",
                "A record has no TimeGenerated of type datetime.",
            ));
        }
    }
    (
        204,
        records,
        plain.len(),
        StatusCode::NO_CONTENT.into_response(),
    )
}
