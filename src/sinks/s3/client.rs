//! The few S3 API calls the sink makes (PutObject, the multipart upload's four, HeadObject and
//! DeleteObject), signed with SigV4 ([`super::sigv4`]), path-style or virtual-hosted, and how
//! each failed: S3's error `Code` and `Message`, never a credential.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderValue;

use super::creds::Chain;
use super::sigv4::{self, Credentials};
use crate::retry::{self, Retryable, Verdict};
use crate::sinks::http::client::{chain, read_body, MAX_ERROR_BODY};

/// Why one attempt at a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Connecting, sending or reading failed (including the timeout).
    #[error("request failed: {0}")]
    Transport(String),
    /// S3 answered with an error: its HTTP status and its error `Code` and `Message`.
    #[error("HTTP {status} {code}: {message}")]
    Status {
        status: u16,
        code: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// A 2xx answer that is not what S3 sends.
    #[error("unreadable answer: {0}")]
    Body(String),
    /// Credentials could not be had for now (the metadata service or STS unreachable).
    #[error("credentials: {0}")]
    Credentials(String),
    /// Credentials were refused for good (STS said no to the role, say).
    #[error("credentials refused: {0}")]
    CredentialsRefused(String),
}

/// S3 error codes worth another attempt whatever their status.
const RETRIED_CODES: &[&str] = &[
    "RequestTimeout",
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "ExpiredToken",
    "RequestTimeTooSkewed",
];

impl Retryable for Failure {
    fn verdict(&self) -> Verdict {
        match self {
            Failure::Transport(_) | Failure::Body(_) | Failure::Credentials(_) => {
                Verdict::Retry { after: None }
            }
            Failure::Status {
                status,
                code,
                retry_after,
                ..
            } => {
                if RETRIED_CODES.contains(&code.as_str()) {
                    Verdict::Retry {
                        after: *retry_after,
                    }
                } else {
                    retry::classify_status(*status, *retry_after)
                }
            }
            Failure::CredentialsRefused(_) => Verdict::Stop,
        }
    }
}

impl Failure {
    /// S3's error code, if S3 answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            Failure::Status { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The text of the first `<tag>…</tag>` of an XML answer, entities decoded.
pub fn xml_tag(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = body.find(&open)? + open.len();
    let end = start + body[start..].find(&close)?;
    Some(
        body[start..end]
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// The failure of an answer that is not a 2xx: S3's `<Error>` code and message.
pub async fn status_failure(resp: reqwest::Response) -> Failure {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry::parse_retry_after(v, std::time::SystemTime::now()));
    let body = read_body(resp, MAX_ERROR_BODY)
        .await
        .map(|(b, _)| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    error_of(status, &body, retry_after)
}

/// S3's error in `body` (an `<Error>` document), or what the status says when there is none
/// (HEAD answers carry no body).
pub fn error_of(status: u16, body: &str, retry_after: Option<Duration>) -> Failure {
    let code = xml_tag(body, "Code").unwrap_or_else(|| {
        match status {
            400 => "BadRequest",
            403 => "Forbidden",
            404 => "NotFound",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            _ => "",
        }
        .to_string()
    });
    let message = xml_tag(body, "Message")
        .map(|m| retry::snippet(&m))
        .unwrap_or_else(|| {
            if body.trim().is_empty() || xml_tag(body, "Code").is_some() {
                "(no message)".into()
            } else {
                retry::snippet(body)
            }
        });
    Failure::Status {
        status,
        code,
        message,
        retry_after,
    }
}

/// Where the bucket is and how to reach it.
pub struct S3 {
    pub bucket: String,
    /// The service's endpoint (`https://s3.{region}.amazonaws.com`, or the configured one).
    endpoint: url::Url,
    /// `{endpoint}/{bucket}/{key}` rather than `{bucket}.{endpoint host}/{key}`.
    path_style: bool,
    pub region: String,
    client: reqwest::Client,
    pub creds: Chain,
}

impl S3 {
    pub fn new(
        bucket: String,
        endpoint: url::Url,
        path_style: bool,
        region: String,
        client: reqwest::Client,
        creds: Chain,
    ) -> S3 {
        S3 {
            bucket,
            endpoint,
            path_style,
            region,
            client,
            creds,
        }
    }

    /// The URL of object `key` (or of the bucket when `key` is empty), with `query`.
    pub fn url(&self, key: &str, query: &[(&str, &str)]) -> url::Url {
        let mut url = self.endpoint.clone();
        let base = url.path().trim_end_matches('/').to_string();
        let key = sigv4::uri_encode(key, true);
        if self.path_style {
            url.set_path(&format!("{base}/{}/{key}", self.bucket));
        } else {
            let host = format!("{}.{}", self.bucket, url.host_str().unwrap_or(""));
            // A bucket name is a valid host label (validated): this cannot fail.
            let _ = url.set_host(Some(&host));
            url.set_path(&format!("{base}/{key}"));
        }
        if query.is_empty() {
            url.set_query(None);
        } else {
            let q: Vec<String> = query
                .iter()
                .map(|(k, v)| {
                    if v.is_empty() {
                        sigv4::uri_encode(k, false)
                    } else {
                        format!(
                            "{}={}",
                            sigv4::uri_encode(k, false),
                            sigv4::uri_encode(v, false)
                        )
                    }
                })
                .collect();
            url.set_query(Some(&q.join("&")));
        }
        url
    }

    /// One signed call; a 2xx answer is returned, anything else is the failure. Expired
    /// credentials are renewed once.
    pub async fn call(
        &self,
        method: reqwest::Method,
        url: url::Url,
        body: Bytes,
        headers: &[(&'static str, String)],
    ) -> Result<reqwest::Response, Failure> {
        let mut renewed = false;
        loop {
            let creds = self.creds.get().await?;
            let resp = send_signed(
                &self.client,
                &creds,
                &self.region,
                "s3",
                method.clone(),
                url.clone(),
                body.clone(),
                headers,
            )
            .await?;
            if resp.status().is_success() {
                return Ok(resp);
            }
            let failure = status_failure(resp).await;
            if matches!(failure.code(), Some("ExpiredToken" | "InvalidToken")) && !renewed {
                tracing::info!(bucket = %self.bucket, "S3 said the session token expired: renewing the credentials");
                self.creds.forget();
                renewed = true;
                continue;
            }
            return Err(failure);
        }
    }

    /// PutObject.
    pub async fn put_object(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
    ) -> Result<(), Failure> {
        let url = self.url(key, &[]);
        self.call(
            reqwest::Method::PUT,
            url,
            body,
            &[("content-type", content_type.to_string())],
        )
        .await
        .map(drop)
    }

    /// PutObject only where no object is (`If-None-Match: *`): false, and nothing written,
    /// when one is already there (S3's 412 PreconditionFailed).
    pub async fn put_new_object(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
    ) -> Result<bool, Failure> {
        let url = self.url(key, &[]);
        let headers = [
            ("content-type", content_type.to_string()),
            ("if-none-match", "*".to_string()),
        ];
        match self.call(reqwest::Method::PUT, url, body, &headers).await {
            Ok(_) => Ok(true),
            Err(Failure::Status { status: 412, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// CreateMultipartUpload: the upload's id.
    pub async fn create_multipart(&self, key: &str, content_type: &str) -> Result<String, Failure> {
        let url = self.url(key, &[("uploads", "")]);
        let resp = self
            .call(
                reqwest::Method::POST,
                url,
                Bytes::new(),
                &[("content-type", content_type.to_string())],
            )
            .await?;
        let body = text(resp).await?;
        xml_tag(&body, "UploadId")
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Failure::Body(format!("no UploadId in {}", retry::snippet(&body))))
    }

    /// UploadPart: the part's ETag.
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: Bytes,
    ) -> Result<String, Failure> {
        let n = number.to_string();
        let url = self.url(key, &[("partNumber", &n), ("uploadId", upload_id)]);
        let resp = self.call(reqwest::Method::PUT, url, body, &[]).await?;
        resp.headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| Failure::Body("UploadPart answered without an ETag".into()))
    }

    /// CompleteMultipartUpload. S3 may answer 200 and an `<Error>` document: that is a failure.
    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<(), Failure> {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (n, etag) in parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
                etag.replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('"', "&quot;")
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let url = self.url(key, &[("uploadId", upload_id)]);
        let resp = self
            .call(
                reqwest::Method::POST,
                url,
                Bytes::from(xml),
                &[("content-type", "application/xml".to_string())],
            )
            .await?;
        let status = resp.status().as_u16();
        let body = text(resp).await?;
        if body.contains("<Error>") {
            return Err(error_of(status.max(500), &body, None));
        }
        Ok(())
    }

    /// AbortMultipartUpload (its parts are deleted; nothing is left in the bucket).
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), Failure> {
        let url = self.url(key, &[("uploadId", upload_id)]);
        self.call(reqwest::Method::DELETE, url, Bytes::new(), &[])
            .await
            .map(drop)
    }

    /// HeadObject: the object's size, `None` if there is no such object.
    pub async fn head_object(&self, key: &str) -> Result<Option<u64>, Failure> {
        let url = self.url(key, &[]);
        match self
            .call(reqwest::Method::HEAD, url, Bytes::new(), &[])
            .await
        {
            // The header, not the body's length: a HEAD answer has no body.
            Ok(resp) => Ok(resp
                .headers()
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())),
            Err(Failure::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// DeleteObject.
    pub async fn delete_object(&self, key: &str) -> Result<(), Failure> {
        let url = self.url(key, &[]);
        self.call(reqwest::Method::DELETE, url, Bytes::new(), &[])
            .await
            .map(drop)
    }
}

/// A 2xx answer's body as text.
async fn text(resp: reqwest::Response) -> Result<String, Failure> {
    read_body(resp, 1 << 20)
        .await
        .map(|(b, _)| String::from_utf8_lossy(&b).into_owned())
        .map_err(|e| Failure::Transport(chain(&e.without_url())))
}

/// Sends a request signed with SigV4 for `service` (`s3`, `sts`) in `region`: its answer, of
/// whatever status.
#[allow(clippy::too_many_arguments)]
pub async fn send_signed(
    client: &reqwest::Client,
    creds: &Credentials,
    region: &str,
    service: &str,
    method: reqwest::Method,
    url: url::Url,
    body: Bytes,
    headers: &[(&'static str, String)],
) -> Result<reqwest::Response, Failure> {
    let hash = sigv4::sha256_hex(&body);
    let now = jiff::Timestamp::now().as_second();
    let date = sigv4::amz_date(now);
    let mut signed: Vec<(&str, &str)> =
        vec![("x-amz-content-sha256", &hash), ("x-amz-date", &date)];
    if let Some(t) = &creds.session_token {
        signed.push(("x-amz-security-token", t.expose()));
    }
    let auth = sigv4::authorization(
        &sigv4::Request {
            method: method.as_str(),
            url: &url,
            headers: &signed,
            payload_hash: &hash,
        },
        creds,
        &date,
        region,
        service,
    );
    let mut req = client.request(method, url);
    for (k, v) in &signed {
        let mut value = HeaderValue::from_str(v).map_err(|_| {
            Failure::Credentials("the session token is not a valid header value".into())
        })?;
        value.set_sensitive(*k == "x-amz-security-token");
        req = req.header(*k, value);
    }
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let mut auth = HeaderValue::from_str(&auth).map_err(|_| {
        Failure::Credentials("the access key id is not a valid header value".into())
    })?;
    auth.set_sensitive(true);
    req.header(reqwest::header::AUTHORIZATION, auth)
        .body(body)
        .send()
        .await
        .map_err(|e| Failure::Transport(chain(&e.without_url())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_errors_read_as_code_and_message() {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><BucketName>b</BucketName></Error>";
        let f = error_of(404, body, None);
        assert_eq!(
            f.to_string(),
            "HTTP 404 NoSuchBucket: The specified bucket does not exist"
        );
        assert_eq!(f.verdict(), Verdict::Stop);
        let slow = error_of(503, "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>", None);
        assert!(matches!(slow.verdict(), Verdict::Retry { .. }));
        let timeout = error_of(400, "<Error><Code>RequestTimeout</Code></Error>", None);
        assert!(matches!(timeout.verdict(), Verdict::Retry { .. }));
        assert_eq!(
            error_of(403, "", None).to_string(),
            "HTTP 403 Forbidden: (no message)"
        );
        assert_eq!(
            xml_tag("<a>x &amp; &quot;y&quot;</a>", "a").unwrap(),
            "x & \"y\""
        );
    }
}
