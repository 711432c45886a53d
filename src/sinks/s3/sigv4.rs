//! AWS Signature Version 4 (the `Authorization` header of S3's and STS's requests), written
//! from AWS's specification with the HMAC-SHA256 and SHA-256 of `ring`, which the agent links
//! already. The unit tests check it against the signatures AWS publishes in the S3 API
//! reference ("Signature Calculations for the Authorization Header").

use ring::{digest, hmac};

use crate::settings::Secret;

/// What signs a request: an access key, its secret, and a session token for temporary ones.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
    /// When temporary credentials stop working (Unix seconds).
    pub expires: Option<i64>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret or the token.
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// Hex SHA-256 of `data` (`x-amz-content-sha256`).
pub fn sha256_hex(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

fn hex(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(H[(x >> 4) as usize] as char);
        s.push(H[(x & 15) as usize] as char);
    }
    s
}

/// URI-encodes `s` as SigV4 wants: every byte but `A-Z a-z 0-9 - . _ ~` as `%XX` (upper-case
/// hex); `/` kept when `keep_slash` (an object key in a path).
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One request to sign.
pub struct Request<'a> {
    pub method: &'a str,
    /// The URL as sent; its path already URI-encoded ([`uri_encode`]), its query as pairs below.
    pub url: &'a url::Url,
    /// Headers to sign besides `host` (names lower-case), e.g. `x-amz-content-sha256`,
    /// `x-amz-date`, `x-amz-security-token`.
    pub headers: &'a [(&'a str, &'a str)],
    /// `x-amz-content-sha256`'s value (the hex SHA-256 of the body).
    pub payload_hash: &'a str,
}

/// The `Authorization` header of `req`, at `amz_date` (`YYYYMMDDTHHMMSSZ`, as sent in
/// `x-amz-date`), for `region` and `service` (`s3`, `sts`).
pub fn authorization(
    req: &Request<'_>,
    creds: &Credentials,
    amz_date: &str,
    region: &str,
    service: &str,
) -> String {
    let host = match req.url.port() {
        Some(p) => format!("{}:{p}", req.url.host_str().unwrap_or("")),
        None => req.url.host_str().unwrap_or("").to_string(),
    };
    let mut headers: Vec<(String, String)> = vec![("host".into(), host)];
    for (k, v) in req.headers {
        headers.push((
            k.to_ascii_lowercase(),
            v.split_whitespace().collect::<Vec<_>>().join(" "),
        ));
    }
    headers.sort();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let mut query: Vec<(String, String)> = req
        .url
        .query_pairs()
        .map(|(k, v)| (uri_encode(&k, false), uri_encode(&v, false)))
        .collect();
    query.sort();
    let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let path = if req.url.path().is_empty() {
        "/"
    } else {
        req.url.path()
    };
    let mut canonical = format!("{}\n{path}\n{}\n", req.method, query.join("&"));
    for (k, v) in &headers {
        canonical.push_str(&format!("{k}:{v}\n"));
    }
    canonical.push_str(&format!("\n{signed}\n{}", req.payload_hash));
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let mac = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
    };
    let k_secret = format!("AWS4{}", creds.secret_access_key.expose());
    let k_date = mac(k_secret.as_bytes(), date);
    let k_region = mac(k_date.as_ref(), region);
    let k_service = mac(k_region.as_ref(), service);
    let k_signing = mac(k_service.as_ref(), "aws4_request");
    let signature = hex(mac(k_signing.as_ref(), &to_sign).as_ref());
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
        creds.access_key_id
    )
}

/// `x-amz-date` of the instant `secs` (Unix seconds): `YYYYMMDDTHHMMSSZ`.
pub fn amz_date(secs: i64) -> String {
    let t = jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Credentials {
        Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            session_token: None,
            expires: None,
        }
    }

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// The S3 API reference's "GET Object" example.
    #[test]
    fn get_object_as_aws_signs_it() {
        let url = url::Url::parse("https://examplebucket.s3.amazonaws.com/test.txt").unwrap();
        let auth = authorization(
            &Request {
                method: "GET",
                url: &url,
                headers: &[
                    ("range", "bytes=0-9"),
                    ("x-amz-content-sha256", EMPTY),
                    ("x-amz-date", "20130524T000000Z"),
                ],
                payload_hash: EMPTY,
            },
            &example(),
            "20130524T000000Z",
            "us-east-1",
            "s3",
        );
        assert_eq!(auth, "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    }

    /// "PUT Object": a body, a `$` in the key (encoded), and more headers.
    #[test]
    fn put_object_as_aws_signs_it() {
        let body = b"Welcome to Amazon S3.";
        let hash = sha256_hex(body);
        assert_eq!(
            hash,
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        );
        let path = format!("/{}", uri_encode("test$file.text", true));
        let mut url = url::Url::parse("https://examplebucket.s3.amazonaws.com/").unwrap();
        url.set_path(&path);
        let auth = authorization(
            &Request {
                method: "PUT",
                url: &url,
                headers: &[
                    ("date", "Fri, 24 May 2013 00:00:00 GMT"),
                    ("x-amz-content-sha256", &hash),
                    ("x-amz-date", "20130524T000000Z"),
                    ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
                ],
                payload_hash: &hash,
            },
            &example(),
            "20130524T000000Z",
            "us-east-1",
            "s3",
        );
        assert!(
            auth.ends_with(
                "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
            ),
            "{auth}"
        );
    }

    /// "GET Bucket (List Objects)": query parameters sorted and encoded.
    #[test]
    fn a_query_is_sorted_and_encoded() {
        let url =
            url::Url::parse("https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J").unwrap();
        let auth = authorization(
            &Request {
                method: "GET",
                url: &url,
                headers: &[
                    ("x-amz-content-sha256", EMPTY),
                    ("x-amz-date", "20130524T000000Z"),
                ],
                payload_hash: EMPTY,
            },
            &example(),
            "20130524T000000Z",
            "us-east-1",
            "s3",
        );
        assert!(
            auth.ends_with(
                "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
            ),
            "{auth}"
        );
    }

    #[test]
    fn keys_are_encoded_but_their_slashes_kept() {
        assert_eq!(
            uri_encode("a b/dt=2026-01-01/x+y~z", true),
            "a%20b/dt%3D2026-01-01/x%2By~z"
        );
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        assert_eq!(amz_date(1_369_353_600), "20130524T000000Z");
        let c = format!("{:?}", example());
        assert!(!c.contains("wJalr"), "{c}");
    }
}
