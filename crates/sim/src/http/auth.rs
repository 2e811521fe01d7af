//! The provider's auth rules: `Authorization: Bearer <token>` or `x-api-key: <key>`, and the
//! Authorization header wins when both are sent.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use faceswap_wire::Code;

use crate::state::SimState;
use crate::tokens::TokenError;

/// Checks the request's credentials; on failure, the code and message to answer with.
pub fn authorize(state: &SimState, headers: &HeaderMap) -> Result<(), (Code, String)> {
    let missing = || {
        (
            Code::AUTH_MISSING,
            "authorization cannot be empty".to_owned(),
        )
    };
    let token = if let Some(value) = headers.get(AUTHORIZATION) {
        let value = value.to_str().map(str::trim).map_err(|_| {
            (
                Code::TOKEN_INVALID,
                "authorization is not valid text".to_owned(),
            )
        })?;
        let token = match value.get(..6) {
            Some(scheme) if scheme.eq_ignore_ascii_case("bearer") => value[6..].trim(),
            _ if value.is_empty() => "",
            _ => {
                return Err((
                    Code::TOKEN_INVALID,
                    "authorization must be `Bearer <token>`".to_owned(),
                ));
            }
        };
        if token.is_empty() {
            return Err(missing());
        }
        token
    } else if let Some(key) = headers.get("x-api-key") {
        let key = key.to_str().map(str::trim).unwrap_or_default();
        if key.is_empty() {
            return Err(missing());
        }
        if state.account.api_key.as_deref() == Some(key) {
            return Ok(());
        }
        key
    } else {
        return Err(missing());
    };
    state.tokens.verify(token).map_err(|e| {
        let msg = match e {
            TokenError::Expired => "invalid authorization: the token has expired",
            TokenError::Invalid => "invalid authorization: the token is not valid",
        };
        (Code::TOKEN_INVALID, msg.to_owned())
    })
}
