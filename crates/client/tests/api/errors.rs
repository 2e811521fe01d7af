use faceswap_client::{Code, Error};
use faceswap_testkit::{TenantSettings, TestApp};
use sqlx::PgPool;

use crate::helpers::{OPTS, client, create_request};

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_create_over_quota_is_a_typed_1104(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(1, None).await;
    let client = client(&app, &tenant);
    client.create(&create_request(OPTS)).await.unwrap();
    let err = client.create(&create_request(OPTS)).await.unwrap_err();
    assert!(err.is_quota_exceeded(), "{err}");
    assert!(matches!(err, Error::Api { status: 429, .. }), "{err}");
    assert_eq!(app.sim_stats().await.open_sessions.len(), 1);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn an_unknown_session_is_a_typed_4004(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(1, None).await;
    let other = app.tenant(1, None).await;
    let theirs = client(&app, &other)
        .create(&create_request(OPTS))
        .await
        .unwrap();
    let client = client(&app, &tenant);
    for id in [theirs.id.as_str(), "ses_nope", "../v1/usage"] {
        let err = client.info(id).await.unwrap_err();
        assert!(err.is_not_found(), "{id}: {err}");
        assert_eq!(err.status(), Some(404));
        assert!(
            client.heartbeat(id).await.unwrap_err().is_not_found(),
            "{id}"
        );
        assert!(
            client
                .session_resources(id)
                .await
                .unwrap_err()
                .is_not_found(),
            "{id}"
        );
    }
    assert!(client.close(&theirs.id).await.unwrap_err().is_not_found());
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn over_its_rate_a_tenant_gets_a_typed_1005_with_retry_after(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut settings = TenantSettings::named("rated");
    settings.requests_per_second = 1;
    settings.burst = 3;
    let tenant = app.tenant_with(&settings).await;
    let client = client(&app, &tenant);
    let mut refused = None;
    for _ in 0..20 {
        if let Err(e) = client.usage().await {
            refused = Some(e);
            break;
        }
    }
    let err = refused.expect("the rate is exceeded within 20 calls");
    assert!(err.is_rate_limited(), "{err}");
    assert_eq!(err.code(), Some(Code::RATE_LIMITED));
    assert_eq!(err.status(), Some(429));
    let wait = err.retry_after().expect("Retry-After");
    assert!(wait.as_secs() >= 1, "{wait:?}");
    assert!(err.is_retryable());
}
