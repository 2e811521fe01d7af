use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use faceswap_client::webhooks::{Verifier, WebhookError};
use faceswap_client::{Event, EventKind};
use faceswap_gateway::domain::webhook_signature::Secret;
use faceswap_testkit::{TestApp, eventually};
use sqlx::PgPool;
use tokio::sync::Mutex;

use crate::helpers::{OPTS, client, create_request};

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn webhook_endpoints_are_registered_listed_and_deleted(pool: PgPool) {
    let app = TestApp::builder().allow_loopback().spawn(pool).await;
    let tenant = app.tenant(5, None).await;
    let client = client(&app, &tenant);
    let created = client
        .create_webhook("http://127.0.0.1:9/hook")
        .await
        .unwrap();
    assert!(created.endpoint_id.starts_with("whe_"));
    assert!(created.secret.starts_with("whsec_"));
    Verifier::new(&created.secret).unwrap();
    let listed = client.list_webhooks().await.unwrap();
    assert_eq!(listed.endpoints.len(), 1);
    assert_eq!(listed.endpoints[0].endpoint_id, created.endpoint_id);
    assert!(listed.endpoints[0].enabled);
    let deleted = client.delete_webhook(&created.endpoint_id).await.unwrap();
    assert!(deleted.deleted);
    assert!(client.list_webhooks().await.unwrap().endpoints.is_empty());
    let again = client.delete_webhook(&created.endpoint_id).await;
    assert!(again.unwrap_err().is_not_found());
    let refused = client
        .create_webhook("ftp://example.com/x")
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(400), "{refused}");
}

#[test]
fn the_verifier_accepts_what_the_gateway_signs_and_nothing_else() {
    let secret = Secret::generate();
    let body = br#"{"type":"session.closed","timestamp":"2026-01-01T00:00:00.000Z","data":{"_id":"ses_1"}}"#;
    let now = 1_800_000_000;
    let signature = secret.sign("evt_7", now, body);
    let verifier = Verifier::new(&secret.to_text()).unwrap();
    let event = verifier
        .verify("evt_7", &now.to_string(), &signature, body, now + 10)
        .unwrap();
    assert_eq!(event.kind, EventKind::Closed);
    assert_eq!(event.id, "evt_7");
    assert_eq!(event.session_id(), Some("ses_1"));
    let tampered = br#"{"type":"session.closed","timestamp":"2026-01-01T00:00:00.000Z","data":{"_id":"ses_2"}}"#;
    assert_eq!(
        verifier
            .verify("evt_7", &now.to_string(), &signature, tampered, now)
            .map(|_| ()),
        Err(WebhookError::NoMatch)
    );
    assert_eq!(
        verifier
            .verify("evt_8", &now.to_string(), &signature, body, now)
            .map(|_| ()),
        Err(WebhookError::NoMatch)
    );
    assert_eq!(
        verifier
            .verify("evt_7", &now.to_string(), &signature, body, now + 3600)
            .map(|_| ()),
        Err(WebhookError::StaleTimestamp)
    );
    let other = Verifier::new(&Secret::generate().to_text()).unwrap();
    assert_eq!(
        other
            .verify("evt_7", &now.to_string(), &signature, body, now)
            .map(|_| ()),
        Err(WebhookError::NoMatch)
    );
}

#[derive(Default)]
struct Received {
    verifier: Mutex<Option<Verifier>>,
    events: Mutex<Vec<Event>>,
    refused: Mutex<Vec<WebhookError>>,
}

async fn receive(State(st): State<Arc<Received>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let verifier = st.verifier.lock().await.clone().expect("secret set");
    match verifier.verify_headers(&headers, &body) {
        Ok(event) => {
            st.events.lock().await.push(event);
            StatusCode::NO_CONTENT
        }
        Err(e) => {
            st.refused.lock().await.push(e);
            StatusCode::BAD_REQUEST
        }
    }
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_real_delivery_verifies_with_the_registered_secret(pool: PgPool) {
    let app = TestApp::builder().allow_loopback().spawn(pool).await;
    let tenant = app.tenant(5, None).await;
    let client = client(&app, &tenant);
    let received = Arc::new(Received::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let router = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let endpoint = client
        .create_webhook(&format!("http://{addr}/hook"))
        .await
        .unwrap();
    *received.verifier.lock().await = Some(Verifier::new(&endpoint.secret).unwrap());
    let session = client.create(&create_request(OPTS)).await.unwrap();
    client.close(&session.id).await.unwrap();

    // The test gateway runs no background workers: deliver by hand.
    let closed = eventually(Duration::from_secs(10), "a verified delivery", || async {
        faceswap_gateway::workers::webhooks::run_once(&app.state, &app.workers)
            .await
            .unwrap();
        let events = received.events.lock().await.clone();
        events.into_iter().find(|e| e.kind == EventKind::Closed)
    })
    .await;
    assert_eq!(closed.session_id(), Some(session.id.as_str()));
    assert!(closed.id.starts_with("evt_"), "{}", closed.id);
    assert!(received.refused.lock().await.is_empty());
}
