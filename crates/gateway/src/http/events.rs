//! `GET /v1/events`: the tenant's events as server-sent events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use faceswap_wire::EmptyEnvelope;
use futures_util::StreamExt;
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::extract::Tenant;
use crate::domain::webhooks::message;
use crate::service::events::{self, StreamRequest};
use crate::store::events::EventRow;

/// Comment lines sent while nothing happens, so proxies keep the connection.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Options of the event stream.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Only this session's events (`ses_…`).
    session_id: Option<String>,
    /// Resume after this event id; the `Last-Event-ID` header wins when both are sent.
    last_event_id: Option<String>,
    /// Without a last event id: `now` (default) sends only events from now on, `start`
    /// replays every retained event first.
    from: Option<String>,
}

/// Stream the tenant's events (server-sent events).
///
/// Each event is `id: <event id>`, `event: <type>` (`session.status_changed`,
/// `session.closed`, `session.lost`, `webhook.endpoint_disabled`, `resource.archived`,
/// `resource.archive_at_risk`, `resource.expired`, `resource.failed`, `resource.deleted`) and
/// `data: {"type",
/// "timestamp", "data"}` (the webhook body). Events come in commit order; ids are unique but
/// not always increasing. Reconnect with `Last-Event-ID` (the last id received, or 0 for none)
/// to receive every event after it, in order, without gaps or duplicates; without it the stream
/// starts at the current end (or at the beginning with `from=start`). Comments keep the
/// connection alive every 15 s.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    params(
        EventParams,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "1003: malformed or unknown Last-Event-ID, malformed from or session_id", body = EmptyEnvelope),
        (status = 401, description = "1101 / 1102", body = EmptyEnvelope),
        (status = 404, description = "4004: no such session", body = EmptyEnvelope),
    )
)]
pub async fn stream_events(
    State(state): State<AppState>,
    tenant: Tenant,
    headers: HeaderMap,
    params: Result<Query<EventParams>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let header_id = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::BadRequest("Last-Event-ID is not valid text".into()))?
                .to_owned(),
        ),
        None => None,
    };
    let req = StreamRequest {
        session_id: p.session_id,
        last_event_id: header_id.or(p.last_event_id),
        from: p.from,
    };
    let start = events::open(&state, tenant.id, req).await?;
    let frames = events::stream(state, start).map(|row| Ok::<_, Infallible>(frame(&row)));
    let sse = Sse::new(frames).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"));
    // Reverse proxies (nginx) must not buffer the stream.
    Ok(([("x-accel-buffering", "no")], sse))
}

fn frame(row: &EventRow) -> Event {
    let data = message(&row.event_type, row.created_at, &row.payload.0);
    Event::default()
        .id(row.event_id.to_string())
        .event(&row.event_type)
        .data(data.to_string())
}
