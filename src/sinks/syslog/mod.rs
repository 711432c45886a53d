//! `kind = "syslog"`: each event as one RFC 5424 message, its MSG the event in the sink's
//! `format` (native JSON, CEF, ...), over TCP with RFC 6587 octet counting, TLS (RFC 5425) or
//! UDP (RFC 5426, one datagram a message).
//!
//! Syslog has no acknowledgement, so "the receiver took the page" is read off the socket: the
//! whole page is written and then the kernel's send queue is watched (`SIOCOUTQ`, the bytes not
//! yet acknowledged by the peer's TCP) until it is empty. Only then does `deliver` return and the
//! poller commit. A connection that fails or closes on the way is dropped, and the whole page is
//! sent again on a new one with the agent's backoff (unlimited in the daemon, at most
//! `retry_max_attempts` in `--once`).
//!
//! An acknowledgement by the receiver's TCP is not yet its reading: a receiver that stops (a
//! restart) with bytes still in its socket buffer loses them, and the sender cannot tell which.
//! So the sink keeps the last acknowledged pages (up to 8 MiB, more than a default Linux receive
//! buffer holds) and, when a connection that carried them breaks, sends them again on the next
//! one before the new page. A receiver restart therefore loses nothing and sees some events
//! twice (each carries its stable `id`); an agent that dies at the same moment as its receiver
//! can still lose what sat unread, which only an application-level acknowledgement (RELP) closes.
//!
//! UDP has no acknowledgement at all: a warning at start says events can be lost.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

pub mod config;

pub use config::{SyslogKind, SyslogSinkConfig, SyslogTransport, FACILITIES};

use super::{Sink, SinkError};
use crate::encodings::cef::Severity;
use crate::encodings::Writer;
use crate::event::Event;
use crate::health::SinkHealth;
use crate::metrics;
use crate::retry::RetryConfig;
use crate::retry::{self, Gave, Retryable, Verdict};
use crate::settings::TlsConfig;
use crate::BoxFuture;

/// Longest wait for a TCP connection or a TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the receiver to acknowledge a written page.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of acknowledged pages kept to send again after a broken connection: above
/// Linux's default largest TCP receive buffer (`tcp_rmem` max, 6 MiB), all a receiver can have
/// taken without reading.
const REPLAY_BYTES: usize = 8 << 20;
/// The largest UDP payload (IPv4).
const MAX_DATAGRAM: usize = 65_507;

/// A syslog sink: the connection (opened on first delivery) and the messages' header parts.
pub struct SyslogSink {
    name: String,
    cfg: SyslogSinkConfig,
    writer: Writer,
    /// HOSTNAME of every message.
    hostname: String,
    /// For `transport = "tls"`: the client and the server name checked in the certificate.
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// The agent's backoff: unlimited attempts in the daemon, `retry_max_attempts` in `--once`.
    retry: RetryConfig,
    /// The connection and what was sent on it.
    link: tokio::sync::Mutex<Link>,
    /// Told of each failed attempt, so a delivery retried for long shows in `/readyz`.
    health: SinkHealth,
}

/// The open connection, if any (dropped on any error), and the replay of what it carried.
#[derive(Default)]
struct Link {
    conn: Option<Conn>,
    /// The last pages acknowledged on a connection (framed bytes, events), newest last, at
    /// most [`REPLAY_BYTES`] (and always the last page). A receiver that stops with them read
    /// by its TCP but not yet by itself (in its socket buffer) has lost them: they are sent
    /// again, before the next page, on the connection that replaces a broken one.
    replay: VecDeque<(Vec<u8>, usize)>,
    replay_bytes: usize,
    /// A connection that carried `replay` broke: the next one sends it first.
    owed: bool,
    /// An attempt is writing on `conn`. Still set at the next attempt, the last one was cut
    /// short (shutdown dropped it) and may have left half a frame: the connection is dropped.
    writing: bool,
}

impl Link {
    /// Drops the connection; what it carried is owed to the next one.
    fn drop_conn(&mut self) {
        self.conn = None;
        self.owed = !self.replay.is_empty();
    }

    /// Records an acknowledged page, forgetting the oldest beyond [`REPLAY_BYTES`].
    fn acknowledged(&mut self, page: &[u8], events: usize) {
        self.owed = false;
        self.replay.push_back((page.to_vec(), events));
        self.replay_bytes += page.len();
        while self.replay.len() > 1 && self.replay_bytes > REPLAY_BYTES {
            let (old, _) = self.replay.pop_front().expect("more than one page");
            self.replay_bytes -= old.len();
        }
    }
}

/// An open connection to the receiver.
enum Conn {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Udp(UdpSocket),
}

/// Why one attempt failed: every such failure is worth another, except a message too large
/// for a datagram.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Transport(String),
    #[error("a message of {0} bytes does not fit in a UDP datagram (at most {MAX_DATAGRAM}); use transport = \"tcp\" or \"tls\", or include_raw = false")]
    TooLarge(usize),
}

impl Retryable for Failure {
    fn verdict(&self) -> Verdict {
        match self {
            Failure::Transport(_) => Verdict::Retry { after: None },
            Failure::TooLarge(_) => Verdict::Stop,
        }
    }
}

fn io(what: &str) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |e| Failure::Transport(format!("{what}: {e}"))
}

impl SyslogSink {
    /// Builds the TLS client (reading the CA and client certificate files); connects later.
    pub fn new(
        name: &str,
        cfg: &SyslogSinkConfig,
        writer: Writer,
        retry: &RetryConfig,
        once: bool,
    ) -> Result<SyslogSink, SinkError> {
        let tls = match &cfg.transport {
            SyslogTransport::Tls(t) => {
                if t.insecure_skip_verify {
                    tracing::warn!(sink = %name,
                        "insecure_skip_verify = true: the receiver's TLS certificate is NOT verified; anyone on \
                         the network path can impersonate it and read the events. Use ca_file instead");
                }
                let config = client_config(t).map_err(|msg| SinkError::Io {
                    sink: name.to_string(),
                    msg,
                })?;
                let server =
                    rustls::pki_types::ServerName::try_from(cfg.host.clone()).map_err(|_| {
                        SinkError::Io {
                            sink: name.to_string(),
                            msg: format!("{:?} is not a valid TLS server name", cfg.host),
                        }
                    })?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), server))
            }
            _ => None,
        };
        if cfg.transport == SyslogTransport::Udp {
            tracing::warn!(sink = %name, address = %cfg.address,
                "transport = \"udp\": datagrams are not acknowledged, so events the network or the \
                 receiver drops are lost without notice; use tcp or tls where every event matters");
        }
        tracing::info!(sink = %name, address = %cfg.address, transport = transport_name(&cfg.transport),
            format = writer.format.name(), "syslog sink ready");
        Ok(SyslogSink {
            name: name.to_string(),
            hostname: cfg.hostname.clone().unwrap_or_else(super::http::hostname),
            cfg: cfg.clone(),
            writer,
            tls,
            retry: RetryConfig {
                max_attempts: if once { retry.max_attempts } else { None },
                ..retry.clone()
            },
            link: tokio::sync::Mutex::new(Link::default()),
            health: SinkHealth::default(),
        })
    }

    /// Appends one event's RFC 5424 message:
    /// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID - MSG`, MSGID the source kind.
    fn message(&self, e: &Event, out: &mut Vec<u8>) {
        let pri = u32::from(self.cfg.facility) * 8 + u32::from(Severity::of(e).syslog());
        out.extend_from_slice(format!("<{pri}>1 ").as_bytes());
        crate::timefmt::push_rfc3339_ms(out, e.time);
        for part in [&self.hostname, &self.cfg.app_name] {
            out.push(b' ');
            out.extend_from_slice(part.as_bytes());
        }
        out.extend_from_slice(b" - ");
        out.extend_from_slice(e.kind.as_bytes());
        out.extend_from_slice(b" - ");
        self.writer.record(e, out);
    }

    /// The page as bytes to send, and where each message ends (for UDP's one datagram each).
    fn encode(&self, events: &[Event]) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut ends = Vec::with_capacity(events.len());
        let mut msg = Vec::new();
        let framed = self.cfg.transport != SyslogTransport::Udp;
        for e in events {
            msg.clear();
            self.message(e, &mut msg);
            if framed {
                buf.extend_from_slice(format!("{} ", msg.len()).as_bytes());
            }
            buf.extend_from_slice(&msg);
            ends.push(buf.len());
        }
        (buf, ends)
    }

    /// Opens a connection (TCP connect and TLS handshake, or a connected UDP socket).
    async fn connect(&self) -> Result<Conn, Failure> {
        let timed = |e: tokio::time::error::Elapsed| {
            Failure::Transport(format!("connecting to {}: {e}", self.cfg.address))
        };
        if self.cfg.transport == SyslogTransport::Udp {
            let addr = tokio::net::lookup_host(&self.cfg.address)
                .await
                .map_err(io("resolving the address"))?
                .next()
                .ok_or_else(|| Failure::Transport("the address resolves to nothing".into()))?;
            let local = if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let sock = UdpSocket::bind(local)
                .await
                .map_err(io("binding a UDP socket"))?;
            sock.connect(addr).await.map_err(io("connecting"))?;
            return Ok(Conn::Udp(sock));
        }
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.cfg.address))
            .await
            .map_err(timed)?
            .map_err(|e| Failure::Transport(format!("connecting to {}: {e}", self.cfg.address)))?;
        tcp.set_nodelay(true).map_err(io("setting TCP_NODELAY"))?;
        match &self.tls {
            None => Ok(Conn::Tcp(tcp)),
            Some((connector, server)) => {
                let tls =
                    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(server.clone(), tcp))
                        .await
                        .map_err(timed)?
                        .map_err(io("TLS handshake"))?;
                Ok(Conn::Tls(Box::new(tls)))
            }
        }
    }

    /// The receiver's `host:port`, as configured.
    pub fn address(&self) -> &str {
        &self.cfg.address
    }

    /// Checks the receiver can be reached (`check --connect`): a TCP connect or a TLS
    /// handshake; for UDP only the address is resolved. Sends no event.
    pub async fn probe(&self) -> Result<&'static str, String> {
        self.connect().await.map_err(|e| e.to_string())?;
        Ok(match self.cfg.transport {
            SyslogTransport::Tcp => "ok (TCP connection opened)",
            SyslogTransport::Tls(_) => "ok (TLS handshake done)",
            SyslogTransport::Udp => "ok (address resolved only: UDP has no handshake)",
        })
    }

    /// One attempt: (re)connect if needed, send the whole page (after the replay owed by a
    /// broken connection), wait for its acknowledgement.
    async fn attempt(&self, buf: &[u8], ends: &[usize]) -> Result<(), Failure> {
        let mut link = self.link.lock().await;
        if std::mem::take(&mut link.writing) {
            link.drop_conn();
        }
        if link.conn.as_ref().is_some_and(|c| c.closed()) {
            tracing::info!(sink = %self.name, "the receiver closed the connection; reconnecting");
            link.drop_conn();
        }
        if link.conn.is_none() {
            link.conn = Some(self.connect().await?);
        }
        link.writing = true;
        let Link {
            conn, replay, owed, ..
        } = &mut *link;
        let replay: Vec<&[u8]> = if *owed {
            let events: usize = replay.iter().map(|(_, n)| n).sum();
            tracing::warn!(sink = %self.name, events,
                "sending again the last pages of the broken connection: the receiver may have \
                 stopped before reading them (expect duplicates; dedupe on the event id)");
            replay.iter().map(|(b, _)| b.as_slice()).collect()
        } else {
            Vec::new()
        };
        let conn = conn.as_mut().expect("connected above");
        let sent = match conn {
            Conn::Udp(sock) => send_datagrams(sock, buf, ends).await,
            Conn::Tcp(tcp) => {
                let written = async {
                    for b in replay.iter().chain([&buf]) {
                        tcp.write_all(b).await?;
                    }
                    Ok::<_, std::io::Error>(())
                };
                match written.await {
                    Ok(()) => wait_acknowledged(tcp).await,
                    Err(e) => Err(Failure::Transport(format!("writing: {e}"))),
                }
            }
            Conn::Tls(tls) => {
                let written = async {
                    for b in replay.iter().chain([&buf]) {
                        tls.write_all(b).await?;
                    }
                    tls.flush().await
                };
                match written.await {
                    Ok(()) => wait_acknowledged(tls.get_ref().0).await,
                    Err(e) => Err(Failure::Transport(format!("writing: {e}"))),
                }
            }
        };
        link.writing = false;
        match &sent {
            // UDP is not acknowledged: nothing to replay.
            Ok(()) if self.cfg.transport == SyslogTransport::Udp => {}
            Ok(()) => link.acknowledged(buf, ends.len()),
            // Whatever this connection took of the page is unknown: a fresh one gets all of it.
            Err(_) => link.drop_conn(),
        }
        sent
    }
}

impl Conn {
    /// Whether the peer has closed or reset the connection (seen by the reactor).
    fn closed(&self) -> bool {
        let tcp = match self {
            Conn::Tcp(t) => t,
            Conn::Tls(t) => t.get_ref().0,
            Conn::Udp(_) => return false,
        };
        peer_gone(tcp)
    }
}

/// Whether the peer closed its side or the socket has an error, without blocking.
fn peer_gone(tcp: &TcpStream) -> bool {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    if matches!(tcp.take_error(), Ok(Some(_)) | Err(_)) {
        return true;
    }
    let ready = tcp.ready(tokio::io::Interest::READABLE);
    let mut ready = std::pin::pin!(ready);
    match ready.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(r)) => r.is_read_closed() || r.is_error(),
        Poll::Ready(Err(_)) => true,
        Poll::Pending => false,
    }
}

fn transport_name(t: &SyslogTransport) -> &'static str {
    match t {
        SyslogTransport::Tcp => "tcp",
        SyslogTransport::Tls(_) => "tls",
        SyslogTransport::Udp => "udp",
    }
}

async fn send_datagrams(sock: &UdpSocket, buf: &[u8], ends: &[usize]) -> Result<(), Failure> {
    let mut start = 0;
    for &end in ends {
        let msg = &buf[start..end];
        if msg.len() > MAX_DATAGRAM {
            return Err(Failure::TooLarge(msg.len()));
        }
        sock.send(msg).await.map_err(io("sending a datagram"))?;
        start = end;
    }
    Ok(())
}

/// Waits until every byte written to `tcp` was acknowledged by the peer (the send queue is
/// empty), the connection fails, or [`ACK_TIMEOUT`] passes.
async fn wait_acknowledged(tcp: &TcpStream) -> Result<(), Failure> {
    let started = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        if let Some(e) = tcp.take_error().map_err(io("reading the socket's error"))? {
            return Err(Failure::Transport(format!("the connection failed: {e}")));
        }
        let left = unacknowledged(tcp).map_err(io("reading the send queue"))?;
        if left == 0 {
            return Ok(());
        }
        if peer_gone(tcp) {
            return Err(Failure::Transport(format!(
                "the receiver closed the connection with {left} bytes unacknowledged"
            )));
        }
        if started.elapsed() > ACK_TIMEOUT {
            return Err(Failure::Transport(format!(
                "{left} bytes not acknowledged by the receiver within {ACK_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Bytes written to the socket and not yet acknowledged by the peer (Linux `SIOCOUTQ`).
#[cfg(target_os = "linux")]
fn unacknowledged(tcp: &TcpStream) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (= TIOCOUTQ) on a TCP socket writes one c_int through the pointer, which
    // points at `n`, alive for the call; the descriptor is owned by `tcp`, borrowed for the call.
    let r = unsafe { libc::ioctl(tcp.as_raw_fd(), libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}

/// Elsewhere the send queue cannot be read: a written page counts as taken.
#[cfg(not(target_os = "linux"))]
fn unacknowledged(_tcp: &TcpStream) -> std::io::Result<usize> {
    Ok(0)
}

/// A rustls client config from the TLS options: the system's roots plus `ca_file`, the client
/// certificate, or no verification at all with `insecure_skip_verify`.
fn client_config(t: &TlsConfig) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = if t.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(c);
        }
        if let Some(path) = &t.ca_file {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            }
        }
        builder.with_root_certificates(roots)
    };
    match (&t.client_cert, &t.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("client_cert {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("client_key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client_cert/client_key: {e}"))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// `insecure_skip_verify`: any certificate is accepted (the handshake's signatures are still
/// checked, so the session is encrypted, just not authenticated).
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

impl Sink for SyslogSink {
    fn watch(&mut self, health: SinkHealth) {
        self.health = health;
    }

    fn deliver<'a>(
        &'a mut self,
        events: &'a [Event],
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            if events.is_empty() {
                return Ok(());
            }
            let (buf, ends) = self.encode(events);
            let this = &*self;
            let name = self.name.as_str();
            let (buf, ends) = (&buf, &ends);
            let result = retry::retry(
                &self.retry,
                cancel,
                |e: &Failure, delay| {
                    metrics::retry("sink", name);
                    this.health.failed(e);
                    tracing::warn!(sink = %name, error = %e, delay_ms = delay.as_millis() as u64,
                        "retrying delivery");
                },
                || this.attempt(buf, ends),
            )
            .await;
            match result {
                Ok(()) => Ok(()),
                Err(Gave::Cancelled) => Err(SinkError::Cancelled {
                    sink: self.name.clone(),
                }),
                Err(Gave::Up(e)) => {
                    let msg = match e.verdict() {
                        Verdict::Retry { .. } => format!(
                            "gave up after {} attempts: {e}",
                            self.retry.max_attempts.unwrap_or(0)
                        ),
                        Verdict::Stop => e.to_string(),
                    };
                    tracing::error!(sink = %self.name, error = %msg,
                        "the syslog receiver did not take the page; nothing was committed: it is sent again");
                    Err(SinkError::Io {
                        sink: self.name.clone(),
                        msg,
                    })
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encodings::cef::tests::event;

    fn sink(transport: SyslogTransport) -> SyslogSink {
        let cfg = SyslogSinkConfig {
            address: "127.0.0.1:514".into(),
            host: "127.0.0.1".into(),
            transport,
            facility: 16,
            app_name: "auditship".into(),
            hostname: Some("agent-1".into()),
        };
        let retry = RetryConfig {
            initial: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            max_attempts: Some(1),
        };
        SyslogSink::new("s", &cfg, Writer::default(), &retry, true).unwrap()
    }

    #[test]
    fn messages_are_rfc5424_with_octet_counting_over_tcp() {
        let s = sink(SyslogTransport::Tcp);
        let (buf, ends) = s.encode(&[event("Create Dataset"), event("Delete Dataset")]);
        let text = String::from_utf8(buf).unwrap();
        let mut json = Vec::new();
        Writer::default().record(&event("Create Dataset"), &mut json);
        let one = format!(
            "<134>1 2024-10-18T14:10:04.123Z agent-1 auditship - domino_audit - {}",
            String::from_utf8(json).unwrap()
        );
        assert!(text.starts_with(&format!("{} {one}", one.len())), "{text}");
        // local0 (16) and notice (5) for a delete: 16*8+5.
        assert!(text[ends[0]..].contains(" <133>1 "), "{text}");
        assert_eq!(ends.len(), 2);
        assert_eq!(ends[1], text.len());
    }

    #[test]
    fn a_broken_connection_owes_the_last_pages_up_to_the_cap() {
        let mut link = Link::default();
        link.drop_conn();
        assert!(!link.owed, "nothing was sent: nothing is owed");
        let page = vec![b'x'; REPLAY_BYTES / 3];
        for _ in 0..5 {
            link.acknowledged(&page, 10);
        }
        // Three pages fill the cap exactly; older ones are forgotten.
        assert_eq!(link.replay.len(), 3);
        assert_eq!(link.replay_bytes, 3 * page.len());
        link.drop_conn();
        assert!(link.owed);
        link.acknowledged(b"next", 1);
        assert!(!link.owed, "sent again with the next page");
        // A page larger than the cap is still kept: it is the one a receiver may not have read.
        link.acknowledged(&vec![b'y'; REPLAY_BYTES + 1], 1);
        assert_eq!(link.replay.len(), 1);
    }

    #[test]
    fn udp_messages_are_not_framed() {
        let s = sink(SyslogTransport::Udp);
        let (buf, ends) = s.encode(&[event("a"), event("b")]);
        assert!(buf.starts_with(b"<134>1 "));
        assert!(buf[ends[0]..].starts_with(b"<134>1 "));
    }
}
