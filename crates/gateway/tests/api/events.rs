//! `GET /v1/events`: the tenant's events as server-sent events, resumable with `Last-Event-ID`.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use faceswap_gateway::domain::ids::{SessionId, TenantId};
use faceswap_testkit::{TestApp, TestTenant};
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use sqlx::PgPool;

/// Longest wait for one event.
const WAIT: Duration = Duration::from_secs(10);

/// One received event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: i64,
    pub event: String,
    pub data: Value,
}

/// A minimal SSE reader over a streaming response.
pub struct SseClient {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buf: String,
}

impl SseClient {
    /// Opens `/v1/events{query}`; the response must be an event stream.
    pub async fn connect(
        app: &TestApp,
        token: &str,
        query: &str,
        last_event_id: Option<i64>,
    ) -> Self {
        let mut req = app
            .client
            .get(app.url(&format!("/v1/events{query}")))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = tokio::time::timeout(WAIT, req.send())
            .await
            .expect("stream opens in time")
            .unwrap();
        assert_eq!(resp.status(), 200, "{query}");
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Self {
            body: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next event (comments skipped), failing after [`WAIT`].
    pub async fn next(&mut self) -> SseEvent {
        tokio::time::timeout(WAIT, self.next_unbounded())
            .await
            .expect("an event arrives in time")
    }

    async fn next_unbounded(&mut self) -> SseEvent {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                if let Some(ev) = parse_frame(&frame) {
                    return ev;
                }
                continue;
            }
            let chunk = self
                .body
                .next()
                .await
                .expect("the stream stays open")
                .unwrap();
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Waits for the server to end the stream, failing after [`WAIT`] or on another event.
    pub async fn expect_end(&mut self) {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.body.next().await {
                    None | Some(Err(_)) => break,
                    Some(Ok(chunk)) => self.buf.push_str(std::str::from_utf8(&chunk).unwrap()),
                }
            }
        })
        .await
        .expect("the stream ends in time");
        assert!(
            parse_frame(&self.buf).is_none(),
            "no event after the end: {}",
            self.buf
        );
    }

    /// The next `n` events.
    pub async fn take(&mut self, n: usize) -> Vec<SseEvent> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next().await);
        }
        out
    }
}

fn parse_frame(frame: &str) -> Option<SseEvent> {
    let (mut id, mut event, mut data) = (None, None, String::new());
    for line in frame.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.parse().unwrap()),
            "event" => event = Some(value.to_owned()),
            "data" => data.push_str(value),
            _ => {}
        }
    }
    Some(SseEvent {
        id: id?,
        event: event?,
        data: serde_json::from_str(&data).unwrap(),
    })
}

/// The tenant's uuid.
pub fn tenant_uuid(t: &TestTenant) -> uuid::Uuid {
    TenantId::parse(&t.tenant_id).unwrap().0
}

/// Creates a session through the API; returns its `ses_…` id.
pub async fn session(app: &TestApp, token: &str) -> String {
    let (status, created) = app.create_session(token).await;
    assert_eq!(status, 200, "{created}");
    created["data"]["_id"].as_str().unwrap().to_owned()
}

/// Writes an event as the gateway does; returns its id.
pub async fn insert_event(
    pool: &PgPool,
    tenant: &TestTenant,
    session: Option<&str>,
    n: i64,
) -> i64 {
    let session = session.map(|s| SessionId::parse(s).unwrap().0);
    let mut tx = pool.begin().await.unwrap();
    let payload = json!({"_id": session.map(|s| SessionId(s).to_string()), "n": n});
    let id = faceswap_gateway::store::events::insert(
        &mut tx,
        tenant_uuid(tenant),
        session,
        "session.status_changed",
        &payload,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id
}

/// The tenant's event ids after event `after` (0: all), optionally one session's, from the table.
async fn ids_after(
    pool: &PgPool,
    tenant: &TestTenant,
    session: Option<&str>,
    after: i64,
) -> Vec<i64> {
    let session = session.map(|s| SessionId::parse(s).unwrap().0);
    // Stream order: by writing transaction, then id (see `store::events::list_after`).
    sqlx::query_scalar(
        "select event_id from session_events
         where tenant_id = $1
           and (tx, event_id) > (coalesce((select tx from session_events where event_id = $2),
                                          '0'::xid8), $2)
           and ($3::uuid is null or session_id = $3)
         order by tx, event_id",
    )
    .bind(tenant_uuid(tenant))
    .bind(after)
    .bind(session)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn ids(events: &[SseEvent]) -> Vec<i64> {
    events.iter().map(|e| e.id).collect()
}

async fn api_app(pool: PgPool) -> TestApp {
    // The test gateways run no background workers: only the test and the API write events.
    TestApp::spawn(pool).await
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_client_resumes_with_last_event_id_without_gaps_or_duplicates(pool: PgPool) {
    let app = api_app(pool).await;
    let (a, b) = (app.tenant(5, None).await, app.tenant(5, None).await);
    let (ta, tb) = (app.token(&a).await, app.token(&b).await);
    let sa = session(&app, &ta).await;
    let sb = session(&app, &tb).await;

    // Without Last-Event-ID the stream starts now: nothing written before it is sent.
    let before = insert_event(&app.pool, &a, Some(&sa), 0).await;
    let mut client = SseClient::connect(&app, &ta, "", None).await;
    let mut mine = Vec::new();
    for n in 1..=5 {
        mine.push(insert_event(&app.pool, &a, Some(&sa), n).await);
        insert_event(&app.pool, &b, Some(&sb), n).await;
    }
    let first = client.take(3).await;
    assert_eq!(ids(&first), mine[..3]);
    assert!(first.iter().all(|e| e.id > before));
    for (i, e) in first.iter().enumerate() {
        assert_eq!(e.event, "session.status_changed");
        assert_eq!(e.data["type"], "session.status_changed");
        assert_eq!(e.data["data"], json!({"_id": sa, "n": i + 1}), "{e:?}");
        let ts = e.data["timestamp"].as_str().unwrap();
        chrono::DateTime::parse_from_rfc3339(ts).unwrap();
    }
    drop(client);

    // Written while the client is away, including a close through the API.
    for n in 6..=8 {
        mine.push(insert_event(&app.pool, &a, Some(&sa), n).await);
        insert_event(&app.pool, &b, Some(&sb), n).await;
    }
    let (status, closed) = app
        .post(
            "/api/open/v3/faceswap/live/close",
            &json!({"_id": sa}),
            Some(&ta),
        )
        .await;
    assert_eq!(status, 200, "{closed}");

    let last_seen = first[2].id;
    let expected = ids_after(&app.pool, &a, None, last_seen).await;
    assert_eq!(
        expected[..5],
        mine[3..],
        "the table holds what the test wrote"
    );
    let mut client = SseClient::connect(&app, &ta, "", Some(last_seen)).await;
    let rest = client.take(expected.len()).await;
    assert_eq!(
        ids(&rest),
        expected,
        "every event after Last-Event-ID, in order, once"
    );
    let close = rest.last().unwrap();
    assert_eq!(close.event, "session.closed");
    assert_eq!(close.data["data"]["_id"], sa);
    assert_eq!(close.data["data"]["reason"], "client");

    // Nothing else was pending: the next event is the next one written.
    let next = insert_event(&app.pool, &a, None, 9).await;
    assert_eq!(client.next().await.id, next);

    // The query parameter resumes the same way, and from=start replays everything.
    let mut by_query =
        SseClient::connect(&app, &ta, &format!("?last_event_id={last_seen}"), None).await;
    let all_after = ids_after(&app.pool, &a, None, last_seen).await;
    assert_eq!(ids(&by_query.take(all_after.len()).await), all_after);
    let mut replay = SseClient::connect(&app, &ta, "?from=start", None).await;
    let everything = ids_after(&app.pool, &a, None, 0).await;
    assert!(everything.contains(&before));
    assert_eq!(ids(&replay.take(everything.len()).await), everything);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_stream_can_follow_one_session_of_the_tenant_only(pool: PgPool) {
    let app = api_app(pool).await;
    let (a, b) = (app.tenant(5, None).await, app.tenant(5, None).await);
    let (ta, tb) = (app.token(&a).await, app.token(&b).await);
    let (s1, s2) = (session(&app, &ta).await, session(&app, &ta).await);
    let sb = session(&app, &tb).await;
    for n in 0..4 {
        insert_event(&app.pool, &a, Some(&s1), n).await;
        insert_event(&app.pool, &a, Some(&s2), n).await;
        insert_event(&app.pool, &b, Some(&sb), n).await;
    }
    let expected = ids_after(&app.pool, &a, Some(&s1), 0).await;
    assert_eq!(expected.len(), 4);

    let mut client =
        SseClient::connect(&app, &ta, &format!("?session_id={s1}&from=start"), None).await;
    let got = client.take(4).await;
    assert_eq!(ids(&got), expected);
    assert!(got.iter().all(|e| e.data["data"]["_id"] == s1));
    // Another session's and the tenant-wide events are skipped; the next is s1's.
    insert_event(&app.pool, &a, Some(&s2), 10).await;
    insert_event(&app.pool, &a, None, 11).await;
    let marker = insert_event(&app.pool, &a, Some(&s1), 12).await;
    assert_eq!(client.next().await.id, marker);

    // Resuming a filtered stream.
    let mut resumed =
        SseClient::connect(&app, &ta, &format!("?session_id={s1}"), Some(expected[1])).await;
    let want: Vec<i64> = expected[2..].iter().copied().chain([marker]).collect();
    assert_eq!(ids(&resumed.take(want.len()).await), want);

    // A draining gateway ends its streams, so shutdown is not held up by them.
    app.state
        .draining
        .store(true, std::sync::atomic::Ordering::SeqCst);
    client.expect_end().await;
    resumed.expect_end().await;
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_stream_is_refused_before_it_starts_for_foreign_sessions_bad_ids_and_no_auth(
    pool: PgPool,
) {
    let app = api_app(pool).await;
    let (a, b) = (app.tenant(5, None).await, app.tenant(5, None).await);
    let ta = app.token(&a).await;
    let tb = app.token(&b).await;
    let sb = session(&app, &tb).await;
    let missing = SessionId::generate().to_string();

    for target in [sb.as_str(), missing.as_str(), "ses_nonsense"] {
        let (status, resp) = app
            .get(&format!("/v1/events?session_id={target}"), Some(&ta))
            .await;
        assert_eq!(
            (status, resp["code"].as_i64()),
            (404, Some(4004)),
            "{target}: {resp}"
        );
    }
    let (status, resp) = app.get("/v1/events", None).await;
    assert_eq!((status, resp["code"].as_i64()), (401, Some(1102)), "{resp}");
    let (status, resp) = app.get("/v1/events", Some("not-a-token")).await;
    assert_eq!((status, resp["code"].as_i64()), (401, Some(1101)), "{resp}");

    for query in [
        "?from=yesterday",
        "?last_event_id=abc",
        "?last_event_id=-1",
        "?session_id=",
    ] {
        let (status, resp) = app.get(&format!("/v1/events{query}"), Some(&ta)).await;
        assert_eq!(
            (status, resp["code"].as_i64()),
            (400, Some(1003)),
            "{query}: {resp}"
        );
    }
    let resp = app
        .client
        .get(app.url("/v1/events"))
        .bearer_auth(&ta)
        .header("last-event-id", "x1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

/// Writes an event in the caller's transaction; returns its id.
async fn write_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    tenant: uuid::Uuid,
    session: uuid::Uuid,
    n: i64,
) -> i64 {
    faceswap_gateway::store::events::insert(
        tx,
        tenant,
        Some(session),
        "session.status_changed",
        &json!({"n": n}),
    )
    .await
    .unwrap()
}

/// Nothing arrives on `client` for a while.
async fn assert_quiet(client: &mut SseClient, why: &str) {
    let got = tokio::time::timeout(Duration::from_millis(800), client.next_unbounded()).await;
    assert!(got.is_err(), "{why}: {got:?}");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn events_that_commit_late_are_neither_skipped_nor_repeated_and_writers_take_no_lock(
    pool: PgPool,
) {
    let app = api_app(pool).await;
    let a = app.tenant(5, None).await;
    let ta = app.token(&a).await;
    let sa = session(&app, &ta).await;
    let session_uuid = SessionId::parse(&sa).unwrap().0;
    let mut client = SseClient::connect(&app, &ta, "", None).await;
    let tenant = tenant_uuid(&a);

    // A writer holds its event uncommitted while another writer of the same tenant commits a
    // higher id: the second is not blocked, and the stream holds it back.
    let mut slow = app.pool.begin().await.unwrap();
    let low = write_in(&mut slow, tenant, session_uuid, 1).await;
    let high = tokio::time::timeout(
        Duration::from_secs(5),
        insert_event(&app.pool, &a, Some(&sa), 2),
    )
    .await
    .expect("a second writer of the tenant is not blocked by the first");
    assert!(high > low);
    assert_quiet(
        &mut client,
        "an event is held back while an older writer runs",
    )
    .await;
    slow.commit().await.unwrap();
    assert_eq!(ids(&client.take(2).await), vec![low, high]);

    // A writer that started first but writes its event after a younger writer committed:
    // its event has the higher id and still comes first.
    let mut older = app.pool.begin().await.unwrap();
    sqlx::query("select pg_current_xact_id()")
        .execute(&mut *older)
        .await
        .unwrap();
    let younger = insert_event(&app.pool, &a, Some(&sa), 3).await;
    let late = write_in(&mut older, tenant, session_uuid, 4).await;
    assert!(late > younger);
    assert_quiet(
        &mut client,
        "the younger writer's event waits for the older writer",
    )
    .await;
    older.commit().await.unwrap();
    let got = client.take(2).await;
    assert_eq!(ids(&got), vec![late, younger], "commit order, not id order");

    // Resuming after the higher id sends the lower one that followed it, and nothing twice.
    let mut resumed = SseClient::connect(&app, &ta, "", Some(late)).await;
    assert_eq!(resumed.next().await.id, younger);
    let next = insert_event(&app.pool, &a, None, 5).await;
    assert_eq!(resumed.next().await.id, next);
    assert_eq!(client.next().await.id, next);

    // An id that is none of the tenant's is refused before streaming.
    let other = app.tenant(5, None).await;
    let to = app.token(&other).await;
    let resp = app
        .client
        .get(app.url("/v1/events"))
        .bearer_auth(&to)
        .header("last-event-id", late.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 1003, "{body}");
}
