//! A real S3 API server for the `s3` sink's tests: moto in server mode (PyPI `moto[server]`,
//! installed into target/s3-venv by tests/install-deps.sh), started once per test binary, with
//! request signatures checked (its IAM emulation: after the first three requests, each must be
//! signed with a key it made, and be allowed by that key's policies). The bucket is read back
//! with boto3 (`bucket.py`), not with the agent's code. [`Proxy`] sits in front of it to answer
//! 503 SlowDown, fail chosen requests, slow uploads down and count what it forwarded.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// The server, and the keys `setup` made on it.
pub struct Moto {
    /// `http://127.0.0.1:port`.
    pub url: String,
    /// A key allowed everything.
    pub key_id: String,
    pub secret: String,
    /// A role the key may assume, allowed S3 only.
    pub role_arn: String,
    /// A key allowed nothing.
    pub denied_key_id: String,
    pub denied_secret: String,
}

fn venv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/s3-venv")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3_server/bucket.py")
}

static MOTO: OnceLock<Moto> = OnceLock::new();
static MOTO_OPEN: OnceLock<Moto> = OnceLock::new();

/// The test binary's moto server, started at the first call.
pub fn moto() -> &'static Moto {
    MOTO.get_or_init(|| start(true))
}

/// A second server that checks no signature, for STS's AssumeRoleWithWebIdentity: that call
/// is not signed (the token is the proof), and moto's signature checks answer it with a 500.
pub fn moto_open() -> &'static Moto {
    MOTO_OPEN.get_or_init(|| start(false))
}

fn start(auth: bool) -> Moto {
    let bin = venv().join("bin/moto_server");
    assert!(
        bin.exists(),
        "{} is missing: run tests/install-deps.sh (or bash tests/venv.sh target/s3-venv tests/s3_server/requirements.txt)",
        bin.display()
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    // Started from a thread that lives as long as the test binary: the server is killed when
    // that thread's process ends (PR_SET_PDEATHSIG), never left behind.
    std::thread::spawn(move || {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        if auth {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "3");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("starting moto_server");
        tx.send(child.id()).unwrap();
        // Waited for here, so this thread lives as long as the server.
        let _ = child.wait();
    });
    rx.recv().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "moto_server did not listen within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    if !auth {
        let any = "testing".to_string();
        return Moto {
            url,
            key_id: any.clone(),
            secret: any.clone(),
            role_arn: "arn:aws:iam::123456789012:role/writer".into(),
            denied_key_id: any.clone(),
            denied_secret: any,
        };
    }
    let out = python(&url, &[], &["setup", "-"]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let s = |k: &str| v[k].as_str().unwrap().to_string();
    Moto {
        url,
        key_id: s("access_key_id"),
        secret: s("secret_access_key"),
        role_arn: s("role_arn"),
        denied_key_id: s("denied_key_id"),
        denied_secret: s("denied_secret"),
    }
}

/// Runs bucket.py against `url` with `args`; its standard output.
fn python(url: &str, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = Command::new(venv().join("bin/python"))
        .arg(script())
        .arg(url)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("running bucket.py");
    assert!(
        out.status.success(),
        "bucket.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One object read back.
#[derive(Debug)]
pub struct Object {
    pub key: String,
    pub size: u64,
    pub content_type: Option<String>,
    pub records: Vec<Value>,
}

impl Moto {
    fn admin(&self) -> [(&str, &str); 2] {
        [
            ("AWS_ACCESS_KEY_ID", self.key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.as_str()),
        ]
    }

    /// Makes a bucket.
    pub fn create(&self, bucket: &str) {
        python(&self.url, &self.admin(), &["create", bucket]);
    }

    /// Every object of the bucket, gunzipped and parsed by boto3 and Python.
    pub fn dump(&self, bucket: &str) -> Vec<Object> {
        python(&self.url, &self.admin(), &["dump", bucket])
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                Object {
                    key: v["key"].as_str().unwrap().to_string(),
                    size: v["size"].as_u64().unwrap(),
                    content_type: v["content_type"].as_str().map(str::to_string),
                    records: v["records"].as_array().unwrap().clone(),
                }
            })
            .collect()
    }

    /// Every object of the bucket as it is, downloaded by boto3 into `dir`: (key, content
    /// type, file).
    pub fn fetch(&self, bucket: &str, dir: &Path) -> Vec<(String, String, PathBuf)> {
        python(
            &self.url,
            &self.admin(),
            &["fetch", bucket, dir.to_str().unwrap()],
        )
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["key"].as_str().unwrap().to_string(),
                v["content_type"].as_str().unwrap_or("").to_string(),
                PathBuf::from(v["path"].as_str().unwrap()),
            )
        })
        .collect()
    }

    /// Writes `text` gzipped at `key`, as another writer of the bucket would.
    pub fn put(&self, bucket: &str, key: &str, text: &str) {
        python(&self.url, &self.admin(), &["put", bucket, key, text]);
    }

    /// The keys of the multipart uploads still open in the bucket.
    pub fn open_uploads(&self, bucket: &str) -> Vec<String> {
        serde_json::from_str(&python(&self.url, &self.admin(), &["uploads", bucket])).unwrap()
    }

    /// The sink's keys for `bucket` at `endpoint` (the server, or a proxy), with the admin key.
    pub fn sink_keys(&self, endpoint: &str, bucket: &str) -> String {
        format!(
            "bucket = {bucket:?}\nendpoint = {endpoint:?}\nforce_path_style = true\nregion = \"us-east-1\"\naccess_key_id = {:?}\nsecret_access_key = {:?}\n",
            self.key_id, self.secret
        )
    }
}

/// A request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    /// What the client got.
    pub status: u16,
    /// The access key id of its signature.
    pub key_id: String,
    /// Its `x-amz-security-token`.
    pub session_token: Option<String>,
    pub bytes: usize,
}

/// Another writer's put, run by the proxy before it forwards a PutObject to its path.
pub type BeforePut = Box<dyn FnOnce(&str) + Send>;

/// What the proxy does, set by the test.
#[derive(Default)]
pub struct Faults {
    /// Answer the next this many object writes (PUT, POST) with 503 SlowDown.
    pub slow_down: usize,
    /// Answer every this-many-th object write with 503 SlowDown (0: never).
    pub slow_down_every: usize,
    /// Answer UploadPart of this part number with 403 AccessDenied.
    pub deny_part: Option<u32>,
    /// Forward the next CompleteMultipartUpload, then answer the client 503 as if the answer
    /// was lost on the way.
    pub lose_complete: bool,
    /// Answer the next CompleteMultipartUpload 404 NoSuchUpload (as S3 may once an upload it
    /// completed is cleaned up), without forwarding it.
    pub gone_complete: bool,
    /// Called with the path (`/bucket/key`) of the next PutObject before it is forwarded: to
    /// have another writer put an object at that key first.
    pub before_put: Option<BeforePut>,
    /// Hold each object write this long before forwarding it.
    pub delay: Duration,
    pub seen: Vec<Seen>,
    writes: usize,
}

/// A fault-injecting proxy in front of moto.
pub struct Proxy {
    pub url: String,
    pub faults: Arc<Mutex<Faults>>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let faults = Arc::new(Mutex::new(Faults::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = (
            upstream.to_string(),
            faults.clone(),
            reqwest::Client::builder().no_proxy().build().unwrap(),
        );
        let app = axum::Router::new()
            .fallback(forward)
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(Arc::new(state));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Proxy { url, faults }
    }

    pub fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap()
    }
}

type ProxyState = Arc<(String, Arc<Mutex<Faults>>, reqwest::Client)>;

fn s3_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [("content-type", "application/xml")],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>proxy</RequestId></Error>"),
    )
        .into_response()
}

async fn forward(
    State(st): State<ProxyState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (upstream, faults, client) = (&st.0, &st.1, &st.2);
    let write = method == Method::PUT || method == Method::POST;
    let query = uri.query().unwrap_or("").to_string();
    let key_id = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').next())
        .unwrap_or("")
        .to_string();
    let (fault, delay) = {
        let mut f = faults.lock().unwrap();
        let mut fault = None;
        if write {
            f.writes += 1;
            if f.slow_down > 0 {
                f.slow_down -= 1;
                fault = Some(503);
            } else if f.slow_down_every > 0 && f.writes % f.slow_down_every == 0 {
                fault = Some(503);
            }
            if let Some(n) = f.deny_part {
                if query.contains(&format!("partNumber={n}&"))
                    || query.ends_with(&format!("partNumber={n}"))
                {
                    fault = Some(403);
                }
            }
        }
        (fault, if write { f.delay } else { Duration::ZERO })
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if method == Method::PUT && query.is_empty() {
        let before = faults.lock().unwrap().before_put.take();
        if let Some(f) = before {
            let path = uri.path().to_string();
            tokio::task::spawn_blocking(move || f(&path)).await.unwrap();
        }
    }
    let complete = method == Method::POST && query.starts_with("uploadId=");
    let (lose, gone) = {
        let mut f = faults.lock().unwrap();
        let lose = complete && std::mem::take(&mut f.lose_complete);
        let gone = complete && !lose && std::mem::take(&mut f.gone_complete);
        (lose, gone)
    };
    let fault = if gone { Some(404) } else { fault };
    let resp = match fault {
        Some(503) => s3_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown",
            "Please reduce your request rate.",
        ),
        Some(404) => s3_error(
            StatusCode::NOT_FOUND,
            "NoSuchUpload",
            "The specified upload does not exist.",
        ),
        Some(_) => s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Access Denied"),
        None => {
            let url = format!(
                "{upstream}{}",
                uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
            );
            let mut req = client.request(method.clone(), &url).body(body.clone());
            for (k, v) in &headers {
                if k != "content-length" && k != "connection" && k != "transfer-encoding" {
                    req = req.header(k, v);
                }
            }
            match req.send().await {
                Ok(r) => {
                    let status = r.status();
                    let mut out = Response::builder().status(status);
                    for (k, v) in r.headers() {
                        if k != "content-length" && k != "transfer-encoding" && k != "connection" {
                            out = out.header(k, v);
                        }
                    }
                    let b = r.bytes().await.unwrap_or_default();
                    out.body(axum::body::Body::from(b)).unwrap()
                }
                Err(e) => s3_error(StatusCode::BAD_GATEWAY, "ProxyError", &e.to_string()),
            }
        }
    };
    let resp = if lose {
        s3_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "(the proxy dropped the answer)",
        )
    } else {
        resp
    };
    faults.lock().unwrap().seen.push(Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        query,
        status: resp.status().as_u16(),
        key_id,
        session_token: headers
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        bytes: body.len(),
    });
    resp
}
