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

#[tokio::test]
async fn detection_with_return_face_urls_mints_a_png_crop_per_face_that_expires() {
    use crate::helpers::{b64, testdata};

    let sim = spawn_sim(&["--resource-retention-seconds", "2"]).await;
    let token = sim.token().await;
    let plain = sim
        .post(
            "/detect",
            &json!({"img": b64(&testdata("face.jpg"))}),
            &token,
        )
        .await;
    assert_eq!(plain["error_code"], 0, "{plain}");
    assert!(plain.get("face_urls").is_none(), "only when asked: {plain}");

    let resp = sim
        .post(
            "/detect",
            &json!({"img": b64(&testdata("face.jpg")), "return_face_urls": true}),
            &token,
        )
        .await;
    assert_eq!(resp["error_code"], 0, "{resp}");
    let urls = resp["face_urls"].as_array().unwrap();
    assert_eq!(urls.len(), resp["region"].as_array().unwrap().len());
    assert!(resp["face_urls_expires_at"].as_i64().unwrap() > 0);
    let url = urls[0].as_str().unwrap().to_owned();
    let got = sim.client.get(&url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "image/png");
    let crop = image::load_from_memory(&got.bytes().await.unwrap()).unwrap();
    let region = &resp["region"][0];
    assert_eq!(
        (i64::from(crop.width()), i64::from(crop.height())),
        (region[2].as_i64().unwrap(), region[3].as_i64().unwrap())
    );

    eventually(Duration::from_secs(6), "the crop to expire", || async {
        let status = sim.client.get(&url).send().await.unwrap().status();
        (status == 404).then_some(())
    })
    .await;
}

#[tokio::test]
async fn resource_fail_count_fails_the_next_downloads_then_counts_down_to_zero() {
    let sim = spawn_sim(&[]).await;
    let token = sim.token().await;
    let id = sim.create_session(&token).await["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.post(
        "/api/open/v3/faceswap/live/close",
        &json!({"_id": id}),
        &token,
    )
    .await;
    let url = sim.info(&token, &id).await["data"]["resources"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, knobs) = sim.set_config(json!({"resource_fail_count": 2})).await;
    assert_eq!(
        (status, knobs["resource_fail_count"].as_u64()),
        (200, Some(2))
    );
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(sim.client.get(&url).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [500, 500, 200]);
    let (_, knobs) = sim.set_config(json!({})).await;
    assert_eq!(knobs["resource_fail_count"], 0);
    let stats = sim.stats().await;
    assert_eq!((stats.resources.downloads, stats.resources.failed), (3, 2));
    // The API calls are not affected.
    assert_eq!(stats.faults.errors, 0);
}
