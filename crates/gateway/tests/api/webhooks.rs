//! Webhooks: registration with the SSRF rules, tenant isolation, signed delivery with retries,
//! and disabling an endpoint that keeps failing. Delivery is driven by calling the worker's
//! `run_once` (the test gateways run no background workers).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use faceswap_gateway::domain::ids::WebhookEndpointId;
use faceswap_gateway::domain::webhook_signature::{self, DEFAULT_TOLERANCE, SignedHeaders};
use faceswap_gateway::domain::webhooks::max_attempts;
use faceswap_gateway::workers::{Outcome, WorkerSettings, webhooks::run_once};
use faceswap_testkit::{TestApp, TestTenant, eventually};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::events::{insert_event, session, tenant_uuid};

/// A webhook receiver on loopback that checks every signature with the tenant's secret and
/// answers 500 to the first `fail_first` attempts of each message.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    inner: Arc<ReceiverState>,
}

#[derive(Default)]
struct ReceiverState {
    fail_first: usize,
    secret: Mutex<Option<String>>,
    /// Attempts per `webhook-id`.
    attempts: Mutex<BTreeMap<String, usize>>,
    /// Accepted messages: (`webhook-id`, body), in arrival order.
    accepted: Mutex<Vec<(String, Value)>>,
    /// Requests whose signature, timestamp or content type was wrong.
    rejected: Mutex<Vec<String>>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Self {
        let inner = Arc::new(ReceiverState {
            fail_first,
            ..Default::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, inner }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn set_secret(&self, secret: &str) {
        *self.inner.secret.lock().unwrap() = Some(secret.to_owned());
    }

    fn accepted(&self) -> Vec<(String, Value)> {
        self.inner.accepted.lock().unwrap().clone()
    }

    fn attempts(&self) -> BTreeMap<String, usize> {
        self.inner.attempts.lock().unwrap().clone()
    }

    fn rejected(&self) -> Vec<String> {
        self.inner.rejected.lock().unwrap().clone()
    }
}

async fn receive(
    State(st): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let secret = st.secret.lock().unwrap().clone().unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    let signed = SignedHeaders {
        id: &id,
        timestamp: &timestamp,
        signature: &signature,
    };
    if let Err(e) = webhook_signature::verify(&secret, signed, &body, now, DEFAULT_TOLERANCE) {
        st.rejected.lock().unwrap().push(format!("{id}: {e}"));
        return StatusCode::BAD_REQUEST;
    }
    if header("content-type") != "application/json" {
        st.rejected
            .lock()
            .unwrap()
            .push(format!("{id}: content-type"));
        return StatusCode::BAD_REQUEST;
    }
    let n = {
        let mut attempts = st.attempts.lock().unwrap();
        let n = attempts.entry(id.clone()).or_default();
        *n += 1;
        *n
    };
    if n <= st.fail_first {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    st.accepted
        .lock()
        .unwrap()
        .push((id, serde_json::from_slice(&body).unwrap()));
    StatusCode::NO_CONTENT
}

/// The app's worker settings with the webhook schedule scaled to `retry_base`.
fn settings(app: &TestApp, retry_base: Duration) -> WorkerSettings {
    WorkerSettings {
        webhook_retry_base: retry_base,
        ..app.workers.clone()
    }
}

async fn register(app: &TestApp, token: &str, url: &str) -> (u16, Value) {
    app.post("/v1/webhooks", &json!({"url": url}), Some(token))
        .await
}

async fn delete(app: &TestApp, token: &str, id: &str) -> (u16, Value) {
    let resp = app
        .client
        .delete(app.url(&format!("/v1/webhooks/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn endpoint_uuid(id: &str) -> uuid::Uuid {
    WebhookEndpointId::parse(id).unwrap().0
}

async fn pending_deliveries(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from webhook_deliveries where state = 'pending'")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Runs the worker until no delivery is pending (retries included).
async fn deliver_everything(app: &TestApp, settings: &WorkerSettings) {
    eventually(
        Duration::from_secs(60),
        "every delivery settled",
        || async {
            run_once(&app.state, settings).await.unwrap();
            (pending_deliveries(&app.pool).await == 0).then_some(())
        },
    )
    .await;
    assert_eq!(run_once(&app.state, settings).await.unwrap(), Outcome::Idle);
}

/// The tenant's events as the receiver should see them: `evt_<id>` → (type, payload).
async fn events_of(pool: &PgPool, tenant: &TestTenant) -> BTreeMap<String, (String, Value)> {
    let rows: Vec<(i64, String, Value)> = sqlx::query_as(
        "select event_id, event_type, payload from session_events where tenant_id = $1",
    )
    .bind(tenant_uuid(tenant))
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(id, ty, payload)| (format!("evt_{id}"), (ty, payload)))
        .collect()
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn signed_webhooks_reach_their_tenant_after_failed_attempts(pool: PgPool) {
    let app = TestApp::builder().allow_loopback().spawn(pool).await;
    let (rx_a, rx_b) = (Receiver::start(2).await, Receiver::start(2).await);
    let (a, b) = (app.tenant(5, None).await, app.tenant(5, None).await);
    let (ta, tb) = (app.token(&a).await, app.token(&b).await);
    for (token, rx) in [(&ta, &rx_a), (&tb, &rx_b)] {
        let (status, created) = register(&app, token, &rx.url()).await;
        assert_eq!(status, 200, "{created}");
        rx.set_secret(created["data"]["secret"].as_str().unwrap());
    }

    // Events of both tenants: closes through the API and status changes as the monitor writes.
    for token in [&ta, &tb] {
        for _ in 0..2 {
            let id = session(&app, token).await;
            let (status, body) = app
                .post(
                    "/api/open/v3/faceswap/live/close",
                    &json!({"_id": id}),
                    Some(token),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    }
    let sa = session(&app, &ta).await;
    for n in 0..3 {
        insert_event(&app.pool, &a, Some(&sa), n).await;
    }
    let (want_a, want_b) = (
        events_of(&app.pool, &a).await,
        events_of(&app.pool, &b).await,
    );
    assert!(
        want_a.len() >= 5 && want_b.len() >= 2,
        "{want_a:?} {want_b:?}"
    );

    deliver_everything(&app, &settings(&app, Duration::from_millis(1))).await;

    for (rx, want) in [(&rx_a, &want_a), (&rx_b, &want_b)] {
        assert_eq!(
            rx.rejected(),
            Vec::<String>::new(),
            "every signature verifies"
        );
        let accepted = rx.accepted();
        let ids: BTreeSet<&String> = accepted.iter().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), accepted.len(), "each message accepted once");
        assert_eq!(ids, want.keys().collect(), "exactly the tenant's events");
        for (id, body) in &accepted {
            let (ty, payload) = &want[id];
            assert_eq!(&body["type"], ty, "{body}");
            assert_eq!(&body["data"], payload, "{body}");
            chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap()).unwrap();
        }
        assert!(
            rx.attempts().values().all(|n| *n == 3),
            "{:?}",
            rx.attempts()
        );
    }
    let states: Vec<(String, i32)> =
        sqlx::query_as("select state, attempts from webhook_deliveries")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(states.len(), want_a.len() + want_b.len());
    assert!(
        states.iter().all(|(s, n)| s == "delivered" && *n == 3),
        "{states:?}"
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn an_endpoint_that_keeps_failing_is_given_up_and_disabled_with_an_event(pool: PgPool) {
    let app = TestApp::builder().allow_loopback().spawn(pool).await;
    let (bad, good) = (Receiver::start(usize::MAX).await, Receiver::start(0).await);
    let tenant = app.tenant(5, None).await;
    let token = app.token(&tenant).await;
    let mut ids = Vec::new();
    for rx in [&bad, &good] {
        let (status, created) = register(&app, &token, &rx.url()).await;
        assert_eq!(status, 200, "{created}");
        rx.set_secret(created["data"]["secret"].as_str().unwrap());
        ids.push(created["data"]["endpoint_id"].as_str().unwrap().to_owned());
    }
    let s = session(&app, &token).await;
    for n in 0..2 {
        insert_event(&app.pool, &tenant, Some(&s), n).await;
    }

    // A 50 µs base squeezes the day-long schedule into about a second.
    deliver_everything(&app, &settings(&app, Duration::from_micros(50))).await;

    let rows: Vec<(String, i32, Option<String>)> = sqlx::query_as(
        "select state, attempts, last_error from webhook_deliveries where endpoint_id = $1",
    )
    .bind(endpoint_uuid(&ids[0]))
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        rows.len(),
        2,
        "no delivery of its own disabling to the disabled endpoint"
    );
    // The first delivery to run out of attempts disabled the endpoint; the other (its retries
    // jittered differently) was given up with it.
    let max = i32::try_from(max_attempts()).unwrap();
    assert!(rows.iter().any(|(_, n, _)| *n == max), "{rows:?}");
    for (state, attempts, error) in &rows {
        assert_eq!(state, "failed", "{rows:?}");
        assert!((1..=max).contains(attempts), "{rows:?}");
        assert!(
            error.as_deref().unwrap_or("").contains("HTTP 500"),
            "{rows:?}"
        );
    }
    let received: Vec<i32> = bad
        .attempts()
        .values()
        .map(|n| i32::try_from(*n).unwrap())
        .collect();
    let mut recorded: Vec<i32> = rows.iter().map(|(_, n, _)| *n).collect();
    let mut received_sorted = received.clone();
    received_sorted.sort_unstable();
    recorded.sort_unstable();
    assert_eq!(
        received_sorted, recorded,
        "every recorded attempt reached the receiver"
    );
    assert!(bad.accepted().is_empty() && bad.rejected().is_empty());

    let disabled: Vec<(Value,)> = sqlx::query_as(
        "select payload from session_events where tenant_id = $1 and event_type = 'webhook.endpoint_disabled'",
    )
    .bind(tenant_uuid(&tenant))
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        disabled.len(),
        1,
        "one event however many deliveries failed"
    );
    assert_eq!(disabled[0].0["endpoint_id"], ids[0]);
    assert_eq!(disabled[0].0["url"], bad.url());

    // The tenant's healthy endpoint got the events and the news.
    let got: Vec<String> = good
        .accepted()
        .iter()
        .map(|(_, b)| b["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        got.iter()
            .filter(|t| *t == "session.status_changed")
            .count(),
        2,
        "{got:?}"
    );
    let news = good
        .accepted()
        .into_iter()
        .find(|(_, b)| b["type"] == "webhook.endpoint_disabled")
        .expect("the disabling is delivered to the other endpoint");
    assert_eq!(news.1["data"]["endpoint_id"], ids[0]);

    let (status, list) = app.get("/v1/webhooks", Some(&token)).await;
    assert_eq!(status, 200);
    let endpoints = list["data"]["endpoints"].as_array().unwrap();
    let listed_bad = endpoints
        .iter()
        .find(|e| e["endpoint_id"] == ids[0])
        .unwrap();
    assert_eq!(listed_bad["enabled"], false);
    assert!(
        listed_bad["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("HTTP 500"),
        "{listed_bad}"
    );
    let listed_good = endpoints
        .iter()
        .find(|e| e["endpoint_id"] == ids[1])
        .unwrap();
    assert_eq!(listed_good["enabled"], true);

    // New events are no longer queued for the disabled endpoint.
    insert_event(&app.pool, &tenant, Some(&s), 9).await;
    let queued: i64 =
        sqlx::query_scalar("select count(*) from webhook_deliveries where endpoint_id = $1")
            .bind(endpoint_uuid(&ids[0]))
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(queued, 2);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn attempts_in_flight_when_their_endpoint_is_disabled_are_still_recorded(pool: PgPool) {
    use faceswap_gateway::store::webhooks as store;

    let app = TestApp::builder().allow_loopback().spawn(pool).await;
    let tenant = app.tenant(5, None).await;
    let token = app.token(&tenant).await;
    let (status, created) = register(&app, &token, "http://127.0.0.1:9/hook").await;
    assert_eq!(status, 200, "{created}");
    let endpoint = endpoint_uuid(created["data"]["endpoint_id"].as_str().unwrap());
    for n in 0..4 {
        insert_event(&app.pool, &tenant, None, n).await;
    }
    // Three deliveries are in flight (claimed) when another worker disables the endpoint.
    let mut conn = app.pool.acquire().await.unwrap();
    let claimed = store::claim_due(&mut conn, Duration::from_secs(60), 3)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    assert!(
        faceswap_gateway::service::webhooks::disable_endpoint(&app.state, endpoint, "test")
            .await
            .unwrap()
    );
    // Their attempts end as a retry, a last failure and an acceptance.
    assert_eq!(
        store::record_retry(&mut conn, &claimed[0], Duration::from_secs(60), "HTTP 500")
            .await
            .unwrap(),
        Some(false),
        "recorded, and given up rather than retried"
    );
    assert!(
        store::record_failed(&mut conn, &claimed[1], "HTTP 502")
            .await
            .unwrap()
    );
    assert!(
        store::record_delivered(&mut conn, &claimed[2])
            .await
            .unwrap()
    );

    let rows: Vec<(i64, String, i32, Option<String>, bool)> = sqlx::query_as(
        "select event_id, state, attempts, last_error, claimed_until is null
         from webhook_deliveries where endpoint_id = $1 order by event_id",
    )
    .bind(endpoint)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let by_event = |id: i64| rows.iter().find(|r| r.0 == id).unwrap().clone();
    let note = |e: &str| Some(format!("{e}; endpoint disabled"));
    assert_eq!(
        by_event(claimed[0].event_id),
        (
            claimed[0].event_id,
            "failed".into(),
            1,
            note("HTTP 500"),
            true
        ),
        "a retry is not scheduled for a disabled endpoint, but the attempt counts"
    );
    assert_eq!(
        by_event(claimed[1].event_id),
        (
            claimed[1].event_id,
            "failed".into(),
            1,
            note("HTTP 502"),
            true
        )
    );
    assert_eq!(
        by_event(claimed[2].event_id),
        (claimed[2].event_id, "delivered".into(), 1, None, true),
        "the receiver accepted it"
    );
    let unclaimed: Vec<_> = rows
        .iter()
        .filter(|r| claimed.iter().all(|c| c.event_id != r.0))
        .collect();
    assert_eq!(unclaimed.len(), 1, "{rows:?}");
    assert_eq!(
        (
            unclaimed[0].1.as_str(),
            unclaimed[0].2,
            unclaimed[0].3.as_deref()
        ),
        ("failed", 0, Some("endpoint disabled")),
        "a delivery not in flight is given up without an attempt"
    );
    // A stale claim still records nothing twice.
    assert_eq!(
        store::record_retry(&mut conn, &claimed[0], Duration::from_secs(60), "HTTP 500")
            .await
            .unwrap(),
        None
    );
    assert!(
        !store::record_failed(&mut conn, &claimed[1], "HTTP 502")
            .await
            .unwrap()
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn registration_refuses_private_urls_and_endpoints_belong_to_their_tenant(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (a, b) = (app.tenant(5, None).await, app.tenant(5, None).await);
    let (ta, tb) = (app.token(&a).await, app.token(&b).await);

    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://2130706433/",
        "ftp://93.184.215.14/hook",
        "not a url",
        "",
    ] {
        let (status, resp) = register(&app, &ta, url).await;
        assert_eq!(
            (status, resp["code"].as_i64()),
            (400, Some(1003)),
            "{url}: {resp}"
        );
        assert!(
            !resp["msg"].as_str().unwrap().contains("image_url"),
            "{resp}"
        );
    }
    let (status, resp) = app.post("/v1/webhooks", &json!({}), Some(&ta)).await;
    assert_eq!((status, resp["code"].as_i64()), (400, Some(1003)), "{resp}");
    let (status, resp) = app
        .post(
            "/v1/webhooks",
            &json!({"url": "http://93.184.215.14/"}),
            None,
        )
        .await;
    assert_eq!((status, resp["code"].as_i64()), (401, Some(1102)), "{resp}");

    let (status, created) = register(&app, &ta, "http://93.184.215.14/hooks/faceswap").await;
    assert_eq!(status, 200, "{created}");
    let data = &created["data"];
    let id = data["endpoint_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("whe_"), "{created}");
    assert_eq!(data["url"], "http://93.184.215.14/hooks/faceswap");
    assert_eq!(data["enabled"], true);
    assert!(data["secret"].as_str().unwrap().starts_with("whsec_"));
    webhook_signature::sign(data["secret"].as_str().unwrap(), "evt_1", 1, b"{}").unwrap();

    let (status, list) = app.get("/v1/webhooks", Some(&ta)).await;
    assert_eq!(status, 200);
    let endpoints = list["data"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["endpoint_id"], id);
    assert!(
        endpoints[0].get("secret").is_none(),
        "the secret is shown once: {list}"
    );

    // The other tenant sees nothing and cannot delete it; a missing id answers the same.
    let (_, list_b) = app.get("/v1/webhooks", Some(&tb)).await;
    assert_eq!(list_b["data"]["endpoints"], json!([]));
    let missing = WebhookEndpointId::generate().to_string();
    for target in [id.as_str(), missing.as_str(), "whe_nonsense"] {
        let (status, resp) = delete(&app, &tb, target).await;
        assert_eq!(
            (status, resp["code"].as_i64()),
            (404, Some(4004)),
            "{target}: {resp}"
        );
    }
    let (_, list) = app.get("/v1/webhooks", Some(&ta)).await;
    assert_eq!(list["data"]["endpoints"].as_array().unwrap().len(), 1);

    let (status, resp) = delete(&app, &ta, &id).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["data"], json!({"endpoint_id": id, "deleted": true}));
    let (status, _) = delete(&app, &ta, &id).await;
    assert_eq!(status, 404);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn delivery_refuses_an_endpoint_that_now_points_at_a_private_address(pool: PgPool) {
    // No allow-list: loopback is private. The endpoints are written as if their names had
    // resolved to public addresses at registration and changed since.
    let app = TestApp::spawn(pool).await;
    let rx = Receiver::start(0).await;
    let tenant = app.tenant(5, None).await;
    let port = rx.addr.port();
    for url in [
        format!("http://localhost:{port}/hook"),
        format!("http://127.0.0.1:{port}/hook"),
    ] {
        let mut conn = app.pool.acquire().await.unwrap();
        faceswap_gateway::store::webhooks::insert(
            &mut conn,
            WebhookEndpointId::generate().0,
            tenant_uuid(&tenant),
            &url,
            &webhook_signature::Secret::generate().to_text(),
        )
        .await
        .unwrap();
    }
    insert_event(&app.pool, &tenant, None, 1).await;

    let settings = settings(&app, Duration::from_secs(60));
    assert_eq!(
        run_once(&app.state, &settings).await.unwrap(),
        Outcome::Worked(2)
    );
    let rows: Vec<(String, i32, Option<String>)> =
        sqlx::query_as("select state, attempts, last_error from webhook_deliveries")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 2);
    for (state, attempts, error) in &rows {
        assert_eq!((state.as_str(), *attempts), ("pending", 1), "{rows:?}");
        assert!(
            error.as_deref().unwrap_or("").contains("refused"),
            "{rows:?}"
        );
    }
    assert!(
        rx.attempts().is_empty(),
        "nothing reached the private address"
    );
    // Not due again for a while (the retry waits at least the base).
    assert_eq!(
        run_once(&app.state, &settings).await.unwrap(),
        Outcome::Idle
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn two_workers_deliver_each_event_once(pool: PgPool) {
    let app = TestApp::builder().allow_loopback().spawn(pool).await;
    let replica = app.spawn_replica().await;
    let rx = Receiver::start(0).await;
    let tenant = app.tenant(5, None).await;
    let token = app.token(&tenant).await;
    let (status, created) = register(&app, &token, &rx.url()).await;
    assert_eq!(status, 200, "{created}");
    rx.set_secret(created["data"]["secret"].as_str().unwrap());
    for n in 0..40 {
        insert_event(&app.pool, &tenant, None, n).await;
    }
    // Small batches, so both workers claim from the same due rows at once.
    let small = WorkerSettings {
        batch: 3,
        ..settings(&app, Duration::from_millis(1))
    };
    eventually(
        Duration::from_secs(60),
        "every delivery settled",
        || async {
            let (a, b) = tokio::join!(
                run_once(&app.state, &small),
                run_once(&replica.state, &small)
            );
            a.unwrap();
            b.unwrap();
            (pending_deliveries(&app.pool).await == 0).then_some(())
        },
    )
    .await;
    let want = events_of(&app.pool, &tenant).await;
    let accepted = rx.accepted();
    assert_eq!(accepted.len(), want.len(), "no event delivered twice");
    let ids: BTreeSet<&String> = accepted.iter().map(|(id, _)| id).collect();
    assert_eq!(ids, want.keys().collect());
    assert!(rx.rejected().is_empty());
}
