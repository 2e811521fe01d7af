use std::time::Duration;

use faceswap_client::faceswap_wire::FaceswapStatus;
use faceswap_client::{Event, EventKind, EventStream, EventsFrom, EventsOptions};
use faceswap_testkit::{TestApp, eventually};
use futures_util::StreamExt;
use sqlx::PgPool;

use crate::helpers::{OPTS, client, create_request};

/// The next event, failing after a bounded wait.
async fn next(stream: &mut EventStream) -> Event {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event in time")
        .expect("the stream is open")
        .expect("a well-formed event")
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn the_event_stream_delivers_a_status_change_and_resumes_after_it(pool: PgPool) {
    let app = TestApp::builder()
        .sim_flags(&["--queue-delay-ms", "200"])
        .spawn(pool)
        .await;
    let tenant = app.tenant(5, None).await;
    let client = client(&app, &tenant);
    let session = client.create(&create_request(OPTS)).await.unwrap();
    let mut stream = client
        .events(&EventsOptions {
            session_id: Some(session.id.clone()),
            from: EventsFrom::Start,
            last_event_id: None,
        })
        .await
        .unwrap();
    // `info` reads the upstream status; the change it records is what the stream reports.
    eventually(Duration::from_secs(10), "status 2", || async {
        let info = client.info(&session.id).await.unwrap();
        (info.faceswap_status == Some(FaceswapStatus::Processing)).then_some(())
    })
    .await;
    let change = loop {
        let e = next(&mut stream).await;
        if e.faceswap_status() == Some(FaceswapStatus::Processing) {
            break e;
        }
    };
    assert_eq!(change.kind, EventKind::StatusChanged);
    assert_eq!(change.session_id(), Some(session.id.as_str()));
    assert!(!change.id.is_empty() && !change.timestamp.is_empty());
    drop(stream);

    client.close(&session.id).await.unwrap();
    let mut resumed = client
        .events(&EventsOptions {
            session_id: Some(session.id.clone()),
            last_event_id: Some(change.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let seen: i64 = change.id.parse().unwrap();
    let closed = loop {
        let e = next(&mut resumed).await;
        assert!(
            e.id.parse::<i64>().unwrap() > seen,
            "only events after {seen}: {e:?}"
        );
        if e.kind == EventKind::Closed {
            break e;
        }
    };
    assert_eq!(closed.data["reason"], "client");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_stream_for_an_unknown_session_is_refused_with_a_typed_error(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(5, None).await;
    let err = client(&app, &tenant)
        .events(&EventsOptions {
            session_id: Some("ses_nope".into()),
            ..Default::default()
        })
        .await
        .err()
        .expect("refused");
    assert!(err.code().is_some(), "{err}");
    assert!(matches!(err.status(), Some(400 | 404)), "{err}");
}
