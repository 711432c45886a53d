//! The Parquet writer (src/encodings/parquet.rs) against pyarrow and the OCSF 1.8.0 schema:
//! `auditship run --once` reads all four emulators into a native and an OCSF file sink; the
//! events are built again from the native records (the OCSF encoder writes each exactly as the
//! sink did), written as one Parquet file per OCSF class (as Security Lake takes them), one
//! of all classes and one native file; pyarrow (tests/parquet/read.py) reads every file back,
//! and each row is compared with the record the sink wrote and validated by
//! tests/siem/validate.py, the columns checked against the class's attribute types.
//! tests/venv.sh installs pyarrow and the validator into target/parquet-venv.
//!
//! Then the `s3` sink's `layout = "security_lake"` against moto (tests/s3_server): every key in
//! Security Lake's layout, every record valid as the OCSF class of its custom source, every
//! event exactly once, written with the key of a role assumed with an external id.

mod common;
mod s3_server;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use auditship::encodings::ocsf::Ocsf;
use auditship::encodings::parquet::{ocsf_class, Parquet, OCSF_CLASSES};
use auditship::encodings::Encoding;
use auditship::event::{Event, Field};
use auditship::sources::SIEM_TABLES as TABLES;
use auditship_sim::Vendor;
use common::*;
use serde_json::value::RawValue;
use serde_json::Value;

fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target/parquet-venv");
    let st = Command::new("bash")
        .arg(root.join("tests/venv.sh"))
        .arg(&venv)
        .arg(root.join("tests/parquet/requirements.txt"))
        .status()
        .expect("running tests/venv.sh");
    assert!(st.success(), "tests/venv.sh failed: {st}");
    venv.join("bin/python")
}

/// Runs a script of tests/ with the venv's Python; its JSON answer.
fn py(script: &str, args: &[&str]) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python())
        .arg(root.join(script))
        .args(args)
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "{script} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script's answer")
}

/// A native record as the file sink wrote it: `raw` as its exact text.
#[derive(serde::Deserialize)]
struct Native<'a> {
    id: String,
    source: String,
    kind: String,
    vendor: String,
    time: String,
    action: Option<String>,
    #[serde(default)]
    actor: BTreeMap<String, String>,
    #[serde(default)]
    target: BTreeMap<String, String>,
    #[serde(default)]
    project: BTreeMap<String, String>,
    src_ip: Option<String>,
    user_agent: Option<String>,
    #[serde(borrow)]
    raw: &'a RawValue,
}

/// The event a native record was written from.
fn event(line: &str) -> Event {
    let n: Native = serde_json::from_str(line).unwrap();
    let table = TABLES
        .iter()
        .find(|t| t.kind == n.kind)
        .expect("a table per vendor");
    let kind = table.kind;
    let vendor: &'static str = Box::leak(n.vendor.into_boxed_str());
    let time = auditship::timefmt::parse_rfc3339(&n.time).unwrap();
    let mut e = Event::standalone(&n.source, kind, vendor, time, n.raw.get()).with_siem(table);
    e.set(Field::Id, Some(&n.id));
    e.set(Field::Action, n.action.as_deref());
    for (map, [k, i, nm]) in [
        (
            &n.actor,
            [Field::ActorKind, Field::ActorId, Field::ActorName],
        ),
        (
            &n.target,
            [Field::TargetKind, Field::TargetId, Field::TargetName],
        ),
        (
            &n.project,
            [Field::ProjectKind, Field::ProjectId, Field::ProjectName],
        ),
    ] {
        e.set(k, map.get("type").map(String::as_str));
        e.set(i, map.get("id").map(String::as_str));
        e.set(nm, map.get("name").map(String::as_str));
    }
    e.set(Field::SrcIp, n.src_ip.as_deref());
    e.set(Field::UserAgent, n.user_agent.as_deref());
    e
}

/// The rows of a Parquet file, read by pyarrow, as JSON.
fn rows(file: &Path) -> Vec<Value> {
    let out = file.with_extension("rows.ndjson");
    let n = py(
        "tests/parquet/read.py",
        &["rows", file.to_str().unwrap(), out.to_str().unwrap()],
    );
    let lines = read_lines(&out);
    assert_eq!(n["rows"].as_u64().unwrap() as usize, lines.len());
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_emulated_event_read_back_by_pyarrow_is_its_ocsf_record_and_valid() {
    let cfg = backfill(&Vendor::ALL, 1500, 3, 31);
    let sim = sim(cfg.clone()).await;
    let sources: String = Vendor::ALL
        .iter()
        .map(|v| source_toml(&sim, &cfg, *v, ""))
        .collect();
    let s = setup(
        "",
        &format!(
            "{sources}\n[[sinks]]\nname = \"ocsf\"\nkind = \"file\"\npath = \"ocsf.ndjson\"\n\
             fsync = false\nformat = \"ocsf\"\n"
        ),
    );
    once_ok(&s);
    let dir = s.dir.path();
    let native_text = std::fs::read_to_string(&s.out).unwrap();
    let ocsf_text = std::fs::read_to_string(dir.join("ocsf.ndjson")).unwrap();
    let native = read_lines(&s.out);
    for v in Vendor::ALL {
        assert_exactly(&native, &name(v), &truth(&sim, &cfg, v));
    }

    // The events again, each writing the OCSF record the sink wrote, byte for byte.
    let events: Vec<Event> = native_text.lines().map(event).collect();
    let written: BTreeMap<String, Value> = ocsf_text
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["metadata"]["uid"].as_str().unwrap().to_string(), v)
        })
        .collect();
    assert_eq!(written.len(), events.len());
    let lines: BTreeMap<String, &str> = ocsf_text
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["metadata"]["uid"].as_str().unwrap().to_string(), l)
        })
        .collect();
    for e in &events {
        let mut out = Vec::new();
        Ocsf.write(e, true, &mut out);
        assert_eq!(std::str::from_utf8(&out).unwrap(), lines[e.id()]);
    }

    // One file per class: every row is the record the sink wrote, of the file's class, valid,
    // sorted by time; every event in exactly one file.
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for class in OCSF_CLASSES {
        let mine: Vec<&Event> = events.iter().filter(|e| ocsf_class(e) == class).collect();
        assert!(!mine.is_empty(), "the emulators emit class {}", class.uid());
        let file = dir.join(format!("{}.parquet", class.uid()));
        std::fs::write(
            &file,
            Parquet::ocsf_class(TABLES, class)
                .write(mine, true)
                .unwrap(),
        )
        .unwrap();
        let got = rows(&file);
        let mut last = i64::MIN;
        for r in &got {
            let uid = r["metadata"]["uid"].as_str().unwrap();
            assert_eq!(r, &written[uid], "class {}", class.uid());
            assert_eq!(r["class_uid"], class.uid());
            let t = r["time"].as_i64().unwrap();
            assert!(t >= last, "class {}: not sorted by time", class.uid());
            last = t;
            assert!(seen.insert(uid.to_string(), class.uid()).is_none());
        }
        // The validator reads pyarrow's JSON of the rows.
        let v = py(
            "tests/siem/validate.py",
            &["ocsf", file.with_extension("rows.ndjson").to_str().unwrap()],
        );
        assert_eq!(v["events"].as_u64().unwrap() as usize, got.len());
        assert_eq!(v["errors"], serde_json::json!([]), "class {}", class.uid());
        let types = py(
            "tests/parquet/read.py",
            &[
                "ocsf-types",
                file.to_str().unwrap(),
                &class.uid().to_string(),
            ],
        );
        assert_eq!(
            types["errors"],
            serde_json::json!([]),
            "class {}",
            class.uid()
        );
        let meta = py("tests/parquet/read.py", &["meta", file.to_str().unwrap()]);
        assert_eq!(meta["codecs"], serde_json::json!(["ZSTD"]));
        assert_eq!(meta["sorting"], serde_json::json!([["time", false]]));
    }
    assert_eq!(
        seen.keys().collect::<BTreeSet<_>>(),
        written.keys().collect::<BTreeSet<_>>(),
        "every event in exactly one class file"
    );

    // All classes in one file, for a plain archive: the same records.
    let file = dir.join("all.parquet");
    std::fs::write(&file, Parquet::ocsf(TABLES).write(&events, true).unwrap()).unwrap();
    let got = rows(&file);
    assert_eq!(got.len(), events.len());
    for r in &got {
        assert_eq!(r, &written[r["metadata"]["uid"].as_str().unwrap()]);
    }

    // The native file: the native records, `time` a UTC timestamp and `raw` the vendor's text.
    let file = dir.join("native.parquet");
    std::fs::write(&file, Parquet::native().write(&events, true).unwrap()).unwrap();
    let by_id: BTreeMap<&str, &Value> = native
        .iter()
        .map(|l| (l["id"].as_str().unwrap(), l))
        .collect();
    let got = rows(&file);
    assert_eq!(got.len(), events.len());
    for r in &got {
        let mut r = r.clone();
        let raw: Value = serde_json::from_str(r["raw"].as_str().unwrap()).unwrap();
        r["raw"] = raw;
        assert_eq!(&&r, &by_id[r["id"].as_str().unwrap()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_lake_layout_one_valid_ocsf_class_per_custom_source_every_event_once() {
    let m = s3_server::moto();
    m.create("lake");
    let cfg = backfill(&Vendor::ALL, 400, 3, 37);
    let common::World { sim, cfg, s, .. } = common::World::start(cfg, "", "").await;
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text.push_str(&format!(
        "\n[[sinks]]\nname = \"ocsf\"\nkind = \"file\"\npath = \"ocsf.ndjson\"\nfsync = false\nformat = \"ocsf\"\n\
         \n[[sinks]]\nname = \"lake\"\nkind = \"s3\"\n{}format = \"ocsf\"\nobject_format = \"parquet\"\n\
         layout = \"security_lake\"\naccount_id = \"123456789012\"\n\
         security_lake_sources = {{ 3002 = \"vendor-logons\", 6003 = \"vendor-api\" }}\n\
         role_arn = {:?}\nexternal_id = \"auditship-lake\"\nsts_endpoint = {:?}\n",
        m.sink_keys(&m.url, "lake"),
        m.role_arn,
        m.url
    ));
    std::fs::write(&s.config, text).unwrap();
    let out = run(
        &["run", "--once", "--config", s.config.to_str().unwrap()],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("role {} assumed with", m.role_arn)),
        "{err}"
    );
    assert!(!err.contains(&m.secret), "the secret key was logged");
    let native = read_lines(&s.out);
    for v in Vendor::ALL {
        assert_exactly(&native, &name(v), &truth(&sim, &cfg, v));
    }
    let written: BTreeMap<String, Value> = read_lines(&s.dir.path().join("ocsf.ndjson"))
        .into_iter()
        .map(|v| (v["metadata"]["uid"].as_str().unwrap().to_string(), v))
        .collect();
    assert_eq!(written.len(), native.len());

    let sources: BTreeMap<&str, i64> = [
        ("auditship-account-change", 3001),
        ("vendor-logons", 3002),
        ("auditship-entity-management", 3004),
        ("auditship-user-access", 3005),
        ("vendor-api", 6003),
        ("auditship-datastore-activity", 6005),
    ]
    .into_iter()
    .collect();
    let dir = tempfile::tempdir().unwrap();
    let objects = m.fetch("lake", dir.path());
    assert!(!objects.is_empty());
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut classes = BTreeSet::new();
    for (key, content_type, file) in &objects {
        // ext/{source}/region=us-east-1/accountId=123456789012/eventDay=YYYYMMDD/{name}.parquet
        let parts: Vec<&str> = key.split('/').collect();
        assert_eq!(parts.len(), 6, "{key}");
        assert_eq!(parts[0], "ext", "{key}");
        let class = *sources
            .get(parts[1])
            .unwrap_or_else(|| panic!("{key}: not a configured custom source"));
        classes.insert(class);
        assert_eq!(parts[2], "region=us-east-1", "{key}");
        assert_eq!(parts[3], "accountId=123456789012", "{key}");
        let day = parts[4].strip_prefix("eventDay=").expect(key);
        assert!(
            day.len() == 8 && day.bytes().all(|b| b.is_ascii_digit()),
            "{key}"
        );
        let name = parts[5];
        assert!(
            name.ends_with(".parquet")
                && name.len() == "20260102T030405Z-0123456789abcdef.parquet".len(),
            "{key}"
        );
        assert_eq!(content_type, "application/vnd.apache.parquet");

        let file = file.with_extension("parquet");
        std::fs::rename(file.with_extension("bin"), &file).unwrap();
        let got = rows(&file);
        assert!(!got.is_empty(), "{key}: an empty object");
        let mut last = i64::MIN;
        for r in &got {
            let uid = r["metadata"]["uid"].as_str().unwrap();
            assert_eq!(r, &written[uid], "{key}");
            assert_eq!(r["class_uid"], class, "{key}");
            let t = r["time"].as_i64().unwrap();
            assert!(t >= last, "{key}: not sorted by time");
            last = t;
            let utc = jiff::Timestamp::from_millisecond(t).unwrap().to_string();
            assert_eq!(&utc[..10].replace('-', ""), day, "{key}: {utc}");
            assert!(
                seen.insert(uid.to_string(), key.clone()).is_none(),
                "{uid} in {key} and {}",
                seen[uid]
            );
        }
        let v = py(
            "tests/siem/validate.py",
            &["ocsf", file.with_extension("rows.ndjson").to_str().unwrap()],
        );
        assert_eq!(v["events"].as_u64().unwrap() as usize, got.len());
        assert_eq!(v["errors"], serde_json::json!([]), "{key}");
        let types = py(
            "tests/parquet/read.py",
            &["ocsf-types", file.to_str().unwrap(), &class.to_string()],
        );
        assert_eq!(types["errors"], serde_json::json!([]), "{key}");
    }
    assert_eq!(
        seen.keys().collect::<BTreeSet<_>>(),
        written.keys().collect::<BTreeSet<_>>(),
        "every event in exactly one object"
    );
    assert_eq!(classes.len(), 6, "every class had objects: {classes:?}");
    eprintln!(
        "FIGURES security lake: {} events in {} objects, {} bytes of Parquet",
        seen.len(),
        objects.len(),
        objects
            .iter()
            .map(|(_, _, f)| std::fs::metadata(f.with_extension("parquet"))
                .unwrap()
                .len())
            .sum::<u64>()
    );
}

/// `check` of a config with the wasabi source and an s3 sink of `entry`: its exit code and
/// what it said.
fn check_lake(entry: &str) -> (Option<i32>, String) {
    let s = setup(
        "",
        &format!(
            "[[sources]]\nname = \"air\"\nkind = \"wasabi_air\"\nurl = \"http://127.0.0.1:9\"\napi_key = \"k\"\n\
             [[sinks]]\nname = \"lake\"\nkind = \"s3\"\nbucket = \"lake\"\nregion = \"eu-west-1\"\n\
             access_key_id = \"AKIAEXAMPLE\"\nsecret_access_key = \"s\"\n{entry}"
        ),
    );
    let out = run(&["check", "--config", s.config.to_str().unwrap()], &[]);
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code(), said)
}

/// A Security Lake entry that cannot work is refused (exit 2) naming each key; a valid one
/// passes `check`, warned that objects more often than every 5 minutes go against Security
/// Lake's guidance.
#[test]
fn a_bad_security_lake_entry_is_refused_naming_each_key() {
    const LAKE: &str = "layout = \"security_lake\"\n";
    const OCSF_PARQUET: &str = "format = \"ocsf\"\nobject_format = \"parquet\"\n";
    for (entry, wants) in [
        (
            format!(
                "{LAKE}prefix = \"audit/\"\nformat = \"ecs\"\nobject_format = \"ndjson_gzip\"\n\
                 security_lake_sources = {{ 3002 = \"bad name\" }}\n"
            ),
            &[
                "sinks[0].format: layout = \"security_lake\" takes OCSF only",
                "sinks[0].object_format: layout = \"security_lake\" takes Parquet objects only",
                "sinks[0].prefix: layout = \"security_lake\" writes under ext/",
                "sinks[0].account_id: missing",
                "sinks[0].security_lake_sources: 3002: \"bad name\" is not a custom source name",
            ][..],
        ),
        (
            format!("{LAKE}{OCSF_PARQUET}account_id = \"1/2\"\nsecurity_lake_sources = {{ 4001 = \"net\" }}\n"),
            &[
                "sinks[0].account_id: \"1/2\": use letters, digits, - and _ only",
                "sinks[0].security_lake_sources: \"4001\" is not an OCSF class this agent writes; one of 3001, 3002, 3004, 3005, 6003, 6005",
            ],
        ),
        (
            "layout = \"lake\"\n".to_string(),
            &["sinks[0].layout: \"lake\" is not a layout; use partitioned or security_lake"],
        ),
        (
            "account_id = \"1\"\n".to_string(),
            &["sinks[0].account_id: is for layout = \"security_lake\" only"],
        ),
    ] {
        let (code, said) = check_lake(&entry);
        assert_eq!(code, Some(2), "{said}");
        for want in wants {
            assert!(said.contains(want), "{want:?} not in:\n{said}");
        }
    }
    let (code, said) = check_lake(&format!(
        "{LAKE}{OCSF_PARQUET}account_id = \"123456789012\"\nmax_object_age = \"1m\"\n"
    ));
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("max_object_age (1m) is under 5 minutes"),
        "{said}"
    );
}
