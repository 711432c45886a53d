//! The `sentinel` sink end to end: the real binary reads the four emulated vendors and delivers
//! to the Azure emulator (`tests/azure`), which follows Entra ID's token endpoint and the Logs
//! Ingestion API as documented, with scripted faults.

mod azure;
mod common;

use std::collections::HashMap;
use std::time::Duration;

use auditship_sim::Vendor;
use azure::{Azure, Canned};
use common::*;
use serde_json::Value;

/// Adds a sentinel sink `siem` at `az` (with `extra` keys) to `s`'s config.
fn with_sentinel(s: &Setup, az: &Azure, extra: &str) {
    with_sentinel_keys(s, &az.sink_keys(), extra)
}

fn with_sentinel_keys(s: &Setup, keys: &str, extra: &str) {
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text.push_str(&format!(
        "\n[[sinks]]\nname = \"siem\"\nkind = \"sentinel\"\n{keys}{extra}\n"
    ));
    std::fs::write(&s.config, text).unwrap();
}

/// Every record's `TimeGenerated` is its event's `time`.
fn assert_time_generated(records: &[Value]) {
    for r in records {
        let tg: jiff::Timestamp = r["TimeGenerated"].as_str().unwrap().parse().unwrap();
        let t: jiff::Timestamp = r["time"].as_str().unwrap().parse().unwrap();
        assert_eq!(tg, t, "{r}");
        assert!(r["TimeGenerated"].as_str().unwrap().ends_with('Z'), "{r}");
    }
}

/// Every event of the four vendors arrives once, with its time as `TimeGenerated`, through a
/// 429 with `Retry-After`, tokens that expire every two seconds, and a token the API stops
/// taking (401: renewed once, then delivered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_of_the_four_vendors_arrives_once_with_its_time() {
    let cfg = backfill(&Vendor::ALL, 600, 2, 301);
    let sim = sim(cfg.clone()).await;
    let az = Azure::start().await;
    {
        let mut f = az.faults();
        f.expires_in = 2;
        f.canned.push_back(Canned {
            status: 429,
            retry_after: Some("2".into()),
        });
        f.canned.push_back(Canned {
            status: 401,
            retry_after: None,
        });
        for _ in 0..3 {
            f.canned.push_back(Canned {
                status: 503,
                retry_after: Some("1".into()),
            });
        }
    }
    let s = setup("", &all_sources(&sim, &cfg));
    with_sentinel(&s, &az, "");
    let out = run_once(&s.config).await;
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains(azure::CLIENT_SECRET), "the secret was logged");
    assert!(!err.contains("eyJ0eXAi"), "a token was logged");
    let d = az.data();
    for v in &Vendor::ALL {
        assert_exactly(&d.records, &name(*v), &truth(&sim, &cfg, *v));
    }
    assert_time_generated(&d.records);
    // The 429's Retry-After was waited out.
    let first = d.requests.iter().position(|r| r.status == 429).unwrap();
    let waited = d.requests[first + 1].at - d.requests[first].at;
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
    // The run took more than a token's life: renewed before expiry, and once on the 401.
    assert!(d.tokens_granted >= 3, "{} tokens", d.tokens_granted);
    assert_eq!(d.expired_seen, 0, "an expired token was sent");
    assert!(d.requests.iter().all(|r| r.gzip));
    eprintln!(
        "FIGURES sentinel four vendors: {} records, {} requests ({} refused: 429, 401, 3 × 503), {} tokens (expires_in 2 s), 429 waited {waited:?}, lost 0, doubled 0",
        d.records.len(),
        d.requests.len(),
        d.requests.iter().filter(|r| r.status != 204).count(),
        d.tokens_granted
    );
}

/// Entra ID's token endpoint throttling (429, then 503, each with `Retry-After`): the sink
/// asks again no sooner than told, then gets its token and delivers every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_endpoint_s_retry_after_is_honoured() {
    let cfg = backfill(&[Vendor::Domo], 200, 1, 307);
    let sim = sim(cfg.clone()).await;
    let az = Azure::start().await;
    az.faults()
        .token_canned
        .extend([Canned::retry_after(429, "2"), Canned::retry_after(503, "1")]);
    let s = setup("", &all_sources(&sim, &cfg));
    with_sentinel(&s, &az, "");
    let out = run_once(&s.config).await;
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("AADSTS90033"),
        "the throttling was not said: {err}"
    );
    let d = az.data();
    let statuses: Vec<u16> = d.token_requests.iter().map(|(_, st)| *st).collect();
    assert_eq!(statuses[..3], [429, 503, 200], "{statuses:?}");
    let waited = |i: usize| d.token_requests[i + 1].0 - d.token_requests[i].0;
    let (after_429, after_503) = (waited(0), waited(1));
    assert!(
        after_429 >= Duration::from_millis(1950),
        "asked again {after_429:?} after a 429 with Retry-After: 2"
    );
    assert!(
        after_503 >= Duration::from_millis(950),
        "asked again {after_503:?} after a 503 with Retry-After: 1"
    );
    assert_exactly(&d.records, "domo", &truth(&sim, &cfg, Vendor::Domo));
    eprintln!(
        "FIGURES sentinel token throttled: 429 Retry-After 2 waited {after_429:?}, 503 Retry-After 1 waited {after_503:?}, {} records, lost 0, doubled 0",
        d.records.len()
    );
}

/// A batch larger than 1 MB is cut into requests of at most 1 MB before it is sent; a service
/// that takes less answers 413, and the request is split in halves until it fits. Nothing is
/// lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_batch_is_cut_and_a_413_splits_it() {
    let cfg = backfill(&[Vendor::WasabiAir], 3000, 1, 302);
    let sim = sim(cfg.clone()).await;
    let az = Azure::start().await;
    let s = setup("", &all_sources(&sim, &cfg));
    with_sentinel(&s, &az, "gzip = false\n");
    let out = run_once(&s.config).await;
    assert!(out.status.success(), "{}", stderr(&out));
    {
        let d = az.data();
        assert!(d.requests.iter().all(|r| r.status == 204));
        assert!(d.requests.iter().all(|r| r.bytes <= 1_000_000));
        assert!(
            d.requests.iter().any(|r| r.bytes > 600_000),
            "no request near the limit: {:?}",
            d.requests.iter().map(|r| r.bytes).collect::<Vec<_>>()
        );
        assert_exactly(
            &d.records,
            "wasabi-air",
            &truth(&sim, &cfg, Vendor::WasabiAir),
        );
        eprintln!(
            "FIGURES sentinel pre-cut: {} records in {} requests, largest {} bytes, no 413",
            d.records.len(),
            d.requests.len(),
            d.requests.iter().map(|r| r.bytes).max().unwrap()
        );
    }

    // A second world whose service takes at most 150 kB a request.
    let az = Azure::start().await;
    az.faults().limit = 150_000;
    let s = setup("", &all_sources(&sim, &cfg));
    with_sentinel(&s, &az, "");
    let out = run_once(&s.config).await;
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("413"), "{err}");
    let d = az.data();
    assert!(d.requests.iter().any(|r| r.status == 413));
    assert!(d
        .requests
        .iter()
        .filter(|r| r.status == 204)
        .all(|r| r.bytes <= 150_000));
    assert_exactly(
        &d.records,
        "wasabi-air",
        &truth(&sim, &cfg, Vendor::WasabiAir),
    );
    assert_time_generated(&d.records);
    eprintln!(
        "FIGURES sentinel 413 split: limit 150 kB, {} requests, {} answered 413, lost 0, doubled 0",
        d.requests.len(),
        d.requests.iter().filter(|r| r.status == 413).count()
    );
}

/// A revoked client secret: the run says "token refused" with Entra's description (never the
/// secret), exits 1 and keeps the sink's queue; once the credential works again, the next run
/// delivers everything, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_credential_keeps_the_queue_until_it_works_again() {
    let cfg = backfill(&[Vendor::Domo], 500, 1, 303);
    let sim = sim(cfg.clone()).await;
    let az = Azure::start().await;
    az.faults().revoked = true;
    let s = setup("", &all_sources(&sim, &cfg));
    with_sentinel(&s, &az, "");
    let out = run_once(&s.config).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("token refused"), "{err}");
    assert!(err.contains("AADSTS7000215"), "{err}");
    assert!(err.contains("summary: sink siem: NOT drained"), "{err}");
    assert!(!err.contains(azure::CLIENT_SECRET), "the secret was logged");
    assert!(az.data().records.is_empty());
    let row = sink_queue_row(&s.config, "siem");
    assert_ne!(row[1], "0", "the queue was not kept: {row:?}");
    eprintln!("FIGURES sentinel revoked: {} events kept queued", row[1]);

    az.faults().revoked = false;
    let out = run_once(&s.config).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_exactly(&az.data().records, "domo", &truth(&sim, &cfg, Vendor::Domo));
    assert_eq!(sink_queue_row(&s.config, "siem")[1], "0");
}

/// `check --connect` gets a token and posts an empty batch: reachable; a missing role, an
/// unknown stream, a refused secret and nothing listening are each said as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_says_which_step_failed() {
    let cfg = backfill(&[Vendor::Domo], 10, 1, 304);
    let sim = sim(cfg.clone()).await;
    let az = Azure::start().await;
    let check = |keys: String| {
        let s = setup("", &all_sources(&sim, &cfg));
        with_sentinel_keys(&s, &keys, "");
        let out = run(
            &["check", "--connect", "--config", s.config.to_str().unwrap()],
            &[],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(!text.contains(azure::CLIENT_SECRET), "{text}");
        text
    };
    let text = check(az.sink_keys());
    assert!(
        text.contains("sink siem: reachable (token granted"),
        "{text}"
    );
    assert_eq!(az.data().records.len(), 0);
    assert_eq!(az.data().requests.len(), 1);
    // Were the service to refuse an empty array (undocumented), the steps before it passed.
    az.faults().refuse_empty = true;
    let said = check(az.sink_keys());
    for want in [
        "sink siem: reachable (token granted;",
        "refused only the empty probe batch: HTTP 400 InvalidPayload",
    ] {
        assert!(said.contains(want), "no {want:?} in {said}");
    }
    az.faults().refuse_empty = false;
    let text = check(az.sink_keys().replace(azure::STREAM, "Custom-Other_CL"));
    assert!(
        text.contains("sink siem: not found (HTTP 404 InvalidStream"),
        "{text}"
    );
    let text = check(az.sink_keys().replace(
        &format!("endpoint = \"{}\"", az.base()),
        &format!("endpoint = \"http://127.0.0.1:{}\"", free_port()),
    ));
    assert!(text.contains("sink siem: unreachable ("), "{text}");
    az.faults().no_role = true;
    let text = check(az.sink_keys());
    assert!(
        text.contains("sink siem: auth refused (HTTP 403")
            && text.contains("Monitoring Metrics Publisher"),
        "{text}"
    );
    az.faults().no_role = false;
    // A workload identity: the federated token file's content as a jwt-bearer client assertion.
    az.faults().federated_token = Some("eyJhbGciOiJSUzI1NiJ9.federated.sig".into());
    let dir = tempfile::tempdir().unwrap();
    let fed = dir.path().join("azure-identity-token");
    std::fs::write(&fed, "eyJhbGciOiJSUzI1NiJ9.federated.sig\n").unwrap();
    // The emulator's keys with another credential instead of the client secret.
    let instead = |credential: &str, path: &std::path::Path| {
        az.sink_keys().replace(
            &format!("client_secret = \"{}\"", azure::CLIENT_SECRET),
            &format!("{credential} = {:?}", path.to_str().unwrap()),
        )
    };
    let federated = instead("federated_token_file", &fed);
    let text = check(federated.clone());
    assert!(
        text.contains("sink siem: reachable (token granted"),
        "{text}"
    );
    std::fs::write(&fed, "eyJhbGciOiJSUzI1NiJ9.other.sig\n").unwrap();
    let text = check(federated);
    assert!(
        text.contains("sink siem: token refused (HTTP 400): AADSTS70021"),
        "{text}"
    );
    // A client certificate: an RS256 assertion with its x5t, signed by its key.
    let (pem, registered) = azure::test_certificate();
    let with_cert = instead("client_certificate_file", &pem);
    let text = check(with_cert.clone());
    assert!(
        text.contains("sink siem: token refused (HTTP 401): AADSTS700027"),
        "an unregistered certificate: {text}"
    );
    az.faults().certificate = Some(registered);
    let text = check(with_cert);
    assert!(
        text.contains("sink siem: reachable (token granted"),
        "{text}"
    );
    az.faults().revoked = true;
    let text = check(az.sink_keys());
    assert!(
        text.contains("sink siem: token refused (HTTP 401): AADSTS7000215"),
        "{text}"
    );
}

/// The columns of `stream` in the DCR that `deploy/azure/auditship-dcr.json` creates.
fn dcr_columns(stream: &str) -> HashMap<String, String> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/azure/auditship-dcr.json");
    let tpl: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let dcr = tpl["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Microsoft.Insights/dataCollectionRules")
        .unwrap();
    dcr["properties"]["streamDeclarations"][stream]["columns"]
        .as_array()
        .unwrap_or_else(|| panic!("no stream {stream}"))
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["type"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Each format's records, from the four vendors, fit the stream that `deploy/azure` declares
/// for it (every field a column of a type that takes it; ECS's `@timestamp`, which is
/// `TimeGenerated` again and no valid column name, is left out), and carry the event's time
/// as `TimeGenerated`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_fits_the_dcr_in_deploy_azure() {
    let cfg = backfill(&Vendor::ALL, 200, 1, 305);
    let sim = sim(cfg.clone()).await;
    for (format, stream) in [
        ("native", "Custom-AuditShip_CL"),
        ("ocsf", "Custom-AuditShipOcsf_CL"),
        ("ecs", "Custom-AuditShipEcs_CL"),
    ] {
        let az = Azure::start().await;
        let s = setup("", &all_sources(&sim, &cfg));
        with_sentinel(&s, &az, &format!("format = \"{format}\"\n"));
        let out = run_once(&s.config).await;
        assert!(out.status.success(), "{}", stderr(&out));
        let columns = dcr_columns(stream);
        assert_eq!(columns["TimeGenerated"], "datetime");
        let d = az.data();
        let want: usize = Vendor::ALL
            .iter()
            .map(|v| truth(&sim, &cfg, *v).len())
            .sum();
        assert_eq!(d.records.len(), want, "{format}");
        for r in &d.records {
            for (k, v) in r.as_object().unwrap() {
                if format == "ecs" && k == "@timestamp" {
                    continue;
                }
                let ty = columns
                    .get(k)
                    .unwrap_or_else(|| panic!("{format}: field {k} is not a column of {stream}"));
                let fits = match v {
                    Value::String(_) => ty == "string" || ty == "datetime",
                    Value::Number(n) if n.is_i64() => ty == "long" || ty == "real",
                    Value::Number(_) => ty == "real",
                    Value::Bool(_) => ty == "boolean",
                    _ => ty == "dynamic",
                };
                assert!(fits, "{format}: {k} = {v} in a {ty} column");
            }
            let tg: jiff::Timestamp = r["TimeGenerated"].as_str().unwrap().parse().unwrap();
            let t: jiff::Timestamp = match format {
                "native" => r["time"].as_str().unwrap().parse().unwrap(),
                "ocsf" => jiff::Timestamp::from_millisecond(r["time"].as_i64().unwrap()).unwrap(),
                _ => r["@timestamp"].as_str().unwrap().parse().unwrap(),
            };
            assert_eq!(tg, t, "{format}: {r}");
        }
    }
}

/// The daemon with a revoked client secret: `/readyz` turns unready naming the sink and Entra's
/// refusal, nothing is dropped; once the credential works again the sink's retries deliver the
/// queue, each event once, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_credential_shows_in_readyz_and_heals_without_a_restart() {
    let cfg = backfill(&[Vendor::WasabiAir], 400, 1, 306);
    let sim = sim(cfg.clone()).await;
    let az = Azure::start().await;
    az.faults().revoked = true;
    let port = free_port();
    let s = setup(
        &format!("listen = \"127.0.0.1:{port}\"\nunready_after = \"2s\"\n"),
        &all_sources(&sim, &cfg),
    );
    with_sentinel(&s, &az, "");
    let child = spawn(&["run", "--config", s.config.to_str().unwrap()]);
    let base = format!("http://127.0.0.1:{port}");
    let (_, body) = until(
        &format!("{base}/readyz"),
        Duration::from_secs(30),
        // An earlier unready answer may name another of the sink's failures first.
        |st, b| {
            st == 503
                && b.contains("sink siem")
                && b.contains("token refused")
                && b.contains("AADSTS7000215")
        },
    )
    .await;
    assert!(!body.contains(azure::CLIENT_SECRET), "{body}");
    assert!(az.data().records.is_empty());
    az.faults().revoked = false;
    let want = truth(&sim, &cfg, Vendor::WasabiAir).len();
    wait_until("the queue delivered", Duration::from_secs(30), || {
        az.data().records.len() >= want
    })
    .await;
    signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains(azure::CLIENT_SECRET), "the secret was logged");
    let d = az.data();
    assert_exactly(
        &d.records,
        "wasabi-air",
        &truth(&sim, &cfg, Vendor::WasabiAir),
    );
    eprintln!(
        "FIGURES sentinel revoked daemon: /readyz 503 with the AADSTS code, {} records after the fix, {} tokens refused, lost 0, doubled 0",
        d.records.len(),
        d.tokens_refused
    );
}
