//! Input limits: body caps per route, JSON nesting, request head size, and the deadlines that
//! keep slow clients from holding the gateway.

use std::time::{Duration, Instant};

use faceswap_testkit::{TestApp, b64};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CREATE: &str = "/api/open/v3/faceswap/live/create";
const GET_TOKEN: &str = "/api/open/v3/getToken";

fn addr(app: &TestApp) -> String {
    app.base_url.trim_start_matches("http://").to_owned()
}

/// Everything the server sends until it closes the connection (or `limit` passes), and whether
/// it did close.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0) | Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// A getToken call whose body (`chunks` blank chunks of `chunk_len` bytes) streams in without
/// a Content-Length.
async fn stream_to_get_token(
    app: &TestApp,
    chunks: usize,
    chunk_len: usize,
) -> reqwest::Result<reqwest::Response> {
    let chunks = (0..chunks).map(move |_| Ok::<_, std::io::Error>(vec![b' '; chunk_len]));
    app.client
        .post(app.url(GET_TOKEN))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
}

/// The status and JSON body of a raw HTTP/1.1 answer.
#[track_caller]
fn parse_answer(raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn json_routes_get_a_small_body_cap_while_detection_keeps_the_large_one(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = app.token(&app.tenant(5, None).await).await;

    let big = json!({"sourceImage": [{"path": "x".repeat(200 * 1024), "opts": "1,1:2,2:3,3:4,4"}]});
    let (status, resp) = app.post(CREATE, &big, Some(&token)).await;
    assert_eq!((status, resp["code"].as_i64()), (413, Some(4013)), "{resp}");
    assert!(
        resp["msg"].as_str().unwrap().contains("131072"),
        "the message names the route's cap: {resp}"
    );

    // Without a Content-Length the cap holds as the body streams in.
    let resp = stream_to_get_token(&app, 200, 1024).await.unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 4013, "{body}");

    // A detection body over the JSON cap still reaches the upstream, which judges the image
    // (`detect::bodies_over_the_cap_get_413_and_a_10_mb_image_fits_the_default` covers 10 MB).
    let one_mb = vec![0x42u8; 1024 * 1024];
    let (status, resp) = app
        .post("/detect", &json!({"img": b64(&one_mb)}), Some(&token))
        .await;
    assert_eq!(
        (status, resp["error_code"].as_i64()),
        (422, Some(2001)),
        "{resp}"
    );
    assert_eq!(app.sim_stats().await.calls.detect, 1);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_body_refused_as_too_large_is_answered_before_the_connection_closes(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    // Refused once the cap is read while the client is still sending: closing a socket with
    // unread data resets it, and a client whose body write fails gives up on the answer.
    for _ in 0..5 {
        let resp = stream_to_get_token(&app, 64, 64 * 1024)
            .await
            .expect("the refusal reaches the client");
        assert_eq!(resp.status(), 413);
        // The rest of the body would otherwise be read as the next request.
        assert_eq!(resp.headers()["connection"], "close");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], 4013, "{body}");
    }
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn deeply_nested_json_is_refused_with_the_envelope_and_the_gateway_survives(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = app.token(&app.tenant(5, None).await).await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    for (path, auth) in [(CREATE, Some(&token)), (GET_TOKEN, None)] {
        let mut req = app
            .client
            .post(app.url(path))
            .header("content-type", "application/json")
            .body(deep.clone());
        if let Some(t) = auth {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 400, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], 1003, "{body}");
        assert!(
            body["msg"]
                .as_str()
                .unwrap()
                .contains("nested deeper than 32"),
            "{body}"
        );
    }
    // Nesting within the limit is judged by the parser as usual.
    let shallow = json!({"sourceImage": [[[[1]]]]});
    let (status, resp) = app.post(CREATE, &shallow, Some(&token)).await;
    assert_eq!((status, resp["code"].as_i64()), (400, Some(1003)), "{resp}");
    assert!(!resp["msg"].as_str().unwrap().contains("nested"), "{resp}");
    let (status, _) = app.create_session(&token).await;
    assert_eq!(status, 200);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_request_head_over_the_limit_gets_431(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let head = |filler: usize| {
        format!(
            "GET /livez HTTP/1.1\r\nhost: gw\r\nx-filler: {}\r\nconnection: close\r\n\r\n",
            "a".repeat(filler)
        )
    };
    // Hyper's own default (about 400 KiB) would take this head; the gateway's 32 KiB does not.
    // (Hyper checks its buffer between reads, so a head a little over the limit may still fit
    // in the last read; the cap bounds memory, not the exact byte.)
    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    // The server may answer and close before the whole head is written.
    let _ = stream.write_all(head(100 * 1024).as_bytes()).await;
    let (raw, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed);
    assert_eq!(parse_answer(&raw).0, 431);

    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    stream.write_all(head(20 * 1024).as_bytes()).await.unwrap();
    let (raw, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(parse_answer(&raw).0, 200);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_client_sending_its_head_slowly_is_disconnected_while_others_are_served(pool: PgPool) {
    let app = TestApp::builder()
        .args(&["--header-read-timeout-ms", "500"])
        .spawn(pool)
        .await;
    let started = Instant::now();
    let mut slow = TcpStream::connect(addr(&app)).await.unwrap();
    slow.write_all(b"GET /livez HTTP/1.1\r\nhost: gw\r\n")
        .await
        .unwrap();
    let trickle = async {
        // One header byte every 100 ms: each write is well inside any idle timeout, the whole
        // head never is.
        for _ in 0..50 {
            if slow.write_all(b"x").await.is_err() {
                break;
            }
            let mut probe = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut probe)).await {
                Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
                Ok(Ok(_)) => panic!("the server answered a head it never received"),
                Err(_) => {}
            }
        }
        None
    };
    let others = async {
        for _ in 0..5 {
            let resp = app.client.get(app.url("/livez")).send().await.unwrap();
            assert_eq!(resp.status(), 200);
        }
    };
    let (dropped_after, ()) = tokio::join!(trickle, others);
    let dropped_after = dropped_after.expect("the slow client is disconnected");
    assert!(
        dropped_after >= Duration::from_millis(400) && dropped_after < Duration::from_secs(3),
        "disconnected after {dropped_after:?}"
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_client_sending_its_body_slowly_gets_408_while_others_are_served(pool: PgPool) {
    let app = TestApp::builder()
        .args(&["--body-read-timeout-ms", "500"])
        .spawn(pool)
        .await;
    let tenant = app.tenant(5, None).await;
    let mut slow = TcpStream::connect(addr(&app)).await.unwrap();
    let started = Instant::now();
    slow.write_all(
        b"POST /api/open/v3/getToken HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"clientId\"",
    )
    .await
    .unwrap();
    let stalled = async {
        let (raw, _) = read_until_closed(&mut slow, Duration::from_secs(5)).await;
        (parse_answer(&raw), started.elapsed())
    };
    let others = async {
        for _ in 0..3 {
            app.token(&tenant).await;
        }
    };
    let (((status, body), waited), ()) = tokio::join!(stalled, others);
    assert_eq!((status, body["code"].as_i64()), (408, Some(4008)), "{body}");
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "answered after {waited:?}"
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn slow_answers_hit_the_request_timeout_but_the_event_stream_lives_on(pool: PgPool) {
    let app = TestApp::builder()
        .args(&["--request-timeout-ms", "2000"])
        .spawn(pool)
        .await;
    let token = app.token(&app.tenant(5, None).await).await;

    let mut stream = app
        .client
        .get(app.url("/v1/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let (status, created) = app.create_session(&token).await;
    assert_eq!(status, 200, "{created}");
    // Outlive the request timeout before the event the stream must still carry.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, resp) = app
        .post(
            "/api/open/v3/faceswap/live/close",
            &json!({"_id": created["data"]["_id"]}),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = stream.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("event: session.closed") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "stream so far: {seen}");

    // A slow upstream answer is cut at the request timeout, in the detection shape.
    app.sim_config(json!({"latency_ms": 8000})).await;
    let started = Instant::now();
    let (status, resp) = app
        .post(
            "/detect",
            &json!({"img": b64(b"not an image")}),
            Some(&token),
        )
        .await;
    assert_eq!(
        (status, resp["error_code"].as_i64()),
        (503, Some(5003)),
        "{resp}"
    );
    assert!(started.elapsed() < Duration::from_millis(6000));
}
