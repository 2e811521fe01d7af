//! Metrics, request ids and logs, observed from outside: `/metrics` scraped over HTTP, response
//! headers, and the log lines a real request flow writes.
//!
//! The metrics recorder is process-global and tests run side by side, so every metric assertion
//! is on the delta of a series labelled with something the test owns (its tenant id), or on a
//! lower bound of a shared series.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use faceswap_gateway::config::LogFormat;
use faceswap_gateway::domain::ids::TenantId;
use faceswap_gateway::metrics::{self, Kind};
use faceswap_testkit::{SIM_CLIENT_SECRET, TestApp, b64, testdata};
use serde_json::{Value, json};
use sqlx::PgPool;

/// One scrape of `/metrics`, parsed.
struct Scrape(Vec<(String, BTreeMap<String, String>, f64)>);

impl Scrape {
    async fn of(app: &TestApp) -> Self {
        let resp = app.client.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        Self::parse(&resp.text().await.unwrap())
    }

    fn parse(text: &str) -> Self {
        let mut series = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (head, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match head.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (head, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once("=\"").unwrap();
                    (k.to_owned(), v.trim_end_matches('"').to_owned())
                })
                .collect();
            series.push((name.to_owned(), labels, value.parse().unwrap()));
        }
        Self(series)
    }

    /// The sum of the series named `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|(_, v)| v).sum()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = (&'a BTreeMap<String, String>, f64)> + 'a {
        self.0
            .iter()
            .filter(move |(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).is_some_and(|x| x == v))
            })
            .map(|(_, l, v)| (l, *v))
    }
}

const HEARTBEAT: &str = "/v1/sessions/{id}/heartbeat";

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn metrics_count_requests_by_route_template_tenant_and_upstream_call(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(5, None).await;
    let t = tenant.tenant_id.as_str();
    let before = Scrape::of(&app).await;
    // The process took its upstream token as it started: a refused one is fetched again,
    // within the window.
    app.sim_post("/sim/expire-tokens").await;

    let token = app.token(&tenant).await;
    let (status, created) = app.create_session(&token).await;
    assert_eq!(status, 200, "{created}");
    let id = created["data"]["_id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let (status, body) = app
            .post(
                &format!("/v1/sessions/{id}/heartbeat"),
                &json!({}),
                Some(&token),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = app
        .post(
            "/api/open/v3/faceswap/live/close",
            &json!({"_id": id}),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let after = Scrape::of(&app).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    let requests = metrics::HTTP_REQUESTS;
    let heartbeat = [
        ("route", HEARTBEAT),
        ("method", "POST"),
        ("status", "200"),
        ("tenant", t),
    ];
    assert_eq!(delta(requests, &heartbeat), 2.0);
    assert_eq!(
        delta(
            requests,
            &[
                ("route", "/api/open/v3/faceswap/live/create"),
                ("status", "200"),
                ("tenant", t)
            ]
        ),
        1.0
    );
    // getToken is not authenticated: its tenant is `none`.
    assert!(
        delta(
            requests,
            &[
                ("route", "/api/open/v3/getToken"),
                ("status", "200"),
                ("tenant", "none")
            ]
        ) >= 1.0
    );
    assert!(
        after
            .0
            .iter()
            .filter(|(n, _, _)| n == requests)
            .all(|(_, l, _)| !l["route"].contains("ses_")),
        "a raw path became a route label"
    );

    // Upstream calls are shared by every test in the process: lower bounds only.
    for call in ["create", "close"] {
        let labels = [("call", call), ("outcome", "ok")];
        assert!(
            delta(metrics::UPSTREAM_CALLS, &labels) >= 1.0,
            "upstream {call}"
        );
        let count = format!("{}_count", metrics::UPSTREAM_CALL_DURATION);
        assert!(delta(&count, &[("call", call)]) >= 1.0, "{call} latency");
    }
    assert!(delta(metrics::UPSTREAM_TOKEN_REFUSALS, &[]) >= 1.0);
    assert!(delta(metrics::UPSTREAM_TOKEN_FETCHES, &[("result", "ok")]) >= 1.0);
    assert!(delta(metrics::SESSION_CLOSES, &[("reason", "client")]) >= 1.0);

    // The latency histogram has real buckets, cumulative up to +Inf.
    let bucket = format!("{}_bucket", metrics::HTTP_REQUEST_DURATION);
    let buckets: Vec<(String, f64)> = after
        .matching(&bucket, &[("route", HEARTBEAT)])
        .map(|(l, v)| (l["le"].clone(), v))
        .collect();
    assert!(buckets.len() > 5, "{buckets:?}");
    let inf = buckets.iter().find(|(le, _)| le == "+Inf").unwrap().1;
    assert!(buckets.iter().all(|(_, v)| *v <= inf), "{buckets:?}");
    let count = format!("{}_count", metrics::HTTP_REQUEST_DURATION);
    assert_eq!(inf, after.value(&count, &[("route", HEARTBEAT)]));
    let upstream_bucket = format!("{}_bucket", metrics::UPSTREAM_CALL_DURATION);
    assert!(
        after
            .matching(&upstream_bucket, &[("call", "create"), ("le", "+Inf")])
            .count()
            == 1
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn quota_rejections_are_counted_by_envelope_code_and_tenant(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(1, None).await;
    let token = app.token(&tenant).await;
    let before = Scrape::of(&app).await;
    assert_eq!(app.create_session(&token).await.0, 200);
    let (status, body) = app.create_session(&token).await;
    assert_eq!((status, body["code"].as_i64()), (429, Some(1104)));
    let (status, _) = app
        .post("/v1/sessions/ses_nope/heartbeat", &json!({}), Some(&token))
        .await;
    assert_eq!(status, 404);

    let after = Scrape::of(&app).await;
    let errors = |code: &str, route: &str| {
        let labels = [
            ("code", code),
            ("route", route),
            ("tenant", tenant.tenant_id.as_str()),
        ];
        after.value(metrics::HTTP_ERRORS, &labels) - before.value(metrics::HTTP_ERRORS, &labels)
    };
    assert_eq!(errors("1104", "/api/open/v3/faceswap/live/create"), 1.0);
    assert_eq!(errors("4004", HEARTBEAT), 1.0);
    // The unsettled session shows in the gauge (every app in the process sets the same gauge,
    // so only its presence is checked here; the count itself is checked on the query below).
    assert_eq!(
        after
            .matching(metrics::SESSIONS, &[("state", "open")])
            .count(),
        5,
        "one series per faceswap_status and none"
    );
    let counts = metrics::session_counts(&app.pool).await.unwrap();
    assert_eq!(counts, vec![("open".to_owned(), Some(1), 1)]);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn every_answer_carries_a_request_id_generated_echoed_or_replaced(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let header = |resp: &reqwest::Response| {
        resp.headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned())
    };

    // Generated: a UUIDv7, on a success, an error, an unknown path and a wrong method.
    let mut seen = BTreeSet::new();
    for (method, path) in [
        (reqwest::Method::GET, "/livez"),
        (reqwest::Method::GET, "/v1/usage"),
        (reqwest::Method::GET, "/no/such/path"),
        (reqwest::Method::DELETE, "/api/open/v3/getToken"),
    ] {
        let resp = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        let id = header(&resp).unwrap_or_else(|| panic!("{method} {path}: no x-request-id"));
        let uuid = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(uuid.get_version_num(), 7, "{id}");
        assert!(seen.insert(id), "ids are unique");
    }

    // Echoed when valid.
    let sent = "client-req-42:abc/DEF";
    let resp = app
        .client
        .get(app.url("/v1/usage"))
        .header("x-request-id", sent)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(header(&resp).as_deref(), Some(sent));

    // Replaced when too long or not printable.
    for bad in ["x".repeat(129), "tab\there".to_owned(), "   ".to_owned()] {
        let resp = app
            .client
            .get(app.url("/livez"))
            .header("x-request-id", &bad)
            .send()
            .await
            .unwrap();
        let id = header(&resp).unwrap();
        assert_ne!(id, bad);
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    }
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn unmatched_paths_are_one_route_label_and_worker_processes_serve_metrics(pool: PgPool) {
    use tower::ServiceExt;

    let app = TestApp::spawn(pool).await;
    let before = Scrape::of(&app).await;
    for path in ["/random/1", "/random/2", "/random/3"] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 404);
    }
    let after = Scrape::of(&app).await;
    let labels = [
        ("route", "unmatched"),
        ("status", "404"),
        ("tenant", "none"),
    ];
    assert!(
        after.value(metrics::HTTP_REQUESTS, &labels)
            - before.value(metrics::HTTP_REQUESTS, &labels)
            >= 3.0
    );

    // A worker process serves only the probes, and the metrics.
    let worker = faceswap_gateway::http::router(app.state.clone(), false);
    let resp = worker
        .oneshot(
            axum::http::Request::get("/metrics")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
}

/// A `MakeWriter` appending to a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

/// A dispatcher that is never used, kept alive so that `tracing-core` never counts a single
/// registered dispatcher. With exactly one, it takes that one for the global default and
/// caches each callsite's interest from whichever thread hits it first: a callsite first hit
/// by a test running on another thread (no subscriber there) would stay disabled for the
/// thread-default subscriber of the log test below.
static SECOND_DISPATCHER: std::sync::LazyLock<tracing::Dispatch> = std::sync::LazyLock::new(|| {
    tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default())
});

// `#[sqlx::test]` runs each test on its own current-thread runtime, and the gateway and the
// simulator run as tasks of that runtime, so a thread-default subscriber sees every line the
// handlers, the upstream client and the simulator write during the test, and nothing of the
// tests running on other threads.
#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn logs_at_trace_level_carry_request_ids_and_no_secrets(pool: PgPool) {
    std::sync::LazyLock::force(&SECOND_DISPATCHER);
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = faceswap_gateway::telemetry::subscriber(
        LogFormat::Json,
        tracing_subscriber::EnvFilter::new("trace"),
        move || sink.clone(),
    );
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = TestApp::spawn(pool.clone()).await;
    let tenant = app.tenant(2, None).await;
    let tenant_id = TenantId::parse(&tenant.tenant_id).unwrap();
    let api_key = faceswap_gateway::service::tenants::create_api_key(&pool, tenant_id, "test")
        .await
        .unwrap()
        .api_key
        .expect("an API key");
    let image = b64(&testdata("face.jpg"));

    let mut request_ids = Vec::new();
    let resp = app
        .client
        .post(app.url("/api/open/v3/getToken"))
        .json(&json!({"clientId": tenant.client_id, "clientSecret": tenant.client_secret}))
        .send()
        .await
        .unwrap();
    request_ids.push(resp.headers()["x-request-id"].to_str().unwrap().to_owned());
    let body: Value = resp.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    // A wrong secret is logged as refused, without the secret.
    let wrong_secret = format!("{}-wrong", tenant.client_secret);
    let (status, _) = app
        .post(
            "/api/open/v3/getToken",
            &json!({"clientId": tenant.client_id, "clientSecret": wrong_secret}),
            None,
        )
        .await;
    assert_eq!(status, 401);

    let resp = app
        .client
        .post(app.url("/detect"))
        .bearer_auth(&token)
        .json(&json!({"single_face": true, "img": image}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    request_ids.push(resp.headers()["x-request-id"].to_str().unwrap().to_owned());

    let resp = app
        .client
        .post(app.url("/api/open/v3/faceswap/live/create"))
        .header("x-api-key", &api_key)
        .json(&json!({"sourceImage": [{"path": "https://images.example/face.jpg", "opts": "150,170:230,170:190,215:190,255"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    request_ids.push(resp.headers()["x-request-id"].to_str().unwrap().to_owned());
    let created: Value = resp.json().await.unwrap();
    let session_id = created["data"]["_id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .post(
            "/api/open/v3/faceswap/live/info",
            &json!({"_id": session_id}),
            Some(&api_key),
        )
        .await;
    assert_eq!(status, 200);
    let upstream_token = app.state.upstream_tokens.current().await.unwrap().token;

    let text = logs.text();
    assert!(
        text.lines().count() > 10,
        "hardly anything was captured:\n{text}"
    );
    let secrets = [
        ("the tenant's client secret", tenant.client_secret.as_str()),
        ("a wrong client secret", wrong_secret.as_str()),
        ("the gateway token", token.as_str()),
        ("the API key", api_key.as_str()),
        ("the upstream token", upstream_token.as_str()),
        ("the upstream client secret", SIM_CLIENT_SECRET),
        ("the image", &image[1000..1064]),
    ];
    for (what, secret) in secrets {
        if let Some(line) = text.lines().find(|l| l.contains(secret)) {
            panic!("{what} was logged: {line}");
        }
    }

    // Every line is JSON; the request lines carry the request span's fields.
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let request_span = |line: &Value| -> Option<Value> {
        line["spans"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "request")
            .cloned()
    };
    for id in &request_ids {
        let finished = lines
            .iter()
            .find(|l| {
                l["message"] == "request finished"
                    && request_span(l).is_some_and(|s| s["request_id"] == id.as_str())
            })
            .unwrap_or_else(|| panic!("no `request finished` line for {id} in:\n{text}"));
        assert!(finished["status"].is_u64(), "{finished}");
    }
    let create_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| request_span(l).is_some_and(|s| s["request_id"] == request_ids[2].as_str()))
        .collect();
    assert!(
        create_lines.len() > 1,
        "the handler's own lines (upstream call, SQL) are inside the request span"
    );
    let span = request_span(create_lines.last().unwrap()).unwrap();
    assert_eq!(span["route"], "/api/open/v3/faceswap/live/create");
    assert_eq!(span["tenant_id"], tenant.tenant_id.as_str());
    assert_eq!(span["session_id"], session_id.as_str());
}

#[test]
fn the_dashboard_and_alert_rules_use_only_metrics_and_labels_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("grafana/faceswap-gateway.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let rules: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join("prometheus/alerts.yaml")).unwrap(),
    )
    .expect("the alert rules are YAML");

    let mut dashboard_exprs = Vec::new();
    collect_exprs(&dashboard, &mut dashboard_exprs);
    assert!(dashboard_exprs.len() >= 15, "{dashboard_exprs:?}");
    assert_eq!(dashboard["uid"], "faceswap-gateway");

    let mut alert_names = BTreeSet::new();
    let mut rule_exprs = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().expect("every rule is an alert");
            assert!(alert_names.insert(name), "{name} twice");
            assert!(
                rule["labels"]["severity"].is_string(),
                "{name} has a severity"
            );
            assert!(
                rule["annotations"]["summary"].is_string(),
                "{name} has a summary"
            );
            rule_exprs.push(rule["expr"].as_str().expect("expr").to_owned());
        }
    }
    for wanted in [
        "FaceswapUpstreamDown",
        "FaceswapUpstreamErrorRatioHigh",
        "FaceswapArchiveDeadlineNear",
        "FaceswapWebhookEndpointDisabled",
        "FaceswapQuotaRejectionsSpiking",
        "FaceswapHigh5xxRatio",
    ] {
        assert!(alert_names.contains(wanted), "missing alert {wanted}");
    }

    let mut used = BTreeSet::new();
    for expr in dashboard_exprs.iter().chain(&rule_exprs) {
        for (name, labels) in selectors(expr) {
            let def = metrics::ALL
                .iter()
                .find(|m| m.name == name || histogram_series(m.kind, m.name, &name))
                .unwrap_or_else(|| panic!("`{name}` in `{expr}` is not in metrics::ALL"));
            for label in labels {
                assert!(
                    def.labels.contains(&label.as_str())
                        || (label == "le" && def.kind == Kind::Histogram),
                    "`{name}` has no label `{label}` (in `{expr}`)"
                );
            }
            used.insert(def.name);
        }
    }
    for m in metrics::ALL {
        assert!(
            used.contains(m.name),
            "{} is on no dashboard panel or rule",
            m.name
        );
    }
}

fn histogram_series(kind: Kind, base: &str, name: &str) -> bool {
    kind == Kind::Histogram
        && ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| name.strip_suffix(s) == Some(base))
}

/// Every `expr` string in a JSON tree.
fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(s) if k == "expr" || k == "query" => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The `faceswap_…` metric names of a PromQL expression, each with the label names its selector
/// and the expression's `by (…)` / `without (…)` clauses use.
fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    // Grouping clauses first, blanked out so their label names are not taken for metrics.
    let mut masked = expr.as_bytes().to_vec();
    let mut grouping = Vec::new();
    for keyword in ["by (", "by(", "without (", "without("] {
        let mut j = 0;
        while let Some(at) = expr[j..].find(keyword) {
            let open = j + at + keyword.len();
            let close = expr[open..].find(')').unwrap() + open;
            grouping.extend(
                expr[open..close]
                    .split(',')
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty()),
            );
            masked[open..close].fill(b' ');
            j = close;
        }
    }
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < masked.len() {
        if masked[i] == b'{' {
            // A selector's matchers without a metric name before them: skip.
            i += expr[i..].find('}').unwrap() + 1;
            continue;
        }
        let starts_name = ident(masked[i]) && (i == 0 || !ident(masked[i - 1]));
        if !starts_name {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < masked.len() && ident(masked[end]) {
            end += 1;
        }
        let name = &expr[i..end];
        i = end;
        if !name.starts_with("faceswap_") {
            continue;
        }
        let mut labels = grouping.clone();
        if masked.get(end) == Some(&b'{') {
            let close = expr[end..].find('}').unwrap() + end;
            for matcher in expr[end + 1..close].split(',') {
                let label: String = matcher
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !label.is_empty() {
                    labels.push(label);
                }
            }
            i = close + 1;
        }
        out.push((name.to_owned(), labels));
    }
    out
}
