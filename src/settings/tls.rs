//! TLS options of an HTTP client, the same for a source (to its vendor) and an HTTP sink (to
//! its receiver): `ca_file`, `client_cert` + `client_key`, `insecure_skip_verify`.

use std::path::PathBuf;

use super::Check;

/// The TLS keys as written.
#[derive(Debug, Default, Clone)]
pub(crate) struct RawTls {
    pub ca_file: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub insecure_skip_verify: Option<bool>,
}

/// Validated TLS options. The files are checked here and read again when the client is built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM CA certificates trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS, with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Accept any certificate from the server (warned about when the client is built).
    pub insecure_skip_verify: bool,
}

impl TlsConfig {
    /// No option set: the system's roots, no client certificate.
    pub fn is_default(&self) -> bool {
        *self == TlsConfig::default()
    }

    /// Applies the options to a client builder, reading the files.
    pub fn apply(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, String> {
        if let Some(path) = &self.ca_file {
            let pem =
                std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            let mut pem =
                std::fs::read(cert).map_err(|e| format!("client_cert {}: {e}", cert.display()))?;
            pem.push(b'\n');
            pem.extend(
                std::fs::read(key).map_err(|e| format!("client_key {}: {e}", key.display()))?,
            );
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|_| "client_cert/client_key: not a PEM certificate and private key")?;
            builder = builder.identity(identity);
        }
        if self.insecure_skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        Ok(builder)
    }
}

/// Validates the TLS keys of the entry at `key`, whose URL is `https` (or not known).
pub(crate) fn validate(c: &mut Check<'_>, key: &str, https: bool, s: &RawTls) -> TlsConfig {
    let mut tls_file = |opt: &str, v: &Option<String>| -> Option<(PathBuf, Vec<u8>)> {
        let f = v.as_deref()?;
        if !https {
            c.fail(&format!("{key}.{opt}"), "only used with an https:// url");
            return None;
        }
        let p = c.base().join(f);
        match std::fs::read(&p) {
            Ok(b) => Some((p, b)),
            Err(e) => {
                c.fail(
                    &format!("{key}.{opt}"),
                    format_args!("cannot read {}: {e}", p.display()),
                );
                None
            }
        }
    };
    let ca = tls_file("ca_file", &s.ca_file);
    let cert = tls_file("client_cert", &s.client_cert);
    let client_key = tls_file("client_key", &s.client_key);
    if let Some((p, pem)) = &ca {
        if !reqwest::Certificate::from_pem_bundle(pem).is_ok_and(|v| !v.is_empty()) {
            c.fail(
                &format!("{key}.ca_file"),
                format_args!("{} holds no PEM certificate", p.display()),
            );
        }
    }
    match (
        &cert,
        &client_key,
        s.client_cert.is_some(),
        s.client_key.is_some(),
    ) {
        (Some((_, cert_pem)), Some((_, key_pem)), ..) => {
            let mut pem = cert_pem.clone();
            pem.push(b'\n');
            pem.extend_from_slice(key_pem);
            if reqwest::Identity::from_pem(&pem).is_err() {
                c.fail(
                    &format!("{key}.client_cert"),
                    "client_cert and client_key must be a PEM certificate and its PEM private key",
                );
            }
        }
        (_, _, true, false) => c.fail(
            &format!("{key}.client_key"),
            "missing: client_cert needs client_key",
        ),
        (_, _, false, true) => c.fail(
            &format!("{key}.client_cert"),
            "missing: client_key needs client_cert",
        ),
        _ => {}
    }
    if s.insecure_skip_verify == Some(true) && !https {
        c.fail(
            &format!("{key}.insecure_skip_verify"),
            "only used with an https:// url",
        );
    }
    TlsConfig {
        ca_file: ca.map(|(p, _)| p),
        client_cert: cert.map(|(p, _)| p),
        client_key: client_key.map(|(p, _)| p),
        insecure_skip_verify: s.insecure_skip_verify.unwrap_or(false),
    }
}
