//! Reading the upstream's answers: the envelope, a non-2xx body, a malformed body.

use bytes::Bytes;
use faceswap_wire::{Code, Envelope};
use http::StatusCode;
use serde::Deserialize;

use crate::{Call, UpstreamError};

/// The request as a JSON body.
pub(crate) fn to_json(call: Call, req: &impl serde::Serialize) -> Result<Bytes, UpstreamError> {
    serde_json::to_vec(req)
        .map(Bytes::from)
        .map_err(|e| UpstreamError::Config(format!("{call}: cannot serialize the request: {e}")))
}

/// A 2xx body that is not the JSON we expect.
pub(crate) fn decode(call: Call, e: serde_json::Error) -> UpstreamError {
    UpstreamError::Decode {
        call,
        message: format!("unexpected JSON: {e}"),
    }
}

/// The envelope of a 2xx answer with code 1000; anything else as the matching error.
pub(crate) fn success_envelope(
    call: Call,
    status: StatusCode,
    body: &[u8],
) -> Result<Envelope<serde_json::Value>, UpstreamError> {
    if !status.is_success() {
        return Err(status_error(call, status, body));
    }
    let envelope: Envelope<serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| decode(call, e))?;
    if !envelope.code.is_success() {
        return Err(UpstreamError::Business {
            call,
            code: envelope.code,
            msg: envelope.msg,
        });
    }
    Ok(envelope)
}

/// The data of a 2xx answer with code 1000, parsed straight into `T` (the hot path: one parse,
/// no intermediate `Value`). Any other answer takes the general path, which names the error
/// exactly as [`success_envelope`] does.
pub(crate) fn success_data<T: serde::de::DeserializeOwned>(
    call: Call,
    status: StatusCode,
    body: &[u8],
) -> Result<T, UpstreamError> {
    let no_data = || UpstreamError::Decode {
        call,
        message: "code 1000 but no data in the answer".to_owned(),
    };
    if status.is_success()
        && let Ok(envelope) = serde_json::from_slice::<Envelope<T>>(body)
        && envelope.code.is_success()
    {
        return envelope.data.ok_or_else(no_data);
    }
    let data = success_envelope(call, status, body)?
        .data
        .ok_or_else(no_data)?;
    serde_json::from_value(data).map_err(|e| decode(call, e))
}

/// A non-2xx answer, with the code and message of either body shape when it is JSON.
pub(crate) fn status_error(call: Call, status: StatusCode, body: &[u8]) -> UpstreamError {
    #[derive(Deserialize, Default)]
    struct Head {
        code: Option<Code>,
        error_code: Option<i64>,
        msg: Option<String>,
        error_msg: Option<String>,
    }
    let head: Head = serde_json::from_slice(body).unwrap_or_default();
    // A non-JSON body (a proxy's HTML page) is described, not quoted: it could echo anything.
    let msg = head.msg.or(head.error_msg).unwrap_or_else(|| {
        format!(
            "{} ({} bytes of non-JSON body)",
            status.canonical_reason().unwrap_or("unknown status"),
            body.len()
        )
    });
    UpstreamError::Status {
        call,
        status: status.as_u16(),
        code: head.code.or(head.error_code.map(Code)),
        msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_2xx_answer_keeps_the_code_of_either_body_shape() {
        let envelope = status_error(
            Call::Info,
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"code":1503,"msg":"down"}"#,
        );
        assert_eq!(
            envelope,
            UpstreamError::Status {
                call: Call::Info,
                status: 503,
                code: Some(Code(1503)),
                msg: "down".into()
            }
        );
        let detect = status_error(
            Call::Detect,
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"error_code":1503,"error_msg":"down","region":[]}"#,
        );
        assert!(
            matches!(detect, UpstreamError::Status { code: Some(Code(1503)), ref msg, .. } if msg == "down")
        );
        let html = status_error(Call::Create, StatusCode::BAD_GATEWAY, b"<html>oops</html>");
        assert_eq!(
            html,
            UpstreamError::Status {
                call: Call::Create,
                status: 502,
                code: None,
                msg: "Bad Gateway (17 bytes of non-JSON body)".into()
            }
        );
    }

    #[test]
    fn typed_data_is_read_from_a_success_and_every_other_answer_is_the_same_error() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct Data {
            n: u32,
        }
        let ok: Data = success_data(
            Call::Info,
            StatusCode::OK,
            br#"{"code":1000,"msg":"success","data":{"n":7}}"#,
        )
        .unwrap();
        assert_eq!(ok, Data { n: 7 });
        for (status, body) in [
            (StatusCode::OK, &br#"{"code":1003,"msg":"unknown _id"}"#[..]),
            (
                StatusCode::OK,
                br#"{"code":1003,"msg":"bad","data":"not the shape"}"#,
            ),
            (StatusCode::OK, br#"{"code":1000,"msg":"success"}"#),
            (
                StatusCode::OK,
                br#"{"code":1000,"msg":"success","data":{"n":"x"}}"#,
            ),
            (StatusCode::OK, b"<html>"),
            (StatusCode::BAD_GATEWAY, br#"{"code":1000,"data":{"n":7}}"#),
        ] {
            let typed = success_data::<Data>(Call::Info, status, body).unwrap_err();
            let general = success_envelope(Call::Info, status, body).and_then(|e| {
                let data = e.data.ok_or_else(|| UpstreamError::Decode {
                    call: Call::Info,
                    message: "code 1000 but no data in the answer".to_owned(),
                })?;
                serde_json::from_value::<Data>(data).map_err(|e| decode(Call::Info, e))
            });
            assert_eq!(Err(typed), general, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn a_2xx_answer_must_be_a_success_envelope() {
        let ok = success_envelope(
            Call::Close,
            StatusCode::OK,
            br#"{"code":1000,"msg":"success"}"#,
        );
        assert!(ok.is_ok());
        let business = success_envelope(
            Call::Close,
            StatusCode::OK,
            br#"{"code":1003,"msg":"unknown _id"}"#,
        );
        assert_eq!(
            business.unwrap_err(),
            UpstreamError::Business {
                call: Call::Close,
                code: Code::PARAM_ERROR,
                msg: "unknown _id".into()
            }
        );
        let junk = success_envelope(Call::Close, StatusCode::OK, b"<html>").unwrap_err();
        assert!(
            matches!(
                junk,
                UpstreamError::Decode {
                    call: Call::Close,
                    ..
                }
            ),
            "{junk}"
        );
    }
}
