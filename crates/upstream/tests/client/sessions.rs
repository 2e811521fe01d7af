use faceswap_upstream::{Call, UpstreamError};
use faceswap_wire::{Code, FaceswapStatus, SourceImage, UpdateRequest};

use crate::helpers::{create_request, spawn_sim};

#[tokio::test]
async fn create_info_update_close_round_trip() {
    let sim = spawn_sim(&[]).await;
    let token = sim.token().await;
    let t = token.token.as_str();

    let created = sim.client.create(t, &create_request()).await.unwrap();
    assert_eq!(created.id.len(), 24, "{created:?}");
    assert!(!created.channel_id.is_empty() && !created.front_rtc_token.is_empty());

    let info = sim.client.info(t, &created.id).await.unwrap();
    assert_eq!(info.id, created.id);
    assert_eq!(
        info.faceswap_status,
        FaceswapStatus::Processing,
        "no queue delay"
    );

    let new_face = SourceImage {
        path: "https://example.test/other.jpg".into(),
        opts: "10,10:30,10:20,20:20,30".into(),
    };
    let updated = sim
        .client
        .update(
            t,
            &UpdateRequest {
                id: created.id.clone(),
                source_image: vec![new_face.clone()],
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.source_image, [new_face]);

    sim.client.close(t, &created.id).await.unwrap();
    let closed = sim.client.info(t, &created.id).await.unwrap();
    assert_eq!(closed.faceswap_status, FaceswapStatus::Success);
    assert!(!closed.resources.is_empty(), "close mints resources");
}

#[tokio::test]
async fn closing_an_unknown_session_is_a_parameter_error() {
    let sim = spawn_sim(&[]).await;
    let token = sim.token().await;
    let err = sim
        .client
        .close(&token.token, "000000000000000000000000")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Business {
                call: Call::Close,
                code: Code::PARAM_ERROR,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_token_rejected() && !err.maybe_delivered());
}

#[tokio::test]
async fn bad_missing_and_expired_tokens_ask_for_a_new_one() {
    let sim = spawn_sim(&[]).await;
    let err = sim.client.info("garbage", "x").await.unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Business {
                code: Code::TOKEN_INVALID,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_token_rejected());
    let err = sim.client.create("", &create_request()).await.unwrap_err();
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

    let token = sim.token().await;
    sim.post_control("/sim/expire-tokens").await;
    let err = sim
        .client
        .create(&token.token, &create_request())
        .await
        .unwrap_err();
    assert!(err.is_token_rejected(), "{err:?}");
    let fresh = sim.token().await;
    sim.client
        .create(&fresh.token, &create_request())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_spent_quota_is_a_business_error() {
    let sim = spawn_sim(&["--max-open-sessions", "1"]).await;
    let token = sim.token().await;
    sim.client
        .create(&token.token, &create_request())
        .await
        .unwrap();
    let err = sim
        .client
        .create(&token.token, &create_request())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Business {
                call: Call::Create,
                code: Code::QUOTA_EXCEEDED,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_token_rejected());
}
