//! Every Prometheus metric of the gateway: its name, type, labels and help text ([`ALL`]), and
//! the functions that record it. Nothing else in the crate names a metric.
//!
//! The recorder is process-global (the `metrics` facade has one): [`install`] sets it up once
//! and `GET /metrics` renders it. Label values are bounded: routes are matched templates (or
//! `unmatched`), tenants are the first [`MAX_TENANT_LABELS`] tenant ids a router has seen (then
//! `other`; unauthenticated calls are `none`), upstream outcomes and envelope codes come from
//! closed sets.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use faceswap_upstream::{Call, UpstreamError};
use faceswap_wire::Code;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

use crate::http::{AppState, Settings};

/// Counter `{route, method, status, tenant}`: HTTP requests answered.
pub const HTTP_REQUESTS: &str = "faceswap_http_requests_total";
/// Histogram `{route}`: seconds from the request's arrival to its response head.
pub const HTTP_REQUEST_DURATION: &str = "faceswap_http_request_duration_seconds";
/// Counter `{route, code, tenant}`: error answers by envelope code (1104 = quota, …).
pub const HTTP_ERRORS: &str = "faceswap_http_errors_total";
/// Counter `{call, outcome}`: upstream calls, one per attempt (a retried call counts each
/// attempt); `outcome` is `ok`, the failure kind, or the upstream's business code (see
/// [`upstream_outcome`]).
pub const UPSTREAM_CALLS: &str = "faceswap_upstream_calls_total";
/// Histogram `{call}`: seconds per upstream call.
pub const UPSTREAM_CALL_DURATION: &str = "faceswap_upstream_call_duration_seconds";
/// Counter `{call}`: upstream attempts made again after a failure worth retrying.
pub const UPSTREAM_RETRIES: &str = "faceswap_upstream_retries_total";
/// Gauge `{host}`: 1 while the circuit breaker of an upstream host holds calls back (open or
/// probing), 0 when closed.
pub const UPSTREAM_BREAKER_OPEN: &str = "faceswap_upstream_breaker_open";
/// Counter `{result}`: upstream getToken fetches (`ok` / `error`).
pub const UPSTREAM_TOKEN_FETCHES: &str = "faceswap_upstream_token_fetches_total";
/// Counter `{call}`: upstream refusals of the token (1101/1102) that forced a refresh.
pub const UPSTREAM_TOKEN_REFUSALS: &str = "faceswap_upstream_token_refusals_total";
/// Gauge `{state, faceswap_status}`: sessions not yet settled (`creating`, `open`, `closing`),
/// counted in Postgres; `faceswap_status` is `1`–`4` or `none`.
pub const SESSIONS: &str = "faceswap_sessions";
/// Counter `{reason}`: sessions closed, by their recorded close reason.
pub const SESSION_CLOSES: &str = "faceswap_session_closes_total";
/// Counter `{result}`: webhook delivery attempts (`delivered`, `retry`, `failed` = given up).
pub const WEBHOOK_ATTEMPTS: &str = "faceswap_webhook_delivery_attempts_total";
/// Counter: webhook endpoints disabled after failing for more than a day.
pub const WEBHOOK_ENDPOINTS_DISABLED: &str = "faceswap_webhook_endpoints_disabled_total";
/// Gauge: generated resources not yet archived.
pub const ARCHIVE_BACKLOG: &str = "faceswap_archive_backlog";
/// Gauge: Unix seconds of the earliest upstream expiry among un-archived resources (0: none).
pub const ARCHIVE_OLDEST_DEADLINE: &str = "faceswap_archive_oldest_deadline_timestamp_seconds";
/// Gauge `{version}`: always 1; tells which build is running.
pub const BUILD_INFO: &str = "faceswap_build_info";
/// Counter `{source, result}`: rate-limit decisions; `source` is `redis` (shared by every
/// replica) or `local` (Redis unreachable), `result` is `allowed` or `limited`.
pub const RATE_LIMIT_DECISIONS: &str = "faceswap_rate_limit_decisions_total";
/// Counter: rate-limit scripts run in Redis. Each counts a batch of one tenant's requests, so
/// `redis` decisions divided by this is the batching factor.
pub const RATE_LIMIT_SCRIPTS: &str = "faceswap_rate_limit_redis_scripts_total";
/// Counter `{result}`: tenant calls naming a session, by where the session was found: `hit`
/// (this replica's memory, no Postgres read) or `miss` (read from Postgres).
pub const SESSION_CACHE_LOOKUPS: &str = "faceswap_session_cache_lookups_total";

/// How a metric is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets (`_bucket`, `_sum`, `_count` series).
    Histogram,
}

/// One metric of [`ALL`].
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// The exposed name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Its label names.
    pub labels: &'static [&'static str],
    /// The `# HELP` text.
    pub help: &'static str,
}

const fn def(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricDef {
    MetricDef {
        name,
        kind,
        labels,
        help,
    }
}

/// Every metric the gateway exposes. Dashboards and alert rules may only use these (a test
/// checks `deploy/`).
pub const ALL: &[MetricDef] = &[
    def(
        HTTP_REQUESTS,
        Kind::Counter,
        &["route", "method", "status", "tenant"],
        "HTTP requests answered, by route template, method, status and tenant",
    ),
    def(
        HTTP_REQUEST_DURATION,
        Kind::Histogram,
        &["route"],
        "Seconds from a request's arrival to its response head, by route template",
    ),
    def(
        HTTP_ERRORS,
        Kind::Counter,
        &["route", "code", "tenant"],
        "Error answers by route template, envelope code and tenant",
    ),
    def(
        UPSTREAM_CALLS,
        Kind::Counter,
        &["call", "outcome"],
        "Upstream calls by call and outcome (ok, failure kind, or code_<business code>)",
    ),
    def(
        UPSTREAM_CALL_DURATION,
        Kind::Histogram,
        &["call"],
        "Seconds per upstream call",
    ),
    def(
        UPSTREAM_RETRIES,
        Kind::Counter,
        &["call"],
        "Upstream attempts made again after a failure worth retrying, by call",
    ),
    def(
        UPSTREAM_BREAKER_OPEN,
        Kind::Gauge,
        &["host"],
        "1 while an upstream host's circuit breaker holds calls back (open or probing), else 0",
    ),
    def(
        UPSTREAM_TOKEN_FETCHES,
        Kind::Counter,
        &["result"],
        "Upstream getToken fetches by result (ok, error)",
    ),
    def(
        UPSTREAM_TOKEN_REFUSALS,
        Kind::Counter,
        &["call"],
        "Upstream token refusals (1101/1102) that forced a refresh, by call",
    ),
    def(
        SESSIONS,
        Kind::Gauge,
        &["state", "faceswap_status"],
        "Unsettled sessions (creating, open, closing) by state and faceswap_status, from Postgres",
    ),
    def(
        SESSION_CLOSES,
        Kind::Counter,
        &["reason"],
        "Sessions closed, by close reason (client, idle, max_duration, failed, budget, reconciled)",
    ),
    def(
        WEBHOOK_ATTEMPTS,
        Kind::Counter,
        &["result"],
        "Webhook delivery attempts by result (delivered, retry, failed = given up)",
    ),
    def(
        WEBHOOK_ENDPOINTS_DISABLED,
        Kind::Counter,
        &[],
        "Webhook endpoints disabled after failing for more than a day",
    ),
    def(
        ARCHIVE_BACKLOG,
        Kind::Gauge,
        &[],
        "Generated resources waiting to be archived",
    ),
    def(
        ARCHIVE_OLDEST_DEADLINE,
        Kind::Gauge,
        &[],
        "Unix seconds of the earliest upstream expiry among un-archived resources (0: none)",
    ),
    def(
        BUILD_INFO,
        Kind::Gauge,
        &["version"],
        "Always 1, labelled with the running version",
    ),
    def(
        RATE_LIMIT_DECISIONS,
        Kind::Counter,
        &["source", "result"],
        "Per-tenant rate-limit decisions, by where they were made (redis or local)",
    ),
    def(
        RATE_LIMIT_SCRIPTS,
        Kind::Counter,
        &[],
        "Rate-limit scripts run in Redis, each deciding a batch of one tenant's requests and leasing grants ahead of its demand",
    ),
    def(
        SESSION_CACHE_LOOKUPS,
        Kind::Counter,
        &["result"],
        "Tenant calls naming a session: hit = served from this replica's memory, miss = read from Postgres",
    ),
];

/// Distinct tenant label values per router before the rest are counted as `other`.
pub const MAX_TENANT_LABELS: usize = 200;

/// Buckets of [`HTTP_REQUEST_DURATION`], seconds.
const HTTP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets of [`UPSTREAM_CALL_DURATION`], seconds (the default upstream timeout is 30 s).
const UPSTREAM_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
];
/// How often histogram samples are folded into buckets when nobody scrapes.
const UPKEEP: Duration = Duration::from_secs(5);
/// How long the session gauges of one application stay cached between scrapes.
const SESSION_GAUGE_TTL: Duration = Duration::from_secs(5);
/// Longest wait for the session count before a scrape goes on without it.
const SESSION_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder on first call (later calls return the same handle).
/// When another recorder was installed first, the gateway's metrics go there and this handle
/// renders an empty page.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let mut builder = PrometheusBuilder::new();
        for (name, buckets) in [
            (HTTP_REQUEST_DURATION, HTTP_BUCKETS),
            (UPSTREAM_CALL_DURATION, UPSTREAM_BUCKETS),
        ] {
            builder = match builder.set_buckets_for_metric(Matcher::Full(name.into()), buckets) {
                Ok(b) => b,
                Err(e) => unreachable!("bucket lists are non-empty: {e}"),
            };
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            tracing::warn!(error = %e, "another metrics recorder is installed; /metrics will be empty");
        }
        describe_and_preregister();
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP);
                    upkeep.run_upkeep();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no metrics upkeep thread; histograms are folded on scrape only");
        }
        handle
    })
}

fn describe_and_preregister() {
    for m in ALL {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
    }
    // Series that alert rules divide by or compare against exist from the start at zero.
    for call in Call::ALL {
        metrics::counter!(UPSTREAM_CALLS, "call" => call.name(), "outcome" => "ok").absolute(0);
        metrics::counter!(UPSTREAM_RETRIES, "call" => call.name()).absolute(0);
    }
    for result in ["ok", "error"] {
        metrics::counter!(UPSTREAM_TOKEN_FETCHES, "result" => result).absolute(0);
    }
    for result in ["delivered", "retry", "failed"] {
        metrics::counter!(WEBHOOK_ATTEMPTS, "result" => result).absolute(0);
    }
    metrics::counter!(WEBHOOK_ENDPOINTS_DISABLED).absolute(0);
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// The metrics page in the Prometheus text format.
pub fn render() -> String {
    install().render()
}

/// The label of a request method (a closed set; anything else is `other`).
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Bounds the tenant label: the first `max` distinct tenants keep their id, later ones are
/// `other`, unauthenticated calls are `none`.
#[derive(Debug)]
pub struct TenantLabels {
    max: usize,
    seen: Mutex<HashSet<String>>,
}

impl TenantLabels {
    /// Room for `max` tenant ids.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// The label value for a call made by `tenant`.
    pub fn label(&self, tenant: Option<&str>) -> String {
        let Some(tenant) = tenant else {
            return "none".to_owned();
        };
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.contains(tenant) {
            return tenant.to_owned();
        }
        if seen.len() < self.max {
            seen.insert(tenant.to_owned());
            return tenant.to_owned();
        }
        "other".to_owned()
    }
}

/// Records one answered HTTP request; `code` is the envelope code of an error answer.
pub fn http_request(
    route: &str,
    method: &'static str,
    status: u16,
    tenant: String,
    code: Option<i64>,
    elapsed: Duration,
) {
    if let Some(code) = code {
        metrics::counter!(
            HTTP_ERRORS,
            "route" => route.to_owned(),
            "code" => code.to_string(),
            "tenant" => tenant.clone(),
        )
        .increment(1);
    }
    metrics::counter!(
        HTTP_REQUESTS,
        "route" => route.to_owned(),
        "method" => method,
        "status" => status.to_string(),
        "tenant" => tenant,
    )
    .increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION, "route" => route.to_owned())
        .record(elapsed.as_secs_f64());
}

/// The `outcome` label of an upstream call: `ok`; the failure kind (`timeout`, `connect`,
/// `transport`, `decode`, `config`, `http_4xx`, `http_5xx`, `http_other`, or `circuit_open` /
/// `busy` for calls the policy held back unsent); or the business code (`code_1003`, `code_1101`, `code_1102`, `code_1104`, `code_other`).
pub fn upstream_outcome(result: Result<(), &UpstreamError>) -> &'static str {
    let Err(e) = result else {
        return "ok";
    };
    match e {
        UpstreamError::Timeout { .. } => "timeout",
        UpstreamError::Connect { .. } => "connect",
        UpstreamError::Transport { .. } => "transport",
        UpstreamError::Decode { .. } => "decode",
        UpstreamError::Config(_) => "config",
        UpstreamError::CircuitOpen { .. } => "circuit_open",
        UpstreamError::Busy { .. } => "busy",
        UpstreamError::Status { status, .. } => match status {
            400..=499 => "http_4xx",
            500..=599 => "http_5xx",
            _ => "http_other",
        },
        UpstreamError::Business { code, .. } => match *code {
            Code::PARAM_ERROR => "code_1003",
            Code::TOKEN_INVALID => "code_1101",
            Code::AUTH_MISSING => "code_1102",
            Code::QUOTA_EXCEEDED => "code_1104",
            _ => "code_other",
        },
    }
}

/// Records one finished upstream call.
pub fn upstream_call(call: Call, elapsed: Duration, result: Result<(), &UpstreamError>) {
    metrics::counter!(
        UPSTREAM_CALLS,
        "call" => call.name(),
        "outcome" => upstream_outcome(result),
    )
    .increment(1);
    metrics::histogram!(UPSTREAM_CALL_DURATION, "call" => call.name())
        .record(elapsed.as_secs_f64());
}

/// The observer the upstream client reports every call to. Installs the recorder, so that
/// calls made before the router exists (workers start first) are counted too.
pub fn upstream_observer() -> faceswap_upstream::CallObserver {
    install();
    Arc::new(upstream_call)
}

/// The observer of the upstream call policy: counts retries and sets the breaker gauges.
pub fn upstream_policy_observer() -> faceswap_upstream::PolicyObserver {
    install();
    Arc::new(|event| match event {
        faceswap_upstream::PolicyEvent::Retry { call, .. } => {
            metrics::counter!(UPSTREAM_RETRIES, "call" => call.name()).increment(1);
        }
        faceswap_upstream::PolicyEvent::Breaker { host, state } => {
            let open = *state != faceswap_upstream::BreakerState::Closed;
            metrics::gauge!(UPSTREAM_BREAKER_OPEN, "host" => (*host).to_owned())
                .set(f64::from(u8::from(open)));
        }
    })
}

/// Records a getToken fetch.
pub fn upstream_token_fetched(ok: bool) {
    let result = if ok { "ok" } else { "error" };
    metrics::counter!(UPSTREAM_TOKEN_FETCHES, "result" => result).increment(1);
}

/// Records an upstream refusal of the token that forces a refresh.
pub fn upstream_token_refused(call: Option<Call>) {
    let call = call.map_or("unknown", Call::name);
    metrics::counter!(UPSTREAM_TOKEN_REFUSALS, "call" => call).increment(1);
}

/// Records a rate-limit decision.
pub fn rate_limit_decision(
    source: crate::rate_limit::Source,
    decision: crate::domain::rate::Decision,
) {
    let result = match decision {
        crate::domain::rate::Decision::Allow => "allowed",
        crate::domain::rate::Decision::Deny { .. } => "limited",
    };
    metrics::counter!(RATE_LIMIT_DECISIONS, "source" => source.name(), "result" => result)
        .increment(1);
}

/// Records one rate-limit script sent to Redis.
pub fn rate_limit_script() {
    metrics::counter!(RATE_LIMIT_SCRIPTS).increment(1);
}

/// Records where a tenant call found its session (see [`SESSION_CACHE_LOOKUPS`]).
pub fn session_cache_lookup(hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    metrics::counter!(SESSION_CACHE_LOOKUPS, "result" => result).increment(1);
}

/// Records a settled close with its reason.
pub fn session_closed(reason: &'static str) {
    metrics::counter!(SESSION_CLOSES, "reason" => reason).increment(1);
}

/// Records a webhook delivery attempt: `delivered`, `retry` or `failed` (given up).
pub fn webhook_attempt(result: &'static str) {
    metrics::counter!(WEBHOOK_ATTEMPTS, "result" => result).increment(1);
}

/// Records a webhook endpoint disabled for failing too long.
pub fn webhook_endpoint_disabled() {
    metrics::counter!(WEBHOOK_ENDPOINTS_DISABLED).increment(1);
}

/// Sets the archiver gauges: how many resources wait to be archived, and the upstream expiry
/// (Unix seconds) of the one due first (`None` when nothing waits).
pub fn set_archive_backlog(count: u64, oldest_deadline_unix: Option<i64>) {
    metrics::gauge!(ARCHIVE_BACKLOG).set(count as f64);
    metrics::gauge!(ARCHIVE_OLDEST_DEADLINE).set(oldest_deadline_unix.unwrap_or(0) as f64);
}

/// The unsettled states the session gauge covers.
const GAUGED_STATES: [&str; 3] = ["creating", "open", "closing"];

/// Unsettled sessions by state and `faceswap_status`: one grouped count over the partial index
/// of unsettled sessions.
pub async fn session_counts(db: &PgPool) -> Result<Vec<(String, Option<i16>, i64)>, sqlx::Error> {
    sqlx::query_as(
        "select state, faceswap_status, count(*) from sessions \
         where state in ('creating', 'open', 'closing') group by state, faceswap_status",
    )
    .fetch_all(db)
    .await
}

/// Sets [`SESSIONS`] from `counts`; every state/status pair not in it is set to zero, so a
/// series that empties reads 0 rather than its last value.
pub fn set_session_gauges(counts: &[(String, Option<i16>, i64)]) {
    let statuses = ["none", "1", "2", "3", "4"];
    for state in GAUGED_STATES {
        for status in statuses {
            let n = counts
                .iter()
                .filter(|(s, f, _)| {
                    s == state && f.map_or("none".to_owned(), |f| f.to_string()) == status
                })
                .map(|(_, _, n)| *n)
                .sum::<i64>();
            metrics::gauge!(SESSIONS, "state" => state, "faceswap_status" => status).set(n as f64);
        }
    }
}

/// Applications whose session gauges were refreshed lately (tests run several in one process).
static REFRESHED: Mutex<Vec<(Weak<Settings>, Instant)>> = Mutex::new(Vec::new());

/// Refreshes the session gauges from `state`'s database unless that was done within the last
/// few seconds. A slow or failing query leaves the previous values.
pub async fn refresh_session_gauges(state: &AppState) {
    {
        let now = Instant::now();
        let mut refreshed = REFRESHED.lock().unwrap_or_else(PoisonError::into_inner);
        refreshed.retain(|(app, _)| app.strong_count() > 0);
        let ours = refreshed
            .iter_mut()
            .find(|(app, _)| std::ptr::eq(app.as_ptr(), Arc::as_ptr(&state.settings)));
        match ours {
            Some((_, at)) if now.duration_since(*at) < SESSION_GAUGE_TTL => return,
            Some((_, at)) => *at = now,
            None => refreshed.push((Arc::downgrade(&state.settings), now)),
        }
    }
    match tokio::time::timeout(SESSION_QUERY_TIMEOUT, session_counts(&state.db)).await {
        Ok(Ok(counts)) => set_session_gauges(&counts),
        Ok(Err(e)) => tracing::warn!(error = %e, "could not count sessions for metrics"),
        Err(_) => tracing::warn!("counting sessions for metrics timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_prefixed_and_counters_end_in_total() {
        let mut seen = HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(m.name.starts_with("faceswap_"), "{}", m.name);
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn tenant_labels_stop_growing_at_the_cap() {
        let labels = TenantLabels::new(2);
        assert_eq!(labels.label(None), "none");
        assert_eq!(labels.label(Some("ten_a")), "ten_a");
        assert_eq!(labels.label(Some("ten_b")), "ten_b");
        assert_eq!(labels.label(Some("ten_c")), "other");
        assert_eq!(
            labels.label(Some("ten_a")),
            "ten_a",
            "seen tenants keep their label"
        );
    }

    #[test]
    fn upstream_outcomes_are_a_closed_set() {
        let call = Call::Create;
        let business = |code| UpstreamError::Business {
            call,
            code,
            msg: String::new(),
        };
        let cases = [
            (UpstreamError::Timeout { call }, "timeout"),
            (business(Code::QUOTA_EXCEEDED), "code_1104"),
            (business(Code(987_654)), "code_other"),
            (UpstreamError::Busy { call }, "busy"),
            (
                UpstreamError::CircuitOpen {
                    call,
                    host: "up:80".into(),
                    retry_after: Duration::from_secs(1),
                },
                "circuit_open",
            ),
            (
                UpstreamError::Status {
                    call,
                    status: 503,
                    code: None,
                    msg: String::new(),
                },
                "http_5xx",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(upstream_outcome(Err(&e)), want);
        }
        assert_eq!(upstream_outcome(Ok(())), "ok");
    }
}
