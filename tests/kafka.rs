//! The Kafka sink against a real Kafka-protocol broker on loopback: librdkafka's mock cluster
//! (the broker implementation librdkafka's own test suite runs against), started in this test
//! process, one per test (a test takes its brokers down). The agent is the real binary in a
//! separate process, connecting over TCP to the cluster's bootstrap servers; what reached the
//! topic is read back with a separate consumer.
//!
//! Every test runs a file sink beside the Kafka sink: the file's lines are checked exactly
//! once against the emulators' truth, and each record's value must be the file's line of the
//! event its key names.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use auditship_sim::Vendor;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;

type Cluster = MockCluster<'static, DefaultProducerContext>;

/// Brokers of each test's cluster; every topic has a replica on each, so `acks = all` waits
/// for all three.
const BROKERS: i32 = 3;
/// Partitions of each topic. The mock broker keeps at most 5 MiB of a partition's log (and
/// drops the oldest beyond): 32 hold every test's records (under 100 MB).
const PARTITIONS: i32 = 32;

/// A mock cluster of [`BROKERS`] brokers holding `topics`.
fn cluster(topics: &[&str]) -> Cluster {
    let c = MockCluster::new(BROKERS).expect("starting librdkafka's mock cluster");
    for t in topics {
        c.create_topic(t, PARTITIONS, BROKERS).unwrap();
    }
    c
}

/// One record as read back.
#[derive(Debug, Clone)]
struct Record {
    key: String,
    value: String,
}

/// Every record of `topic`, read from the start of each partition up to its end now, with a
/// consumer of its own (no group: the partitions are assigned).
fn read_topic(c: &Cluster, topic: &str) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap_servers())
        .set("group.id", "auditship-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let marks: Vec<(i64, i64)> = (0..PARTITIONS)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
        })
        .collect();
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for (p, &(low, high)) in (0..).zip(&marks) {
        assert_eq!(
            low, 0,
            "{topic}[{p}]: the mock broker dropped old records (it keeps 5 MiB a partition): \
             give the topic more partitions; (low, high) of each: {marks:?}"
        );
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Offset(low))
                .unwrap();
        }
    }
    let want: i64 = ends.values().sum::<i64>();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let started = Instant::now();
    let mut done: HashSet<i32> = HashSet::new();
    while done.len() < ends.len() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "read {} records of {topic}, want about {want}",
            out.len()
        );
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        out.push(Record {
            key: String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
            value: String::from_utf8(m.payload().unwrap().to_vec()).unwrap(),
        });
        if m.offset() + 1 >= ends[&m.partition()] {
            done.insert(m.partition());
        }
    }
    out
}

/// How many records `topic` holds now (the sum of its partitions' high watermarks).
fn records_on(c: &Cluster, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap_servers())
        .create()
        .unwrap();
    (0..PARTITIONS)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map_or(0, |(_, high)| high)
        })
        .sum()
}

fn add_kafka_sink(s: &common::Setup, name: &str, c: &Cluster, keys: &str) {
    let brokers: Vec<String> = c
        .bootstrap_servers()
        .split(',')
        .map(|b| format!("{b:?}"))
        .collect();
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text.push_str(&format!(
        "\n[[sinks]]\nname = {name:?}\nkind = \"kafka\"\nbrokers = [{}]\n{keys}\n",
        brokers.join(", ")
    ));
    std::fs::write(&s.config, text).unwrap();
}

/// The file sink's events (exactly once: checked against the emulator's truth), by id.
fn file_events(
    sim: &auditship_sim::SimHandle,
    cfg: &auditship_sim::SimConfig,
    s: &common::Setup,
) -> HashMap<String, Value> {
    let lines = common::read_lines(&s.out);
    for v in Vendor::ALL {
        common::assert_exactly(&lines, &common::name(v), &common::truth(sim, cfg, v));
    }
    lines
        .into_iter()
        .map(|e| (e["id"].as_str().unwrap().to_string(), e))
        .collect()
}

/// Checks every record of a native topic keyed by id against the file sink's events: its value
/// the event's line, no event missing. Returns how many events arrived more than once.
fn check_native(records: &[Record], by_id: &HashMap<String, Value>) -> usize {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for r in records {
        let v: Value = serde_json::from_str(&r.value).unwrap_or_else(|e| panic!("{e}: {r:?}"));
        assert_eq!(v["id"].as_str(), Some(r.key.as_str()), "key is not the id");
        let want = by_id
            .get(&r.key)
            .unwrap_or_else(|| panic!("unknown id {}", r.key));
        assert_eq!(&v, want, "record differs from the file sink's line");
        *count.entry(r.key.as_str()).or_default() += 1;
    }
    let missing: Vec<_> = by_id
        .keys()
        .filter(|id| !count.contains_key(id.as_str()))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} events never reached the topic, e.g. {missing:?}",
        by_id.len()
            - by_id
                .keys()
                .filter(|id| count.contains_key(id.as_str()))
                .count(),
        by_id.len()
    );
    count.values().filter(|n| **n > 1).count()
}

/// `run --once` over the four emulators: every event on the topic exactly once, keyed by its
/// id, its value the file sink's native line; a second sink (keyed by source, CEF, zstd) gets
/// every event once too, keyed by its source's name. `check --connect` reaches the brokers and
/// produces nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_the_topic_exactly_once() {
    let (sim, cfg, s) = common::four_vendors(250, 291, "page_size = 40\n").await;
    let c = cluster(&["audit", "audit-cef"]);
    add_kafka_sink(&s, "kafka", &c, "topic = \"audit\"\ncompression = \"gzip\"");
    add_kafka_sink(
        &s,
        "kafka-cef",
        &c,
        "topic = \"audit-cef\"\nkey = \"source\"\nformat = \"cef\"\ncompression = \"zstd\"",
    );
    let (code, out) = common::check_connect(&s);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(
            "sink kafka: ok (metadata of 3 brokers fetched; topic audit has 32 partitions)"
        ),
        "{out}"
    );
    assert!(
        read_topic(&c, "audit").is_empty(),
        "check --connect produced"
    );

    common::once_ok(&s);
    let by_id = file_events(&sim, &cfg, &s);
    assert!(by_id.len() > 500, "{}", by_id.len());
    let records = read_topic(&c, "audit");
    assert_eq!(check_native(&records, &by_id), 0, "an event arrived twice");
    assert_eq!(records.len(), by_id.len());

    let cef = read_topic(&c, "audit-cef");
    assert_eq!(cef.len(), by_id.len());
    let mut per_source: HashMap<&str, usize> = HashMap::new();
    for r in &cef {
        assert!(r.value.starts_with("CEF:0|"), "{r:?}");
        *per_source.entry(r.key.as_str()).or_default() += 1;
    }
    for v in Vendor::ALL {
        let n = by_id
            .values()
            .filter(|e| e["source"] == common::name(v))
            .count();
        assert_eq!(per_source.get(common::name(v).as_str()), Some(&n), "{v:?}");
    }
}

/// A record larger than `message_max_bytes` (librdkafka's `message.max.bytes`) is refused
/// before anything of its batch is produced, named by source and event id, and its page held:
/// the other pages reach the topic, nothing is retried in a loop, the file sink beside it gets
/// everything. (Before, librdkafka's refusal was taken for a passing failure: the batch was
/// produced again until the attempts ran out, and the sink delivered nothing after it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_message_max_bytes_is_named_and_its_page_held() {
    // Each record's size as librdkafka counts it (key, value, 36 bytes), from a first run.
    let (sim, cfg, first) = common::four_vendors(40, 295, "page_size = 5\n").await;
    let c = cluster(&["audit"]);
    add_kafka_sink(&first, "kafka", &c, "topic = \"audit\"");
    common::once_ok(&first);
    let mut sizes: Vec<(usize, String, String)> = read_topic(&c, "audit")
        .into_iter()
        .map(|r| {
            let v: Value = serde_json::from_str(&r.value).unwrap();
            let source = v["source"].as_str().unwrap().to_string();
            (36 + r.key.len() + r.value.len(), r.key, source)
        })
        .collect();
    sizes.sort();
    let total = sizes.len();
    let biggest = sizes[total - 1].0;
    // The most a record may be: all but the biggest fit.
    let limit = sizes
        .iter()
        .rev()
        .find(|(n, _, _)| *n < biggest)
        .unwrap()
        .0
        .max(1000);
    assert!(
        limit < biggest,
        "records of {limit}..{biggest} bytes: no limit between"
    );
    let refused: Vec<&(usize, String, String)> =
        sizes.iter().filter(|(n, _, _)| *n > limit).collect();

    // The same events into a new cluster through a sink that takes at most `limit` bytes.
    let sources: String = Vendor::ALL
        .iter()
        .map(|v| common::source_toml(&sim, &cfg, *v, "page_size = 5\n"))
        .collect();
    let s = common::setup("", &sources);
    let c = cluster(&["audit"]);
    add_kafka_sink(
        &s,
        "kafka",
        &c,
        &format!("topic = \"audit\"\nmessage_max_bytes = {limit}"),
    );
    let started = Instant::now();
    let out = common::run(
        &["run", "--once", "--config", s.config.to_str().unwrap()],
        &[],
    );
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let named = refused.iter().any(|(_, id, source)| {
        stderr.contains(&format!(
            "event {id} of source {source} is too large a record"
        ))
    });
    assert!(named && stderr.contains("held"), "{stderr}");
    assert!(
        !stderr.contains("gave up after"),
        "the refusal was retried as a passing failure: {stderr}"
    );
    let by_id = file_events(&sim, &cfg, &s);
    let records = read_topic(&c, "audit");
    let on_topic: HashSet<&str> = records.iter().map(|r| r.key.as_str()).collect();
    for (_, id, _) in &refused {
        assert!(
            !on_topic.contains(id.as_str()),
            "the record {id} over the limit was sent"
        );
    }
    // Only the held pages (5 events each) are missing.
    assert!(
        records.len() >= by_id.len() - 5 * refused.len(),
        "{} of {} events on the topic",
        records.len(),
        by_id.len()
    );
    let row = common::sink_queue_row(&s.config, "kafka");
    assert_ne!(row[1], "0", "the held page left the queue: {row:?}");
    eprintln!(
        "FIGURES kafka record too large: message_max_bytes {limit}, {} record(s) of {biggest} bytes held with their page, {} of {total} on the topic, run took {took:?}",
        refused.len(),
        records.len()
    );
}

/// `check --connect` says what it found and fails but for the first: no broker answers
/// (unreachable), the brokers refuse the topic to this client (auth refused: SASL refusals are
/// told the same way, but the mock broker has no SASL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_says_unreachable_and_auth_refused() {
    let (_sim, _cfg, s) = common::four_vendors(20, 292, "").await;
    let base = std::fs::read_to_string(&s.config).unwrap();
    let mut text = base.clone();
    text.push_str(&format!(
        "\n[[sinks]]\nname = \"kafka\"\nkind = \"kafka\"\nbrokers = [\"127.0.0.1:{}\"]\ntopic = \"audit\"\n",
        common::free_port()
    ));
    std::fs::write(&s.config, text).unwrap();
    let (code, out) = common::check_connect(&s);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("sink kafka: unreachable: 127.0.0.1:"), "{out}");
    // librdkafka's own reason, served from its error events.
    assert!(out.contains("Connection refused"), "{out}");

    let c = cluster(&["audit"]);
    c.topic_error(
        "audit",
        rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
    )
    .unwrap();
    std::fs::write(&s.config, &base).unwrap();
    add_kafka_sink(&s, "kafka", &c, "topic = \"audit\"");
    let (code, out) = common::check_connect(&s);
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("sink kafka: auth refused (brokers reachable; topic audit:"),
        "{out}"
    );
}

/// A daemon delivering while every broker goes down for longer than `message_timeout` and
/// comes back, then while the brokers refuse produce requests for a while: the batches that
/// failed are produced again with the agent's backoff, and every event reaches the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_down_mid_run_lose_nothing() {
    let (sim, cfg, s) = common::four_vendors(5000, 293, "page_size = 50\n").await;
    let c = cluster(&["audit"]);
    // Slow brokers, so that the backfill is still being produced when they go down.
    for b in 1..=BROKERS {
        c.broker_round_trip_time(b, Duration::from_millis(30))
            .unwrap();
    }
    add_kafka_sink(
        &s,
        "kafka",
        &c,
        "topic = \"audit\"\nmessage_timeout = \"2s\"",
    );
    let total: usize = Vendor::ALL.iter().map(|v| sim.total_events(*v)).sum();
    let mut agent = common::spawn(&["run", "--config", s.config.to_str().unwrap()]);
    let stderr = agent.stderr.take().unwrap();
    let log = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
    let started = Instant::now();
    while records_on(&c, "audit") == 0 {
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = records_on(&c, "audit");
    for b in 1..=BROKERS {
        c.broker_down(b).unwrap();
    }
    std::thread::sleep(Duration::from_secs(5));
    for b in 1..=BROKERS {
        c.broker_up(b).unwrap();
    }
    // Then produce requests refused: errors librdkafka retries itself.
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    c.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 5],
    );
    let started = Instant::now();
    loop {
        let ids: HashSet<String> = read_topic(&c, "audit").into_iter().map(|r| r.key).collect();
        if ids.len() >= total && common::lines_so_far(&s.out) >= total {
            break;
        }
        if started.elapsed() > Duration::from_secs(180) {
            let _ = agent.kill();
            panic!(
                "after the outage only {} of {total} events arrived",
                ids.len()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    common::signal(&agent, "TERM");
    let st = common::wait_for(&mut agent, Duration::from_secs(30));
    assert!(st.success(), "{st:?}");
    let log = log.join().unwrap();
    let retries = log.matches("retrying delivery").count();
    assert!(
        retries > 0,
        "the outage outlasted message_timeout, yet no delivery was retried:\n{log}"
    );
    let by_id = file_events(&sim, &cfg, &s);
    let records = read_topic(&c, "audit");
    let doubled = check_native(&records, &by_id);
    eprintln!(
        "FIGURES kafka brokers down: {} events, {} records ({before} before the outage), {retries} deliveries retried by the agent, {doubled} events on the topic more than once",
        by_id.len(),
        records.len()
    );
}

/// `run --once` SIGKILLed at random points again and again, then run to the end: every event
/// on the topic (repeats counted: a batch produced but not yet committed is produced again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_mid_run_lose_nothing() {
    // Large enough that eight runs of up to 500 ms each do not finish it.
    let (sim, cfg, s) = common::four_vendors(30_000, 294, "page_size = 200\n").await;
    let c = cluster(&["audit"]);
    add_kafka_sink(&s, "kafka", &c, "topic = \"audit\"");
    let seed = std::env::var("KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("KILL_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let sizes = common::kill_at_random_points(&s, &mut rng, 8, 500);
    let kills = sizes.len();
    eprintln!("{kills} kills; file sizes after each: {sizes:?}");
    assert!(
        kills >= 5,
        "only {kills} kills landed before the run finished"
    );
    let mid = records_on(&c, "audit");
    common::once_ok(&s);
    let by_id = file_events(&sim, &cfg, &s);
    let records = read_topic(&c, "audit");
    let doubled = check_native(&records, &by_id);
    eprintln!(
        "FIGURES kafka SIGKILLs: {kills} kills, {} events, {} records ({mid} when the kills ended), {doubled} events on the topic more than once",
        by_id.len(),
        records.len()
    );
}

/// The agent's CPU (user + system) of its children so far, in seconds.
fn children_cpu() -> f64 {
    // SAFETY: getrusage writes one `rusage` through the pointer, which points at `ru`.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// Throughput (a benchmark, so ignored: `cargo test --test kafka -- --ignored throughput`, best
/// with `AUDITSHIP_TEST_BIN` a release build): a
/// `run --once` backfill of the four emulators into a file sink alone, then into a Kafka sink
/// alone (three mock brokers on loopback, acks = all), each from a new state: events/s and the
/// agent's CPU per event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it with `-- --ignored throughput`"]
async fn throughput_into_the_mock_cluster() {
    let per_vendor: u64 = std::env::var("AUDITSHIP_KAFKA_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25_000);
    let (sim, cfg, file) = common::four_vendors(per_vendor, 295, "page_size = 1000\n").await;
    let total: usize = Vendor::ALL.iter().map(|v| sim.total_events(*v)).sum();
    let c = cluster(&["audit"]);
    let sources: String = Vendor::ALL
        .iter()
        .map(|v| common::source_toml(&sim, &cfg, *v, "page_size = 1000\n"))
        .collect();
    let kafka = common::setup("", &sources);
    let text = std::fs::read_to_string(&kafka.config).unwrap();
    let cut = text.find("[[sinks]]").unwrap();
    std::fs::write(&kafka.config, &text[..cut]).unwrap();
    add_kafka_sink(&kafka, "kafka", &c, "topic = \"audit\"");
    for (what, s) in [("file", &file), ("kafka", &kafka)] {
        let cpu = children_cpu();
        let started = Instant::now();
        common::once_ok(s);
        let wall = started.elapsed().as_secs_f64();
        let cpu = children_cpu() - cpu;
        eprintln!(
            "FIGURES kafka throughput: {what} sink alone, {total} events in {wall:.2} s: {:.0} events/s, agent CPU {cpu:.2} s = {:.2} µs/event",
            total as f64 / wall,
            cpu * 1e6 / total as f64
        );
    }
    assert_eq!(records_on(&c, "audit"), total as i64);
}

/// Config problems name the key and the fix; a password from a file is read and never shown.
#[test]
fn config_problems_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.toml");
    let one = |keys: &str| {
        format!(
            "[agent]\nstate_path = \"state.db\"\n\
             [[sources]]\nname = \"s\"\nkind = \"wasabi_air\"\nurl = \"http://127.0.0.1:9\"\napi_key = \"k\"\n\
             [[sinks]]\nname = \"k\"\nkind = \"kafka\"\n{keys}\n"
        )
    };
    let problems = |keys: &str| match auditship::config::Config::parse(&one(keys), &path) {
        Ok(_) => String::new(),
        Err(e) => e.problems.join("\n"),
    };
    let ok = "brokers = [\"kafka-1:9092\"]\ntopic = \"audit\"";
    assert_eq!(problems(ok), "");
    for (keys, want) in [
        ("brokers = [\"kafka-1\"]\ntopic = \"a\"", "sinks[0].brokers: \"kafka-1\" is not host:port"),
        ("brokers = []\ntopic = \"a\"", "sinks[0].brokers: missing"),
        ("brokers = [\"k:1\"]\ntopic = \"a b\"", "sinks[0].topic: \"a b\" is not a Kafka topic name"),
        (&format!("{ok}\nkey = \"user\""), "sinks[0].key: \"user\" is not a record key; one of id, source"),
        (&format!("{ok}\ncompression = \"snappy\""), "sinks[0].compression: \"snappy\" is not a compression"),
        (&format!("{ok}\nmessage_timeout = \"500ms\""), "sinks[0].message_timeout: must be 1s to 1h"),
        (&format!("{ok}\nmessage_max_bytes = 999"), "sinks[0].message_max_bytes: 999 is out of range"),
        (&format!("{ok}\nca_file = \"ca.pem\""), "sinks[0].ca_file: only used with tls = true"),
        (&format!("{ok}\nsasl_username = \"u\""), "sinks[0].sasl_username: only used with sasl_mechanism"),
        (&format!("{ok}\nsasl_mechanism = \"GSSAPI\"\nsasl_username = \"u\"\nsasl_password = \"p\""),
            "sinks[0].sasl_mechanism: \"GSSAPI\" is not a SASL mechanism; one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
        (&format!("{ok}\nsasl_mechanism = \"PLAIN\""), "sinks[0].sasl_password: missing"),
        (&format!("{ok}\nsasl_mechanism = \"PLAIN\""), "sinks[0].sasl_username: missing"),
        (&format!("{ok}\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"\nsasl_password = \"p\"\nsasl_password_file = \"f\""),
            "sinks[0].sasl_password: set either sasl_password or sasl_password_file, not both"),
        (&format!("{ok}\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"\nsasl_password_file = \"nope\""),
            "sinks[0].sasl_password_file: cannot read"),
    ] {
        let p = problems(keys);
        assert!(p.contains(want), "{keys}: want {want:?} in:\n{p}");
    }
    std::fs::write(dir.path().join("pw"), "s3cret-kafka\n").unwrap();
    let text = one(&format!(
        "{ok}\nsasl_mechanism = \"SCRAM-SHA-512\"\nsasl_username = \"u\"\nsasl_password_file = \"pw\""
    ));
    let c = auditship::config::Config::parse(&text, &path).unwrap();
    let auditship::sinks::SinkSettings::Kafka(k) = &c.sinks[0].settings else {
        panic!("not a kafka sink's settings: {:?}", c.sinks[0].settings);
    };
    let sasl = k.sasl.as_ref().unwrap();
    assert_eq!(sasl.password.expose(), "s3cret-kafka");
    assert_eq!(k.security_protocol(), "sasl_plaintext");
    assert!(!format!("{c:?}").contains("s3cret"));
}
