//! The `s3` sink end to end: the real binary reads the four emulated vendors and writes gzip
//! NDJSON objects to a real S3 API server (moto, which checks every request's SigV4 signature
//! and the key's IAM policy; see `tests/s3_server`), through a proxy that answers 503
//! SlowDown and fails chosen requests. The bucket is read back with boto3 and Python.

mod common;
mod s3_server;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use auditship_sim::Vendor;
use common::*;
use s3_server::{moto, Object, Proxy};
use serde_json::Value;

/// Adds an s3 sink `arch` (prefix `arch/`) with `keys` and `extra` to `s`'s config.
fn with_s3(s: &Setup, keys: &str, extra: &str) {
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text.push_str(&format!(
        "\n[[sinks]]\nname = \"arch\"\nkind = \"s3\"\nprefix = \"arch/\"\n{keys}{extra}\n"
    ));
    std::fs::write(&s.config, text).unwrap();
}

/// Every object's key is `arch/{source}/dt=YYYY-MM-DD/hour=HH/{first event's time}Z-{hash}.ndjson.gz`,
/// and every record in it is of that source, day and hour.
fn assert_layout(objects: &[Object]) {
    for o in objects {
        let parts: Vec<&str> = o.key.split('/').collect();
        assert_eq!(parts.len(), 5, "{}", o.key);
        assert_eq!(parts[0], "arch", "{}", o.key);
        let (source, dt, hour, name) = (parts[1], parts[2], parts[3], parts[4]);
        assert!(name.ends_with(".ndjson.gz"), "{}", o.key);
        assert_eq!(o.content_type.as_deref(), Some("application/gzip"));
        assert!(!o.records.is_empty(), "{}: an empty object", o.key);
        for r in &o.records {
            let t = r["time"].as_str().unwrap();
            assert_eq!(r["source"], source, "{}", o.key);
            assert_eq!(format!("dt={}", &t[..10]), dt, "{}: {t}", o.key);
            assert_eq!(format!("hour={}", &t[11..13]), hour, "{}: {t}", o.key);
        }
        let first = o.records[0]["time"].as_str().unwrap();
        let stamp: String = first[..19]
            .chars()
            .filter(|c| *c != '-' && *c != ':')
            .collect();
        assert!(name.starts_with(&format!("{stamp}Z-")), "{} {first}", o.key);
    }
}

fn records(objects: &[Object]) -> Vec<Value> {
    objects
        .iter()
        .flat_map(|o| o.records.iter().cloned())
        .collect()
}

/// Every event of the four vendors is in exactly one object, partitioned by source and hour,
/// through 503 SlowDown answers (three in a row, then every seventh write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_of_the_four_vendors_is_in_exactly_one_object_through_503s() {
    let m = moto();
    m.create("four-vendors");
    let proxy = Proxy::start(&m.url).await;
    {
        let mut f = proxy.faults();
        f.slow_down = 3;
        f.slow_down_every = 7;
    }
    let cfg = backfill(&Vendor::ALL, 500, 1, 311);
    let common::World { sim, cfg, s, .. } = common::World::start(cfg, "", "").await;
    with_s3(&s, &m.sink_keys(&proxy.url, "four-vendors"), "");
    let started = Instant::now();
    let out = run_once(&s.config).await;
    let took = started.elapsed();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains(&m.secret), "the secret key was logged");
    assert!(err.contains("SlowDown"), "{err}");
    let objects = m.dump("four-vendors");
    let all = records(&objects);
    for v in &Vendor::ALL {
        assert_exactly(&all, &name(*v), &truth(&sim, &cfg, *v));
    }
    assert_layout(&objects);
    let seen = proxy.faults().seen.clone();
    let slow = seen.iter().filter(|r| r.status == 503).count();
    assert!(slow >= 3, "{slow} 503s");
    assert!(seen.iter().all(|r| r.key_id == m.key_id));
    eprintln!(
        "FIGURES s3 four vendors: {} events in {} objects ({} bytes gzip in all), {} PUTs answered 503 SlowDown and retried, run --once {:.1?}, lost 0, doubled 0",
        all.len(),
        objects.len(),
        objects.iter().map(|o| o.size).sum::<u64>(),
        slow,
        took
    );
}

/// SIGKILL of the agent at random points while it uploads (each write held 100 ms), then a run
/// to the end: every event in the bucket once, objects retried after a kill overwritten under
/// the same key rather than written again beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_uploads_loses_nothing_and_doubles_nothing() {
    let m = moto();
    m.create("killed");
    let proxy = Proxy::start(&m.url).await;
    proxy.faults().delay = Duration::from_millis(100);
    let cfg = backfill(&Vendor::ALL, 800, 2, 312);
    let common::World { sim, cfg, s, .. } = common::World::start(cfg, "", "").await;
    with_s3(
        &s,
        &m.sink_keys(&proxy.url, "killed"),
        "max_object_bytes = 1048576\n",
    );
    let mut rng = fastrand::Rng::with_seed(312);
    let mut kills = 0;
    let mut finished = false;
    while kills < 6 {
        let mut child = agent(
            &["run", "--once", "--config", s.config.to_str().unwrap()],
            &[],
        )
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
        tokio::time::sleep(Duration::from_millis(rng.u64(300..2500))).await;
        if child.try_wait().unwrap().is_some() {
            finished = true;
            break;
        }
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        kills += 1;
    }
    if !finished {
        proxy.faults().delay = Duration::ZERO;
        let out = run_once(&s.config).await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let objects = m.dump("killed");
    let all = records(&objects);
    for v in &Vendor::ALL {
        assert_exactly(&all, &name(*v), &truth(&sim, &cfg, *v));
    }
    assert_layout(&objects);
    let mut puts: HashMap<String, usize> = HashMap::new();
    for r in proxy
        .faults()
        .seen
        .iter()
        .filter(|r| r.method == "PUT" && r.status == 200)
    {
        *puts.entry(r.path.clone()).or_default() += 1;
    }
    let rewritten = puts.values().filter(|n| **n > 1).count();
    assert!(kills > 0, "no kill landed during the uploads");
    eprintln!(
        "FIGURES s3 SIGKILL: {kills} kills during uploads, then a run to the end: {} events in {} objects, {rewritten} objects written again under the same key after a kill, lost 0, doubled 0",
        all.len(),
        objects.len()
    );
}

/// As users run it: live traffic (events keep arriving while the agent runs), the daemon
/// SIGKILLed at random moments while its uploads are slow, and started again. A batch taken
/// again after a kill may hold more events than when its objects were first written; they go
/// under the same names, so the bucket ends with every event once; the file sink beside it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_live_traffic_loses_nothing_and_doubles_nothing() {
    use auditship_sim::SimConfig;
    use jiff::{SignedDuration, Timestamp};
    let m = moto();
    m.create("live");
    let proxy = Proxy::start(&m.url).await;
    proxy.faults().delay = Duration::from_millis(150);
    let now = Timestamp::now();
    let cfg = SimConfig {
        seed: 321,
        start: now - SignedDuration::from_secs(5),
        end: now + SignedDuration::from_secs(20),
        events: 4 * 120,
        vendors: Vendor::ALL.to_vec(),
        ..SimConfig::default()
    };
    let sim = sim(cfg.clone()).await;
    let s = setup_timed(
        "poll_interval = \"1s\"\nlag = \"1s\"\noverlap = \"10s\"",
        "",
        &all_sources(&sim, &cfg),
    );
    with_s3(
        &s,
        &m.sink_keys(&proxy.url, "live"),
        "max_object_age = \"1s\"\n",
    );
    let run = ["run", "--config", s.config.to_str().unwrap()];
    let mut rng = fastrand::Rng::with_seed(321);
    let mut kills = 0;
    while Timestamp::now() < cfg.end {
        let mut child = spawn(&run);
        tokio::time::sleep(Duration::from_millis(rng.u64(1200..3500))).await;
        signal(&child, "KILL");
        wait_for(&mut child, Duration::from_secs(10));
        kills += 1;
    }
    // After the traffic: one daemon to the end.
    proxy.faults().delay = Duration::ZERO;
    let want: usize = Vendor::ALL
        .iter()
        .map(|v| truth(&sim, &cfg, *v).len())
        .sum();
    let mut child = spawn(&run);
    let started = Instant::now();
    let mut objects = m.dump("live");
    while records(&objects).len() < want && started.elapsed() < Duration::from_secs(90) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        objects = m.dump("live");
    }
    signal(&child, "TERM");
    let status = wait_for(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    let all = records(&objects);
    let file = read_lines(&s.out);
    for v in &Vendor::ALL {
        let truth = truth(&sim, &cfg, *v);
        assert_exactly(&all, &name(*v), &truth);
        assert_exactly(&file, &name(*v), &truth);
    }
    assert_layout(&objects);
    // Objects written again under their name, and of those, again with more bytes (a batch
    // that grew while its first upload was cut off).
    let mut puts: HashMap<String, Vec<usize>> = HashMap::new();
    for r in proxy
        .faults()
        .seen
        .iter()
        .filter(|r| r.method == "PUT" && r.status == 200)
    {
        puts.entry(r.path.clone()).or_default().push(r.bytes);
    }
    let rewritten = puts.values().filter(|b| b.len() > 1).count();
    let grown = puts
        .values()
        .filter(|b| b.windows(2).any(|w| w[1] > w[0]))
        .count();
    eprintln!(
        "FIGURES s3 SIGKILL under live traffic: {kills} kills, {} events in {} objects, {rewritten} objects written again under the same name ({grown} of them with more events), lost 0, doubled 0",
        all.len(),
        objects.len()
    );
}

/// `check --connect`: a bucket that takes objects (the probe object deleted again); a bucket
/// that does not exist; a wrong secret key; a key without the right to put. Each failure
/// names the bucket or the step and S3's error code, never the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_finds_the_bucket_and_says_what_failed() {
    let m = moto();
    m.create("probed");
    let cfg = backfill(&[Vendor::Domo], 10, 1, 313);
    let sim = sim(cfg.clone()).await;
    let world = |keys: String| {
        let s = setup("", &all_sources(&sim, &cfg));
        with_s3(&s, &keys, "");
        s
    };
    let s = world(m.sink_keys(&m.url, "probed"));
    let (code, said) = check_connect(&s);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("took a probe object, deleted again"),
        "{said}"
    );
    assert!(
        m.dump("probed").is_empty(),
        "the probe object was left behind"
    );

    let s = world(m.sink_keys(&m.url, "no-such-bucket"));
    let (code, said) = check_connect(&s);
    assert_ne!(code, Some(0), "{said}");
    assert!(
        said.contains("bucket no-such-bucket does not exist"),
        "{said}"
    );
    assert!(said.contains("NoSuchBucket"), "{said}");

    let wrong = "wrong-secret-0123456789abcdefghijklmnopq";
    let keys = m.sink_keys(&m.url, "probed").replace(&m.secret, wrong);
    let s = world(keys);
    let (code, said) = check_connect(&s);
    assert_ne!(code, Some(0), "{said}");
    assert!(said.contains("SignatureDoesNotMatch"), "{said}");
    assert!(said.contains("put refused"), "{said}");
    assert!(!said.contains(wrong), "{said}");

    let keys = m
        .sink_keys(&m.url, "probed")
        .replace(&m.secret, &m.denied_secret)
        .replace(&m.key_id, &m.denied_key_id);
    let s = world(keys);
    let (code, said) = check_connect(&s);
    assert_ne!(code, Some(0), "{said}");
    assert!(said.contains("AccessDenied"), "{said}");
    assert!(!said.contains(&m.denied_secret), "{said}");
    eprintln!("FIGURES s3 check --connect: good bucket, missing bucket, wrong secret, denied key told apart");
}

/// `check --connect` deletes only the probe object it wrote: where another writer put an
/// object at the probe's key first, the probe neither overwrites nor deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_touches_no_object_it_did_not_write() {
    let m = moto();
    m.create("foreign");
    let proxy = Proxy::start(&m.url).await;
    let cfg = backfill(&[Vendor::Domo], 10, 1, 319);
    let common::World {
        sim: _sim,
        cfg: _,
        s,
        ..
    } = common::World::start(cfg, "", "").await;
    with_s3(&s, &m.sink_keys(&proxy.url, "foreign"), "");
    proxy.faults().before_put = Some(Box::new(move |path: &str| {
        let key = path.strip_prefix("/foreign/").expect(path);
        m.put("foreign", key, "{\"theirs\":true}");
    }));
    let (code, said) = check_connect(&s);
    assert_ne!(code, Some(0), "{said}");
    assert!(said.contains("which the probe did not write"), "{said}");
    let objects = m.dump("foreign");
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert!(objects[0].key.contains(".auditship-probe-"), "{objects:?}");
    assert_eq!(
        objects[0].records,
        vec![serde_json::json!({"theirs": true})],
        "the other writer's object was overwritten"
    );
    assert!(
        !proxy.faults().seen.iter().any(|r| r.method == "DELETE"),
        "the probe sent a DELETE for an object it did not write"
    );
    // Nobody else there: the probe writes its object and deletes it again.
    let (code, said) = check_connect(&s);
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(
        m.dump("foreign").len(),
        1,
        "the probe object was left behind"
    );
}

/// A run whose key may not put: the run fails naming the bucket and AccessDenied, the events
/// stay queued; with a key that may, the next run writes them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_put_keeps_the_queue_for_the_next_run() {
    let m = moto();
    m.create("refused");
    let cfg = backfill(&[Vendor::Domo], 200, 1, 314);
    let common::World { sim, cfg, s, .. } = common::World::start(cfg, "", "").await;
    let denied = m
        .sink_keys(&m.url, "refused")
        .replace(&m.secret, &m.denied_secret)
        .replace(&m.key_id, &m.denied_key_id);
    with_s3(&s, &denied, "");
    let out = run_once(&s.config).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bucket refused: PutObject arch/domo/dt="),
        "{err}"
    );
    assert!(err.contains("AccessDenied"), "{err}");
    assert!(!err.contains(&m.denied_secret));
    let row = sink_queue_row(&s.config, "arch");
    assert_ne!(row[1], "0", "the queue was not kept: {row:?}");
    assert!(m.dump("refused").is_empty());

    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace(&m.denied_secret, &m.secret)
        .replace(&m.denied_key_id, &m.key_id);
    std::fs::write(&s.config, text).unwrap();
    let out = run_once(&s.config).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let all = records(&m.dump("refused"));
    assert_exactly(&all, "domo", &truth(&sim, &cfg, Vendor::Domo));
}

/// `role_arn` with `external_id`: the sink assumes the role at STS (signed with its own key)
/// and writes with the role's temporary key and session token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_is_assumed_and_its_temporary_key_writes() {
    let m = moto();
    m.create("assumed");
    let proxy = Proxy::start(&m.url).await;
    let cfg = backfill(&[Vendor::WasabiAir], 200, 1, 315);
    let common::World { sim, cfg, s, .. } = common::World::start(cfg, "", "").await;
    with_s3(
        &s,
        &m.sink_keys(&proxy.url, "assumed"),
        &format!(
            "role_arn = {:?}\nexternal_id = \"auditship-test-external-id\"\nsts_endpoint = {:?}\n",
            m.role_arn, m.url
        ),
    );
    let out = run_once(&s.config).await;
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("role {} assumed with", m.role_arn)),
        "{err}"
    );
    let seen = proxy.faults().seen.clone();
    let puts: Vec<_> = seen.iter().filter(|r| r.method == "PUT").collect();
    assert!(!puts.is_empty());
    for r in &puts {
        assert!(
            r.key_id.starts_with("ASIA"),
            "written with {}, not the role's temporary key",
            r.key_id
        );
    }
    let all = records(&m.dump("assumed"));
    assert_exactly(&all, "wasabi-air", &truth(&sim, &cfg, Vendor::WasabiAir));
}

/// An object larger than `part_bytes` goes up as a multipart upload whose parts S3 puts
/// together (a completion whose answer was lost is sent again, or, when S3 says the upload is
/// gone, the object is checked whole); an upload whose part is
/// refused is aborted: no object, no open upload left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_object_goes_up_in_parts_and_a_failed_upload_is_aborted() {
    use auditship::sinks::Reaches;
    let m = moto();
    m.create("multipart");
    let proxy = Proxy::start(&m.url).await;
    let text = format!(
        "[agent]\nstate_path = \"/tmp/never-opened.db\"\n\
         [[sources]]\nname = \"s\"\nkind = \"wasabi_air\"\nurl = \"http://127.0.0.1:9\"\napi_key = \"k\"\n\
         [[sinks]]\nname = \"arch\"\nkind = \"s3\"\n{}part_bytes = 5242880\n",
        m.sink_keys(&proxy.url, "multipart")
    );
    let c = auditship::config::Config::parse(&text, std::path::Path::new("/tmp/s3.toml")).unwrap();
    let retry = auditship::retry::RetryConfig {
        initial: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_attempts: Some(3),
    };
    let auditship::sinks::SinkSettings::S3(s3) = &c.sinks[0].settings else {
        panic!("not an s3 sink's settings: {:?}", c.sinks[0].settings);
    };
    let sink = auditship::sinks::s3::S3Sink::build(&c.sinks[0], s3, &retry, true).unwrap();
    // 12 MiB of gzip that holds records: lines of random hex compress to about half.
    let mut rng = fastrand::Rng::with_seed(316);
    let mut lines = String::new();
    let mut n = 0;
    while lines.len() < 26 << 20 {
        let pad: String = (0..1000).map(|_| rng.digit(16)).collect();
        lines.push_str(&format!("{{\"n\":{n},\"pad\":\"{pad}\"}}\n"));
        n += 1;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, lines.as_bytes()).unwrap();
    let body = gz.finish().unwrap();
    assert!(body.len() > 10 << 20, "{}", body.len());
    let cancel = tokio_util::sync::CancellationToken::new();
    // The first CompleteMultipartUpload's answer is lost: it is sent again (moto, like S3, takes
    // a repeated completion; where the upload is gone, the sink checks the object's size).
    proxy.faults().lose_complete = true;
    sink.put("big.ndjson.gz", body.clone().into(), &cancel)
        .await
        .unwrap();
    let parts = proxy
        .faults()
        .seen
        .iter()
        .filter(|r| r.query.contains("partNumber="))
        .count();
    assert_eq!(parts, body.len().div_ceil(5 << 20));
    let completes = proxy
        .faults()
        .seen
        .iter()
        .filter(|r| r.method == "POST" && r.query.starts_with("uploadId="))
        .count();
    assert_eq!(completes, 2);
    // Again, and S3 says the upload is gone (it completed it): the sink finds the object whole.
    {
        let mut f = proxy.faults();
        f.lose_complete = true;
        f.gone_complete = true;
    }
    sink.put("big.ndjson.gz", body.clone().into(), &cancel)
        .await
        .unwrap();
    assert!(proxy
        .faults()
        .seen
        .iter()
        .any(|r| r.method == "HEAD" && r.path.ends_with("/big.ndjson.gz")));
    let objects = m.dump("multipart");
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].size, body.len() as u64);
    assert_eq!(objects[0].records.len(), n);
    assert_eq!(objects[0].records[n - 1]["n"], n - 1);

    proxy.faults().deny_part = Some(2);
    let err = sink
        .put("refused.ndjson.gz", body.clone().into(), &cancel)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("AccessDenied"), "{err}");
    assert!(err.contains("bucket multipart"), "{err}");
    assert!(
        m.open_uploads("multipart").is_empty(),
        "an upload was left open"
    );
    assert_eq!(m.dump("multipart").len(), 1);
    assert!(proxy
        .faults()
        .seen
        .iter()
        .any(|r| r.method == "DELETE" && r.query.contains("uploadId=")));
    eprintln!(
        "FIGURES s3 multipart: {} bytes in {parts} parts of 5 MiB, {n} records read back; a refused part aborted the upload",
        body.len()
    );
}

/// No keys in the sink: the standard chain finds `AWS_WEB_IDENTITY_TOKEN_FILE` and
/// `AWS_ROLE_ARN` (as EKS IRSA sets them), exchanges the token at STS
/// (AssumeRoleWithWebIdentity) and writes with the role's temporary key. On the server that
/// checks no signature ([`s3_server::moto_open`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_identity_token_file_is_exchanged_for_the_roles_key() {
    use base64::Engine as _;
    let m = s3_server::moto_open();
    m.create("web-identity");
    let proxy = Proxy::start(&m.url).await;
    let cfg = backfill(&[Vendor::DominoAudit], 150, 1, 317);
    let common::World { sim, cfg, s, .. } = common::World::start(cfg, "", "").await;
    let keys = format!(
        "bucket = \"web-identity\"\nendpoint = {:?}\nforce_path_style = true\nregion = \"us-east-1\"\nsts_endpoint = {:?}\n",
        proxy.url, m.url
    );
    with_s3(&s, &keys, "");
    // A token shaped as the kubelet's (a JWT); STS here does not check its signature.
    let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let token = format!(
        "{}.{}.c2ln",
        b64(r#"{"alg":"RS256","typ":"JWT"}"#),
        b64(
            r#"{"sub":"system:serviceaccount:audit:auditship","aud":"sts.amazonaws.com","iss":"https://oidc.eks.example"}"#
        )
    );
    let token_file = s.dir.path().join("token");
    std::fs::write(&token_file, &token).unwrap();
    let mut cmd = agent(
        &["run", "--once", "--config", s.config.to_str().unwrap()],
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
            ("AWS_ROLE_ARN", &m.role_arn),
        ],
    );
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ] {
        cmd.env_remove(k);
    }
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .unwrap()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("web identity token"), "{err}");
    assert!(!err.contains(&token), "the token was logged");
    let seen = proxy.faults().seen.clone();
    let puts: Vec<_> = seen.iter().filter(|r| r.method == "PUT").collect();
    assert!(!puts.is_empty());
    for r in &puts {
        assert!(r.key_id.starts_with("ASIA"), "written with {}", r.key_id);
    }
    let all = records(&m.dump("web-identity"));
    assert_exactly(
        &all,
        "domino-audit",
        &truth(&sim, &cfg, Vendor::DominoAudit),
    );
}

/// A bad `kind = "s3"` entry: `check` exits 2 naming each key and what is wrong, never a
/// secret's value.
#[test]
fn a_bad_entry_is_refused_naming_each_key() {
    let secret = "wJalrXUtnFEMI-not-to-be-printed";
    let s = setup(
        "",
        "[[sources]]\nname = \"air\"\nkind = \"wasabi_air\"\nurl = \"http://127.0.0.1:9\"\napi_key = \"k\"\n",
    );
    with_s3(
        &s,
        &format!(
            "bucket = \"Bad_Bucket\"\nregion = \"eu-west-1\"\naccess_key_id = \"AKIAEXAMPLE\"\nsecret_access_key = {secret:?}\nsession_token_file = \"/no/such/file\"\n"
        ),
        "object_format = \"orc\"\nexternal_id = \"x\"\nbatch_max_age = \"10s\"\nmax_object_bytes = 10\npart_bytes = 1024\nmax_object_age = \"2d\"\nformat = \"cef\"\n",
    );
    let out = run(&["check", "--config", s.config.to_str().unwrap()], &[]);
    let err =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for want in [
        "sinks[1].bucket: \"Bad_Bucket\" is not a bucket name",
        "sinks[1].object_format: \"orc\" is not supported by this version; use ndjson_gzip",
        "sinks[1].external_id: is set without role_arn",
        "sinks[1].batch_max_age: not an option of kind s3",
        "sinks[1].max_object_bytes: 10 is out of range",
        "sinks[1].part_bytes: 1024 is out of range",
        "sinks[1].max_object_age: is longer than the most, 24 hours",
        "sinks[1].format: cef writes text lines",
        "sinks[1].session_token_file",
    ] {
        assert!(err.contains(want), "{want:?} not in:\n{err}");
    }
    assert!(!err.contains(secret), "{err}");
}

/// The daemon writes a batch once its oldest event has waited `max_object_age` (here 3 s, in
/// place of the kind's default of 5 minutes, which would fail this test): every event arrives
/// while the agent runs, and a SIGTERM after that ends it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_writes_objects_at_max_object_age() {
    let m = moto();
    m.create("daemon");
    let cfg = backfill(&Vendor::ALL, 100, 1, 318);
    let common::World { sim, cfg, s, .. } = common::World::start(cfg, "", "").await;
    with_s3(
        &s,
        &m.sink_keys(&m.url, "daemon"),
        "max_object_age = \"3s\"\n",
    );
    let want: usize = Vendor::ALL
        .iter()
        .map(|v| truth(&sim, &cfg, *v).len())
        .sum();
    let started = Instant::now();
    let mut child = spawn(&["run", "--config", s.config.to_str().unwrap()]);
    let mut first = None;
    let mut objects = Vec::new();
    while started.elapsed() < Duration::from_secs(90) {
        objects = m.dump("daemon");
        if first.is_none() && !objects.is_empty() {
            first = Some(started.elapsed());
        }
        if records(&objects).len() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let all = records(&objects);
    for v in &Vendor::ALL {
        assert_exactly(&all, &name(*v), &truth(&sim, &cfg, *v));
    }
    signal(&child, "TERM");
    let status = wait_for(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    eprintln!(
        "FIGURES s3 daemon: max_object_age 3 s, first object {:?} after start, all {} events in {} objects after {:?}",
        first.unwrap(),
        all.len(),
        objects.len(),
        started.elapsed()
    );
}

/// No keys and nothing in the environment: the instance metadata service (IMDSv2, a session
/// token then the instance role's credentials), here moto's emulation of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instance_metadata_service_gives_the_key_when_nothing_else_does() {
    let m = s3_server::moto_open();
    m.create("imds");
    let proxy = Proxy::start(&m.url).await;
    let cfg = backfill(&[Vendor::Domo], 100, 1, 319);
    let common::World { sim, cfg, s, .. } = common::World::start(cfg, "", "").await;
    let keys = format!(
        "bucket = \"imds\"\nendpoint = {:?}\nforce_path_style = true\nregion = \"us-east-1\"\n",
        proxy.url
    );
    with_s3(&s, &keys, "");
    let mut cmd = agent(
        &["run", "--once", "--config", s.config.to_str().unwrap()],
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &m.url)],
    );
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_EC2_METADATA_DISABLED",
    ] {
        cmd.env_remove(k);
    }
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .unwrap()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("instance metadata service"), "{err}");
    let seen = proxy.faults().seen.clone();
    let puts: Vec<_> = seen.iter().filter(|r| r.method == "PUT").collect();
    assert!(!puts.is_empty());
    for r in &puts {
        assert_eq!(r.key_id, "test-key", "not the instance role's key");
        assert_eq!(r.session_token.as_deref(), Some("test-session-token"));
    }
    let all = records(&m.dump("imds"));
    assert_exactly(&all, "domo", &truth(&sim, &cfg, Vendor::Domo));
}

/// A batch is `max_object_bytes` of the queue, but at most half of `queue_max_bytes`, so that
/// the sources never wait for room while the sink waits for a full object (and `check` warns).
#[test]
fn a_batch_is_at_most_half_the_queue() {
    let text = |extra: &str| {
        format!(
            "[agent]\nstate_path = \"/tmp/never-opened.db\"\n\
             [[sources]]\nname = \"s\"\nkind = \"wasabi_air\"\nurl = \"http://127.0.0.1:9\"\napi_key = \"k\"\n\
             [[sinks]]\nname = \"arch\"\nkind = \"s3\"\nbucket = \"b-1\"\nregion = \"us-east-1\"\n\
             access_key_id = \"AKIAEXAMPLE\"\nsecret_access_key = \"x\"\n{extra}"
        )
    };
    let parse = |t: String| {
        auditship::config::Config::parse(&t, std::path::Path::new("/tmp/s3.toml")).unwrap()
    };
    let c = parse(text(
        "max_object_bytes = 16777216\nqueue_max_bytes = 4194304\n",
    ));
    let d = c.sinks[0].settings.configured();
    assert_eq!(d.take_limits(&c.sinks[0]).1, 2 << 20);
    let w = d.warnings(&c.sinks[0]).join("\n");
    assert!(
        w.contains("max_object_bytes (16777216) is more than half of queue_max_bytes"),
        "{w}"
    );
    let c = parse(text(""));
    let d = c.sinks[0].settings.configured();
    assert_eq!(d.take_limits(&c.sinks[0]).1, 16 << 20);
    assert_eq!(c.sinks[0].batch_max_age, Duration::from_secs(300));
    assert!(d.warnings(&c.sinks[0]).is_empty());
}
