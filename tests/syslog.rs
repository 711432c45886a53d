//! The syslog sink against a real rsyslog (Debian's `rsyslog` and `rsyslog-gnutls`), started
//! here as a child process on a free loopback port with a config written by the test: imtcp
//! (plain and with the gtls stream driver) or imudp, and omfile writing the fields rsyslog
//! parsed out of each RFC 5424 message, so what is compared is what a receiver understood.
//!
//! rsyslog missing fails these tests with how to install it: never a silent pass.

mod common;
mod http_receiver;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use auditship_sim::Vendor;
use serde_json::Value;

/// rsyslog's main queue is direct: a message is in the output file before the next is read,
/// so stopping it loses only what the kernel holds unread.
const TEMPLATE: &str = r#"template(name="fields" type="string" string="%syslogfacility%,%syslogseverity%,%hostname%,%app-name%,%procid%,%msgid%,%protocol-version% %msg%\n")"#;

/// A running rsyslogd, killed when dropped.
struct Rsyslog {
    child: Option<Child>,
    dir: PathBuf,
    conf: PathBuf,
    port: u16,
    transport: &'static str,
}

/// One message as rsyslog parsed it.
#[derive(Debug, Clone)]
struct Received {
    facility: u8,
    severity: u8,
    hostname: String,
    app_name: String,
    msgid: String,
    version: String,
    msg: String,
}

/// A loopback port nobody listens on: UDP, or TCP ([`common::free_port`]).
fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        common::free_port()
    }
}

impl Rsyslog {
    /// Writes the config and starts rsyslogd; fails the test, saying what to install, when
    /// rsyslog is not installed.
    fn start(dir: &Path, transport: &'static str) -> Rsyslog {
        if let Err(e) = Command::new("rsyslogd").arg("-v").output() {
            panic!(
                "cannot run rsyslogd ({e}): NOT TESTED: install it (`bash tests/install-deps.sh`, \
                 or apt-get install rsyslog rsyslog-gnutls), or leave these tests out on purpose \
                 with `cargo test --test syslog -- --skip NAME`"
            );
        }
        let dir = dir.join("rsyslog");
        std::fs::create_dir_all(dir.join("work")).unwrap();
        let port = free_port(transport == "udp");
        let d = dir.display();
        let input = match transport {
            "tcp" => format!(
                "module(load=\"imtcp\")\ninput(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"in\")\n"
            ),
            "tls" | "mtls" => {
                let pki = http_receiver::tls::Pki::new();
                pki.write(&dir);
                std::fs::write(dir.join("server.pem"), &pki.server_cert_pem).unwrap();
                std::fs::write(dir.join("server.key"), &pki.server_key_pem).unwrap();
                // mtls: the client must show a certificate signed by the CA.
                let auth = if transport == "mtls" {
                    "x509/certvalid"
                } else {
                    "anon"
                };
                format!(
                    "global(defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=\"{d}/ca.pem\" \
                     defaultNetstreamDriverCertFile=\"{d}/server.pem\" defaultNetstreamDriverKeyFile=\"{d}/server.key\")\n\
                     module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"{auth}\")\n\
                     input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"in\")\n"
                )
            }
            "udp" => format!(
                "module(load=\"imudp\")\ninput(type=\"imudp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"in\" rcvBufSize=\"16m\")\n"
            ),
            _ => unreachable!(),
        };
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{d}/work\" maxMessageSize=\"1m\")\n\
                 main_queue(queue.type=\"Direct\")\n{input}{TEMPLATE}\n\
                 ruleset(name=\"in\") {{ action(type=\"omfile\" file=\"{d}/received.log\" template=\"fields\") }}\n"
            ),
        )
        .unwrap();
        let mut r = Rsyslog {
            child: None,
            dir,
            conf,
            port,
            transport,
        };
        r.spawn();
        r
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("rsyslogd.stderr")).unwrap())
            .spawn()
            .expect("starting rsyslogd");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until rsyslog listens (TCP) or has written a probe datagram (UDP).
    fn wait_ready(&mut self) {
        let started = Instant::now();
        let probe = format!("<14>1 - probe probe - probe - ready {}", self.port);
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "rsyslogd exited ({st}): {}",
                    std::fs::read_to_string(self.dir.join("rsyslogd.stderr")).unwrap_or_default()
                );
            }
            let ready = if self.transport == "udp" {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let _ = s.send_to(probe.as_bytes(), self.address());
                std::thread::sleep(Duration::from_millis(50));
                self.received_all().iter().any(|r| r.app_name == "probe")
            } else {
                TcpStream::connect(self.address()).is_ok()
            };
            if ready {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "rsyslogd not ready on {}",
                self.address()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops rsyslogd (SIGTERM, as a service restart does) and waits for it.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let started = Instant::now();
            while c.try_wait().unwrap().is_none() {
                if started.elapsed() > Duration::from_secs(10) {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Every message written so far, probes included.
    fn received_all(&self) -> Vec<Received> {
        let text = std::fs::read_to_string(self.dir.join("received.log")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let (head, msg) = l.split_once(' ').unwrap_or((l, ""));
                let f: Vec<&str> = head.split(',').collect();
                assert_eq!(f.len(), 7, "{l}");
                Received {
                    facility: f[0].parse().unwrap(),
                    severity: f[1].parse().unwrap(),
                    hostname: f[2].into(),
                    app_name: f[3].into(),
                    msgid: f[5].into(),
                    version: f[6].into(),
                    msg: msg.trim_start().into(),
                }
            })
            .collect()
    }

    /// The messages the agent sent.
    fn received(&self) -> Vec<Received> {
        self.received_all()
            .into_iter()
            .filter(|r| r.app_name != "probe")
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn add_syslog_sink(s: &common::Setup, keys: &str) {
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text.push_str(&format!(
        "\n[[sinks]]\nname = \"syslog\"\nkind = \"syslog\"\nhostname = \"agent-test\"\n{keys}\n"
    ));
    std::fs::write(&s.config, text).unwrap();
}

/// The file sink's events (exactly once: checked against the emulator's truth), by id.
fn file_events(
    sim: &auditship_sim::SimHandle,
    cfg: &auditship_sim::SimConfig,
    s: &common::Setup,
) -> (Vec<Value>, HashMap<String, Value>) {
    let lines = common::read_lines(&s.out);
    for v in Vendor::ALL {
        common::assert_exactly(&lines, &common::name(v), &common::truth(sim, cfg, v));
    }
    let by_id = lines
        .iter()
        .map(|e| (e["id"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    (lines, by_id)
}

/// Asserts the header fields rsyslog parsed: version 1, local0, our hostname, app-name and
/// MSGID = the event's kind; a delete is a notice, a plain create informational.
fn check_header(r: &Received, e: &Value) {
    assert_eq!(r.version, "1", "{r:?}");
    assert_eq!(r.facility, 16, "{r:?}");
    assert_eq!(r.hostname, "agent-test", "{r:?}");
    assert_eq!(r.app_name, "auditship", "{r:?}");
    assert_eq!(r.msgid, e["kind"].as_str().unwrap(), "{r:?}");
    let action = e["action"].as_str().unwrap_or("").to_lowercase();
    if action.starts_with("delete") {
        assert_eq!(r.severity, 5, "{action}: {r:?}");
    } else if action.starts_with("create") {
        assert_eq!(r.severity, 6, "{action}: {r:?}");
    }
}

/// Compares native messages received by rsyslog with the file sink's lines: the same events,
/// each once, byte for byte.
fn assert_native_exactly_once(rs: &Rsyslog, lines: &[Value], by_id: &HashMap<String, Value>) {
    let got = rs.received();
    let mut seen = HashSet::new();
    for r in &got {
        let v: Value = serde_json::from_str(&r.msg).unwrap_or_else(|e| panic!("{e}: {r:?}"));
        let id = v["id"].as_str().unwrap().to_string();
        let want = by_id.get(&id).unwrap_or_else(|| panic!("unknown id {id}"));
        assert_eq!(&v, want, "message differs from the file sink's line");
        check_header(r, want);
        assert!(seen.insert(id.clone()), "{id} received twice");
    }
    assert_eq!(
        got.len(),
        lines.len(),
        "rsyslog received {} of {} events",
        got.len(),
        lines.len()
    );
}

/// TCP, octet-counted: every event of a `run --once` over the four emulators reaches rsyslog
/// exactly once, each message the file sink's native line, and `check --connect` reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_delivers_every_event_exactly_once() {
    let (sim, cfg, s) = common::four_vendors(250, 171, "page_size = 40\n").await;
    let rs = Rsyslog::start(s.dir.path(), "tcp");
    add_syslog_sink(
        &s,
        &format!("address = {:?}\ntransport = \"tcp\"", rs.address()),
    );
    let (code, out) = common::check_connect(&s);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("sink syslog: ok (TCP connection opened)"),
        "{out}"
    );
    assert!(rs.received().is_empty(), "check --connect sent something");

    common::once_ok(&s);
    let (lines, by_id) = file_events(&sim, &cfg, &s);
    assert!(lines.len() > 500, "{}", lines.len());
    assert_native_exactly_once(&rs, &lines, &by_id);
}

/// UDP: the same, one datagram per message, with the warning that UDP can lose events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_delivers_every_event_once_and_warns() {
    let (sim, cfg, s) = common::four_vendors(80, 172, "page_size = 20\n").await;
    let rs = Rsyslog::start(s.dir.path(), "udp");
    add_syslog_sink(
        &s,
        &format!("address = {:?}\ntransport = \"udp\"", rs.address()),
    );
    let (code, out) = common::check_connect(&s);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("sink syslog: ok (address resolved only"),
        "{out}"
    );

    let run = common::once_ok(&s);
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(log.contains("lost without notice"), "{log}");
    let (lines, by_id) = file_events(&sim, &cfg, &s);
    // Datagrams are written by rsyslog as they arrive: give the last ones a moment.
    let started = Instant::now();
    while rs.received().len() < lines.len() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_native_exactly_once(&rs, &lines, &by_id);
}

/// TLS (RFC 5425) with the test CA, `format = "cef"`: every event once, and each CEF line,
/// parsed back, carries the native event's fields under the documented keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cef_lines_parse_back_to_the_native_events() {
    let (sim, cfg, s) = common::four_vendors(150, 173, "page_size = 50\n").await;
    let rs = Rsyslog::start(s.dir.path(), "tls");
    let ca = rs.dir.join("ca.pem");
    add_syslog_sink(
        &s,
        &format!(
            "address = {:?}\ntransport = \"tls\"\nformat = \"cef\"\nca_file = {:?}",
            format!("localhost:{}", rs.port),
            ca.to_str().unwrap()
        ),
    );
    let (code, out) = common::check_connect(&s);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("sink syslog: ok (TLS handshake done)"),
        "{out}"
    );

    common::once_ok(&s);
    let (lines, by_id) = file_events(&sim, &cfg, &s);
    let got = rs.received();
    let mut seen = HashSet::new();
    for r in &got {
        let (header, ext) = parse_cef(&r.msg);
        let id = ext["externalId"].clone();
        let e = by_id.get(&id).unwrap_or_else(|| panic!("unknown id {id}"));
        check_header(r, e);
        compare_cef(&header, &ext, e);
        assert!(seen.insert(id.clone()), "{id} received twice");
    }
    assert_eq!(got.len(), lines.len());
}

/// Mutual TLS: rsyslog requires a client certificate signed by its CA (`x509/certvalid`), the
/// sink presents `client_cert` + `client_key`, and every event arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_delivers_every_event_exactly_once() {
    let (sim, cfg, s) = common::four_vendors(60, 176, "page_size = 30\n").await;
    let rs = Rsyslog::start(s.dir.path(), "mtls");
    let file = |f: &str| rs.dir.join(f).to_str().unwrap().to_string();
    add_syslog_sink(
        &s,
        &format!(
            "address = \"127.0.0.1:{}\"\ntransport = \"tls\"\nca_file = {:?}\nclient_cert = {:?}\nclient_key = {:?}",
            rs.port,
            file("ca.pem"),
            file("client.pem"),
            file("client.key")
        ),
    );
    common::once_ok(&s);
    let (lines, by_id) = file_events(&sim, &cfg, &s);
    assert_native_exactly_once(&rs, &lines, &by_id);
}

/// The same TLS receiver refuses an agent that does not trust its CA: the run fails (exit 1),
/// nothing reaches rsyslog, and `check --connect` says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_the_ca_fails_and_commits_nothing() {
    let (_sim, _cfg, s) = common::four_vendors(20, 174, "").await;
    let rs = Rsyslog::start(s.dir.path(), "tls");
    add_syslog_sink(
        &s,
        &format!("address = \"localhost:{}\"\ntransport = \"tls\"", rs.port),
    );
    let (code, out) = common::check_connect(&s);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("sink syslog: cannot reach") && out.contains("TLS handshake"),
        "{out}"
    );
    let run = common::run(
        &["run", "--once", "--config", s.config.to_str().unwrap()],
        &[],
    );
    let log = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{log}");
    assert!(log.contains("gave up after"), "{log}");
    assert!(rs.received().is_empty());
}

/// rsyslog is restarted (SIGTERM, then started again on the same port) while a live agent is
/// sending: every event is still received at least once. Duplicates are allowed and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rsyslog_restart_mid_run_loses_nothing() {
    let (sim, cfg, s) = common::four_vendors(1500, 175, "page_size = 25\n").await;
    let mut rs = Rsyslog::start(s.dir.path(), "tcp");
    add_syslog_sink(&s, &format!("address = {:?}", rs.address()));
    let total: usize = Vendor::ALL.iter().map(|v| sim.total_events(*v)).sum();
    let mut agent = common::spawn(&["run", "--config", s.config.to_str().unwrap()]);
    // Restart once part of the backfill has arrived.
    let started = Instant::now();
    while rs.received().len() < total / 4 {
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    rs.stop();
    let before = rs.received().len();
    std::thread::sleep(Duration::from_millis(700));
    rs.spawn();
    let started = Instant::now();
    loop {
        let ids: HashSet<String> = rs
            .received()
            .iter()
            .filter_map(|r| serde_json::from_str::<Value>(&r.msg).ok())
            .map(|v| v["id"].as_str().unwrap().to_string())
            .collect();
        if ids.len() >= total && common::lines_so_far(&s.out) >= total {
            break;
        }
        if started.elapsed() > Duration::from_secs(180) {
            let _ = agent.kill();
            panic!(
                "after the restart only {} of {total} distinct events arrived",
                ids.len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    common::signal(&agent, "TERM");
    let st = common::wait_for(&mut agent, Duration::from_secs(30));
    assert!(st.success(), "{st:?}");
    let (lines, by_id) = file_events(&sim, &cfg, &s);
    let got = rs.received();
    let mut count: HashMap<String, usize> = HashMap::new();
    for r in &got {
        let v: Value = serde_json::from_str(&r.msg).unwrap();
        let id = v["id"].as_str().unwrap().to_string();
        assert_eq!(
            Some(&v),
            by_id.get(&id),
            "message differs from the file sink's line"
        );
        *count.entry(id).or_default() += 1;
    }
    let missing: Vec<_> = by_id
        .keys()
        .filter(|id| !count.contains_key(*id))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "lost across the restart, e.g. {missing:?}"
    );
    let doubled = count.values().filter(|n| **n > 1).count();
    eprintln!(
        "FIGURES rsyslog restart: {} events, {} messages received ({before} before the stop), {doubled} events received more than once",
        lines.len(),
        got.len()
    );
}

/// Config errors exit 2 and name the key: a missing address, a bad transport, a bad facility,
/// TLS options on a TCP sink, syslog keys on another kind, CEF in a JSON HTTP body.
#[test]
fn config_errors_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let syslog = |keys: &str| format!("kind = \"syslog\"\n{keys}");
    for (sink, want) in [
        (syslog("transport = \"tcp\""), "sinks[0].address: missing"),
        (
            syslog("address = \"h:514\"\ntransport = \"relp\""),
            "sinks[0].transport: \"relp\" is not a syslog transport",
        ),
        (
            syslog("address = \"h:514\"\nfacility = \"local9\""),
            "sinks[0].facility: \"local9\" is not a syslog facility",
        ),
        (
            syslog("address = \"h\""),
            "sinks[0].address: \"h\" is not host:port",
        ),
        (
            syslog("address = \"h:514\"\nca_file = \"ca.pem\""),
            "sinks[0].ca_file: only used with transport = \"tls\"",
        ),
        (
            syslog("address = \"h:514\"\napp_name = \"a b\""),
            "sinks[0].app_name: must be 1 to 48",
        ),
        (
            "kind = \"stdout\"\naddress = \"h:1\"".into(),
            "sinks[0].address: not an option of kind stdout",
        ),
        (
            "kind = \"http\"\nurl = \"http://h/\"\nencoding = \"splunk_hec\"\nformat = \"cef\""
                .into(),
            "sinks[0].format: cef writes text lines, which encoding splunk_hec (JSON) cannot carry",
        ),
    ] {
        std::fs::write(
            &cfg,
            format!(
                "[agent]\nstate_path = \"s.db\"\n[[sources]]\nname = \"a\"\nkind = \"wasabi_air\"\n\
                 url = \"http://127.0.0.1:9\"\napi_key = \"k\"\n[[sinks]]\nname = \"x\"\n{sink}\n"
            ),
        )
        .unwrap();
        let out = common::run(&["check", "--config", cfg.to_str().unwrap()], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{sink}: {err}");
        assert!(err.contains(want), "{sink}: want {want:?} in\n{err}");
        assert!(
            !dir.path().join("s.db").exists(),
            "a config error wrote state"
        );
    }
}

/// A small CEF parser: the seven header fields (unescaped) and the extension's key/value pairs.
fn parse_cef(line: &str) -> (Vec<String>, BTreeMap<String, String>) {
    let rest = line
        .strip_prefix("CEF:")
        .unwrap_or_else(|| panic!("not CEF: {line}"));
    let mut header = Vec::new();
    let mut cur = String::new();
    let mut chars = rest.char_indices();
    let mut ext_at = rest.len();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                let (_, n) = chars.next().unwrap();
                assert!(n == '\\' || n == '|', "bad header escape \\{n} in {line}");
                cur.push(n);
            }
            '|' => {
                header.push(std::mem::take(&mut cur));
                if header.len() == 7 {
                    ext_at = i + 1;
                    break;
                }
            }
            c => cur.push(c),
        }
    }
    assert_eq!(header.len(), 7, "{line}");
    let ext = &rest[ext_at..];
    let b = ext.as_bytes();
    let mut eqs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'=' => {
                eqs.push(i);
                i += 1
            }
            _ => i += 1,
        }
    }
    let starts: Vec<usize> = eqs
        .iter()
        .enumerate()
        .map(|(n, &eq)| {
            let lo = if n == 0 { 0 } else { eqs[n - 1] + 1 };
            ext[lo..eq].rfind(' ').map_or(lo, |p| lo + p + 1)
        })
        .collect();
    let mut map = BTreeMap::new();
    for n in 0..eqs.len() {
        let end = if n + 1 < eqs.len() {
            starts[n + 1] - 1
        } else {
            ext.len()
        };
        let key = &ext[starts[n]..eqs[n]];
        let mut v = String::new();
        let mut cs = ext[eqs[n] + 1..end].chars();
        while let Some(c) = cs.next() {
            if c == '\\' {
                v.push(match cs.next().unwrap() {
                    'n' => '\n',
                    'r' => '\r',
                    c @ ('\\' | '=') => c,
                    c => panic!("bad extension escape \\{c} in {line}"),
                });
            } else {
                v.push(c);
            }
        }
        assert!(
            map.insert(key.to_string(), v).is_none(),
            "{key} twice in {line}"
        );
    }
    (header, map)
}

/// Field-by-field comparison of a parsed CEF event with the native event.
fn compare_cef(header: &[String], ext: &BTreeMap<String, String>, e: &Value) {
    let kind = e["kind"].as_str().unwrap();
    let (vendor, product) = match kind {
        "domino_audit" => ("Domino Data Lab", "Domino Audit Trail"),
        "domino_datasource" => ("Domino Data Lab", "Domino Data Source Audit"),
        "domo" => ("Domo", "Domo Activity Log"),
        "wasabi_air" => ("Wasabi", "Wasabi AiR"),
        k => panic!("kind {k}"),
    };
    let action = e["action"].as_str().unwrap_or("unknown");
    assert_eq!(header[0], "0");
    assert_eq!((header[1].as_str(), header[2].as_str()), (vendor, product));
    assert_eq!(header[4], action);
    assert_eq!(header[5], action);
    assert!(["3", "5", "7"].contains(&header[6].as_str()), "{header:?}");
    let ms = e["time"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond();
    let mut want: BTreeMap<String, String> = BTreeMap::new();
    want.insert("rt".into(), ms.to_string());
    let s = |v: &Value| v.as_str().map(str::to_string);
    let mut put = |k: &str, v: Option<String>, label: Option<&str>| {
        if let Some(v) = v {
            if let Some(l) = label {
                want.insert(format!("{k}Label"), l.into());
            }
            want.insert(k.into(), v);
        }
    };
    put("externalId", s(&e["id"]), None);
    put("act", s(&e["action"]), None);
    put("cat", s(&e["kind"]), None);
    put("cs6", s(&e["source"]), Some("source"));
    put("flexString1", s(&e["actor"]["type"]), Some("actorType"));
    put("suid", s(&e["actor"]["id"]), None);
    put("suser", s(&e["actor"]["name"]), None);
    put("cs1", s(&e["target"]["type"]), Some("targetType"));
    put("cs2", s(&e["target"]["id"]), Some("targetId"));
    put("cs3", s(&e["target"]["name"]), Some("targetName"));
    put("flexString2", s(&e["project"]["type"]), Some("projectType"));
    put("cs4", s(&e["project"]["id"]), Some("projectId"));
    put("cs5", s(&e["project"]["name"]), Some("projectName"));
    put("requestClientApplication", s(&e["user_agent"]), None);
    if let Some(ip) = s(&e["src_ip"]) {
        let key = if ip.parse::<std::net::IpAddr>().is_ok() {
            "src"
        } else {
            "shost"
        };
        put(key, Some(ip), None);
    }
    let mut got = ext.clone();
    let raw: Value = serde_json::from_str(&got.remove("rawEvent").expect("rawEvent")).unwrap();
    assert_eq!(raw, e["raw"], "rawEvent");
    assert_eq!(got, want, "CEF extension vs native event {e}");
}
