//! Answer shapes: the `{code, msg, data}` envelope and the body parsing that feeds it.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use faceswap_wire::{Code, Envelope};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A business answer: HTTP 200, as the provider answers business errors too.
pub fn envelope(code: Code, msg: impl Into<String>) -> Response {
    Json(Envelope::error(code, msg)).into_response()
}

/// A success envelope around `data`.
pub fn ok<T: Serialize>(data: T) -> Response {
    Json(Envelope::ok(data)).into_response()
}

/// Why a body could not be read, with the status and message to answer.
pub struct BadBody {
    /// 200 like every business error, or the transport status (413 for an oversize body).
    pub status: StatusCode,
    /// What was wrong.
    pub msg: String,
}

/// Parses a JSON body, turning every failure into a message that names the problem.
pub fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, BadBody> {
    let body = body.map_err(|e| BadBody {
        status: e.status(),
        msg: format!("request body could not be read: {}", e.body_text()),
    })?;
    serde_json::from_slice(&body).map_err(|e| BadBody {
        status: StatusCode::OK,
        msg: format!("invalid JSON body: {e}"),
    })
}

impl BadBody {
    /// The envelope answer (1003) for this failure.
    pub fn into_envelope(self) -> Response {
        (
            self.status,
            Json(Envelope::error(Code::PARAM_ERROR, self.msg)),
        )
            .into_response()
    }
}

/// Unknown paths and methods.
pub async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(Envelope::error(Code::PARAM_ERROR, "no such endpoint")),
    )
        .into_response()
}
