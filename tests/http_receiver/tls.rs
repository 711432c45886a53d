//! An HTTPS NDJSON receiver that requires a client certificate (mutual TLS), with a throwaway
//! PKI made by rcgen: a CA, a server certificate for 127.0.0.1 and localhost, and a client
//! certificate. HTTP/1.1 is spoken by hand: the sink sends `Content-Length` bodies.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

/// PEM files of a test PKI, written by [`Pki::write`].
pub struct Pki {
    pub ca_pem: String,
    ca_der: CertificateDer<'static>,
    server_pem: (CertificateDer<'static>, Vec<u8>),
    pub client_cert_pem: String,
    pub client_key_pem: String,
    /// The server certificate and its key as PEM, for receivers that read files (rsyslog).
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

impl Pki {
    pub fn new() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "auditship test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();

        let server_key = KeyPair::generate().unwrap();
        let mut server =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key).unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "auditship test client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &ca_cert, &ca_key).unwrap();

        Pki {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().clone(),
            server_pem: (server_cert.der().clone(), server_key.serialize_der()),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
        }
    }

    /// Writes `ca.pem`, `client.pem` and `client.key` into `dir`.
    pub fn write(&self, dir: &Path) {
        std::fs::write(dir.join("ca.pem"), &self.ca_pem).unwrap();
        std::fs::write(dir.join("client.pem"), &self.client_cert_pem).unwrap();
        std::fs::write(dir.join("client.key"), &self.client_key_pem).unwrap();
    }
}

/// What the TLS receiver saw.
#[derive(Default)]
pub struct TlsData {
    /// Events of every accepted request.
    pub events: Vec<Value>,
    /// Requests served.
    pub requests: usize,
    /// Connections whose TLS handshake failed (no client certificate, or the client refused
    /// the server's).
    pub handshake_failures: usize,
}

pub struct TlsServer {
    pub addr: SocketAddr,
    pub data: Arc<Mutex<TlsData>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Pki {
    /// A TLS acceptor with the server certificate that requires a client certificate of the CA.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![self.server_pem.0.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_pem.1.clone())),
            )
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

impl TlsServer {
    pub async fn start(pki: &Pki) -> TlsServer {
        let acceptor = pki.acceptor();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let data = Arc::new(Mutex::new(TlsData::default()));
        let d = data.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, d) = (acceptor.clone(), d.clone());
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(tls) => serve(tls, &d).await,
                        Err(_) => d.lock().unwrap().handshake_failures += 1,
                    }
                });
            }
        });
        TlsServer { addr, data, task }
    }
}

/// HTTP/1.1 keep-alive: each request's NDJSON body is parsed and answered 200.
async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: S,
    data: &Mutex<TlsData>,
) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut len = 0usize;
        let mut first = true;
        loop {
            let mut line = String::new();
            match stream.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if first {
                assert!(line.starts_with("POST "), "{line}");
                first = false;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; len];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let events: Vec<Value> = String::from_utf8(body)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        {
            let mut d = data.lock().unwrap();
            d.requests += 1;
            d.events.extend(events);
        }
        let resp =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        if stream.get_mut().write_all(resp).await.is_err() {
            return;
        }
    }
}
