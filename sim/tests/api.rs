//! The emulators over real loopback HTTP: paging matches the truth, auth, Domo tokens and time
//! zones, Wasabi precision, faults, determinism and late events.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use auditship_sim::{start, Fault, SimConfig, SimHandle, SimStats, Vendor};
use jiff::{SignedDuration, Timestamp};
use reqwest::{Client, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

const KEY: &str = "sim-api-key";

fn at(s: &str) -> Timestamp {
    s.parse::<Timestamp>().unwrap()
}

/// A config over a fixed span in the past (so every event is visible and runs are repeatable).
fn past(events: u64) -> SimConfig {
    SimConfig {
        start: at("2024-01-01T00:00:00Z"),
        end: at("2024-01-03T00:00:00Z"),
        events,
        ..SimConfig::default()
    }
}

async fn sim(cfg: SimConfig) -> SimHandle {
    start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn raw(v: Vec<Box<RawValue>>) -> Vec<String> {
    v.into_iter().map(|r| r.get().to_string()).collect()
}

fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

/// Fraction digits of an RFC 3339 time: none, three, nine.
#[derive(Clone, Copy)]
enum SecondsFormat {
    Secs,
    Millis,
    Nanos,
}

/// RFC 3339 in UTC (`Z`) with exactly the digits `f` asks for.
fn iso(t: Timestamp, f: SecondsFormat) -> String {
    let digits = match f {
        SecondsFormat::Secs => 0,
        SecondsFormat::Millis => 3,
        SecondsFormat::Nanos => 9,
    };
    format!("{t:.digits$}")
}

#[derive(Deserialize)]
struct DominoPage {
    events: Vec<Box<RawValue>>,
    #[serde(rename = "estimatedMatches")]
    estimated_matches: usize,
}

#[derive(Deserialize)]
struct WasabiPage {
    audit_events: Vec<Box<RawValue>>,
    total: usize,
    page: usize,
}

async fn domo_token(c: &Client, s: &SimHandle) -> String {
    let r = c
        .get(format!(
            "{}/oauth/token?grant_type=client_credentials&scope=audit",
            s.url()
        ))
        .basic_auth("sim-client", Some("sim-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

/// Pages Domino audit newest first; returns the events oldest first and the last estimate.
async fn page_domino(
    c: &Client,
    s: &SimHandle,
    from: Timestamp,
    to: Timestamp,
    limit: usize,
    extra: &str,
) -> (Vec<String>, usize) {
    let mut all = Vec::new();
    let mut offset = 0;
    let estimate = loop {
        let url = format!(
            "{}/api/audittrail/v1/auditevents?startTimestamp={}&endTimestamp={}&limit={limit}&offset={offset}&sort=-timestamp{extra}",
            s.url(), ms(from), ms(to)
        );
        let r = c
            .get(url)
            .header("X-Domino-Api-Key", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let p: DominoPage = r.json().await.unwrap();
        let n = p.events.len();
        all.extend(raw(p.events));
        offset += n;
        if n < limit {
            break p.estimated_matches;
        }
    };
    all.reverse();
    (all, estimate)
}

async fn page_domo(
    c: &Client,
    s: &SimHandle,
    token: &str,
    from: Timestamp,
    to: Timestamp,
    limit: usize,
) -> Vec<String> {
    let mut all = Vec::new();
    let mut offset = 0;
    loop {
        let url = format!(
            "{}/v1/audit?start={}&end={}&limit={limit}&offset={offset}",
            s.url(),
            ms(from),
            ms(to)
        );
        let r = c
            .get(url)
            .header("Authorization", format!("bearer {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let page: Vec<Box<RawValue>> = r.json().await.unwrap();
        let n = page.len();
        all.extend(raw(page));
        offset += n;
        if n < limit {
            break;
        }
    }
    all.reverse();
    all
}

async fn page_wasabi(c: &Client, s: &SimHandle, query: &str, count: usize) -> (Vec<String>, usize) {
    let mut all = Vec::new();
    let mut page = 0;
    loop {
        let url = format!(
            "{}/api/data/audit?{query}&count={count}&page={page}&order=ctime",
            s.url()
        );
        let r = c.get(url).bearer_auth(KEY).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let p: WasabiPage = r.json().await.unwrap();
        assert_eq!(p.page, page);
        all.extend(raw(p.audit_events));
        if (page + 1) * count >= p.total {
            return (all, p.total);
        }
        page += 1;
    }
}

#[tokio::test]
async fn paging_each_vendor_returns_exactly_the_truth() {
    let s = sim(SimConfig {
        twin_fraction: 0.05,
        ..past(6000)
    })
    .await;
    let c = Client::new();
    let (from, to) = (at("2024-01-01T06:00:00Z"), at("2024-01-02T18:00:00Z"));

    let want = s.events(Vendor::DominoAudit, from, to);
    assert!(want.len() > 3000, "{}", want.len());
    let (got, estimate) = page_domino(&c, &s, from, to, 97, "").await;
    assert_eq!(estimate, want.len());
    assert_eq!(got, want);

    // sort=timestamp pages oldest first, ties in the same stable order.
    let mut asc = Vec::new();
    for offset in (0..).step_by(1000) {
        let url = format!(
            "{}/api/audittrail/v1/auditevents?startTimestamp={}&endTimestamp={}&limit=1000&offset={offset}&sort=timestamp",
            s.url(),
            ms(from),
            ms(to)
        );
        let p: DominoPage = c
            .get(url)
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let n = p.events.len();
        asc.extend(raw(p.events));
        if n < 1000 {
            break;
        }
    }
    assert_eq!(asc, want);

    let want = s.events(Vendor::DominoDatasource, from, to);
    let url = format!(
        "{}/api/datasource/v1/audit?startTime={}&endTime={}",
        s.url(),
        iso(from, SecondsFormat::Millis),
        iso(to, SecondsFormat::Millis)
    );
    let r = c
        .get(url)
        .header("X-Domino-Api-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(raw(r.json().await.unwrap()), want);

    let token = domo_token(&c, &s).await;
    let want = s.events(Vendor::Domo, from, to);
    assert_eq!(page_domo(&c, &s, &token, from, to, 113).await, want);

    // Wasabi's bounds are exclusive: ask from 1 ns before to get [from, to).
    let want = s.events(Vendor::WasabiAir, from, to);
    let q = format!(
        "from={}&to={}",
        iso(from - SignedDuration::from_nanos(1), SecondsFormat::Nanos),
        iso(to, SecondsFormat::Nanos)
    );
    let (got, total) = page_wasabi(&c, &s, &q, 250).await;
    assert_eq!(total, want.len());
    assert_eq!(got, want);

    // The admin endpoint serves the same truth.
    let url = format!(
        "{}/_sim/events?vendor=domo&from={}&to={}",
        s.url(),
        iso(from, SecondsFormat::Secs),
        iso(to, SecondsFormat::Secs)
    );
    let admin: Vec<Box<RawValue>> = c.get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(raw(admin), s.events(Vendor::Domo, from, to));
    s.shutdown().await;
}

/// Parses each event's own time field back to an instant.
fn times(events: &[String], field: &str) -> Vec<Value> {
    events
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap()[field].clone())
        .collect()
}

#[tokio::test]
async fn window_edges_are_start_inclusive_end_exclusive_except_wasabi() {
    let s = sim(past(3000)).await;
    let c = Client::new();
    let all = s.events(
        Vendor::DominoAudit,
        at("2024-01-01T00:00:00Z"),
        at("2024-01-03T00:00:00Z"),
    );
    let t = times(&all[1000..1001], "timestamp")[0].as_i64().unwrap();
    let edge = Timestamp::from_millisecond(t).unwrap();
    let (inc, _) = page_domino(&c, &s, edge, edge + SignedDuration::from_millis(1), 10, "").await;
    assert!(inc.contains(&all[1000]));
    let (exc, _) = page_domino(&c, &s, edge - SignedDuration::from_secs(1), edge, 10, "").await;
    assert!(!exc.contains(&all[1000]));

    let all = s.events(
        Vendor::WasabiAir,
        at("2024-01-01T00:00:00Z"),
        at("2024-01-03T00:00:00Z"),
    );
    let t = times(&all[500..501], "time")[0]
        .as_str()
        .unwrap()
        .to_string();
    let (after, _) = page_wasabi(&c, &s, &format!("from={t}&to=2024-01-03T00:00:00Z"), 1000).await;
    assert!(!after.contains(&all[500]) && after.contains(&all[501]));
    let (before, _) = page_wasabi(&c, &s, &format!("from=2024-01-01T00:00:00Z&to={t}"), 1000).await;
    assert!(!before.contains(&all[500]) && before.contains(&all[499]));
    s.shutdown().await;
}

#[tokio::test]
async fn filters_are_applied() {
    let s = sim(past(3000)).await;
    let c = Client::new();
    let (from, to) = (at("2024-01-01T00:00:00Z"), at("2024-01-03T00:00:00Z"));
    let (got, estimate) = page_domino(&c, &s, from, to, 1000, "&event=Download%20Files").await;
    let want: Vec<String> = s
        .events(Vendor::DominoAudit, from, to)
        .into_iter()
        .filter(|e| e.contains(r#""eventName":"Download Files""#))
        .collect();
    assert!(!want.is_empty());
    assert_eq!((got, estimate), (want.clone(), want.len()));

    let first: Value = serde_json::from_str(&want[0]).unwrap();
    let project = first["in"]["name"].as_str().unwrap();
    let (got, _) = page_domino(
        &c,
        &s,
        from,
        to,
        1000,
        &format!("&withinProjectName={project}&targetType=file"),
    )
    .await;
    assert!(got.contains(&want[0]));
    for e in &got {
        let v: Value = serde_json::from_str(e).unwrap();
        assert_eq!(v["in"]["name"], project);
        assert_eq!(v["targets"][0]["entity"]["entityType"], "file");
    }

    let url = format!("{}/api/datasource/v1/audit?startTime=2024-01-01T00:00:00.000Z&endTime=2024-01-03T00:00:00.000Z&eventKinds=CreateDataSource&eventKinds=DeleteDataSource", s.url());
    let got: Vec<Value> = c
        .get(url)
        .header("X-Domino-Api-Key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!got.is_empty());
    assert!(got
        .iter()
        .all(|e| e["eventKind"] == "CreateDataSource" || e["eventKind"] == "DeleteDataSource"));

    let user = serde_json::from_str::<Value>(&s.events(Vendor::WasabiAir, from, to)[0]).unwrap()
        ["user_id"]
        .clone();
    let (got, total) = page_wasabi(
        &c,
        &s,
        &format!("user_id={}&action_key=login", user.as_str().unwrap()),
        50,
    )
    .await;
    assert_eq!(got.len(), total);
    for e in &got {
        let v: Value = serde_json::from_str(e).unwrap();
        assert_eq!(
            (&v["user_id"], v["action_key"].as_str()),
            (&user, Some("login"))
        );
    }
    s.shutdown().await;
}

#[tokio::test]
async fn twins_are_identical_and_all_served() {
    let s = sim(SimConfig {
        twin_fraction: 0.3,
        ..past(2000)
    })
    .await;
    let c = Client::new();
    let (from, to) = (at("2024-01-01T00:00:00Z"), at("2024-01-03T00:00:00Z"));
    for v in [Vendor::DominoAudit, Vendor::DominoDatasource, Vendor::Domo] {
        let e = s.events(v, from, to);
        let twins = e.windows(2).filter(|w| w[0] == w[1]).count();
        assert!(twins > 200, "{v}: {twins} twins");
    }
    let e = s.events(Vendor::WasabiAir, from, to);
    assert_eq!(e.iter().collect::<HashSet<_>>().len(), e.len());
    let token = domo_token(&c, &s).await;
    assert_eq!(
        page_domo(&c, &s, &token, from, to, 1000).await,
        s.events(Vendor::Domo, from, to)
    );
    s.shutdown().await;
}

#[tokio::test]
async fn every_vendor_rejects_bad_credentials() {
    let s = sim(past(100)).await;
    let c = Client::new();
    let u = s.url();
    let domino = format!("{u}/api/audittrail/v1/auditevents");
    let ds = format!("{u}/api/datasource/v1/audit");
    let wasabi = format!("{u}/api/data/audit");

    for req in [
        c.get(&domino),
        c.get(&domino).header("X-Domino-Api-Key", "wrong"),
        c.get(&domino).bearer_auth("wrong"),
        c.get(&ds),
        c.get(&ds).bearer_auth(KEY),
        c.get(&wasabi),
        c.get(&wasabi).header("X-Domino-Api-Key", KEY),
        c.get(&wasabi).bearer_auth("wrong"),
        c.get(format!("{u}/api/data/audit/filters")),
        c.get(format!("{u}/v1/audit?start=0")),
        c.get(format!("{u}/v1/audit?start=0"))
            .bearer_auth("made-up"),
    ] {
        let r = req.send().await.unwrap();
        let url = r.url().to_string();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{url}");
        let body: Value = r.json().await.unwrap();
        assert!(body.is_object(), "{url}: {body}");
    }
    for req in [
        c.get(&domino).header("X-Domino-Api-Key", KEY),
        c.get(&domino)
            .header("Authorization", format!("Bearer {KEY}")),
        c.get(&ds).header("X-Domino-Api-Key", KEY),
        c.get(&wasabi).bearer_auth(KEY),
        c.get(format!("{u}/api/data/audit/filters"))
            .bearer_auth(KEY),
    ] {
        assert_eq!(req.send().await.unwrap().status(), StatusCode::OK);
    }

    // Domo's token endpoint wants the right client credentials, and errors look like Domo's.
    let r = c
        .post(format!(
            "{u}/oauth/token?grant_type=client_credentials&scope=audit"
        ))
        .basic_auth("sim-client", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], 401);
    assert_eq!(body["statusReason"], "Unauthorized");
    assert_eq!(body["path"], "/oauth/token");
    assert!(body["message"].is_string() && body["toe"].is_string());

    let stats = s.stats();
    assert_eq!(stats.requests["domino_audit"], 5);
    assert_eq!(stats.requests["domino_datasource"], 3);
    assert_eq!(stats.requests["wasabi_air"], 6);
    assert_eq!(stats.requests["domo"], 2);
    s.shutdown().await;
}

#[tokio::test]
async fn bad_parameters_get_400() {
    let s = sim(past(100)).await;
    let c = Client::new();
    let u = s.url();
    let token = domo_token(&c, &s).await;
    for (req, what) in [
        (
            c.get(format!("{u}/api/audittrail/v1/auditevents?limit=1001"))
                .header("X-Domino-Api-Key", KEY),
            "domino limit",
        ),
        (
            c.get(format!(
                "{u}/api/audittrail/v1/auditevents?startTimestamp=yesterday"
            ))
            .header("X-Domino-Api-Key", KEY),
            "domino start",
        ),
        (
            c.get(format!("{u}/api/datasource/v1/audit?startTime=nope"))
                .header("X-Domino-Api-Key", KEY),
            "datasource start",
        ),
        (
            c.get(format!("{u}/v1/audit?end=5")).bearer_auth(&token),
            "domo start missing",
        ),
        (
            c.get(format!("{u}/v1/audit?start=0&limit=1001"))
                .bearer_auth(&token),
            "domo limit",
        ),
        (
            c.get(format!("{u}/api/data/audit?count=1001"))
                .bearer_auth(KEY),
            "wasabi count",
        ),
        (
            c.get(format!("{u}/api/data/audit?from=tomorrow"))
                .bearer_auth(KEY),
            "wasabi from",
        ),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{what}");
        assert!(r.json::<Value>().await.is_ok(), "{what}");
    }
    // Unknown parameters are ignored, and the Domo doc's sample (spaces after '=') works.
    let r = c
        .get(format!(
            "{u}/v1/audit?start= 1513230600000&end= 1913231200000&bogus=1"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Vec<Value>>().await.unwrap().len(), 50);
    s.shutdown().await;
}

#[tokio::test]
async fn domo_tokens_expire_and_can_be_revoked() {
    let s = sim(SimConfig {
        domo_token_ttl: Duration::from_secs(1),
        ..past(100)
    })
    .await;
    let c = Client::new();
    let data = |token: &str| {
        c.get(format!("{}/v1/audit?start=0", s.url()))
            .header("Authorization", format!("Bearer {token}"))
            .send()
    };

    // GET with Basic auth, and POST with a form body, both issue tokens.
    let r = c
        .post(format!("{}/oauth/token", s.url()))
        .basic_auth("sim-client", Some("sim-secret"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&scope=audit")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "bearer");
    assert_eq!(v["expires_in"], 1);
    assert_eq!(v["scope"], "audit");
    for k in ["customer", "role", "userId", "jti"] {
        assert!(!v[k].is_null(), "{k}");
    }
    let posted = v["access_token"].as_str().unwrap().to_string();
    let token = domo_token(&c, &s).await;
    assert_ne!(token, posted);
    assert_eq!(data(&token).await.unwrap().status(), StatusCode::OK);
    assert_eq!(data(&posted).await.unwrap().status(), StatusCode::OK);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = data(&token).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().await.unwrap()["path"], "/v1/audit");

    let token = domo_token(&c, &s).await;
    assert_eq!(data(&token).await.unwrap().status(), StatusCode::OK);
    s.expire_tokens();
    assert_eq!(
        data(&token).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    let token = domo_token(&c, &s).await;
    let r = c
        .post(format!("{}/_sim/expire_tokens", s.url()))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(
        data(&token).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(s.stats().tokens_issued, 4);
    s.shutdown().await;
}

/// Domo times of the visible entries in `[from, to)`, newest first, as served.
async fn domo_times(c: &Client, s: &SimHandle, token: &str, from: &str, to: &str) -> Vec<String> {
    page_domo(c, s, token, at(from), at(to), 1000)
        .await
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["time"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn domo_prints_denver_wall_clock_across_dst_changes() {
    let denver = jiff::tz::TimeZone::get("America/Denver").unwrap();
    let cfg = |start: &str, end: &str| SimConfig {
        start: at(start),
        end: at(end),
        events: 4000,
        domo_time_zone: denver.clone(),
        vendors: vec![Vendor::Domo],
        ..SimConfig::default()
    };
    let c = Client::new();

    // November 3 2024: 01:00–02:00 MDT, then 01:00–02:00 again in MST.
    let s = sim(cfg("2024-11-03T05:00:00Z", "2024-11-03T11:00:00Z")).await;
    let token = domo_token(&c, &s).await;
    let midnight = domo_times(
        &c,
        &s,
        &token,
        "2024-11-03T06:00:00Z",
        "2024-11-03T07:00:00Z",
    )
    .await;
    let first = domo_times(
        &c,
        &s,
        &token,
        "2024-11-03T07:00:00Z",
        "2024-11-03T08:00:00Z",
    )
    .await;
    let second = domo_times(
        &c,
        &s,
        &token,
        "2024-11-03T08:00:00Z",
        "2024-11-03T09:00:00Z",
    )
    .await;
    let after = domo_times(
        &c,
        &s,
        &token,
        "2024-11-03T09:00:00Z",
        "2024-11-03T10:00:00Z",
    )
    .await;
    assert!(!first.is_empty() && !second.is_empty());
    assert!(
        midnight
            .iter()
            .all(|t| t.starts_with("2024-11-03 12:") && t.ends_with(" AM")),
        "{midnight:?}"
    );
    for t in first.iter().chain(&second) {
        assert!(t.starts_with("2024-11-03 01:") && t.ends_with(" AM"), "{t}");
    }
    assert!(after
        .iter()
        .all(|t| t.starts_with("2024-11-03 02:") && t.ends_with(" AM")));
    // Whole seconds, in the documented shape.
    assert!(first
        .iter()
        .all(|t| t.len() == "2024-11-03 01:00:00 AM".len()));
    s.shutdown().await;

    // March 10 2024: 02:00–03:00 local never happens.
    let s = sim(cfg("2024-03-10T07:00:00Z", "2024-03-10T11:00:00Z")).await;
    let token = domo_token(&c, &s).await;
    let before = domo_times(
        &c,
        &s,
        &token,
        "2024-03-10T08:00:00Z",
        "2024-03-10T09:00:00Z",
    )
    .await;
    let after = domo_times(
        &c,
        &s,
        &token,
        "2024-03-10T09:00:00Z",
        "2024-03-10T10:00:00Z",
    )
    .await;
    assert!(!before.is_empty() && !after.is_empty());
    assert!(
        before.iter().all(|t| t.starts_with("2024-03-10 01:")),
        "{before:?}"
    );
    assert!(
        after.iter().all(|t| t.starts_with("2024-03-10 03:")),
        "{after:?}"
    );
    let all = domo_times(
        &c,
        &s,
        &token,
        "2024-03-10T07:00:00Z",
        "2024-03-10T11:00:00Z",
    )
    .await;
    assert!(!all.iter().any(|t| t.starts_with("2024-03-10 02:")));
    s.shutdown().await;
}

#[tokio::test]
async fn domo_evening_in_denver_is_pm_the_day_before_utc() {
    let s = sim(SimConfig {
        start: at("2017-12-14T05:57:35Z"),
        end: at("2017-12-14T05:57:36Z"),
        events: 3,
        twin_fraction: 0.0,
        domo_time_zone: jiff::tz::TimeZone::get("America/Denver").unwrap(),
        ..SimConfig::default()
    })
    .await;
    let c = Client::new();
    let token = domo_token(&c, &s).await;
    let got = page_domo(
        &c,
        &s,
        &token,
        at("2017-12-14T05:50:00Z"),
        at("2017-12-14T06:00:00Z"),
        50,
    )
    .await;
    assert_eq!(got.len(), 3);
    for e in got {
        let v: Value = serde_json::from_str(&e).unwrap();
        assert_eq!(v["time"], "2017-12-13 10:57:35 PM");
        for k in [
            "userName",
            "userId",
            "userType",
            "actorId",
            "actorName",
            "objectName",
            "objectId",
            "objectType",
            "additionalComment",
            "eventText",
            "device",
            "browserDetails",
            "ipAddress",
            "actionType",
        ] {
            assert!(!v[k].is_null(), "{k}");
        }
    }
    s.shutdown().await;
}

#[tokio::test]
async fn wasabi_times_have_varying_precision_and_ids_are_unique() {
    let s = sim(past(3000)).await;
    let c = Client::new();
    let events = s.events(
        Vendor::WasabiAir,
        at("2024-01-01T00:00:00Z"),
        at("2024-01-03T00:00:00Z"),
    );
    let mut digits = BTreeSet::new();
    let mut ids = HashSet::new();
    for e in &events {
        let v: Value = serde_json::from_str(e).unwrap();
        let t = v["time"].as_str().unwrap();
        t.parse::<Timestamp>().unwrap();
        let frac = t.split_once('.').unwrap().1.trim_end_matches('Z');
        assert!(!frac.ends_with('0'), "{t}");
        digits.insert(frac.len());
        let id = v["id"].as_str().unwrap();
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(ids.insert(id.to_string()));
    }
    assert!(digits.len() >= 7, "{digits:?}");
    assert!(digits.iter().all(|d| (1..=9).contains(d)));

    let v: Value = serde_json::from_str(&events[42]).unwrap();
    let r = c
        .get(format!(
            "{}/api/data/audit/{}",
            s.url(),
            v["id"].as_str().unwrap()
        ))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), events[42]);
    let r = c
        .get(format!("{}/api/data/audit/{}", s.url(), "0".repeat(32)))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());

    let f: Value = c
        .get(format!("{}/api/data/audit/filters", s.url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds = f["target_kinds"].as_array().unwrap();
    assert!(kinds.iter().any(|k| k["name"] == "authenticate"
        && k["action_keys"]
            .as_array()
            .unwrap()
            .contains(&"login".into())));

    // Default page size is 20.
    let p: Value = c
        .get(format!("{}/api/data/audit", s.url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(p["audit_events"].as_array().unwrap().len(), 20);
    assert_eq!(p["total"], 3000);
    assert_eq!(p["page"], 0);
    s.shutdown().await;
}

#[tokio::test]
async fn faults_are_served_with_retry_after_then_cleared() {
    let s = sim(past(100)).await;
    let c = Client::new();
    let wasabi = || {
        c.get(format!("{}/api/data/audit", s.url()))
            .bearer_auth(KEY)
            .send()
    };
    let domino = || {
        c.get(format!("{}/api/audittrail/v1/auditevents", s.url()))
            .header("X-Domino-Api-Key", KEY)
            .send()
    };

    s.inject_fault(Fault {
        vendor: Some("wasabi_air".into()),
        status: 429,
        retry_after: Some("3".into()),
        body: None,
        count: 2,
    });
    assert_eq!(
        domino().await.unwrap().status(),
        StatusCode::OK,
        "a wasabi fault must not hit domino"
    );
    for _ in 0..2 {
        let r = wasabi().await.unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "3");
        assert_eq!(r.text().await.unwrap(), r#"{"error":"injected"}"#);
    }
    assert_eq!(wasabi().await.unwrap().status(), StatusCode::OK);

    // Through the admin endpoint, for any vendor, with a body that is not JSON.
    let r = c
        .post(format!("{}/_sim/faults", s.url()))
        .json(&serde_json::json!({"status": 503, "retry_after": "Wed, 21 Oct 2015 07:28:00 GMT", "body": "not json", "count": 1}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = domino().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "Wed, 21 Oct 2015 07:28:00 GMT");
    assert_eq!(r.text().await.unwrap(), "not json");
    assert_eq!(domino().await.unwrap().status(), StatusCode::OK);

    // Faults come before auth (a gateway answers first); unknown vendors are refused.
    s.inject_fault(Fault {
        vendor: None,
        status: 500,
        retry_after: None,
        body: None,
        count: 1,
    });
    let r = c
        .get(format!("{}/v1/audit?start=0", s.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let r = c
        .post(format!("{}/_sim/faults", s.url()))
        .json(&serde_json::json!({"vendor": "okta", "status": 500}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let stats: SimStats = c
        .get(format!("{}/_sim/stats", s.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats, s.stats());
    assert_eq!(stats.faults_served, 4);
    s.shutdown().await;
}

#[tokio::test]
async fn the_same_seed_gives_the_same_events() {
    let a = sim(past(2000)).await;
    let b = sim(past(2000)).await;
    let other = sim(SimConfig {
        seed: 2,
        ..past(2000)
    })
    .await;
    let (from, to) = (at("2024-01-01T00:00:00Z"), at("2024-01-03T00:00:00Z"));
    for v in Vendor::ALL {
        let ea = a.events(v, from, to);
        assert_eq!(ea.len(), 2000, "{v}");
        assert_eq!(ea, b.events(v, from, to), "{v}");
        assert_ne!(ea, other.events(v, from, to), "{v}");
    }
    // Vendors that are not generated serve empty results.
    let only = sim(SimConfig {
        vendors: vec![Vendor::Domo],
        ..past(100)
    })
    .await;
    assert!(only.events(Vendor::WasabiAir, from, to).is_empty());
    assert_eq!(only.events(Vendor::Domo, from, to).len(), 100);
    for s in [a, b, other, only] {
        s.shutdown().await;
    }
}

#[tokio::test]
async fn late_and_future_events_appear_as_time_passes() {
    let now = Timestamp::now();
    let s = sim(SimConfig {
        start: now - SignedDuration::from_secs(5),
        end: now + SignedDuration::from_secs(2),
        events: 3000,
        vendors: vec![Vendor::WasabiAir, Vendor::DominoAudit],
        late_fraction: 0.5,
        late_max: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await;
    let c = Client::new();
    let (from, to) = (
        now - SignedDuration::from_secs(10),
        now + SignedDuration::from_secs(10),
    );
    let before = s.events(Vendor::WasabiAir, from, to).len();
    let q = format!(
        "from={}&to={}",
        iso(from, SecondsFormat::Nanos),
        iso(to, SecondsFormat::Nanos)
    );
    let (_, total) = page_wasabi(&c, &s, &q, 1000).await;
    let after = s.events(Vendor::WasabiAir, from, to).len();
    assert!(
        before <= total && total <= after,
        "{before} {total} {after}"
    );
    assert!(
        after < 3000,
        "future and late events must be hidden: {after}"
    );

    tokio::time::sleep(Duration::from_millis(3200)).await;
    let (got, total) = page_wasabi(&c, &s, &q, 1000).await;
    assert_eq!(total, 3000);
    assert_eq!(got, s.events(Vendor::WasabiAir, from, to));
    let (got, estimate) = page_domino(&c, &s, from, to, 333, "").await;
    assert_eq!(estimate, 3000);
    assert_eq!(got, s.events(Vendor::DominoAudit, from, to));
    s.shutdown().await;
}

#[tokio::test]
async fn domino_datasource_defaults_to_the_last_24_hours() {
    let now = Timestamp::now();
    let s = sim(SimConfig {
        start: now - SignedDuration::from_hours(48),
        end: now,
        events: 2000,
        ..SimConfig::default()
    })
    .await;
    let c = Client::new();
    let r = c
        .get(format!("{}/api/datasource/v1/audit", s.url()))
        .header("X-Domino-Api-Key", KEY)
        .send()
        .await
        .unwrap();
    let got: Vec<Value> = r.json().await.unwrap();
    let want = s
        .events(
            Vendor::DominoDatasource,
            now - SignedDuration::from_hours(24),
            now,
        )
        .len();
    assert!(got.len().abs_diff(want) <= 2, "{} vs {want}", got.len());
    assert!(got.len() > 700 && got.len() < 1300);
    let ts: Vec<&str> = got
        .iter()
        .map(|e| e["timestamp"].as_str().unwrap())
        .collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    assert!(ts
        .iter()
        .all(|t| t.len() == "2023-08-23T21:40:21.669Z".len()));
    s.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let s = sim(past(10)).await;
    let url = s.url();
    s.shutdown().await;
    assert!(Client::new()
        .get(format!("{url}/_sim/stats"))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn latency_delays_every_vendor_request() {
    let wait = Duration::from_millis(80);
    let s = sim(SimConfig {
        latency: wait,
        ..past(200)
    })
    .await;
    let c = Client::new();
    let u = s.url();
    // Only lower bounds: a loaded machine may take longer, never less.
    let began = std::time::Instant::now();
    let token = domo_token(&c, &s).await;
    assert!(began.elapsed() >= wait, "token: {:?}", began.elapsed());
    let (from, to) = (at("2024-01-01T00:00:00Z"), at("2024-01-03T00:00:00Z"));
    let (f, t) = (ms(from), ms(to));
    let (fi, ti) = (
        iso(from, SecondsFormat::Millis),
        iso(to, SecondsFormat::Millis),
    );
    for (req, status) in [
        (
            c.get(format!(
                "{u}/api/audittrail/v1/auditevents?startTimestamp={f}&endTimestamp={t}&limit=1000"
            ))
            .header("X-Domino-Api-Key", KEY),
            StatusCode::OK,
        ),
        (
            c.get(format!(
                "{u}/api/datasource/v1/audit?startTime={fi}&endTime={ti}"
            ))
            .header("X-Domino-Api-Key", KEY),
            StatusCode::OK,
        ),
        (
            c.get(format!("{u}/v1/audit?start={f}&end={t}&limit=1000"))
                .bearer_auth(&token),
            StatusCode::OK,
        ),
        (
            c.get(format!("{u}/api/data/audit?count=1000&page=0"))
                .bearer_auth(KEY),
            StatusCode::OK,
        ),
        // A rejected request waits too.
        (
            c.get(format!("{u}/api/data/audit")).bearer_auth("wrong"),
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        let began = std::time::Instant::now();
        let r = req.send().await.unwrap();
        let url = r.url().to_string();
        assert_eq!(r.status(), status, "{url}");
        let body = r.text().await.unwrap();
        assert!(began.elapsed() >= wait, "{url}: {:?}", began.elapsed());
        if status == StatusCode::OK {
            assert!(body.len() > 1000, "{url}: the usual answer, got {body}");
        }
    }
    let stats = s.stats();
    for v in Vendor::ALL {
        let want = if v == Vendor::WasabiAir { 2 } else { 1 };
        assert_eq!(stats.requests[v.as_str()], want, "{v}");
    }
    assert_eq!(stats.tokens_issued, 1);
    s.shutdown().await;
}

/// `rate_limit`: each credential gets that many requests a second (a bucket of one second's
/// worth), then 429 with a `Retry-After` of whole seconds; a request sent before that has
/// passed is counted as sent early. Domino's key and Domo's client are buckets of their own,
/// and Domo's token endpoint is not limited.
#[tokio::test]
async fn the_rate_limit_is_per_credential_with_retry_after() {
    let s = sim(SimConfig {
        rate_limit: Some(4.0),
        ..past(100)
    })
    .await;
    let c = Client::new();
    let wasabi = || {
        c.get(format!("{}/api/data/audit?count=10&page=0", s.url()))
            .bearer_auth(KEY)
            .send()
    };
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..6 {
        let r = wasabi().await.unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[..4], &[200; 4], "{statuses:?}");
    assert_eq!(&statuses[4..], &[429; 2], "{statuses:?}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    let st = s.stats();
    assert_eq!((st.rate_limited, st.sent_early), (2, 1), "{st:?}");

    // Domo's client is another credential, with a full bucket of its own (Domino's
    // `X-Domino-Api-Key: sim-api-key` would share Wasabi's: the same key).
    let token = domo_token(&c, &s).await;
    let r = c
        .get(format!(
            "{}/v1/audit?start=0&end={}&limit=10",
            s.url(),
            ms(at("2024-01-02T00:00:00Z"))
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Once the Retry-After has passed, the credential is served again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(wasabi().await.unwrap().status(), StatusCode::OK);
    assert_eq!(s.stats().sent_early, 1);
}

/// `more_api_keys`: each is accepted as `api_key` is, by every key-taking emulator, and is a
/// credential of its own for the rate limit; any other key is refused.
#[tokio::test]
async fn more_api_keys_are_accepted_each_with_a_bucket_of_its_own() {
    let s = sim(SimConfig {
        rate_limit: Some(2.0),
        more_api_keys: vec!["second-key".into()],
        ..past(100)
    })
    .await;
    let c = Client::new();
    let wasabi = |key: &'static str| {
        c.get(format!("{}/api/data/audit?count=10&page=0", s.url()))
            .bearer_auth(key)
            .send()
    };
    let mut statuses = Vec::new();
    for key in [
        KEY,
        KEY,
        KEY,
        "second-key",
        "second-key",
        "second-key",
        "other",
    ] {
        statuses.push(wasabi(key).await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 200, 200, 429, 401]);
    let domino = c
        .get(format!(
            "{}/api/audittrail/v1/auditevents?startTimestamp=0&endTimestamp={}&limit=10&offset=0",
            s.url(),
            ms(at("2024-01-02T00:00:00Z"))
        ))
        .header("X-Domino-Api-Key", "second-key")
        .send()
        .await
        .unwrap();
    // The same key on the same host: the same (empty) bucket.
    assert_eq!(domino.status(), StatusCode::TOO_MANY_REQUESTS);
    let datasource = c
        .get(format!("{}/api/datasource/v1/audit", s.url()))
        .header("X-Domino-Api-Key", "third-key")
        .send()
        .await
        .unwrap();
    assert_eq!(datasource.status(), StatusCode::UNAUTHORIZED);
}
