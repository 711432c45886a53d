//! The registries, walked. Every registered vendor has an emulator, is documented in the
//! annotated example (which validates), refuses what is not its own, builds, and reads its
//! emulator exactly. Every registered destination is documented in the annotated example with
//! each of its keys, refuses what is not its own, opens, and probes a receiver on loopback. A
//! new vendor is covered by adding it to `sources::VENDORS`, a new destination by adding it to
//! `sinks::DESTINATIONS` (and its minimal entry to `minimal_sink`).

mod azure;
mod common;
mod http_receiver;
mod s3_server;
mod secops_receiver;

use std::path::Path;
use std::time::Duration;

use auditship::config::Config;
use auditship::sinks::DESTINATIONS;
use auditship::sources::{self, Http, PageRequest, VENDORS};
use auditship::timefmt::{floor_to, NANOS_PER_SEC};
use auditship_sim::Vendor;
use common::*;
use serde_json::Value;

/// A config holding one source of `kind` with `keys`, and a stdout sink.
fn one_source(kind: &str, url: &str, keys: &str) -> String {
    format!(
        "[agent]\nstate_path = \"/tmp/never-opened.db\"\n\
         [[sources]]\nname = \"s\"\nkind = \"{kind}\"\nurl = \"{url}\"\n{keys}\n\
         [[sinks]]\nname = \"out\"\nkind = \"stdout\"\n"
    )
}

fn problems(text: &str) -> String {
    match Config::parse(text, Path::new("/etc/auditship/registry.toml")) {
        Ok(_) => String::new(),
        Err(e) => e.problems.join("\n"),
    }
}

#[test]
fn every_vendor_has_an_emulator_and_a_unique_kind() {
    let mut kinds: Vec<&str> = VENDORS.iter().map(|v| v.kind()).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds.len(), VENDORS.len(), "a kind is registered twice");
    for v in VENDORS {
        assert!(
            Vendor::parse(v.kind()).is_some(),
            "{}: no emulator of that name in auditship_sim",
            v.kind()
        );
        assert!(!v.title().is_empty() && !v.vendor().is_empty());
    }
}

/// `config/auditship.toml` shows every registered vendor, and it validates as a whole.
#[test]
fn the_annotated_example_shows_every_vendor_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/auditship.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    // Secrets of the example: files under /run/secrets/auditship/, variables in ${…}.
    while let Some(i) = text.find("\"/run/secrets/auditship/") {
        let end = text[i + 1..].find('"').unwrap() + i + 1;
        let name = text[i + 1..end].rsplit('/').next().unwrap().to_string();
        let p = dir.path().join(&name);
        std::fs::write(&p, "s3cret\n").unwrap();
        text.replace_range(i..=end, &format!("{:?}", p.to_str().unwrap()));
    }
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut rest = line;
        while let Some(i) = rest.find("${") {
            let Some(end) = rest[i..].find('}').map(|e| e + i) else {
                break;
            };
            let name = &rest[i + 2..end];
            if !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            {
                std::env::set_var(name, "from-env");
            }
            rest = &rest[end..];
        }
    }
    let c = Config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
    for v in VENDORS {
        assert!(
            c.sources.iter().any(|s| s.kind.as_str() == v.kind()),
            "config/auditship.toml has no [[sources]] of kind {}",
            v.kind()
        );
    }
}

/// Each vendor's own keys are refused, by name, by every other vendor; its reserved query
/// parameters are refused as filters; and a source without its credentials is missing them.
#[test]
fn every_vendor_refuses_what_is_not_its_own() {
    for v in VENDORS {
        for other in VENDORS.iter().filter(|o| o.kind() != v.kind()) {
            for opt in other.options().iter().filter(|o| !v.options().contains(o)) {
                let p = problems(&one_source(
                    v.kind(),
                    "http://127.0.0.1:9",
                    &format!("{opt} = \"x\""),
                ));
                let want = format!("sources[0].{opt}: not an option of kind {}", v.kind());
                assert!(p.contains(&want), "{want:?} not in:\n{p}");
            }
        }
        // Every documented filter passes; an undocumented one is refused, naming the kind.
        for param in v.filter_params() {
            let p = problems(&one_source(
                v.kind(),
                "http://127.0.0.1:9",
                &format!("[sources.filters]\n{param} = \"1\""),
            ));
            assert!(!p.contains("filters"), "{}: {param}: {p}", v.kind());
        }
        let p = problems(&one_source(
            v.kind(),
            "http://127.0.0.1:9",
            "[sources.filters]\nevnt = \"1\"",
        ));
        let want = format!("sources[0].filters.evnt: is not a filter of {}", v.kind());
        assert!(p.contains(&want), "{want:?} not in:\n{p}");
        for param in v.reserved_params() {
            let p = problems(&one_source(
                v.kind(),
                "http://127.0.0.1:9",
                &format!("[sources.filters]\n{param} = \"1\""),
            ));
            let want = format!("sources[0].filters.{param}: is set by the agent");
            assert!(p.contains(&want), "{want:?} not in:\n{p}");
        }
        let p = problems(&one_source(v.kind(), "http://127.0.0.1:9", ""));
        assert!(p.contains(": missing: "), "{}: {p}", v.kind());
        let p = problems(&one_source(v.kind(), "http://127.0.0.1:9", "bogus_key = 1"));
        assert!(
            p.contains("sources[0].bogus_key: unknown field"),
            "{}: {p}",
            v.kind()
        );
    }
}

/// Every vendor validates a config made with its emulator's credentials, builds, and reads the
/// emulator's events exactly, each with its kind, vendor and SIEM table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vendor_builds_and_reads_its_emulator() {
    let emulated: Vec<Vendor> = VENDORS
        .iter()
        .filter_map(|v| Vendor::parse(v.kind()))
        .collect();
    let cfg = backfill(&emulated, 40, 1, 11);
    let sim = sim(cfg.clone()).await;
    let http = Http::new(Duration::from_secs(10)).unwrap();
    for v in VENDORS {
        let emulator = Vendor::parse(v.kind()).unwrap();
        let text = one_source(v.kind(), &sim.url(), &emulator.source_keys(&cfg));
        let c = Config::parse(&text, Path::new("/etc/auditship/registry.toml"))
            .unwrap_or_else(|e| panic!("{}: {e}", v.kind()));
        let source = sources::build(&c.sources[0], http.clone());
        let unit = source.traits().time_unit.max(1);
        let start = floor_to(cfg.start.as_nanosecond() as i64 - NANOS_PER_SEC, unit);
        let end = floor_to(cfg.end.as_nanosecond() as i64 + 2 * NANOS_PER_SEC, unit);
        let page = source
            .fetch(&PageRequest {
                start,
                end,
                inclusive_end: false,
                offset: 0,
                page: 0,
                limit: 1000,
                max_events: None,
            })
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", v.kind()));
        let truth = truth(&sim, &cfg, emulator);
        assert!(
            !truth.is_empty(),
            "{}: the emulator made no events",
            v.kind()
        );
        // Each event carries its vendor's SIEM rows (not the generic table): what OCSF, ECS
        // and CEF write it with.
        for e in &page.events {
            assert!(
                std::ptr::eq(e.siem(), v.siem()),
                "{}: an event without its vendor's SIEM table",
                v.kind()
            );
        }
        let delivered: Vec<Value> = page
            .events
            .iter()
            .map(|e| {
                let mut out = Vec::new();
                e.write_ndjson(&mut out, true);
                serde_json::from_slice::<Value>(&out).unwrap()
            })
            .collect();
        for e in &delivered {
            assert_eq!(e["kind"], v.kind());
            assert_eq!(e["vendor"], v.vendor());
        }
        // Content-keyed events get their id from the poller: give each a distinct one here.
        let delivered: Vec<Value> = delivered
            .into_iter()
            .enumerate()
            .map(|(i, mut e)| {
                e["id"] = Value::String(format!("{i}"));
                e
            })
            .collect();
        assert_exactly(&delivered, "s", &truth);
    }
    sim.shutdown().await;
}

/// The receivers a destination's minimal entry points at, on loopback.
struct Receivers {
    http: http_receiver::Receiver,
    syslog: tokio::net::TcpListener,
    secops: secops_receiver::Emulator,
    azure: azure::Azure,
    dir: tempfile::TempDir,
    kafka: rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
}

impl Receivers {
    async fn start() -> Receivers {
        Receivers {
            http: http_receiver::Receiver::start(http_receiver::Mode::Ndjson).await,
            syslog: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            secops: secops_receiver::Emulator::start().await,
            azure: azure::Azure::start().await,
            dir: tempfile::tempdir().unwrap(),
            kafka: rdkafka::mocking::MockCluster::new(1).unwrap(),
        }
    }
}

/// The keys a sink of `kind` needs, pointed at `at` (`None`: at nothing that answers).
fn minimal_sink(kind: &str, at: Option<&Receivers>) -> String {
    match (kind, at) {
        ("stdout", _) => String::new(),
        ("file", Some(r)) => format!("path = {:?}", r.dir.path().join("out.ndjson")),
        ("file", None) => "path = \"/proc/no/such/dir/out.ndjson\"".into(),
        ("http", Some(r)) => format!("url = \"{}/\"", r.http.base()),
        ("http", None) => format!("url = \"http://127.0.0.1:{}/\"", free_port()),
        ("syslog", Some(r)) => format!("address = \"{}\"", r.syslog.local_addr().unwrap()),
        ("syslog", None) => format!("address = \"127.0.0.1:{}\"", free_port()),
        ("otlp", Some(r)) => format!("url = \"{}/v1/logs\"", r.http.base()),
        ("otlp", None) => format!("url = \"http://127.0.0.1:{}/v1/logs\"", free_port()),
        ("kafka", Some(r)) => format!(
            "brokers = [\"{}\"]\ntopic = \"audit\"",
            r.kafka.bootstrap_servers()
        ),
        ("kafka", None) => format!(
            "brokers = [\"127.0.0.1:{}\"]\ntopic = \"audit\"",
            free_port()
        ),
        ("secops", r) => {
            let (dir, endpoint, token_uri) = match r {
                Some(r) => (
                    r.dir.path().to_path_buf(),
                    r.secops.base(),
                    r.secops.token_uri(),
                ),
                None => {
                    let port = free_port();
                    let base = format!("http://127.0.0.1:{port}");
                    (std::env::temp_dir(), base.clone(), format!("{base}/token"))
                }
            };
            let key = dir.join(format!("secops-key-{}.json", std::process::id()));
            std::fs::write(&key, secops_receiver::key_json(&token_uri)).unwrap();
            format!(
                "project = {:?}\nregion = {:?}\ninstance = {:?}\ncredentials_file = {key:?}\nendpoint = {endpoint:?}",
                secops_receiver::PROJECT,
                secops_receiver::REGION,
                secops_receiver::INSTANCE,
            )
        }
        ("sentinel", Some(r)) => r.azure.sink_keys(),
        ("sentinel", None) => azure::keys_at(&format!("http://127.0.0.1:{}", free_port())),
        ("s3", Some(_)) => {
            let m = s3_server::moto();
            m.create("registry");
            m.sink_keys(&m.url, "registry")
        }
        ("s3", None) => format!(
            "bucket = \"registry\"\nendpoint = \"http://127.0.0.1:{}\"\nforce_path_style = true\naccess_key_id = \"AKIAEXAMPLE\"\nsecret_access_key = \"not-a-secret\"",
            free_port()
        ),
        (other, _) => panic!("{other}: add a minimal entry of the new destination to minimal_sink"),
    }
}

/// A config holding one wasabi_air source and one sink of `kind` with `keys`.
fn one_sink(kind: &str, keys: &str) -> String {
    format!(
        "[agent]\nstate_path = \"/tmp/never-opened.db\"\n\
         [[sources]]\nname = \"s\"\nkind = \"wasabi_air\"\nurl = \"http://127.0.0.1:9\"\napi_key = \"k\"\n\
         [[sinks]]\nname = \"out\"\nkind = \"{kind}\"\n{keys}\n"
    )
}

/// Every destination has a unique kind and a title, and `config/auditship.toml` shows it with
/// each of its keys (as a live or a commented-out line): its users' documentation.
#[test]
fn every_destination_is_documented_in_the_annotated_example() {
    let mut kinds: Vec<&str> = DESTINATIONS.iter().map(|d| d.kind()).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds.len(),
        DESTINATIONS.len(),
        "a kind is registered twice"
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/auditship.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_start_matches(['#', ' ']))
        .collect();
    for d in DESTINATIONS {
        assert!(!d.title().is_empty(), "{}", d.kind());
        let kind = format!("kind = \"{}\"", d.kind());
        assert!(
            lines.iter().any(|l| l.starts_with(&kind)),
            "config/auditship.toml shows no sink of kind {}",
            d.kind()
        );
        for opt in d.options() {
            assert!(
                lines.iter().any(|l| l.starts_with(&format!("{opt} ="))
                    || l.starts_with(&format!("[sinks.{opt}]"))),
                "config/auditship.toml does not document {}'s key {opt}",
                d.kind()
            );
        }
    }
}

/// Each destination's own keys are refused, by name, by every other destination; an unknown
/// key is named; a sink missing what it needs says so; the minimal entry validates.
#[test]
fn every_destination_refuses_what_is_not_its_own() {
    for d in DESTINATIONS {
        let minimal = minimal_sink(d.kind(), None);
        assert_eq!(problems(&one_sink(d.kind(), &minimal)), "", "{}", d.kind());
        for other in DESTINATIONS.iter().filter(|o| o.kind() != d.kind()) {
            for opt in other.options().iter().filter(|o| !d.options().contains(o)) {
                let p = problems(&one_sink(d.kind(), &format!("{minimal}\n{opt} = \"x\"")));
                let want = format!("sinks[0].{opt}: not an option of kind {}", d.kind());
                assert_eq!(p.matches(&want).count(), 1, "{want:?} not in:\n{p}");
            }
        }
        let p = problems(&one_sink(d.kind(), &format!("{minimal}\nbogus_key = 1")));
        assert!(
            p.contains("sinks[0].bogus_key: unknown field"),
            "{}: {p}",
            d.kind()
        );
        if !minimal.is_empty() {
            let p = problems(&one_sink(d.kind(), ""));
            assert!(p.contains(": missing"), "{}: {p}", d.kind());
        }
    }
    // A kind that is not registered: one error, about `kind`, whatever keys are there.
    let p = problems(&one_sink(
        "files",
        "path = \"o\"\nurl = \"http://x/\"\nbogus = 1",
    ));
    let kinds: Vec<&str> = DESTINATIONS.iter().map(|d| d.kind()).collect();
    let want = format!(
        "sinks[0].kind: \"files\" is not a sink kind; one of {}",
        kinds.join(", ")
    );
    assert!(p.contains(&want), "{want:?} not in:\n{p}");
    assert!(
        !p.contains("sinks[0].path") && !p.contains("sinks[0].url"),
        "{p}"
    );
}

/// Every destination opens from its minimal entry, and `check --connect`'s probe finds its
/// receiver on loopback (and, but for stdout, says so when nothing is there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_destination_opens_and_probes_its_receiver() {
    let receivers = Receivers::start().await;
    let state = auditship::state::State::open(&receivers.dir.path().join("state.db")).unwrap();
    let retry = auditship::retry::RetryConfig {
        initial: Duration::from_millis(1),
        max_delay: Duration::from_millis(1),
        max_attempts: Some(1),
    };
    for d in DESTINATIONS {
        let text = one_sink(d.kind(), &minimal_sink(d.kind(), Some(&receivers)));
        let c = Config::parse(&text, Path::new("/etc/auditship/registry.toml"))
            .unwrap_or_else(|e| panic!("{}: {e}", d.kind()));
        let sink = &c.sinks[0];
        assert_eq!(sink.kind.as_str(), d.kind());
        auditship::sinks::open(sink, &state, &retry, true, None)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", d.kind()));
        let probe = sink.settings.configured().probe(sink, &retry).await;
        assert!(probe.ok, "{}: {probe:?}", d.kind());
        if d.kind() != "stdout" {
            let text = one_sink(d.kind(), &minimal_sink(d.kind(), None));
            let c = Config::parse(&text, Path::new("/etc/auditship/registry.toml")).unwrap();
            let sink = &c.sinks[0];
            let probe = sink.settings.configured().probe(sink, &retry).await;
            assert!(!probe.ok, "{}: nothing there, yet {probe:?}", d.kind());
        }
    }
}
