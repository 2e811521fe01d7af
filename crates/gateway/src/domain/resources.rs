//! Generated resources and their archive: states, object keys, the retry schedule, the alarm
//! rule, the events, and reading resource URLs out of upstream answers. No I/O here.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

use super::ids::{ResourceId, SessionId, TenantId};

/// A resource was copied into object storage.
pub const ARCHIVED: &str = "resource.archived";
/// A resource is within the alarm margin of its upstream deadline and still not archived.
pub const AT_RISK: &str = "resource.archive_at_risk";
/// A resource's upstream deadline passed before it could be archived: it is lost.
pub const EXPIRED: &str = "resource.expired";
/// A resource can never be archived (its URL is refused).
pub const FAILED: &str = "resource.failed";
/// An archived resource reached the end of the tenant's retention and was deleted.
pub const DELETED: &str = "resource.deleted";

/// Where a resource stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveState {
    /// Recorded; not archived yet (attempts may have failed and be retried).
    Pending,
    /// Copied into object storage; fetchable through the gateway.
    Archived,
    /// The upstream deadline passed before it was archived.
    Expired,
    /// It can never be archived (e.g. its URL is refused by the SSRF rules).
    Failed,
    /// Archived, then deleted at the end of the tenant's retention.
    Deleted,
}

impl ArchiveState {
    /// Every state, in life-cycle order.
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Archived,
        Self::Expired,
        Self::Failed,
        Self::Deleted,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Archived => "archived",
            Self::Expired => "expired",
            Self::Failed => "failed",
            Self::Deleted => "deleted",
        }
    }

    /// The state a stored name stands for.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// A resource URL found in an upstream answer, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// `snapshot`, `recording`, `face`, …
    pub kind: String,
    /// Where the upstream serves it.
    pub url: String,
    /// Media type, if announced.
    pub content_type: Option<String>,
    /// Size in bytes, if announced.
    pub size: Option<i64>,
    /// When the upstream deletes it.
    pub expires_at: DateTime<Utc>,
}

/// Longest accepted resource URL; anything longer is not recorded.
pub const MAX_URL_LEN: usize = 4096;

/// A Unix time from the upstream as a deadline; `fallback` when missing or absurd.
pub fn deadline(unix: Option<i64>, fallback: DateTime<Utc>) -> DateTime<Utc> {
    unix.filter(|t| *t > 0)
        .and_then(|t| Utc.timestamp_opt(t, 0).single())
        .unwrap_or(fallback)
}

/// The resources of a live session as `info` lists them.
pub fn from_live(
    resources: &[faceswap_wire::Resource],
    fallback_deadline: DateTime<Utc>,
) -> Vec<Discovered> {
    resources
        .iter()
        .filter(|r| is_fetchable(&r.url))
        .map(|r| Discovered {
            kind: clean_kind(&r.kind),
            url: r.url.clone(),
            content_type: Some(r.content_type.clone()).filter(|c| !c.is_empty()),
            size: i64::try_from(r.size).ok(),
            expires_at: deadline(Some(r.expires_at), fallback_deadline),
        })
        .collect()
}

/// The face crop URLs of a successful detection answer (`face_urls`, with the optional
/// `face_urls_expires_at`); nothing for any other answer.
pub fn from_detect_answer(body: &[u8], fallback_deadline: DateTime<Utc>) -> Vec<Discovered> {
    #[derive(serde::Deserialize)]
    struct Faces {
        #[serde(default)]
        error_code: i64,
        #[serde(default)]
        face_urls: Vec<Value>,
        #[serde(default)]
        face_urls_expires_at: Option<i64>,
    }
    let Ok(answer) = serde_json::from_slice::<Faces>(body) else {
        return Vec::new();
    };
    if answer.error_code != 0 {
        return Vec::new();
    }
    let expires_at = deadline(answer.face_urls_expires_at, fallback_deadline);
    answer
        .face_urls
        .iter()
        .filter_map(Value::as_str)
        .filter(|u| is_fetchable(u))
        .map(|url| Discovered {
            kind: "face".to_owned(),
            url: url.to_owned(),
            content_type: None,
            size: None,
            expires_at,
        })
        .collect()
}

fn is_fetchable(url: &str) -> bool {
    url.len() <= MAX_URL_LEN && (url.starts_with("http://") || url.starts_with("https://"))
}

/// A kind safe to put in an object key: lower-case letters, digits, `-` and `_`.
fn clean_kind(kind: &str) -> String {
    let cleaned: String = kind
        .trim()
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(32)
        .collect();
    if cleaned.is_empty() {
        "resource".to_owned()
    } else {
        cleaned
    }
}

/// The file extension of a media type (`bin` when unknown).
pub fn extension(content_type: Option<&str>) -> &'static str {
    let essence = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some("image/png") => "png",
        Some("image/jpeg" | "image/jpg") => "jpg",
        Some("image/webp") => "webp",
        Some("image/gif") => "gif",
        Some("video/mp4") => "mp4",
        Some("video/webm") => "webm",
        Some("video/quicktime") => "mov",
        Some("audio/mpeg") => "mp3",
        Some("application/json") => "json",
        _ => "bin",
    }
}

/// The object key of a resource: `tenants/<ten_…>/sessions/<ses_…>/<res_…>-<kind>.<ext>`, or
/// `tenants/<ten_…>/detections/<res_…>-<kind>.<ext>` for one without a session.
pub fn object_key(
    tenant: TenantId,
    session: Option<SessionId>,
    resource: ResourceId,
    kind: &str,
    content_type: Option<&str>,
) -> String {
    let ext = extension(content_type);
    let kind = clean_kind(kind);
    match session {
        Some(s) => format!("tenants/{tenant}/sessions/{s}/{resource}-{kind}.{ext}"),
        None => format!("tenants/{tenant}/detections/{resource}-{kind}.{ext}"),
    }
}

/// Delay before the next download attempt after `attempts` failures: `base` doubling per
/// failure, at most an hour, times `jitter` (0.8–1.2), and never past `until_deadline` (a last
/// try just before the deadline beats none).
pub fn retry_delay(
    base: Duration,
    attempts: u32,
    jitter: f64,
    until_deadline: Option<Duration>,
) -> Duration {
    const MAX: Duration = Duration::from_secs(3600);
    let doubled = base.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let delay = doubled.min(MAX).mul_f64(jitter.clamp(0.8, 1.2));
    match until_deadline {
        Some(left) => delay.min(left / 2),
        None => delay,
    }
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The common fields of every resource event.
fn base(
    resource: ResourceId,
    session: Option<SessionId>,
    kind: &str,
    expires_at: DateTime<Utc>,
) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("resource_id".into(), json!(resource.to_string()));
    m.insert("_id".into(), json!(session.map(|s| s.to_string())));
    m.insert("kind".into(), json!(kind));
    m.insert("upstream_expires_at".into(), json!(expires_at.timestamp()));
    m
}

/// Payload of [`ARCHIVED`].
pub fn archived_event(
    resource: ResourceId,
    session: Option<SessionId>,
    kind: &str,
    expires_at: DateTime<Utc>,
    size: i64,
    content_type: &str,
    sha256: &str,
) -> Value {
    let mut m = base(resource, session, kind, expires_at);
    m.insert("size".into(), json!(size));
    m.insert("content_type".into(), json!(content_type));
    m.insert("sha256".into(), json!(sha256));
    Value::Object(m)
}

/// Payload of [`AT_RISK`], [`EXPIRED`], [`FAILED`] and [`DELETED`]: the resource, and the last
/// download error when there is one.
pub fn state_event(
    resource: ResourceId,
    session: Option<SessionId>,
    kind: &str,
    expires_at: DateTime<Utc>,
    attempts: i32,
    last_error: Option<&str>,
) -> Value {
    let mut m = base(resource, session, kind, expires_at);
    m.insert("attempts".into(), json!(attempts));
    m.insert("last_error".into(), json!(last_error));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for s in ArchiveState::ALL {
            assert_eq!(ArchiveState::parse(s.as_str()), Some(s));
        }
        assert_eq!(ArchiveState::parse("nope"), None);
    }

    #[test]
    fn keys_name_tenant_session_resource_kind_and_extension() {
        let (t, s, r) = (
            TenantId::generate(),
            SessionId::generate(),
            ResourceId::generate(),
        );
        assert_eq!(
            object_key(t, Some(s), r, "recording", Some("video/mp4")),
            format!("tenants/{t}/sessions/{s}/{r}-recording.mp4")
        );
        assert_eq!(
            object_key(t, None, r, "Face", Some("image/png; q=1")),
            format!("tenants/{t}/detections/{r}-face.png")
        );
        assert_eq!(
            object_key(t, Some(s), r, "../x y", None),
            format!("tenants/{t}/sessions/{s}/{r}-xy.bin")
        );
    }

    #[test]
    fn the_retry_delay_doubles_is_capped_and_never_passes_the_deadline() {
        let base = Duration::from_secs(5);
        assert_eq!(retry_delay(base, 1, 1.0, None), base);
        assert_eq!(retry_delay(base, 2, 1.0, None), base * 2);
        assert_eq!(retry_delay(base, 3, 1.0, None), base * 4);
        assert_eq!(retry_delay(base, 30, 1.0, None), Duration::from_secs(3600));
        assert_eq!(retry_delay(base, 1, 5.0, None), base.mul_f64(1.2));
        assert_eq!(
            retry_delay(base, 10, 1.0, Some(Duration::from_secs(60))),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn face_urls_are_read_from_successful_detections_only() {
        let fallback = Utc::now();
        let ok = br#"{"error_code":0,"face_urls":["http://u/a.png","ftp://x","http://u/b.png"],"face_urls_expires_at":1900000000}"#;
        let found = from_detect_answer(ok, fallback);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].kind, "face");
        assert_eq!(found[1].url, "http://u/b.png");
        assert_eq!(found[0].expires_at.timestamp(), 1_900_000_000);
        let failed = br#"{"error_code":2002,"face_urls":["http://u/a.png"]}"#;
        assert!(from_detect_answer(failed, fallback).is_empty());
        assert!(from_detect_answer(b"not json", fallback).is_empty());
        let plain = br#"{"error_code":0,"face_urls":["http://u/a.png"]}"#;
        assert_eq!(from_detect_answer(plain, fallback)[0].expires_at, fallback);
    }

    #[test]
    fn hex_is_lower_case_and_two_digits_per_byte() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
