//! The live face swap session calls: create, update, close, info.

use serde::{Deserialize, Serialize};

/// One source face: where the image is and where its landmarks are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SourceImage {
    /// URL of the source image.
    pub path: String,
    /// The face's landmarks, as one `landmarks_str` entry from detection (`x,y:x,y:x,y:x,y`).
    pub opts: String,
}

/// `POST /api/open/v3/faceswap/live/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreateRequest {
    /// The faces to swap in.
    #[serde(rename = "sourceImage")]
    pub source_image: Vec<SourceImage>,
}

/// `POST /api/open/v3/faceswap/live/update`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UpdateRequest {
    /// Session id.
    #[serde(rename = "_id")]
    pub id: String,
    /// The new faces to swap in.
    #[serde(rename = "sourceImage")]
    pub source_image: Vec<SourceImage>,
}

/// `POST /api/open/v3/faceswap/live/close` and `.../info`: a body naming one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionIdRequest {
    /// Session id.
    #[serde(rename = "_id")]
    pub id: String,
}

/// `faceswap_status` of a live session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum FaceswapStatus {
    /// 1: waiting for a worker.
    Queuing,
    /// 2: running; the front end may join the Agora channel.
    Processing,
    /// 3: finished normally (closed).
    Success,
    /// 4: failed.
    Failed,
}

impl FaceswapStatus {
    /// The numeric value on the wire.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Queuing => 1,
            Self::Processing => 2,
            Self::Success => 3,
            Self::Failed => 4,
        }
    }

    /// Whether the session can no longer change status by itself.
    pub fn is_settled(self) -> bool {
        matches!(self, Self::Success | Self::Failed)
    }
}

impl utoipa::PartialSchema for FaceswapStatus {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .enum_values(Some([1, 2, 3, 4]))
            .description(Some(
                "1 queuing · 2 processing (join the Agora channel now) · 3 success · 4 failed",
            ))
            .into()
    }
}

impl utoipa::ToSchema for FaceswapStatus {}

impl From<FaceswapStatus> for u8 {
    fn from(s: FaceswapStatus) -> u8 {
        s.as_u8()
    }
}

impl TryFrom<u8> for FaceswapStatus {
    type Error = String;

    fn try_from(v: u8) -> Result<Self, Self::Error> {
        match v {
            1 => Ok(Self::Queuing),
            2 => Ok(Self::Processing),
            3 => Ok(Self::Success),
            4 => Ok(Self::Failed),
            other => Err(format!("unknown faceswap_status {other}")),
        }
    }
}

/// A generated resource (image, video) of a session, downloadable until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Resource {
    /// What it is: `snapshot` (an image) or `recording` (a video).
    pub kind: String,
    /// Where to download it.
    pub url: String,
    /// Its media type.
    pub content_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it stops being downloadable, seconds since the Unix epoch.
    pub expires_at: i64,
}

/// A live session as create, update and info return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LiveSession {
    /// Session id.
    #[serde(rename = "_id")]
    pub id: String,
    /// Current status.
    pub faceswap_status: FaceswapStatus,
    /// Agora channel to join.
    pub channel_id: String,
    /// Agora user id for the front end.
    pub front_user_id: String,
    /// Agora RTC token for the front end.
    pub front_rtc_token: String,
    /// Agora user id of the face swap algorithm.
    #[serde(default)]
    pub algorithm_user_id: String,
    /// Agora app id.
    #[serde(default)]
    pub app_id: String,
    /// The faces in use.
    #[serde(rename = "sourceImage", default)]
    pub source_image: Vec<SourceImage>,
    /// Creation time, seconds since the Unix epoch.
    #[serde(default)]
    pub created_at: i64,
    /// Close time, seconds since the Unix epoch, once closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<i64>,
    /// Generated resources, minted when the session closes.
    #[serde(default)]
    pub resources: Vec<Resource>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_its_number() {
        for n in 1..=4u8 {
            let s = FaceswapStatus::try_from(n).unwrap();
            assert_eq!(u8::from(s), n);
            assert_eq!(serde_json::to_string(&s).unwrap(), n.to_string());
        }
        assert!(serde_json::from_str::<FaceswapStatus>("5").is_err());
    }

    #[test]
    fn only_success_and_failed_are_settled() {
        assert!(!FaceswapStatus::Queuing.is_settled());
        assert!(!FaceswapStatus::Processing.is_settled());
        assert!(FaceswapStatus::Success.is_settled());
        assert!(FaceswapStatus::Failed.is_settled());
    }

    #[test]
    fn requests_use_the_providers_field_names() {
        let req = UpdateRequest {
            id: "x".into(),
            source_image: vec![SourceImage {
                path: "p".into(),
                opts: "1,2:3,4:5,6:7,8".into(),
            }],
        };
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"_id":"x","sourceImage":[{"path":"p","opts":"1,2:3,4:5,6:7,8"}]})
        );
    }
}
