//! One pace per vendor credential: sources that share a credential against an emulator that
//! allows each credential 4 requests a second (a token bucket of one second's worth; past it,
//! 429 with `Retry-After`). Each is held to the promise: at most 2% of requests
//! answered 429, none sent before a `Retry-After` had passed, the run within 1.3× of the time
//! the limit allows for the requests it served, every event exact. (The build before the pace
//! had every source hear only its own 429s: about 40% of its requests were refused and a third
//! sent early.)

mod common;

use std::time::Instant;

use auditship_sim::{SimConfig, SimHandle, Vendor};
use common::*;

/// Requests a second each credential of the emulator allows.
const LIMIT: f64 = 4.0;

/// A `wasabi_air` source `name` reading the emulator with `key`, pages of 50.
fn air(sim: &SimHandle, cfg: &SimConfig, name: &str, key: &str) -> String {
    format!(
        "[[sources]]\nname = {name:?}\nkind = \"wasabi_air\"\nurl = {:?}\nstart = {:?}\n\
         api_key = {key:?}\npage_size = 50\n\n",
        sim.url(),
        format!("{:.3}", cfg.start),
    )
}

/// What a `--once` run against a rate-limited emulator cost: requests, 429s, requests sent
/// early, seconds; and its stderr.
struct Cost {
    requests: u64,
    rate_limited: u64,
    early: u64,
    secs: f64,
    stderr: String,
}

impl Cost {
    /// Seconds the limit allows for the requests served, `credentials` sharing them evenly: a
    /// full bucket, then `LIMIT` a second.
    fn allowed(&self, credentials: u64) -> f64 {
        let served = (self.requests - self.rate_limited) as f64 / credentials as f64;
        (served - LIMIT).max(0.0) / LIMIT
    }

    fn assert_polite(&self, credentials: u64) {
        let allowed = self.allowed(credentials);
        let what = format!(
            "{} requests, {} answered 429, {} sent before their Retry-After, {:.1}s (the limit allows {allowed:.1}s)",
            self.requests, self.rate_limited, self.early, self.secs
        );
        eprintln!("{what}");
        assert!(
            self.rate_limited as f64 <= 0.02 * self.requests as f64,
            "more than 2% answered 429: {what}"
        );
        assert_eq!(self.early, 0, "requests sent early: {what}");
        assert!(
            self.secs <= 1.3 * allowed,
            "slower than 1.3× the limit: {what}"
        );
    }
}

/// Runs `--once` over `sources` and reads the emulator's counts.
fn once(sim: &SimHandle, sources: &str) -> (Setup, Cost) {
    let s = setup("", sources);
    let started = Instant::now();
    let out = once_ok(&s);
    let secs = started.elapsed().as_secs_f64();
    let stats = sim.stats();
    let cost = Cost {
        // The emulator counts in `requests` those it served: the refused ones are not in it.
        requests: stats.requests.values().sum::<u64>() + stats.rate_limited,
        rate_limited: stats.rate_limited,
        early: stats.sent_early,
        secs,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (s, cost)
}

/// Three Wasabi AiR sources sharing one API key (one tenant read three ways), a two-day
/// backfill in pages of 50: they are paced together, a 429 holds back all three, and the
/// summary says the run was slowed by a rate limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sources_sharing_a_key_stay_under_its_limit() {
    let cfg = SimConfig {
        rate_limit: Some(LIMIT),
        ..backfill(&[Vendor::WasabiAir], 2_000, 2, 27)
    };
    let sim = sim(cfg.clone()).await;
    let names = ["air-a", "air-b", "air-c"];
    let sources: String = names
        .iter()
        .map(|n| air(&sim, &cfg, n, &cfg.api_key))
        .collect();
    let (s, cost) = once(&sim, &sources);
    cost.assert_polite(1);
    let lines = read_lines(&s.out);
    let truth = truth(&sim, &cfg, Vendor::WasabiAir);
    for n in names {
        assert_exactly(&lines, n, &truth);
    }
    assert!(
        cost.stderr.contains("slowed by a rate limit"),
        "{}",
        cost.stderr
    );
    // `state` keeps what the sources' requests met: the emulator's own counts, summed.
    let state = state_json(&s);
    let total = |field: &str| -> u64 {
        state
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[field].as_u64().unwrap())
            .sum()
    };
    assert_eq!(total("requests"), cost.requests, "{state}");
    assert_eq!(total("rate_limited"), cost.rate_limited, "{state}");
    assert!(
        state
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["waited_seconds"].as_f64().unwrap() > 0.0),
        "{state}"
    );
}

/// Twenty sources on five API keys of one emulator, four sources a key: each key is paced on
/// its own, so the run takes the time one key's share allows, not five times that (a pace
/// shared by all, or one key's 429s slowing the others, would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sources_on_five_keys_are_paced_per_key() {
    let keys: Vec<String> = (1..=5).map(|k| format!("key-{k}")).collect();
    let cfg = SimConfig {
        rate_limit: Some(LIMIT),
        api_key: keys[0].clone(),
        more_api_keys: keys[1..].to_vec(),
        ..backfill(&[Vendor::WasabiAir], 1_000, 2, 28)
    };
    let sim = sim(cfg.clone()).await;
    let mut names = Vec::new();
    let mut sources = String::new();
    for (k, key) in keys.iter().enumerate() {
        for i in 0..4 {
            let name = format!("air-{k}-{i}");
            sources.push_str(&air(&sim, &cfg, &name, key));
            names.push(name);
        }
    }
    let (s, cost) = once(&sim, &sources);
    cost.assert_polite(keys.len() as u64);
    let lines = read_lines(&s.out);
    let truth = truth(&sim, &cfg, Vendor::WasabiAir);
    for n in &names {
        assert_exactly(&lines, n, &truth);
    }
}
