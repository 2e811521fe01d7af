//! Traces over OTLP: the real binary exports to a receiver started here, continues the
//! caller's `traceparent`, and passes its own on to the upstream.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use faceswap_testkit::{TestApp, eventually};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::procs::spawn_binary;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

type Bodies = Arc<Mutex<Vec<Value>>>;

/// An OTLP/HTTP JSON receiver on a free loopback port; returns its base URL.
async fn otlp_receiver(bodies: Bodies) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new()
        .route(
            "/v1/traces",
            post(|State(bodies): State<Bodies>, body: Bytes| async move {
                let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                bodies.lock().unwrap().push(value);
                axum::Json(json!({}))
            }),
        )
        .with_state(bodies);
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// Every span received so far, flattened out of the export requests.
fn spans(bodies: &Bodies) -> Vec<Value> {
    let bodies = bodies.lock().unwrap();
    let mut out = Vec::new();
    for body in bodies.iter() {
        for rs in body["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                out.extend(ss["spans"].as_array().into_iter().flatten().cloned());
            }
        }
    }
    out
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn request_spans_reach_the_otlp_receiver_with_the_callers_parent(pool: PgPool) {
    let bodies = Bodies::default();
    let endpoint = otlp_receiver(bodies.clone()).await;
    let app = TestApp::spawn(pool).await;
    let token = app.token(&app.tenant(1, None).await).await;
    let mut gw = spawn_binary(
        &app,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
            // Only this request reaches the upstream from the child process.
            ("GATEWAY_ROLE", "api"),
        ],
    )
    .await;

    let resp = app
        .client
        .post(format!("{}/api/open/v3/faceswap/live/create", gw.url))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01"))
        .json(&json!({"sourceImage": [{"path": "https://images.example/face.jpg", "opts": "150,170:230,170:190,215:190,255"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // The upstream got the same trace.
    let sent = app
        .sim_stats()
        .await
        .last_traceparent
        .expect("a traceparent upstream");
    assert!(sent.starts_with(&format!("00-{TRACE_ID}-")), "{sent}");

    // SIGTERM flushes the batch; the receiver must then hold the spans.
    let killed = Command::new("kill")
        .args(["-TERM", &gw.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exited = eventually(Duration::from_secs(15), "the process to exit", || {
        let status = gw.child.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert!(exited.success(), "{exited:?}");

    let name = "POST /api/open/v3/faceswap/live/create";
    let server = eventually(Duration::from_secs(5), "the server span", || {
        let found = spans(&bodies).into_iter().find(|s| s["name"] == name);
        async move { found }
    })
    .await;
    let all = spans(&bodies);
    assert_eq!(server["traceId"], TRACE_ID, "{all:#?}");
    assert_eq!(server["parentSpanId"], PARENT_SPAN_ID, "{all:#?}");
    assert_eq!(server["kind"], 2, "a server span: {server:#?}");
    let server_id = server["spanId"].as_str().unwrap();
    let upstream = all
        .iter()
        .find(|s| s["name"] == "create" && s["parentSpanId"] == server_id)
        .unwrap_or_else(|| panic!("no upstream create span under the server span: {all:#?}"));
    assert_eq!(upstream["traceId"], TRACE_ID);
    assert_eq!(upstream["kind"], 3, "a client span: {upstream:#?}");
    // The upstream was told the upstream call's span as its parent.
    let upstream_id = upstream["spanId"].as_str().unwrap();
    assert_eq!(sent, format!("00-{TRACE_ID}-{upstream_id}-01"));
    // Postgres and Redis calls are spans of the same trace.
    assert!(
        all.iter()
            .any(|s| s["traceId"] == TRACE_ID && s["name"] != name && s["name"] != "create"),
        "{all:#?}"
    );
}
