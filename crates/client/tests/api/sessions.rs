use std::collections::BTreeSet;
use std::time::Duration;

use faceswap_client::faceswap_wire::{FaceswapStatus, SourceImage, UpdateRequest};
use faceswap_client::{ListSessions, RequestOptions};
use faceswap_testkit::{TestApp, eventually, testdata};
use sqlx::PgPool;

use crate::helpers::{OPTS, client, create_request};

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn the_whole_session_flow_runs_through_the_client(pool: PgPool) {
    let app = TestApp::builder()
        .sim_flags(&["--queue-delay-ms", "200"])
        .spawn(pool)
        .await;
    let tenant = app.tenant(5, None).await;
    let client = client(&app, &tenant);

    let faces = client.detect_bytes(&testdata("face.jpg")).await.unwrap();
    let opts = faces.landmarks_str[0].clone();
    let created = client.create(&create_request(&opts)).await.unwrap();
    assert!(created.id.starts_with("ses_"), "{}", created.id);
    assert_eq!(created.faceswap_status, Some(FaceswapStatus::Queuing));
    assert_eq!(created.state, "open");
    assert!(
        created
            .front_rtc_token
            .as_deref()
            .is_some_and(|t| !t.is_empty())
    );
    assert!(!app.sim_stats().await.open_sessions.contains(&created.id));

    let running = eventually(Duration::from_secs(10), "status 2", || async {
        let info = client.info(&created.id).await.unwrap();
        (info.faceswap_status == Some(FaceswapStatus::Processing)).then_some(info)
    })
    .await;
    assert_eq!(running.channel_id, created.channel_id);

    let beat = client.heartbeat(&created.id).await.unwrap();
    assert!(beat.last_activity_at >= created.last_activity_at);

    let other = SourceImage {
        path: "https://images.example/other.jpg".into(),
        opts: opts.clone(),
    };
    let updated = client
        .update(&UpdateRequest {
            id: created.id.clone(),
            source_image: vec![other.clone()],
        })
        .await
        .unwrap();
    assert_eq!(updated.source_image, vec![other]);

    assert_eq!(client.usage().await.unwrap().active_sessions, 1);
    let closed = client.close(&created.id).await.unwrap();
    assert_eq!(closed.state, "closed");
    assert_eq!(closed.close_reason.as_deref(), Some("client"));
    assert!(closed.closed_at.is_some());
    assert!(app.sim_stats().await.open_sessions.is_empty());
    assert_eq!(client.usage().await.unwrap().active_sessions, 0);
    // The archive records what the closed session produced.
    let resources = client.session_resources(&created.id).await.unwrap();
    assert!(
        resources
            .resources
            .iter()
            .all(|r| r.session_id.as_deref() == Some(created.id.as_str())),
        "{resources:?}"
    );
    let err = client.close(&created.id).await.unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn sessions_are_listed_newest_first_in_pages_and_by_state(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(5, None).await;
    let client = client(&app, &tenant);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(client.create(&create_request(OPTS)).await.unwrap().id);
    }
    client.close(&ids[0]).await.unwrap();

    let first = client
        .list_sessions(&ListSessions {
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(first.sessions.len(), 2);
    assert_eq!(first.sessions[0].id, ids[2], "newest first");
    let second = client
        .list_sessions(&ListSessions {
            limit: Some(2),
            cursor: first.next_cursor.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(second.next_cursor, None);
    let seen: BTreeSet<_> = first
        .sessions
        .iter()
        .chain(&second.sessions)
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(seen, ids.iter().cloned().collect());

    let closed = client
        .list_sessions(&ListSessions {
            state: Some("closed".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        closed.sessions.iter().map(|s| &s.id).collect::<Vec<_>>(),
        vec![&ids[0]]
    );
    let queuing = client
        .list_sessions(&ListSessions {
            faceswap_status: Some(FaceswapStatus::Queuing),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(queuing.sessions.len(), 2, "{queuing:?}");
    let bad = client
        .list_sessions(&ListSessions {
            cursor: Some("not-a-cursor".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.status(), Some(400), "{bad}");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn an_idempotent_create_runs_once_and_replays_the_first_answer(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(5, None).await;
    let client = client(&app, &tenant);
    let opts = RequestOptions::idempotent("create-order-42");
    let first = client
        .create_with(&create_request(OPTS), &opts)
        .await
        .unwrap();
    let again = client
        .create_with(&create_request(OPTS), &opts)
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(app.sim_stats().await.open_sessions.len(), 1);
    assert_eq!(client.usage().await.unwrap().active_sessions, 1);

    let close = RequestOptions::idempotent("close-order-42");
    let closed = client.close_with(&first.id, &close).await.unwrap();
    let replayed = client.close_with(&first.id, &close).await.unwrap();
    assert_eq!(
        replayed, closed,
        "the replay is the first answer, not a 409"
    );
}
