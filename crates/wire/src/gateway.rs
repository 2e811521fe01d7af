//! Tenant-facing types the gateway adds beyond the provider's API.

use serde::{Deserialize, Serialize};

use crate::{FaceswapStatus, SourceImage};

/// A session as the gateway shows it: the provider's fields, with `_id` the gateway's own id,
/// plus the gateway's record of its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionView {
    /// The gateway's session id (`ses_…`).
    #[serde(rename = "_id")]
    pub id: String,
    /// Last known upstream status; absent while the session is being created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faceswap_status: Option<FaceswapStatus>,
    /// Agora channel to join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    /// Agora user id for the front end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front_user_id: Option<String>,
    /// Agora RTC token for the front end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front_rtc_token: Option<String>,
    /// Agora user id of the face swap algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm_user_id: Option<String>,
    /// Agora app id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// The faces in use.
    #[serde(rename = "sourceImage")]
    pub source_image: Vec<SourceImage>,
    /// `creating`, `open`, `closing`, `closed` or `lost`.
    pub state: String,
    /// Why it closed: `client`, `idle`, `max_duration`, `failed`, `budget`, `reconciled`, `lost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<String>,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: i64,
    /// Last tenant call naming the session, seconds since the Unix epoch.
    pub last_activity_at: i64,
    /// Close time, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<i64>,
}

/// A page of sessions, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionPage {
    /// The sessions.
    pub sessions: Vec<SessionView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A tenant's quota and what it has used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageView {
    /// Sessions allowed at once.
    pub max_concurrent_sessions: i64,
    /// Sessions holding a slot now.
    pub active_sessions: i64,
    /// Session-seconds allowed in total; absent when there is no budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_seconds_budget: Option<i64>,
    /// Session-seconds used: charged for closed sessions plus those elapsed since each session
    /// still holding a slot was reserved.
    pub session_seconds_used: i64,
    /// Session-seconds left; absent when there is no budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_seconds_remaining: Option<i64>,
}
