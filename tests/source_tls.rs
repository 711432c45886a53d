//! Sources over TLS (issue 19): every registered vendor reads its emulator behind a TLS proxy
//! with a private CA that requires a client certificate, given `ca_file`, `client_cert` and
//! `client_key` (or `insecure_skip_verify`), and fails without them.

mod common;
#[allow(dead_code)]
#[path = "http_receiver/tls.rs"]
mod tls;

use std::path::Path;
use std::time::Duration;

use auditship::config::Config;
use auditship::sources::{self, Http, PageRequest, SourceError, VENDORS};
use auditship::timefmt::{floor_to, NANOS_PER_SEC};
use auditship_sim::Vendor;
use common::*;

/// Terminates TLS (with `pki`'s server certificate, client certificate required) in front of
/// `upstream`; returns the proxy's https URL.
async fn tls_proxy(pki: &tls::Pki, upstream: std::net::SocketAddr) -> String {
    let acceptor = pki.acceptor();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    format!("https://127.0.0.1:{}", addr.port())
}

fn config(dir: &Path, kind: &str, url: &str, keys: &str, tls: &str) -> Result<Config, String> {
    let text = format!(
        "[agent]\nstate_path = \"state.db\"\n\
         [[sources]]\nname = \"s\"\nkind = \"{kind}\"\nurl = \"{url}\"\n{keys}{tls}\n\
         [[sinks]]\nname = \"out\"\nkind = \"stdout\"\n"
    );
    Config::parse(&text, &dir.join("auditship.toml")).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vendor_reads_its_emulator_behind_a_private_ca_with_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tls::Pki::new();
    pki.write(dir.path());
    let emulated: Vec<Vendor> = VENDORS
        .iter()
        .filter_map(|v| Vendor::parse(v.kind()))
        .collect();
    let cfg = backfill(&emulated, 30, 1, 5);
    let sim = sim(cfg.clone()).await;
    let url = tls_proxy(&pki, sim.addr).await;
    let http = Http::new(Duration::from_secs(10)).unwrap();
    let client = "client_cert = \"client.pem\"\nclient_key = \"client.key\"\n";
    let cases = [
        (
            "private CA and client certificate",
            format!("ca_file = \"ca.pem\"\n{client}"),
            true,
        ),
        (
            "not verified",
            format!("insecure_skip_verify = true\n{client}"),
            true,
        ),
        ("the system's roots only", client.to_string(), false),
        (
            "no client certificate",
            "ca_file = \"ca.pem\"\n".to_string(),
            false,
        ),
    ];
    for v in VENDORS {
        let emulator = Vendor::parse(v.kind()).unwrap();
        let keys = emulator.source_keys(&cfg);
        let truth = truth(&sim, &cfg, emulator);
        for (what, tls, works) in &cases {
            let c = config(dir.path(), v.kind(), &url, &keys, tls)
                .unwrap_or_else(|e| panic!("{} / {what}: {e}", v.kind()));
            let source = sources::build(&c.sources[0], http.clone());
            let unit = source.traits().time_unit.max(1);
            let req = PageRequest {
                start: floor_to(cfg.start.as_nanosecond() as i64 - NANOS_PER_SEC, unit),
                end: floor_to(cfg.end.as_nanosecond() as i64 + 2 * NANOS_PER_SEC, unit),
                inclusive_end: false,
                offset: 0,
                page: 0,
                limit: 1000,
                max_events: None,
            };
            match (source.fetch(&req).await, works) {
                (Ok(page), true) => {
                    assert_eq!(page.events.len(), truth.len(), "{} / {what}", v.kind())
                }
                (Err(e), false) => assert!(
                    matches!(e, SourceError::Transport(_)),
                    "{} / {what}: {e}",
                    v.kind()
                ),
                (Ok(_), false) => {
                    panic!("{} / {what}: read without the right TLS settings", v.kind())
                }
                (Err(e), true) => panic!("{} / {what}: {e}", v.kind()),
            }
        }
    }
    // The binary: `check --connect` authenticates over TLS, and warns of a certificate it
    // does not verify.
    let emulator = Vendor::parse(VENDORS[0].kind()).unwrap();
    for (tls, warned) in [
        (format!("ca_file = \"ca.pem\"\n{client}"), false),
        (format!("insecure_skip_verify = true\n{client}"), true),
    ] {
        let text = format!(
            "[agent]\nstate_path = \"state.db\"\n\
             [[sources]]\nname = \"s\"\nkind = \"{}\"\nurl = \"{url}\"\n{}{tls}\n\
             [[sinks]]\nname = \"out\"\nkind = \"stdout\"\n",
            VENDORS[0].kind(),
            emulator.source_keys(&cfg)
        );
        let path = dir.path().join("auditship.toml");
        std::fs::write(&path, text).unwrap();
        let out = tokio::task::spawn_blocking(move || {
            run(
                &["check", "--connect", "--config", path.to_str().unwrap()],
                &[],
            )
        })
        .await
        .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(stdout.contains("source s: ok"), "{stdout}");
        assert_eq!(
            stderr.contains(
                "insecure_skip_verify = true: the vendor's TLS certificate is NOT verified"
            ),
            warned,
            "{stderr}"
        );
    }
    sim.shutdown().await;
}

#[test]
fn tls_options_of_a_source_are_checked_like_the_http_sinks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk.pem"), "not a certificate").unwrap();
    let e = config(
        dir.path(),
        "wasabi_air",
        "http://127.0.0.1:9",
        "api_key = \"k\"\n",
        "ca_file = \"junk.pem\"\ninsecure_skip_verify = true\n",
    )
    .unwrap_err();
    assert!(
        e.contains("sources[0].ca_file: only used with an https:// url"),
        "{e}"
    );
    assert!(
        e.contains("sources[0].insecure_skip_verify: only used with an https:// url"),
        "{e}"
    );
    let e = config(
        dir.path(),
        "domo",
        "https://127.0.0.1:9",
        "client_id = \"i\"\nclient_secret = \"s\"\n",
        "ca_file = \"junk.pem\"\nclient_cert = \"nope.pem\"\n",
    )
    .unwrap_err();
    assert!(
        e.contains("sources[0].ca_file:") && e.contains("holds no PEM certificate"),
        "{e}"
    );
    assert!(e.contains("sources[0].client_cert: cannot read"), "{e}");
    assert!(
        e.contains("sources[0].client_key: missing: client_cert needs client_key"),
        "{e}"
    );
}
