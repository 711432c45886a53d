//! Where the sink's AWS credentials come from: the sink's own keys, or the standard chain as the
//! AWS SDKs walk it (environment variables; a web-identity token file, as EKS IRSA mounts it,
//! exchanged at STS by AssumeRoleWithWebIdentity; the container credentials endpoint of ECS
//! and EKS Pod Identity; the EC2 instance metadata service, IMDSv2); then, with `role_arn`, an
//! STS AssumeRole on top (with `external_id`), as Security Lake's custom sources require.
//! Temporary credentials are cached and renewed five minutes before they expire.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;

use super::client::{send_signed, status_failure, xml_tag, Failure};
use super::sigv4::Credentials;
use crate::settings::Secret;
use crate::sinks::http::client::chain;

/// Where the base credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// The sink's keys, or `AWS_ACCESS_KEY_ID`… from the environment.
    Static {
        access_key_id: String,
        secret_access_key: Secret,
        session_token: Option<Secret>,
        /// `config` or `environment`, for messages.
        from: &'static str,
    },
    /// `AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN`: the token file read at each renewal
    /// (the kubelet rotates it) and exchanged at STS.
    WebIdentity {
        token_file: PathBuf,
        role_arn: String,
        session_name: String,
    },
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI` (or `_RELATIVE_URI` on ECS), with
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN` or `_TOKEN_FILE`.
    Container {
        url: url::Url,
        token: Option<Secret>,
        token_file: Option<PathBuf>,
    },
    /// The instance metadata service (IMDSv2: a session token, then the role's credentials).
    Imds { endpoint: url::Url },
}

impl Base {
    /// What it is, for people.
    pub fn describe(&self) -> String {
        match self {
            Base::Static { from, .. } => format!("access key from the {from}"),
            Base::WebIdentity { role_arn, .. } => {
                format!("web identity token (AWS_WEB_IDENTITY_TOKEN_FILE) for {role_arn}")
            }
            Base::Container { .. } => "the container credentials endpoint".into(),
            Base::Imds { .. } => "the EC2 instance metadata service (IMDSv2)".into(),
        }
    }

    /// The standard chain's choice from the environment `env` (the sink has no keys of its own).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Base, String> {
        let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        if let (Some(id), Some(secret)) = (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            return Ok(Base::Static {
                access_key_id: id,
                secret_access_key: Secret::new(secret),
                session_token: get("AWS_SESSION_TOKEN").map(Secret::new),
                from: "environment",
            });
        }
        if let Some(file) = get("AWS_WEB_IDENTITY_TOKEN_FILE") {
            let Some(role_arn) = get("AWS_ROLE_ARN") else {
                return Err("AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not".into());
            };
            return Ok(Base::WebIdentity {
                token_file: PathBuf::from(file),
                role_arn,
                session_name: get("AWS_ROLE_SESSION_NAME").unwrap_or_else(session_name),
            });
        }
        let container = get("AWS_CONTAINER_CREDENTIALS_FULL_URI").or_else(|| {
            get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
                .map(|p| format!("http://169.254.170.2{p}"))
        });
        if let Some(u) = container {
            let url = url::Url::parse(&u)
                .map_err(|e| format!("the container credentials URI {u:?}: {e}"))?;
            return Ok(Base::Container {
                url,
                token: get("AWS_CONTAINER_AUTHORIZATION_TOKEN").map(Secret::new),
                token_file: get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE").map(PathBuf::from),
            });
        }
        if get("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Err("no credentials: no access_key_id, none in the environment (AWS_ACCESS_KEY_ID, AWS_WEB_IDENTITY_TOKEN_FILE, AWS_CONTAINER_CREDENTIALS_*), and AWS_EC2_METADATA_DISABLED=true".into());
        }
        let endpoint = get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or_else(|| "http://169.254.169.254".into());
        let endpoint = url::Url::parse(&endpoint)
            .map_err(|e| format!("AWS_EC2_METADATA_SERVICE_ENDPOINT {endpoint:?}: {e}"))?;
        Ok(Base::Imds { endpoint })
    }
}

/// The session name of a role assumed by the agent: `auditship-{host}`, cut to STS's 64.
fn session_name() -> String {
    let host: String = crate::sinks::http::client::hostname()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "=,.@-".contains(*c))
        .collect();
    let mut s = format!("auditship-{host}");
    s.truncate(64);
    s
}

/// `role_arn` (and `external_id`): a role assumed with the base credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRole {
    pub role_arn: String,
    pub external_id: Option<String>,
}

/// The sink's credentials: where they come from, and the current ones.
pub struct Chain {
    base: Base,
    assume: Option<AssumeRole>,
    /// STS's endpoint (`https://sts.{region}.amazonaws.com`, or the configured one).
    sts: url::Url,
    region: String,
    client: reqwest::Client,
    cached: Mutex<Option<Credentials>>,
}

/// Renewed this long before they expire.
const EARLY: i64 = 300;

impl Chain {
    pub fn new(
        base: Base,
        assume: Option<AssumeRole>,
        sts: url::Url,
        region: String,
        client: reqwest::Client,
    ) -> Chain {
        Chain {
            base,
            assume,
            sts,
            region,
            client,
            cached: Mutex::new(None),
        }
    }

    /// What the credentials are, for the log and `check --connect`.
    pub fn describe(&self) -> String {
        match &self.assume {
            None => self.base.describe(),
            Some(a) => format!("role {} assumed with {}", a.role_arn, self.base.describe()),
        }
    }

    /// Forgets the cached credentials (S3 said they expired).
    pub fn forget(&self) {
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Credentials good for at least five more minutes.
    pub async fn get(&self) -> Result<Credentials, Failure> {
        let now = jiff::Timestamp::now().as_second();
        if let Some(c) = self
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            if c.expires.is_none_or(|e| e - EARLY > now) {
                return Ok(c.clone());
            }
        }
        let base = self.base().await?;
        let creds = match &self.assume {
            None => base,
            Some(a) => self.assume_role(&base, a).await?,
        };
        if let Some(e) = creds.expires {
            tracing::debug!(access_key_id = %creds.access_key_id, expires = e, "new AWS credentials");
        }
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some(creds.clone());
        Ok(creds)
    }

    async fn base(&self) -> Result<Credentials, Failure> {
        match &self.base {
            Base::Static {
                access_key_id,
                secret_access_key,
                session_token,
                ..
            } => Ok(Credentials {
                access_key_id: access_key_id.clone(),
                secret_access_key: secret_access_key.clone(),
                session_token: session_token.clone(),
                expires: None,
            }),
            Base::WebIdentity {
                token_file,
                role_arn,
                session_name,
            } => {
                let token = std::fs::read_to_string(token_file).map_err(|e| {
                    Failure::Credentials(format!(
                        "web identity token file {}: {e}",
                        token_file.display()
                    ))
                })?;
                let form = [
                    ("Action", "AssumeRoleWithWebIdentity"),
                    ("Version", "2011-06-15"),
                    ("RoleArn", role_arn.as_str()),
                    ("RoleSessionName", session_name.as_str()),
                    ("WebIdentityToken", token.trim()),
                ];
                let resp = self
                    .client
                    .post(self.sts.clone())
                    .form(&form)
                    .send()
                    .await
                    .map_err(|e| {
                        Failure::Credentials(format!("STS: {}", chain(&e.without_url())))
                    })?;
                self.sts_answer(resp, "AssumeRoleWithWebIdentity", role_arn)
                    .await
            }
            Base::Container {
                url,
                token,
                token_file,
            } => {
                let mut req = self.client.get(url.clone());
                let token = match (token, token_file) {
                    (_, Some(f)) => Some(std::fs::read_to_string(f).map_err(|e| {
                        Failure::Credentials(format!(
                            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {}: {e}",
                            f.display()
                        ))
                    })?),
                    (Some(t), None) => Some(t.expose().to_string()),
                    (None, None) => None,
                };
                if let Some(t) = token {
                    let mut v = reqwest::header::HeaderValue::from_str(t.trim()).map_err(|_| {
                        Failure::CredentialsRefused(
                            "the container authorization token is not a valid header value".into(),
                        )
                    })?;
                    v.set_sensitive(true);
                    req = req.header(reqwest::header::AUTHORIZATION, v);
                }
                let resp = req.send().await.map_err(|e| {
                    Failure::Credentials(format!(
                        "container credentials endpoint: {}",
                        chain(&e.without_url())
                    ))
                })?;
                json_credentials(resp, "the container credentials endpoint").await
            }
            Base::Imds { endpoint } => self.imds(endpoint).await,
        }
    }

    /// IMDSv2: a session token (PUT), the instance profile's role name, its credentials.
    async fn imds(&self, endpoint: &url::Url) -> Result<Credentials, Failure> {
        let unreachable = |e: reqwest::Error| {
            Failure::Credentials(format!(
                "no credentials in the sink's keys or the environment, and the instance metadata service is unreachable ({})",
                chain(&e.without_url())
            ))
        };
        let at = |path: &str| {
            let mut u = endpoint.clone();
            u.set_path(path);
            u
        };
        let client = &self.client;
        let resp = client
            .put(at("/latest/api/token"))
            .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map_err(unreachable)?;
        if !resp.status().is_success() {
            return Err(Failure::Credentials(format!(
                "instance metadata service: HTTP {} for a session token",
                resp.status().as_u16()
            )));
        }
        let mut token =
            reqwest::header::HeaderValue::from_str(resp.text().await.map_err(unreachable)?.trim())
                .map_err(|_| Failure::Body("an IMDS token that is not a header value".into()))?;
        token.set_sensitive(true);
        let base = "/latest/meta-data/iam/security-credentials/";
        let resp = client
            .get(at(base))
            .header("x-aws-ec2-metadata-token", token.clone())
            .send()
            .await
            .map_err(unreachable)?;
        if resp.status().as_u16() == 404 {
            return Err(Failure::CredentialsRefused(
                "the instance has no IAM role (instance profile)".into(),
            ));
        }
        let role = resp.text().await.map_err(unreachable)?;
        let role = role.lines().next().unwrap_or("").trim().to_string();
        if role.is_empty() {
            return Err(Failure::CredentialsRefused(
                "the instance has no IAM role (instance profile)".into(),
            ));
        }
        let resp = client
            .get(at(&format!("{base}{role}")))
            .header("x-aws-ec2-metadata-token", token)
            .send()
            .await
            .map_err(unreachable)?;
        json_credentials(resp, "the instance metadata service").await
    }

    /// STS AssumeRole with `base`, signed.
    async fn assume_role(
        &self,
        base: &Credentials,
        a: &AssumeRole,
    ) -> Result<Credentials, Failure> {
        let name = session_name();
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("Action", "AssumeRole")
                .append_pair("Version", "2011-06-15")
                .append_pair("RoleArn", &a.role_arn)
                .append_pair("RoleSessionName", &name)
                .append_pair("DurationSeconds", "3600");
            if let Some(x) = &a.external_id {
                form.append_pair("ExternalId", x);
            }
            form.finish()
        };
        let resp = send_signed(
            &self.client,
            base,
            &self.region,
            "sts",
            reqwest::Method::POST,
            self.sts.clone(),
            Bytes::from(body),
            &[(
                "content-type",
                "application/x-www-form-urlencoded".to_string(),
            )],
        )
        .await
        .map_err(|e| match e {
            Failure::Transport(t) => Failure::Credentials(format!("STS: {t}")),
            other => other,
        })?;
        self.sts_answer(resp, "AssumeRole", &a.role_arn).await
    }

    /// The credentials of an STS answer (`<Credentials>` of an AssumeRole… result).
    async fn sts_answer(
        &self,
        resp: reqwest::Response,
        action: &str,
        role: &str,
    ) -> Result<Credentials, Failure> {
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let f = status_failure(resp).await;
            let msg = format!("STS {action} of {role}: {f}");
            return Err(if (500..600).contains(&status) || status == 429 {
                Failure::Credentials(msg)
            } else {
                Failure::CredentialsRefused(msg)
            });
        }
        let body = resp
            .text()
            .await
            .map_err(|e| Failure::Credentials(format!("STS: {}", chain(&e.without_url()))))?;
        let get = |t: &str| xml_tag(&body, t).filter(|v| !v.is_empty());
        match (get("AccessKeyId"), get("SecretAccessKey")) {
            (Some(id), Some(secret)) => Ok(Credentials {
                access_key_id: id,
                secret_access_key: Secret::new(secret),
                session_token: get("SessionToken").map(Secret::new),
                expires: get("Expiration").and_then(|e| parse_time(&e)),
            }),
            _ => Err(Failure::Body(format!(
                "STS {action} answered without credentials"
            ))),
        }
    }
}

/// An RFC 3339 time as Unix seconds.
fn parse_time(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

/// The credentials of a JSON answer of the container endpoint or IMDS (`AccessKeyId`,
/// `SecretAccessKey`, `Token`, `Expiration`).
async fn json_credentials(resp: reqwest::Response, what: &str) -> Result<Credentials, Failure> {
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        let msg = format!("{what}: HTTP {status}");
        return Err(if status >= 500 {
            Failure::Credentials(msg)
        } else {
            Failure::CredentialsRefused(msg)
        });
    }
    let v: serde_json::Value = resp
        .json()
        .await
        .map_err(|_| Failure::Body(format!("{what}: an answer that is not JSON")))?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    match (s("AccessKeyId"), s("SecretAccessKey")) {
        (Some(id), Some(secret)) => Ok(Credentials {
            access_key_id: id,
            secret_access_key: Secret::new(secret),
            session_token: s("Token").map(Secret::new),
            expires: s("Expiration").and_then(|e| parse_time(&e)),
        }),
        _ => Err(Failure::Body(format!(
            "{what}: no AccessKeyId/SecretAccessKey in its answer"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_chain_is_chosen_in_the_sdks_order() {
        let b = Base::from_env(env(&[
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
        ]))
        .unwrap();
        assert!(
            matches!(
                b,
                Base::Static {
                    from: "environment",
                    ..
                }
            ),
            "{b:?}"
        );
        let b = Base::from_env(env(&[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
            ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/x"),
        ]))
        .unwrap();
        assert!(matches!(b, Base::WebIdentity { .. }), "{b:?}");
        let b =
            Base::from_env(env(&[("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/x")])).unwrap();
        match b {
            Base::Container { url, .. } => assert_eq!(url.as_str(), "http://169.254.170.2/v2/x"),
            other => panic!("{other:?}"),
        }
        let b = Base::from_env(env(&[])).unwrap();
        assert!(matches!(b, Base::Imds { .. }), "{b:?}");
        let e = Base::from_env(env(&[("AWS_EC2_METADATA_DISABLED", "true")])).unwrap_err();
        assert!(e.starts_with("no credentials"), "{e}");
        let e = Base::from_env(env(&[("AWS_WEB_IDENTITY_TOKEN_FILE", "/t")])).unwrap_err();
        assert!(e.contains("AWS_ROLE_ARN"), "{e}");
    }
}
