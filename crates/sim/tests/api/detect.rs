use faceswap_wire::codes::detect as codes;
use image::ImageFormat;
use serde_json::{Value, json};

use crate::helpers::{b64, reencode, spawn_image_host, spawn_sim, testdata};

async fn detect(sim: &crate::helpers::TestSim, path: &str, body: Value) -> Value {
    let token = sim.token().await;
    sim.post(path, &body, &token).await
}

/// Two copies of the face photo side by side: a group photo with two faces.
fn two_faces() -> Vec<u8> {
    let face = image::load_from_memory(&testdata("face.jpg"))
        .unwrap()
        .to_rgb8();
    let mut canvas = image::RgbImage::new(face.width() * 2, face.height());
    image::imageops::replace(&mut canvas, &face, 0, 0);
    image::imageops::replace(&mut canvas, &face, i64::from(face.width()), 0);
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(canvas)
        .write_to(&mut std::io::Cursor::new(&mut out), ImageFormat::Jpeg)
        .unwrap();
    out
}

#[tokio::test]
async fn a_real_face_is_found_on_both_detect_paths_with_landmarks_inside_its_box() {
    let sim = spawn_sim(&[]).await;
    let img = b64(&testdata("face.jpg"));
    for path in ["/detect", "/interface/detect-api/detect_faces"] {
        let resp = detect(&sim, path, json!({"single_face": true, "img": img})).await;
        assert_eq!(resp["error_code"], 0, "{path}: {resp}");
        assert_eq!(resp["error_msg"], "SUCCESS");
        let region = resp["region"][0].as_array().unwrap();
        let [x, y, w, h] = [0, 1, 2, 3].map(|i| region[i].as_i64().unwrap());
        // The photo is 384×384 with one face in its upper middle.
        assert!(
            w >= 60 && h >= 60 && x + w <= 384 && y + h <= 384,
            "{region:?}"
        );
        let landmarks = resp["landmarks"][0].as_array().unwrap();
        assert_eq!(landmarks.len(), 6);
        for p in landmarks {
            let (px, py) = (p[0].as_i64().unwrap(), p[1].as_i64().unwrap());
            assert!(
                px >= x && px <= x + w && py >= y && py <= y + h,
                "{p} outside {region:?}"
            );
        }
        let s = resp["landmarks_str"][0].as_str().unwrap();
        assert_eq!(s.split(':').count(), 4, "{s}");
        assert!(
            s.split(':')
                .all(|p| p.split(',').all(|n| n.parse::<i64>().is_ok())),
            "{s}"
        );
        assert!(resp["seconds"].as_f64().unwrap() > 0.0);
        assert_eq!(resp["trx_id"].as_str().unwrap().len(), 24);
    }
}

#[tokio::test]
async fn png_and_data_urls_are_accepted_too() {
    let sim = spawn_sim(&[]).await;
    let png = reencode(&testdata("face.jpg"), ImageFormat::Png);
    let resp = detect(&sim, "/detect", json!({"img": b64(&png)})).await;
    assert_eq!(resp["error_code"], 0, "{resp}");
    let data_url = format!("data:image/jpeg;base64,{}", b64(&testdata("face.jpg")));
    let resp = detect(&sim, "/detect", json!({"img": data_url})).await;
    assert_eq!(resp["error_code"], 0, "{resp}");
}

#[tokio::test]
async fn single_face_is_honoured_on_a_group_photo() {
    let sim = spawn_sim(&[]).await;
    let img = b64(&two_faces());
    let all = detect(&sim, "/detect", json!({"single_face": false, "img": img})).await;
    assert_eq!(all["error_code"], 0, "{all}");
    assert_eq!(all["region"].as_array().unwrap().len(), 2, "{all}");
    assert_eq!(all["landmarks"].as_array().unwrap().len(), 2);
    assert_eq!(all["landmarks_str"].as_array().unwrap().len(), 2);
    let one = detect(&sim, "/detect", json!({"single_face": true, "img": img})).await;
    assert_eq!(one["region"].as_array().unwrap().len(), 1, "{one}");
}

#[tokio::test]
async fn images_without_a_face_get_no_face() {
    let sim = spawn_sim(&[]).await;
    let blank = {
        let img = image::RgbImage::from_pixel(300, 200, image::Rgb([240, 240, 240]));
        let mut out = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut std::io::Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    };
    for (name, bytes) in [("landscape", testdata("landscape.jpg")), ("blank", blank)] {
        let resp = detect(&sim, "/detect", json!({"img": b64(&bytes)})).await;
        assert_eq!(resp["error_code"], codes::NO_FACE, "{name}: {resp}");
        assert!(
            resp["error_msg"].as_str().unwrap().contains("no face"),
            "{resp}"
        );
        assert_eq!(resp["region"], json!([]));
    }
}

#[tokio::test]
async fn non_images_and_truncated_images_are_unreadable() {
    let sim = spawn_sim(&[]).await;
    let jpeg = testdata("face.jpg");
    let png = reencode(&jpeg, ImageFormat::Png);
    for (name, bytes) in [
        ("text", b"hello, this is not an image".to_vec()),
        ("truncated jpeg", jpeg[..jpeg.len() / 2].to_vec()),
        ("truncated png", png[..png.len() / 2].to_vec()),
    ] {
        let resp = detect(&sim, "/detect", json!({"img": b64(&bytes)})).await;
        assert_eq!(
            resp["error_code"],
            codes::IMAGE_UNREADABLE,
            "{name}: {resp}"
        );
        assert!(!resp["error_msg"].as_str().unwrap().is_empty());
    }
}

#[tokio::test]
async fn missing_or_malformed_input_gets_1003() {
    let sim = spawn_sim(&[]).await;
    for body in [
        json!({}),
        json!({"single_face": true}),
        json!({"img": ""}),
        json!({"img": "!!!not base64!!!"}),
    ] {
        let resp = detect(&sim, "/detect", body.clone()).await;
        assert_eq!(resp["error_code"], 1003, "{body} → {resp}");
    }
    let (_, resp) = sim.post_with("/detect", &json!({"img": "x"}), &[]).await;
    assert_eq!(resp["error_code"], 1102, "detection needs auth too: {resp}");
}

#[tokio::test]
async fn image_url_is_fetched_and_fetch_failures_are_reported() {
    let host = spawn_image_host().await;
    let sim = spawn_sim(&[
        "--image-fetch-timeout-ms",
        "500",
        "--max-image-bytes",
        "100000",
    ])
    .await;

    let resp = detect(
        &sim,
        "/detect",
        json!({"image_url": format!("http://{host}/face.jpg")}),
    )
    .await;
    assert_eq!(resp["error_code"], 0, "{resp}");
    assert_eq!(resp["region"].as_array().unwrap().len(), 1);

    for (url, code) in [
        (
            format!("http://{host}/missing.jpg"),
            codes::IMAGE_FETCH_FAILED,
        ),
        (format!("http://{host}/slow.jpg"), codes::IMAGE_FETCH_FAILED),
        (
            "ftp://example.test/a.jpg".to_owned(),
            codes::IMAGE_FETCH_FAILED,
        ),
        ("not a url".to_owned(), codes::IMAGE_FETCH_FAILED),
    ] {
        let resp = detect(&sim, "/detect", json!({"image_url": url})).await;
        assert_eq!(resp["error_code"], code, "{url}: {resp}");
    }

    let small = spawn_sim(&["--max-image-bytes", "1000"]).await;
    let resp = detect(
        &small,
        "/detect",
        json!({"image_url": format!("http://{host}/face.jpg")}),
    )
    .await;
    assert_eq!(resp["error_code"], codes::IMAGE_TOO_LARGE, "{resp}");
    let resp = detect(
        &small,
        "/detect",
        json!({"img": b64(&testdata("face.jpg"))}),
    )
    .await;
    assert_eq!(resp["error_code"], codes::IMAGE_TOO_LARGE, "{resp}");
}
