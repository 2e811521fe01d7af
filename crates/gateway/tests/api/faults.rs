//! Faults: Redis killed and restarted, Postgres restarted, and the gateway SIGKILLed during a
//! burst of creates, against the real binary. Redis and Postgres are private instances (the
//! shared ones other tests use are never stopped).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faceswap_gateway::domain::ids::TenantId;
use faceswap_testkit::private::{PrivatePostgres, PrivateRedis};
use faceswap_testkit::{TestApp, TestTenant, b64, eventually, testdata};
use futures_util::future::join_all;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::procs::spawn_binary;

const GET_TOKEN: &str = "/api/open/v3/getToken";
const CREATE: &str = "/api/open/v3/faceswap/live/create";
const INFO: &str = "/api/open/v3/faceswap/live/info";
const CLOSE: &str = "/api/open/v3/faceswap/live/close";

/// Answers counted by status; "lost" are requests that got no answer at all, "bare" are
/// non-2xx answers without the envelope.
#[derive(Debug, Default)]
struct Tally {
    tried: usize,
    by_status: BTreeMap<u16, usize>,
    lost: Vec<String>,
    bare: Vec<String>,
}

impl Tally {
    /// Prints the phase's figures; every request was answered, each with the envelope.
    fn report_and_check(&self, fault: &str, phase: &str) {
        println!(
            "{fault} fault, {phase}: tried {}, ok {}, failed {} {:?}, lost {}",
            self.tried,
            self.ok(),
            self.failed(),
            self.by_status,
            self.lost.len()
        );
        assert!(
            self.lost.is_empty(),
            "{phase}: unanswered requests {:?}",
            self.lost
        );
        assert!(
            self.bare.is_empty(),
            "{phase}: answers without the envelope {:?}",
            self.bare
        );
    }

    fn ok(&self) -> usize {
        self.by_status
            .iter()
            .filter(|(s, _)| (200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }

    fn failed(&self) -> usize {
        self.tried - self.ok() - self.lost.len()
    }
}

/// One call's outcome, recorded; the JSON body when there was one.
struct Caller {
    client: reqwest::Client,
    base: String,
    tally: Arc<Mutex<Tally>>,
}

impl Caller {
    async fn post(&self, path: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let answer = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                resp.text().await.map(|text| (status, text))
            }
            Err(e) => Err(e),
        };
        let mut tally = self.tally.lock().unwrap();
        tally.tried += 1;
        match answer {
            Err(e) => {
                tally.lost.push(format!("{path}: {e}"));
                (0, Value::Null)
            }
            Ok((status, text)) => {
                *tally.by_status.entry(status).or_default() += 1;
                let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let code = body.get("code").or_else(|| body.get("error_code"));
                if !(200..300).contains(&status) && !code.is_some_and(Value::is_i64) {
                    tally.bare.push(format!("{path} {status}: {text}"));
                }
                (status, body)
            }
        }
    }
}

/// Calls `op` in `workers` loops until `stop` is set.
fn load<F, Fut>(workers: usize, stop: &Arc<AtomicBool>, op: F) -> Vec<tokio::task::JoinHandle<()>>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    (0..workers)
        .map(|_| {
            let (op, stop) = (op.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    op().await;
                }
            })
        })
        .collect()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

fn caller(client: &reqwest::Client, base: &str, tally: &Arc<Mutex<Tally>>) -> Arc<Caller> {
    Arc::new(Caller {
        client: client.clone(),
        base: base.to_owned(),
        tally: tally.clone(),
    })
}

fn creds(t: &TestTenant) -> Value {
    json!({"clientId": t.client_id, "clientSecret": t.client_secret})
}

fn source() -> Value {
    json!({"sourceImage": [{"path": "https://images.example/face.jpg", "opts": "150,170:230,170:190,215:190,255"}]})
}

/// getToken, detect, and a session's create, info and close, in a loop.
async fn mixed_calls(c: Arc<Caller>, tenant: TestTenant, token: String, face: Arc<Value>) {
    c.post(GET_TOKEN, &creds(&tenant), None).await;
    c.post("/detect", &face, Some(&token)).await;
    let (status, created) = c.post(CREATE, &source(), Some(&token)).await;
    if status == 200 {
        let id = json!({"_id": created["data"]["_id"]});
        c.post(INFO, &id, Some(&token)).await;
        c.post(CLOSE, &id, Some(&token)).await;
    }
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn redis_killed_mid_load_then_restarted_the_gateway_serves_throughout_and_uses_it_again(
    pool: PgPool,
) {
    let mut redis = PrivateRedis::start().await;
    let app = TestApp::builder().redis_url(&redis.url()).spawn(pool).await;
    let tenant = app.tenant(100, None).await;
    let token = app.token(&tenant).await;
    let private_redis = redis.url();
    let gw = spawn_binary(
        &app,
        &[
            ("REDIS_URL", private_redis.as_str()),
            ("GATEWAY_ROLE", "api"),
            ("RUST_LOG", "error"),
        ],
    )
    .await;
    let token_key = format!("{}upstream:token", app.redis_prefix);
    let redis_url = redis.url();
    let redis_has_token = move || {
        let (url, key) = (redis_url.clone(), token_key.clone());
        async move {
            let client = redis::Client::open(url).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            let n: i64 = redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .ok()?;
            (n == 1).then_some(())
        }
    };

    let phases: Vec<Arc<Mutex<Tally>>> = (0..3).map(|_| Arc::default()).collect();
    let current = Arc::new(Mutex::new(phases[0].clone()));
    let face = Arc::new(json!({"img": b64(&testdata("face.jpg"))}));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(4, &stop, {
        let (current, url, http) = (current.clone(), gw.url.clone(), client());
        move || {
            let c = caller(&http, &url, &current.lock().unwrap().clone());
            let (tenant, token, face) = (tenant.clone(), token.clone(), face.clone());
            mixed_calls(c, tenant, token, face)
        }
    });

    eventually(
        Duration::from_secs(10),
        "the token in Redis",
        redis_has_token.clone(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    redis.kill();
    *current.lock().unwrap() = phases[1].clone();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    *current.lock().unwrap() = phases[2].clone();
    redis.restart().await;
    let restarted = Instant::now();
    // The restarted Redis is empty; a refused token makes the gateway fetch a new one, and it
    // must store it there again rather than keep a per-process one.
    app.sim_post("/sim/expire-tokens").await;
    eventually(
        Duration::from_secs(15),
        "the gateway to store the upstream token in the restarted Redis",
        redis_has_token,
    )
    .await;
    let recovered_after = restarted.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }

    for (name, phase) in ["before", "redis down", "after restart"]
        .iter()
        .zip(&phases)
    {
        let t = phase.lock().unwrap();
        t.report_and_check("redis", name);
        assert!(t.ok() > 0, "{name}: nothing was served");
    }
    println!(
        "redis fault: token back in the restarted Redis {recovered_after:?} after its restart"
    );
    let down = phases[1].lock().unwrap();
    assert!(
        down.by_status.keys().all(|s| *s < 500),
        "a Redis outage is not a server error: {:?}",
        down.by_status
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn postgres_restarted_mid_load_calls_fail_fast_with_5003_then_recover(_shared: PgPool) {
    let pg = PrivatePostgres::start().await;
    let pool = faceswap_gateway::startup::connect_db(&pg.url(), 5)
        .await
        .unwrap();
    faceswap_gateway::MIGRATOR.run(&pool).await.unwrap();
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(100, None).await;
    let token = app.token(&tenant).await;
    let private_pg = pg.url();
    let gw = spawn_binary(
        &app,
        &[
            ("DATABASE_URL", private_pg.as_str()),
            ("GATEWAY_ROLE", "api"),
            ("RUST_LOG", "error"),
        ],
    )
    .await;

    let phases: Vec<Arc<Mutex<Tally>>> = (0..3).map(|_| Arc::default()).collect();
    let current = Arc::new(Mutex::new(phases[0].clone()));
    // The slowest refusal of a call that needs the database, while it is down.
    let slowest_refusal = Arc::new(Mutex::new(Duration::ZERO));
    let face = Arc::new(json!({"img": b64(&testdata("face.jpg"))}));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(3, &stop, {
        let (current, url, slowest) = (current.clone(), gw.url.clone(), slowest_refusal.clone());
        let (http, token) = (client(), token.clone());
        move || {
            let c = caller(&http, &url, &current.lock().unwrap().clone());
            let (tenant, token, slowest) = (tenant.clone(), token.clone(), slowest.clone());
            let face = face.clone();
            async move {
                let started = Instant::now();
                let (status, body) = c.post(CREATE, &source(), Some(&token)).await;
                if status == 503 {
                    assert_eq!(body["code"], 5003, "{body}");
                    let took = started.elapsed();
                    let mut s = slowest.lock().unwrap();
                    *s = (*s).max(took);
                } else if status == 200 {
                    let id = json!({"_id": body["data"]["_id"]});
                    c.post(CLOSE, &id, Some(&token)).await;
                }
                c.post(GET_TOKEN, &creds(&tenant), None).await;
                c.post("/detect", &face, Some(&token)).await;
            }
        }
    });

    tokio::time::sleep(Duration::from_millis(1000)).await;
    pg.stop_immediately().await;
    *current.lock().unwrap() = phases[1].clone();
    // Whatever the load happens to send meanwhile, a call needing the database now fails fast.
    let down_probe = caller(&client(), &gw.url, &phases[1]);
    let started = Instant::now();
    let (status, body) = down_probe.post(CREATE, &source(), Some(&token)).await;
    assert_eq!((status, body["code"].as_i64()), (503, Some(5003)), "{body}");
    {
        let mut s = slowest_refusal.lock().unwrap();
        *s = (*s).max(started.elapsed());
    }
    tokio::time::sleep(Duration::from_millis(3000)).await;
    pg.restart().await;
    *current.lock().unwrap() = phases[2].clone();
    let restarted = Instant::now();
    let probe = caller(&client(), &gw.url, &Arc::default());
    eventually(Duration::from_secs(15), "creates to succeed again", || {
        let (probe, token) = (probe.clone(), token.clone());
        async move {
            let (status, body) = probe.post(CREATE, &source(), Some(&token)).await;
            (status == 200).then_some(body)
        }
    })
    .await;
    let recovered_after = restarted.elapsed();
    // Everything the load sends from now on must succeed.
    let settled = Arc::new(Mutex::new(Tally::default()));
    *current.lock().unwrap() = settled.clone();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }

    let names = ["before", "postgres down", "restarting", "recovered"];
    let all: Vec<_> = phases.iter().chain([&settled]).collect();
    for (name, phase) in names.iter().zip(all) {
        let t = phase.lock().unwrap();
        t.report_and_check("postgres", name);
    }
    let slowest = *slowest_refusal.lock().unwrap();
    println!(
        "postgres fault: slowest 503 while down {slowest:?}; creates succeed again {recovered_after:?} after the restart"
    );
    let down = phases[1].lock().unwrap();
    assert!(down.by_status.get(&503).is_some_and(|n| *n > 0), "{down:?}");
    assert!(
        down.by_status.keys().all(|s| [200, 503].contains(s)),
        "{:?}",
        down.by_status
    );
    // Detection needs no database: it is still served.
    assert!(down.ok() > 0, "{down:?}");
    assert!(
        slowest < Duration::from_secs(3),
        "refusals took {slowest:?}"
    );
    let recovered = settled.lock().unwrap();
    assert!(
        recovered.tried > 0 && recovered.ok() == recovered.tried,
        "{recovered:?}"
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn sigkill_during_100_concurrent_creates_leaves_nothing_unsettled_after_a_reaper_period(
    pool: PgPool,
) {
    let app = TestApp::builder()
        .sim_flags(&["--latency-ms", "300", "--max-open-sessions", "1000"])
        .spawn(pool.clone())
        .await;
    let mut tenants = Vec::new();
    for _ in 0..4 {
        let tenant = app.tenant(100, None).await;
        let token = app.token(&tenant).await;
        tenants.push((tenant, token));
    }
    let mut gw = spawn_binary(&app, &[("GATEWAY_ROLE", "api"), ("RUST_LOG", "error")]).await;

    let client = reqwest::Client::new();
    let creates = join_all((0..100).map(|i| {
        let req = client
            .post(format!("{}{CREATE}", gw.url))
            .bearer_auth(&tenants[i % 4].1)
            .json(&source());
        tokio::spawn(async move {
            let resp = req.send().await.ok()?;
            let status = resp.status().as_u16();
            resp.bytes().await.ok().map(|_| status)
        })
    }));
    let creates = tokio::spawn(creates);
    // Kill while the upstream is answering: some creates are recorded, some answered but not
    // yet recorded (the window the reaper cannot see into), some still in flight.
    let app_ref = &app;
    eventually(
        Duration::from_secs(20),
        "the first creates to be made upstream",
        move || async move { (app_ref.sim_stats().await.sessions_created >= 10).then_some(()) },
    )
    .await;
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();
    let answers: Vec<Option<u16>> = creates
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let answered = answers.iter().filter(|a| a.is_some()).count();
    // Requests the dead gateway had already written may still be reaching the simulator.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reached_upstream = app.sim_stats().await.calls.create;
    let (recorded, known_at_kill): (i64, i64) =
        sqlx::query_as("select count(*), count(upstream_id) from sessions")
            .fetch_one(&pool)
            .await
            .unwrap();
    let in_flight_upstream = reached_upstream as i64 - known_at_kill;

    let _gw2 = spawn_binary(
        &app,
        &[
            ("GATEWAY_ROLE", "all"),
            ("RUST_LOG", "error"),
            ("UPSTREAM_TIMEOUT_MS", "1000"),
            ("GATEWAY_WORKER_LEASE_MS", "2000"),
            ("GATEWAY_CREATING_TIMEOUT_SECONDS", "2"),
            ("GATEWAY_WORKER_TICK_MS", "100"),
            ("GATEWAY_STATUS_POLL_MS", "500"),
        ],
    )
    .await;
    let restarted = Instant::now();
    eventually(
        Duration::from_secs(30),
        "every recorded session to settle",
        || {
            let pool = pool.clone();
            async move {
                let unsettled: i64 = sqlx::query_scalar(
                    "select count(*) from sessions where state in ('creating', 'closing')",
                )
                .fetch_one(&pool)
                .await
                .ok()?;
                (unsettled == 0).then_some(())
            }
        },
    )
    .await;
    let settled_after = restarted.elapsed();

    let by_state: Vec<(String, i64)> =
        sqlx::query_as("select state, count(*) from sessions group by state order by state")
            .fetch_all(&pool)
            .await
            .unwrap();
    // No reservation of a dead request is held: each tenant's usage counts only its open
    // sessions.
    for (tenant, token) in &tenants {
        let open: i64 = sqlx::query_scalar(
            "select count(*) from sessions where tenant_id = $1::uuid and state = 'open'",
        )
        .bind(TenantId::parse(&tenant.tenant_id).unwrap().0)
        .fetch_one(&pool)
        .await
        .unwrap();
        let (status, usage) = app.get("/v1/usage", Some(token)).await;
        assert_eq!(status, 200, "{usage}");
        assert_eq!(
            usage["data"]["active_sessions"].as_i64(),
            Some(open),
            "{usage}"
        );
    }
    // No tenant is charged twice, and only settled sessions are charged.
    let (charges, charged_sessions, charged_unclosed): (i64, i64, i64) = sqlx::query_as(
        "select count(*), count(distinct l.session_id), count(*) filter (where s.state <> 'closed')
         from usage_ledger l join sessions s using (session_id)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(charges, charged_sessions);
    assert_eq!(charged_unclosed, 0);

    // Every session the gateway holds open is open upstream; the upstream sessions it never
    // learned of are the leak the create window allows.
    let stats = app.sim_stats().await;
    let known: HashSet<String> =
        sqlx::query_scalar("select upstream_id from sessions where upstream_id is not null")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let open_upstream: HashSet<String> = stats.open_sessions.iter().cloned().collect();
    let ours_open: Vec<String> =
        sqlx::query_scalar("select upstream_id from sessions where state = 'open'")
            .fetch_all(&pool)
            .await
            .unwrap();
    for id in &ours_open {
        assert!(
            open_upstream.contains(id),
            "{id} is open here but not upstream"
        );
    }
    let unknown = open_upstream.difference(&known).count() as i64;
    println!(
        "sigkill: 100 creates, {answered} answered before the kill, {recorded} recorded, \
         {reached_upstream} reached the upstream, {known_at_kill} upstream ids known at the kill, \
         {in_flight_upstream} in flight upstream; settled {settled_after:?} after the restart \
         {by_state:?}; upstream sessions open that the gateway never learned of: {unknown}"
    );
    assert!(
        unknown <= in_flight_upstream.max(0),
        "{unknown} unknown open upstream sessions, {in_flight_upstream} were in flight"
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn connections_the_server_dropped_are_replaced_before_use(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(5, None).await;
    let token = app.token(&tenant).await;
    let gw = spawn_binary(&app, &[("GATEWAY_ROLE", "api")]).await;
    let http = client();
    let usage = || {
        let (http, url, token) = (http.clone(), format!("{}/v1/usage", gw.url), token.clone());
        async move {
            let resp = http.get(url).bearer_auth(token).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    // Concurrent calls leave several connections in the gateway's pool.
    for (status, body) in join_all((0..8).map(|_| usage())).await {
        assert_eq!(status, 200, "{body}");
    }
    let dropped: i64 = sqlx::query_scalar(
        "select count(*) filter (where pg_terminate_backend(pid)) from pg_stat_activity
         where datname = current_database() and pid <> pg_backend_pid()",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(dropped > 0, "the gateway held connections");
    // Idle past the threshold, so each is checked before it is handed out again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (status, body) in join_all((0..8).map(|_| usage())).await {
        assert_eq!(
            status, 200,
            "a dropped connection is replaced, not used: {body}"
        );
    }
}
