//! Entra ID (Azure AD) access tokens for the Logs Ingestion API: the OAuth 2.0 client
//! credentials grant at `{authority}/{tenant}/oauth2/v2.0/token` for the scope
//! `https://monitor.azure.com/.default`, with a client secret or a federated token (a client
//! assertion). A token is cached and renewed before it expires, and dropped when the API
//! answers 401 (the sink then asks for a new one once).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::config::Credential;
use crate::settings::Secret;
use crate::sinks::http::client::{chain, read_body, Failure, MAX_ERROR_BODY};

/// The scope of the Logs Ingestion API.
pub const SCOPE: &str = "https://monitor.azure.com/.default";
/// `client_assertion_type` of a federated token.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// A renewal comes this long before the expiry at most (a fifth of the lifetime at least).
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// Where tokens come from, and the one cached.
pub struct Tokens {
    url: url::Url,
    client_id: String,
    credential: Credential,
    /// The client certificate's key, with `Credential::Certificate`.
    signer: Option<super::cert::Signer>,
    /// The token and when it should be renewed.
    cached: Mutex<Option<(Secret, Instant)>>,
}

/// The token endpoint's answer (success).
#[derive(Deserialize)]
struct Granted {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

/// The token endpoint's error answer: `error`, `error_description`, `error_codes`.
#[derive(Deserialize)]
struct Refused {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl Tokens {
    /// Reads the client certificate, if that is the credential.
    pub fn new(url: url::Url, client_id: String, credential: Credential) -> Result<Tokens, String> {
        let signer = match &credential {
            Credential::Certificate(p) => Some(super::cert::Signer::load(p)?),
            _ => None,
        };
        Ok(Tokens {
            url,
            client_id,
            credential,
            signer,
            cached: Mutex::new(None),
        })
    }

    /// Drops the cached token (the API said 401).
    pub fn forget(&self) {
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The cached token, or a new one. A refusal by Entra ID is a [`Failure::Refused`] whose
    /// body is "token refused: {error_description}"; its 5xx and 429 are retried, after its
    /// `Retry-After` when it sends one.
    pub async fn get(&self, client: &reqwest::Client) -> Result<Secret, Failure> {
        if let Some((t, renew)) = &*self.cached.lock().unwrap_or_else(|p| p.into_inner()) {
            if Instant::now() < *renew {
                return Ok(t.clone());
            }
        }
        let (token, lifetime) = self.request(client).await?;
        let margin = RENEW_BEFORE.min(lifetime / 5);
        let renew = Instant::now() + lifetime.saturating_sub(margin);
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some((token.clone(), renew));
        Ok(token)
    }

    async fn request(&self, client: &reqwest::Client) -> Result<(Secret, Duration), Failure> {
        let assertion;
        let mut form: Vec<(&str, &str)> = vec![
            ("client_id", &self.client_id),
            ("scope", SCOPE),
            ("grant_type", "client_credentials"),
        ];
        match &self.credential {
            Credential::Secret(s) => form.push(("client_secret", s.expose())),
            Credential::Federated(path) => {
                assertion =
                    tokio::fs::read_to_string(path)
                        .await
                        .map_err(|e| Failure::Refused {
                            status: 401,
                            body: format!(
                                "token refused: cannot read federated_token_file {}: {e}",
                                path.display()
                            ),
                        })?;
                form.push(("client_assertion_type", JWT_BEARER));
                form.push(("client_assertion", assertion.trim()));
            }
            Credential::Certificate(_) => {
                let signer = self.signer.as_ref().expect("loaded with the certificate");
                let now = jiff::Timestamp::now().as_second();
                assertion = signer
                    .assertion(self.url.as_str(), &self.client_id, now)
                    .map_err(|e| Failure::Refused {
                        status: 401,
                        body: format!("token refused: {e}"),
                    })?;
                form.push(("client_assertion_type", JWT_BEARER));
                form.push(("client_assertion", &assertion));
            }
        }
        let resp = client
            .post(self.url.clone())
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                Failure::Transport(format!("token request: {}", chain(&e.without_url())))
            })?;
        let status = resp.status().as_u16();
        // Entra ID throttles with 429 (and says it is busy with 503), each with `Retry-After`.
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::retry::parse_retry_after(v, std::time::SystemTime::now()));
        let (body, _) = read_body(resp, MAX_ERROR_BODY).await.map_err(|e| {
            Failure::Transport(format!("token request: {}", chain(&e.without_url())))
        })?;
        if status == 200 {
            let g: Granted = serde_json::from_slice(&body)
                .map_err(|e| Failure::Body(format!("token answer: {e}")))?;
            // A number, or (some endpoints) a string of digits.
            let secs = match g.expires_in {
                Some(serde_json::Value::Number(n)) => n.as_u64(),
                Some(serde_json::Value::String(s)) => s.parse().ok(),
                _ => None,
            }
            .unwrap_or(3600);
            return Ok((
                Secret::new(g.access_token),
                Duration::from_secs(secs.max(1)),
            ));
        }
        let said = match serde_json::from_slice::<Refused>(&body) {
            Ok(r) => r.error_description.unwrap_or(r.error),
            Err(_) => String::from_utf8_lossy(&body).into_owned(),
        };
        let said = crate::retry::snippet(&self.scrub(&said));
        match crate::retry::classify_status(status, retry_after) {
            crate::retry::Verdict::Retry { .. } => Err(Failure::Status {
                status,
                retry_after,
                body: format!("token endpoint: {said}"),
            }),
            crate::retry::Verdict::Stop => Err(Failure::Refused {
                status: 401,
                body: format!("token refused (HTTP {status}): {said}"),
            }),
        }
    }

    /// Removes the credential from text an endpoint echoed.
    pub fn scrub(&self, text: &str) -> String {
        match &self.credential {
            Credential::Secret(s) if s.expose().len() >= 4 => text.replace(s.expose(), "***"),
            _ => text.to_string(),
        }
    }
}
