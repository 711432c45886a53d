//! `SimConfig::pretty`: every data body is served pretty-printed, with the same content as the
//! compact emulator of the same config serves; the truth stays compact.

use auditship_sim::{start, SimConfig, SimHandle, Vendor};
use jiff::Timestamp;
use reqwest::{Client, StatusCode};
use serde_json::Value;

const KEY: &str = "sim-api-key";

fn at(s: &str) -> Timestamp {
    s.parse::<Timestamp>().unwrap()
}

async fn sim(pretty: bool) -> SimHandle {
    let cfg = SimConfig {
        start: at("2024-01-01T00:00:00Z"),
        end: at("2024-01-03T00:00:00Z"),
        events: 300,
        pretty,
        ..SimConfig::default()
    };
    start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

/// The text of a 200 answer.
async fn body(req: reqwest::RequestBuilder) -> String {
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.unwrap()
}

/// The token endpoint's answer and every data endpoint's, in a fixed order.
async fn bodies(c: &Client, s: &SimHandle) -> Vec<String> {
    let u = s.url();
    let token_body = body(
        c.post(format!(
            "{u}/oauth/token?grant_type=client_credentials&scope=audit"
        ))
        .basic_auth("sim-client", Some("sim-secret")),
    )
    .await;
    let token: Value = serde_json::from_str(&token_body).unwrap();
    let token = token["access_token"].as_str().unwrap();
    let wasabi = body(
        c.get(format!(
            "{u}/api/data/audit?from=2024-01-01T00:00:00Z&to=2024-01-03T00:00:00Z&count=1000"
        ))
        .bearer_auth(KEY),
    )
    .await;
    let first: Value = serde_json::from_str(&wasabi).unwrap();
    let id = first["audit_events"][0]["id"].as_str().unwrap().to_string();
    vec![
        body(
            c.get(format!(
                "{u}/api/audittrail/v1/auditevents?startTimestamp=1704067200000&endTimestamp=1704240000000&limit=1000"
            ))
            .bearer_auth(KEY),
        )
        .await,
        body(
            c.get(format!(
                "{u}/api/datasource/v1/audit?startTime=2024-01-01T00:00:00.000Z&endTime=2024-01-03T00:00:00.000Z"
            ))
            .header("X-Domino-Api-Key", KEY),
        )
        .await,
        body(
            c.get(format!(
                "{u}/v1/audit?start=1704067200000&end=1704240000000&limit=1000"
            ))
            .bearer_auth(token),
        )
        .await,
        wasabi,
        body(c.get(format!("{u}/api/data/audit/{id}")).bearer_auth(KEY)).await,
        body(c.get(format!("{u}/api/data/audit/filters")).bearer_auth(KEY)).await,
        token_body,
    ]
}

#[tokio::test]
async fn pretty_bodies_hold_the_content_of_compact_ones_and_the_truth_stays_compact() {
    let (pretty, compact) = (sim(true).await, sim(false).await);
    let c = Client::new();
    let (p, k) = (bodies(&c, &pretty).await, bodies(&c, &compact).await);
    let names = [
        "domino_audit",
        "domino_datasource",
        "domo",
        "wasabi_air",
        "wasabi_air one",
        "wasabi_air filters",
        "domo token",
    ];
    for ((name, p), k) in names.iter().zip(&p).zip(&k) {
        assert!(!k.contains('\n') && !k.contains("\": "), "{name}: {k}");
        assert!(p.contains("\n  ") && p.contains("\": "), "{name}: {p}");
        let (pv, kv): (Value, Value) = (
            serde_json::from_str(p).unwrap(),
            serde_json::from_str(k).unwrap(),
        );
        if name.starts_with("domo token") {
            // Fresh secrets each time; the same fields.
            let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(&pv), keys(&kv), "{name}");
        } else {
            assert_eq!(pv, kv, "{name}");
            assert!(kv.to_string().len() > 30, "{name}: {kv}");
        }
    }
    // The data bodies hold events, and the truth is what the compact emulator renders.
    let (from, to) = (at("2024-01-01T00:00:00Z"), at("2024-01-03T00:00:00Z"));
    for v in Vendor::ALL {
        let truth = pretty.events(v, from, to);
        assert_eq!(truth.len(), 300, "{v}");
        assert_eq!(truth, compact.events(v, from, to), "{v}");
        assert!(truth.iter().all(|e| !e.contains('\n')), "{v}");
    }
    let admin = body(c.get(format!(
        "{}/_sim/events?vendor=domo&from=2024-01-01T00:00:00Z&to=2024-01-03T00:00:00Z",
        pretty.url()
    )))
    .await;
    assert!(!admin.contains('\n'), "{admin}");
    for s in [pretty, compact] {
        s.shutdown().await;
    }
}
