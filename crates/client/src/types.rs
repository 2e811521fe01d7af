//! Answers and options of the gateway's own routes (resources, webhooks, lists, events) that
//! the shared wire crate does not carry.

use serde::{Deserialize, Serialize};

/// A generated resource of the tenant and where its archive stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceView {
    /// Resource id (`res_…`).
    pub resource_id: String,
    /// The session that produced it (`ses_…`); `None` for detection face crops.
    #[serde(rename = "_id")]
    pub session_id: Option<String>,
    /// `snapshot`, `recording`, `face`, …
    pub kind: String,
    /// `pending`, `archived` (downloadable with [`crate::Client::resource`]), `expired`,
    /// `failed` or `deleted`.
    pub state: String,
    /// Media type.
    pub content_type: Option<String>,
    /// Size in bytes.
    pub size: Option<i64>,
    /// SHA-256 of the archived bytes, lower-case hex.
    pub sha256: Option<String>,
    /// When the upstream deletes its copy, seconds since the Unix epoch.
    pub upstream_expires_at: i64,
    /// When it was archived, seconds since the Unix epoch.
    pub archived_at: Option<i64>,
    /// When it was recorded, seconds since the Unix epoch.
    pub created_at: i64,
    /// Failed download attempts so far.
    pub attempts: i32,
    /// Where to fetch the archived bytes, once archived.
    pub href: Option<String>,
}

/// A session's resources, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceList {
    /// The resources.
    pub resources: Vec<ResourceView>,
}

/// A page of the tenant's resources, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourcePage {
    /// The resources.
    pub resources: Vec<ResourceView>,
    /// Pass as [`ListResources::cursor`] for the next page; `None` on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST /v1/webhooks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateWebhookRequest {
    /// Where to POST events: an `http` or `https` URL on a public address.
    pub url: String,
}

/// A registered webhook endpoint, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpointView {
    /// `whe_…`.
    pub endpoint_id: String,
    /// Where events are POSTed.
    pub url: String,
    /// Whether events are delivered to it; an endpoint that kept failing is disabled.
    pub enabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// Registration time, Unix seconds.
    pub created_at: i64,
}

/// A newly registered endpoint with its signing secret, which is shown only once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedWebhookEndpoint {
    /// `whe_…`.
    pub endpoint_id: String,
    /// Where events are POSTed.
    pub url: String,
    /// `whsec_…`: give it to [`crate::webhooks::Verifier::new`].
    pub secret: String,
    /// Always true for a new endpoint.
    pub enabled: bool,
    /// Registration time, Unix seconds.
    pub created_at: i64,
}

/// The tenant's webhook endpoints, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpointList {
    /// The endpoints.
    pub endpoints: Vec<WebhookEndpointView>,
}

/// The answer to deleting a webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedWebhookEndpoint {
    /// The deleted endpoint.
    pub endpoint_id: String,
    /// Always true.
    pub deleted: bool,
}

/// Filters and paging of [`crate::Client::list_sessions`]; the default is the newest 50.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListSessions {
    /// Only sessions in this state: `creating`, `open`, `closing`, `closed`, `lost`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Only sessions with this `faceswap_status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faceswap_status: Option<faceswap_wire::FaceswapStatus>,
    /// The `next_cursor` of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Page size, 1–200 (the gateway's default is 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Filters and paging of [`crate::Client::list_resources`]; the default is the newest 50.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListResources {
    /// Only this session's resources (`ses_…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Only resources in this state: `pending`, `archived`, `expired`, `failed`, `deleted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The `next_cursor` of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Page size, 1–200 (the gateway's default is 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Where a new event stream starts when it does not resume after an event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventsFrom {
    /// Only events from now on.
    #[default]
    Now,
    /// Every retained event first.
    Start,
}

/// Options of [`crate::Client::events`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventsOptions {
    /// Only this session's events (`ses_…`).
    pub session_id: Option<String>,
    /// Without `last_event_id`: start now (default) or replay every retained event.
    pub from: EventsFrom,
    /// Resume after this event id (sent as `Last-Event-ID`): every later event arrives, in
    /// order, without gaps or duplicates.
    pub last_event_id: Option<String>,
}

/// An archived resource's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// The stored media type.
    pub content_type: Option<String>,
    /// The bytes.
    pub bytes: bytes::Bytes,
}
