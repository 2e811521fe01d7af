use std::process::Command;
use std::time::Duration;

use faceswap_testkit::{TestApp, b64, eventually};
use futures_util::future::join_all;
use serde_json::json;
use sqlx::PgPool;

use super::procs::spawn_binary;

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn sigterm_under_load_finishes_every_accepted_request(pool: PgPool) {
    let app = TestApp::builder()
        .sim_flags(&["--latency-ms", "400"])
        .spawn(pool)
        .await;
    let token = app.token(&app.tenant(1, None).await).await;
    let mut gw = spawn_binary(&app, &[("GATEWAY_DRAIN_DELAY_MS", "300")]).await;
    let client = reqwest::Client::new();
    let body = json!({"img": b64(b"not an image")});

    let load = join_all((0..20).map(|_| {
        let req = client
            .post(format!("{}/detect", gw.url))
            .bearer_auth(&token)
            .json(&body);
        async move {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            resp.bytes().await.map(|_| status)
        }
    }));
    let terminate = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let killed = Command::new("kill")
            .args(["-TERM", &gw.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        // Readiness turns false while requests are still being served.
        eventually(
            Duration::from_secs(2),
            "readyz to report draining",
            || async {
                let resp = client.get(format!("{}/readyz", gw.url)).send().await.ok()?;
                (resp.status() == 503).then_some(())
            },
        )
        .await;
    };
    let (answers, ()) = tokio::join!(load, terminate);
    for answer in answers {
        assert_eq!(answer.expect("no request is dropped"), 422);
    }
    let exited = eventually(Duration::from_secs(10), "the process to exit", || {
        let status = gw.child.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert!(exited.success(), "{exited:?}");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_worker_process_closes_an_idle_session_within_one_reaper_period(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = app.token(&app.tenant(1, None).await).await;
    let (_, created) = app.create_session(&token).await;
    let id = created["data"]["_id"].as_str().unwrap().to_owned();
    let _worker = spawn_binary(
        &app,
        &[
            ("GATEWAY_ROLE", "worker"),
            ("GATEWAY_WORKER_TICK_MS", "200"),
        ],
    )
    .await;
    // A worker serves probes only.
    let resp = app
        .client
        .post(format!("{}/api/open/v3/getToken", _worker.url))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    sqlx::query("update sessions set last_activity_at = now() - interval '1 hour'")
        .execute(&app.pool)
        .await
        .unwrap();
    // Listing is not activity on the session (naming it, as info does, would be).
    eventually(
        Duration::from_secs(5),
        "the worker to close the idle session",
        || async {
            let (_, page) = app.get("/v1/sessions", Some(&token)).await;
            let s = &page["data"]["sessions"][0];
            (s["_id"] == id.as_str() && s["close_reason"] == "idle").then_some(())
        },
    )
    .await;
    assert!(app.sim_stats().await.open_sessions.is_empty());
}
