//! Google's OAuth 2.0 for service accounts (RFC 7523): a JWT assertion signed RS256 with the
//! service account's key, exchanged at the key file's `token_uri` for an access token, which is
//! kept until shortly before it expires. The private key, the assertion and the token are
//! secrets: none reaches a log line, an error or the state.

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
    /// The token endpoint did not answer, or answered 5xx or 429: worth another try.
    #[error("token endpoint {uri}: {msg}")]
    Unreachable { uri: String, msg: String },
    /// The token endpoint refused the assertion (a deleted or disabled key or account).
    #[error("token endpoint {uri} refused the service account's key with HTTP {status}: {error}")]
    Refused {
        uri: String,
        status: u16,
        error: String,
    },
}

/// An access token and when to renew it.
struct Held {
    token: Secret,
    renew_at: Instant,
}

/// The access token of a service account, fetched when first needed and renewed before it
/// expires, or when the API says it no longer holds ([`Tokens::forget`]).
pub struct Tokens {
    key: ServiceAccountKey,
    held: tokio::sync::Mutex<Option<Held>>,
}

impl Tokens {
    pub fn new(key: ServiceAccountKey) -> Tokens {
        Tokens {
            key,
            held: tokio::sync::Mutex::new(None),
        }
    }

    /// The token endpoint.
    pub fn uri(&self) -> &str {
        &self.key.token_uri
    }

    /// The token in hand, or a new one.
    pub async fn get(&self, client: &reqwest::Client) -> Result<Secret, TokenError> {
        let mut held = self.held.lock().await;
        if let Some(h) = held.as_ref().filter(|h| Instant::now() < h.renew_at) {
            return Ok(h.token.clone());
        }
        let (token, lifetime) = self.fetch(client).await?;
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

    /// Exchanges a new assertion for a token and its lifetime.
    async fn fetch(&self, client: &reqwest::Client) -> Result<(Secret, Duration), TokenError> {
        let uri = self.key.token_uri.clone();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let assertion = self.key.assertion(now).map_err(TokenError::Key)?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", GRANT_TYPE)
            .append_pair("assertion", assertion.expose())
            .finish();
        let unreachable = |msg: String| TokenError::Unreachable {
            uri: uri.clone(),
            msg,
        };
        let resp = client
            .post(&uri)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| unreachable(chain(&e.without_url())))?;
        let status = resp.status().as_u16();
        let (text, _) = read_body(resp, MAX_ERROR_BODY)
            .await
            .map_err(|e| unreachable(chain(&e.without_url())))?;
        let answer: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
        if status == 200 {
            let token = answer["access_token"].as_str().filter(|t| !t.is_empty());
            let Some(token) = token else {
                return Err(unreachable("HTTP 200 without an access_token".into()));
            };
            let secs = answer["expires_in"].as_u64().unwrap_or(3600).max(1);
            return Ok((Secret::new(token), Duration::from_secs(secs)));
        }
        // OAuth's error answer (RFC 6749 5.2): `error` and `error_description`, no secrets.
        let error = match (
            answer["error"].as_str(),
            answer["error_description"].as_str(),
        ) {
            (Some(e), Some(d)) => format!("{e}: {d}"),
            (Some(e), None) => e.to_string(),
            _ => crate::retry::snippet(&String::from_utf8_lossy(&text)),
        };
        if status == 429 || status >= 500 {
            return Err(unreachable(format!("HTTP {status}: {error}")));
        }
        Err(TokenError::Refused { uri, status, error })
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
}
