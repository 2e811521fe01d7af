//! `POST /detect` and `POST /interface/detect-api/detect_faces`.

use serde::{Deserialize, Serialize};

/// A face detection request: an image by URL or inline as base64.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DetectRequest {
    /// Return only the most prominent face.
    #[serde(default)]
    pub single_face: bool,
    /// URL of the image to fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// The image itself, base64-encoded (standard alphabet; a `data:` URL prefix is accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub img: Option<String>,
    /// Also answer a URL per face of a crop of it (`face_urls`), downloadable as long as other
    /// generated resources (the gateway archives them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub return_face_urls: bool,
}

/// The detection answer. It does not use the `{code, msg}` envelope: `error_code` 0 is success.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DetectResponse {
    /// 0 on success; see [`crate::codes::detect`] for the others.
    pub error_code: i64,
    /// `SUCCESS`, or what went wrong.
    pub error_msg: String,
    /// Per face, six landmark points `[x, y]`: left eye, right eye, nose tip, left mouth
    /// corner, right mouth corner, chin.
    #[serde(default)]
    pub landmarks: Vec<Vec<[i64; 2]>>,
    /// Per face, four points `x,y:x,y:x,y:x,y` (left eye, right eye, nose tip, mouth centre):
    /// the form `sourceImage[].opts` takes.
    #[serde(default)]
    pub landmarks_str: Vec<String>,
    /// Per face, the box `[x, y, width, height]` in image pixels.
    #[serde(default)]
    pub region: Vec<[i64; 4]>,
    /// Processing time in seconds.
    #[serde(default)]
    pub seconds: f64,
    /// Transaction id of this call.
    #[serde(default)]
    pub trx_id: String,
    /// Per face, the URL of a crop of it (PNG), when `return_face_urls` was asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub face_urls: Vec<String>,
    /// When the `face_urls` stop being downloadable, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_urls_expires_at: Option<i64>,
}

impl DetectResponse {
    /// A failed detection with `code` and `msg`.
    pub fn error(code: i64, msg: impl Into<String>, trx_id: impl Into<String>) -> Self {
        Self {
            error_code: code,
            error_msg: msg.into(),
            trx_id: trx_id.into(),
            ..Self::default()
        }
    }
}
