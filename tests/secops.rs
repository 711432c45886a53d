//! The `secops` sink end to end, against the Google SecOps emulator (`secops_receiver`): its
//! token endpoint checks each JWT assertion's RS256 signature and claims; its `logs:import`
//! checks the bearer, the request size and the body.

mod secops_receiver;

use secops_receiver::{Emulator, INSTANCE, PROJECT, REGION};
use serde_json::Value;

/// The emulator refuses what Google refuses: an assertion whose signature does not verify, a
/// grant of another type, and an API call without a token, each with Google's error body.
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
}
