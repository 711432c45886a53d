//! `agent.state_url`: a PostgreSQL URL as libpq spells it, and TLS to the database over the
//! rustls the agent already links (a small [`MakeTlsConnect`] rather than another crate:
//! tokio-postgres-rustls brings x509-cert, der and tls_codec for channel binding, which the
//! agent does not use).
//!
//! `sslmode` as libpq: `disable` (no TLS), `prefer` (the default: TLS if the server offers
//! it, unverified), `require` (TLS, the certificate not verified, unless `sslrootcert` is given:
//! then as `verify-ca`), `verify-ca` (the chain verified against `sslrootcert`, or the system's
//! roots), `verify-full` (the chain and the host name). tokio-postgres itself knows only
//! disable, prefer and require; the two parameters are taken out of the URL here.
//!
//! The password is a secret: [`PgUrl`]'s `Display` and `Debug` leave it out, and no error made
//! here quotes the URL.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::{Client, Config, NoTls};
use tokio_rustls::rustls;

use crate::settings::Secret;

/// libpq's `sslmode`, but `allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A validated `state_url`.
#[derive(Clone)]
pub struct PgUrl {
    url: Secret,
    config: Config,
    mode: SslMode,
    root_cert: Option<PathBuf>,
}

impl PartialEq for PgUrl {
    fn eq(&self, other: &Self) -> bool {
        self.url.expose() == other.url.expose() && self.root_cert == other.root_cert
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({self})")
    }
}

/// `postgresql://user@host:port/database?sslmode=…`: never the password.
impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use tokio_postgres::config::Host;
        f.write_str("postgresql://")?;
        if let Some(u) = self.config.get_user() {
            write!(f, "{u}@")?;
        }
        let ports = self.config.get_ports();
        for (n, h) in self.config.get_hosts().iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            match h {
                Host::Tcp(h) if h.contains(':') => write!(f, "[{h}]")?,
                Host::Tcp(h) => f.write_str(h)?,
                Host::Unix(p) => write!(f, "{}", p.display())?,
            }
            if let Some(p) = ports.get(n).or(ports.first()) {
                write!(f, ":{p}")?;
            }
        }
        write!(f, "/{}", self.config.get_dbname().unwrap_or(""))?;
        let mode = match self.mode {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        };
        write!(f, "?sslmode={mode}")
    }
}

impl PgUrl {
    /// Parses a `postgres://` or `postgresql://` URL; relative `sslrootcert` paths resolve
    /// against `base` (the config file's directory). The message of an error never quotes the
    /// URL (it holds the password).
    pub fn parse(url: &str, base: &Path) -> Result<PgUrl, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(
                "is not a PostgreSQL URL: write postgres://user:password@host:5432/database".into(),
            );
        }
        let (head, query) = url.split_once('?').unwrap_or((url, ""));
        let mut mode = SslMode::Prefer;
        let mut root_cert = None;
        let mut rest = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "sslmode" => {
                    mode = match &*v {
                        "disable" => SslMode::Disable,
                        "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(format!(
                                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                            ))
                        }
                    }
                }
                "sslrootcert" => {
                    let p = base.join(&*v);
                    if !p.is_file() {
                        return Err(format!("sslrootcert {} is not a file", p.display()));
                    }
                    root_cert = Some(p);
                }
                _ => {
                    rest.append_pair(&k, &v);
                }
            }
        }
        let rest = rest.finish();
        let stripped = if rest.is_empty() {
            head.to_string()
        } else {
            format!("{head}?{rest}")
        };
        let mut config: Config = stripped.parse().map_err(|e: tokio_postgres::Error| {
            // tokio-postgres's parse errors name the option, never its value.
            format!(
                "is not a PostgreSQL URL ({}): write postgres://user:password@host:5432/database",
                crate::state::pg_text(&e)
            )
        })?;
        if config.get_hosts().is_empty() {
            return Err("names no host: write postgres://user:password@host:5432/database".into());
        }
        if config.get_dbname().is_none() {
            return Err(
                "names no database: write postgres://user:password@host:5432/database".into(),
            );
        }
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        config.application_name("auditship");
        config.connect_timeout(std::time::Duration::from_secs(10));
        Ok(PgUrl {
            url: Secret::new(url),
            config,
            mode,
            root_cert,
        })
    }

    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// The connection settings (for [`crate::lease::Leases`]).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Connects; the connection's task runs on the runtime until the client is dropped or the
    /// connection is lost.
    pub async fn connect(&self) -> Result<Client, crate::state::StateError> {
        fn spawn<F>(conn: F)
        where
            F: Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
        {
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("state database connection ended: {e}");
                }
            });
        }
        if self.mode == SslMode::Disable {
            let (client, conn) = self.config.connect(NoTls).await?;
            spawn(conn);
            return Ok(client);
        }
        let tls = MakeRustls::new(self.mode, self.root_cert.as_deref())
            .map_err(crate::state::StateError::DbTls)?;
        let (client, conn) = self.config.connect(tls).await?;
        spawn(conn);
        Ok(client)
    }
}

/// What connects TLS to the database: one rustls config, and whether the host name is checked.
#[derive(Clone)]
struct MakeRustls {
    config: Arc<rustls::ClientConfig>,
}

impl MakeRustls {
    fn new(mode: SslMode, root_cert: Option<&Path>) -> Result<MakeRustls, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?;
        // libpq: `require` with a root certificate verifies the chain, as `verify-ca`.
        let verify = match mode {
            SslMode::Disable | SslMode::Prefer => None,
            SslMode::Require => root_cert.map(|_| false),
            SslMode::VerifyCa => Some(false),
            SslMode::VerifyFull => Some(true),
        };
        let builder = match verify {
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider))),
            Some(full) => {
                let mut roots = rustls::RootCertStore::empty();
                match root_cert {
                    Some(path) => {
                        let certs = CertificateDer::pem_file_iter(path)
                            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                            .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                        for c in certs {
                            roots
                                .add(c)
                                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                        }
                    }
                    None => {
                        for c in rustls_native_certs::load_native_certs().certs {
                            let _ = roots.add(c);
                        }
                    }
                }
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| format!("TLS setup: {e}"))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(Verify { webpki, full }))
            }
        };
        Ok(MakeRustls {
            config: Arc::new(builder.with_no_client_auth()),
        })
    }
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, Self::Error> {
        let name = rustls::pki_types::ServerName::try_from(domain.to_string())?;
        Ok(RustlsConnect {
            config: self.config.clone(),
            name,
        })
    }
}

struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let s = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(RustlsStream(s))
        })
    }
}

/// The TLS stream. No channel binding: SCRAM still authenticates both ways without it.
struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// `verify-ca` (`full` false: the chain only, any host name) or `verify-full`.
#[derive(Debug)]
struct Verify {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    full: bool,
}

impl rustls::client::danger::ServerCertVerifier for Verify {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) if !self.full => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// `prefer`, and `require` without a root certificate: encrypted, not authenticated (libpq's
/// meaning of them). The handshake's signatures are still checked.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown_and_sslmode_is_taken_out() {
        let u = PgUrl::parse(
            "postgres://agent:s3cret-pw@db.example:6543/audit?sslmode=verify-full&connect_timeout=5",
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(u.mode(), SslMode::VerifyFull);
        let shown = format!("{u} {u:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(
            u.to_string(),
            "postgresql://agent@db.example:6543/audit?sslmode=verify-full"
        );
        assert_eq!(
            PgUrl::parse("postgres://a:b@h/d", Path::new("/"))
                .unwrap()
                .mode(),
            SslMode::Prefer
        );
    }

    #[test]
    fn a_wrong_url_is_refused_without_quoting_it() {
        for (url, said) in [
            ("mysql://a:s3cret@h/d", "is not a PostgreSQL URL"),
            (
                "postgres://a:s3cret@h/d?sslmode=allow",
                "sslmode=allow is not one of",
            ),
            ("postgres://a:s3cret@h/d?bogus=1", "is not a PostgreSQL URL"),
            ("postgres://a:s3cret@h:99999/d", "is not a PostgreSQL URL"),
            (
                "postgres://a:s3cret@h/d?sslrootcert=/nonexistent/ca.pem",
                "sslrootcert /nonexistent/ca.pem is not a file",
            ),
            ("postgres://a:s3cret@h", "names no database"),
        ] {
            let e = PgUrl::parse(url, Path::new("/")).unwrap_err();
            assert!(e.contains(said), "{url}: {e}");
            assert!(!e.contains("s3cret"), "{url}: {e}");
        }
    }
}
