//! Google's access tokens, from one of two sources ([`Source`]):
//! - a service account's JSON key: OAuth 2.0 for service accounts (RFC 7523), a JWT assertion
//!   signed RS256 with the key, exchanged at the key file's `token_uri`;
//! - workload identity: the metadata server of Compute Engine or GKE
//!   (`GET http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token`
//!   with `Metadata-Flavor: Google`; the host from `GCE_METADATA_HOST` when set, as Google's client
//!   libraries read it), which answers the attached service account's token.
//!
//! A token is kept until shortly before it expires, and dropped when the API answers 401. The
//! private key, the assertion and the token are secrets: none reaches a log line, an error or the
//! state.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};

use crate::settings::Secret;
use crate::sinks::http::client::{chain, read_body, MAX_ERROR_BODY};

/// The scope every Chronicle API method takes.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The grant type of a JWT bearer assertion.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Lifetime asked of an assertion: Google's maximum.
const ASSERTION_LIFETIME: u64 = 3600;
/// Most of a token's life kept in hand before renewal: five minutes, or a quarter of a shorter
/// lifetime.
const RENEW_MARGIN: Duration = Duration::from_secs(300);

/// The fields of a service account's JSON key file that signing in takes.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ServiceAccountKey {
    /// The service account: the assertion's `iss` and `sub`.
    pub client_email: String,
    /// The PEM PKCS#8 RSA private key (a secret).
    private_key: Secret,
    /// The key's id, the assertion's `kid`.
    pub private_key_id: String,
    /// Where the assertion is exchanged for a token, and its `aud`.
    pub token_uri: String,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

impl ServiceAccountKey {
    /// Reads and checks a key file: its fields, the URL of `token_uri`, and the private key.
    /// The message says what is wrong without quoting the file.
    pub fn read(path: &Path) -> Result<ServiceAccountKey, String> {
        let text =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        // The kind of credential first: Google's credential files share one shape of file.
        let kind = serde_json::from_slice::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string));
        match kind.as_deref() {
            None | Some("service_account") => {}
            Some("external_account") => {
                return Err(format!(
                    "{}: type \"external_account\" (workload identity federation) is not supported: \
                     on GKE or Compute Engine leave credentials_file unset and the token comes from \
                     the metadata server (Workload Identity); elsewhere use a service account's key \
                     (type \"service_account\")",
                    path.display()
                ))
            }
            Some(other) => {
                return Err(format!(
                    "{}: type {other:?} is not a service account's key (type \"service_account\"); \
                     leave credentials_file unset to use the metadata server's identity",
                    path.display()
                ))
            }
        }
        let key: ServiceAccountKey = serde_json::from_slice(&text).map_err(|e| {
            // serde_json's message names a missing field or a position, never a value.
            format!(
                "{}: not a service account's JSON key (client_email, private_key, private_key_id, token_uri): {e}",
                path.display()
            )
        })?;
        url::Url::parse(&key.token_uri)
            .ok()
            .filter(|u| matches!(u.scheme(), "https" | "http"))
            .ok_or_else(|| format!("{}: token_uri is not an http(s) URL", path.display()))?;
        key.signer()
            .map_err(|e| format!("{}: private_key: {e}", path.display()))?;
        Ok(key)
    }

    /// The RSA key pair of `private_key`.
    fn signer(&self) -> Result<RsaKeyPair, String> {
        let pem = self.private_key.expose();
        let body: String = pem
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN PRIVATE KEY-----"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END PRIVATE KEY-----"))
            .collect();
        if body.is_empty() {
            return Err("not a PEM PKCS#8 private key (-----BEGIN PRIVATE KEY-----)".into());
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|_| "the PEM's base64 does not decode".to_string())?;
        RsaKeyPair::from_pkcs8(&der).map_err(|e| format!("not an RSA key ring takes ({e})"))
    }

    /// A signed assertion for `now` (seconds since the epoch).
    fn assertion(&self, now: u64) -> Result<Secret, String> {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": self.private_key_id});
        let claims = serde_json::json!({
            "iss": self.client_email,
            "sub": self.client_email,
            "aud": self.token_uri,
            "scope": SCOPE,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        let mut jwt = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let pair = self.signer()?;
        let mut sig = vec![0; pair.public().modulus_len()];
        pair.sign(
            &RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            jwt.as_bytes(),
            &mut sig,
        )
        .map_err(|_| "signing the assertion failed".to_string())?;
        jwt.push('.');
        jwt.push_str(&b64(&sig));
        Ok(Secret::new(jwt))
    }
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The key cannot sign (read at start: only a key changed under us).
    #[error("credentials_file: {0}")]
    Key(String),
    /// The source did not answer, or answered 5xx or 429: worth another try, after its
    /// `Retry-After` if it sent one.
    #[error("{from}: {msg}")]
    Unreachable {
        from: String,
        msg: String,
        retry_after: Option<Duration>,
    },
    /// The source refused: a deleted or disabled key or account, or no service account
    /// attached to the instance or pod.
    #[error("{from} refused {what} with HTTP {status}: {error}")]
    Refused {
        from: String,
        what: &'static str,
        status: u16,
        error: String,
    },
}

/// Where the tokens come from.
#[derive(Debug)]
pub enum Source {
    /// A service account's JSON key: a signed assertion exchanged at its `token_uri`.
    Key(ServiceAccountKey),
    /// The metadata server's token endpoint (workload identity), with the client that reaches
    /// it (no proxy: the metadata server is link-local).
    Metadata {
        url: String,
        client: reqwest::Client,
    },
}

/// The metadata server's host when `GCE_METADATA_HOST` is not set.
pub const METADATA_HOST: &str = "metadata.google.internal";
/// The path of the default service account's access token on the metadata server.
pub const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

impl Source {
    /// The metadata server at `host` (`GCE_METADATA_HOST`'s value: `host[:port]`, as Google's
    /// client libraries take it; `None` or empty: `metadata.google.internal`).
    pub fn metadata(host: Option<&str>, timeout: Duration) -> Result<Source, String> {
        let host = host.map(str::trim).filter(|h| !h.is_empty());
        let host = host.unwrap_or(METADATA_HOST);
        let base = if host.starts_with("http://") || host.starts_with("https://") {
            host.trim_end_matches('/').to_string()
        } else {
            format!("http://{host}")
        };
        let url = format!("{base}{METADATA_TOKEN_PATH}");
        url::Url::parse(&url).map_err(|e| format!("GCE_METADATA_HOST {host:?}: {e}"))?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(crate::user_agent())
            .build()
            .map_err(|e| format!("cannot build the metadata server's client: {}", chain(&e)))?;
        Ok(Source::Metadata { url, client })
    }

    /// What the errors name: `token endpoint URL` or `metadata server URL`.
    fn from(&self) -> String {
        match self {
            Source::Key(k) => format!("token endpoint {}", k.token_uri),
            Source::Metadata { url, .. } => format!("metadata server {url}"),
        }
    }
}

/// An access token and when to renew it.
struct Held {
    token: Secret,
    renew_at: Instant,
}

/// The access token, fetched when first needed and renewed before it expires, or when the API
/// says it no longer holds ([`Tokens::forget`]).
pub struct Tokens {
    source: Source,
    held: tokio::sync::Mutex<Option<Held>>,
}

impl Tokens {
    pub fn new(source: Source) -> Tokens {
        Tokens {
            source,
            held: tokio::sync::Mutex::new(None),
        }
    }

    /// Where the tokens come from, for `check --connect` and the start's log line.
    pub fn describe(&self) -> String {
        match &self.source {
            Source::Key(k) => format!("{} (service account {})", k.token_uri, k.client_email),
            Source::Metadata { url, .. } => format!("the metadata server ({url})"),
        }
    }

    /// The token in hand, or a new one.
    pub async fn get(&self, client: &reqwest::Client) -> Result<Secret, TokenError> {
        let mut held = self.held.lock().await;
        if let Some(h) = held.as_ref().filter(|h| Instant::now() < h.renew_at) {
            return Ok(h.token.clone());
        }
        let (token, lifetime) = match &self.source {
            Source::Key(key) => self.fetch(key, client).await?,
            Source::Metadata { url, client } => self.fetch_metadata(url, client).await?,
        };
        let margin = RENEW_MARGIN.min(lifetime / 4);
        *held = Some(Held {
            token: token.clone(),
            renew_at: Instant::now() + lifetime.saturating_sub(margin),
        });
        Ok(token)
    }

    /// Drops the token in hand (the API answered 401 with it).
    pub async fn forget(&self) {
        *self.held.lock().await = None;
    }

    fn unreachable(&self, msg: String, retry_after: Option<Duration>) -> TokenError {
        TokenError::Unreachable {
            from: self.source.from(),
            msg,
            retry_after,
        }
    }

    /// A token answer: its status, `Retry-After` and body (at most [`MAX_ERROR_BODY`]).
    async fn answer(
        &self,
        resp: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<(u16, Option<Duration>, serde_json::Value, String), TokenError> {
        let resp = resp.map_err(|e| self.unreachable(chain(&e.without_url()), None))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::retry::parse_retry_after(v, SystemTime::now()));
        let (text, _) = read_body(resp, MAX_ERROR_BODY)
            .await
            .map_err(|e| self.unreachable(chain(&e.without_url()), None))?;
        let answer: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
        Ok((
            status,
            retry_after,
            answer,
            String::from_utf8_lossy(&text).into_owned(),
        ))
    }

    /// A granted token's `access_token` and `expires_in`.
    fn granted(&self, answer: &serde_json::Value) -> Result<(Secret, Duration), TokenError> {
        let token = answer["access_token"].as_str().filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(self.unreachable("HTTP 200 without an access_token".into(), None));
        };
        let secs = answer["expires_in"].as_u64().unwrap_or(3600).max(1);
        Ok((Secret::new(token), Duration::from_secs(secs)))
    }

    /// Exchanges a new assertion for a token and its lifetime.
    async fn fetch(
        &self,
        key: &ServiceAccountKey,
        client: &reqwest::Client,
    ) -> Result<(Secret, Duration), TokenError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let assertion = key.assertion(now).map_err(TokenError::Key)?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", GRANT_TYPE)
            .append_pair("assertion", assertion.expose())
            .finish();
        let resp = client
            .post(&key.token_uri)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await;
        let (status, retry_after, answer, text) = self.answer(resp).await?;
        if status == 200 {
            return self.granted(&answer);
        }
        // OAuth's error answer (RFC 6749 5.2): `error` and `error_description`, no secrets.
        let error = match (
            answer["error"].as_str(),
            answer["error_description"].as_str(),
        ) {
            (Some(e), Some(d)) => format!("{e}: {d}"),
            (Some(e), None) => e.to_string(),
            _ => crate::retry::snippet(&text),
        };
        if status == 429 || status >= 500 {
            return Err(self.unreachable(format!("HTTP {status}: {error}"), retry_after));
        }
        Err(TokenError::Refused {
            from: self.source.from(),
            what: "the service account's key",
            status,
            error,
        })
    }

    /// Asks the metadata server for the attached service account's token.
    async fn fetch_metadata(
        &self,
        url: &str,
        client: &reqwest::Client,
    ) -> Result<(Secret, Duration), TokenError> {
        let resp = client
            .get(url)
            .header("Metadata-Flavor", "Google")
            .send()
            .await;
        let (status, retry_after, answer, text) = self.answer(resp).await?;
        if status == 200 {
            return self.granted(&answer);
        }
        let said = crate::retry::snippet(&text);
        if status == 429 || status >= 500 {
            return Err(self.unreachable(format!("HTTP {status}: {said}"), retry_after));
        }
        let error = match status {
            404 => format!(
                "{said}: no service account is attached (Compute Engine: the instance's service \
                 account; GKE: the pod's Kubernetes service account, bound to an IAM service \
                 account through Workload Identity)"
            ),
            _ => said,
        };
        Err(TokenError::Refused {
            from: self.source.from(),
            what: "a token of the workload's service account",
            status,
            error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_key_file_says_what_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.json");
        std::fs::write(&p, r#"{"client_email":"a@b","private_key":"s3cret-not-pem","private_key_id":"1","token_uri":"https://oauth2.googleapis.com/token"}"#).unwrap();
        let e = ServiceAccountKey::read(&p).unwrap_err();
        assert!(e.contains("private_key: not a PEM PKCS#8"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        std::fs::write(&p, r#"{"client_email":"a@b"}"#).unwrap();
        let e = ServiceAccountKey::read(&p).unwrap_err();
        assert!(e.contains("missing field"), "{e}");
    }

    /// A workload identity federation file is named by its type, not taken for a broken key.
    #[test]
    fn an_external_account_file_is_refused_by_its_type() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wif.json");
        std::fs::write(&p, r#"{"type":"external_account","audience":"//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x","subject_token_type":"urn:ietf:params:oauth:token-type:jwt","token_url":"https://sts.googleapis.com/v1/token","credential_source":{"file":"/var/run/token"}}"#).unwrap();
        let e = ServiceAccountKey::read(&p).unwrap_err();
        assert!(
            e.contains("type \"external_account\" (workload identity federation) is not supported"),
            "{e}"
        );
        std::fs::write(&p, r#"{"type":"authorized_user","client_secret":"s3cret"}"#).unwrap();
        let e = ServiceAccountKey::read(&p).unwrap_err();
        assert!(
            e.contains("type \"authorized_user\" is not a service account's key"),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
    }

    /// `GCE_METADATA_HOST` is a host and port, as Google's libraries read it.
    #[test]
    fn the_metadata_server_is_found_as_google_s_libraries_find_it() {
        let t = Duration::from_secs(1);
        let url = |h: Option<&str>| match Source::metadata(h, t).unwrap() {
            Source::Metadata { url, .. } => url,
            Source::Key(_) => unreachable!(),
        };
        assert_eq!(
            url(None),
            "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token"
        );
        assert_eq!(url(Some(" ")), url(None));
        assert_eq!(
            url(Some("127.0.0.1:8080")),
            "http://127.0.0.1:8080/computeMetadata/v1/instance/service-accounts/default/token"
        );
        assert!(Source::metadata(Some("a b:x"), t).is_err());
    }
}
