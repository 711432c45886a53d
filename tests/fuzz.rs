//! Fuzzing on the stable toolchain (issue 18): a bounded loop that mutates real vendor pages
//! (fetched from the emulators over HTTP) and real config files, and feeds them to each page
//! reader and to the config loader. No input may panic. An input that does is written to
//! `tests/fuzz-regressions/` and the test fails; every file kept there is replayed by
//! `fuzz_regressions_do_not_panic`, so a crash once found stays a test.
//!
//! `AUDITSHIP_FUZZ_ITERATIONS` sets the mutations per target (default 1500; the soak runs use
//! 100 000), `AUDITSHIP_FUZZ_SEED` the seed (default: a new one each run, printed).

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use auditship::config::Config;
use auditship::sources::{domino_audit, domino_datasource, domo, page_text, wasabi_air};
use auditship_sim::{SimConfig, Vendor};

const TARGETS: [&str; 5] = [
    "domino_audit",
    "domino_datasource",
    "domo",
    "wasabi_air",
    "config",
];

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions")
}

/// Feeds one input to one target and says whether it was read without error. Errors are
/// fine; only a panic is a finding.
fn feed(target: &str, input: &[u8]) -> bool {
    let source: Arc<str> = Arc::from("fuzz");
    if target == "config" {
        return std::str::from_utf8(input).is_ok_and(|text| {
            Config::parse(text, Path::new("/nonexistent-fuzz-dir/auditship.toml")).is_ok()
        });
    }
    let Ok(page) = page_text(input.to_vec()) else {
        return false;
    };
    match target {
        "domino_audit" => domino_audit::read_page(&source, &page, 100).is_ok(),
        "domino_datasource" => domino_datasource::read_page(&source, &page, 100).is_ok(),
        "domo" => domo::read_page(
            &source,
            &jiff::tz::TimeZone::get("America/Denver").unwrap(),
            &page,
            100,
            (0, i64::MAX),
        )
        .is_ok(),
        "wasabi_air" => wasabi_air::read_page(&source, &page, 100).is_ok(),
        other => panic!("no target {other}"),
    }
}

/// Bytes that matter to JSON and TOML readers.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"null",
    b"true",
    b"-",
    b"1e999",
    b"-0.0",
    b"9223372036854775808",
    b"\\u0000",
    b"\\ud800",
    b"\\uDFFF",
    b"\xf0\x9f\x92\xa9",
    b"\xc3",
    b"\n",
    b"  ",
    b"\t",
    b"\r\n",
    b"=",
    b"[[sources]]",
    b"[[sinks]]",
    b"${",
    b"}",
    b"\"\"\"",
    b"'",
    b"#",
    b"2024-02-30T25:61:61Z",
    b"1970-01-01T00:00:00",
    b"T",
    b"Z",
    b"+99:99",
    b".999999999999",
    b"\"timestamp\"",
    b"\"events\"",
    b"\"audit_events\"",
    b"\"total\"",
    b"\"id\"",
    b"\"time\"",
    b"0",
    b"-1",
    b"18446744073709551616",
];

/// One to eight random edits of `input`, sometimes spliced with `other`.
fn mutate(rng: &mut fastrand::Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.usize(1..=8) {
        let len = v.len();
        match rng.u8(..9) {
            0 if len > 0 => {
                let i = rng.usize(..len);
                v[i] ^= 1 << rng.u8(..8);
            }
            1 => {
                let i = rng.usize(..=len);
                v.insert(i, rng.u8(..));
            }
            2 if len > 0 => {
                let a = rng.usize(..len);
                let b = (a + rng.usize(..=64)).min(len);
                v.drain(a..b);
            }
            3 if len > 0 => {
                let a = rng.usize(..len);
                let b = (a + rng.usize(..=256)).min(len);
                let chunk = v[a..b].to_vec();
                let at = rng.usize(..=v.len());
                v.splice(at..at, chunk);
            }
            4 => {
                let t = TOKENS[rng.usize(..TOKENS.len())];
                let at = rng.usize(..=len);
                v.splice(at..at, t.iter().copied());
            }
            5 if len > 0 => v.truncate(rng.usize(..len)),
            6 if !other.is_empty() && len > 0 => {
                let a = rng.usize(..len);
                let b = rng.usize(..other.len());
                v.truncate(a);
                v.extend_from_slice(&other[b..]);
            }
            7 if len > 0 => {
                // Overwrite a run with one token repeated (deep nesting, long numbers).
                let t = TOKENS[rng.usize(..TOKENS.len())];
                let at = rng.usize(..len);
                for _ in 0..rng.usize(1..200) {
                    v.splice(at..at, t.iter().copied());
                }
            }
            _ => {
                // Whitespace where a formatting gateway would put it.
                let at = rng.usize(..=len);
                v.splice(at..at, b"\n    ".iter().copied());
            }
        }
    }
    v
}

/// Real pages of every vendor, fetched from the emulator as the agent fetches them.
async fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    let cfg = SimConfig {
        seed: 1899,
        events: 400,
        twin_fraction: 0.05,
        ..common::backfill(&Vendor::ALL, 400, 1, 1899)
    };
    let sim = common::sim(cfg.clone()).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = sim.url();
    let key = cfg.api_key.clone();
    let mut out = Vec::new();
    let get = |path: String, header: (&'static str, String)| {
        let http = http.clone();
        async move {
            let r = http
                .get(path)
                .header(header.0, header.1)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{:?}", r.status());
            r.bytes().await.unwrap().to_vec()
        }
    };
    for limit in [1, 7, 40] {
        out.push((
            "domino_audit",
            get(
                format!("{url}/api/audittrail/v1/auditevents?limit={limit}"),
                ("X-Domino-Api-Key", key.clone()),
            )
            .await,
        ));
        out.push((
            "wasabi_air",
            get(
                format!("{url}/api/data/audit?count={limit}"),
                ("Authorization", format!("Bearer {key}")),
            )
            .await,
        ));
    }
    out.push((
        "domino_datasource",
        get(
            format!("{url}/api/datasource/v1/audit"),
            ("X-Domino-Api-Key", key.clone()),
        )
        .await,
    ));
    let token: serde_json::Value = http
        .post(format!(
            "{url}/oauth/token?grant_type=client_credentials&scope=audit"
        ))
        .basic_auth(&cfg.domo_client_id, Some(&cfg.domo_client_secret))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_string();
    let (start, end) = (cfg.start.as_millisecond(), cfg.end.as_millisecond());
    for limit in [1, 7, 40] {
        out.push((
            "domo",
            get(
                format!("{url}/v1/audit?start={start}&end={end}&limit={limit}"),
                ("Authorization", format!("bearer {token}")),
            )
            .await,
        ));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    out.push((
        "config",
        std::fs::read(root.join("config/auditship.toml")).unwrap(),
    ));
    out.push((
        "config",
        format!(
            "[agent]\nstate_path = \"s.db\"\npoll_interval = \"1s\"\nlag = \"2s\"\n\
             {}\n[[sinks]]\nname = \"f\"\nkind = \"file\"\npath = \"o\"\n\
             [[sinks]]\nname = \"h\"\nkind = \"http\"\nurl = \"http://x/\"\nencoding = \"splunk_hec\"\n",
            Vendor::ALL
                .iter()
                .map(|v| common::source_toml(&sim, &cfg, *v, "page_size = 10\n"))
                .collect::<String>()
        )
        .into_bytes(),
    ));
    for (t, page) in &out {
        assert!(!page.is_empty(), "{t}: empty page");
    }
    out
}

/// Runs `input` on `target`; a panic is kept as a regression file and reported. Whether the
/// input was read without error.
fn check(target: &str, input: &[u8], found: &mut Vec<String>) -> bool {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = catch_unwind(AssertUnwindSafe(|| feed(target, input)));
    std::panic::set_hook(hook);
    let p = match r {
        Ok(read) => return read,
        Err(p) => p,
    };
    {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let hash = blake3::hash(input).to_hex();
        let path = regressions_dir().join(format!("{target}-{}.bin", &hash[..16]));
        let _ = std::fs::create_dir_all(regressions_dir());
        let _ = std::fs::write(&path, input);
        found.push(format!("{target}: {msg} (kept as {})", path.display()));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_pages_and_configs_never_panic() {
    let iterations: usize = std::env::var("AUDITSHIP_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let seed: u64 = std::env::var("AUDITSHIP_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let corpus = corpus().await;
    let started = std::time::Instant::now();
    let mut found = Vec::new();
    let mut rng = fastrand::Rng::with_seed(seed);
    // Mutated inputs that still read without error: the loop gets past the first byte.
    let mut read = 0;
    for target in TARGETS {
        let mine: Vec<&Vec<u8>> = corpus
            .iter()
            .filter(|(t, _)| *t == target)
            .map(|(_, p)| p)
            .collect();
        // The unmutated inputs first: real pages must read (the shipped config names secret
        // files and variables this test does not have).
        for p in &mine {
            let ok = check(target, p, &mut found);
            assert!(
                ok || target == "config",
                "{target}: a real page does not read"
            );
        }
        for _ in 0..iterations {
            let a = mine[rng.usize(..mine.len())];
            let b = &corpus[rng.usize(..corpus.len())].1;
            let input = mutate(&mut rng, a, b);
            read += check(target, &input, &mut found) as usize;
        }
    }
    eprintln!(
        "FIGURES fuzz: seed {seed} targets {} iterations {} each, inputs {} ({read} still read) in {:.1}s, panics {}",
        TARGETS.len(),
        iterations,
        TARGETS.len() * iterations,
        started.elapsed().as_secs_f64(),
        found.len()
    );
    assert!(
        found.is_empty(),
        "seed {seed}: {} inputs panicked:\n{}",
        found.len(),
        found.join("\n")
    );
}

/// Every input once found to panic, replayed.
#[test]
fn fuzz_regressions_do_not_panic() {
    let mut n = 0;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(regressions_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let Some(target) = TARGETS.iter().find(|t| {
            name.strip_prefix(**t)
                .is_some_and(|rest| rest.starts_with('-'))
        }) else {
            continue;
        };
        let input = std::fs::read(&path).unwrap();
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = catch_unwind(AssertUnwindSafe(|| feed(target, &input)));
        std::panic::set_hook(hook);
        if r.is_err() {
            found.push(name);
        }
        n += 1;
    }
    eprintln!("FIGURES fuzz regressions: {n} replayed");
    assert!(found.is_empty(), "still panicking: {found:?}");
}
