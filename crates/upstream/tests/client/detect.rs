use bytes::Bytes;
use faceswap_upstream::{Call, UpstreamError};
use faceswap_wire::codes::detect as codes;
use faceswap_wire::{Code, DetectResponse};
use serde_json::json;

use crate::helpers::{b64, spawn_sim, testdata};

fn body(value: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap())
}

#[tokio::test]
async fn a_real_face_is_detected_and_the_body_passes_through() {
    let sim = spawn_sim(&[]).await;
    let token = sim.token().await;
    let outcome = sim
        .client
        .detect(
            &token.token,
            body(&json!({"single_face": true, "img": b64(&testdata("face.jpg"))})),
        )
        .await
        .unwrap();
    assert_eq!(outcome.error_code, codes::SUCCESS);
    let parsed: DetectResponse = serde_json::from_slice(&outcome.body).unwrap();
    assert_eq!(parsed.error_code, 0);
    assert_eq!(parsed.region.len(), 1, "{parsed:?}");
    assert_eq!(parsed.landmarks_str.len(), 1);
    // Untouched means the simulator's own serialisation, field order included.
    assert!(
        outcome.body.starts_with(br#"{"error_code":0,"#),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn detection_failures_are_answers_not_errors() {
    let sim = spawn_sim(&[]).await;
    let token = sim.token().await;
    let blank = {
        let img = image::RgbImage::from_pixel(300, 200, image::Rgb([240, 240, 240]));
        let mut out = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    };
    let outcome = sim
        .client
        .detect(&token.token, body(&json!({"img": b64(&blank)})))
        .await
        .unwrap();
    assert_eq!(outcome.error_code, codes::NO_FACE);
    let parsed: DetectResponse = serde_json::from_slice(&outcome.body).unwrap();
    assert!(parsed.region.is_empty());

    let outcome = sim
        .client
        .detect(&token.token, body(&json!({"single_face": true})))
        .await
        .unwrap();
    assert_eq!(
        outcome.error_code,
        Code::PARAM_ERROR.0,
        "1003 passes through too"
    );
}

#[tokio::test]
async fn a_bad_token_on_detect_asks_for_a_new_one() {
    let sim = spawn_sim(&[]).await;
    let img = body(&json!({"img": b64(&testdata("face.jpg"))}));
    let err = sim
        .client
        .detect("not-a-token", img.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Business {
                call: Call::Detect,
                code: Code::TOKEN_INVALID,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_token_rejected());
    let err = sim.client.detect("", img).await.unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Business {
                code: Code::AUTH_MISSING,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_token_rejected());
}
