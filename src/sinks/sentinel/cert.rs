//! A client certificate's JWT client assertion (Microsoft identity platform "certificate
//! credentials"): a JWT with `alg = RS256` and `x5t` (the base64url SHA-1 thumbprint of the
//! certificate), whose claims are `aud` (the token endpoint), `iss` and `sub` (the client id),
//! `jti`, `nbf`, `iat` and `exp`, signed with the certificate's RSA key.

use std::path::Path;

use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How long an assertion is valid.
const LIFETIME_SECS: i64 = 600;

/// The key and the thumbprint of a client certificate.
pub struct Signer {
    key: RsaKeyPair,
    /// base64url SHA-1 of the certificate's DER.
    x5t: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer {{ x5t: {} }}", self.x5t)
    }
}

impl Signer {
    /// Reads a PEM file holding the certificate and its RSA private key (PKCS#8 or PKCS#1).
    /// The error never quotes the file.
    pub fn load(path: &Path) -> Result<Signer, String> {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let cert = CertificateDer::from_pem_slice(&pem)
            .map_err(|_| format!("{}: no PEM certificate in it", path.display()))?;
        let key = PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|_| format!("{}: no PEM private key in it", path.display()))?;
        let key = match &key {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => {
                return Err(format!(
                    "{}: the private key is not RSA (Entra ID takes RS256 assertions)",
                    path.display()
                ))
            }
        }
        .map_err(|e| {
            format!(
                "{}: the private key is not a usable RSA key ({e})",
                path.display()
            )
        })?;
        let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert.as_ref());
        Ok(Signer {
            key,
            x5t: base64url(sha1.as_ref()),
        })
    }

    /// A signed assertion for `aud` (the token endpoint) and `client_id`, valid from `now`
    /// (Unix seconds) for ten minutes.
    pub fn assertion(&self, aud: &str, client_id: &str, now: i64) -> Result<String, String> {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5t": self.x5t});
        let jti: String = (0..16)
            .map(|_| format!("{:02x}", fastrand::u8(..)))
            .collect();
        let claims = serde_json::json!({
            "aud": aud, "iss": client_id, "sub": client_id, "jti": jti,
            "nbf": now, "iat": now, "exp": now + LIFETIME_SECS,
        });
        let mut jwt = base64url(header.to_string().as_bytes());
        jwt.push('.');
        jwt.push_str(&base64url(claims.to_string().as_bytes()));
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                jwt.as_bytes(),
                &mut sig,
            )
            .map_err(|_| "signing the client assertion failed".to_string())?;
        jwt.push('.');
        jwt.push_str(&base64url(&sig));
        Ok(jwt)
    }
}

/// Base64url without padding (RFC 4648 §5), as JWTs take it.
fn base64url(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc_4648_vectors() {
        for (plain, want) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(plain.as_bytes()), want);
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
