use faceswap_upstream::{Call, UpstreamError};
use faceswap_wire::Code;

use crate::helpers::{CLIENT_ID, spawn_sim, unix_now};

#[tokio::test]
async fn a_token_expires_when_the_simulator_says() {
    let sim = spawn_sim(&["--token-ttl-seconds", "120"]).await;
    let issued = sim.client.get_token(CLIENT_ID, "sim-secret").await.unwrap();
    assert_eq!(issued.token.split('.').count(), 3, "a JWT");
    let expected = unix_now() + 120;
    assert!(
        (issued.expires_at - expected).abs() <= 2,
        "expires_at {} vs {expected}",
        issued.expires_at
    );
}

#[tokio::test]
async fn wrong_credentials_are_a_token_rejection() {
    let sim = spawn_sim(&[]).await;
    let err = sim.client.get_token(CLIENT_ID, "wrong").await.unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Business {
                call: Call::GetToken,
                code: Code::TOKEN_INVALID,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.maybe_delivered());
    let err = sim.client.get_token("", "x").await.unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Business {
                code: Code::PARAM_ERROR,
                ..
            }
        ),
        "{err:?}"
    );
}
