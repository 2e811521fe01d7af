use std::time::Duration;

use serde_json::json;

use crate::helpers::{eventually, spawn_sim};

#[tokio::test]
async fn closing_mints_downloadable_resources_that_vanish_after_retention() {
    let sim = spawn_sim(&[
        "--resource-retention-seconds",
        "2",
        "--recording-bytes",
        "300000",
    ])
    .await;
    let token = sim.token().await;
    let id = sim.create_session(&token).await["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(sim.info(&token, &id).await["data"]["resources"], json!([]));
    sim.post(
        "/api/open/v3/faceswap/live/close",
        &json!({"_id": id}),
        &token,
    )
    .await;
    let resources = sim.info(&token, &id).await["data"]["resources"].clone();
    let resources = resources.as_array().unwrap();
    let kinds: Vec<&str> = resources
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["snapshot", "recording"]);

    for r in resources {
        let resp = sim
            .client
            .get(r["url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"],
            r["content_type"].as_str().unwrap()
        );
        let bytes = resp.bytes().await.unwrap();
        assert_eq!(bytes.len() as u64, r["size"].as_u64().unwrap());
        assert!(r["expires_at"].as_i64().unwrap() > 0);
    }
    let recording = &resources[1];
    assert_eq!(recording["size"], 300_000);

    let url = recording["url"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(6), "the resource to expire", || async {
        let status = sim.client.get(&url).send().await.unwrap().status();
        (status == 404).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_unknown_resource_is_404() {
    let sim = spawn_sim(&[]).await;
    let resp = sim
        .client
        .get(sim.url("/resources/a/b/c.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}
