//! The call policy against the real simulator: retries, the circuit breaker, timeouts and the
//! concurrency bound.

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use faceswap_sim::SimArgs;
use faceswap_upstream::{
    BreakerSettings, BreakerState, Call, CallPolicy, UpstreamClient, UpstreamError,
};
use futures_util::StreamExt;
use serde_json::json;

use crate::helpers::{
    CLIENT_ID, CLIENT_SECRET, b64, client_with_policy, create_request, eventually, recorded,
    sim_stats, spawn_sim,
};

/// Many attempts with a tiny base delay: at a 30% error rate a call then fails only with
/// probability 0.3^12 (about 5e-7), so hundreds of calls all succeed without flakiness.
fn patient(cool_down: Duration) -> CallPolicy {
    CallPolicy {
        retry_attempts: 12,
        retry_base: Duration::from_millis(1),
        breaker: BreakerSettings {
            cool_down,
            ..BreakerSettings::default()
        },
        ..CallPolicy::default()
    }
}

fn blank_png() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(64, 64, image::Rgb([240, 240, 240]));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// Runs `n` copies of `call` 16 at a time; returns how many succeeded.
async fn run_many<F, Fut, T>(n: usize, call: F) -> usize
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, UpstreamError>>,
{
    futures_util::stream::iter((0..n).map(|_| call()))
        .buffer_unordered(16)
        .filter(|r| std::future::ready(r.is_ok()))
        .count()
        .await
}

#[tokio::test]
async fn idempotent_calls_succeed_through_retries_at_a_30_percent_error_rate() {
    let sim = spawn_sim(&[]).await;
    let base = sim.handle.base_url();
    let token = sim.token().await.token;
    let live = sim.client.create(&token, &create_request()).await.unwrap();
    let (client, rec) = recorded(client_with_policy(
        &base,
        Duration::from_secs(5),
        patient(Duration::from_secs(5)),
    ));
    let before = sim_stats(&base).await;
    sim.set_config(json!({"error_rate": 0.3})).await;

    let detect_body = Bytes::from(json!({"img": b64(&blank_png())}).to_string());
    let started = Instant::now();
    let tokens = run_many(200, || client.get_token(CLIENT_ID, CLIENT_SECRET)).await;
    let infos = run_many(200, || client.info(&token, &live.id)).await;
    let detects = run_many(200, || client.detect(&token, detect_body.clone())).await;
    let elapsed = started.elapsed();
    assert_eq!((tokens, infos, detects), (200, 200, 200));

    let after = sim_stats(&base).await;
    let received = [
        (
            Call::GetToken,
            after.calls.get_token - before.calls.get_token,
        ),
        (Call::Info, after.calls.info - before.calls.info),
        (Call::Detect, after.calls.detect - before.calls.detect),
    ];
    let mut retries = 0;
    for (call, n) in received {
        let n = n as usize;
        assert_eq!(
            n,
            rec.attempts_of(call),
            "{call}: every attempt is observed"
        );
        assert!(n > 200, "{call}: the simulator saw the retries ({n})");
        assert_eq!(
            rec.retries_of(call),
            n - 200,
            "{call}: one retry per failed attempt"
        );
        retries += n - 200;
    }
    assert_eq!(
        retries as u64,
        after.faults.errors - before.faults.errors,
        "every retry answered an injected error"
    );
    assert!(
        client
            .breaker_states()
            .iter()
            .all(|(_, s)| *s == BreakerState::Closed),
        "a 30% error rate leaves the breaker closed"
    );
    eprintln!(
        "600 calls at 30% errors: 600 ok, {retries} retries, {} upstream attempts, {elapsed:?}",
        600 + retries
    );
}

#[tokio::test]
async fn with_the_default_three_attempts_nearly_every_call_succeeds_at_30_percent_errors() {
    let sim = spawn_sim(&["--error-rate", "0.3"]).await;
    let (client, rec) = recorded(client_with_policy(
        &sim.handle.base_url(),
        Duration::from_secs(5),
        CallPolicy::default(),
    ));
    let ok = run_many(300, || client.get_token(CLIENT_ID, CLIENT_SECRET)).await;
    // Each call fails only when all three attempts do: 2.7%; 10% leaves room for chance.
    assert!(ok >= 270, "{ok} of 300");
    assert!(
        !rec.breaker.lock().unwrap().contains(&BreakerState::Open),
        "the breaker never opened"
    );
    eprintln!("default policy at 30% errors: {ok}/300 getToken calls ok");
}

#[tokio::test]
async fn create_and_update_are_never_retried() {
    let sim = spawn_sim(&["--max-open-sessions", "1000"]).await;
    let base = sim.handle.base_url();
    let token = sim.token().await.token;
    let live = sim.client.create(&token, &create_request()).await.unwrap();
    let (client, rec) = recorded(client_with_policy(
        &base,
        Duration::from_secs(5),
        patient(Duration::from_secs(5)),
    ));
    let before = sim_stats(&base).await;
    sim.set_config(json!({"error_rate": 0.3})).await;

    let create = create_request();
    let results: Vec<_> = futures_util::stream::iter(0..60)
        .map(|_| client.create(&token, &create))
        .buffer_unordered(8)
        .collect()
        .await;
    let update = faceswap_wire::UpdateRequest {
        id: live.id.clone(),
        source_image: create_request().source_image,
    };
    let updates: Vec<_> = futures_util::stream::iter(0..30)
        .map(|_| client.update(&token, &update))
        .buffer_unordered(8)
        .collect()
        .await;

    let after = sim_stats(&base).await;
    assert_eq!(after.calls.create - before.calls.create, 60);
    assert_eq!(after.calls.update - before.calls.update, 30);
    assert_eq!(rec.attempts_of(Call::Create), 60);
    assert_eq!(
        rec.retries_of(Call::Create) + rec.retries_of(Call::Update),
        0
    );
    let created = results.iter().filter(|r| r.is_ok()).count() as u64;
    assert_eq!(after.sessions_created - before.sessions_created, created);
    assert!(created < 60, "some creates met an injected error");
    let failures = results
        .iter()
        .chain(updates.iter())
        .filter_map(|r| r.as_ref().err());
    for e in failures {
        assert!(
            matches!(e, UpstreamError::Status { status: 503, .. }),
            "{e:?}"
        );
    }
}

/// Calls `client.info` until the breaker refuses; returns how many calls that took.
async fn until_open(client: &UpstreamClient, token: &str) -> usize {
    for n in 1..=30 {
        if let Err(UpstreamError::CircuitOpen { .. }) = client.info(token, "x").await {
            return n;
        }
    }
    panic!("the breaker did not open within 30 calls");
}

#[tokio::test]
async fn a_failing_upstream_opens_the_breaker_which_fails_fast_and_a_probe_closes_it() {
    let sim = spawn_sim(&[]).await;
    let base = sim.handle.base_url();
    let token = sim.token().await.token;
    // Long enough that the refusals below all fall inside it on a loaded machine.
    let cool_down = Duration::from_secs(1);
    let policy = CallPolicy {
        retry_base: Duration::from_millis(1),
        breaker: BreakerSettings {
            cool_down,
            ..BreakerSettings::default()
        },
        ..CallPolicy::default()
    };
    let (client, rec) = recorded(client_with_policy(&base, Duration::from_secs(5), policy));
    sim.set_config(json!({"error_rate": 1.0})).await;

    let calls = until_open(&client, &token).await;
    assert!(calls <= 8, "20 failed attempts open it: {calls} calls");
    let received = sim_stats(&base).await.calls.info;
    assert_eq!(
        received, 20,
        "three attempts per call until the 20th failure"
    );

    // While open: nothing reaches the upstream, and refusals are immediate.
    let started = Instant::now();
    for _ in 0..50 {
        let err = client.info(&token, "x").await.unwrap_err();
        assert!(!err.maybe_delivered(), "{err:?}");
        let UpstreamError::CircuitOpen { retry_after, .. } = err else {
            panic!("{err:?}")
        };
        assert!(retry_after <= cool_down);
    }
    let fail_fast = started.elapsed() / 50;
    assert!(
        fail_fast < Duration::from_millis(5),
        "{fail_fast:?} per refused call"
    );
    assert_eq!(
        sim_stats(&base).await.calls.info,
        received,
        "no call while open"
    );
    let refused = rec
        .attempts
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, e)| matches!(e, Some(UpstreamError::CircuitOpen { .. })))
        .count();
    assert!(refused >= 50, "the observer hears refused calls: {refused}");

    // After the cool-down, a probe still failing reopens it at once (its retry is refused).
    eventually(Duration::from_secs(3), "a probe", || async {
        let result = client.info(&token, "x").await;
        assert!(
            matches!(result, Err(UpstreamError::CircuitOpen { .. })),
            "{result:?}"
        );
        (sim_stats(&base).await.calls.info > received).then_some(())
    })
    .await;
    assert!(matches!(
        client.info(&token, "x").await,
        Err(UpstreamError::CircuitOpen { .. })
    ));
    assert_eq!(
        sim_stats(&base).await.calls.info,
        received + 1,
        "one probe, not retried into an open breaker"
    );

    // The upstream heals: the next probe closes the breaker.
    sim.set_config(json!({"error_rate": 0.0})).await;
    let healed = Instant::now();
    eventually(Duration::from_secs(3), "the breaker closes", || async {
        matches!(
            client.info(&token, "x").await,
            Err(UpstreamError::Business { .. })
        )
        .then_some(())
    })
    .await;
    let recovery = healed.elapsed();
    assert!(
        recovery <= cool_down + Duration::from_millis(500),
        "{recovery:?}"
    );
    assert_eq!(client.breaker_states()[0].1, BreakerState::Closed);
    assert_eq!(
        *rec.breaker.lock().unwrap(),
        [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
            BreakerState::Open,
            BreakerState::HalfOpen,
            BreakerState::Closed
        ]
    );
    eprintln!(
        "error rate 1.0: open after {calls} calls; refused calls take {fail_fast:?}; closed {recovery:?} after healing (cool-down {cool_down:?})"
    );
}

#[tokio::test]
async fn a_stopped_upstream_opens_the_breaker_and_its_return_closes_it() {
    let sim = spawn_sim(&[]).await;
    let addr = sim.handle.addr();
    let cool_down = Duration::from_millis(300);
    let policy = CallPolicy {
        retry_base: Duration::from_millis(1),
        breaker: BreakerSettings {
            cool_down,
            ..BreakerSettings::default()
        },
        ..CallPolicy::default()
    };
    let client = client_with_policy(&sim.handle.base_url(), Duration::from_secs(5), policy);
    client.get_token(CLIENT_ID, CLIENT_SECRET).await.unwrap();
    drop(sim);

    let mut refused = None;
    for _ in 0..30 {
        match client.get_token(CLIENT_ID, CLIENT_SECRET).await {
            Err(UpstreamError::CircuitOpen { .. }) => {
                refused = Some(());
                break;
            }
            // The first calls may still meet the stopping server.
            Ok(_) | Err(UpstreamError::Connect { .. } | UpstreamError::Transport { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(refused.is_some(), "the breaker opened");
    let started = Instant::now();
    let err = client
        .get_token(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::CircuitOpen { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(50));

    let args = SimArgs::try_parse_from(["faceswap-sim", "--bind", &addr.to_string()]).unwrap();
    let _back = faceswap_sim::spawn(args).await.unwrap();
    eventually(Duration::from_secs(3), "the breaker closes", || async {
        client.get_token(CLIENT_ID, CLIENT_SECRET).await.ok()
    })
    .await;
    assert_eq!(client.breaker_states()[0].1, BreakerState::Closed);
}

#[tokio::test]
async fn latency_above_the_timeout_gives_timeouts_bounded_in_time_and_not_retried() {
    let sim = spawn_sim(&[]).await;
    let base = sim.handle.base_url();
    let token = sim.token().await.token;
    let timeout = Duration::from_millis(300);
    let client = client_with_policy(&base, timeout, CallPolicy::default());
    sim.set_config(json!({"latency_ms": 2000})).await;
    let before = sim_stats(&base).await;

    let started = Instant::now();
    let err = client.info(&token, "x").await.unwrap_err();
    assert_eq!(err, UpstreamError::Timeout { call: Call::Info });
    let info_took = started.elapsed();

    // A 12 MiB detect body is cut off by the same total timeout.
    let big = Bytes::from(json!({"img": "A".repeat(12 << 20)}).to_string());
    let started = Instant::now();
    let err = client.detect(&token, big).await.unwrap_err();
    assert_eq!(err, UpstreamError::Timeout { call: Call::Detect });
    let detect_took = started.elapsed();

    for took in [info_took, detect_took] {
        assert!(took >= timeout && took < timeout * 3, "{took:?}");
    }
    let after = sim_stats(&base).await;
    assert_eq!(
        after.calls.info - before.calls.info,
        1,
        "timeouts are not retried"
    );
    assert_eq!(after.calls.detect - before.calls.detect, 1);
    eprintln!(
        "latency 2 s, timeout 300 ms: info failed in {info_took:?}, 12 MiB detect in {detect_took:?}"
    );
}

#[tokio::test]
async fn calls_beyond_the_concurrency_bound_are_refused_busy() {
    let sim = spawn_sim(&["--latency-ms", "600"]).await;
    let base = sim.handle.base_url();
    let policy = CallPolicy {
        max_concurrency: 2,
        queue_timeout: Duration::from_millis(50),
        ..CallPolicy::default()
    };
    let client = client_with_policy(&base, Duration::from_secs(5), policy);
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.get_token(CLIENT_ID, CLIENT_SECRET).await })
        })
        .collect();
    eventually(Duration::from_secs(2), "two calls in flight", || async {
        (client.in_flight() == 2).then_some(())
    })
    .await;

    let started = Instant::now();
    let err = client
        .get_token(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        UpstreamError::Busy {
            call: Call::GetToken
        }
    );
    assert!(!err.maybe_delivered());
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );

    for task in slow {
        task.await.unwrap().unwrap();
    }
    assert_eq!(
        sim_stats(&base).await.calls.get_token,
        2,
        "the refused call was not sent"
    );
    client.get_token(CLIENT_ID, CLIENT_SECRET).await.unwrap();
    assert_eq!(client.in_flight(), 0);
}

#[tokio::test]
async fn a_burst_as_large_as_the_concurrency_bound_finds_its_connections_open_at_the_next() {
    // Above hyper's usual idle-pool sizes, so a fixed pool size below the bound would show.
    let bound = 300;
    // A second's latency keeps every call of a burst in flight until the last one has
    // started, even in a slow build: each needs its own connection.
    let sim = spawn_sim(&["--latency-ms", "1000"]).await;
    let base = sim.handle.base_url();
    let policy = CallPolicy {
        max_concurrency: bound,
        ..CallPolicy::default()
    };
    let client = client_with_policy(&base, Duration::from_secs(10), policy);
    let burst = || async {
        let calls = (0..bound).map(|_| client.get_token(CLIENT_ID, CLIENT_SECRET));
        for result in futures_util::future::join_all(calls).await {
            result.unwrap();
        }
    };

    let before = sim_stats(&base).await.connections;
    burst().await;
    let after_first = sim_stats(&base).await.connections;
    // Each stats read comes on a connection of its own.
    let opened = after_first - before - 1;
    assert!(
        opened >= bound as u64,
        "the first burst opened {opened} connections"
    );
    burst().await;
    let after_second = sim_stats(&base).await.connections;
    assert_eq!(
        after_second - after_first - 1,
        0,
        "the second burst opened connections"
    );
}

#[tokio::test]
async fn busy_refusals_do_not_open_the_breaker() {
    let sim = spawn_sim(&["--latency-ms", "300"]).await;
    let policy = CallPolicy {
        max_concurrency: 1,
        queue_timeout: Duration::from_millis(1),
        ..CallPolicy::default()
    };
    let client = client_with_policy(&sim.handle.base_url(), Duration::from_secs(5), policy);
    let results: Vec<_> =
        futures_util::future::join_all((0..40).map(|_| client.get_token(CLIENT_ID, CLIENT_SECRET)))
            .await;
    let busy = results
        .iter()
        .filter(|r| matches!(r, Err(UpstreamError::Busy { .. })))
        .count();
    assert_eq!(busy, 39, "one slot, one call through");
    assert_eq!(client.breaker_states()[0].1, BreakerState::Closed);
}
