//! The events tenants receive (SSE and webhooks), and their payloads.

use serde_json::{Value, json};

use crate::domain::ids::SessionId;
use crate::domain::session::CloseReason;

/// `faceswap_status` changed.
pub const STATUS_CHANGED: &str = "session.status_changed";
/// The session was closed (`reason` says why).
pub const CLOSED: &str = "session.closed";
/// The session's upstream create had an unknown outcome; its slot was released.
pub const LOST: &str = "session.lost";
/// A webhook endpoint kept failing and was disabled.
pub const WEBHOOK_DISABLED: &str = "webhook.endpoint_disabled";

/// Payload of [`STATUS_CHANGED`].
pub fn status_changed(session: SessionId, from: Option<i16>, to: i16) -> Value {
    json!({"_id": session.to_string(), "from": from, "faceswap_status": to})
}

/// Payload of [`CLOSED`].
pub fn closed(
    session: SessionId,
    reason: CloseReason,
    faceswap_status: Option<i16>,
    charged_seconds: i64,
) -> Value {
    json!({
        "_id": session.to_string(),
        "reason": reason.as_str(),
        "faceswap_status": faceswap_status,
        "charged_seconds": charged_seconds,
    })
}

/// Payload of [`LOST`].
pub fn lost(session: SessionId) -> Value {
    json!({"_id": session.to_string()})
}
