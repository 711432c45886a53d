//! `format = "ocsf"` and `"ecs"` against the standards' own references: `auditship run --once`
//! reads all four emulators into three file sinks (native, ocsf, ecs), and every record is
//! checked by tests/siem/validate.py — OCSF by the 1.8.0 schema of PyPI's `ocsf-json-schema`
//! with `jsonschema`, plus the type_uid, caption and no-null rules; ECS by ECS's flat field
//! reference from npm's `@elastic/ecs`. tests/siem/setup-venv.sh installs them under target/.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use auditship::event::{Event, Field};
use auditship::sources::SIEM_TABLES as TABLES;
use auditship_sim::Vendor;
use common::*;
use serde_json::Value;

fn venv() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target/siem-venv");
    if !venv.join("ecs_flat.json").exists() || !venv.join("bin/python").exists() {
        let st = Command::new("bash")
            .arg(root.join("tests/siem/setup-venv.sh"))
            .status()
            .expect("running tests/siem/setup-venv.sh");
        assert!(st.success(), "tests/siem/setup-venv.sh failed: {st}");
    }
    venv
}

/// Runs the validator over `file`; the errors it found, by line.
fn validate(format: &str, file: &Path) -> (usize, Vec<(usize, String)>) {
    let venv = venv();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/siem/validate.py");
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.arg(script).arg(format).arg(file);
    if format == "ecs" {
        cmd.arg(venv.join("ecs_flat.json"));
        cmd.args(TABLES.iter().map(|t| t.namespace));
    }
    let out = cmd.output().expect("running validate.py");
    assert!(
        out.status.success(),
        "validate.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("validate.py's answer");
    let errors = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap() as usize,
                e["error"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (v["events"].as_u64().unwrap() as usize, errors)
}

/// Asserts that the validator read every one of `lines` (the records in `file`) and took them all.
fn assert_valid(format: &str, file: &Path, lines: &[Value]) {
    let (n, errors) = validate(format, file);
    assert_eq!(n, lines.len());
    assert!(
        errors.is_empty(),
        "{} {format} errors, the first: {:?}\nits record: {}",
        errors.len(),
        &errors[..errors.len().min(10)],
        lines[errors[0].0]
    );
}

/// Writes the `broken` records to `file` and asserts that each drew the error its mutation
/// is about.
fn refused_each(format: &str, file: &Path, broken: &[(Value, &str)]) {
    let text: String = broken.iter().map(|(l, _)| format!("{l}\n")).collect();
    std::fs::write(file, text).unwrap();
    let (_, errors) = validate(format, file);
    for (i, (_, want)) in broken.iter().enumerate() {
        assert!(
            errors
                .iter()
                .any(|(line, e)| *line == i && e.contains(want)),
            "record {i} was not refused with {want:?}: {errors:?}"
        );
    }
}

const SINKS: &str = "
[[sinks]]
name = \"ocsf\"
kind = \"file\"
path = \"ocsf.ndjson\"
fsync = false
format = \"ocsf\"

[[sinks]]
name = \"ecs\"
kind = \"file\"
path = \"ecs.ndjson\"
fsync = false
format = \"ecs\"
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_emulated_event_of_every_vendor_is_valid_ocsf_and_ecs() {
    let cfg = backfill(&Vendor::ALL, 3000, 3, 17);
    let sim = sim(cfg.clone()).await;
    let sources: String = Vendor::ALL
        .iter()
        .map(|v| source_toml(&sim, &cfg, *v, ""))
        .collect();
    let s = setup("", &format!("{sources}{SINKS}"));
    once_ok(&s);
    let dir = s.dir.path();
    let native = read_lines(&s.out);
    let ocsf = read_lines(&dir.join("ocsf.ndjson"));
    let ecs = read_lines(&dir.join("ecs.ndjson"));
    for v in Vendor::ALL {
        assert_exactly(&native, &name(v), &truth(&sim, &cfg, v));
    }
    assert_eq!(ocsf.len(), native.len());
    assert_eq!(ecs.len(), native.len());

    // Each record is its native event's: the same ids, and the vendor's JSON carried whole.
    let ids = |lines: &[Value], f: &dyn Fn(&Value) -> Value| -> BTreeSet<String> {
        lines
            .iter()
            .map(|l| f(l).as_str().unwrap().to_string())
            .collect()
    };
    let native_ids = ids(&native, &|l| l["id"].clone());
    assert_eq!(native_ids.len(), native.len(), "ids are unique");
    assert_eq!(ids(&ocsf, &|l| l["metadata"]["uid"].clone()), native_ids);
    assert_eq!(ids(&ecs, &|l| l["event"]["id"].clone()), native_ids);
    let raw_of: BTreeMap<&str, &Value> = native
        .iter()
        .map(|l| (l["id"].as_str().unwrap(), &l["raw"]))
        .collect();
    for l in &ocsf {
        let raw: Value = serde_json::from_str(l["raw_data"].as_str().unwrap()).unwrap();
        assert_eq!(&&raw, &raw_of[l["metadata"]["uid"].as_str().unwrap()]);
    }
    for l in &ecs {
        let raw: Value = serde_json::from_str(l["event"]["original"].as_str().unwrap()).unwrap();
        assert_eq!(&&raw, &raw_of[l["event"]["id"].as_str().unwrap()]);
    }

    // Every action the emulators emit has its own row (none fell to a table's default), and
    // every row was exercised: the tables map what the vendors send, and the test saw all of it.
    let mut seen: BTreeSet<(&str, usize)> = BTreeSet::new();
    for l in &native {
        let kind = TABLES
            .iter()
            .find(|t| t.kind == l["kind"].as_str().unwrap())
            .expect("a table per vendor");
        let mut e = Event::standalone("x", kind.kind, "v", 0, &l["raw"].to_string());
        e.set(Field::Action, l["action"].as_str());
        e.set(Field::TargetKind, l["target"]["type"].as_str());
        let rule = kind.rule(&e);
        assert!(
            !std::ptr::eq(rule, &kind.other),
            "{} action {} has no row of its own",
            kind.kind,
            l["action"]
        );
        let at = kind
            .rules
            .iter()
            .position(|r| std::ptr::eq(r, rule))
            .unwrap();
        seen.insert((kind.kind, at));
    }
    for t in TABLES {
        for (i, r) in t.rules.iter().enumerate() {
            assert!(
                seen.contains(&(t.kind, i)),
                "{} row {:?} was never emitted by the emulator",
                t.kind,
                r.action
            );
        }
    }

    assert_valid("ocsf", &dir.join("ocsf.ndjson"), &ocsf);
    assert_valid("ecs", &dir.join("ecs.ndjson"), &ecs);
    let classes: BTreeSet<i64> = ocsf
        .iter()
        .map(|l| l["class_uid"].as_i64().unwrap())
        .collect();
    assert_eq!(
        classes,
        BTreeSet::from([3001, 3002, 3004, 3005, 6003, 6005]),
        "every class of the tables was validated"
    );

    // A broken mapping is refused: each mutation of a valid record draws its own error — a
    // wrong class (the class's schema misses its required object), a type_uid that does not
    // follow, a caption not of its id, a null, seconds for milliseconds.
    let pick = |class: i64| {
        ocsf.iter()
            .find(|l| l["class_uid"] == class)
            .unwrap()
            .clone()
    };
    let mut broken: Vec<(Value, &str)> = Vec::new();
    let mut e = pick(3002);
    e["class_uid"] = 3004.into(); // the wrong class, type_uid kept consistent with it
    e["type_uid"] = (3004 * 100 + e["activity_id"].as_i64().unwrap()).into();
    e["class_name"] = "Entity Management".into();
    broken.push((e, "'entity' is a required property"));
    let mut e = pick(3004);
    e["type_uid"] = (e["type_uid"].as_i64().unwrap() + 1).into();
    broken.push((e, "!= class_uid*100 + activity_id"));
    let mut e = pick(6003);
    e["class_uid"] = 6005.into();
    e["type_uid"] = (6005 * 100 + e["activity_id"].as_i64().unwrap()).into();
    broken.push((e, "is not valid under any of the given schemas"));
    let mut e = pick(3005);
    e["activity_name"] = "Create".into();
    broken.push((e, "the caption of activity_id=1 is 'Assign Privileges'"));
    let mut e = pick(6005);
    e["metadata"]["original_time"] = Value::Null;
    broken.push((e, "null at metadata.original_time"));
    let mut e = pick(3001);
    e["time"] = (e["time"].as_i64().unwrap() / 1000).into();
    broken.push((e, "is not epoch milliseconds"));
    refused_each("ocsf", &dir.join("broken-ocsf.ndjson"), &broken);

    let mut broken: Vec<(Value, &str)> = Vec::new();
    let mut d = ecs[0].clone();
    d["event"]["category"] = serde_json::json!(["audit"]);
    broken.push((d, "event.category 'audit' is not an allowed value"));
    let mut d = ecs[0].clone();
    d["event"]["type"] = serde_json::json!(["installation"]);
    broken.push((d, "event.type 'installation' is not expected"));
    let mut d = ecs[0].clone();
    d["user"]["nickname"] = "x".into();
    broken.push((d, "user.nickname is not an ECS field"));
    let mut d = ecs[0].clone();
    d["source"] = serde_json::json!({"ip": "not-an-ip"});
    broken.push((d, "source.ip 'not-an-ip' is not an ip"));
    let mut d = ecs[0].clone();
    d["event"]["action"] = serde_json::json!(["x"]);
    broken.push((d, "event.action is an array"));
    refused_each("ecs", &dir.join("broken-ecs.ndjson"), &broken);
}
