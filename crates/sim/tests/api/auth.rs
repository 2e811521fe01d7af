use std::time::Duration;

use serde_json::json;

use crate::helpers::{eventually, spawn_sim};

const INFO: &str = "/api/open/v3/faceswap/live/info";

#[tokio::test]
async fn get_token_answers_1003_for_missing_fields_and_1101_for_wrong_credentials() {
    let sim = spawn_sim(&[]).await;
    let path = "/api/open/v3/getToken";
    for (body, code) in [
        (json!({}), 1003),
        (json!({"clientId": "sim-client"}), 1003),
        (json!({"clientId": "", "clientSecret": "sim-secret"}), 1003),
        (
            json!({"clientId": "sim-client", "clientSecret": "wrong"}),
            1101,
        ),
        (
            json!({"clientId": "other", "clientSecret": "sim-secret"}),
            1101,
        ),
    ] {
        let (_, resp) = sim.post_with(path, &body, &[]).await;
        assert_eq!(resp["code"], code, "{body} → {resp}");
        assert!(resp.get("token").is_none());
    }
    let resp = sim
        .client
        .post(sim.url(path))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "business errors answer HTTP 200");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 1003);
}

#[tokio::test]
async fn the_token_is_a_jwt_whose_exp_is_the_configured_lifetime() {
    let sim = spawn_sim(&["--token-ttl-seconds", "120"]).await;
    let token = sim.token().await;
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts");
    use base64::Engine;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 120);
}

#[tokio::test]
async fn calls_without_authorization_get_1102_and_bad_tokens_1101() {
    let sim = spawn_sim(&[]).await;
    let body = json!({"_id": "x"});
    for headers in [
        vec![],
        vec![("authorization", "")],
        vec![("authorization", "Bearer ")],
        vec![("x-api-key", "")],
    ] {
        let (_, resp) = sim.post_with(INFO, &body, &headers).await;
        assert_eq!(resp["code"], 1102, "{headers:?} → {resp}");
    }
    for headers in [
        vec![("authorization", "Bearer not-a-token")],
        vec![("authorization", "Basic abc")],
        vec![("x-api-key", "not-a-token")],
    ] {
        let (_, resp) = sim.post_with(INFO, &body, &headers).await;
        assert_eq!(resp["code"], 1101, "{headers:?} → {resp}");
    }
}

#[tokio::test]
async fn a_token_signed_by_another_simulator_gets_1101() {
    let ours = spawn_sim(&[]).await;
    let theirs = spawn_sim(&[]).await;
    let foreign = theirs.token().await;
    let auth = format!("Bearer {foreign}");
    let (_, resp) = ours
        .post_with(INFO, &json!({"_id": "x"}), &[("authorization", &auth)])
        .await;
    assert_eq!(resp["code"], 1101);
}

#[tokio::test]
async fn a_token_works_as_bearer_or_as_x_api_key_and_authorization_wins() {
    let sim = spawn_sim(&["--api-key", "static-key"]).await;
    let token = sim.token().await;
    let id = sim.create_session(&token).await["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"_id": id});
    let bearer = format!("Bearer {token}");

    for headers in [
        vec![("authorization", bearer.as_str())],
        vec![("x-api-key", token.as_str())],
        vec![("x-api-key", "static-key")],
        // Authorization wins: a valid bearer with a bad key passes...
        vec![("authorization", bearer.as_str()), ("x-api-key", "bad")],
    ] {
        let (_, resp) = sim.post_with(INFO, &body, &headers).await;
        assert_eq!(resp["code"], 1000, "{headers:?} → {resp}");
    }
    // ...and a bad bearer with a valid key fails.
    let (_, resp) = sim
        .post_with(
            INFO,
            &body,
            &[
                ("authorization", "Bearer bad"),
                ("x-api-key", token.as_str()),
            ],
        )
        .await;
    assert_eq!(resp["code"], 1101);
}

#[tokio::test]
async fn a_token_stops_working_when_its_lifetime_ends() {
    let sim = spawn_sim(&["--token-ttl-seconds", "1"]).await;
    let token = sim.token().await;
    let auth = format!("Bearer {token}");
    let (_, resp) = sim
        .post_with(INFO, &json!({"_id": "x"}), &[("authorization", &auth)])
        .await;
    assert_eq!(resp["code"], 1003, "a fresh token passes auth: {resp}");
    let resp = eventually(Duration::from_secs(5), "the token to expire", || async {
        let (_, resp) = sim
            .post_with(INFO, &json!({"_id": "x"}), &[("authorization", &auth)])
            .await;
        (resp["code"] != 1003).then_some(resp)
    })
    .await;
    assert_eq!(resp["code"], 1101);
    assert!(resp["msg"].as_str().unwrap().contains("expired"), "{resp}");
}

#[tokio::test]
async fn forced_expiry_invalidates_issued_tokens_at_once() {
    let sim = spawn_sim(&[]).await;
    let old = sim.token().await;
    let resp = sim
        .client
        .post(sim.url("/sim/expire-tokens"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, resp) = sim
        .post_with(
            INFO,
            &json!({"_id": "x"}),
            &[("authorization", &format!("Bearer {old}"))],
        )
        .await;
    assert_eq!(resp["code"], 1101);
    let new = sim.token().await;
    let (_, resp) = sim
        .post_with(
            INFO,
            &json!({"_id": "x"}),
            &[("authorization", &format!("Bearer {new}"))],
        )
        .await;
    assert_eq!(resp["code"], 1003, "a new token passes auth: {resp}");
}
