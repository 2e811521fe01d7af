//! Webhook delivery per the Standard Webhooks convention.
//!
//! Each step claims a batch of due deliveries (a short `FOR UPDATE SKIP LOCKED` statement that
//! writes a lease; no lock is held during the HTTP call) and POSTs each, at most
//! [`CONCURRENCY`] at once, as `{"type", "timestamp", "data"}` with `webhook-id: evt_<event id>`
//! (the same on every retry), `webhook-timestamp` (the attempt's time) and `webhook-signature`.
//! A 2xx answer within [`ATTEMPT_TIMEOUT`] is a delivery; anything else is retried on the
//! schedule of [`crate::domain::webhooks`], and an endpoint that fails for more than a day is
//! disabled there. Delivery is at least once: a worker that dies after the receiver answered
//! but before recording it leaves the row to be sent again when its lease lapses, so the lease
//! must exceed the attempt timeout.
//!
//! The SSRF rules hold at delivery too: the URL is checked again (its host may resolve
//! elsewhere now), and the HTTP client connects only to addresses the guard allows, resolving
//! names itself, so a name that turns private between the check and the connection is refused
//! as well. Redirects are not followed and proxies are not used.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use chrono::Utc;
use faceswap_upstream::ssrf::SsrfGuard;
use futures_util::StreamExt;

use super::{Outcome, WorkerSettings};
use crate::domain::webhook_signature::Secret;
use crate::domain::webhooks::{self, ATTEMPT_TIMEOUT};
use crate::http::AppState;
use crate::service;
use crate::store;
use crate::store::webhooks::ClaimedDelivery;

/// Deliveries in flight at once per step.
pub const CONCURRENCY: usize = 16;

/// Delivers one batch of due deliveries.
#[tracing::instrument(skip_all)]
pub async fn run_once(state: &AppState, settings: &WorkerSettings) -> anyhow::Result<Outcome> {
    let claimed = {
        let mut conn = state.db.acquire().await?;
        store::webhooks::claim_due(&mut conn, settings.lease, settings.batch).await?
    };
    if claimed.is_empty() {
        return Ok(Outcome::Idle);
    }
    let client = client_for(&state.ssrf)?;
    let worked = claimed.len();
    futures_util::stream::iter(claimed)
        .for_each_concurrent(CONCURRENCY, |d| {
            let client = &client;
            async move {
                if Utc::now() >= d.claimed_until {
                    // Waited in the queue past its lease: another worker may own it now.
                    tracing::warn!(event_id = d.event_id, "webhook claim lapsed before its attempt; the lease is too short for the batch");
                    return;
                }
                let result = attempt(state, client, &d).await;
                if let Err(e) = settle(state, settings, &d, result).await {
                    // The lease lapses and the attempt is made again: at least once.
                    tracing::warn!(event_id = d.event_id, error = %format!("{e:#}"), "recording a webhook attempt failed");
                }
            }
        })
        .await;
    Ok(Outcome::Worked(worked))
}

/// One HTTP attempt; `Err` says why it failed, for `last_error`.
async fn attempt(
    state: &AppState,
    client: &reqwest::Client,
    d: &ClaimedDelivery,
) -> Result<(), String> {
    let url = service::webhooks::check_url(state, &d.url)
        .await
        .map_err(|e| format!("refused: {e}"))?;
    let secret = Secret::parse(&d.secret).map_err(|e| e.to_string())?;
    let message = webhooks::message(&d.event_type, d.event_created_at, &d.payload.0);
    let body = serde_json::to_vec(&message).map_err(|e| e.to_string())?;
    let msg_id = webhooks::message_id(d.event_id);
    let timestamp = Utc::now().timestamp();
    let signature = secret.sign(&msg_id, timestamp, &body);
    let resp = client
        .post(url)
        .header("webhook-id", &msg_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", status.as_u16()))
    }
}

/// A transport error in a line, with its causes (the resolver's refusal is one).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs());
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Records the attempt: delivered, retried later, or failed (which may disable the endpoint).
async fn settle(
    state: &AppState,
    settings: &WorkerSettings,
    d: &ClaimedDelivery,
    result: Result<(), String>,
) -> anyhow::Result<()> {
    let mut conn = state.db.acquire().await?;
    let error = match result {
        Ok(()) => {
            store::webhooks::record_delivered(&mut conn, d).await?;
            crate::metrics::webhook_attempt("delivered");
            return Ok(());
        }
        Err(error) => error,
    };
    let attempts = u32::try_from(d.attempts).unwrap_or(0).saturating_add(1);
    let base = settings.webhook_retry_base;
    tracing::debug!(
        event_id = d.event_id,
        attempts,
        error,
        "webhook attempt failed"
    );
    if let Some(delay) = webhooks::retry_delay(attempts, base, rand::random::<f64>()) {
        let result = match store::webhooks::record_retry(&mut conn, d, delay, &error).await? {
            // Given up with its endpoint while this attempt was in flight.
            Some(false) => "failed",
            // Scheduled, or the claim lapsed and another worker retries it.
            Some(true) | None => "retry",
        };
        crate::metrics::webhook_attempt(result);
        return Ok(());
    }
    if !store::webhooks::record_failed(&mut conn, d, &error).await? {
        return Ok(());
    }
    crate::metrics::webhook_attempt("failed");
    tracing::warn!(
        event_id = d.event_id,
        attempts,
        error,
        "webhook delivery failed for good"
    );
    if !store::webhooks::delivered_since(&mut conn, d.endpoint_id, d.created_at).await? {
        drop(conn);
        let reason = webhooks::disabled_reason(base, &error);
        service::webhooks::disable_endpoint(state, d.endpoint_id, &reason).await?;
    }
    Ok(())
}

/// The connect-time resolver, shared with the archiver (see [`crate::net_guard`]).
pub use crate::net_guard::GuardedResolver;

/// One delivery client per SSRF guard (per running application), so connections are reused.
static CLIENTS: Mutex<Vec<(Weak<SsrfGuard>, reqwest::Client)>> = Mutex::new(Vec::new());

fn client_for(ssrf: &Arc<SsrfGuard>) -> anyhow::Result<reqwest::Client> {
    let mut clients = CLIENTS.lock().unwrap_or_else(PoisonError::into_inner);
    clients.retain(|(guard, _)| guard.strong_count() > 0);
    if let Some((_, client)) = clients
        .iter()
        .find(|(guard, _)| std::ptr::eq(guard.as_ptr(), Arc::as_ptr(ssrf)))
    {
        return Ok(client.clone());
    }
    let client = faceswap_upstream::tls::shared_tls(reqwest::Client::builder())
        .timeout(ATTEMPT_TIMEOUT)
        .connect_timeout(ATTEMPT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(GuardedResolver::new(ssrf.as_ref().clone()))
        .user_agent(concat!(
            "faceswap-gateway-webhooks/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()?;
    clients.push((Arc::downgrade(ssrf), client.clone()));
    Ok(client)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_client_is_built_once_per_guard() {
        let a = Arc::new(SsrfGuard::default());
        let b = Arc::new(SsrfGuard::default());
        client_for(&a).unwrap();
        client_for(&a).unwrap();
        client_for(&b).unwrap();
        let count = |g: &Arc<SsrfGuard>| {
            CLIENTS
                .lock()
                .unwrap()
                .iter()
                .filter(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(g)))
                .count()
        };
        assert_eq!((count(&a), count(&b)), (1, 1));
        drop(a);
        client_for(&b).unwrap();
        assert!(
            CLIENTS
                .lock()
                .unwrap()
                .iter()
                .all(|(w, _)| w.strong_count() > 0)
        );
    }
}
