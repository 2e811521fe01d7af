use std::time::Duration;

use serde_json::json;

use crate::helpers::{eventually, spawn_sim};

const CREATE: &str = "/api/open/v3/faceswap/live/create";
const UPDATE: &str = "/api/open/v3/faceswap/live/update";
const CLOSE: &str = "/api/open/v3/faceswap/live/close";
const INFO: &str = "/api/open/v3/faceswap/live/info";

#[tokio::test]
async fn create_and_update_validate_source_image() {
    let sim = spawn_sim(&[]).await;
    let token = sim.token().await;
    let good = json!({"path": "https://example.test/a.jpg", "opts": "1,2:3,4:5,6:7,8"});
    for body in [
        json!({}),
        json!({"sourceImage": []}),
        json!({"sourceImage": "x"}),
        json!({"sourceImage": [{"path": "https://example.test/a.jpg"}]}),
        json!({"sourceImage": [{"path": "", "opts": "1,2:3,4:5,6:7,8"}]}),
        json!({"sourceImage": [{"path": "https://example.test/a.jpg", "opts": "1,2:3,4"}]}),
        json!({"sourceImage": [{"path": "https://example.test/a.jpg", "opts": "a,b:c,d:e,f:g,h"}]}),
        json!({"sourceImage": vec![good.clone(); 11]}),
    ] {
        let resp = sim.post(CREATE, &body, &token).await;
        assert_eq!(resp["code"], 1003, "{body} → {resp}");
        assert!(!resp["msg"].as_str().unwrap().is_empty());
    }
    assert!(
        sim.stats().await.open_sessions.is_empty(),
        "no refused create opened a session"
    );

    let id = sim.create_session(&token).await["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for body in [
        json!({"sourceImage": [good]}),
        json!({"_id": "", "sourceImage": [good]}),
        json!({"_id": id, "sourceImage": []}),
        json!({"_id": "000000000000000000000000", "sourceImage": [good]}),
    ] {
        let resp = sim.post(UPDATE, &body, &token).await;
        assert_eq!(resp["code"], 1003, "{body} → {resp}");
    }
}

#[tokio::test]
async fn closing_an_unknown_or_closed_session_is_a_clear_error() {
    let sim = spawn_sim(&[]).await;
    let token = sim.token().await;
    let resp = sim
        .post(CLOSE, &json!({"_id": "000000000000000000000000"}), &token)
        .await;
    assert_eq!(resp["code"], 1003);
    assert!(
        resp["msg"].as_str().unwrap().contains("not found"),
        "{resp}"
    );
    let resp = sim.post(CLOSE, &json!({}), &token).await;
    assert_eq!(resp["code"], 1003);

    let id = sim.create_session(&token).await["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        sim.post(CLOSE, &json!({"_id": id}), &token).await["code"],
        1000
    );
    let again = sim.post(CLOSE, &json!({"_id": id}), &token).await;
    assert_eq!(again["code"], 1003);
    assert!(again["msg"].as_str().unwrap().contains("closed"), "{again}");
    let update = sim
        .post(
            UPDATE,
            &json!({"_id": id, "sourceImage": [{"path": "p", "opts": "1,2:3,4:5,6:7,8"}]}),
            &token,
        )
        .await;
    assert_eq!(
        update["code"], 1003,
        "a closed session cannot be updated: {update}"
    );
    let info = sim.post(INFO, &json!({"_id": "nope"}), &token).await;
    assert_eq!(info["code"], 1003);
}

#[tokio::test]
async fn the_account_quota_answers_1104_and_a_close_frees_a_slot() {
    let sim = spawn_sim(&["--max-open-sessions", "2"]).await;
    let token = sim.token().await;
    let a = sim.create_session(&token).await["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.create_session(&token).await;
    let refused = sim
        .post(
            CREATE,
            &json!({"sourceImage": [{"path": "p", "opts": "1,2:3,4:5,6:7,8"}]}),
            &token,
        )
        .await;
    assert_eq!(refused["code"], 1104, "{refused}");
    assert_eq!(sim.stats().await.open_sessions.len(), 2);
    sim.post(CLOSE, &json!({"_id": a}), &token).await;
    sim.create_session(&token).await;
    assert_eq!(sim.stats().await.open_sessions.len(), 2);
}

#[tokio::test]
async fn concurrent_creates_never_exceed_the_quota() {
    let sim = spawn_sim(&["--max-open-sessions", "5"]).await;
    let token = sim.token().await;
    let body = json!({"sourceImage": [{"path": "p", "opts": "1,2:3,4:5,6:7,8"}]});
    let answers =
        futures_util::future::join_all((0..40).map(|_| sim.post(CREATE, &body, &token))).await;
    let ok = answers.iter().filter(|a| a["code"] == 1000).count();
    let refused = answers.iter().filter(|a| a["code"] == 1104).count();
    assert_eq!((ok, refused), (5, 35));
    assert_eq!(sim.stats().await.open_sessions.len(), 5);
}

#[tokio::test]
async fn sessions_move_from_queuing_to_processing_after_the_queue_delay() {
    let sim = spawn_sim(&["--queue-delay-ms", "300"]).await;
    let token = sim.token().await;
    let id = sim.create_session(&token).await["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(sim.info(&token, &id).await["data"]["faceswap_status"], 1);
    eventually(Duration::from_secs(5), "status 2", || async {
        (sim.info(&token, &id).await["data"]["faceswap_status"] == 2).then_some(())
    })
    .await;
    sim.post(CLOSE, &json!({"_id": id}), &token).await;
    assert_eq!(sim.info(&token, &id).await["data"]["faceswap_status"], 3);
}

#[tokio::test]
async fn with_failure_rate_one_every_session_turns_failed_and_stays_open_until_closed() {
    let sim = spawn_sim(&["--queue-delay-ms", "50", "--failure-rate", "1.0"]).await;
    let token = sim.token().await;
    let id = sim.create_session(&token).await["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(Duration::from_secs(5), "status 4", || async {
        (sim.info(&token, &id).await["data"]["faceswap_status"] == 4).then_some(())
    })
    .await;
    assert_eq!(
        sim.stats().await.open_sessions,
        vec![id.clone()],
        "a failed session holds its slot"
    );
    assert_eq!(
        sim.post(CLOSE, &json!({"_id": id}), &token).await["code"],
        1000
    );
    assert_eq!(sim.info(&token, &id).await["data"]["faceswap_status"], 4);
    assert!(sim.stats().await.open_sessions.is_empty());
}

#[tokio::test]
async fn a_single_session_can_be_made_to_fail_on_demand() {
    let sim = spawn_sim(&["--queue-delay-ms", "0"]).await;
    let token = sim.token().await;
    let id = sim.create_session(&token).await["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = sim.create_session(&token).await["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = sim
        .client
        .post(sim.url(&format!("/sim/sessions/{id}/fail")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(sim.info(&token, &id).await["data"]["faceswap_status"], 4);
    assert_eq!(sim.info(&token, &other).await["data"]["faceswap_status"], 2);
    let resp = sim
        .client
        .post(sim.url("/sim/sessions/nope/fail"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}
