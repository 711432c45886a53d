//! The `secops` sink end to end: the real binary reads the four emulated vendors and delivers
//! to the Google SecOps emulator (`secops_receiver`): its token endpoint checks each JWT
//! assertion's RS256 signature and claims and gives tokens of a short life; its `logs:import`
//! checks the bearer, the request size and the body, throttles on a schedule and keeps every
//! log, which the tests decode and compare with the vendors' truth.
//!
//! The sink promises at-least-once (Google's `logs:import` takes no idempotency key, so a
//! request whose answer is lost is sent again). These runs lose no answers: every fault the
//! emulator scripts (429, 401, a refused key) is answered before a log is kept, so the tests
//! assert exactly once, which also proves that no retry, split or renewal sends a log twice.

mod common;
mod secops_receiver;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use auditship_sim::{SimConfig, SimHandle, Vendor};
use common::*;
use secops_receiver::{Emulator, INSTANCE, PROJECT, REGION};
use serde_json::Value;

/// A test dir with the service account's key file and a config reading every vendor of `sim`
/// into a `secops` sink at `emu` with `sink_extra` keys; `page_size` of the agent. Without
/// `key`, no `credentials_file`: the token comes from the metadata server.
fn config(
    dir: &Path,
    sim: &SimHandle,
    cfg: &SimConfig,
    emu: &Emulator,
    page_size: usize,
    sink_extra: &str,
    key: bool,
) -> PathBuf {
    std::fs::write(
        dir.join("key.json"),
        secops_receiver::key_json(&emu.token_uri()),
    )
    .unwrap();
    let credentials = if key {
        "credentials_file = \"key.json\"\n"
    } else {
        ""
    };
    let path = dir.join("auditship.toml");
    let text = format!(
        "[agent]\nstate_path = \"state.db\"\nlag = \"1s\"\noverlap = \"10s\"\npoll_interval = \"1s\"\n\
         retry_max_attempts = 20\nretry_initial = \"20ms\"\nretry_max_delay = \"200ms\"\npage_size = {page_size}\n\n\
         {sources}\n[[sinks]]\nname = \"secops\"\nkind = \"secops\"\nproject = {PROJECT:?}\n\
         region = {REGION:?}\ninstance = {INSTANCE:?}\n{credentials}\
         endpoint = {endpoint:?}\n{sink_extra}\n",
        sources = all_sources(sim, cfg),
        endpoint = emu.base(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

impl World<Emulator> {
    /// The common world with `events` of each of `vendors` over a day, and Google's emulator.
    async fn secops(vendors: &[Vendor], events: u64, seed: u64) -> World<Emulator> {
        let cfg = backfill(vendors, events, 1, seed);
        World::start(cfg, "", "")
            .await
            .with(Emulator::start().await)
    }

    /// [`config`] in the world's dir, with the key file.
    fn config(&self, page_size: usize, sink_extra: &str) -> PathBuf {
        self.config_as(page_size, sink_extra, true)
    }

    /// [`config`] in the world's dir; without `key`, no key file (workload identity).
    fn config_as(&self, page_size: usize, sink_extra: &str, key: bool) -> PathBuf {
        config(
            self.s.dir.path(),
            &self.sim,
            &self.cfg,
            &self.rx,
            page_size,
            sink_extra,
            key,
        )
    }
}

/// Asserts a run succeeded; its stderr.
fn succeeded(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    stderr
}

/// `args` and `--config CONFIG`, run off the async threads (the emulators serve on them).
async fn agent_run(args: &[&str], config: &Path) -> std::process::Output {
    agent_run_env(args, config, &[]).await
}

/// [`agent_run`] with `env` set.
async fn agent_run_env(args: &[&str], config: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.extend(["--config".to_string(), config.to_str().unwrap().to_string()]);
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run(&args, &env)
    })
    .await
    .unwrap()
}

/// What `check --connect` says, stdout and stderr.
async fn check(config: &Path) -> String {
    check_env(config, &[]).await
}

/// [`check`] with `env` set.
async fn check_env(config: &Path, env: &[(&str, &str)]) -> String {
    let out = agent_run_env(&["check", "--connect"], config, env).await;
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The records the emulator took, decoded from `data`, with each log's times.
fn delivered(emu: &Emulator) -> Vec<(Value, String, String)> {
    emu.logs()
        .into_iter()
        .map(|l| {
            let v: Value = serde_json::from_slice(&l.data).expect("data is a native record");
            (v, l.log_entry_time, l.collection_time)
        })
        .collect()
}

fn assert_every_vendor_exactly(sim: &SimHandle, cfg: &SimConfig, records: &[Value]) {
    for v in Vendor::ALL {
        assert_exactly(records, &name(v), &truth(sim, cfg, v));
    }
}

/// Every event of the four vendors arrives exactly once, its `logEntryTime` the event's time,
/// while tokens expire mid-run (renewed ahead, and once on a 401), batches are cut to the
/// request-size limit, and 429s are waited out for their `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_once_through_expiry_throttling_and_splits() {
    let w = World::secops(&Vendor::ALL, 60, 30).await;
    let (sim, cfg, emu) = (&w.sim, &w.cfg, &w.rx);
    let limit = 16 * 1024;
    *emu.shared.token_lifetime.lock().unwrap() = Duration::from_secs(2);
    emu.shared.max_request_bytes.store(limit, Ordering::Relaxed);
    emu.shared.throttle_every.store(7, Ordering::Relaxed);
    emu.shared.expire_tokens_at.store(4, Ordering::Relaxed);
    let config = w.config(1000, &format!("batch_max_bytes = {limit}"));
    let stderr = succeeded(&run_once(&config).await);

    let got = delivered(emu);
    let records: Vec<Value> = got.iter().map(|(v, _, _)| v.clone()).collect();
    assert_every_vendor_exactly(sim, cfg, &records);
    for (v, entry, collected) in &got {
        assert_eq!(
            v["time"].as_str(),
            Some(entry.as_str()),
            "logEntryTime of {}",
            v["id"]
        );
        assert!(
            collected.parse::<jiff::Timestamp>().unwrap()
                >= entry.parse::<jiff::Timestamp>().unwrap()
        );
    }
    let s = &emu.shared;
    let imports = s.imports.load(Ordering::Relaxed);
    // Split: several requests, none over the limit, most holding many logs.
    assert!(s.largest.load(Ordering::Relaxed) <= limit);
    assert!(
        imports >= 3 && got.len() > 2 * imports,
        "{imports} requests for {} logs",
        got.len()
    );
    // The tokens expired under the sink (at the 4th request): one 401, renewed at once.
    assert_eq!(s.unauthenticated.load(Ordering::Relaxed), 1, "{stderr}");
    assert!(s.tokens_issued.load(Ordering::Relaxed) >= 2);
    // 429 with `Retry-After: 1`: the next request came no sooner.
    let throttled = s.throttled_at.lock().unwrap().clone();
    let at = s.import_at.lock().unwrap().clone();
    assert!(!throttled.is_empty());
    for t in throttled {
        let next = at
            .iter()
            .find(|a| **a > t)
            .expect("a request after the 429");
        assert!(
            *next - t >= Duration::from_millis(950),
            "retried {:?} after a 429 with Retry-After: 1",
            *next - t
        );
    }
    assert!(
        !stderr.contains("ya29.") && !stderr.contains("PRIVATE KEY"),
        "{stderr}"
    );
    eprintln!(
        "figures: {} logs in {imports} requests (largest {} of {limit} bytes), {} tokens, {} 401, {} 429",
        got.len(),
        s.largest.load(Ordering::Relaxed),
        s.tokens_issued.load(Ordering::Relaxed),
        s.unauthenticated.load(Ordering::Relaxed),
        s.throttled_at.lock().unwrap().len()
    );
    w.shutdown().await;
}

/// Tokens of a short life are renewed before they expire, during a longer run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expiring_mid_run_are_renewed_ahead() {
    let w = World::secops(&[Vendor::WasabiAir], 40, 31).await;
    let (sim, cfg, emu) = (&w.sim, &w.cfg, &w.rx);
    *emu.shared.token_lifetime.lock().unwrap() = Duration::from_secs(1);
    // Each 5th request waits a second: the run outlives several tokens.
    emu.shared.throttle_every.store(5, Ordering::Relaxed);
    let config = w.config(1000, "batch_max_bytes = 2048");
    let out = run_once(&config).await;
    succeeded(&out);
    let records: Vec<Value> = delivered(emu).into_iter().map(|(v, _, _)| v).collect();
    assert_exactly(&records, "wasabi-air", &truth(sim, cfg, Vendor::WasabiAir));
    let issued = emu.shared.tokens_issued.load(Ordering::Relaxed);
    assert!(issued >= 3, "{issued} tokens for a run of several seconds");
    eprintln!(
        "figures: {issued} tokens, {} requests",
        emu.shared.imports.load(Ordering::Relaxed)
    );
    // Renewed before they expired: the API never saw an expired one.
    assert_eq!(emu.shared.unauthenticated.load(Ordering::Relaxed), 0);
    w.shutdown().await;
}

/// A revoked key is reported (the token endpoint's `invalid_grant`), nothing is imported and
/// the queue is kept; once the key is restored, the next run delivers all of it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_keeps_the_queue_until_it_is_restored() {
    let w = World::secops(&Vendor::ALL, 20, 32).await;
    let (sim, cfg, emu) = (&w.sim, &w.cfg, &w.rx);
    emu.shared.revoked.store(true, Ordering::Relaxed);
    let config = w.config(1000, "");
    let out = run_once(&config).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("refused the service account's key") && stderr.contains("invalid_grant"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("PRIVATE KEY") && !stderr.contains("assertion="),
        "{stderr}"
    );
    assert!(emu.logs().is_empty());
    let row = sink_queue_row(&config, "secops");
    assert_ne!(row[1], "0", "the queue was emptied: {row:?}");

    emu.shared.revoked.store(false, Ordering::Relaxed);
    let out = run_once(&config).await;
    succeeded(&out);
    let records: Vec<Value> = delivered(emu).into_iter().map(|(v, _, _)| v).collect();
    assert_every_vendor_exactly(sim, cfg, &records);
    assert_eq!(sink_queue_row(&config, "secops")[1], "0");
    w.shutdown().await;
}

/// A record larger than a request is refused before anything of its batch is sent, named by
/// source and id, and its page held in the queue; the other pages are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_record_is_named_and_held() {
    // The size of each record as a log of a request, from a first delivery.
    let first = World::secops(&[Vendor::WasabiAir], 30, 33).await;
    succeeded(&run_once(&first.config(1000, "")).await);
    let mut sizes: Vec<(usize, String)> = first
        .rx
        .logs()
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_slice(&l.data).unwrap();
            (l.data.len(), v["id"].as_str().unwrap().to_string())
        })
        .collect();
    sizes.sort();
    let (biggest, big_id) = sizes.last().cloned().unwrap();
    // A limit the biggest record's log does not fit and the smallest ones do: base64 is 4/3
    // of the record, and a log and the request's frame add about 130 bytes.
    let limit = biggest * 4 / 3 + 100;
    assert!(
        sizes[0].0 * 4 / 3 + 140 < limit && limit >= 512,
        "records {}..{biggest} bytes: no limit between them",
        sizes[0].0
    );

    // The same events (the emulator's content depends on its start), into a new SecOps.
    let w = World {
        rx: Emulator::start().await,
        s: setup("", ""),
        ..first
    };
    let emu = &w.rx;
    let config = w.config(5, &format!("batch_max_bytes = {limit}"));
    let out = run_once(&config).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("event {big_id} of source wasabi-air")) && stderr.contains("held"),
        "{stderr}"
    );
    let ids: Vec<String> = delivered(emu)
        .iter()
        .map(|(v, _, _)| v["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!ids.contains(&big_id), "the over-size record was sent");
    assert!(
        ids.len() >= sizes.len() - 5,
        "only {} of {} delivered",
        ids.len(),
        sizes.len()
    );
    assert!(emu.shared.largest.load(Ordering::Relaxed) <= limit);
    let row = sink_queue_row(&config, "secops");
    assert_ne!(row[1], "0", "the held page left the queue: {row:?}");
    w.shutdown().await;
}

/// `check --connect`: reachable with the log type; a missing log type, a denied identity and a
/// refused key each said as such; without a key file, the metadata server not answering and no
/// service account attached, each said as such; a workload identity federation file is refused
/// by its type at `check` (exit 2, naming the key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_says_which_step_failed() {
    let w = World::secops(&[Vendor::WasabiAir], 5, 34).await;
    let emu = &w.rx;
    let config = w.config(1000, "");
    let said = check(&config).await;
    assert!(said.contains("reachable: token from"), "{said}");
    emu.shared.denied.store(true, Ordering::Relaxed);
    let said = check(&config).await;
    assert!(
        said.contains("permission denied") && said.contains("chronicle.logs.import"),
        "{said}"
    );
    emu.shared.denied.store(false, Ordering::Relaxed);
    emu.shared.log_types.lock().unwrap().clear();
    let said = check(&config).await;
    assert!(
        said.contains("not found") && said.contains("log type AUDITSHIP"),
        "{said}"
    );
    emu.shared.revoked.store(true, Ordering::Relaxed);
    let said = check(&config).await;
    assert!(
        said.contains("getting a token") && said.contains("invalid_grant"),
        "{said}"
    );
    emu.shared.revoked.store(false, Ordering::Relaxed);
    emu.shared
        .log_types
        .lock()
        .unwrap()
        .insert(secops_receiver::LOG_TYPE.to_string());

    // Without a key file: the metadata server not answering, no service account attached, or
    // reachable.
    let config = w.config_as(1000, "", false);
    let down = format!("127.0.0.1:{}", free_port());
    let said = check_env(&config, &[("GCE_METADATA_HOST", &down)]).await;
    assert!(
        said.contains(&format!(
            "unreachable: getting a token: metadata server http://{down}/computeMetadata/v1/instance/service-accounts/default/token: "
        )) && said.contains("Connection refused"),
        "{said}"
    );
    let host = emu.metadata_host();
    emu.shared.no_service_account.store(true, Ordering::Relaxed);
    let said = check_env(&config, &[("GCE_METADATA_HOST", &host)]).await;
    assert!(
        said.contains("auth refused: getting a token: metadata server")
            && said.contains("HTTP 404")
            && said.contains("no service account is attached"),
        "{said}"
    );
    emu.shared
        .no_service_account
        .store(false, Ordering::Relaxed);
    let said = check_env(&config, &[("GCE_METADATA_HOST", &host)]).await;
    assert!(
        said.contains("reachable: token from the metadata server"),
        "{said}"
    );

    std::fs::write(
        w.s.dir.path().join("wif.json"),
        r#"{"type":"external_account","audience":"//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x","subject_token_type":"urn:ietf:params:oauth:token-type:jwt","token_url":"https://sts.googleapis.com/v1/token","credential_source":{"file":"/var/run/token"}}"#,
    )
    .unwrap();
    let config = w.config_as(1000, "credentials_file = \"wif.json\"", false);
    let out = agent_run(&["check"], &config).await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("credentials_file")
            && said.contains(
                "type \"external_account\" (workload identity federation) is not supported"
            ),
        "{said}"
    );
    w.shutdown().await;
}

/// The emulator refuses what Google refuses: an assertion whose signature does not verify, a
/// grant of another type, and an API call without a token, each with Google's error body; a
/// metadata request without `Metadata-Flavor: Google` or with `X-Forwarded-For`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_refuses_what_google_refuses() {
    let emu = Emulator::start().await;
    let http = reqwest::Client::new();
    let token = |form: &'static str| {
        http.post(emu.token_uri())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
    };
    let forged = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=eyJhbGciOiJSUzI1NiJ9.e30.AAAA";
    for (form, error) in [
        (forged, "invalid_grant"),
        ("grant_type=password", "unsupported_grant_type"),
    ] {
        let r = token(form).await.unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], error, "{v}");
        assert!(v["error_description"].is_string(), "{v}");
    }
    let log_type = format!(
        "{}/v1alpha/projects/{PROJECT}/locations/{REGION}/instances/{INSTANCE}/logTypes/AUDITSHIP",
        emu.base()
    );
    for r in [
        http.get(&log_type).send().await.unwrap(),
        http.post(format!("{log_type}/logs:import"))
            .bearer_auth("ya29.forged")
            .body("{}")
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(r.status(), 401);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["status"], "UNAUTHENTICATED", "{v}");
        assert_eq!(v["error"]["code"], 401, "{v}");
    }
    assert!(emu.logs().is_empty());

    // The metadata server: without `Metadata-Flavor: Google`, or with `X-Forwarded-For`, 403;
    // a token as JSON, with `Metadata-Flavor: Google` on every answer.
    let url = format!(
        "http://{}/computeMetadata/v1/instance/service-accounts/default/token",
        emu.metadata_host()
    );
    for r in [
        http.get(&url).send().await.unwrap(),
        http.get(&url)
            .header("Metadata-Flavor", "Google")
            .header("X-Forwarded-For", "10.0.0.1")
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()["metadata-flavor"], "Google");
    }
    let r = http
        .get(&url)
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["metadata-flavor"], "Google");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert!(
        v["access_token"].is_string() && v["expires_in"].is_u64(),
        "{v}"
    );
    assert_eq!(emu.shared.metadata_refused.load(Ordering::Relaxed), 2);
}

/// Workload identity: without `credentials_file` the token comes from the metadata server
/// (`GCE_METADATA_HOST`, as Google's libraries read it, points at the emulator's), is renewed
/// before it expires, and once at a 401; every event of the four vendors arrives once and the
/// key's token endpoint is never asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_tokens_come_from_the_metadata_server() {
    let w = World::secops(&Vendor::ALL, 25, 35).await;
    let (sim, cfg, emu) = (&w.sim, &w.cfg, &w.rx);
    let s = &emu.shared;
    *s.token_lifetime.lock().unwrap() = Duration::from_secs(1);
    // Each 5th request waits a second: the run outlives several tokens.
    s.throttle_every.store(5, Ordering::Relaxed);
    // At the 3rd request every token stops working: one 401, renewed at once.
    s.expire_tokens_at.store(3, Ordering::Relaxed);
    let config = w.config_as(1000, "batch_max_bytes = 4096", false);
    let host = emu.metadata_host();
    let env = [("GCE_METADATA_HOST", host.as_str())];
    let said = check_env(&config, &env).await;
    assert!(
        said.contains(&format!(
            "reachable: token from the metadata server (http://{host}/computeMetadata/v1/instance/service-accounts/default/token)"
        )),
        "{said}"
    );
    let out = agent_run_env(&["run", "--once"], &config, &env).await;
    let stderr = succeeded(&out);
    let records: Vec<Value> = delivered(emu).into_iter().map(|(v, _, _)| v).collect();
    assert_every_vendor_exactly(sim, cfg, &records);
    assert_eq!(s.tokens_issued.load(Ordering::Relaxed), 0, "a key was used");
    let from_metadata = s.metadata_tokens.load(Ordering::Relaxed);
    assert!(
        from_metadata >= 3,
        "{from_metadata} tokens over a run of seconds"
    );
    assert_eq!(s.unauthenticated.load(Ordering::Relaxed), 1, "{stderr}");
    assert_eq!(s.metadata_refused.load(Ordering::Relaxed), 0);
    assert!(!stderr.contains("ya29."), "a token was logged: {stderr}");
    eprintln!(
        "figures: metadata server: {} logs in {} requests, {from_metadata} tokens (1 s life), 1 401 renewed, {} 429",
        records.len(),
        s.imports.load(Ordering::Relaxed),
        s.throttled_at.lock().unwrap().len()
    );
    w.shutdown().await;
}

/// The daemon started while the metadata server does not answer: the sink retries, `/readyz`
/// names the metadata server, nothing is dropped; once it answers, every event arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_server_down_at_start_is_waited_for_and_nothing_is_lost() {
    let w = World::secops(&[Vendor::WasabiAir, Vendor::Domo], 30, 36).await;
    let (sim, cfg, emu) = (&w.sim, &w.cfg, &w.rx);
    let (metadata_port, listen) = (free_port(), free_port());
    let config = w.config_as(1000, "", false);
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[agent]\n",
        &format!("[agent]\nlisten = \"127.0.0.1:{listen}\"\nunready_after = \"2s\"\n"),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let host = format!("127.0.0.1:{metadata_port}");
    let child = agent(
        &["run", "--config", config.to_str().unwrap()],
        &[("GCE_METADATA_HOST", host.as_str())],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let (_, body) = until(
        &format!("http://127.0.0.1:{listen}/readyz"),
        Duration::from_secs(30),
        |st, b| st == 503 && b.contains("sink secops") && b.contains("metadata server"),
    )
    .await;
    assert!(emu.logs().is_empty(), "{body}");
    emu.serve_metadata_on(metadata_port).await;
    let want: usize = [Vendor::WasabiAir, Vendor::Domo]
        .iter()
        .map(|v| truth(sim, cfg, *v).len())
        .sum();
    wait_until("the queue delivered", Duration::from_secs(30), || {
        emu.logs().len() >= want
    })
    .await;
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let records: Vec<Value> = delivered(emu).into_iter().map(|(v, _, _)| v).collect();
    for v in [Vendor::WasabiAir, Vendor::Domo] {
        assert_exactly(&records, &name(v), &truth(sim, cfg, v));
    }
    assert!(!stderr.contains("ya29."), "a token was logged");
    eprintln!(
        "figures: metadata server down at start: {} logs delivered once after it came up, {} tokens",
        records.len(),
        emu.shared.metadata_tokens.load(Ordering::Relaxed)
    );
    w.shutdown().await;
}
