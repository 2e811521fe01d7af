use faceswap_client::faceswap_wire::codes;
use faceswap_client::{Code, Error};
use faceswap_testkit::{TestApp, spawn_image_host, testdata};
use sqlx::PgPool;

use crate::helpers::{client, testdata_path};

#[track_caller]
fn assert_one_face(answer: &faceswap_client::faceswap_wire::DetectResponse) {
    assert_eq!(answer.error_code, 0);
    assert!(!answer.region.is_empty(), "{answer:?}");
    assert_eq!(answer.landmarks[0].len(), 6, "{answer:?}");
    assert_eq!(answer.landmarks_str[0].split(':').count(), 4, "{answer:?}");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn detection_from_bytes_or_a_file_finds_the_face_and_its_landmarks(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(5, None).await;
    let client = client(&app, &tenant);
    let from_bytes = client.detect_bytes(&testdata("face.jpg")).await.unwrap();
    assert_one_face(&from_bytes);
    let from_file = client.detect_file(testdata_path("face.jpg")).await.unwrap();
    assert_eq!(from_file.region, from_bytes.region);
    let req = faceswap_client::faceswap_wire::DetectRequest {
        single_face: true,
        img: Some(faceswap_testkit::b64(&testdata("face.jpg"))),
        ..Default::default()
    };
    assert_one_face(&client.detect_faces(&req).await.unwrap());
    let missing = client.detect_file(testdata_path("absent.jpg")).await;
    assert!(matches!(missing, Err(Error::Io { .. })), "{missing:?}");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn detection_from_a_url_has_the_gateway_fetch_the_image(pool: PgPool) {
    let app = TestApp::builder().allow_loopback().spawn(pool).await;
    let tenant = app.tenant(5, None).await;
    let host = spawn_image_host().await;
    let answer = client(&app, &tenant)
        .detect_url(&format!("http://{host}/face.jpg"))
        .await
        .unwrap();
    assert_one_face(&answer);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn an_image_without_a_face_is_a_typed_detection_error(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(5, None).await;
    let err = client(&app, &tenant)
        .detect_bytes(&testdata("landscape.jpg"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code(codes::detect::NO_FACE)), "{err}");
    assert_eq!(err.status(), Some(422));
    let err = client(&app, &tenant)
        .detect_bytes(b"not an image")
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(Code(codes::detect::IMAGE_UNREADABLE)),
        "{err}"
    );
}
